"""Shared fixtures for the face package's tests: one detector per session, real faces."""
import io
import os
import types

import numpy as np
import pytest
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED_UTK = os.path.join(REPO, "..", "shared", "data", "utkface", "UTKFace")


def encode(pixels, fmt="JPEG", **options):
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, fmt, **options)
    return out.getvalue()


def noise_photo(seed=0, width=320, height=240):
    """Smooth random colours: nothing face-like (the detector finds no face in it)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
    return np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC))


@pytest.fixture(scope="session")
def utk_dir():
    if not os.path.isdir(SHARED_UTK):
        pytest.skip("../shared UTKFace images not available")
    return SHARED_UTK


@pytest.fixture(scope="session")
def detector():
    from faces import detector as detector_lib

    return detector_lib.FaceDetector()


@pytest.fixture(scope="session")
def reference():
    from testing import reference_detector as reference_lib

    return reference_lib.Reference()


@pytest.fixture(scope="session")
def photos(utk_dir):
    """photos(count, seed, **options) -> list of synthetic_faces.Photo from the shared faces."""
    from testing import synthetic_faces

    def make(count, seed, **options):
        return list(synthetic_faces.photos(count, seed, data_dir=utk_dir, **options))
    return make


@pytest.fixture
def tools():
    """Helpers above (importlib mode: test modules cannot import this file)."""
    return types.SimpleNamespace(encode=encode, noise_photo=noise_photo, REPO=REPO)
