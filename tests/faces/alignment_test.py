"""Alignment: the similarity fit, the warp's geometry, antialiasing, edge cases."""
import math

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from faces import alignment
from faces import template as template_lib

TEMPLATE = template_lib.load().points


def _similarity_matrix(angle_degrees, scale, tx, ty):
    a = scale * math.cos(math.radians(angle_degrees))
    b = scale * math.sin(math.radians(angle_degrees))
    return np.array([a, b, tx, ty], np.float32)


def test_similarity_recovers_a_known_transform():
    rng = np.random.default_rng(0)
    source = rng.uniform(0, 100, (3, 5, 2)).astype(np.float32)
    truth = np.stack([_similarity_matrix(30, 1.7, 5, -8), _similarity_matrix(-170, 0.3, 0, 0),
                      _similarity_matrix(0, 1, 100, 50)])
    target = alignment.apply_similarity(truth, source)
    np.testing.assert_allclose(alignment.similarity(source, target), truth, atol=1e-4)


def test_similarity_is_the_least_squares_fit():
    """With noisy targets, no nearby similarity has a smaller squared error."""
    rng = np.random.default_rng(1)
    source = rng.uniform(0, 100, (5, 2)).astype(np.float32)
    target = (alignment.apply_similarity(_similarity_matrix(20, 1.3, 4, 2), source)
              + rng.normal(0, 3, (5, 2)).astype(np.float32))
    best = alignment.similarity(source, target).numpy()

    def error(p):
        return float(tf.reduce_sum(tf.square(alignment.apply_similarity(p, source) - target)))
    for _ in range(50):
        assert error(best) <= error(best + rng.normal(0, 0.01, 4).astype(np.float32)) + 1e-3


def test_similarity_of_coincident_points_does_not_divide_by_zero():
    params = alignment.similarity(np.ones((5, 2), np.float32), np.zeros((5, 2), np.float32))
    assert np.all(np.isfinite(params.numpy()))


def _pattern(size=200):
    """Stripes a few pixels wide in both axes: half a pixel of misalignment shows."""
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    return np.clip(np.stack([255 * x, 255 * y, 127 + 120 * np.sin(40 * x + 25 * y)], -1),
                   0, 255).astype(np.uint8)


@pytest.mark.parametrize("angle, scale", [(0, 1.0), (17, 2.0), (-25, 0.6), (90, 3.5)])
def test_an_aligned_photo_reproduces_the_crop(angle, scale):
    """Put a crop into a 'photo' by a known similarity; aligning the photo on the crop's
    template landmarks gives back the crop (at a different output size, too)."""
    crop = _pattern()
    size = 200
    photo_size = int(size * scale * 1.6) + 40
    # Photo pixel p = A(crop pixel c): rotate by `angle` and scale about the crop centre,
    # placed at the photo centre.
    centre_c = np.array([size / 2 - 0.5] * 2, np.float32)
    centre_p = np.array([photo_size / 2 - 0.5] * 2, np.float32)
    forward = _similarity_matrix(angle, scale, 0, 0)
    shift = centre_p - alignment.apply_similarity(forward, centre_c[None]).numpy()[0]
    forward[2:] = shift
    # Render the photo by sampling the crop through the inverse (photo -> crop) transform.
    inverse = alignment.similarity(alignment.apply_similarity(forward, TEMPLATE * 100),
                                   TEMPLATE * 100).numpy()
    a, b, tx, ty = inverse
    photo = tf.raw_ops.ImageProjectiveTransformV3(
        images=tf.cast(crop, tf.float32)[None], transforms=[[a, -b, tx, b, a, ty, 0, 0]],
        output_shape=[photo_size, photo_size], fill_value=0.0, interpolation="BILINEAR",
        fill_mode="CONSTANT")[0]
    photo = tf.cast(tf.round(photo), tf.uint8)
    landmarks = alignment.apply_similarity(forward, alignment.output_points(TEMPLATE, size))
    for out_size in (size, 128):
        aligned = alignment.align(photo, landmarks[None], out_size, TEMPLATE)[0].numpy()
        expected = tf.image.resize(crop[None].astype(np.float32), [out_size, out_size],
                                   antialias=True)[0].numpy()
        inner = slice(out_size // 10, out_size - out_size // 10)  # borders see the photo's edge
        error = np.abs(aligned[inner, inner] - expected[inner, inner])
        # Measured 0.0-0.6; off by one pixel, or by half a pixel at 128 px: 2.5 or more.
        assert error.mean() < 1.5, (angle, scale, out_size, error.mean())


def test_antialiasing_averages_instead_of_skipping_pixels():
    """A face 7.3x larger in the photo than in the crop, made of 1-pixel black/white noise:
    sampled without a low-pass, each crop pixel is a blend of ~2x2 photo pixels (std over
    60); area-averaged over ~7x7 pixels first, the noise mostly cancels (std near 127/7)."""
    rng = np.random.default_rng(3)
    noise = (rng.integers(0, 2, (1200, 1200)) * 255).astype(np.uint8)
    photo = np.repeat(noise[..., None], 3, -1)
    landmarks = alignment.output_points(TEMPLATE, 160).numpy() * 7.3
    smooth = alignment.align(photo, landmarks[None], 160, TEMPLATE)[0].numpy()
    aliased = alignment.align(photo, landmarks[None], 160, TEMPLATE, antialias=False)[0].numpy()
    assert smooth[10:-10, 10:-10].std() < 30
    assert aliased[10:-10, 10:-10].std() > 55
    assert abs(smooth[10:-10, 10:-10].mean() - 127.5) < 5  # same brightness


def test_outside_the_photo_is_filled_and_no_face_gives_no_crop():
    photo = np.full((50, 50, 3), 200, np.uint8)
    # A face whose crop extends far past the photo's left edge.
    landmarks = alignment.output_points(TEMPLATE, 100).numpy() * 0.5 - [40, 0]
    crop = alignment.align(photo, landmarks[None], 100, TEMPLATE)[0].numpy()
    assert crop[:, :10].max() == 0 and crop[40:60, -20:].min() > 190
    filled = alignment.align(photo, landmarks[None], 100, TEMPLATE, fill_value=7.0)[0].numpy()
    assert filled[:, :10].max() == 7
    assert alignment.align(photo, np.zeros((0, 5, 2), np.float32), 64).shape == (0, 64, 64, 3)


def test_a_face_wholly_outside_or_degenerate_landmarks_do_not_fail():
    photo = np.full((50, 50, 3), 200, np.uint8)
    far = alignment.output_points(TEMPLATE, 32).numpy() + 1000
    degenerate = np.zeros((5, 2), np.float32)
    crops = alignment.align(photo, np.stack([far, degenerate]), 32, TEMPLATE).numpy()
    assert crops.shape == (2, 32, 32, 3) and np.all(np.isfinite(crops))
    assert crops[0].max() == 0  # nothing of the photo is in view


def test_aligning_a_utkface_crop_on_its_own_landmarks_changes_little(detector, utk_dir):
    """The template is the train crops' mean: a crop aligned on its detected landmarks stays
    close to itself (UTKFace crops are already aligned, by another method)."""
    import os

    names = sorted(os.listdir(utk_dir))[100:2000:300]
    close = 0
    for name in names:
        crop = np.asarray(Image.open(os.path.join(utk_dir, name)).convert("RGB"))
        found = detector.find(crop)
        if not len(found.boxes):
            continue
        aligned = alignment.align(crop, found.landmarks[:1], 200)[0].numpy()
        close += np.abs(aligned[40:160, 40:160] - crop[40:160, 40:160]).mean() < 25
    assert close >= len(names) - 1
