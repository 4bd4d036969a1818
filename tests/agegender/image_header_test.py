"""Header sizes agree with what TensorFlow decodes; bombs are refused before decoding."""
import io
import struct
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from agegender import image_header, preprocessing

REPO = __file__.rsplit("/tests/", 1)[0]


def encode(fmt, width, height, mode="RGB", seed=0, **options):
    rng = np.random.default_rng(seed)
    image = Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).convert(mode)
    out = io.BytesIO()
    image.save(out, fmt, **options)
    return out.getvalue()


def jpeg_declaring(width, height):
    """A real JPEG whose start-of-frame header is rewritten to declare width x height."""
    data = bytearray(encode("JPEG", 16, 16))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, height, width)
    return bytes(data)


CASES = [(fmt, mode, size, options)
         for fmt, options in [("JPEG", {}), ("JPEG", {"progressive": True}), ("PNG", {}),
                              ("GIF", {}), ("BMP", {}), ("WEBP", {}),
                              ("WEBP", {"lossless": True})]
         for mode in ("RGB", "L")
         for size in [(37, 21), (1, 1), (513, 77)]]


@pytest.mark.parametrize("fmt,mode,size,options", CASES)
def test_header_size_is_the_decoded_size(fmt, mode, size, options):
    data = encode(fmt, *size, mode=mode, **options)
    decoded = tf.io.decode_image(data, channels=3, expand_animations=False).shape
    found = image_header.check(data)
    assert found.format == fmt.lower()
    assert (found.width, found.height) == size == (decoded[1], decoded[0])
    assert image_header.size_tf(tf.constant(data)).numpy().tolist() == [size[1], size[0]]


def test_sniffing_matches_the_formats_tensorflow_decodes():
    assert image_header.sniff_format(b"not an image at all") is None
    assert image_header.sniff_format(b"") is None
    assert image_header.size_tf(tf.constant(b"nothing")).numpy().tolist() == [0, 0]
    for fmt in ("JPEG", "PNG", "GIF", "BMP", "WEBP"):
        assert image_header.sniff_format(encode(fmt, 8, 8)) == fmt.lower()


def test_not_an_image_and_truncated_headers_are_refused_clearly():
    with pytest.raises(image_header.NotAnImage, match="not a JPEG/PNG/GIF/BMP/WebP"):
        image_header.check(b"hello world")
    # Cut after the format's signature, before its size fields.
    for fmt, cut in (("JPEG", 10), ("PNG", 10), ("GIF", 10), ("BMP", 10), ("WEBP", 16)):
        with pytest.raises(image_header.NotAnImage, match=f"{fmt} header truncated or corrupt"):
            image_header.check(encode(fmt, 40, 30)[:cut])


def test_every_gif_frame_counts():
    frames = [Image.fromarray(np.random.default_rng(i).integers(0, 256, (30, 40, 3),
                                                                dtype=np.uint8)) for i in range(3)]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:])
    size = image_header.check(out.getvalue())
    assert (size.width, size.height) == (40, 30)
    assert size.pixels >= 40 * 30 * 3  # the screen and at least two full frames
    with pytest.raises(image_header.ImageTooLarge, match="with all its frames"):
        image_header.check(out.getvalue(), max_pixels=40 * 30 * 2)


@pytest.mark.parametrize("kind", ["png", "jpeg"])
def test_bombs_are_refused_from_the_header(kind, png_bomb):
    bomb = png_bomb if kind == "png" else jpeg_declaring(60000, 60000)
    assert len(bomb) < 64 * 1024
    with pytest.raises(image_header.ImageTooLarge, match=r"over the limit of 50,000,000") as e:
        image_header.check(bomb)
    assert e.value.pixels == e.value.width * e.value.height > image_header.DEFAULT_MAX_PIXELS
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        tf.function(lambda b: preprocessing.model_input(b, 32))(tf.constant(bomb))


def test_limit_is_configurable_in_python_and_in_the_graph():
    data = encode("PNG", 100, 50)
    assert image_header.check(data, max_pixels=5000).pixels == 5000
    with pytest.raises(image_header.ImageTooLarge):
        image_header.check(data, max_pixels=4999)
    assert preprocessing.decode_rgb(tf.constant(data), max_pixels=5000).shape == (50, 100, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 4999 pixels"):
        preprocessing.decode_rgb(tf.constant(data), max_pixels=4999)
    assert preprocessing.decode_rgb(tf.constant(data), max_pixels=0).shape == (50, 100, 3)


def test_a_bomb_never_reaches_the_decoder_under_a_memory_limit(tmp_path, png_bomb):
    """In a child with 1 GB of address space above a healthy run's peak, decoding the bomb
    (1.2 GB of uint8 pixels) would fail or kill the process; the header check refuses it."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_bomb)
    script = textwrap.dedent(f"""
        import resource, sys
        import tensorflow as tf
        from agegender import preprocessing
        fn = tf.function(lambda b: preprocessing.model_input_batch(b, 32))
        ok = tf.io.encode_png(tf.zeros([64, 64, 3], tf.uint8))
        fn(tf.stack([ok]))  # a healthy call first, then cap the address space
        peak = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmPeak")][0]
        limit = peak * 1024 + (1 << 30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        data = open({str(bomb)!r}, "rb").read()
        try:
            fn(tf.stack([ok, tf.constant(data)]))
        except tf.errors.InvalidArgumentError as e:
            print("refused" if "image too large" in e.message else "other: " + e.message[:200])
        else:
            print("decoded")
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "refused"
