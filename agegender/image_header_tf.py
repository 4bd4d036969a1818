"""The header checks of `agegender.image_header` as TensorFlow ops, so the exported SavedModel
refuses the same images on real TF Serving (`agegender.preprocessing` applies
`assert_within_limit_tf` before every decode).

The graph reads fixed header fields only: a GIF's logical screen and a WebP's canvas, not
their frames (a known limit, docs/limits.md); a JPEG's scans are counted from its SOS
markers. TensorFlow is imported inside the functions, as in `agegender.heads`.
"""
from agegender.image_header import (DEFAULT_MAX_PIXELS, MAX_JPEG_PASSES, MAX_JPEG_SCANS,
                                    PNG_SIGNATURE)

_HEAD = 32  # every header field read in-graph lies in the first 32 bytes (JPEG aside)


def size_tf(image_bytes):
    """[height, width] (int64) declared by the header of one encoded image (scalar string).

    [0, 0] for bytes of no known format (the decoder then fails with its own error). JPEG
    via `tf.image.extract_jpeg_shape`; the others from fixed header fields. GIF: the
    logical screen; WebP: the canvas (frames are not counted in-graph).
    """
    import tensorflow as tf

    head = tf.strings.substr(image_bytes, 0, _HEAD)
    # Zero-padded to a fixed length, so a short input reads zeros instead of failing.
    head = tf.strings.substr(tf.strings.join([head, tf.constant(b"\0" * _HEAD)]), 0, _HEAD)
    b = tf.cast(tf.io.decode_raw(head, tf.uint8), tf.int64)
    b.set_shape([_HEAD])

    def le(start, n):
        return sum(b[start + k] * (1 << (8 * k)) for k in range(n))

    def be(start, n):
        return sum(b[start + k] * (1 << (8 * (n - 1 - k))) for k in range(n))

    def signed32(v):
        v = tf.where(v >= 1 << 31, v - (1 << 32), v)
        return tf.abs(v)

    def starts(prefix, at=0):
        return tf.equal(tf.strings.substr(head, at, len(prefix)), prefix)

    def low14(v):
        return tf.bitwise.bitwise_and(v, 0x3FFF)

    def webp():
        chunk = tf.strings.substr(head, 12, 4)
        bits = le(21, 4)
        return tf.case([
            (tf.equal(chunk, b"VP8 "), lambda: tf.stack([low14(le(28, 2)), low14(le(26, 2))])),
            (tf.equal(chunk, b"VP8L"), lambda: tf.stack(
                [low14(tf.bitwise.right_shift(bits, 14)) + 1, low14(bits) + 1])),
            (tf.equal(chunk, b"VP8X"), lambda: tf.stack([le(27, 3) + 1, le(24, 3) + 1])),
        ], default=lambda: tf.zeros([2], tf.int64))

    def bmp():
        core = tf.equal(le(14, 4), 12)
        return tf.cond(core, lambda: tf.stack([le(20, 2), le(18, 2)]),
                       lambda: tf.stack([signed32(le(22, 4)), signed32(le(18, 4))]))

    return tf.case([
        (tf.io.is_jpeg(image_bytes),
         lambda: tf.cast(tf.image.extract_jpeg_shape(image_bytes)[:2], tf.int64)),
        (starts(PNG_SIGNATURE), lambda: tf.stack([be(20, 4), be(16, 4)])),
        (tf.logical_or(starts(b"GIF87a"), starts(b"GIF89a")),
         lambda: tf.stack([le(8, 2), le(6, 2)])),
        (starts(b"BM"), bmp),
        (tf.logical_and(starts(b"RIFF"), starts(b"WEBP", 8)), webp),
    ], default=lambda: tf.zeros([2], tf.int64), exclusive=False)


def jpeg_scans_tf(image_bytes):
    """Scans of one encoded JPEG (scalar string) as the graph can count them: its SOS markers
    (0xFF 0xDA; entropy-coded data never holds one, as 0xFF is stuffed there). It may count
    an embedded thumbnail's scans or a chance pair in metadata too: a few, against a limit of
    `MAX_JPEG_SCANS`. 0 for any other format."""
    import tensorflow as tf

    def count():
        pieces = tf.strings.split(tf.reshape(image_bytes, [1]), sep=b"\xff\xda")
        return tf.cast(tf.size(pieces.flat_values), tf.int64) - 1
    return tf.cond(tf.io.is_jpeg(image_bytes), count, lambda: tf.constant(0, tf.int64))


def assert_within_limit_tf(image_bytes, max_pixels=DEFAULT_MAX_PIXELS):
    """An op that fails (InvalidArgumentError, saying why) when the header is over the pixel
    limit, or the JPEG is over `check`'s scan bounds (`MAX_JPEG_SCANS`, `MAX_JPEG_PASSES`).

    Run it before decoding (`tf.control_dependencies`); `max_pixels` 0 or None: no pixel
    limit (the scan bounds stay).
    """
    import tensorflow as tf

    scans = jpeg_scans_tf(image_bytes)

    def passes():  # read for multi-scan JPEGs only: other bytes keep their decoder's errors
        size = size_tf(image_bytes)
        return size[0] * size[1] * scans
    passes = tf.cond(scans > 1, passes, lambda: tf.constant(0, tf.int64))
    too_costly = tf.debugging.Assert(
        tf.logical_and(scans <= MAX_JPEG_SCANS, passes <= MAX_JPEG_PASSES),
        [f"image too costly: a JPEG with more than {MAX_JPEG_SCANS} scans or more than "
         f"{MAX_JPEG_PASSES} pixel passes (each scan is a pass over every pixel); refused "
         "before decoding. Scans, pixel passes:", scans, passes], name="max_jpeg_scans")
    if not max_pixels:
        return too_costly
    size = size_tf(image_bytes)
    too_large = tf.debugging.Assert(
        size[0] * size[1] <= max_pixels,
        [f"image too large: its header declares more than the limit of {max_pixels} pixels "
         "(--max_image_pixels); refused before decoding. Height, width:", size[0], size[1]],
        name="max_image_pixels")
    return tf.group(too_large, too_costly)
