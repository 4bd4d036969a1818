"""web.backend: the --server address, the model server's answers read as the page's faces,
and its refusals as the page's statuses."""
import asyncio
import json
import math
import time

import pytest

from web import backend


@pytest.mark.parametrize("text, expected", [
    ("localhost:8501", ("localhost", 8501)),
    ("http://127.0.0.1:8501/", ("127.0.0.1", 8501)),
    ("[::1]:8501", ("::1", 8501)),
    (" serving.internal:80 ", ("serving.internal", 80)),
    ("http://[::1]:8501", ("::1", 8501)),
])
def test_parse_address(text, expected):
    assert backend.parse_address(text) == expected


@pytest.mark.parametrize("text", ["localhost", "localhost:http", ":8501", "localhost:0",
                                  "localhost:70000", "https://localhost:8501",
                                  "http://localhost:8501/v1/models"])
def test_bad_addresses_are_refused(text):
    with pytest.raises(ValueError):
        backend.parse_address(text)


def test_a_bad_address_names_the_option():
    with pytest.raises(ValueError, match=r"--server must be host:port.*'localhost'"):
        backend.parse_address("localhost")


# --- answers read by the one reader (agegender.photo_answers), as the page shows them ----

def answer(**outputs):
    return {"predictions": [outputs]}


PADDED = dict(
    num_faces=1,
    boxes=[[10, 20, 110, 140], [0, 0, 5, 5]],
    landmarks=[[[1, 2]] * 5, [[0, 0]] * 5],
    face_scores=[0.98, 0.0],
    age=[34.4, 99.0],
    age_std=[5.2, 1.0],
    age_interval_50=[[31, 38], [0, 0]],
    age_interval_80=[[28, 41], [0, 0]],
    gender=["F", "M"],
    gender_probability=[[0.09, 0.91], [0.5, 0.5]],
    age_distribution=[[0.5, 0.5], [1.0, 0.0]],
    key=[""],
)


def test_padding_beyond_num_faces_is_dropped_and_only_the_pages_fields_are_sent():
    (face,) = backend.page_faces(answer(**PADDED))
    assert face == {"box": [10.0, 20.0, 110.0, 140.0], "age": 34.4, "score": 0.98,
                    "landmarks": [[1.0, 2.0]] * 5, "age_std": 5.2,
                    "age_interval_80": [28.0, 41.0], "gender": "F", "gender_probability": 0.91}
    json.dumps(face, allow_nan=False)  # what the page's server sends must be plain JSON


def test_columnar_answers_read_the_same():
    columnar = {"outputs": {name: [value] for name, value in PADDED.items()}}
    assert backend.page_faces(columnar) == backend.page_faces(answer(**PADDED))


def test_male_probability_is_the_first_column():
    out = backend.page_faces(answer(**{**PADDED, "gender": ["M", "M"]}))
    assert out[0]["gender"] == "M" and out[0]["gender_probability"] == pytest.approx(0.09)


def test_zero_faces_is_an_answer():
    assert backend.page_faces(answer(**{**PADDED, "num_faces": 0})) == []


def test_regression_model_without_spread_or_gender():
    minimal = {k: PADDED[k] for k in ("num_faces", "boxes", "age", "key")}
    (face,) = backend.page_faces(answer(**minimal))
    assert face == {"box": [10.0, 20.0, 110.0, 140.0], "age": 34.4}


def test_non_finite_optional_numbers_are_left_out():
    (face,) = backend.page_faces(answer(**{**PADDED, "age_std": [math.nan, 1.0]}))
    assert "age_std" not in face and face["age"] == pytest.approx(34.4)


@pytest.mark.parametrize("payload, words", [
    ({"outputs": {}}, "no 'num_faces' output"),
    ({"predictions": [PADDED, PADDED]}, "2 photos in it"),
    ({"predictions": []}, "0 photos in it"),
    (answer(**{**PADDED, "num_faces": -1}), "num_faces"),
    (answer(**{**PADDED, "num_faces": "2"}), "num_faces"),
    (answer(**{**PADDED, "num_faces": 3}), "at least num_faces=3"),
    (answer(**{k: v for k, v in PADDED.items() if k != "boxes"}), "boxes"),
    (answer(**{**PADDED, "boxes": [[1, 2, 3], [0, 0, 0]]}), "boxes"),
    (answer(**{**PADDED, "age": ["old", 1]}), "age"),
    (answer(**{**PADDED, "age": [math.inf, 1]}), "age"),
    (answer(**{**PADDED, "gender": ["X", "M"]}), "gender"),
    ([1, 2], "neither an 'outputs' object nor a 'predictions' list"),
])
def test_malformed_answers_are_a_502_with_what_is_wrong(payload, words):
    with pytest.raises(backend.BackendError) as err:
        backend.page_faces(payload)
    assert err.value.status == 502
    assert err.value.message.startswith(
        "the model server's answer is not a predict_photo answer: "), err.value.message
    assert words in err.value.message, err.value.message


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
    assert ask(server.address) == [{"box": [1.0, 2.0, 3.0, 4.0], "age": 30.5}]


def test_an_answer_that_is_not_predict_photos_is_a_502(canned_backend):
    server = canned_backend(json.dumps({"predictions": [[0.1, 0.9]]}).encode())
    with pytest.raises(backend.BackendError) as err:
        ask(server.address)
    assert err.value.status == 502 and "not a predict_photo answer" in err.value.message


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
