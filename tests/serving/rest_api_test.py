"""REST API over a real socket: TF Serving's documented request/response shapes and errors."""
import base64
import http.client
import json

import numpy as np
import pytest

from serving.client import predict_rest, ClientError

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


def test_metadata(rest):
    status, body = rest.request("GET", "/v1/models/age/metadata")
    assert status == 200
    assert body["model_spec"] == {"name": "age", "signature_name": "", "version": "1"}
    sigs = body["metadata"]["signature_def"]["signature_def"]
    assert set(sigs) == {"serving_default", "predict_images", "serve_tf_examples", "predict_photo"}
    default = sigs["serving_default"]
    assert set(default["inputs"]) == {"image_bytes", "key"}
    assert default["inputs"]["image_bytes"]["dtype"] == "DT_STRING"
    assert {"age", "age_distribution", "gender", "gender_probability", "key"} == set(
        default["outputs"])
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
    assert set(outputs) == {"age", "age_distribution", "gender", "gender_probability", "key"}
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


def test_connections_beyond_the_cap_get_503_and_the_others_keep_working(server):
    import time

    from serving.rest_api import RestServer

    capped = RestServer(server.core, port=0, max_connections=2).start()

    def status(conn):
        conn.request("GET", "/v1/models/age")
        response = conn.getresponse()
        return response.status, json.loads(response.read())

    try:
        first, second = (http.client.HTTPConnection("127.0.0.1", capped.port, timeout=10)
                         for _ in range(2))
        assert status(first)[0] == 200 and status(second)[0] == 200  # both kept alive
        third = http.client.HTTPConnection("127.0.0.1", capped.port, timeout=10)
        code, body = status(third)
        assert code == 503 and "limit" in body["error"]
        third.close()
        assert status(first)[0] == 200  # the connections already open are unaffected
        second.close()  # frees a slot once its thread sees the close
        deadline = time.monotonic() + 10
        while True:
            fourth = http.client.HTTPConnection("127.0.0.1", capped.port, timeout=10)
            code, _ = status(fourth)
            fourth.close()
            if code == 200 or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert code == 200
        first.close()
    finally:
        capped.stop()
