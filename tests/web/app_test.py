"""web.app without a browser: the page's files, forwarding to the local model server on the
fake face model, and every limit and failure as an HTTP status with a JSON error."""
import http.client
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from web.app import WebApp

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
LIMIT = 200_000
TWO_FACES = dict(size=(400, 300), faces=[(0, 40, 50, 80), (1, 250, 120, 100)])


@pytest.fixture(scope="module")
def app(backend):
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, max_request_bytes=LIMIT,
                timeout=20) as web_app:
        yield web_app


def call(app, method, path, body=None, headers=None, timeout=30):
    """-> (status, headers, parsed JSON or raw bytes)."""
    conn = http.client.HTTPConnection(app.host, app.port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    is_json = response.getheader("Content-Type") == "application/json"
    return response.status, response, (json.loads(raw) if is_json else raw)


def raw_exchange(app, data, timeout=5):
    """Sends raw bytes, returns everything the server answers before closing."""
    with socket.create_connection((app.host, app.port), timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class SilentBackend:
    """A 'model server' that accepts connections and never answers."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.accepted = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                self.accepted.append(self.sock.accept()[0])
            except OSError:
                return

    def close(self):
        self.sock.close()
        for conn in self.accepted:
            conn.close()


# --- the page's files -----------------------------------------------------------------

def test_page_and_its_files_are_served_with_a_strict_policy(app):
    status, response, html = call(app, "GET", "/")
    assert status == 200 and response.getheader("Content-Type").startswith("text/html")
    assert b'<input id="photos"' in html and b'<label for="photos"' in html
    csp = response.getheader("Content-Security-Policy")
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp
    for path, ctype in (("/app.js", "text/javascript"), ("/style.css", "text/css")):
        status, response, body = call(app, "GET", path)
        assert status == 200 and response.getheader("Content-Type").startswith(ctype)
        assert body
        # Nothing is fetched from elsewhere at run time: no absolute URL in the page.
        assert not re.search(rb"(https?:)?//[a-z0-9.-]+\.[a-z]", body), path
    assert not re.search(rb"(src|href)=\"(https?:)?//", html)


def test_unknown_paths(app):
    assert call(app, "GET", "/nothing")[0] == 404
    assert call(app, "GET", "/../setup.py")[0] == 404
    assert call(app, "GET", "/static/app.js")[0] == 404  # only the named files are served
    status, _, body = call(app, "GET", "/api/predict")
    assert status == 405 and "POST" in body["error"]
    status, _, body = call(app, "POST", "/api/other", body=b"x")
    assert status == 404 and "error" in body


def test_config_tells_the_page_its_limits(app):
    status, _, body = call(app, "GET", "/api/config")
    assert status == 200
    assert body["max_request_bytes"] == LIMIT and body["max_side"] == 1600
    assert body["model_name"] == "age"


# --- forwarding -------------------------------------------------------------------------

@pytest.mark.parametrize("fmt", ["JPEG", "PNG"])
def test_faces_of_a_photo(app, make_photo, fmt):
    status, _, body = call(app, "POST", "/api/predict", make_photo(**TWO_FACES, fmt=fmt),
                           {"Content-Type": "image/jpeg"})
    assert status == 200, body
    faces = sorted(body["faces"], key=lambda f: f["box"][0])
    assert len(faces) == 2  # the padded decoy is not among them
    np.testing.assert_allclose(faces[0]["box"], [40, 50, 120, 130], atol=2)
    np.testing.assert_allclose(faces[1]["box"], [250, 120, 350, 220], atol=2)
    assert [f["age"] for f in faces] == [34, 61]
    assert [f["age_std"] for f in faces] == [5, 7]
    assert [f["gender"] for f in faces] == ["F", "M"]
    assert [f["gender_probability"] for f in faces] == pytest.approx([0.91, 0.83])
    assert len(faces[0]["landmarks"]) == 5


# --- the real predict_photo signature -------------------------------------------------

@pytest.mark.slow
def test_a_real_models_faces_reach_the_page(real_backend, two_face_photo):
    """The export's own predict_photo (MTCNN and alignment in the graph, a tiny model) behind
    the local server: both faces of a photo come back in the page's JSON where they are,
    with the very age, spread, interval and gender the model server answers."""
    from faces import boxes as boxes_lib
    from serving.client import RestClient

    data, truth = two_face_photo
    with WebApp(real_backend.rest_address, port=0, timeout=120) as web_app:
        status, _, body = call(web_app, "POST", "/api/predict", data,
                               {"Content-Type": "image/jpeg"}, timeout=150)
    assert status == 200, body
    faces = body["faces"]
    assert len(faces) == 2, faces
    found = boxes_lib.match(truth, [f["box"] for f in faces])
    assert (found.pair >= 0).all(), (truth, faces)
    client = RestClient(real_backend.rest_address, timeout=120)
    try:
        (served,) = client.predict_photos([data])
    finally:
        client.close()
    assert served["num_faces"] == 2
    for face, want in zip(faces, served["faces"]):
        assert set(face) == {"box", "score", "landmarks", "age", "age_std", "age_interval_80",
                             "gender", "gender_probability"}
        np.testing.assert_allclose(face["box"], want["box"], atol=1e-3)
        np.testing.assert_allclose(face["landmarks"], want["landmarks"], atol=1e-3)
        for name in ("score", "age", "age_std"):
            assert face[name] == pytest.approx(want[name], abs=1e-4), name
        assert face["age_interval_80"] == pytest.approx(want["age_interval_80"])
        low, high = face["age_interval_80"]
        assert 0 <= low <= high <= 100 and 0 <= face["age"] <= 100 and face["age_std"] > 0
        assert face["gender"] == want["gender"] and face["gender"] in ("M", "F")
        # The client's reader gives the chosen gender's probability (older: both).
        want_p = want["gender_probability"]
        assert face["gender_probability"] == pytest.approx(
            max(want_p) if isinstance(want_p, (list, tuple)) else want_p)


@pytest.mark.slow
def test_the_fake_model_answers_like_the_real_signature(model_base, real_model_base):
    """Every output the page's fake model gives (and the page reads) is one the exported
    predict_photo gives, with the same dtype and per-face shape: the fake cannot drift from
    what the export writes."""
    import tensorflow as tf

    def outputs(base):
        sig = tf.saved_model.load(os.path.join(base, "1")).signatures["predict_photo"]
        inputs = {k: v.dtype for k, v in sig.structured_input_signature[1].items()}
        return sig.structured_outputs, inputs

    fake, fake_inputs = outputs(model_base)
    real, real_inputs = outputs(real_model_base)
    assert fake_inputs == real_inputs
    missing = set(fake) - set(real)
    assert not missing, f"the fake answers {missing}, the real signature does not"
    for name, spec in fake.items():
        assert real[name].dtype == spec.dtype, name
        # [photos] or [photos, faces, ...]: the number of faces differs (max_faces).
        assert real[name].shape.rank == spec.shape.rank, name
        assert real[name].shape[2:] == spec.shape[2:], name


def test_no_face(app, make_photo):
    status, _, body = call(app, "POST", "/api/predict", make_photo())
    assert (status, body) == (200, {"faces": []})


# --- bad requests -----------------------------------------------------------------------

def test_too_large_is_refused_before_the_body_is_read(app):
    # Only the headers are sent: the 413 comes without the server waiting for the body.
    answer = raw_exchange(app, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
                          + str(LIMIT + 1).encode() + b"\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413") and b"Connection: close" in head
    assert "too large" in json.loads(body)["error"] and str(LIMIT) in json.loads(body)["error"]


def test_not_an_image_and_other_formats(app, png_bomb):
    status, _, body = call(app, "POST", "/api/predict", b"shopping list: milk, eggs")
    assert status == 415 and "not a JPEG or PNG photo" in body["error"]
    status, _, body = call(app, "POST", "/api/predict",
                           b"GIF89a\x01\x00\x01\x00\x00\x00\x00;")
    assert status == 415 and "GIF" in body["error"]
    # 1-2 KB declaring 20000 x 20000 pixels: refused from its header, never decoded.
    status, _, body = call(app, "POST", "/api/predict", png_bomb)
    assert status == 413 and "pixels" in body["error"]


def test_photo_the_model_cannot_decode_is_the_callers_fault(app, make_photo):
    # A JPEG whose header is fine (the page's server lets it through) and whose data is cut.
    status, _, body = call(app, "POST", "/api/predict", make_photo(**TWO_FACES)[:700])
    assert status == 400 and "model server refused the photo" in body["error"], body


@pytest.mark.parametrize("request_bytes, status", [
    (b"POST /api/predict HTTP/1.1\r\nHost: x\r\n\r\n", 411),
    (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"3\r\nabc\r\n0\r\n\r\n", 411),
    # Not a decimal number: aiohttp's parser refuses it (RFC 9110: 400).
    (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n", 400),
    (b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close"
     b"\r\n\r\n", 400),
    (b"GARBAGE\r\n\r\n", 400),
])
def test_malformed_requests(app, request_bytes, status):
    answer = raw_exchange(app, request_bytes)
    assert answer.startswith(f"HTTP/1.1 {status}".encode()) or answer.startswith(
        f"HTTP/1.0 {status}".encode()), answer[:200]


def test_body_cut_short(app):
    with socket.create_connection((app.host, app.port), timeout=5) as s:
        s.sendall(b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n"
                  + b"\xff\xd8\xff" + b"\0" * 10)
        s.shutdown(socket.SHUT_WR)
        assert s.recv(65536).startswith(b"HTTP/1.1 400")


# --- the model server failing ------------------------------------------------------------

def test_backend_down_is_a_503_with_its_address(make_photo):
    port = free_port()  # nothing listens there
    with WebApp(f"127.0.0.1:{port}", port=0, timeout=5) as web_app:
        start = time.monotonic()
        status, _, body = call(web_app, "POST", "/api/predict", make_photo(**TWO_FACES))
        assert status == 503 and f"127.0.0.1:{port}" in body["error"]
        assert "not reachable" in body["error"]
        assert time.monotonic() - start < 5


def test_unknown_model_and_model_without_predict_photo(backend, backend_factory, make_photo,
                                                       tmp_path):
    with WebApp(f"127.0.0.1:{backend.rest_port}", "nope", port=0) as web_app:
        status, _, body = call(web_app, "POST", "/api/predict", make_photo())
        assert status == 502 and "no model 'nope'" in body["error"], body

    # A model exported before face detection: serving_default only.
    import tensorflow as tf

    class Old(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")])
        def serve(self, image_bytes):
            return {"age": tf.zeros(tf.shape(image_bytes), tf.float32)}

    old = Old()
    tf.saved_model.save(old, str(tmp_path / "old" / "1"), signatures={"serving_default": old.serve})
    from serving.server import ModelServer

    with ModelServer(str(tmp_path / "old"), "age", grpc_port=0, rest_port=0, enable_grpc=False,
                     file_system_poll_wait_seconds=0) as server, \
            WebApp(f"127.0.0.1:{server.rest_port}", port=0) as web_app:
        status, _, body = call(web_app, "POST", "/api/predict", make_photo())
        assert status == 502 and "has no 'predict_photo' signature" in body["error"], body


def test_backend_too_slow_is_a_504_within_the_timeout(make_photo):
    silent = SilentBackend()
    try:
        with WebApp(f"127.0.0.1:{silent.port}", port=0, timeout=0.5) as web_app:
            start = time.monotonic()
            status, _, body = call(web_app, "POST", "/api/predict", make_photo())
            assert status == 504 and "did not answer within 0.5 s" in body["error"]
            assert time.monotonic() - start < 3
    finally:
        silent.close()


def test_predictions_in_flight_are_bounded(make_photo):
    silent = SilentBackend()
    photo = make_photo()
    try:
        with WebApp(f"127.0.0.1:{silent.port}", port=0, timeout=1.5,
                    max_concurrent_predictions=1) as web_app:
            first = {}
            thread = threading.Thread(
                target=lambda: first.update(status=call(web_app, "POST", "/api/predict",
                                                        photo)[0]))
            thread.start()
            deadline = time.monotonic() + 5
            while not silent.accepted and time.monotonic() < deadline:
                time.sleep(0.01)
            assert len(silent.accepted) == 1  # the first photo holds the only slot
            status, _, body = call(web_app, "POST", "/api/predict", photo)
            assert status == 503 and "busy" in body["error"]
            assert len(silent.accepted) == 1  # the second never reached the model server
            thread.join(10)
            assert first["status"] == 504
    finally:
        silent.close()


# --- connections ------------------------------------------------------------------------

def test_connections_are_bounded_and_idle_ones_closed(backend):
    with WebApp(f"127.0.0.1:{backend.rest_port}", port=0, max_connections=2,
                idle_timeout=1.0) as web_app:
        idle = [socket.create_connection((web_app.host, web_app.port), timeout=5)
                for _ in range(2)]
        time.sleep(0.2)  # both accepted and holding their threads
        third = raw_exchange(web_app, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert third.startswith(b"HTTP/1.1 503") and b"open connections" in third
        # The idle ones are closed by the server after idle_timeout, freeing the slots.
        start = time.monotonic()
        for s in idle:
            assert s.recv(1024) == b""
            s.close()
        assert time.monotonic() - start < 4
        time.sleep(0.1)
        assert call(web_app, "GET", "/")[0] == 200


def test_stop_ends_open_keep_alive_connections(backend):
    web_app = WebApp(f"127.0.0.1:{backend.rest_port}", port=0).start()
    conn = http.client.HTTPConnection(web_app.host, web_app.port, timeout=5)
    conn.request("GET", "/")
    assert conn.getresponse().read()
    web_app.stop()
    conn.request("GET", "/")
    with pytest.raises((http.client.HTTPException, ConnectionError)):
        conn.getresponse()
    conn.close()


# --- the CLI ------------------------------------------------------------------------------

def _env():
    return {**os.environ, "PYTHONPATH": ROOT, "TF_CPP_MIN_LOG_LEVEL": "2"}


def test_cli_serves_the_page_and_forwards(backend, make_photo):
    proc = subprocess.Popen(
        [sys.executable, "-m", "web.app", f"--server=127.0.0.1:{backend.rest_port}",
         "--model_name=age", "--port=0"], cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        match = re.match(r"page: http://127\.0\.0\.1:(\d+)/ -> model 'age' at "
                         rf"http://127\.0\.0\.1:{backend.rest_port}$", line.strip())
        assert match, line + proc.stderr.read() if proc.poll() is not None else line
        conn = http.client.HTTPConnection("127.0.0.1", int(match[1]), timeout=20)
        conn.request("POST", "/api/predict", make_photo(**TWO_FACES))
        response = conn.getresponse()
        assert response.status == 200 and len(json.loads(response.read())["faces"]) == 2
        conn.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0


@pytest.mark.parametrize("flag, words", [
    ("--server=nonsense", "--server must be host:port"),
    ("--max_request_bytes=0", "byte count > 0"),
    ("--timeout=soon", "seconds > 0"),
])
def test_cli_bad_flags(flag, words):
    result = subprocess.run([sys.executable, "-m", "web.app", flag, "--port=0"], cwd=ROOT,
                            env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and words in result.stderr


def test_the_old_backend_spelling_still_works_with_a_warning():
    """--backend is --server's deprecated spelling: same argument, one warning line."""
    result = subprocess.run([sys.executable, "-m", "web.app", "--backend=nonsense", "--port=0"],
                            cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "warning: --backend is deprecated, use --server" in result.stderr
    assert "--server must be host:port (e.g. localhost:8501), got 'nonsense'" in result.stderr


def test_the_page_process_does_not_load_tensorflow():
    # The forwarding process starts in a fraction of a second and stays small because of it.
    result = subprocess.run(
        [sys.executable, "-c", "import sys, web.app; print('tensorflow' in sys.modules)"],
        cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


# --- hostile requests and backends (issue 23) -----------------------------------------

@pytest.mark.parametrize("length", [b"9" * 60_000, b"\xb2", b"1\xb2"])
def test_a_content_length_that_is_no_number_is_a_clean_400(app, length, caplog):
    """60,000 digits (past Python's int() digit limit) or a superscript two (which
    str.isdigit() accepts and int() does not): 400, the connection closed, no traceback."""
    with caplog.at_level(logging.DEBUG):
        answer = raw_exchange(app, b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Length: "
                              + length + b"\r\n\r\n")  # returns once the server closes
    head, _, body = answer.partition(b"\r\n\r\n")
    assert re.match(rb"HTTP/1\.[01] 400", head), head
    assert "Content-Length" in json.loads(body)["error"]
    assert len(body) < 300  # the header is not echoed back
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.ERROR]


def test_answers_name_no_library_version(app):
    for method, path, body in (("GET", "/", None), ("POST", "/api/predict", b"x")):
        _, response, _ = call(app, method, path, body)
        assert response.getheader("Server") == "agegender-web"
        assert response.getheader("X-Content-Type-Options") == "nosniff"
    answer = raw_exchange(app, b"GARBAGE\r\n\r\n")
    assert b"aiohttp" not in answer and b"Python/" not in answer


def test_a_trickling_backend_is_cut_at_the_timeout_and_frees_its_slot(canned_backend,
                                                                      make_photo):
    """The model server sends its headers, then a byte every 0.3 s: the photo gets 504 at
    --timeout, and the prediction slot it held is free for the next photo."""
    trickler = canned_backend(b'{"predictions": []}' + b" " * 200, trickle=0.3)
    photo = make_photo()
    with WebApp(trickler.address, port=0, timeout=1.0, max_concurrent_predictions=1) as web_app:
        for attempt in (1, 2):
            start = time.monotonic()
            status, _, body = call(web_app, "POST", "/api/predict", photo)
            assert status == 504 and "did not answer within 1 s" in body["error"], body
            assert time.monotonic() - start < 4
            assert trickler.accepted == attempt  # the second reached it: the slot was free


@pytest.mark.parametrize("answer, words", [
    (b"[" * 10**6, "nested deeper than"),
    (b'{"predictions": [{"num_faces": ' + b"[" * 5000 + b"]" * 5000 + b"}]}",
     "nested deeper than"),
])
def test_a_backend_answering_absurdly_nested_json_is_a_502(canned_backend, make_photo, answer,
                                                           words):
    with WebApp(canned_backend(answer).address, port=0, timeout=5) as web_app:
        status, _, body = call(web_app, "POST", "/api/predict", make_photo())
    assert status == 502 and words in body["error"], body


def test_thirty_simultaneous_uploads_are_all_answered(app, make_photo):
    """30 clients connect and upload at the same instant: each gets an answer (its faces,
    or 503 busy), none a reset (the listen backlog is not 5)."""
    photo = make_photo(**TWO_FACES)
    barrier = threading.Barrier(30)
    results = [None] * 30

    def upload(i):
        try:
            barrier.wait(10)
            results[i] = call(app, "POST", "/api/predict", photo, timeout=60)[0]
        except Exception as e:  # a reset would land here
            results[i] = repr(e)

    threads = [threading.Thread(target=upload, args=(i,)) for i in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(90)
    assert all(r in (200, 503) for r in results), results
    assert results.count(200) >= 2


def test_upload_bytes_held_at_once_are_bounded(make_photo):
    """A photo waiting on a silent model server holds its bytes; a second that does not
    fit the budget gets 503 at once; when the first is answered, its bytes are given back."""
    silent = SilentBackend()
    photo = make_photo(size=(600, 400))
    try:
        with WebApp(f"127.0.0.1:{silent.port}", port=0, timeout=1.5,
                    max_inflight_request_bytes=len(photo) + 100) as web_app:
            first = {}
            thread = threading.Thread(target=lambda: first.update(
                status=call(web_app, "POST", "/api/predict", photo)[0]))
            thread.start()
            deadline = time.monotonic() + 5
            while not silent.accepted and time.monotonic() < deadline:
                time.sleep(0.01)
            status, _, body = call(web_app, "POST", "/api/predict", photo)
            assert status == 503 and "bytes of uploads" in body["error"], body
            thread.join(10)
            assert first["status"] == 504
            assert web_app.uploads.used == 0
    finally:
        silent.close()


def test_a_jpeg_costing_minutes_to_decode_never_reaches_the_model_server(hostile_files):
    """A progressive JPEG whose last scan is repeated 5,000 times: refused by the page from
    its header (agegender.image_header's scan limit), before the model server sees it."""
    silent = SilentBackend()
    try:
        with WebApp(f"127.0.0.1:{silent.port}", port=0, timeout=5) as web_app:
            status, _, body = call(web_app, "POST", "/api/predict",
                                   hostile_files.jpeg_scan_bomb(512, repeats=5000))
        assert status == 413 and "scans" in body["error"], body
        assert not silent.accepted
    finally:
        silent.close()


def test_the_largest_default_upload_fits_the_model_servers_default_limit():
    """A photo is forwarded as base64 in JSON: at the page's default limit, the request
    still fits the model server's (else the server, not the page, would refuse it)."""
    from agegender import serving_contract as contract
    from web import app as app_lib, photo_contract

    largest = app_lib.DEFAULT_MAX_REQUEST_BYTES
    assert len(photo_contract.request_bytes(b"\xff" * largest)) <= \
        contract.DEFAULT_MAX_REQUEST_BYTES
    assert len(photo_contract.request_bytes(b"\xff" * (largest + 1024))) > \
        contract.DEFAULT_MAX_REQUEST_BYTES  # and not far below it


def test_photos_larger_than_the_page_sends_leave_a_slot_for_its_own(make_photo):
    """Two photos over max_side^2 pixels (the page never sends those; each costs the model
    server far more) cannot take both prediction slots: the second waits and gets 503,
    and a photo of the page's size still reaches the model server."""
    silent = SilentBackend()
    large, small = make_photo(size=(400, 300)), make_photo(size=(90, 90))
    try:
        with WebApp(f"127.0.0.1:{silent.port}", port=0, timeout=2.0, max_side=100,
                    max_concurrent_predictions=2) as web_app:
            first = {}
            thread = threading.Thread(target=lambda: first.update(
                status=call(web_app, "POST", "/api/predict", large)[0]))
            thread.start()
            deadline = time.monotonic() + 5
            while not silent.accepted and time.monotonic() < deadline:
                time.sleep(0.01)
            status, _, body = call(web_app, "POST", "/api/predict", large)
            assert status == 503 and "larger than 100x100" in body["error"], body
            assert len(silent.accepted) == 1
            status, _, body = call(web_app, "POST", "/api/predict", small)
            assert status == 504, body  # it reached the (silent) model server
            assert len(silent.accepted) == 2
            thread.join(10)
            assert first["status"] == 504
    finally:
        silent.close()


@pytest.mark.slow
def test_simultaneous_large_uploads_stay_within_a_memory_limit(make_photo):
    """24 uploads of 11.5 MB at once to a page whose model server never answers: the
    upload-bytes budget (64 MiB) holds a few, the rest get 503; the page, run under
    RLIMIT_DATA = 450 MB (24 bodies alone would be 277 MB, plus their JSON copies), keeps
    serving and none gets a 500."""
    from serving import server_process

    silent = SilentBackend()
    port = free_port()
    body = make_photo(size=(64, 64)) + bytes(11 << 20)  # a JPEG, then padding past EOI
    page = server_process.ChildProcess(
        [sys.executable, "-c", server_process._LIMITED, str(450 << 20), "-m", "web.app",
         f"--server=127.0.0.1:{silent.port}", f"--port={port}", "--timeout=6"],
        "page: ", name="the page").start(timeout=60)
    statuses = []
    try:
        def upload():
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            try:
                conn.request("POST", "/api/predict", body=body)
                statuses.append(conn.getresponse().status)
            except (OSError, http.client.HTTPException) as e:  # a refused upload still sending
                statuses.append(type(e).__name__)
            finally:
                conn.close()

        threads = [threading.Thread(target=upload) for _ in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(90)
        assert page.alive(), page.output()
        assert 500 not in statuses and statuses.count(504) >= 2, statuses
        assert statuses.count(503) >= 10, statuses
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/api/config")
        assert conn.getresponse().status == 200
        conn.close()
        assert page.memory()["VmHWM"] < 450 << 10  # kB
    finally:
        page.stop()
        silent.close()
