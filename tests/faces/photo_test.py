"""Photo -> aligned faces: every face, the best face, in Python and in a SavedModel."""
import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from faces import boxes as box_ops
from faces import photo as photo_lib


@pytest.fixture(scope="module")
def faces160(detector):
    return photo_lib.PhotoFaces(160, detector=detector)


def _similar(a, b):
    """Correlation of the central 60% of two 160 px images (the face; the corners of a
    pasted, rotated face show the background)."""
    a, b = (np.asarray(x, np.float64)[32:128, 32:128].ravel() for x in (a, b))
    return np.corrcoef(a, b)[0, 1]


def test_every_face_is_cropped_and_each_crop_is_its_own_face(faces160, photos):
    """The crop in row i is the face of box i: it matches that face's UTKFace source best."""
    photo = photos(1, seed=41, faces_per_photo=(3, 3), face_sizes=(90, 160))[0]
    out = faces160.faces(photo.image)
    n = int(out[photo_lib.NUM_FACES])
    assert n == 3 and out[photo_lib.CROPS].shape == (3, 160, 160, 3)
    m = box_ops.match(out["boxes"][:n], photo.boxes)
    assert np.all(m.pair >= 0)
    sources = [np.asarray(Image.open(s).convert("RGB").resize((160, 160), Image.LANCZOS))
               for s in photo.sources]
    crops = out[photo_lib.CROPS].numpy()
    for i in range(n):
        scores = [_similar(crops[i], source) for source in sources]
        assert int(np.argmax(scores)) == m.pair[i]
        # Aligned on the train crops' template, a pasted UTKFace face looks like its crop
        # (measured 0.98-0.99 here; another face of the photo: 0.82 at most).
        assert scores[m.pair[i]] > 0.93, scores


def test_no_face_gives_no_crops(faces160, tools):
    out = faces160.faces(tools.noise_photo(5))
    assert int(out[photo_lib.NUM_FACES]) == 0 and out[photo_lib.CROPS].shape == (0, 160, 160, 3)
    best = faces160.best_face(tools.noise_photo(5))
    assert not bool(best[photo_lib.FOUND])
    assert not best[photo_lib.CROP].numpy().any() and not best[photo_lib.BOX].numpy().any()
    assert faces160.best(tools.noise_photo(5)) is None


def test_best_face_picks_the_largest_or_the_most_confident(detector, photos, tools):
    photo = photos(1, seed=42, faces_per_photo=(3, 3))[0]
    found = detector.find(photo.image)
    areas = (found.boxes[:, 2] - found.boxes[:, 0]) * (found.boxes[:, 3] - found.boxes[:, 1])
    assert int(np.argmax(areas)) != 0  # the largest face is not the most confident one here
    largest = photo_lib.PhotoFaces(128, detector=detector)
    best = largest.best(tools.encode(photo.image, "PNG"))
    np.testing.assert_allclose(best.box, found.boxes[np.argmax(areas)], atol=1e-3)
    assert best.crop.shape == (128, 128, 3) and best.crop.dtype == np.uint8
    assert best.num_faces == 3
    by_score = photo_lib.PhotoFaces(128, detector=detector, select="score").best(photo.image)
    np.testing.assert_allclose(by_score.box, found.boxes[0], atol=1e-3)
    assert by_score.score == pytest.approx(found.scores.max())


def test_best_face_maps_over_a_batch_of_encoded_photos(faces160, photos, tools):
    """The records job's pattern: one tf.function over a batch, tf.map_fn of best_face_graph
    (fixed output shapes), photos without a face included."""
    from agegender import preprocessing

    batch = [tools.encode(p.image) for p in photos(2, seed=44, faces_per_photo=(1, 2))]
    batch.insert(1, tools.encode(tools.noise_photo(6)))

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)], autograph=False)
    def best_faces(datas):
        return tf.map_fn(lambda d: faces160.best_face_graph(preprocessing.decode_rgb(d)), datas,
                         fn_output_signature=faces160.best_face_spec)

    outputs = faces160.best_face.get_concrete_function().structured_outputs
    assert faces160.best_face_spec == {k: tf.TensorSpec(v.shape, v.dtype)
                                       for k, v in outputs.items()}
    out = best_faces(tf.constant(batch))
    assert out[photo_lib.FOUND].numpy().tolist() == [True, False, True]
    assert out[photo_lib.CROP].shape == (3, 160, 160, 3)
    for i in (0, 2):
        one = faces160.best(batch[i])
        np.testing.assert_allclose(out[photo_lib.BOX][i], one.box, atol=1e-3)


def test_bad_settings_are_refused(detector):
    with pytest.raises(ValueError, match="select"):
        photo_lib.PhotoFaces(160, detector=detector, select="first")
    with pytest.raises(ValueError, match="output_size"):
        photo_lib.PhotoFaces(0, detector=detector)


def test_the_pixel_limit_holds_for_photo_bytes(detector, png_bomb):
    faces = photo_lib.PhotoFaces(64, detector=detector)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        faces.best_face_bytes(tf.constant(png_bomb))


@pytest.mark.slow
def test_saved_model_with_a_model_on_the_crops(detector, photos, tools, tmp_path):
    """What a `predict_photo` signature does: photo bytes -> crops -> a model, saved/reloaded."""
    faces = photo_lib.PhotoFaces(32, detector=detector)

    class Served(tf.Module):
        def __init__(self):
            super().__init__()
            self.faces = faces

        @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
        def predict_photo(self, image_bytes):
            out = self.faces.faces_graph(tf.io.decode_image(image_bytes, 3,
                                                            expand_animations=False))
            # A stand-in "model": mean brightness of each aligned face.
            return {"num_faces": out["num_faces"], "boxes": out["boxes"],
                    "brightness": tf.reduce_mean(out["crops"], axis=[1, 2, 3])}

    served = Served()
    photo = photos(1, seed=43, faces_per_photo=(2, 2))[0]
    data = tools.encode(photo.image, "PNG")
    expected = served.predict_photo(tf.constant(data))
    path = str(tmp_path / "served")
    tf.saved_model.save(served, path, signatures={"predict_photo": served.predict_photo})
    loaded = tf.saved_model.load(path)
    got = loaded.signatures["predict_photo"](image_bytes=tf.constant(data))
    assert int(got["num_faces"]) == 2 and got["brightness"].shape == (2,)
    for key in expected:
        np.testing.assert_allclose(got[key], expected[key], atol=1e-3)
