"""The Keras age metrics, the training targets and the gender loss against hand-computed values."""
import numpy as np
import pytest
import tensorflow as tf

from agegender import age_histogram, heads, model_spec, schema
from trainer import input_pipeline
from trainer import keras_metrics


def _spec(**kw):
    return model_spec.ModelSpec(**kw)


def test_age_error_metrics_classification():
    spec = _spec(type="classification")
    # True ages 20 and 40 (histograms); predictions: one-hot at 23 and a 50/50 of 30/60.
    y_true = np.stack([age_histogram.age_histogram(20, 5), age_histogram.age_histogram(40, 5)])
    y_pred = np.zeros((2, 101), np.float32)
    y_pred[0, 23] = 1.0
    y_pred[1, 30] = y_pred[1, 60] = 0.5  # expected value 45
    mae = keras_metrics.AgeError(spec.to_json())
    mae.update_state(y_true, y_pred)
    assert float(mae.result()) == pytest.approx((3 + 5) / 2, abs=1e-4)
    cs5 = keras_metrics.AgeError(spec.to_json(), within=5.0)
    cs5.update_state(y_true, y_pred)
    assert float(cs5.result()) == pytest.approx(1.0)  # 3 and 5 are both within 5
    cs2 = keras_metrics.AgeError(spec.to_json(), within=2.0)
    cs2.update_state(y_true, y_pred)
    assert float(cs2.result()) == pytest.approx(0.0)


def test_age_error_metrics_regression_and_range():
    spec = _spec(type="regression")
    mae = keras_metrics.AgeError(spec.to_json())
    mae.update_state(np.array([[0.30], [0.50]]), np.array([[0.33], [0.40]]))
    assert float(mae.result()) == pytest.approx((3 + 10) / 2, abs=1e-3)

    spec = _spec(range_mode=True)
    y_true = np.eye(heads.NUM_AGE_RANGES, dtype=np.float32)[[4]]  # 20-24, midpoint 22
    y_pred = np.eye(heads.NUM_AGE_RANGES, dtype=np.float32)[[6]]  # 30-34, midpoint 32
    mae = keras_metrics.AgeError(spec.to_json())
    mae.update_state(y_true, y_pred)
    assert float(mae.result()) == pytest.approx(10.0)


def _batch(ages, genders):
    return {schema.AGE: tf.constant(ages, tf.int64),
            schema.GENDER: tf.constant(genders, tf.int64),
            schema.AGE_HISTOGRAM: tf.constant(
                np.stack([age_histogram.age_histogram(a, 5.0) for a in ages])),
            "image": tf.zeros([len(ages), 8, 8, 3], tf.uint8)}


def test_targets_and_gender_sample_weights():
    batch = _batch([20, 7, 104], [1, -1, 0])
    spec = _spec(type="classification", predict_gender=True, age_deviation=5.0)
    images, y, sw = input_pipeline.Parser(spec, records_age_deviation=5.0).targets_fn(batch)
    assert images.dtype == tf.float32
    np.testing.assert_allclose(y[heads.DistributionHead.output], batch[schema.AGE_HISTOGRAM])
    np.testing.assert_array_equal(y[heads.GENDER], [1, 0, 0])
    np.testing.assert_array_equal(sw[heads.GENDER], [1.0, 0.0, 1.0])

    # Another deviation than the records': relabelled in-graph, same as the NumPy label.
    spec = _spec(type="classification", age_deviation=2.0)
    _, y, _ = input_pipeline.Parser(spec, records_age_deviation=5.0).targets_fn(batch)
    np.testing.assert_allclose(y[heads.DistributionHead.output][0],
                               age_histogram.age_histogram(20, 2.0), atol=1e-6)

    spec = _spec(type="regression")
    _, y, _ = input_pipeline.Parser(spec, 5.0).targets_fn(batch)
    np.testing.assert_allclose(y[heads.RegressionHead.output][:, 0], [0.20, 0.07, 1.04], rtol=1e-6)

    spec = _spec(range_mode=True, age_deviation=0.0)
    _, y, _ = input_pipeline.Parser(spec, 5.0).targets_fn(batch)
    ranges = y[heads.RangeHead.output].numpy()
    np.testing.assert_allclose(ranges.sum(-1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(ranges.argmax(-1), heads.age_to_range([20, 7, 104]))


def test_gender_loss_ignores_unknown():
    """Records of unknown gender contribute nothing to the weighted gender loss."""
    loss = tf.keras.losses.SparseCategoricalCrossentropy()
    y_pred = tf.constant([[0.9, 0.1], [0.01, 0.99], [0.2, 0.8]])
    with_unknown = loss(tf.constant([0, 0, 1]), y_pred, sample_weight=tf.constant([1., 0., 1.]))
    # Keras divides by the batch size: the same as the known ones' sum over 3.
    expected = -(np.log(0.9) + np.log(0.8)) / 3
    assert float(with_unknown) == pytest.approx(expected, rel=1e-5)
