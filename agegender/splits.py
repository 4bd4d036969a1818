"""Which split an image lands in: decided by the SHA-256 of its decoded RGB pixels only.

So identical pixels always share a split (no leak between train and test), and every part
that needs to know a face's split (the records job, the face template learnt from the
train crops, the synthetic test photos) computes it the same way:

- `pixel_hash(pixels)`: hex SHA-256 of uint8 [H, W, 3] pixels as `preprocessing.decode_rgb`
  gives them (another JPEG decoder's pixels can differ by one level and hash differently);
- `split_of(sha256, fractions)`: bits 0-63 -> the split; `shard_of`: bits 64-127 -> the shard;
  `bucket_of`: bits 128-191 -> a work bucket (where the records job on the DaskRunner joins
  the shard plan; it never changes where a face goes).
"""
import hashlib

import numpy as np

from agegender import schema

DEFAULT_FRACTIONS = (0.8, 0.1, 0.1)  # for schema.SPLITS, in that order


def default_fractions():
    """(split, fraction) pairs of the records job's default --split."""
    return tuple(zip(schema.SPLITS, DEFAULT_FRACTIONS))


def pixel_hash(pixels):
    """Hex SHA-256 of decoded pixels (a NumPy array, or a buffer of their bytes)."""
    if isinstance(pixels, np.ndarray):
        pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    return hashlib.sha256(pixels).hexdigest()


def split_of(sha256, fractions):
    """The split of an image from its pixel hash: identical pixels -> same split, always.

    `fractions` is a sequence of (split, fraction). The first 64 bits of the SHA-256 are a
    uniform number in [0, 1); `shard_of` uses the next 64, which are independent of these.
    """
    u = int(sha256[:16], 16) / 2.0 ** 64
    cumulative = 0.0
    last = None
    for split, fraction in fractions:
        if fraction <= 0:
            continue
        cumulative += fraction
        last = split
        if u < cumulative:
            return split
    return last  # rounding: fractions that sum to 0.9999999


def shard_of(sha256, num_shards):
    """The shard of an image within its split (copies of one image share a shard)."""
    return int(sha256[16:32], 16) % num_shards


def bucket_of(sha256, num_buckets):
    """A bucket of images for spreading work, independent of their split and shard."""
    return int(sha256[32:48], 16) % num_buckets
