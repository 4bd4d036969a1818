"""The shared preprocessing: formats, geometry, value range."""
import io

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from agegender import preprocessing


def _encode(array, fmt, mode=None):
    image = Image.fromarray(array)
    if mode:
        image = image.convert(mode)
    buf = io.BytesIO()
    image.save(buf, format=fmt)
    return buf.getvalue()


@pytest.fixture
def gradient():
    y, x = np.mgrid[0:60, 0:90]
    return np.stack([x * 2, y * 4, np.full_like(x, 128)], axis=-1).astype(np.uint8)


@pytest.mark.parametrize("fmt,mode", [("PNG", None), ("JPEG", None), ("JPEG", "L"),
                                      ("JPEG", "CMYK"), ("PNG", "RGBA"), ("PNG", "L")])
def test_every_format_decodes_to_rgb(gradient, fmt, mode):
    image = preprocessing.decode_rgb(_encode(gradient, fmt, mode)).numpy()
    assert image.shape == (60, 90, 3) and image.dtype == np.uint8
    if mode in (None, "RGBA") and fmt == "PNG":
        np.testing.assert_array_equal(image, gradient)
    else:
        assert abs(image.mean() - gradient.mean()) < 40


def test_resize_square_keeps_aspect_and_crops_centre(gradient):
    out = preprocessing.resize_square(gradient, 30).numpy()
    assert out.shape == (30, 30, 3) and out.dtype == np.float32
    # 60x90 -> 30x45, centre crop drops 7 columns on the left: red (x * 2) starts near 2*15.
    assert out[15, 0, 0] == pytest.approx(2 * (7.5 * 2 + 0.5), abs=3)
    assert out[:, :, 2].min() == pytest.approx(128, abs=0.5)


def test_model_input_on_bytes_and_batches(gradient):
    data = _encode(gradient, "PNG")
    single = preprocessing.model_input(tf.constant(data), 32).numpy()
    batch = preprocessing.model_input_batch(tf.constant([data, data]), 32).numpy()
    assert single.shape == (32, 32, 3) and 0 <= single.min() and single.max() <= 255
    np.testing.assert_allclose(batch[1], single)


@pytest.mark.parametrize("data", [b"", b"not an image at all", None])
def test_undecodable_bytes_raise(gradient, data):
    if data is None:
        data = _encode(gradient, "JPEG")[:200]  # truncated JPEG
    with pytest.raises(tf.errors.InvalidArgumentError):
        preprocessing.decode_rgb(tf.constant(data)).numpy()
