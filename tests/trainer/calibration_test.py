"""Calibration: fitted temperatures make over- or under-confident distributions honest."""
import numpy as np
import pytest

from agegender import heads, schema
from agegender.model_spec import ModelSpec
from trainer import calibration


def _gaussians(centres, sigma):
    ages = np.arange(schema.NUM_AGE_BINS)
    p = np.exp(-0.5 * ((ages[None] - np.asarray(centres)[:, None]) / sigma) ** 2)
    return (p / p.sum(-1, keepdims=True)).astype(np.float32)


@pytest.mark.parametrize("claimed_sigma", [2.0, 12.0], ids=["overconfident", "underconfident"])
def test_age_temperature_brings_coverage_to_nominal(claimed_sigma):
    """True ages scatter with sigma 6 around the predicted centre; a model claiming sigma 2
    covers far less than 80% and one claiming 12 far more; after the fit both are close."""
    rng = np.random.default_rng(0)
    centres = rng.uniform(15, 75, 3000)
    true_age = np.clip(np.round(centres + rng.normal(0, 6.0, centres.size)), 0, 100)
    output = _gaussians(centres, claimed_sigma)
    head = heads.DistributionHead()
    before = calibration.age_coverage(head, output, true_age, 1.0)
    assert abs(before[0.8] - 0.8) > 0.15
    t, after = calibration.fit_age_temperature(head, output, true_age)
    assert (t > 1.0) == (claimed_sigma < 6.0)
    for nominal in heads.INTERVALS:
        assert after[nominal] == pytest.approx(nominal, abs=0.05)


def test_gender_temperature_and_spec():
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 2, 4000)
    # Right 75% of the time, but always claiming 0.99: the fit must soften it.
    right = rng.random(4000) < 0.75
    predicted = np.where(right, truth, 1 - truth)
    probs = np.where(predicted[:, None] == np.arange(2)[None], 0.99, 0.01).astype(np.float32)
    t = calibration.fit_gender_temperature(probs, truth)
    assert t > 2.0
    softened = heads.apply_temperature(probs, t).numpy().max(-1)
    assert softened.mean() == pytest.approx(0.75, abs=0.05)
    spec, found = calibration.calibrate(
        ModelSpec(predict_gender=True),
        {"age_distribution": _gaussians(np.full(200, 40.0), 5.0), "gender": probs[:200]},
        {schema.AGE: np.full(200, 40), schema.GENDER: truth[:200]})
    assert spec.gender_temperature == found["gender_temperature"] > 1.0
    assert spec.age_temperature == found["age_temperature"]
    # Regression: nothing to calibrate for the age.
    assert calibration.fit_age_temperature(heads.RegressionHead(), None, [1])[0] == 1.0


def test_prior_correction_then_temperature_on_the_corrected_distribution():
    counts = {"20-29": 1600, "60-69": 100}
    spec = calibration.prior_corrected(ModelSpec(), counts, 0.5)
    assert spec.age_prior_correction == 0.5 and len(spec.age_prior_weights) == 101
    assert spec.age_prior_weights[65] == pytest.approx(4 * spec.age_prior_weights[25])
    assert calibration.prior_corrected(spec, counts, 0.0).age_prior_weights is None
    with pytest.raises(ValueError, match="regression"):
        calibration.prior_corrected(ModelSpec(type="regression"), counts, 0.5)
    # The temperature is fitted on the distribution the answers read: the corrected one.
    rng = np.random.default_rng(2)
    centres = rng.uniform(15, 75, 2000)
    truth = np.clip(np.round(centres + rng.normal(0, 6.0, centres.size)), 0, 100)
    output = {"age_distribution": _gaussians(centres, 4.0)}
    strong = calibration.prior_corrected(ModelSpec(), {"20-29": 1600, "60-69": 100}, 1.0)
    fitted, found = calibration.calibrate(strong, output, {schema.AGE: truth})
    assert fitted.age_prior_weights == strong.age_prior_weights
    head = heads.DistributionHead()
    corrected = heads.apply_prior_weights(output["age_distribution"],
                                          strong.age_prior_weights).numpy()
    assert found["age_temperature"] == calibration.fit_age_temperature(head, corrected,
                                                                       truth)[0]
    assert found["age_temperature"] != calibration.fit_age_temperature(
        head, output["age_distribution"], truth)[0]
