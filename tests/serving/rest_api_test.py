"""REST API over a real socket: TF Serving's documented request/response shapes and errors."""
import base64
import http.client
import json
import re
import socket
import threading
import time

import numpy as np
import pytest

from serving.client import ClientError, RestClient, predict_rest

TOL = 1e-4


def b64(data):
    return {"b64": base64.b64encode(data).decode("ascii")}


def test_model_status_like_the_docs(rest):
    status, body = rest.request("GET", "/v1/models/age")
    assert status == 200
    assert body == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}]}
    assert rest.request("GET", "/v1/models/age/versions/1")[0] == 200
    status, body = rest.request("GET", "/v1/models/age/versions/9")
    assert status == 404 and "error" in body


# The outputs of the test model's serving_default (agegender.heads for a classification
# head with gender, plus the echoed key).
SERVING_OUTPUTS = {"age", "age_distribution", "age_std", "age_interval_50", "age_interval_80",
                   "gender", "gender_probability", "key"}


def test_metadata(rest):
    status, body = rest.request("GET", "/v1/models/age/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "age", "signature_name": "", "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "predict_images", "serve_tf_examples", "predict_photo"}
    default = sigs["serving_default"]
    assert set(default["inputs"]) == {"image_bytes", "key"}
    assert default["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert set(default["outputs"]) == SERVING_OUTPUTS
    assert default["method_name"] == "tensorflow/serving/predict"
    assert rest.request("GET", "/v1/models/age/versions/1/metadata")[0] == 200


def test_predict_row_format_named_instances(rest, images, reference):
    body = {"instances": [{"image_bytes": b64(img), "key": f"img{i}"}
                          for i, img in enumerate(images)]}
    status, out = rest.request("POST", "/v1/models/age:predict", body)
    assert status == 200, out
    preds = out["predictions"]
    ref = reference(images)
    assert [p["key"] for p in preds] == [f"img{i}" for i in range(len(images))]
    np.testing.assert_allclose([p["age"] for p in preds], ref["age"], atol=TOL)
    np.testing.assert_allclose([p["age_distribution"] for p in preds], ref["age_distribution"],
                               atol=TOL)
    assert [p["gender"] for p in preds] == [g.decode() for g in ref["gender"]]
    assert all(len(p["gender_probability"]) == 2 for p in preds)


def test_predict_row_format_bare_b64_values_and_signature_name(rest, images, reference):
    body = {"signature_name": "serving_default", "instances": [b64(img) for img in images[:2]]}
    status, out = rest.request("POST", "/v1/models/age/versions/1:predict", body)
    assert status == 200, out
    np.testing.assert_allclose([p["age"] for p in out["predictions"]],
                               reference(images[:2])["age"], atol=TOL)
    assert [p["key"] for p in out["predictions"]] == ["", ""]


def test_predict_columnar_format(rest, images, reference):
    body = {"inputs": {"image_bytes": [b64(img) for img in images], "key": ["a", "b", "c", "d"][
        :len(images)]}}
    status, out = rest.request("POST", "/v1/models/age:predict", body)
    assert status == 200, out
    outputs = out["outputs"]
    assert set(outputs) == SERVING_OUTPUTS
    np.testing.assert_allclose(outputs["age"], reference(images)["age"], atol=TOL)
    assert np.asarray(outputs["age_distribution"]).shape == (len(images), 101)


def test_predict_images_signature_with_nested_lists(rest, images, reference):
    from agegender import preprocessing
    import tensorflow as tf

    pixels = preprocessing.model_input_batch(tf.constant(images[:2]), 32).numpy()
    body = {"signature_name": "predict_images", "instances": pixels.tolist()}
    status, out = rest.request("POST", "/v1/models/age:predict", body)
    assert status == 200, out
    np.testing.assert_allclose([p["age"] for p in out["predictions"]],
                               reference(images[:2])["age"], atol=TOL)
    status, out = rest.request("POST", "/v1/models/age:predict",
                               {"signature_name": "predict_images", "inputs": pixels.tolist()})
    assert status == 200 and len(out["outputs"]["age"]) == 2


def test_serve_tf_examples_signature(rest, images, reference):
    from agegender import schema

    examples = [schema.make_example(encoded_jpeg=img, height=200, width=200, source_id="x",
                                    sha256="0", age=30, histogram=[0.0] * 101).SerializeToString()
                for img in images[:2]]
    status, out = rest.request("POST", "/v1/models/age:predict", {
        "signature_name": "serve_tf_examples", "instances": [b64(e) for e in examples]})
    assert status == 200, out
    np.testing.assert_allclose([p["age"] for p in out["predictions"]],
                               reference(images[:2])["age"], atol=TOL)


@pytest.mark.parametrize("body, status, fragment", [
    ({"instances": [{"image_bytes": {"b64": "not base64!!"}}]}, 400, "base64"),
    ({"instances": [{"image_bytes": b64(b"this is not an image")}]}, 400, "not a JPEG"),
    ({"instances": [{"image_bytes": b64(b"\xff\xd8\xff\xe0 truncated jpeg")}]}, 400, ""),
    ({"instances": [{"picture": b64(b"x")}]}, 400, "not in the signature"),
    ({"signature_name": "classify_faces", "instances": [b64(b"x")]}, 404, "classify_faces"),
    ({"instances": []}, 400, "empty"),
    ({"inputs": {"image_bytes": []}}, 400, "empty"),
    ({"instances": [b64(b"x")], "inputs": [b64(b"x")]}, 400, "exactly one"),
    ({"signature_name": "predict_images", "instances": [[1.0, 2.0]]}, 400, "shape"),
    ({"signature_name": "predict_images", "instances": [[[["a", "b", "c"]]]]}, 400, "float"),
    ({"instances": [{"key": "only a key"}]}, 400, "missing input"),
])
def test_bad_predict_requests_get_clear_4xx(rest, body, status, fragment):
    got, out = rest.request("POST", "/v1/models/age:predict", body)
    assert got == status, out
    assert set(out) == {"error"} and fragment in out["error"]


def test_malformed_requests(server, rest, images):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=20)
    conn.request("POST", "/v1/models/age:predict", body=b"{not json",
                 headers={"Content-Type": "application/json"})
    response = conn.getresponse()
    assert response.status == 400 and "JSON" in json.loads(response.read())["error"]
    conn.close()
    assert rest.request("POST", "/v1/models/half:predict", {"instances": [1.0, 5.0]}) == (
        404, {"error": "Servable not found for request: Latest(half)"})
    assert rest.request("GET", "/v2/whatever")[0] == 404
    assert rest.request("POST", "/v1/models/age:regress", {"examples": []})[0] == 501
    # the server still answers everyone else
    assert len(predict_rest(f"127.0.0.1:{server.rest_port}", images[:1])) == 1


def test_oversized_body_is_rejected_before_reading(server, rest, images):
    conn = http.client.HTTPConnection("127.0.0.1", server.rest_port, timeout=20)
    conn.putrequest("POST", "/v1/models/age:predict")
    conn.putheader("Content-Type", "application/json")
    conn.putheader("Content-Length", str(10 ** 9))  # announced, never sent
    conn.endheaders()
    response = conn.getresponse()
    assert response.status == 413 and "exceeds" in json.loads(response.read())["error"]
    conn.close()
    big = {"instances": [b64(b"\xff\xd8\xff" + bytes(800_000))]}  # > 1 MiB once in base64
    try:
        status, out = rest.request("POST", "/v1/models/age:predict", big)
        assert status == 413
    except ClientError as e:  # the server may close before the client finished sending
        assert e.code == "UNAVAILABLE"
    rest.close()
    assert rest.request("GET", "/v1/models/age")[0] == 200


def test_client_errors_and_server_down(server, images):
    with pytest.raises(ClientError) as err:
        predict_rest(f"127.0.0.1:{server.rest_port}", [b"garbage"], timeout=10)
    assert err.value.code == 400 and "not a JPEG" in err.value.message
    with pytest.raises(ClientError) as err:
        predict_rest(f"127.0.0.1:{server.rest_port}", images[:1], model_name="nope")
    assert err.value.code == 404
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    with pytest.raises(ClientError) as err:
        predict_rest(f"127.0.0.1:{port}", images[:1], timeout=2)
    assert err.value.code == "UNAVAILABLE"



# -- hostile input ---------------------------------------------------------------------------

def _exchange(port, data, timeout=10):
    """Sends raw bytes on a new connection; returns all the server sends until it closes
    (raises socket.timeout if it does not within `timeout`)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        received = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return received
            received += chunk


def _status_and_body(raw):
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


def test_inputs_of_different_lengths_get_400_and_never_stop_the_batch_threads(server, images):
    # Two images and one key: a request no batch can be made of. It used to kill a batch
    # thread (the request hung until its timeout, 504); with every thread dead, the server
    # answered 504 to all while its status still said AVAILABLE.
    client = RestClient(f"127.0.0.1:{server.rest_port}", timeout=10)
    body = {"inputs": {"image_bytes": [b64(images[0]), b64(images[1])], "key": ["only one"]}}
    try:
        for _ in range(2 * len(server.batcher._workers) + 1):
            status, out = client.request("POST", "/v1/models/age:predict", body)
            assert status == 400, out
            assert "0th-dimension" in out["error"] and "'key' has 1" in out["error"]
        status, out = client.request("POST", "/v1/models/age:predict",
                                     {"instances": [{"image_bytes": b64(images[0])}]})
        assert status == 200, out
        assert client.status()["model_version_status"][0]["state"] == "AVAILABLE"
    finally:
        client.close()


def test_a_request_larger_than_max_batch_size_is_refused_like_tf_serving(server, images):
    body = {"instances": [{"image_bytes": b64(images[0])}] * 9}  # the fixture's max is 8
    client = RestClient(f"127.0.0.1:{server.rest_port}", timeout=10)
    try:
        status, out = client.request("POST", "/v1/models/age:predict", body)
    finally:
        client.close()
    assert status == 400
    assert out["error"].startswith("Task size 9 is larger than maximum input batch size 8")


def test_ten_thousand_tiny_instances_are_refused_within_bounded_memory(limited_server,
                                                                       tiny_png):
    body = {"instances": [{"image_bytes": b64(tiny_png)} for _ in range(10_000)]}  # ~1.3 MB
    client = RestClient(f"127.0.0.1:{limited_server.rest_port}", timeout=60)
    try:
        status, out = client.request("POST", "/v1/models/age:predict", body)
    finally:
        client.close()
    assert status == 400, out
    assert "Task size 10000 is larger than maximum input batch size 16" in out["error"]
    assert limited_server.alive(), limited_server.log()


def test_a_decompression_bomb_gets_a_clear_400_within_bounded_memory(limited_server, images,
                                                                    png_bomb):
    bomb = png_bomb + bytes(64_000 - len(png_bomb))  # 64 KB, as in the report: 20000x20000
    client = RestClient(f"127.0.0.1:{limited_server.rest_port}", timeout=60)
    try:
        status, out = client.request("POST", "/v1/models/age:predict", {
            "instances": [{"image_bytes": b64(images[0])}, {"image_bytes": b64(bomb)}]})
        assert status == 400, out
        assert "input 'image_bytes'[1]" in out["error"] and "20000x20000" in out["error"]
        assert "--max_image_pixels" in out["error"]
        # the server is alive, well within its memory limit, and answers
        status, out = client.request("POST", "/v1/models/age:predict",
                                     {"instances": [{"image_bytes": b64(images[0])}]})
        assert status == 200, out
    finally:
        client.close()
    assert limited_server.alive(), limited_server.log()


def test_max_image_pixels_is_the_servers_limit(server, rest, images):
    limit, server.core.max_image_pixels = server.core.max_image_pixels, 100
    try:
        status, out = rest.request("POST", "/v1/models/age:predict",
                                   {"instances": [{"image_bytes": b64(images[0])}]})
    finally:
        server.core.max_image_pixels = limit
    assert status == 400 and "limit of 100 pixels" in out["error"], out


def test_a_truncated_jpeg_says_which_input_and_why(rest, images):
    truncated = images[1][:len(images[1]) // 2]  # the header is whole, the scan data is not
    status, out = rest.request("POST", "/v1/models/age:predict", {
        "inputs": {"image_bytes": [b64(images[0]), b64(truncated)]}})
    assert status == 400, out
    error = out["error"]
    assert error.startswith("input 'image_bytes'[1]: "), error
    assert "JPEG" in error and "truncated or corrupt" in error
    assert "Graph execution error" not in error and "[[{{node" not in error


def test_deeply_nested_json_is_a_400(rest):
    deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    raw = _exchange(rest.port, b"POST /v1/models/age:predict HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: " + str(len(deep)).encode() + b"\r\nConnection: close"
                    b"\r\n\r\n" + deep)
    status, out = _status_and_body(raw)
    assert status == 400 and "nested too deeply" in out["error"], out
    # nesting that json accepts (900 levels) but no tensor has: also a 400
    status, out = rest.request("POST", "/v1/models/age:predict",
                               {"instances": json.loads("[" * 900 + '"x"' + "]" * 900)})
    assert status == 400, out


@pytest.mark.parametrize("length, status, fragment", [
    ("9" * 60_000, 413, "exceeds the limit"),  # more digits than int() reads
    ("\xb2", 400, "not a decimal number"),  # "²": str.isdigit() says yes, int() says no
    ("-5", 400, "not a decimal number"),
])
def test_content_length_that_is_no_usable_number(server, length, status, fragment):
    raw = _exchange(server.rest_port, b"POST /v1/models/age:predict HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: " + length.encode("latin-1") + b"\r\n\r\n{}")
    got, out = _status_and_body(raw)
    assert got == status and fragment in out["error"], out


def test_http_0_9_and_other_broken_request_lines_get_an_answer(server, rest):
    for line in (b"GET /\r\n", b"GARBAGE\r\n\r\n", b"GET / HTTP/9.1\r\n\r\n",
                 b"GET /v1/models/age/versions/" + b"1" * 60_000 + b" HTTP/1.1\r\n"
                 b"Connection: close\r\n\r\n"):
        raw = _exchange(server.rest_port, line)
        assert raw.startswith(b"HTTP/1."), (line[:40], raw[:200])
        status, out = _status_and_body(raw)
        assert 400 <= status < 506 and out["error"], (line[:40], raw[:200])
    assert rest.request("GET", "/v1/models/age")[0] == 200


def test_pipelined_requests_are_answered_in_order(server):
    get = b"GET /v1/models/age HTTP/1.1\r\nHost: x\r\n\r\n"
    raw = _exchange(server.rest_port, get + b"GET /v1/models/nope HTTP/1.1\r\nHost: x\r\n\r\n"
                    + get.replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n"))
    assert re.findall(rb"HTTP/1\.1 (\d{3}) ", raw) == [b"200", b"404", b"200"]


# -- slow and idle clients ---------------------------------------------------------------------

def test_idle_connections_do_not_lock_others_out(server, images):
    # More idle connections than --rest_api_max_connections (256): they used to make the
    # server answer 503 to everyone for as long as they stayed open.
    idle = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
            for _ in range(300)]
    idle[-1].sendall(b"GET /v1/models/age HTTP/1.1\r\n")  # and one that stops mid-headers
    try:
        out = predict_rest(f"127.0.0.1:{server.rest_port}", images[:1], timeout=10)
        assert len(out) == 1
        client = RestClient(f"127.0.0.1:{server.rest_port}", timeout=10)
        assert client.request("GET", "/v1/models/age")[0] == 200
        client.close()
    finally:
        for s in idle:
            s.close()


def test_idle_connections_take_no_thread(server):
    before = threading.active_count()
    idle = [socket.create_connection(("127.0.0.1", server.rest_port), timeout=10)
            for _ in range(100)]
    try:
        for s in idle[:50]:
            s.sendall(b"GET /v1/models/age HTTP/1.1\r\nHost")  # half a request
        time.sleep(0.5)
        assert threading.active_count() <= before + 2
    finally:
        for s in idle:
            s.close()


@pytest.fixture
def strict_rest(server):
    """A REST endpoint on the test server's core with short time limits and 2 threads."""
    from serving.rest_api import RestServer

    servers = []

    def make(**overrides):
        options = dict(header_timeout=1.0, idle_timeout=1.0, min_body_rate=100_000,
                       num_threads=2, max_connections=4)
        options.update(overrides)
        servers.append(RestServer(server.core, port=0, **options).start())
        return servers[-1]
    yield make
    for rest_server in servers:
        rest_server.stop()


def test_headers_sent_too_slowly_get_408(strict_rest):
    port = strict_rest().port
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(b"GET /v1/models/age HTTP/1.1\r\n")
        s.setblocking(False)
        received = b""
        for _ in range(30):  # one header byte every 0.2 s: each read alone would be in time
            time.sleep(0.2)
            try:
                received += s.recv(65536)
                break  # the answer, or the server closed
            except BlockingIOError:
                pass
            try:
                s.send(b"X")
            except OSError:
                pass
    assert received.startswith(b"HTTP/1.1 408"), received
    assert time.monotonic() - started < 4


def test_a_body_sent_too_slowly_gets_408(strict_rest):
    port = strict_rest().port
    started = time.monotonic()
    raw = _exchange(port, b"POST /v1/models/age:predict HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Length: 20000\r\n\r\n{\"instances\"")  # then nothing
    status, out = _status_and_body(raw)
    assert status == 408 and "did not arrive" in out["error"], out
    assert time.monotonic() - started < 5  # 1 s + 20000 / 100000 B/s, then a 408


def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(strict_rest):
    conn = http.client.HTTPConnection("127.0.0.1", strict_rest().port, timeout=10)
    conn.request("GET", "/v1/models/age")
    response = conn.getresponse()
    assert response.status == 200 and response.read() and not response.will_close
    conn.sock.settimeout(5)
    started = time.monotonic()
    assert conn.sock.recv(1) == b""  # the server closed it
    assert 0.5 < time.monotonic() - started < 4
    conn.close()


def test_connection_cap_closes_idle_ones_first_and_refuses_only_when_all_are_busy(strict_rest):
    rest_server = strict_rest(header_timeout=10.0, idle_timeout=30.0)
    port = rest_server.port

    def status(conn):
        conn.request("GET", "/v1/models/age")
        response = conn.getresponse()
        return response.status, json.loads(response.read())

    def wait_for(predicate):
        deadline = time.monotonic() + 10
        while not predicate() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert predicate()

    idle = [http.client.HTTPConnection("127.0.0.1", port, timeout=10) for _ in range(4)]
    assert [status(c)[0] for c in idle] == [200] * 4  # the cap (4), all kept alive
    newcomer = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    assert status(newcomer)[0] == 200  # an idle connection made room for it
    wait_for(lambda: rest_server.connection_counts() == (4, 0))  # four open, all idle
    # Four connections whose requests are in progress (bodies still coming): none can go.
    busy = []
    for i in range(4):
        busy.append(socket.create_connection(("127.0.0.1", port), timeout=10))
        busy[-1].sendall(b"POST /v1/models/age:predict HTTP/1.1\r\nHost: x\r\n"
                         b"Content-Length: 2\r\n\r\n")
        wait_for(lambda: rest_server.connection_counts()[1] == i + 1)  # awaiting their body
    raw = _exchange(port, b"GET /v1/models/age HTTP/1.1\r\nHost: x\r\n\r\n")
    code, out = _status_and_body(raw)
    assert code == 503 and "limit" in out["error"], out
    for s in busy:  # the bodies arrive ("{}"): each request is answered
        s.sendall(b"{}")
    for s in busy:
        assert s.recv(65536).startswith(b"HTTP/1.1 400")
        s.close()
    for c in idle + [newcomer]:
        c.close()


def test_slowloris_connections_hold_a_connection_each_never_the_service(strict_rest, images):
    """64 clients trickling header lines (the issue's attack, faster: a line every 0.3 s)
    against a cap of 32 connections: each is closed by the header deadline (408) or evicted
    for a newcomer, and an ordinary client is answered all along."""
    port = strict_rest(header_timeout=2.0, max_connections=32).port
    slow = []
    for _ in range(64):
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        s.sendall(b"POST /v1/models/age:predict HTTP/1.1\r\nHost: x\r\n")
        slow.append(s)
    answers, stop = [], threading.Event()

    def trickle():
        while not stop.is_set():
            for s in slow:
                try:
                    s.sendall(b"X-Slow: 1\r\n")
                except OSError:
                    pass
            time.sleep(0.3)

    trickler = threading.Thread(target=trickle)
    trickler.start()
    try:
        for _ in range(4):
            client = RestClient(f"127.0.0.1:{port}", timeout=10)
            answers.append(client.request("POST", "/v1/models/age:predict", {
                "instances": [{"image_bytes": b64(images[0])}]})[0])
            client.close()
            time.sleep(0.5)
    finally:
        stop.set()
        trickler.join(10)
    assert answers == [200] * 4
    for s in slow:  # each one is closed by now (a recv that times out fails the test)
        s.settimeout(5)
        received = b""
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                received += chunk
        except ConnectionResetError:  # evicted while its headers were still coming
            pass
        s.close()
        assert received == b"" or received.startswith(b"HTTP/1.1 408"), received[:100]
