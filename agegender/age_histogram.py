"""The age label as a distribution over one-year bins (the original project's "age vector").

Definition (identical in the NumPy and the TF implementation, tested against each other):
a Gaussian centred on the age with sigma = deviation / 5, truncated to
[age - deviation, age + deviation], integrated exactly over each one-year bin from the
normal CDF and renormalised to sum to 1. Bin k covers [k - 0.5, k + 0.5) for 0 < k < 100;
bin 0 also takes everything below 0.5 and bin 100 everything from 99.5 up, so ages above
100 fall in the last bin. deviation = 0 gives a one-hot label.

The original drew 1,000,000 normal samples per label (about 20 ms, and a different
histogram on every call); this is exact, deterministic and takes microseconds.
"""
import functools
import math

import numpy as np

from agegender import schema

# The label's half-width in years when nobody says otherwise (the records job's default,
# and a spec's when the records do not say).
DEFAULT_DEVIATION = 5.0
# sigma = deviation / SIGMAS_PER_DEVIATION, i.e. the truncation window is +-5 sigma.
SIGMAS_PER_DEVIATION = 5.0


def _check(age, deviation):
    if not (isinstance(deviation, (int, float)) and math.isfinite(deviation) and deviation >= 0):
        raise ValueError(f"age deviation must be a finite number >= 0, got {deviation!r}")
    if not (math.isfinite(age) and age >= 0):
        raise ValueError(f"age must be a finite number >= 0, got {age!r}")


def _normal_cdf(x):
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def age_histogram(age, deviation=DEFAULT_DEVIATION, num_bins=schema.NUM_AGE_BINS):
    """The label distribution for one age, float32[num_bins] summing to 1."""
    _check(age, deviation)
    return _cached_histogram(float(age), float(deviation), int(num_bins)).copy()


def compute_histogram(age, deviation, num_bins=schema.NUM_AGE_BINS):
    """`age_histogram` without the cache and the argument checks (what the benchmark times)."""
    last = num_bins - 1
    hist = np.zeros(num_bins, np.float64)
    if deviation == 0:
        hist[min(int(math.floor(age + 0.5)), last)] = 1.0
        return hist.astype(np.float32)
    sigma = deviation / SIGMAS_PER_DEVIATION
    lo, hi = age - deviation, age + deviation
    # Only the bins the truncation window touches get mass.
    first_bin = min(max(int(math.floor(lo + 0.5)), 0), last)
    last_bin = min(max(int(math.floor(hi + 0.5)), 0), last)
    for k in range(first_bin, last_bin + 1):
        left = -math.inf if k == 0 else k - 0.5
        right = math.inf if k == last else k + 0.5
        a, b = max(left, lo), min(right, hi)
        if b > a:
            hist[k] = _normal_cdf((b - age) / sigma) - _normal_cdf((a - age) / sigma)
    hist /= hist.sum()
    return hist.astype(np.float32)


# Labels are integer ages, so a writer computes each distinct histogram once.
_cached_histogram = functools.lru_cache(maxsize=4096)(compute_histogram)


def age_histograms_tf(ages, deviation, num_bins=schema.NUM_AGE_BINS):
    """The same distribution computed in-graph for a batch: ages [N] -> float32 [N, num_bins].

    Used by the trainer when `--age_deviation` differs from the one the records were
    written with, so the label can change without rewriting the records.
    """
    import tensorflow as tf

    ages = tf.cast(tf.reshape(ages, [-1, 1]), tf.float64)
    deviation = float(deviation)
    if deviation < 0:
        raise ValueError(f"age deviation must be >= 0, got {deviation}")
    last = num_bins - 1
    if deviation == 0:
        idx = tf.minimum(tf.cast(tf.floor(ages[:, 0] + 0.5), tf.int32), last)
        return tf.one_hot(idx, num_bins, dtype=tf.float32)
    sigma = deviation / SIGMAS_PER_DEVIATION
    inner = tf.range(1, num_bins, dtype=tf.float64) - 0.5  # edges between bins
    edges = tf.concat([[-np.inf], inner, [np.inf]], axis=0)[tf.newaxis, :]
    clipped = tf.minimum(tf.maximum(edges, ages - deviation), ages + deviation)
    cdf = 0.5 * (1.0 + tf.math.erf((clipped - ages) / (sigma * math.sqrt(2.0))))
    mass = cdf[:, 1:] - cdf[:, :-1]
    mass = mass / tf.reduce_sum(mass, axis=1, keepdims=True)
    return tf.cast(mass, tf.float32)


def expected_age(distribution):
    """Age as the expected value over the bins (NumPy, any leading shape)."""
    distribution = np.asarray(distribution, np.float64)
    return distribution @ np.arange(distribution.shape[-1], dtype=np.float64)
