"""Synthetic photos: deterministic, test-split faces only, placed as promised."""
import os
import shutil

import numpy as np
import pytest

from faces import boxes as box_ops
from faces import synthetic, utkface


def test_same_seed_same_photos_other_seed_other_photos(photos):
    a = photos(2, seed=5)
    b = photos(2, seed=5)
    c = photos(2, seed=6)
    for x, y in zip(a, b):
        assert np.array_equal(x.image, y.image) and np.array_equal(x.boxes, y.boxes)
        assert x.sources == y.sources
    assert a[0].sources != c[0].sources


def test_faces_are_test_split_placed_inside_without_overlap(photos):
    made = photos(6, seed=7, width=320, height=240, faces_per_photo=(2, 4), face_sizes=(40, 120))
    seen = set()
    for photo in made:
        assert photo.image.shape == (240, 320, 3) and photo.image.dtype == np.uint8
        n = len(photo.boxes)
        assert 2 <= n <= 4 and len(photo.sources) == n
        sides = photo.boxes[:, 2] - photo.boxes[:, 0]
        assert np.all(sides >= 40) and np.all(sides <= 120)
        assert np.array_equal(sides, photo.boxes[:, 3] - photo.boxes[:, 1])  # squares
        assert np.all(photo.boxes[:, :2] >= 0)
        assert np.all(photo.boxes[:, 2] <= 320) and np.all(photo.boxes[:, 3] <= 240)
        iou = box_ops.overlap(photo.boxes, photo.boxes).numpy()
        assert np.all(iou[~np.eye(n, dtype=bool)] == 0)
        for source in photo.sources:
            assert source not in seen  # each face used once
            seen.add(source)
            with open(source, "rb") as f:
                assert utkface.split_of_pixels(utkface.decode(f.read())) == "test"


@pytest.mark.parametrize("kind", synthetic.BACKGROUNDS)
def test_every_background_kind(kind):
    rng = np.random.default_rng(0)
    image = synthetic.background(rng, 64, 48, kind)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert (image.reshape(-1, 3).std(0).max() == 0) == (kind == "flat")


def test_unknown_background_and_impossible_layouts_are_refused(photos):
    with pytest.raises(ValueError, match="unknown background"):
        synthetic.background(np.random.default_rng(0), 10, 10, "marble")
    with pytest.raises(ValueError, match="do not fit"):
        photos(1, seed=8, width=60, height=60, faces_per_photo=(4, 4), face_sizes=(40, 50))


def test_running_out_of_faces_is_an_error(utk_dir, tmp_path):
    for name in sorted(os.listdir(utk_dir))[:5]:
        shutil.copy(os.path.join(utk_dir, name), tmp_path / name)
    with pytest.raises(ValueError, match="ran out"):
        list(synthetic.photos(10, 0, data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="no face crops"):
        list(synthetic.photos(1, 0, data_dir=str(tmp_path / "empty")))
