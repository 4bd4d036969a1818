"""TF Serving's REST API on aiohttp's low-level HTTP server, in a thread of its own.

Owns the HTTP side of the API: routing of
  GET  /v1/models/{name}[/versions/{v}]                  model status
  GET  /v1/models/{name}[/versions/{v}]/metadata         signature defs
  POST /v1/models/{name}[/versions/{v}]:predict          row / columnar predict
request-size limits (413 from Content-Length, before the body is read), the body's
deadline, and TF Serving's `{"error": "..."}` bodies with the HTTP status of the failure's
code. Connections (header deadline, connection cap, aiohttp's own refusals) are
`rest_connections`'; request decoding is `tensor_codec`'s, request semantics and admission
`core`'s. Why aiohttp and not Starlette on uvicorn/hypercorn: docs/serving.md.

Connections cost a socket and a few KB on the event loop, never a thread. A request whose
body is in is decoded and run on a pool of `num_threads` threads (JSON parsing and the
model must not stall the loop).
"""
import asyncio
import concurrent.futures
import logging
import os
import re
import socket
import threading

from aiohttp import web
from google.protobuf import json_format

from agegender import serving_contract as contract
from agegender import http_connections
from agegender.http_connections import LINGER_SECONDS
from serving import core as core_lib
from serving import rest_connections, tensor_codec
from serving.errors import ServingError, client_message, invalid, not_found
# The REST flags' defaults, also read by serving.server.
from serving.rest_connections import (DEFAULT_HEADER_TIMEOUT, DEFAULT_IDLE_TIMEOUT,  # noqa: F401
                                      DEFAULT_MAX_CONNECTIONS, DEFAULT_MIN_BODY_RATE,
                                      MAX_HEADER_BYTES, RestLimits)
from serving.rest_connections import json_response as _json

log = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>/metadata|:predict|:classify|:regress)?/?$")
_DECIMAL = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²", int() does not


def _proto_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _error_response(err, method="", path=""):
    """A failed request's answer: TF Serving's {"error": ...} without TF's internals."""
    if not isinstance(err, ServingError):  # a bug: report it, keep serving
        log.error("%s %s failed", method, path, exc_info=err)
        err = ServingError("INTERNAL", str(err))
    elif err.http_status >= 500:
        log.warning("%s %s -> %s", method, path, err)
    return _json(err.http_status, {"error": client_message(err.message)})


def default_num_threads():
    """--rest_api_num_threads default: TF Serving's 4 per core, but at least 32.

    A request thread waits while its request is in a batch, so fewer threads than
    concurrent clients keeps batches small: with 8 (TF Serving's default on 2 cores), 16
    clients cost more server CPU per request than with 32 (benchmarks/serving.py,
    docs/serving.md)."""
    return max(32, 4 * (os.cpu_count() or 1))


class RestServer:
    """The REST endpoint: an event loop thread (aiohttp) and `num_threads` request threads."""

    def __init__(self, core, host="127.0.0.1", port=contract.DEFAULT_REST_PORT,
                 max_request_bytes=contract.DEFAULT_MAX_REQUEST_BYTES,
                 max_connections=DEFAULT_MAX_CONNECTIONS, num_threads=None,
                 header_timeout=DEFAULT_HEADER_TIMEOUT, idle_timeout=DEFAULT_IDLE_TIMEOUT,
                 min_body_rate=DEFAULT_MIN_BODY_RATE):
        self.core = core
        self.limits = RestLimits(
            max_request_bytes, max_connections,
            default_num_threads() if num_threads is None else num_threads,
            header_timeout, idle_timeout, min_body_rate)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family, backlog=1024)
        self.port = self._listener.getsockname()[1]
        self._pool = concurrent.futures.ThreadPoolExecutor(self.limits.num_threads,
                                                           thread_name_prefix="rest")
        self._loop = self._server = self._thread = None
        self._started = threading.Event()

    # -- lifecycle ------------------------------------------------------------------------
    def start(self):
        self._thread = http_connections.start_loop_thread(
            self._run, "rest-loop", self._started, lambda: self._server is not None,
            "the REST server")
        return self

    def _run(self):
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = rest_connections.Server(
                self._handle, self.limits, loop=loop, access_log=None,
                keepalive_timeout=self.limits.idle_timeout, lingering_time=LINGER_SECONDS,
                max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES,
                auto_decompress=False)  # a gzip body could inflate past --max_request_bytes
            self._aio = loop.run_until_complete(loop.create_server(self._server,
                                                                   sock=self._listener))
        except Exception:
            log.exception("the REST server failed to start")
            self._server = None
        finally:
            self._started.set()
        if self._server is not None:
            loop.run_forever()
        loop.close()

    def stop(self):
        loop = self._loop
        if loop is None or not loop.is_running():
            return
        future = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        try:
            future.result(timeout=10)
        except Exception as e:
            log.warning("REST shutdown: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self):
        self._aio.close()
        self._server.pre_shutdown()
        await self._server.shutdown(timeout=2)

    def connection_counts(self):
        """(open connections, connections with a request in progress), for tests."""
        return asyncio.run_coroutine_threadsafe(self._counts(), self._loop).result(5)

    async def _counts(self):
        return self._server.counts()

    # -- requests -------------------------------------------------------------------------
    async def _handle(self, request):
        protocol = request.protocol
        protocol.request_started()
        try:
            return await self._answer(request)
        except Exception as e:  # ServingError, or a bug (logged, answered 500)
            return _error_response(e, request.method, request.path)
        finally:
            protocol.request_finished()

    async def _answer(self, request):
        if request.method == "POST":
            length = self._content_length(request)  # refused before the body is read
            body = await self._read_body(request, length)
            if isinstance(body, web.Response):
                return body
        elif request.method not in ("GET", "HEAD"):
            raise ServingError("UNIMPLEMENTED", f"{request.method} is not supported")
        name, version, verb = _route(request.method, request.raw_path)
        if request.method != "POST":
            if verb is None:
                out = _proto_json(self.core.status_response(name, version))
            elif verb == "/metadata":
                out = _proto_json(core_lib.metadata_response(self.core.model(name, version)))
                out["metadata"]["signature_def"].pop("@type", None)  # as TF Serving prints it
            else:
                raise ServingError("UNIMPLEMENTED", f"{verb} needs POST")
            return _json(200, out)
        if verb != ":predict":
            if verb in (":classify", ":regress"):
                raise ServingError("UNIMPLEMENTED", f"{verb[1:]} is not supported by this "
                                   "server; use :predict")
            raise not_found(f"Malformed request: POST {request.path}")
        data = await asyncio.get_running_loop().run_in_executor(
            self._pool, self._predict, name, version, body)
        return web.Response(status=200, body=data, content_type="application/json")

    def _content_length(self, request):
        limit = self.limits.max_request_bytes
        length = request.headers.get("Content-Length")
        if length is None:
            if "chunked" not in request.headers.get("Transfer-Encoding", "").lower():
                raise invalid("a POST needs a Content-Length header")
            return None  # chunked: counted as it arrives
        length = length.strip()
        if not _DECIMAL.fullmatch(length):
            raise invalid(f"Content-Length {length[:40]!r} is not a decimal number")
        # Count digits before int(): a 60,000-digit number would exceed Python's int()
        # digit limit (4300), and any number of more digits than the limit's is larger.
        if len(length.lstrip("0")) > len(str(limit)) or int(length) > limit:
            request.protocol.close()  # the unread body makes the stream unusable
            raise ServingError("RESOURCE_EXHAUSTED", f"request body of {length[:40]} bytes "
                               f"exceeds the limit of {limit} bytes (--max_request_bytes)")
        return int(length)

    async def _read_body(self, request, length):
        """The body, or the 408/413 response that closes the connection."""
        limits = self.limits
        size = limits.max_request_bytes if length is None else length
        seconds = limits.header_timeout + size / limits.min_body_rate
        chunks, received = [], 0

        def keep(chunk):
            nonlocal received
            received += len(chunk)
            if received > limits.max_request_bytes:
                return _json(413, {"error": f"request body exceeds the limit of "
                                            f"{limits.max_request_bytes} bytes "
                                            "(--max_request_bytes)"}, close=True)
            chunks.append(chunk)
            return None

        try:
            too_large = await http_connections.read_within(request, seconds, 1 << 20, keep)
            if too_large is not None:
                return too_large
        except TimeoutError:
            what = "" if length is None else f"of {length} bytes "
            return _json(408, {"error": f"the request body {what}did not arrive within "
                                            f"{seconds:.0f} s (at least {limits.min_body_rate:g}"
                                            f" bytes/s after {limits.header_timeout:g} s)"},
                             close=True)
        return b"".join(chunks)

    def _predict(self, name, version, body):
        """On a request thread: admission, JSON decoding, the model, JSON encoding."""
        with self.core.admit(len(body)):
            data = tensor_codec.parse_json_body(body)
            del body
            model = self.core.model(name, version)
            signature_name = data.get("signature_name") or contract.SERVING_DEFAULT
            if not isinstance(signature_name, str):
                raise invalid("'signature_name' must be a string")
            sd = model.signature_def(signature_name)
            inputs, fmt = tensor_codec.predict_inputs_from_json(data, sd)
            del data  # the parsed JSON (~10x the body) is not kept while the model runs
            outputs = self.core.predict(model, signature_name, inputs)
            return tensor_codec.dumps(tensor_codec.predict_response_json(outputs, fmt)
                                      ).encode("utf-8")


def _route(method, raw_path):
    match = _ROUTE.match(raw_path.split("?", 1)[0])
    if not match:
        raise not_found(f"Malformed request: {method} {raw_path[:200]}")
    if match["label"] is not None:
        raise not_found("version labels are not supported by this server; use /versions/{N}")
    version = match["version"]
    if version is not None and not (_DECIMAL.fullmatch(version) and len(version) <= 18):
        raise invalid(f"version {version[:40]!r} is not an integer")
    return match["name"], (int(version) if version is not None else None), match["verb"]
