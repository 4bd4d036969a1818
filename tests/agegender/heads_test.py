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
    assert set(out) == {"age", "age_distribution", "age_std", "age_interval_50",
                        "age_interval_80", "gender", "gender_probability"}
    assert float(out["age"][0]) == pytest.approx(30.0)
    assert float(out["age_std"][0]) == pytest.approx(0.0, abs=1e-4)
    assert out["age_interval_80"].numpy().tolist() == [[30.0, 30.0]]
    out = heads.serving_outputs({"age_scaled": tf.constant([[0.42]])},
                                ModelSpec(type="regression"))
    assert set(out) == {"age"} and float(out["age"][0]) == pytest.approx(42.0)


def test_spread_and_intervals_hand_computed():
    """Two equal bins at 20 and 40: mean 30, std 10; the 50% interval reaches both bins
    (the CDF is 0.5 at 20), the 80% one too; range head: the ranges' first and last years."""
    probs = np.zeros((1, 101), np.float32)
    probs[0, 20] = probs[0, 40] = 0.5
    out = heads.DistributionHead().spread_outputs(probs)
    assert float(out["age_std"][0]) == pytest.approx(10.0, rel=1e-5)
    assert out["age_interval_50"].numpy().tolist() == [[20.0, 40.0]]
    assert out["age_interval_80"].numpy().tolist() == [[20.0, 40.0]]
    # A peaked distribution: the 50% interval is narrower than the 80% one.
    peaked = age_histogram.age_histogram(50, 10.0)[None].astype(np.float32)
    out = heads.DistributionHead().spread_outputs(peaked)
    low50, high50 = out["age_interval_50"].numpy()[0]
    low80, high80 = out["age_interval_80"].numpy()[0]
    assert low80 <= low50 <= 50 <= high50 <= high80 and high80 - low80 > high50 - low50
    ranges = np.zeros((1, heads.NUM_AGE_RANGES), np.float32)
    ranges[0, 4] = 1.0  # 20-24
    out = heads.RangeHead().spread_outputs(ranges)
    assert out["age_interval_80"].numpy().tolist() == [[20.0, 24.0]]


def test_temperature_widens_or_sharpens():
    peaked = age_histogram.age_histogram(50, 10.0)[None].astype(np.float32)
    head = heads.DistributionHead()
    stds = [float(head.spread_outputs(peaked, t)["age_std"][0]) for t in (0.5, 1.0, 2.0)]
    assert stds[0] < stds[1] < stds[2]
    probs = np.array([[0.2, 0.8]], np.float32)
    sharper = heads.GenderHead().serving_outputs(probs, 0.5)["gender_probability"].numpy()
    assert sharper[0, 1] > 0.8 and sharper.sum() == pytest.approx(1.0)
    # The temperature never changes the point estimate.
    spec = ModelSpec(age_temperature=3.0)
    a = heads.serving_outputs({"age_distribution": peaked}, spec)["age"]
    b = heads.serving_outputs({"age_distribution": peaked}, ModelSpec())["age"]
    assert float(a[0]) == pytest.approx(float(b[0]))


def test_mean_term_of_the_distribution_loss():
    """EMD plus weight x |mean gap| / 100: one-hot 20 vs one-hot 30 gives 10/100 more per
    unit of weight; identical distributions still cost nothing."""
    head = heads.DistributionHead()
    a, b = tf.one_hot([20], 101), tf.one_hot([30], 101)
    base = float(head.loss()(a, b)[0])
    assert float(head.loss(2.0)(a, b)[0]) == pytest.approx(base + 2.0 * 0.10, rel=1e-5)
    assert float(head.loss(2.0)(a, a)[0]) == pytest.approx(0.0, abs=1e-7)

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
