"""The age label: exact values, edge bins, and NumPy == TF."""
import math

import numpy as np
import pytest

from agegender import age_histogram as ah
from agegender import schema


def _cdf(x):
    return 0.5 * (1 + math.erf(x / math.sqrt(2)))


def test_interior_age_matches_hand_computed_bins():
    h = ah.age_histogram(40, 5)
    assert h.shape == (schema.NUM_AGE_BINS,) and h.dtype == np.float32
    sigma = 1.0
    z = _cdf(5) - _cdf(-5)  # truncation at +-5 sigma
    assert h[40] == pytest.approx((_cdf(0.5) - _cdf(-0.5)) / z, rel=1e-6)
    assert h[41] == pytest.approx((_cdf(1.5 / sigma) - _cdf(0.5)) / z, rel=1e-6)
    assert h[45] == pytest.approx((_cdf(5) - _cdf(4.5)) / z, rel=1e-5)
    assert h[34] == 0 and h[46] == 0  # truncated to +-5 years
    assert h.sum() == pytest.approx(1.0, abs=1e-6)
    assert h[38] == pytest.approx(h[42])  # symmetric
    assert ah.expected_age(h) == pytest.approx(40, abs=1e-5)


def test_edges_fold_into_first_and_last_bin():
    h0 = ah.age_histogram(0, 5)
    assert h0[0] == pytest.approx((_cdf(0.5) - _cdf(-5)) / (_cdf(5) - _cdf(-5)), rel=1e-6)
    assert h0.sum() == pytest.approx(1.0, abs=1e-6)
    h116 = ah.age_histogram(116, 5)
    assert h116[-1] == pytest.approx(1.0) and h116[:-1].sum() == 0
    h98 = ah.age_histogram(98, 5)
    assert h98[100] == pytest.approx(sum(_cdf(x) for x in [5]) - _cdf(1.5), rel=1e-5)


def test_zero_deviation_is_one_hot_and_other_deviations_widen():
    np.testing.assert_array_equal(ah.age_histogram(30, 0), np.eye(101, dtype=np.float32)[30])
    assert np.count_nonzero(ah.age_histogram(30, 2)) == 5
    assert np.count_nonzero(ah.age_histogram(30, 10)) == 21


def test_deterministic_and_returns_a_copy():
    a = ah.age_histogram(25, 5)
    a[:] = 0
    np.testing.assert_array_equal(ah.age_histogram(25, 5), ah.compute_histogram(25.0, 5.0))


@pytest.mark.parametrize("age,dev", [(-1, 5), (float("nan"), 5), (30, -1), (30, float("inf"))])
def test_bad_arguments_raise(age, dev):
    with pytest.raises(ValueError):
        ah.age_histogram(age, dev)


@pytest.mark.parametrize("dev", [0, 1.5, 5, 8])
def test_tensorflow_version_equals_numpy(dev):
    ages = np.array([0, 1, 3, 27, 60, 97, 99, 100, 101, 116])
    tf_h = ah.age_histograms_tf(ages, dev).numpy()
    np_h = np.stack([ah.age_histogram(a, dev) for a in ages])
    np.testing.assert_allclose(tf_h, np_h, atol=1e-6)
