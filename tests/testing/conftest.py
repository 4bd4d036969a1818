"""Fixtures for the tests of the `testing` package's makers: the shared faces they paste."""
import os

import pytest


@pytest.fixture(scope="session")
def utk_dir():
    from faces import utkface

    if not os.path.isdir(utkface.SHARED_UTKFACE):
        pytest.skip("../shared UTKFace images not available")
    return utkface.SHARED_UTKFACE


@pytest.fixture(scope="session")
def detector():
    from faces import detector as detector_lib

    return detector_lib.FaceDetector()


@pytest.fixture(scope="session")
def photos(synthetic_photos):
    """photos(count, seed, **options) -> `testing.synthetic_faces` photos of the shared faces."""
    return synthetic_photos
