"""Fixtures: one tiny model as a job dir, its export, and a photo with faces in it."""
import pytest


@pytest.fixture(scope="session")
def job_dir(tiny_job):
    return tiny_job("clf_gender")


@pytest.fixture(scope="session")
def model_base(tiny_export):
    """A TF Serving base path holding version 1 of the job dir's model."""
    return tiny_export("clf_gender")


@pytest.fixture(scope="session")
def photo(synthetic_photos, photo_tools):
    """A JPEG photo with three faces (test-split faces pasted on a background)."""
    several = synthetic_photos(1, 3, faces_per_photo=(3, 3), face_sizes=(70, 150))[0]
    return photo_tools.encode(several.image, "PNG")


@pytest.fixture(scope="session")
def analyzer(model_base):
    from agegender import FaceAnalyzer

    return FaceAnalyzer.load(model_base)
