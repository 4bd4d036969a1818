"""Fixtures every part's tests share: hostile inputs."""
import struct
import zlib

import pytest


def png_declaring(width, height):
    """A PNG of about 1 KB whose IHDR declares width x height: a decompression bomb (20000 x
    20000 decodes to 1.2 GB of pixels) that every decoding path must refuse from its header."""
    def chunk(kind, data):
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    return (b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * (1 << 20), 9)) + chunk(b"IEND", b""))


@pytest.fixture(scope="session")
def png_bomb():
    """A PNG declaring 20000 x 20000 pixels (400 MP, 1.2 GB decoded), 1-2 KB on disk."""
    return png_declaring(20000, 20000)
