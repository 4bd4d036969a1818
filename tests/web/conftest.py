"""Fixtures: a fake face-finding SavedModel served by the project's local server, and photos.

Until face detection lands, the model behind the page is a fake with the `predict_photo`
signature the page expects. Its "faces" are solid squares of three known colours in a
synthetic photo, found with plain TF ops (colour match -> extent of the matching rows and
columns), so the expected boxes are where the test drew them, and each colour has a fixed
age, spread and gender. Padded entries beyond num_faces carry a decoy face (age 99) that must
never show up.
"""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

MAX_FACES = 4
BACKGROUND = (120, 120, 120)
# colour, age, age_std, gender, probability of that gender
FACES = [
    ((230, 40, 40), 34.0, 5.0, "F", 0.91),
    ((40, 90, 230), 61.0, 7.0, "M", 0.83),
    ((40, 190, 70), 8.0, 2.0, "F", 0.6),
]
DECOY_AGE = 99.0
TOLERANCE = 60  # per channel, for JPEG edges and the browser's re-encoding


def face_model():
    """A tf.Module with `predict_photo(image_bytes, key=[])` as described above."""
    import tensorflow as tf

    k = len(FACES)
    colours = tf.constant([c for c, *_ in FACES], tf.float32)
    # Row k is the padding entry: a decoy that the page must ignore.
    ages = tf.constant([a for _, a, *_ in FACES] + [DECOY_AGE], tf.float32)
    stds = tf.constant([s for _, _, s, *_ in FACES] + [1.0], tf.float32)
    genders = tf.constant([g for *_, g, _ in FACES] + ["M"])
    p_female = tf.constant([p if g == "F" else 1 - p for *_, g, p in FACES] + [0.5], tf.float32)

    def extent(flags):
        """[K, L] bool -> first and one-past-last True index per row, as float."""
        idx = tf.cast(tf.range(tf.shape(flags)[1]), tf.float32)
        first = tf.reduce_min(tf.where(flags, idx, 1e9), axis=1)
        last = tf.reduce_max(tf.where(flags, idx, -1.0), axis=1) + 1
        return first, last

    def one_photo(data):
        pixels = tf.cast(tf.io.decode_image(data, channels=3, expand_animations=False),
                         tf.float32)
        mask = tf.reduce_all(tf.abs(pixels[None] - colours[:, None, None, :]) < TOLERANCE, -1)
        present = tf.reduce_sum(tf.cast(mask, tf.int32), axis=[1, 2]) >= 25
        x1, x2 = extent(tf.reduce_any(mask, axis=1))
        y1, y2 = extent(tf.reduce_any(mask, axis=2))
        boxes = tf.concat([tf.stack([x1, y1, x2, y2], -1), [[1.0, 1.0, 40.0, 40.0]]], 0)
        found = tf.cast(tf.where(present)[:, 0], tf.int32)
        n = tf.size(found)
        rows = tf.concat([found, tf.fill([MAX_FACES - n], k)], 0)
        box = tf.gather(boxes, rows)
        w, h = box[:, 2] - box[:, 0], box[:, 3] - box[:, 1]
        at = lambda fx, fy: tf.stack([box[:, 0] + fx * w, box[:, 1] + fy * h], -1)  # noqa: E731
        age, std, pf = tf.gather(ages, rows), tf.gather(stds, rows), tf.gather(p_female, rows)
        return {
            "num_faces": n,
            "boxes": box,
            "landmarks": tf.stack([at(.3, .4), at(.7, .4), at(.5, .6), at(.35, .8),
                                   at(.65, .8)], 1),
            "face_scores": tf.where(tf.range(MAX_FACES) < n, 0.99, 0.0),
            "age": age,
            "age_std": std,
            "age_interval_80": tf.stack([age - 1.28 * std, age + 1.28 * std], -1),
            "gender": tf.gather(genders, rows),
            "gender_probability": tf.stack([1 - pf, pf], -1),
        }

    spec = {
        "num_faces": tf.TensorSpec([], tf.int32),
        "boxes": tf.TensorSpec([MAX_FACES, 4], tf.float32),
        "landmarks": tf.TensorSpec([MAX_FACES, 5, 2], tf.float32),
        "face_scores": tf.TensorSpec([MAX_FACES], tf.float32),
        "age": tf.TensorSpec([MAX_FACES], tf.float32),
        "age_std": tf.TensorSpec([MAX_FACES], tf.float32),
        "age_interval_80": tf.TensorSpec([MAX_FACES, 2], tf.float32),
        "gender": tf.TensorSpec([MAX_FACES], tf.string),
        "gender_probability": tf.TensorSpec([MAX_FACES, 2], tf.float32),
    }

    class FakeFaceModel(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes"),
                                      tf.TensorSpec([None], tf.string, name="key")])
        def predict_photo(self, image_bytes, key=tf.constant([], tf.string)):
            out = tf.map_fn(one_photo, image_bytes, fn_output_signature=spec)
            n = tf.shape(image_bytes)[0]
            out["key"] = tf.cond(tf.size(key) > 0, lambda: key,
                                 lambda: tf.fill([n], tf.constant("", tf.string)))
            return out

    return FakeFaceModel()


@pytest.fixture(scope="session")
def model_base(tmp_path_factory):
    """A model base path holding version 1 of the fake face model."""
    import tensorflow as tf

    base = tmp_path_factory.mktemp("web_models") / "age"
    module = face_model()
    tf.saved_model.save(module, str(base / "1"),
                        signatures={"predict_photo": module.predict_photo})
    return str(base)


def start_backend(model_base, rest_port=0):
    """The project's local model server on the fake model, REST only."""
    from serving.server import ModelServer

    return ModelServer(model_base, "age", grpc_port=0, rest_port=rest_port, enable_grpc=False,
                       file_system_poll_wait_seconds=0).start()


@pytest.fixture(scope="session")
def backend(model_base):
    srv = start_backend(model_base)
    yield srv
    srv.stop()


@pytest.fixture(scope="session")
def backend_factory(model_base):
    """start(rest_port=0) -> a new, started local model server on the fake model."""
    return lambda rest_port=0: start_backend(model_base, rest_port)


def photo(size=(400, 300), faces=(), fmt="JPEG", exif_orientation=None, raw_rotation=None):
    """A synthetic photo: grey, with `faces` = [(colour index, x, y, side)] drawn as squares
    with eyes and a mouth. `raw_rotation` (a PIL transpose) is applied to the pixels after
    drawing, `exif_orientation` written as the EXIF tag: together, a phone photo stored
    sideways that a viewer turns upright."""
    img = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(img)
    for index, x, y, side in faces:
        draw.rectangle([x, y, x + side - 1, y + side - 1], fill=FACES[index][0])
        for ex in (0.3, 0.7):  # eyes and mouth inside: the colour's extent stays the square
            cx, cy, r = x + ex * side, y + 0.4 * side, side * 0.06
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(20, 20, 20))
        draw.line([x + 0.35 * side, y + 0.75 * side, x + 0.65 * side, y + 0.75 * side],
                  fill=(20, 20, 20), width=max(1, side // 20))
    if raw_rotation is not None:
        img = img.transpose(raw_rotation)
    buf = io.BytesIO()
    kwargs = {"quality": 95} if fmt == "JPEG" else {}
    if exif_orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = exif_orientation
        kwargs["exif"] = exif.tobytes()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def expected_box(x, y, side):
    return np.array([x, y, x + side, y + side], float)


@pytest.fixture(scope="session")
def make_photo():
    return photo
