"""analyzer.inputs: every accepted kind of image -> encoded bytes, refusals before decoding."""
import io
import os

import numpy as np
import pytest
from PIL import Image

from agegender import ImageError
from analyzer import inputs


def test_arrays_and_pil_images_are_encoded_losslessly(photo_tools, tmp_path):
    pixels = photo_tools.plain(64, 48)
    for image in (pixels, Image.fromarray(pixels), Image.fromarray(pixels).convert("RGBA")):
        data = inputs.encode(image, 10_000)
        assert np.array_equal(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")), pixels)
    jpeg = photo_tools.encode(pixels)
    path = tmp_path / "x.jpg"
    path.write_bytes(jpeg)
    assert inputs.encode(jpeg, 10_000) == inputs.encode(str(path), 10_000) == \
        inputs.encode(path, 10_000) == inputs.encode(bytearray(jpeg), 10_000)


def test_refusals_carry_the_records_jobs_skip_reasons(png_bomb, tmp_path):
    cases = [(png_bomb, "image_too_large", "20000x20000"),
             (b"GIF89a", "undecodable", "truncated or corrupt"),
             (b"hello", "undecodable", "not a JPEG/PNG"),
             (np.zeros((300, 400, 3), np.uint8), "image_too_large", "400x300"),
             (np.zeros((0, 4, 3), np.uint8), "undecodable", "empty"),
             (np.zeros((4, 4, 3), np.float32), "undecodable", "HxWx3 uint8"),
             (str(tmp_path / "missing.jpg"), "unreadable", "No such file"),
             (str(tmp_path), "not_a_regular_file", "not a regular file")]
    for image, reason, message in cases:
        with pytest.raises(ImageError, match=message) as refused:
            inputs.encode(image, 100_000)
        assert refused.value.reason == reason, image if isinstance(image, str) else reason


def test_a_fifo_is_not_read(tmp_path):
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    with pytest.raises(ImageError, match="not a regular file") as refused:
        inputs.encode(str(fifo), 100)  # opening a FIFO for reading would block: O_NONBLOCK
    assert refused.value.reason == "not_a_regular_file"


def test_the_pixel_limit_is_a_positive_int():
    for bad in (0, -1, 1.5, True, None, "5"):
        with pytest.raises(ValueError, match="positive int"):
            inputs.check_max_pixels(bad)
    assert inputs.check_max_pixels(np.int64(7)) == 7
