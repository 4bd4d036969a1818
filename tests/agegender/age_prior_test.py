"""The train split's age prior: the rare-age loss weights and the prior correction's weights."""
import numpy as np
import pytest

from agegender import age_prior, heads
from agegender.model_spec import ModelSpec


def test_rare_ages_weigh_more():
    counts = {"0-9": 100, "20-29": 400, "60-69": 25}
    w = age_prior.decade_weights(counts, 0.5)
    assert len(w) == age_prior.NUM_DECADES
    assert w[6] > w[0] > w[2]  # 25 faces > 100 > 400
    assert w[6] / w[2] == pytest.approx((400 / 25) ** 0.5)
    # Normalised: the mean weight over the train faces is 1.
    assert (100 * w[0] + 400 * w[2] + 25 * w[6]) / 525 == pytest.approx(1.0)
    assert age_prior.decade_weights({}, 0.5) is None


def test_capped_weights_keep_the_mean_and_the_order_below_the_cap():
    """Inverse frequency gives 4 centenarians 100x the weight of a 20-something; capped at 3
    times the mean face, they and the 60-somethings weigh 3, the uncapped decades keep their
    ratio, and the mean weight over the train faces is still 1."""
    counts = {"0-9": 100, "20-29": 400, "60-69": 25, "100+": 4}
    total = sum(counts.values())
    idx = {"0-9": 0, "20-29": 2, "60-69": 6, "100+": 10}
    plain = age_prior.decade_weights(counts, 1.0)
    assert max(plain) > 3
    w = age_prior.decade_weights(counts, 1.0, max_weight=3.0)
    assert w[10] == pytest.approx(3.0) and w[6] == pytest.approx(3.0)
    assert w[0] / w[2] == pytest.approx(plain[0] / plain[2]) == pytest.approx(4.0)
    assert w[2] > plain[2]  # the common ages take back what the rare ones lost
    assert sum(counts[k] * w[i] for k, i in idx.items()) / total == pytest.approx(1.0)
    assert w[1] == 1.0  # no faces in 10-19: its weight is never used
    # A cap above every weight changes nothing; a cap of 1 weighs every face alike.
    assert age_prior.decade_weights(counts, 1.0, max_weight=1000.0) == pytest.approx(plain)
    assert all(x == pytest.approx(1.0) for x in age_prior.decade_weights(counts, 1.0, 1.0))
    with pytest.raises(ValueError, match=">= 1"):
        age_prior.decade_weights(counts, 1.0, max_weight=0.5)


def test_class_weights_follow_each_class_decade():
    counts = {"0-9": 100, "20-29": 400, "60-69": 25, "100+": 4}
    decades = age_prior.decade_weights(counts, 1.0)
    one_year = age_prior.class_weights(heads.DistributionHead().class_ages(), counts, 1.0)
    assert len(one_year) == 101
    assert one_year[9] == decades[0] and one_year[10] == decades[1]
    assert one_year[65] == decades[6] and one_year[100] == decades[10]
    # The range head's classes stand for their ranges: 60-64 and 65-69 are both 60-69.
    ranges = age_prior.class_weights(heads.RangeHead().class_ages(), counts, 1.0)
    assert len(ranges) == heads.NUM_AGE_RANGES
    assert ranges[12] == ranges[13] == decades[6] and ranges[-1] == decades[10]
    with pytest.raises(ValueError, match="no train faces"):
        age_prior.class_weights(heads.DistributionHead().class_ages(), {}, 1.0)


def test_correction_moves_answers_away_from_the_common_ages():
    """A model trained where 20-29 is 16x as common as 60-69 and unsure between 25 and 65
    answers near the common age; corrected with power 1, it answers between them."""
    counts = {"20-29": 1600, "60-69": 100}
    p = np.zeros((1, 101), np.float32)
    p[0, 25], p[0, 65] = 0.8, 0.2
    plain = ModelSpec()
    corrected = ModelSpec(age_prior_correction=1.0, age_prior_weights=age_prior.class_weights(
        heads.DistributionHead().class_ages(), counts, 1.0))
    age_plain = float(heads.serving_outputs({"age_distribution": p}, plain)[heads.AGE][0])
    out = heads.serving_outputs({"age_distribution": p}, corrected)
    assert age_plain == pytest.approx(33.0)
    # 0.8 / 16 against 0.2: the old age now holds 0.2 / 0.25 = 80% of the distribution.
    assert float(out[heads.AGE][0]) == pytest.approx(57.0, abs=1e-3)
    dist = out["age_distribution"].numpy()[0]
    assert dist.sum() == pytest.approx(1.0) and dist[65] == pytest.approx(0.8)
    # The spread is read from the corrected distribution too.
    assert float(out[heads.AGE_STD][0]) == pytest.approx(16.0, abs=1e-3)


def test_spec_refuses_weights_that_do_not_fit_the_head():
    with pytest.raises(ValueError, match="regression"):
        ModelSpec(type="regression", age_prior_weights=[1.0])
    with pytest.raises(ValueError, match="one weight per class"):
        ModelSpec(age_prior_weights=[1.0] * 21)
    spec = ModelSpec(range_mode=True, age_prior_correction=0.5,
                     age_prior_weights=[1.0] * heads.NUM_AGE_RANGES)
    assert ModelSpec.from_json(spec.to_json()) == spec
