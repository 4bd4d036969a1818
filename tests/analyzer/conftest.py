"""Fixtures: one tiny model as a job dir, its export, and a photo with faces in it."""
import pytest

from export import export_model, testing


@pytest.fixture(scope="session")
def job_dir(tmp_path_factory):
    return testing.make_job_dir(tmp_path_factory.mktemp("api_job"), type="classification",
                                predict_gender=True)


@pytest.fixture(scope="session")
def model_base(job_dir, tmp_path_factory):
    """A TF Serving base path holding version 1 of the job dir's model."""
    base = str(tmp_path_factory.mktemp("api_models") / "age")
    export_model.export_saved_model(job_dir, base)
    return base


@pytest.fixture(scope="session")
def photo(synthetic_photos, photo_tools):
    """A JPEG photo with three faces (test-split faces pasted on a background)."""
    several = synthetic_photos(1, 3, faces_per_photo=(3, 3), face_sizes=(70, 150))[0]
    return photo_tools.encode(several.image, "PNG")


@pytest.fixture(scope="session")
def analyzer(model_base):
    from agegender import FaceAnalyzer

    return FaceAnalyzer.load(model_base)
