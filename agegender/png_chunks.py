"""What libpng will inflate while decoding a PNG, bounded before it does.

A PNG's pixels bound the rows its image data must inflate to, but not what libpng does:
it inflates (and discards) image data past the last row ("Too much image data" is only a
warning), so a 1x1 PNG can carry gigabytes of zeros, and it inflates up to 1000 compressed
text/ICC chunks (zTXt, iTXt, iCCP) of up to 8 MB each. Measured with TensorFlow's decoder
on this 2-core machine: 1 GB of extra image data (a 1 MB file) cost 1.9 s of CPU, 1000
zTXt chunks of 8 MB (an 8 MB file) 14 s. `too_costly` inflates the same streams here with a
running count and stops at the bound (so its own cost is bounded by the pixels), never
holding more than a megabyte of output.

Python's zlib is the inflater: it is what libpng's own inflate is (zlib), so both read a
stream the same way.
"""
import struct
import zlib

# Chunks walked per file: 64 MB of image data in libpng's usual 8 KB IDAT chunks is 8,000.
MAX_CHUNKS = 100_000
# All zTXt/iTXt/iCCP chunks of a file, inflated (libpng's own cap is 8 MB per chunk).
MAX_METADATA_BYTES = 8 * 1024 * 1024
# Image data may inflate past its rows by this much before the file is refused.
DATA_SLACK = 64 * 1024

# PNG colour type -> samples per pixel (grey, RGB, palette, grey + alpha, RGBA).
_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# Adam7 passes: (x start, y start, x step, y step).
_ADAM7 = ((0, 0, 8, 8), (4, 0, 8, 8), (0, 4, 4, 8), (2, 0, 4, 4), (0, 2, 2, 4), (1, 0, 2, 2),
          (0, 1, 1, 2))


def data_bytes(data, width, height):
    """Bytes the image data inflates to: every row (of every Adam7 pass) with its filter byte."""
    depth, colour, interlace = data[24], data[25], data[28]
    bits = _CHANNELS.get(colour, 4) * depth

    def rows(w, h):
        return 0 if w == 0 else h * (1 + (w * bits + 7) // 8)
    if interlace != 1:
        return rows(width, height)
    return sum(rows((width - x + dx - 1) // dx if width > x else 0,
                    (height - y + dy - 1) // dy if height > y else 0)
               for x, y, dx, dy in _ADAM7)


class _Inflater:
    """Inflates a zlib stream fed in pieces, counting its output and never holding more than
    a bounded piece of it; `more_than(limit)` stops as soon as the count passes it."""

    _STEP = 1 << 20

    def __init__(self):
        self._z = zlib.decompressobj()
        self.out = 0

    def feed(self, piece, limit):
        """Inflates `piece`; False once more than `limit` bytes came out (or the stream is
        corrupt: the decoder reports that itself)."""
        try:
            pending = bytes(piece)
            while pending and not self._z.eof:
                self.out += len(self._z.decompress(pending, self._STEP))
                if self.out > limit:
                    return False
                pending = self._z.unconsumed_tail
        except zlib.error:
            return True  # not a cost: TF's decoder fails on it with its own message
        return True


def too_costly(data, width, height):
    """Walks the chunks, inflating (bounded) the image data and the compressed metadata, as
    libpng will: why decoding would cost more than the pixels, or None (also for a file too
    short or corrupt to say: the decoder refuses those itself)."""
    if len(data) < 29:
        return None
    need = data_bytes(data, width, height)
    image, metadata = _Inflater(), 0
    i, n = 8, len(data)
    for count in range(MAX_CHUNKS + 1):
        if i + 8 > n:
            return None
        if count == MAX_CHUNKS:
            return f"has more than {MAX_CHUNKS:,} chunks"
        length = struct.unpack_from(">I", data, i)[0]
        kind = bytes(data[i + 4:i + 8])
        body = data[i + 8:min(n, i + 8 + length)]
        i += 12 + length
        if kind == b"IEND":
            return None
        if kind == b"IDAT":
            if not image.feed(body, need + DATA_SLACK):
                return (f"has image data inflating to more than the {need:,} bytes its rows "
                        "need (libpng would inflate all of it)")
        elif kind in (b"zTXt", b"iTXt", b"iCCP"):
            stream = _compressed_text(kind, bytes(body))
            if stream is not None:
                text = _Inflater()
                text.feed(stream, MAX_METADATA_BYTES - metadata)
                metadata += text.out
                if metadata > MAX_METADATA_BYTES:
                    return ("has compressed text/ICC chunks inflating to more than "
                            f"{MAX_METADATA_BYTES:,} bytes")
    return None


def _compressed_text(kind, body):
    """The zlib stream of a zTXt / iCCP chunk, or of a compressed iTXt; None otherwise."""
    name_end = body.find(b"\0")
    if name_end < 0:
        return None
    if kind != b"iTXt":  # keyword or profile name, NUL, method, stream
        return body[name_end + 2:]
    if body[name_end + 1:name_end + 2] != b"\x01":  # not compressed
        return None
    language_end = body.find(b"\0", name_end + 3)
    translated_end = body.find(b"\0", language_end + 1) if language_end >= 0 else -1
    return body[translated_end + 1:] if translated_end >= 0 else None
