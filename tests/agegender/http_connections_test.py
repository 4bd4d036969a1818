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


class _Content:
    """`request.content` of aiohttp: read(n) -> up to n bytes, b"" at the end; `delay`
    seconds before each chunk."""

    def __init__(self, data, delay=0.0):
        self._data, self._delay = data, delay
        self.sizes = []

    async def read(self, n):
        import asyncio

        await asyncio.sleep(self._delay)
        chunk, self._data = self._data[:n], self._data[n:]
        self.sizes.append(n)
        return chunk


def _read(content, seconds, keep):
    import asyncio
    import types

    return asyncio.run(http_connections.read_within(types.SimpleNamespace(content=content),
                                                    seconds, 4, keep))


def test_read_within_hands_every_chunk_over_and_stops_when_asked():
    got = []
    assert _read(_Content(b"0123456789"), 5, got.append) is None
    assert got == [b"0123", b"4567", b"89"]
    got.clear()
    content = _Content(b"0123456789")
    assert _read(content, 5, lambda c: got.append(c) or ("stop" if len(got) == 2 else None)) \
        == "stop"
    assert got == [b"0123", b"4567"] and len(content.sizes) == 2  # the rest is not read


def test_read_within_times_out_on_a_slow_body():
    with pytest.raises(TimeoutError):
        _read(_Content(b"0123456789", delay=0.2), 0.3, lambda c: None)


def test_start_loop_thread_waits_for_the_start_and_names_a_failed_one():
    import threading

    started = threading.Event()
    thread = http_connections.start_loop_thread(started.set, "loop", started, lambda: True,
                                                "the server")
    assert started.is_set() and thread.name == "loop" and thread.daemon
    failed = threading.Event()
    with pytest.raises(RuntimeError, match="the page's server did not start"):
        http_connections.start_loop_thread(failed.set, "loop", failed, lambda: False,
                                           "the page's server")
