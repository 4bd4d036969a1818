"""Each photo degradation does what its name says, in range, on a batch."""
import numpy as np
import pytest
import tensorflow as tf

from agegender import degradations


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    smooth = tf.image.resize(rng.uniform(0, 255, (2, 8, 8, 3)).astype(np.float32), [64, 64])
    detail = rng.uniform(-30, 30, (2, 64, 64, 3)).astype(np.float32)
    return tf.clip_by_value(smooth + detail, 0.0, 255.0)


def _detail(images):
    """Mean absolute difference between neighbouring pixels: high frequencies."""
    return float(tf.reduce_mean(tf.abs(images[:, :, 1:] - images[:, :, :-1])))


def test_every_benchmark_degradation_keeps_shape_and_range(faces):
    for name, fn in degradations.BENCHMARK.items():
        out = fn(faces)
        assert out.shape == faces.shape, name
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0, name
        assert float(tf.reduce_mean(tf.abs(out - faces))) > 1.0, f"{name} changed nothing"


def test_colour_degradations(faces):
    gray = degradations.grayscale(faces).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 1], atol=1e-4)
    np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-4)
    sepia = degradations.sepia(faces).numpy()
    assert (sepia[..., 0] >= sepia[..., 2]).mean() > 0.99  # warm: red over blue
    faded = degradations.faded(faces, 0.8)
    assert float(tf.math.reduce_std(faded)) < float(tf.math.reduce_std(faces))  # less contrast
    per_image = degradations.faded(faces, tf.constant([0.0, 0.8]))
    np.testing.assert_allclose(per_image[0], faces[0], atol=1e-3)  # amount 0: unchanged


def test_resolution_and_jpeg_remove_detail(faces):
    assert _detail(degradations.low_resolution(faces, 16)) < 0.5 * _detail(faces)
    assert _detail(degradations.low_resolution(faces, 32)) > _detail(
        degradations.low_resolution(faces, 16))
    assert _detail(degradations.jpeg(faces, 10)) < _detail(faces)


def test_uneven_light_darkens_one_side(faces):
    flat = tf.fill([1, 32, 32, 3], 100.0)
    lit = degradations.uneven_light(flat, 0.5, 0.0).numpy()[0, :, :, 0]
    assert lit[:, 0].mean() < 80 < 120 < lit[:, -1].mean()
    rotated = degradations.uneven_light(flat, 0.5, np.pi / 2).numpy()[0, :, :, 0]
    assert rotated[0].mean() < 80 < 120 < rotated[-1].mean()  # top dark, bottom bright
