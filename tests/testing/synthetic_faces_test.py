"""Synthetic photos: deterministic, test-split faces only, placed as promised."""
import os
import shutil

import numpy as np
import pytest

from faces import boxes as box_ops
from faces import utkface
from testing import synthetic_faces


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


@pytest.mark.parametrize("kind", synthetic_faces.BACKGROUNDS)
def test_every_background_kind(kind):
    rng = np.random.default_rng(0)
    image = synthetic_faces.background(rng, 64, 48, kind)
    assert image.shape == (48, 64, 3) and image.dtype == np.uint8
    assert (image.reshape(-1, 3).std(0).max() == 0) == (kind == "flat")


def test_unknown_background_and_impossible_layouts_are_refused(photos):
    with pytest.raises(ValueError, match="unknown background"):
        synthetic_faces.background(np.random.default_rng(0), 10, 10, "marble")
    with pytest.raises(ValueError, match="do not fit"):
        photos(1, seed=8, width=60, height=60, faces_per_photo=(4, 4), face_sizes=(40, 50))


def test_running_out_of_faces_is_an_error(utk_dir, tmp_path):
    for name in sorted(os.listdir(utk_dir))[:5]:
        shutil.copy(os.path.join(utk_dir, name), tmp_path / name)
    with pytest.raises(ValueError, match="ran out"):
        list(synthetic_faces.photos(10, 0, data_dir=str(tmp_path)))
    with pytest.raises(ValueError, match="no face crops"):
        list(synthetic_faces.photos(1, 0, data_dir=str(tmp_path / "empty")))


def _one_face(utk_dir, monkeypatch, backdrop, *, context, rotation, seed=6, size=(150, 150)):
    """One test-split face pasted at `size` on a plain `backdrop` colour (the background
    replaced, so only the face and its surroundings differ between backdrops). Seed 6
    draws a rotation of 12.5 degrees (at most 15)."""
    monkeypatch.setattr(synthetic_faces, "background",
                        lambda rng, w, h, kind=None: np.full((h, w, 3), backdrop, np.uint8))
    return synthetic_faces.photos(1, seed, data_dir=utk_dir, faces_per_photo=(1, 1),
                                  face_sizes=size, max_rotation=rotation, context=context)


def test_context_changes_no_draw_and_context_0_is_the_hard_cut_photo(photos):
    plain = photos(3, seed=11)
    hard = photos(3, seed=11, context=0.0)
    soft = photos(3, seed=11, context=0.25)
    for p, h, s in zip(plain, hard, soft):
        assert np.array_equal(p.image, h.image)
        assert np.array_equal(p.boxes, s.boxes) and p.sources == s.sources
        assert not np.array_equal(p.image, s.image)


@pytest.mark.parametrize("context", [-0.1, float("nan"), 1.5])
def test_a_bad_context_is_refused(photos, context):
    with pytest.raises(ValueError, match="context"):
        photos(1, seed=0, context=context)


def test_with_context_a_rotated_face_box_holds_no_background(utk_dir, monkeypatch):
    """Hard-cut, the corners of a rotated face's box are background; with context the box
    is all face (the same pixels on any backdrop), its surroundings fade out over the
    margin's outer half, and past the margin the backdrop is untouched."""
    def box_and_photos(context):
        black, white = (next(_one_face(utk_dir, monkeypatch, v, context=context,
                                       rotation=15)) for v in (0, 255))
        x0, y0, x1, y1 = black.boxes[0].astype(int)
        return (x0, y0, x1, y1), black.image.astype(int), white.image.astype(int)

    (x0, y0, x1, y1), black, white = box_and_photos(0.0)
    for y, x in ((y0, x0), (y0, x1 - 4), (y1 - 4, x0), (y1 - 4, x1 - 4)):
        corner = (slice(y, y + 4), slice(x, x + 4))
        assert np.abs(white[corner] - black[corner]).mean() > 200  # background in the box
    (x0, y0, x1, y1), black, white = box_and_photos(0.25)
    assert np.array_equal(black[y0:y1, x0:x1], white[y0:y1, x0:x1])
    side = x1 - x0
    margin, middle = int(np.ceil(0.25 * side)), (y0 + y1) // 2
    # Along the middle of the right edge (tilted by 12.5 degrees: 2 px over these rows):
    # opaque up to margin / 2, then fading, then nothing.
    rows = slice(middle - 10, middle + 10)
    opaque = (rows, slice(x1, x1 + margin // 2 - 4))
    assert np.array_equal(black[opaque], white[opaque])
    fading = (rows, slice(x1 + margin // 2 + 4, x1 + margin - 4))
    assert np.all(white[fading] >= black[fading]) and white[fading].mean() > black[fading].mean() + 50
    # Past the rotated square's farthest corner (0.1 x side beyond the box) and the margin.
    beyond = (slice(None), slice(x1 + margin + int(np.ceil(0.1 * side)), None))
    assert black[beyond].max() == 0 and white[beyond].min() == 255


def test_with_context_the_face_sits_in_its_box_and_its_border_continues(
        utk_dir, monkeypatch):
    """Unrotated, the face in its box is the hard-cut face (same place, same scale), and
    past the box's edge the crop's border pixels continue outward."""
    hard = next(_one_face(utk_dir, monkeypatch, 0, context=0.0, rotation=0))
    soft = next(_one_face(utk_dir, monkeypatch, 0, context=0.25, rotation=0))
    x0, y0, x1, y1 = soft.boxes[0].astype(int)
    inside = (slice(y0 + 3, y1 - 3), slice(x0 + 3, x1 - 3))
    assert np.abs(soft.image[inside].astype(int) - hard.image[inside]).mean() < 1.5
    image = soft.image.astype(int)
    band = 10  # opaque: within margin / 2 of the box
    for outside, edge in ((image[y0:y1, x0 - band:x0], image[y0:y1, x0:x0 + 1]),
                          (image[y0:y1, x1:x1 + band], image[y0:y1, x1 - 1:x1]),
                          (image[y0 - band:y0, x0:x1], image[y0:y0 + 1, x0:x1]),
                          (image[y1:y1 + band, x0:x1], image[y1 - 1:y1, x0:x1])):
        assert np.abs(outside - edge).mean() < 6  # measured ~2
        assert outside.mean() > 20  # not the black backdrop


def test_with_context_the_aligned_crop_does_not_see_the_background(utk_dir, monkeypatch,
                                                                   detector):
    """What the benchmark's MAE measures: the aligned crop of a rotated pasted face (framed
    on the landmarks found on a black backdrop), cut from it on a black and on a white
    backdrop. Hard-cut, its corners show the backdrop; with context the whole crop is the
    face and its surroundings, the same on both."""
    from faces import alignment

    def crops(context):
        black, white = (next(_one_face(utk_dir, monkeypatch, backdrop, context=context,
                                       rotation=15)) for backdrop in (0, 255))
        found = detector.find(black.image)
        assert len(found.boxes) == 1
        return [alignment.align(p.image, found.landmarks, 128)[0].numpy()
                for p in (black, white)]

    def corners(image):
        return np.concatenate([image[:12, :12], image[:12, -12:], image[-12:, :12],
                               image[-12:, -12:]])

    black, white = crops(0.0)
    assert np.abs(corners(white) - corners(black)).mean() > 60  # measured 186
    black, white = crops(0.25)
    assert np.abs(white - black).max() < 1  # measured 0
