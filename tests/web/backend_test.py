"""web.backend: the --backend address and the model server's refusals as the page's statuses."""
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
    (500, "boom", 502, "answered HTTP 500: boom"),
])
def test_refusals(status, message, expected_status, words):
    err = backend.RestBackend("localhost:8501")._refusal(status, {"error": message})
    assert err.status == expected_status
    assert words in err.message
