"""Where an image goes: a function of its pixel hash only, in the right proportions."""
import hashlib

import numpy as np
import pytest

from agegender import splits

FRACTIONS = splits.default_fractions()


def _sha(i):
    return hashlib.sha256(str(i).encode()).hexdigest()


def test_split_is_a_function_of_the_hash_with_the_right_proportions():
    shas = [_sha(i) for i in range(20000)]
    placed = [splits.split_of(s, FRACTIONS) for s in shas]
    assert placed == [splits.split_of(s, FRACTIONS) for s in shas]
    share = {k: placed.count(k) / len(placed) for k, _ in FRACTIONS}
    assert share["train"] == pytest.approx(0.8, abs=0.01)
    assert share["validation"] == pytest.approx(0.1, abs=0.01)
    no_test = (("train", 0.9), ("validation", 0.1), ("test", 0.0))
    assert "test" not in {splits.split_of(s, no_test) for s in shas[:2000]}


def test_shard_is_in_range_and_spread():
    shards = [splits.shard_of(_sha(i), 7) for i in range(7000)]
    assert set(shards) == set(range(7))
    assert min(shards.count(k) for k in range(7)) > 850


def test_buckets_spread_the_faces_of_every_shard():
    shas = [_sha(i) for i in range(16000)]
    for shard in range(4):
        buckets = [splits.bucket_of(s, 16) for s in shas if splits.shard_of(s, 4) == shard]
        assert set(buckets) == set(range(16))
        assert min(buckets.count(k) for k in range(16)) > 180  # ~250 each

def test_pixel_hash_of_an_array_and_of_its_bytes_agree():
    pixels = np.arange(48, dtype=np.uint8).reshape(4, 4, 3)
    assert splits.pixel_hash(pixels) == hashlib.sha256(pixels.tobytes()).hexdigest()
    assert splits.pixel_hash(memoryview(pixels.tobytes())) == splits.pixel_hash(pixels)
