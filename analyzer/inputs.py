"""Any image the API accepts -> encoded bytes, under the same limits as every photo path.

A path, bytes, a NumPy HxWx3 uint8 RGB array or a PIL image: what a user has at hand.
Each ends as encoded bytes because every backend's model takes encoded images (the
signatures' `image_bytes`, TF Serving's wire format); arrays are encoded as PNG (lossless:
the model sees the caller's pixels exactly) with Pillow, which needs no TensorFlow.
The header is read before anything is decoded (`agegender.image_header`), so a refused
input raises `ImageError` with the records job's skip reason and costs no decode.
"""
import io
import os
import stat

import numpy as np

from agegender import image_header
from agegender.errors import (FILE_TOO_LARGE, IMAGE_TOO_COSTLY, IMAGE_TOO_LARGE,
                              NOT_A_REGULAR_FILE, UNDECODABLE, UNREADABLE, ImageError)

# A photo is megabytes; a file past this is refused unread (the records job's bound too).
MAX_INPUT_BYTES = 64 * 1024 * 1024
_PNG_COMPRESSION = 1  # fast: PNG here is a lossless envelope, not storage


def check_max_pixels(value):
    """A positive int (0 = no limit is not allowed: a limit must hold)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"max_image_pixels must be a positive int, got {value!r}")
    return int(value)


def encode(image, max_pixels):
    """Encoded bytes of `image` whose header passed `image_header.check`; raises ImageError."""
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
    elif isinstance(image, (str, os.PathLike)):
        data = _read_file(os.fspath(image))
    elif isinstance(image, np.ndarray):
        data = _encode_pixels(image, max_pixels)
    elif type(image).__module__.startswith("PIL."):
        data = _encode_pil(image, max_pixels)
    else:
        raise TypeError(f"an image is a path, bytes, a HxWx3 uint8 array or a PIL image, "
                        f"got {type(image).__name__}")
    check(data, max_pixels)
    return data


def check(data, max_pixels):
    """`image_header.check` with its refusals as ImageError (reason, one-line message)."""
    try:
        return image_header.check(data, max_pixels)
    except image_header.ImageTooCostly as e:  # before its base class, ImageTooLarge
        raise ImageError(IMAGE_TOO_COSTLY, str(e)) from None
    except image_header.ImageTooLarge as e:
        raise ImageError(IMAGE_TOO_LARGE, str(e)) from None
    except image_header.NotAnImage as e:
        raise ImageError(UNDECODABLE, str(e)) from None
    except ValueError as e:  # any other refusal of the header reader names its reason
        raise ImageError(getattr(e, "reason", UNDECODABLE), str(e)) from None


def _read_file(path):
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer (regular files ignore it).
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise ImageError(NOT_A_REGULAR_FILE, f"{path}: not a regular file")
        with os.fdopen(fd, "rb") as f:
            data = f.read(MAX_INPUT_BYTES + 1)
    except OSError as e:
        raise ImageError(UNREADABLE, f"{path}: {e.strerror or e}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise ImageError(FILE_TOO_LARGE, f"{path}: over {MAX_INPUT_BYTES:,} bytes, not read")
    return data


def _encode_pixels(pixels, max_pixels):
    if pixels.dtype != np.uint8 or pixels.ndim != 3 or pixels.shape[2] != 3:
        raise ImageError(UNDECODABLE, f"an image array must be HxWx3 uint8 RGB, got "
                                      f"{pixels.dtype} {pixels.shape}")
    height, width = pixels.shape[:2]
    _check_size(width, height, max_pixels)
    from PIL import Image

    return _png(Image.fromarray(np.ascontiguousarray(pixels), "RGB"))


def _encode_pil(picture, max_pixels):
    width, height = picture.size
    _check_size(width, height, max_pixels)
    return _png(picture if picture.mode == "RGB" else picture.convert("RGB"))


def _check_size(width, height, max_pixels):
    if not width or not height:
        raise ImageError(UNDECODABLE, f"an empty image ({width}x{height})")
    if width * height > max_pixels:
        raise ImageError(IMAGE_TOO_LARGE, f"image of {width}x{height} is over the limit of "
                                          f"{max_pixels:,} pixels (max_image_pixels)")


def _png(picture):
    out = io.BytesIO()
    picture.save(out, format="PNG", compress_level=_PNG_COMPRESSION)
    return out.getvalue()
