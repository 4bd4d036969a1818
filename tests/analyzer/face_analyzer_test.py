"""FaceAnalyzer: what `load` picks, inputs of every kind, batches, crops, errors; the
in-process backends (SavedModel, job dir) answer what the exported signatures answer."""
import io
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from agegender import Face, FaceAnalyzer, ImageError, ModelLoadError, photo_answers
from agegender import serving_contract as contract
from export import export_model

# Each test loads and runs a model (a tiny one: 5-25 s each on 2 cores): integration tier.
pytestmark = pytest.mark.slow


def _signature_faces(version_dir, photo):
    """The photo's faces as the SavedModel's predict_photo signature answers them."""
    fn = tf.saved_model.load(version_dir).signatures[contract.PREDICT_PHOTO]
    out = fn(image_bytes=tf.constant([photo]), key=tf.constant([], tf.string))
    return photo_answers.read_photos({k: v.numpy() for k, v in out.items()})[0].faces


def test_load_picks_the_backend_from_what_it_is_given(model_base, job_dir, tmp_path):
    analyzer = FaceAnalyzer.load(model_base)
    assert analyzer.info.backend == "saved_model" and analyzer.info.version == 1
    assert analyzer.info.source == os.path.join(model_base, "1")
    assert contract.PREDICT_PHOTO in analyzer.info.signatures
    with open(os.path.join(model_base, "1", "saved_model.pb"), "rb") as f:
        import hashlib
        assert analyzer.info.saved_model_sha256 == hashlib.sha256(f.read()).hexdigest()
    assert FaceAnalyzer.load(os.path.join(model_base, "1")).info.version == 1
    assert FaceAnalyzer.load(job_dir).info.backend == "job_dir"
    rest = FaceAnalyzer.load("http://127.0.0.1:1", timeout=1)
    assert rest._backend._protocol == "rest"  # no request until it is used
    with pytest.raises(ModelLoadError, match="does not exist"):
        FaceAnalyzer.load(str(tmp_path / "missing"))
    with pytest.raises(ModelLoadError, match="no saved_model.pb"):
        FaceAnalyzer.load(str(tmp_path))
    with pytest.raises(ModelLoadError, match="grpc://HOST:PORT"):
        FaceAnalyzer.load("ftp://host:1")
    with pytest.raises(ModelLoadError, match="host:port"):
        FaceAnalyzer.from_server("no-port", protocol="rest")
    with pytest.raises(ModelLoadError, match="protocol"):
        FaceAnalyzer.from_server("h:1", protocol="soap")
    with pytest.raises(ValueError, match="positive"):
        FaceAnalyzer.load(model_base, max_image_pixels=0)


def test_photo_answers_are_the_signatures(analyzer, model_base, photo):
    faces = analyzer.analyze(photo)
    want = _signature_faces(os.path.join(model_base, "1"), photo)
    assert len(faces) == len(want) >= 2
    for got, expected in zip(faces, want):
        assert isinstance(got, Face)
        np.testing.assert_allclose(got.box, expected.box, atol=1e-3)
        assert got.age == pytest.approx(expected.age, abs=1e-4)
        assert got.gender in ("male", "female") and 0.5 <= got.gender_probability <= 1
        assert got.age_distribution.shape == (101,)
        assert got.age_interval_50[0] <= got.age <= got.age_interval_50[1] or got.age_std > 20
        assert len(got.landmarks) == 5 and 0 < got.score <= 1


def test_every_kind_of_input_gives_the_same_faces(analyzer, photo, tmp_path):
    pixels = np.asarray(Image.open(io.BytesIO(photo)).convert("RGB"))
    path = tmp_path / "photo.png"
    path.write_bytes(photo)
    answers = [analyzer.analyze(x) for x in (photo, str(path), path, pixels,
                                             Image.fromarray(pixels))]
    for faces in answers[1:]:
        assert faces == answers[0]  # PNG round trip: the same pixels, the same faces


def test_a_batch_is_one_model_call_and_a_bad_photo_fails_alone(analyzer, photo, png_bomb):
    calls = []
    backend = analyzer._backend
    original = backend.photos

    def spy(encoded):
        calls.append(len(encoded))
        return original(encoded)
    backend.photos = spy
    try:
        one = analyzer.analyze(photo)
        answers = analyzer.analyze_batch([photo, photo], on_error="raise")
        assert calls == [1, 2] and answers == [one, one]
        calls.clear()
        mixed = analyzer.analyze_batch([photo, b"not an image", png_bomb], on_error="return")
        assert calls == [1]  # the refused ones never reach the model
        assert mixed[0] == one
        assert mixed[1].reason == "undecodable" and mixed[2].reason == "image_too_large"
        with pytest.raises(ImageError, match="20000x20000") as refused:
            analyzer.analyze_batch([photo, png_bomb])
        assert refused.value.reason == "image_too_large"
    finally:
        backend.photos = original


def test_a_photo_the_model_refuses_is_an_image_error_and_the_batch_goes_on(analyzer, photo):
    """A header that passes but pixels that do not decode: the signature refuses it; the
    batch is retried one by one so only it fails."""
    broken = photo[:len(photo) // 3]
    answers = analyzer.analyze_batch([photo, broken], on_error="return")
    assert len(answers[0]) >= 2
    assert isinstance(answers[1], ImageError) and "{{" not in str(answers[1])


def test_estimate_crop_is_serving_default(analyzer, model_base):
    crops = [export_model.synthetic_jpeg(seed=i) for i in range(3)]
    fn = tf.saved_model.load(os.path.join(model_base, "1")).signatures[contract.SERVING_DEFAULT]
    want = fn(image_bytes=tf.constant(crops), key=tf.constant([], tf.string))
    faces = analyzer.estimate_crops(crops)
    assert [f.box for f in faces] == [None] * 3
    np.testing.assert_allclose([f.age for f in faces], want["age"].numpy(), atol=1e-4)
    assert analyzer.estimate_crop(crops[1]).age == pytest.approx(faces[1].age, abs=1e-4)
    letters = [g.decode() for g in want["gender"].numpy()]
    assert [photo_answers.gender_letter(f) for f in faces] == letters
    chosen = [p[contract.GENDER_LETTERS.index(g)]
              for p, g in zip(want["gender_probability"].numpy(), letters)]
    np.testing.assert_allclose([f.gender_probability for f in faces], chosen, atol=1e-6)


def test_a_job_dir_answers_like_its_export(job_dir, analyzer, photo):
    from_job = FaceAnalyzer.from_job_dir(job_dir)
    assert from_job.info.image_size == 32
    crops = [export_model.synthetic_jpeg(seed=i) for i in range(2)]
    np.testing.assert_allclose([f.age for f in from_job.estimate_crops(crops)],
                               [f.age for f in analyzer.estimate_crops(crops)], atol=1e-3)
    got, want = from_job.analyze(photo), analyzer.analyze(photo)
    assert len(got) == len(want)
    np.testing.assert_allclose([f.box for f in got], [f.box for f in want], atol=1e-2)
    np.testing.assert_allclose([f.age for f in got], [f.age for f in want], atol=1e-3)
    with pytest.raises(ModelLoadError, match="model.keras not found"):
        FaceAnalyzer.from_job_dir(os.path.dirname(job_dir))


def test_arrays_of_the_wrong_kind_are_refused_clearly(analyzer):
    with pytest.raises(ImageError, match="HxWx3 uint8"):
        analyzer.analyze(np.zeros((10, 10), np.float32))
    with pytest.raises(TypeError, match="a path, bytes"):
        analyzer.analyze(12)
    small = FaceAnalyzer(analyzer._backend, max_image_pixels=100)
    with pytest.raises(ImageError, match="over the limit") as refused:
        small.analyze(np.zeros((20, 20, 3), np.uint8))
    assert refused.value.reason == "image_too_large"
