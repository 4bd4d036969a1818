"""The trainer/export contract: spec round trip and reading ages from outputs."""
import numpy as np
import pytest

from agegender import model_spec as ms


def test_spec_round_trip_and_validation():
    spec = ms.ModelSpec(type="classification", range_mode=True, predict_gender=True, img_dim=64)
    again = ms.ModelSpec.from_json(spec.to_json())
    assert again == spec and again.age_output == ms.AGE_RANGE
    assert ms.ModelSpec(type="regression").age_output == ms.AGE_REGRESSION
    with pytest.raises(ValueError):
        ms.ModelSpec(type="ranking")
    with pytest.raises(ValueError):
        ms.ModelSpec(type="regression", range_mode=True)


def test_ranges():
    assert ms.NUM_AGE_RANGES == 21
    np.testing.assert_array_equal(ms.age_to_range([0, 4, 5, 99, 100, 116]), [0, 0, 1, 19, 20, 20])
    assert ms.range_midpoints()[0] == 2 and ms.range_midpoints()[20] == 102


def test_ages_from_outputs():
    dist = np.zeros((2, 101), np.float32)
    dist[0, 30] = 0.5
    dist[0, 40] = 0.5
    dist[1, 7] = 1
    clf = ms.ModelSpec()
    np.testing.assert_allclose(ms.ages_from_outputs({ms.AGE_DISTRIBUTION: dist}, clf), [35, 7])
    reg = ms.ModelSpec(type="regression")
    np.testing.assert_allclose(
        ms.ages_from_outputs({ms.AGE_REGRESSION: np.array([[0.25], [0.6]])}, reg), [25, 60])
    rng = np.zeros((1, ms.NUM_AGE_RANGES), np.float32)
    rng[0, 2] = 1
    np.testing.assert_allclose(
        ms.ages_from_outputs({ms.AGE_RANGE: rng}, ms.ModelSpec(range_mode=True)), [12])
