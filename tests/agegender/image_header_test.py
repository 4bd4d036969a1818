"""Header sizes agree with what TensorFlow decodes; bombs are refused before decoding."""
import io
import struct
import subprocess
import sys
import textwrap
import zlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from agegender import image_header, image_header_tf, png_chunks, preprocessing
from testing import hostile_files

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
    assert image_header_tf.size_tf(tf.constant(data)).numpy().tolist() == [size[1], size[0]]


def test_sniffing_matches_the_formats_tensorflow_decodes():
    assert image_header.sniff_format(b"not an image at all") is None
    assert image_header.sniff_format(b"") is None
    assert image_header_tf.size_tf(tf.constant(b"nothing")).numpy().tolist() == [0, 0]
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


# -- decode cost: format features repeated beyond what the pixels pay for (issue 23) --------

def test_real_progressive_jpegs_pass_with_their_scans_counted(hostile_files):
    """libjpeg's progressive scripts: 6 scans for grey, 10 for colour; baseline: 1."""
    for mode, scans in (("L", 6), ("RGB", 10)):
        data = hostile_files.jpeg_scan_bomb(64, 0, mode)
        assert image_header.check(data).scans == scans
        assert image_header_tf.jpeg_scans_tf(tf.constant(data)).numpy() == scans
    assert image_header.check(encode("JPEG", 40, 30)).scans == 1
    assert image_header_tf.jpeg_scans_tf(tf.constant(encode("PNG", 4, 4))).numpy() == 0


def test_a_jpeg_over_the_scan_limit_is_too_costly_in_python_and_in_the_graph(hostile_files):
    limit = image_header.MAX_JPEG_SCANS
    at_limit = hostile_files.jpeg_scan_bomb(64, limit - 6)
    assert image_header.check(at_limit).scans == limit
    assert preprocessing.decode_rgb(tf.constant(at_limit)).shape == (64, 64, 3)
    over = hostile_files.jpeg_scan_bomb(64, limit - 5)
    with pytest.raises(image_header.ImageTooCostly, match=f"has {limit + 1} scans, over the "
                       f"limit of {limit}") as e:
        image_header.check(over)
    # A kind of ImageTooLarge: every caller that refuses large images refuses it too.
    assert isinstance(e.value, image_header.ImageTooLarge) and e.value.size.scans == limit + 1
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too costly"):
        tf.function(lambda b: preprocessing.model_input(b, 32))(tf.constant(over))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too costly"):
        preprocessing.decode_rgb(tf.constant(over), max_pixels=0)  # no pixel limit: still


def test_scans_times_pixels_are_bounded_too(hostile_files):
    """100 scans over 49 MP would be ~4 s of decoding: a multi-scan JPEG may make at most
    MAX_JPEG_PASSES pixel passes (20 over a 50 MP picture)."""
    def at_7000(repeats):
        data = bytearray(hostile_files.jpeg_scan_bomb(64, repeats))
        sof = data.index(b"\xff\xc2")  # progressive start of frame
        struct.pack_into(">HH", data, sof + 5, 7000, 7000)
        return bytes(data)
    assert image_header.check(at_7000(0)).cost == 6 * 7000 * 7000  # passes (not decoded)
    over = at_7000(15)  # 21 scans: 1,029,000,000 pixel passes
    with pytest.raises(image_header.ImageTooCostly, match="1,029,000,000 pixel passes"):
        image_header.check(over)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too costly"):
        preprocessing.decode_rgb(tf.constant(over))


@pytest.mark.slow
def test_the_scan_bomb_is_refused_before_any_decoding_under_a_cpu_limit(tmp_path,
                                                                       hostile_files):
    """Issue 23's file at 2048x2048: its last refinement scan (~20 bytes) repeated 5,000
    times, 0.1 MB. Decoding it is ~15 s of CPU (0.7 ns per pixel per scan, measured); the
    child gets 3 s of CPU beyond its start-up, so a decode would kill it (SIGXCPU)."""
    bomb = tmp_path / "bomb.jpg"
    bomb.write_bytes(hostile_files.jpeg_scan_bomb(2048, 5000))
    assert bomb.stat().st_size < 200_000
    script = textwrap.dedent(f"""
        import resource
        import tensorflow as tf
        from agegender import image_header, preprocessing
        decode = tf.function(lambda b: preprocessing.model_input(b, 32))
        decode(tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)))  # traced: start-up done
        used = int(sum(resource.getrusage(resource.RUSAGE_SELF)[:2])) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (used + 3, used + 5))
        data = open({str(bomb)!r}, "rb").read()
        try:
            image_header.check(data)
            print("python: passed")
        except image_header.ImageTooCostly as e:
            print("python: refused", e.size.scans)
        try:
            decode(tf.constant(data))
            print("graph: decoded")
        except tf.errors.InvalidArgumentError as e:
            print("graph: refused" if "image too costly" in e.message else e.message[:300])
    """)
    result = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, (result.returncode, result.stderr[-2000:])
    assert result.stdout.strip().splitlines()[-2:] == ["python: refused 5006", "graph: refused"]


_chunk = hostile_files.png_chunk


def _png(width, height, rows, extra=b"", colour=2, interlace=0):
    """A PNG of 8-bit samples whose image data is `rows` (filter bytes included), deflated."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, colour, 0, 0, interlace)
    return (b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + extra
            + _chunk(b"IDAT", zlib.compress(rows, 9)) + _chunk(b"IEND", b""))


@pytest.mark.parametrize("mode", ["1", "L", "P", "RGB", "RGBA", "LA", "I;16"])
def test_png_rows_are_counted_exactly(mode):
    """What the image data must inflate to, for every colour type and depth PIL writes."""
    for width, height in ((1, 1), (37, 21), (513, 77)):
        pixels = np.random.default_rng(width).integers(0, 256, (height, width), dtype=np.uint8)
        image = (Image.fromarray(pixels.astype(np.uint16) * 257) if mode == "I;16"
                 else Image.fromarray(pixels).convert(mode))
        out = io.BytesIO()
        image.save(out, "PNG")
        data = out.getvalue()
        idat, i = b"", 8
        while i < len(data):
            n = struct.unpack_from(">I", data, i)[0]
            idat += data[i + 8:i + 8 + n] if data[i + 4:i + 8] == b"IDAT" else b""
            i += 12 + n
        assert png_chunks.data_bytes(memoryview(data), width, height) == len(zlib.decompress(idat))
        assert image_header.check(data).pixels == width * height


def test_an_interlaced_png_passes_and_decodes():
    """Adam7 rows counted pass by pass (PIL cannot write one: built here, pass by pass)."""
    width, height = 19, 11
    pixels = np.random.default_rng(3).integers(0, 256, (height, width, 3), dtype=np.uint8)
    rows = b""
    for x, y, dx, dy in png_chunks._ADAM7:
        sub = pixels[y::dy, x::dx]
        if sub.size:
            rows += b"".join(b"\0" + row.tobytes() for row in sub)
    data = _png(width, height, rows, interlace=1)
    assert image_header.check(data).pixels == width * height
    assert (preprocessing.decode_rgb(tf.constant(data)).numpy() == pixels).all()
    with pytest.raises(image_header.ImageTooCostly, match="image data inflating"):
        image_header.check(_png(width, height, rows + bytes(1 << 20), interlace=1))


def test_png_data_past_its_rows_is_too_costly(hostile_files):
    """libpng inflates and discards what follows the last row: 1 GB of zeros behind a 1x1
    PNG is a 1 MB file and 1.9 s of TensorFlow's CPU; refused from a bounded inflate."""
    data = hostile_files.png_with_extra_data(8)
    with pytest.raises(image_header.ImageTooCostly, match="more than the 4 bytes its rows need"):
        image_header.check(data)
    # A little slack (some encoders pad) passes.
    assert image_header.check(_png(1, 1, bytes(4 + 1000))).pixels == 1


def test_png_compressed_text_and_icc_chunks_are_bounded(hostile_files):
    """1000 zTXt chunks of 8 MB each (an 8 MB file) cost TensorFlow's decoder 14 s."""
    blob = zlib.compress(bytes(1_000_000), 9)
    with pytest.raises(image_header.ImageTooCostly, match="text/ICC chunks inflating"):
        image_header.check(hostile_files.png_with_compressed_text(9, 1_000_000))
    itxt = b"".join(_chunk(b"iTXt", b"k\0\x01\0en\0k\0" + blob) for _ in range(9))
    with pytest.raises(image_header.ImageTooCostly, match="text/ICC chunks inflating"):
        image_header.check(_png(1, 1, bytes(4), itxt))
    iccp = _chunk(b"iCCP", b"icc\0\0" + zlib.compress(bytes(9_000_000)))
    with pytest.raises(image_header.ImageTooCostly, match="text/ICC chunks inflating"):
        image_header.check(_png(1, 1, bytes(4), iccp))
    # Real metadata (a few compressed chunks, uncompressed iTXt) passes.
    fine = (_chunk(b"zTXt", b"Comment\0\0" + zlib.compress(b"a face" * 1000))
            + _chunk(b"iTXt", b"XML\0\0\0\0\0" + b"x" * 100_000))
    assert image_header.check(_png(1, 1, bytes(4), fine)).pixels == 1


def test_a_png_of_too_many_chunks_is_too_costly():
    chunks = _chunk(b"tEXt", b"a\0b") * (png_chunks.MAX_CHUNKS + 1)
    with pytest.raises(image_header.ImageTooCostly, match="more than 100,000 chunks"):
        image_header.check(_png(1, 1, bytes(4), chunks))


def test_a_gif_of_too_many_frames_is_too_costly(hostile_files):
    """giflib reads every frame even when TensorFlow returns only the first."""
    fine = hostile_files.gif_of_frames(3)
    assert image_header.check(fine).frames == 3
    assert preprocessing.decode_rgb(tf.constant(fine)).shape == (1, 1, 3)
    assert image_header.check(hostile_files.gif_of_frames(image_header.MAX_FRAMES)).frames \
        == image_header.MAX_FRAMES
    with pytest.raises(image_header.ImageTooCostly, match="more than 10,000 frames"):
        image_header.check(hostile_files.gif_of_frames(image_header.MAX_FRAMES + 1))
