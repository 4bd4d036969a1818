"""Image formats and their declared sizes, read from the header before anything is decoded.

Owns which encoded formats the project accepts (those `tf.io.decode_image` reads: JPEG, PNG,
GIF, BMP, WebP, sniffed by their leading bytes exactly as TensorFlow does) and the pixel
limit every decoding path enforces. Why: a 64 KB PNG can declare 20000x20000 pixels and
decode to 1.2 GB (more as float32 in a resize); TensorFlow's own checks only stop images
over ~2^29 pixels. The size a decoder will allocate is in the header, so it is read first:

- `check(data, max_pixels)` in Python, for the server (per image, before batching), the
  records job, the evaluation tool, the page and predict mode: returns the `ImageSize`
  (format, width, height, pixels, frames, scans; `.cost`) or raises `NotAnImage`,
  `ImageTooLarge` or `ImageTooCostly` with a message that says what is wrong.
- `agegender.image_header_tf.assert_within_limit_tf(image_bytes, max_pixels)` inside a
  graph, so the exported SavedModel refuses the same images on real TF Serving
  (`agegender.preprocessing` applies it before every decode).

A GIF's decoder (giflib's DGifSlurp) holds every frame, so `check` counts the area of all
frames; the in-graph check sees only the logical screen (a known limit, docs/limits.md).

Pixels do not bound every decoder's work, so `check` also refuses (`ImageTooCostly`, a kind
of `ImageTooLarge`) the format features whose cost grows without them, each from the bytes
and before any decoder runs (docs/limits.md has the figures):

- a JPEG with more than `MAX_JPEG_SCANS` scans, or whose scans times pixels pass
  `MAX_JPEG_PASSES`: each progressive scan is a pass over every block of the picture, and
  a 75-byte refinement scan can be repeated thousands of times (libjpeg-turbo's
  "LJT-01-003"; its TJPARAM_SCANLIMIT / djpeg -maxscans exist for it). Checked in-graph
  too (`image_header_tf`), so the exported model refuses it;
- a PNG whose image data inflates to more than its rows need, or whose compressed text
  and ICC chunks inflate to megabytes (libpng inflates both: `agegender.png_chunks`);
- a GIF or WebP with more than `MAX_FRAMES` frames (giflib reads every frame even when
  only the first is returned).
"""
import collections
import re
import struct

from agegender import png_chunks

# 50 million pixels: a 48-50 MP phone photo (8160x6120) still passes; its decoded uint8
# pixels are 150 MB. A face crop is 0.04 MP. Every CLI that decodes has --max_image_pixels.
DEFAULT_MAX_PIXELS = 50_000_000

JPEG, PNG, GIF, BMP, WEBP = "jpeg", "png", "gif", "bmp", "webp"
FORMATS = (JPEG, PNG, GIF, BMP, WEBP)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

# Decode-cost limits. Fixed, not flags: no camera or encoder comes near them, so they only
# ever refuse crafted files (docs/limits.md says where each number comes from).
# libjpeg's progressive scripts write 10 scans for colour, 6 for grey and 18 for CMYK
# (jcparam.c, jpeg_simple_progression); guards in other decoders sit at 256 (nvImageCodec)
# and 500 (DALI, libjpeg-turbo's fuzzers). Each scan is a pass over the whole picture, so
# 100 scans still let a 50 MP file cost 100 passes (~4 s), so the passes of a multi-scan
# JPEG, pixels x scans, are bounded too: 20 passes over a 50 MP picture (libjpeg's CMYK
# script, the longest, makes 18), ~0.75 s of CPU at the 0.73 ns per pixel per scan measured.
MAX_JPEG_SCANS = 100
MAX_JPEG_PASSES = 20 * DEFAULT_MAX_PIXELS
MAX_FRAMES = 10_000  # GIF / animated WebP frames (each one is held and walked)
MAX_CHUNKS = png_chunks.MAX_CHUNKS  # WebP's RIFF chunks, as PNG's


class ImageSize(collections.namedtuple(
        "ImageSize", ["format", "width", "height", "pixels", "frames", "scans"],
        defaults=[1, 1])):
    """What a header says decoding will cost, before decoding.

    width, height: the picture; pixels: what decoding it allocates per channel (for a GIF,
    the screen plus every frame's raster; for an animated WebP, the canvas times its
    frames); frames: GIF/WebP frames (1 otherwise); scans: JPEG scans (1 otherwise).
    """
    __slots__ = ()

    @property
    def cost(self):
        """Decode work in pixel passes: every JPEG scan is a pass over all the pixels."""
        return self.pixels * max(1, self.scans)


class NotAnImage(ValueError):
    """Bytes that are not a JPEG/PNG/GIF/BMP/WebP image with a readable header."""


class ImageTooLarge(ValueError):
    """An image whose header declares more pixels than the limit."""

    def __init__(self, size, limit):
        self.format, self.width, self.height, self.pixels = size[:4]
        self.size = size
        self.limit = limit
        frames = "" if self.pixels == self.width * self.height else (
            f", {self.pixels:,} pixels with all its frames")
        super().__init__(
            f"{self.format.upper()} image of {self.width}x{self.height}{frames} is over the "
            f"limit of {limit:,} pixels (--max_image_pixels); it is refused before decoding")


class ImageTooCostly(ImageTooLarge):
    """An image whose decoding costs far more than its pixels (a format feature repeated).

    A subclass of `ImageTooLarge`, so every caller that refuses large images refuses these
    too; `agegender.image_sources` reports them under their own reason, image_too_costly.
    """

    def __init__(self, size, why):
        self.format, self.width, self.height, self.pixels = size[:4]
        self.size = size
        self.limit = None
        self.why = why
        ValueError.__init__(
            self, f"{size.format.upper()} image of {size.width}x{size.height} {why}; it is "
            "refused before decoding (its decoding would cost far more than its pixels)")


def sniff_format(data):
    """The format `tf.io.decode_image` would decode `data` as, or None."""
    data = bytes(data[:16])
    if data.startswith(b"\xff\xd8\xff"):
        return JPEG
    if data.startswith(PNG_SIGNATURE):
        return PNG
    if data.startswith((b"GIF87a", b"GIF89a")):
        return GIF
    if data.startswith(b"BM"):
        return BMP
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return WEBP
    return None


def read_size(data):
    """`ImageSize` from the header, or None when `data` is no image whose header can be read."""
    fmt = sniff_format(data)
    if fmt is None:
        return None
    try:
        return _READERS[fmt](memoryview(data))
    except (IndexError, struct.error, ValueError):  # truncated or inconsistent header
        return None


def check(data, max_pixels=DEFAULT_MAX_PIXELS):
    """`ImageSize` of an acceptable image, read from its bytes before any decoder runs.

    The one gate of every decoding path (records, evaluation, server, page, predict mode):
    raises `NotAnImage`, `ImageTooLarge` (more pixels than `max_pixels`; 0 or None: no pixel
    limit) or `ImageTooCostly` (a decode cost its pixels do not bound; always checked).
    """
    size = read_size(data)
    if size is None:
        fmt = sniff_format(data)
        raise NotAnImage(
            f"{len(data)} bytes starting {bytes(data[:8])!r}: not a JPEG/PNG/GIF/BMP/WebP image"
            if fmt is None else f"{fmt.upper()} header truncated or corrupt ({len(data)} bytes)")
    if max_pixels and size.pixels > max_pixels:
        raise ImageTooLarge(size, max_pixels)
    why = _too_costly(data, size)
    if why:
        raise ImageTooCostly(size, why)
    return size


def _too_costly(data, size):
    """Why decoding `data` would cost more than its pixels, or None."""
    if size.scans > MAX_JPEG_SCANS:
        return (f"has {size.scans:,} scans, over the limit of {MAX_JPEG_SCANS} (encoders write "
                "at most ~20; each scan is a pass over every pixel)")
    if size.scans > 1 and size.cost > MAX_JPEG_PASSES:
        return (f"has {size.scans} scans over {size.pixels:,} pixels, {size.cost:,} pixel "
                f"passes, over the limit of {MAX_JPEG_PASSES:,}")
    if size.frames > MAX_FRAMES:
        return f"has more than {MAX_FRAMES:,} frames"
    if size.format == PNG:
        return png_chunks.too_costly(memoryview(data), size.width, size.height)
    return None


# -- per format -------------------------------------------------------------------------

# Start-of-frame markers: 0xC0-0xCF except DHT (C4), JPG (C8) and DAC (CC).
_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field: TEM, RSTn, SOI.
_STANDALONE = frozenset([0x01, 0xD8]) | frozenset(range(0xD0, 0xD8))
_SOS, _EOI = 0xDA, 0xD9
# The next marker, as libjpeg's next_marker finds it: stray bytes skipped, then 0xFF fill
# bytes, then a code that is not 0 (0xFF 0x00 is a stuffed data byte). Inside entropy-coded
# data the restart markers RST0-7 are part of the scan. Regular expressions, so a long run
# of data is skipped in C, not byte by byte in Python.
_MARKER = re.compile(rb"\xff+[^\x00\xff]")
_MARKER_AFTER_SCAN = re.compile(rb"\xff+[^\x00\xd0-\xd7\xff]")


def _jpeg(data):
    """Walks the marker segments as libjpeg does: the first SOF gives the size, and every SOS
    after it is a scan the decoder will run (its entropy-coded data skipped to the next
    marker), up to EOI."""
    data = data.obj if isinstance(data.obj, bytes) else bytes(data)
    i, n = 2, len(data)
    size, scans = None, 0
    while i < n:
        found = (_MARKER_AFTER_SCAN if scans else _MARKER).search(data, i)
        if found is None:
            break
        marker = data[found.end() - 1]
        i = found.end()
        if marker in _STANDALONE:
            continue
        if marker == _EOI or (marker == _SOS and size is None):  # the end, or a scan
            break                                                  # before any frame header
        if i + 2 > n and size is not None:  # cut after the frame header: the decoder's to say
            break
        length = struct.unpack_from(">H", data, i)[0]
        if marker in _SOF and size is None:
            height, width = struct.unpack_from(">HH", data, i + 3)
            size = ImageSize(JPEG, width, height, width * height)
        scans += marker == _SOS
        if scans > MAX_JPEG_SCANS:  # refused: count the rest in C (a 16 MB file can hold
            scans += data.count(b"\xff\xda", i)  # 200k scans), not marker by marker
            break
        if length < 2:
            break
        i += length
    if size is None:
        raise ValueError("no frame header")
    return size._replace(scans=max(1, scans))


def _png(data):
    if bytes(data[12:16]) != b"IHDR":
        raise ValueError("IHDR is not the first chunk")
    width, height = struct.unpack_from(">II", data, 16)
    return ImageSize(PNG, width, height, width * height)


def _gif(data):
    width, height, packed = struct.unpack_from("<HHB", data, 6)
    i = 13 + (3 << ((packed & 7) + 1) if packed & 0x80 else 0)  # global colour table
    frames = area = 0
    n = len(data)
    while i < n and frames <= MAX_FRAMES:  # past the limit the image is refused: stop walking
        block = data[i]
        if block == 0x3B:  # trailer
            break
        if block == 0x2C:  # image descriptor: a frame giflib will hold in memory
            fw, fh, fpacked = struct.unpack_from("<HHB", data, i + 5)
            frames += 1
            area += fw * fh
            i += 10 + (3 << ((fpacked & 7) + 1) if fpacked & 0x80 else 0) + 1  # + LZW size
        elif block == 0x21:  # extension: label, then sub-blocks
            i += 2
        else:
            break  # corrupt: the decoder stops here too
        while i < n and data[i]:  # data sub-blocks, each prefixed by its length
            i += data[i] + 1
        i += 1
    return ImageSize(GIF, width, height, width * height + area, max(1, frames))


def _bmp(data):
    dib = struct.unpack_from("<I", data, 14)[0]
    if dib == 12:  # BITMAPCOREHEADER: 16-bit sizes
        width, height = struct.unpack_from("<HH", data, 18)
    else:
        width, height = struct.unpack_from("<ii", data, 18)
    width, height = abs(width), abs(height)  # a negative height means top-down rows
    return ImageSize(BMP, width, height, width * height)


def _webp(data):
    chunk = bytes(data[12:16])
    if chunk == b"VP8 ":
        width, height = (v & 0x3FFF for v in struct.unpack_from("<HH", data, 26))
    elif chunk == b"VP8L":
        bits = struct.unpack_from("<I", data, 21)[0]
        width, height = (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    elif chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
    else:
        raise ValueError(f"unknown WebP chunk {chunk!r}")
    frames = max(1, _webp_frames(data))
    return ImageSize(WEBP, width, height, width * height * frames, frames)


def _webp_frames(data):
    """Number of ANMF (animation frame) chunks in the RIFF container (past `MAX_FRAMES`, or
    past `MAX_CHUNKS` chunks, the walk stops and says MAX_FRAMES + 1: refused anyway)."""
    i, n, frames = 12, len(data), 0
    for _ in range(MAX_CHUNKS):
        if i + 8 > n or frames > MAX_FRAMES:
            return frames
        fourcc = bytes(data[i:i + 4])
        size = struct.unpack_from("<I", data, i + 4)[0]
        frames += fourcc == b"ANMF"
        i += 8 + size + (size & 1)
    return frames if i + 8 > n else MAX_FRAMES + 1


_READERS = {JPEG: _jpeg, PNG: _png, GIF: _gif, BMP: _bmp, WEBP: _webp}
