"""Fixtures for the video tests: tiny clips made with PyAV, and frames with faces moving."""
import types

import numpy as np
import pytest

CODECS = {"mp4": "libx264", "mov": "libx264", "mkv": "libx264", "webm": "libvpx",
          "avi": "mpeg4"}


def write_clip(path, frames, rate=10, rotation=None, gop=None):
    """Encodes uint8 RGB frames (a list or generator) to `path` (codec from the extension)."""
    import av

    frames = iter(frames)
    first = next(frames)
    options = {"g": str(gop)} if gop else {}
    with av.open(str(path), "w") as container:
        stream = container.add_stream(CODECS[str(path).rsplit(".", 1)[1]], rate=rate,
                                      options=options)
        stream.height, stream.width = first.shape[:2]
        stream.pix_fmt = "yuv420p"
        if rotation:
            stream.set_display_rotation(rotation)
        for image in [first, *frames]:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")))
        container.mux(stream.encode(None))
    return str(path)


def marked_frames(count, width=64, height=48):
    """Frames whose left quarter is white and whose rest is grey at 10 levels per frame
    number, so a reader's order and rotation show."""
    for i in range(count):
        image = np.zeros((height, width, 3), np.uint8)
        image[:, :width // 4] = 255
        image[:, width // 4:] = min(255, 10 * i)
        yield image


def noise_frames(count, width=64, height=48, seed=0):
    rng = np.random.default_rng(seed)
    for _ in range(count):
        yield rng.integers(0, 256, (height, width, 3), dtype=np.uint8)


@pytest.fixture(scope="session")
def clips():
    return types.SimpleNamespace(write=write_clip, marked=marked_frames, noise=noise_frames)
