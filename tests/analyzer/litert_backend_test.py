"""The LiteRT backend: the age .tflite answers crops like the SavedModel; photos go through
the LiteRT face networks and find the faces the SavedModel's predict_photo finds."""
import os

import numpy as np
import pytest

from agegender import FaceAnalyzer, ModelLoadError
from export import export_litert_faces, export_model, litert_file

pytestmark = pytest.mark.slow  # converts three networks and a model (~1 min on 2 cores)


@pytest.fixture(scope="module")
def litert_dir(job_dir, tmp_path_factory):
    """The age model and the face networks side by side, as an app would ship them."""
    out = tmp_path_factory.mktemp("litert")
    litert_file.export_litert(job_dir, str(out / "age.tflite"), "none", check_images=4)
    export_litert_faces.export_faces(str(out / "faces"), "none")
    return out


def test_crops_answer_like_the_saved_model(litert_dir, analyzer):
    lite = FaceAnalyzer.load(str(litert_dir / "age.tflite"))
    assert lite.info.backend == "litert" and lite.info.image_size == 32
    crops = [export_model.synthetic_jpeg(seed=i) for i in range(3)]
    got, want = lite.estimate_crops(crops), analyzer.estimate_crops(crops)
    np.testing.assert_allclose([f.age for f in got], [f.age for f in want], atol=1e-3)
    assert [f.gender for f in got] == [f.gender for f in want]


def test_photos_go_through_the_litert_face_networks(litert_dir, analyzer, photo):
    lite = FaceAnalyzer.from_litert(str(litert_dir / "age.tflite"),
                                    faces_dir=str(litert_dir / "faces"))
    got, want = lite.analyze(photo), analyzer.analyze(photo)
    assert len(got) == len(want) >= 2
    # float32 LiteRT networks differ from TF's by summation order only.
    np.testing.assert_allclose([f.box for f in got], [f.box for f in want], atol=0.5)
    np.testing.assert_allclose([f.age for f in got], [f.age for f in want], atol=0.05)
    assert lite.analyze(np.zeros((40, 40, 3), np.uint8)) == []


def test_photos_without_the_face_networks_say_what_to_export(litert_dir, photo, tmp_path):
    lite = FaceAnalyzer.load(str(litert_dir / "age.tflite"))  # no faces.json beside it
    with pytest.raises(ModelLoadError, match="export_litert_faces"):
        lite.analyze(photo)
    with pytest.raises(ModelLoadError, match="not the LiteRT face networks"):
        FaceAnalyzer.from_litert(str(litert_dir / "age.tflite"), faces_dir=str(tmp_path))
    (tmp_path / "x.tflite").write_bytes(os.urandom(3000))
    with pytest.raises(ModelLoadError, match="not a usable LiteRT model"):
        FaceAnalyzer.load(str(tmp_path / "x.tflite"))
