"""agegender.http_connections: the closing JSON answer both aiohttp servers write to a
transport themselves, and the module staying free of TensorFlow (the web page imports it).
The header deadline and the refusal at accept are exercised through both servers
(tests/web/connections_test.py, tests/serving/rest_api_test.py)."""
import http.client
import io
import json
import os
import subprocess
import sys

import pytest

from agegender import http_connections

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Socket:
    def __init__(self, data):
        self._file = io.BytesIO(data)

    def makefile(self, *args, **kwargs):
        return self._file


@pytest.mark.parametrize("status, extra", [(503, ()), (408, ("Retry-After: 1",))])
def test_raw_json_response_is_a_closing_http_answer_an_http_client_reads(status, extra):
    body = json.dumps({"error": "über the limit"}).encode("utf-8")
    raw = http_connections.raw_json_response(status, body, extra_headers=extra)
    response = http.client.HTTPResponse(_Socket(raw))
    response.begin()
    assert response.status == status
    assert response.getheader("Connection") == "close"
    assert response.getheader("Content-Type") == "application/json"
    for header in extra:
        name, value = header.split(": ")
        assert response.getheader(name) == value
    assert json.loads(response.read()) == {"error": "über the limit"}


def test_importing_it_loads_no_tensorflow():
    result = subprocess.run(
        [sys.executable, "-c",
         "import sys, agegender.http_connections; print('tensorflow' in sys.modules)"],
        cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT}, capture_output=True, text=True,
        timeout=60)
    assert result.stdout.strip() == "False", result.stderr
