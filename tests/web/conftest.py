"""Fixtures: the page's model server on a fake face model and on a real one, and photos.

Most tests run against a fake with the `predict_photo` signature (names from
`agegender.serving_contract`), because its answers are known exactly: its "faces" are solid
squares of three known colours in a synthetic photo, found with plain TF ops (colour match
-> extent of the matching rows and columns), so the expected boxes are where the test drew
them, and each colour has a fixed age, spread and gender. Padded entries beyond num_faces
carry a decoy face (age 99) that must never show up. `fake_outputs_spec` is what it answers;
a test holds it to the real signature's outputs.

`real_backend`: a tiny real model (`testing.tiny_models`, 32 px) exported with its predict_photo
signature (MTCNN detection and alignment in the graph) and served by `python -m
serving.server` in a child process, for the tests that check the page against what the
export really produces; `two_face_photo` is a synthetic photo of two real faces for it.
"""
import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from agegender import serving_contract as contract

MAX_FACES = 4
BACKGROUND = (120, 120, 120)
# colour, age, age_std, gender, probability of that gender
FACES = [
    ((230, 40, 40), 34.0, 5.0, "F", 0.91),
    ((40, 90, 230), 61.0, 7.0, "M", 0.83),
    ((40, 190, 70), 8.0, 2.0, "F", 0.6),
]
DECOY_AGE = 99.0
# The distribution head's raw output (what the live mode fuses): a discretised normal of
# each face's age and spread over ages 0..100.
AGE_DISTRIBUTION = "age_distribution"
NUM_AGES = 101
TOLERANCE = 60  # per channel, for JPEG edges and the browser's re-encoding


def fake_outputs_spec():
    """{output: TensorSpec} of one photo's answer from the fake model (per face: [MAX_FACES,
    ...]); the real signature answers each of these too (`web/app_test.py` checks)."""
    import tensorflow as tf

    return {
        contract.NUM_FACES: tf.TensorSpec([], tf.int32),
        contract.BOXES: tf.TensorSpec([MAX_FACES, 4], tf.float32),
        contract.LANDMARKS: tf.TensorSpec([MAX_FACES, 5, 2], tf.float32),
        contract.FACE_SCORES: tf.TensorSpec([MAX_FACES], tf.float32),
        contract.AGE: tf.TensorSpec([MAX_FACES], tf.float32),
        contract.AGE_STD: tf.TensorSpec([MAX_FACES], tf.float32),
        contract.AGE_INTERVAL_80: tf.TensorSpec([MAX_FACES, 2], tf.float32),
        contract.GENDER: tf.TensorSpec([MAX_FACES], tf.string),
        contract.GENDER_PROBABILITY: tf.TensorSpec([MAX_FACES, 2], tf.float32),
        AGE_DISTRIBUTION: tf.TensorSpec([MAX_FACES, NUM_AGES], tf.float32),
    }


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
            contract.NUM_FACES: n,
            contract.BOXES: box,
            contract.LANDMARKS: tf.stack([at(.3, .4), at(.7, .4), at(.5, .6), at(.35, .8),
                                          at(.65, .8)], 1),
            contract.FACE_SCORES: tf.where(tf.range(MAX_FACES) < n, 0.99, 0.0),
            contract.AGE: age,
            contract.AGE_STD: std,
            contract.AGE_INTERVAL_80: tf.stack([age - 1.28 * std, age + 1.28 * std], -1),
            contract.GENDER: tf.gather(genders, rows),
            contract.GENDER_PROBABILITY: tf.stack([1 - pf, pf], -1),
            AGE_DISTRIBUTION: tf.nn.softmax(
                -tf.square(tf.range(NUM_AGES, dtype=tf.float32)[None] - age[:, None])
                / (2 * tf.square(std[:, None])), -1),
        }

    spec = fake_outputs_spec()

    class FakeFaceModel(tf.Module):
        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name=contract.IMAGE_BYTES),
            tf.TensorSpec([None], tf.string, name=contract.KEY)])
        def predict_photo(self, image_bytes, key=tf.constant([], tf.string)):
            out = tf.map_fn(one_photo, image_bytes, fn_output_signature=spec)
            n = tf.shape(image_bytes)[0]
            out[contract.KEY] = tf.cond(tf.size(key) > 0, lambda: key,
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
                        signatures={contract.PREDICT_PHOTO: module.predict_photo})
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


REAL_MAX_FACES = 4


@pytest.fixture(scope="session")
def real_model_base(tiny_export):
    """A model base path (".../age", contract.DEFAULT_MODEL_NAME) holding version 1 of a tiny
    real classification + gender model (32 px) exported with predict_photo (at most
    REAL_MAX_FACES faces per photo)."""
    return tiny_export("clf_gender", max_faces=REAL_MAX_FACES)


@pytest.fixture(scope="session")
def real_backend(real_model_base, tmp_path_factory):
    """`python -m serving.server` on the real model in a child process (REST and gRPC on
    free loopback ports; `rest_address`), started once for the session."""
    from serving.server_process import ServerProcess

    log = str(tmp_path_factory.mktemp("web_real_server") / "server.log")
    with ServerProcess(real_model_base, log_path=log) as server:
        yield server


@pytest.fixture(scope="session")
def two_face_photo(synthetic_photos):
    """(JPEG bytes, truth boxes [2, 4]) of a 640x480 synthetic photo with two real faces
    (UTKFace test-split crops, 110-150 px) that the detector finds; skipped without
    ../shared, like every test on real faces."""
    photo = synthetic_photos(1, 4, faces_per_photo=(2, 2), face_sizes=(110, 150),
                             max_rotation=5)[0]
    out = io.BytesIO()
    Image.fromarray(photo.image).save(out, "JPEG", quality=95)
    return out.getvalue(), np.asarray(photo.boxes, float)


def picture(size=(400, 300), faces=()):
    """A PIL image: grey, with `faces` = [(colour index, x, y, side)] drawn as squares with
    eyes and a mouth (the fake model's faces)."""
    img = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(img)
    for index, x, y, side in faces:
        draw.rectangle([x, y, x + side - 1, y + side - 1], fill=FACES[index][0])
        for ex in (0.3, 0.7):  # eyes and mouth inside: the colour's extent stays the square
            cx, cy, r = x + ex * side, y + 0.4 * side, side * 0.06
            draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(20, 20, 20))
        draw.line([x + 0.35 * side, y + 0.75 * side, x + 0.65 * side, y + 0.75 * side],
                  fill=(20, 20, 20), width=max(1, side // 20))
    return img


def photo(size=(400, 300), faces=(), fmt="JPEG", exif_orientation=None, raw_rotation=None):
    """A synthetic photo (`picture`) encoded as `fmt`. `raw_rotation` (a PIL transpose) is
    applied to the pixels after drawing, `exif_orientation` written as the EXIF tag:
    together, a phone photo stored sideways that a viewer turns upright."""
    img = picture(size, faces)
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


@pytest.fixture(scope="session")
def fake_picture():
    """`picture`: the fake model's faces on a PIL image (frames of a clip)."""
    return picture


class CannedBackend:
    """A 'model server' on a socket that reads each request whole and answers it with
    `answer` (bytes: status line, headers and body), all at once or `trickle` seconds per
    byte of the body; `accepted` counts its connections."""

    def __init__(self, answer, trickle=None):
        import socket
        import threading

        self.answer, self.trickle = answer, trickle
        self.accepted = 0
        self._closed = threading.Event()
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import threading

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn):
        import re

        with conn:
            try:
                data = b""
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536) or self._eof()
                head, _, body = data.partition(b"\r\n\r\n")
                length = int(re.search(rb"(?i)content-length:\s*(\d+)", head)[1])
                while len(body) < length:
                    body += conn.recv(65536) or self._eof()
                if self.trickle is None:
                    conn.sendall(self.answer)
                    return
                head, _, body = self.answer.partition(b"\r\n\r\n")
                conn.sendall(head + b"\r\n\r\n")
                for i in range(len(body)):
                    if self._closed.wait(self.trickle):
                        return
                    conn.sendall(body[i:i + 1])
            except (OSError, EOFError):
                return

    @staticmethod
    def _eof():
        raise EOFError

    def close(self):
        self._closed.set()
        self.sock.close()


def http_answer(body, status="200 OK", content_type="application/json", extra=b""):
    """An HTTP/1.1 answer as bytes (Connection: close)."""
    return (f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}"
            "\r\nConnection: close\r\n").encode() + extra + b"\r\n" + body


@pytest.fixture
def canned_backend():
    """canned_backend(body, status="200 OK", trickle=None, headers=b"") -> a started
    CannedBackend answering that, closed afterwards."""
    made = []

    def make(body, status="200 OK", trickle=None, headers=b""):
        made.append(CannedBackend(http_answer(body, status, extra=headers), trickle))
        return made[-1]

    yield make
    for backend in made:
        backend.close()


# -- headless Chromium (page_test.py, live_page_test.py) -----------------------------------

# The Debian package's browser binary: its /usr/bin/chromium wrapper adds flags of its own
# (--enable-remote-extensions among them), which a test that must not reach out avoids.
CHROMIUM_CANDIDATES = ("/usr/lib/chromium/chromium", "/usr/bin/chromium")
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "apt-get install -y chromium chromium-driver (as .ci/run does)"
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-extensions", "--no-default-browser-check", "--disable-default-apps",
    "--window-size=1280,1100",
    # No network: every host name but the loopback address fails to resolve.
    "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1",
]


def start_chromium(tmp, extra_flags=()):
    """A Selenium driver of headless Chromium (profile and driver log in `tmp`), or the test
    skipped, with the reason, where Chromium, its driver or Selenium is not installed
    (.ci/run installs them); nothing is downloaded."""
    import os

    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed: pip install -e '.[test]'")
    binary = next((p for p in CHROMIUM_CANDIDATES if os.access(p, os.X_OK)), None)
    if binary is None:
        pytest.skip(f"headless Chromium is not installed: {INSTALL_HINT}")
    if not os.access(CHROMEDRIVER, os.X_OK):
        pytest.skip(f"{CHROMEDRIVER} is not installed: {INSTALL_HINT}")
    options = webdriver.ChromeOptions()
    options.binary_location = binary
    for flag in CHROMIUM_FLAGS + [f"--user-data-dir={tmp / 'profile'}", *extra_flags]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=str(tmp / "driver.log")),
                            options=options)


@pytest.fixture(scope="session")
def chromium():
    """start_chromium(tmp, extra_flags=()) -> a driver (the caller quits it)."""
    return start_chromium
