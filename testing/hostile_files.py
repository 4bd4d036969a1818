"""Hostile files of issue 23, built in memory for tests and benchmarks (never data on disk).

Each costs a decoder or an archive reader far more than its size: `jpeg_scan_bomb` (scans
repeated), `png_with_extra_data` and `png_with_compressed_text` (what libpng inflates beyond
the pixels), `gif_of_frames` (frames giflib reads), `zip_with_false_size` (a member much
larger than its header says). The limits
that refuse them: `agegender.image_header`, `agegender.png_chunks`,
`agegender.archive_members`; docs/limits.md.
"""
import io
import struct
import zlib

_PIECE = 16 << 20


def jpeg_scan_bomb(size=64, repeats=0, mode="L"):
    """A progressive JPEG of one flat colour, size x size, with its last scan (a refinement
    scan of a few dozen bytes: one EOB run covers the picture) repeated `repeats` more times
    before EOI: each copy is one more pass of the decoder over every block. Issue 23's file
    is `jpeg_scan_bomb(7000, 5000)`, 567 KB."""
    from PIL import Image

    out = io.BytesIO()
    Image.new(mode, (size, size), 128 if mode == "L" else (128, 90, 60)).save(
        out, "JPEG", progressive=True, quality=90)
    data = out.getvalue()
    last = data.rindex(b"\xff\xda")
    return data[:-2] + data[last:-2] * repeats + data[-2:]


def png_chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))


def png_with_extra_data(extra_mib):
    """A 1x1 RGB PNG whose image data goes on for `extra_mib` MiB of zeros past its row
    (about 1 KB of file per MiB): libpng inflates all of it."""
    z = zlib.compressobj(9)
    stream = z.compress(bytes(4)) + b"".join(z.compress(bytes(1 << 20)) for _ in range(extra_mib))
    return _png_1x1(b"", stream + z.flush())


def png_with_compressed_text(chunks, inflated_bytes):
    """A 1x1 PNG with `chunks` zTXt chunks of `inflated_bytes` zeros each (libpng inflates
    up to 1000 of them, 8 MB each)."""
    blob = zlib.compress(bytes(inflated_bytes), 9)
    return _png_1x1(b"".join(png_chunk(b"zTXt", b"k%d\0\0" % i + blob) for i in range(chunks)),
                    zlib.compress(bytes(4)))


def _png_1x1(before_data, stream):
    ihdr = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + before_data
            + png_chunk(b"IDAT", stream) + png_chunk(b"IEND", b""))


def gif_of_frames(frames):
    """A 1x1 GIF of `frames` frames (~14 bytes each): giflib reads every one of them."""
    head = b"GIF89a" + struct.pack("<HHBBB", 1, 1, 0x80, 0, 0) + b"\0\0\0\xff\xff\xff"
    frame = b"\x2c" + struct.pack("<HHHHB", 0, 0, 1, 1, 0) + b"\x02\x02\x4c\x01\x00"
    return head + frame * frames + b"\x3b"


def zip_with_false_size(members, zeros, declared, name="30_1_0_20170101000000999.jpg"):
    """A zip of `members` ({name: bytes}, deflated honestly) plus `name`: `zeros` zero bytes
    deflated (a multiple of 16 MiB, ~1 KB per MiB) under headers declaring `declared` bytes.
    Issue 23's file: 2,097,152,000 zeros declaring 1,000, 2 MB.

    Written by hand: zipfile would spend seconds compressing gigabytes. The zeros' stream is
    one 16 MiB block compressed after a full flush, repeated: each copy starts from an empty
    history, so the copies inflate to 16 MiB each."""
    assert zeros % _PIECE == 0
    z = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = z.compress(bytes(_PIECE)) + z.flush(zlib.Z_FULL_FLUSH)
    entries = [(n, zlib.crc32(d), len(d), zlib.compress(d, 9)[2:-4]) for n, d in members.items()]
    entries.append((name, zlib.crc32(bytes(declared)), declared,
                    block * (zeros // _PIECE) + b"\x03\x00"))  # + an empty final block
    local, central = bytearray(), bytearray()
    for n, crc, size, stream in entries:
        encoded = n.encode()
        central += struct.pack("<4s6H3L5HLL", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc,
                               len(stream), size, len(encoded), 0, 0, 0, 0, 0, len(local))
        central += encoded
        local += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(stream),
                             size, len(encoded), 0) + encoded + stream
    return bytes(local + central + struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries),
                                               len(entries), len(central), len(local), 0))
