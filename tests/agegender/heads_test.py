"""Each head kind: targets, the age read back from a target and from an output, the loss,
the serving outputs, against hand-computed values."""
import json

import numpy as np
import pytest
import tensorflow as tf

from agegender import age_histogram, heads, schema
from agegender.model_spec import ModelSpec

SPECS = {"classification": ModelSpec(), "range": ModelSpec(range_mode=True),
         "regression": ModelSpec(type="regression")}


def test_squared_emd_hand_computed():
    # CDFs: true [0, 1, 1, 1], pred [0.5, 0.5, 1, 1] -> squared diffs [.25, .25, 0, 0].
    y_true = tf.constant([[0.0, 1.0, 0.0, 0.0]])
    y_pred = tf.constant([[0.5, 0.0, 0.5, 0.0]])
    np.testing.assert_allclose(heads.squared_emd(y_true, y_pred).numpy(), [0.125], rtol=1e-6)
    # Identical distributions cost nothing; further is dearer than nearer.
    assert float(heads.squared_emd(y_true, y_true)[0]) == 0.0
    near = heads.squared_emd(tf.one_hot([10], 101), tf.one_hot([11], 101))
    far = heads.squared_emd(tf.one_hot([10], 101), tf.one_hot([50], 101))
    np.testing.assert_allclose(near.numpy(), [1 / 101], rtol=1e-6)
    np.testing.assert_allclose(far.numpy(), [40 / 101], rtol=1e-6)


def test_the_spec_picks_the_head():
    assert isinstance(heads.age_head(SPECS["classification"]), heads.DistributionHead)
    assert isinstance(heads.age_head(SPECS["range"]), heads.RangeHead)
    assert isinstance(heads.age_head(SPECS["regression"]), heads.RegressionHead)
    assert heads.gender_head(ModelSpec()) is None
    assert [type(h) for h in heads.for_spec(ModelSpec(predict_gender=True))] == [
        heads.DistributionHead, heads.GenderHead]


def test_ranges():
    assert heads.NUM_AGE_RANGES == 21
    np.testing.assert_array_equal(heads.age_to_range([0, 4, 5, 99, 100, 116]),
                                  [0, 0, 1, 19, 20, 20])
    assert heads.range_midpoints()[0] == 2 and heads.range_midpoints()[20] == 102


def test_ages_from_outputs():
    dist = np.zeros((2, 101), np.float32)
    dist[0, 30] = dist[0, 40] = 0.5
    dist[1, 7] = 1
    np.testing.assert_allclose(
        heads.ages_from_outputs({"age_distribution": dist}, SPECS["classification"]), [35, 7])
    np.testing.assert_allclose(heads.ages_from_outputs(
        {"age_scaled": np.array([[0.25], [0.6]])}, SPECS["regression"]), [25, 60])
    ranges = np.zeros((1, heads.NUM_AGE_RANGES), np.float32)
    ranges[0, 2] = 1
    np.testing.assert_allclose(
        heads.ages_from_outputs({"age_range": ranges}, SPECS["range"]), [12])


@pytest.mark.parametrize("kind", sorted(SPECS))
def test_target_reads_back_as_the_age(kind):
    """target() then true_age() gives the age (range: the range's midpoint), and a perfect
    output reads as that age too; the output layer has the head's width."""
    head = heads.age_head(SPECS[kind])
    ages = np.array([20, 7, 64])
    hist = np.stack([age_histogram.age_histogram(a, 3.0) for a in ages]).astype(np.float32)
    target = head.target(tf.constant(ages, tf.int64), tf.constant(hist))
    want = heads.range_midpoints()[heads.age_to_range(ages)] if kind == "range" else ages
    np.testing.assert_allclose(head.true_age(target), want, atol=1e-4)
    if kind == "classification":
        np.testing.assert_allclose(head.ages(tf.one_hot(ages, 101)), ages, atol=1e-4)
    elif kind == "regression":
        np.testing.assert_allclose(head.ages(target), ages, atol=1e-4)
        assert head.serving_outputs(target) == {}
    else:
        np.testing.assert_allclose(np.asarray(target).sum(-1), 1.0, rtol=1e-6)
    layer = head.output_layer()
    assert layer(tf.zeros([2, 4])).shape == (2, head.units) and layer.name == head.output
    assert float(tf.reduce_mean(head.loss()(target, target))) == pytest.approx(0.0, abs=1e-6)


def test_gender_head():
    gender = heads.GenderHead()
    y, weight = gender.target(tf.constant([1, -1, 0], tf.int64))
    np.testing.assert_array_equal(y, [1, 0, 0])
    np.testing.assert_array_equal(weight, [1.0, 0.0, 1.0])  # unknown: no gradient
    probs = np.array([[0.2, 0.8], [0.9, 0.1]], np.float32)
    out = gender.serving_outputs(probs)
    assert [g.decode() for g in out["gender"].numpy()] == ["F", "M"]
    np.testing.assert_allclose(out["gender_probability"], probs)
    classes, p = gender.predictions(probs)
    np.testing.assert_array_equal(classes, [1, 0])
    np.testing.assert_allclose(p, [0.8, 0.9])


def test_serving_outputs_for_each_kind():
    raw = {"age_distribution": tf.one_hot([30], schema.NUM_AGE_BINS),
           "gender": tf.constant([[0.3, 0.7]])}
    out = heads.serving_outputs(raw, ModelSpec(predict_gender=True))
    assert set(out) == {"age", "age_distribution", "gender", "gender_probability"}
    assert float(out["age"][0]) == pytest.approx(30.0)
    out = heads.serving_outputs({"age_scaled": tf.constant([[0.42]])},
                                ModelSpec(type="regression"))
    assert set(out) == {"age"} and float(out["age"][0]) == pytest.approx(42.0)


@pytest.mark.parametrize("kind", ["classification", "range", "regression"])
def test_describe_reads_the_same_age_as_ages(kind):
    """An app that follows describe() (JSON, no Python) gets the age `ages()` computes."""
    spec = ModelSpec(type="regression" if kind == "regression" else "classification",
                     range_mode=kind == "range", predict_gender=True)
    head = heads.age_head(spec)
    info = json.loads(json.dumps(head.describe()))  # what a sidecar file carries
    assert info["output"] == head.output and info["shape"] == [head.units]
    rng = np.random.default_rng(0)
    if kind == "regression":
        out = rng.uniform(0, 1, (4, 1)).astype(np.float32)
        app_ages = out[:, 0] * info["scale"]
    else:
        out = rng.dirichlet(np.ones(head.units), 4).astype(np.float32)
        app_ages = out @ np.asarray(info["bin_ages"], np.float32)
    np.testing.assert_allclose(app_ages, head.ages(tf.constant(out)).numpy(), rtol=1e-5)
    gender = heads.gender_head(spec).describe()
    assert gender["classes"] == list(schema.GENDERS) and gender["letters"] == ["M", "F"]
