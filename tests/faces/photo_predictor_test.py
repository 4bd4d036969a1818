"""faces.photo_predictor: photos -> faces found, aligned and answered, dense and padded."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from agegender import heads, photo_answers
from faces import photo_predictor
from agegender import serving_contract as contract
from faces import boxes as box_ops
from faces import template as template_lib
from testing import tiny_models

MAX_FACES = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from agegender import job_dir

    path = tiny_models.make_job_dir(tmp_path_factory.mktemp("job"), type="classification",
                                    predict_gender=True)
    return job_dir.load(path)


@pytest.fixture(scope="module")
def predictor(tiny):
    model, spec = tiny
    return photo_predictor.PhotoPredictor(model, spec, max_faces=MAX_FACES)


@pytest.fixture(scope="module")
def cases(synthetic_photos, photo_tools):
    """{name: (encoded photo, truth boxes)}: several faces, one 40-pixel face, a grey JPEG
    and a PNG of a one-face photo, a photo without a face."""
    several = synthetic_photos(1, 1, faces_per_photo=(3, 3), face_sizes=(70, 150))[0]
    tiny_face = synthetic_photos(1, 0, faces_per_photo=(1, 1), face_sizes=(40, 40),
                                 max_rotation=5)[0]
    one = synthetic_photos(1, 2, faces_per_photo=(1, 1), face_sizes=(120, 160))[0]
    return {
        "several": (photo_tools.encode(several.image), several.boxes),
        "tiny": (photo_tools.encode(tiny_face.image, quality=95), tiny_face.boxes),
        "grey": (photo_tools.encode(one.image, mode="L"), one.boxes),
        "png": (photo_tools.encode(one.image, "PNG"), one.boxes),
        "none": (photo_tools.encode(photo_tools.plain()), np.zeros((0, 4))),
    }


def _run(predictor, photos, keys=()):
    out = predictor.predict_fn()(tf.constant(photos), tf.constant(list(keys), tf.string))
    return {k: v.numpy() for k, v in out.items()}


def test_every_face_is_found_answered_and_padded(predictor, cases, tiny):
    names = list(cases)
    out = _run(predictor, [cases[n][0] for n in names], keys=names)
    n = len(names)
    assert out[contract.NUM_FACES].tolist() == [3, 1, 1, 1, 0]
    assert out[contract.BOXES].shape == (n, MAX_FACES, 4)
    assert out[contract.LANDMARKS].shape == (n, MAX_FACES, 5, 2)
    assert out[contract.FACE_SCORES].shape == (n, MAX_FACES)
    for name in (heads.AGE, heads.AGE_STD, heads.GENDER):
        assert out[name].shape == (n, MAX_FACES), name
    for name in ("age_interval_50", "age_interval_80", "gender_probability"):
        assert out[name].shape == (n, MAX_FACES, 2), name
    assert out["age_distribution"].shape == (n, MAX_FACES, 101)
    assert [k.decode() for k in out[contract.KEY]] == names
    for i, name in enumerate(names):
        count = out[contract.NUM_FACES][i]
        # Each truth face is found (IoU > 0.5), the 40-pixel one and the grey one too.
        truth = cases[name][1]
        if len(truth):
            assert np.all(box_ops.match(truth, out[contract.BOXES][i, :count]).pair >= 0), name
        # Real answers for real faces; padding is zeros and empty strings, never an age.
        assert np.all(out[heads.AGE][i, :count] > 0)
        assert np.all(out[contract.FACE_SCORES][i, :count] > 0.8)
        assert set(out[heads.GENDER][i, :count]) <= {b"M", b"F"}
        for key, values in out.items():
            if key not in (contract.NUM_FACES, contract.KEY):
                padding = values[i, count:]
                assert not padding.any() if padding.dtype != object else \
                    all(v == b"" for v in padding.ravel()), (name, key)
    # The same photo as grey JPEG and PNG: one face, at the same place.
    np.testing.assert_allclose(out[contract.BOXES][2, 0], out[contract.BOXES][3, 0], atol=6)


def test_each_row_is_the_models_answer_for_that_face(predictor, cases, tiny):
    """Row j of photo i is the model's answer on photo i's face j, aligned: the gather back
    from the flat batch of faces puts every answer on its own face."""
    model, spec = tiny
    photos = [cases["several"][0], cases["none"][0], cases["tiny"][0]]
    out = _run(predictor, photos)
    for i, photo in enumerate(photos):
        found = predictor.faces.faces_bytes(tf.constant(photo))
        count = int(found["num_faces"])
        assert count == out[contract.NUM_FACES][i]
        np.testing.assert_allclose(found["boxes"][:count], out[contract.BOXES][i, :count],
                                   atol=1e-3)
        if not count:
            continue
        expected = heads.serving_outputs(
            {k: tf.cast(v, tf.float32) for k, v in model(found["crops"]).items()}, spec)
        np.testing.assert_allclose(expected[heads.AGE], out[heads.AGE][i, :count], atol=1e-3)
        np.testing.assert_allclose(expected["gender_probability"],
                                   out["gender_probability"][i, :count], atol=1e-4)


def test_a_batch_without_any_face_is_a_normal_answer(predictor, photo_tools):
    out = _run(predictor, [photo_tools.encode(photo_tools.plain(seed=s)) for s in (1, 2)])
    assert out[contract.NUM_FACES].tolist() == [0, 0]
    assert not out[heads.AGE].any() and out[heads.AGE].shape == (2, MAX_FACES)
    assert out[contract.KEY].tolist() == [b"", b""]
    assert photo_answers.photo_faces(out) == [
        {"key": "", "num_faces": 0, "faces": []}, {"key": "", "num_faces": 0, "faces": []}]


def test_the_pixel_limit_refuses_a_photo_before_decoding(predictor, tiny, cases, png_bomb):
    model, spec = tiny
    strict = photo_predictor.PhotoPredictor(model, spec, max_faces=2, max_pixels=100_000)
    with pytest.raises(tf.errors.InvalidArgumentError, match="too large"):
        _run(strict, [cases["tiny"][0]])  # 640 x 480 = 307,200 pixels
    with pytest.raises(tf.errors.InvalidArgumentError, match="too large"):
        _run(predictor, [png_bomb])  # 400 megapixels declared: over the default limit
    with pytest.raises(tf.errors.InvalidArgumentError, match="one value per image"):
        _run(predictor, [cases["tiny"][0]] * 2, keys=["only one"])


def test_faces_are_aligned_on_the_template_the_training_data_had(predictor, tiny, cases):
    model, spec = tiny
    shipped = predictor
    assert photo_predictor.template_points(spec) is None
    assert shipped.describe()["template_sha256"] == template_lib.fingerprint(
        template_lib.load().points)
    # Records aligned on another template: the model is served with that one.
    points = np.asarray(template_lib.load().points) * 0.9 + 0.05
    aligned_spec = dataclasses.replace(spec, face_alignment={"template": points.tolist()})
    other = photo_predictor.PhotoPredictor(model, aligned_spec, max_faces=2)
    info = other.describe()
    assert info["template_sha256"] == template_lib.fingerprint(points)
    assert "face_alignment" in info["template_source"]
    photo = tf.constant(cases["png"][0])
    crops = [p.faces.faces_bytes(photo)["crops"].numpy() for p in (shipped, other)]
    assert crops[0].shape == crops[1].shape == (1, spec.img_dim, spec.img_dim, 3)
    assert np.abs(crops[0] - crops[1]).mean() > 5  # framed differently
