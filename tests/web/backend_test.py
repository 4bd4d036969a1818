"""web.backend: the --backend address and the model server's refusals as the page's statuses."""
import asyncio
import json
import time

import pytest

from web import backend


@pytest.mark.parametrize("text, expected", [
    ("localhost:8501", ("localhost", 8501)),
    ("http://127.0.0.1:8501/", ("127.0.0.1", 8501)),
    ("[::1]:8501", ("::1", 8501)),
    (" serving.internal:80 ", ("serving.internal", 80)),
])
def test_parse_address(text, expected):
    assert backend.parse_address(text) == expected


@pytest.mark.parametrize("text", ["localhost", "localhost:http", ":8501", "localhost:0",
                                  "localhost:70000", "https://localhost:8501",
                                  "http://localhost:8501/v1/models"])
def test_bad_addresses_are_refused(text):
    with pytest.raises(ValueError):
        backend.parse_address(text)


@pytest.mark.parametrize("status, message, expected_status, words", [
    (400, "Invalid JPEG data", 400, "refused the photo: Invalid JPEG data"),
    (413, "request body of 9 bytes exceeds", 413, "too large for the model server"),
    (404, "Servable not found for request: Latest(age)", 502, "no model 'age'"),
    (404, 'Serving signature name: "predict_photo" not found in signature def', 502,
     "has no 'predict_photo' signature"),
    (400, 'Serving signature name: "predict_photo" not found in signature def', 502,
     "has no 'predict_photo' signature"),
    (503, "the server has 256 open connections", 503, "unavailable"),
    (429, "over the budget of pixels in flight", 503, "model server is busy: over the budget"),
    (500, "boom", 502, "answered HTTP 500: boom"),
])
def test_refusals(status, message, expected_status, words):
    err = backend.RestBackend("localhost:8501")._refusal(status, {"error": message})
    assert err.status == expected_status
    assert words in err.message


# --- what the model server answers, bounded --------------------------------------------

def ask(address, timeout=2.0):
    """predict_photo on a backend at `address` -> BackendError raised (or the faces)."""
    return asyncio.run(backend.RestBackend(address, timeout=timeout).predict_photo(b"photo"))


def test_a_normal_answer_is_read(canned_backend):
    answer = {"predictions": [{"num_faces": 1, "boxes": [[1, 2, 3, 4]], "age": [30.5]}]}
    server = canned_backend(json.dumps(answer).encode())
    assert ask(server.address) == [{"box": [1, 2, 3, 4], "age": 30.5}]


def test_an_answer_trickled_in_is_cut_at_the_timeout(canned_backend):
    """Headers at once, then one byte every 0.3 s: the deadline covers the whole answer,
    not each read (the page used to wait for every byte)."""
    server = canned_backend(b'{"predictions": []}' + b" " * 200, trickle=0.3)
    start = time.monotonic()
    with pytest.raises(backend.BackendError) as err:
        ask(server.address, timeout=1.0)
    assert err.value.status == 504 and "did not answer within 1 s" in err.value.message
    assert time.monotonic() - start < 4  # not 60 s of trickle


@pytest.mark.parametrize("body, words", [
    (b"[" * 10**6, "nested deeper than"),  # CPython's parser gives up at ~1000 levels
    (b"[" * 40 + b"]" * 40, "nested deeper than 32"),  # parses, then held to the bound
    (b" " * (backend.MAX_RESPONSE_BYTES + 10), "over 4194304 bytes"),
    (b'{"predictions": [', "without usable JSON"),
])
def test_hostile_answers_are_a_502(canned_backend, body, words):
    with pytest.raises(backend.BackendError) as err:
        ask(canned_backend(body).address)
    assert err.value.status == 502 and words in err.value.message, err.value.message
    assert len(err.value.message) < 400  # one line, not the answer echoed


def test_a_compressed_answer_is_refused_unread(canned_backend):
    import gzip

    bomb = gzip.compress(b" " * (16 << 20))  # 16 MB of spaces in ~16 KB
    server = canned_backend(bomb, headers=b"Content-Encoding: gzip\r\n")
    with pytest.raises(backend.BackendError) as err:
        ask(server.address)
    assert err.value.status == 502 and "Content-Encoding 'gzip'" in err.value.message


def test_a_backend_that_hangs_up_is_a_502(canned_backend):
    # It promises 1000 bytes and closes after 10.
    server = canned_backend(b"x" * 10)
    server.answer = server.answer.replace(b"Content-Length: 10", b"Content-Length: 1000")
    with pytest.raises(backend.BackendError) as err:
        ask(server.address)
    assert err.value.status == 502 and "broke off its answer" in err.value.message


@pytest.mark.parametrize("depth, ok", [(32, True), (33, False)])
def test_read_json_depth_bound(depth, ok):
    text = "[" * depth + "]" * depth
    if ok:
        backend.read_json(text.encode())
    else:
        with pytest.raises(ValueError, match="nested deeper than 32"):
            backend.read_json(text.encode())


def test_read_json_brackets_in_strings_are_text():
    value = {"error": "[[[[ shape [N, 4] ]]" * 20, "x": [{"y": [1]}]}
    assert backend.read_json(json.dumps(value).encode()) == value
