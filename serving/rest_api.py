"""TF Serving's REST API on aiohttp's low-level HTTP server, in a thread of its own.

Owns the HTTP side: routing of
  GET  /v1/models/{name}[/versions/{v}]                  model status
  GET  /v1/models/{name}[/versions/{v}]/metadata         signature defs
  POST /v1/models/{name}[/versions/{v}]:predict          row / columnar predict
request-size limits (413 from Content-Length, before the body is read), TF Serving's
`{"error": "..."}` bodies with the HTTP status of the failure's code (for aiohttp's own
parse errors too), and the time and connection limits that keep a slow or idle client from
taking the API away from others. Request decoding is in `tensor_codec`, request semantics
and admission in `core`. Why aiohttp and not Starlette on uvicorn/hypercorn: docs/serving.md.

aiohttp parses HTTP (its C parser: request line and each header bounded by
`max_line_size` / `max_field_size`), keeps connections alive, answers pipelined requests in
order and closes idle keep-alive connections (`keepalive_timeout`). It has no deadline for
a request's headers or body and no connection cap, so this module adds them to its
protocol (`_Protocol`):
- headers: complete within `header_timeout` seconds of the connection's accept, or of the
  first byte of a later request on it, else 408 and close. A slowloris (a header line every
  10 s) holds one connection for that long, no thread and no budget;
- body: within `header_timeout` + its size / `min_body_rate` seconds, else 408 and close;
- at most `max_connections` connections: a new one beyond that closes the longest-idle
  keep-alive connection, else the one that has been sending its headers longest; only when
  every connection has a request in progress does the newcomer get 503.
Connections cost a socket and a few KB on the event loop, never a thread. A request whose
body is in is decoded and run on a pool of `num_threads` threads (JSON parsing and the
model must not stall the loop).
"""
import asyncio
import concurrent.futures
import dataclasses
import logging
import os
import re
import socket
import threading

from aiohttp import web, web_protocol
from aiohttp.http_exceptions import LineTooLong
from google.protobuf import json_format

from agegender import serving_contract as contract
from serving import core as core_lib
from serving import tensor_codec
from serving.errors import ServingError, client_message, invalid, not_found

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEADER_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MIN_BODY_RATE = 256 << 10  # bytes/s: a 16 MB body may take 5 + 64 s
MAX_HEADER_BYTES = 64 << 10  # the request line, and each header line
LINGER_SECONDS = 2.0

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>/metadata|:predict|:classify|:regress)?/?$")
_DECIMAL = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²", int() does not


def _proto_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _json_bytes(status, body, close=False, extra_headers=()):
    """A whole HTTP/1.1 response as bytes, for answers written straight to a transport."""
    data = tensor_codec.dumps(body).encode("utf-8")
    from http import HTTPStatus

    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
            f"Content-Length: {len(data)}", *extra_headers]
    if close:
        head.append("Connection: close")
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + data


def _response(status, body, close=False):
    response = web.Response(status=status, body=tensor_codec.dumps(body).encode("utf-8"),
                            content_type="application/json")
    if status == 429:
        response.headers["Retry-After"] = "1"
    if close:
        response.force_close()
    return response


def _error_response(err, method="", path=""):
    """A failed request's answer: TF Serving's {"error": ...} without TF's internals."""
    if not isinstance(err, ServingError):  # a bug: report it, keep serving
        log.error("%s %s failed", method, path, exc_info=err)
        err = ServingError("INTERNAL", str(err))
    elif err.http_status >= 500:
        log.warning("%s %s -> %s", method, path, err)
    return _response(err.http_status, {"error": client_message(err.message)})


def _parse_error(exc, message):
    """aiohttp's parser refused the request: (status, client message)."""
    # The parser's first line says what is wrong; the next ones quote the request.
    text = str(message or exc or "bad request").strip().splitlines()[0].rstrip(":")[:200]
    if isinstance(exc, LineTooLong):
        return 431, f"the request line or a header exceeds {MAX_HEADER_BYTES} bytes"
    if "content-length" in text.lower():
        if "overflow" in text.lower():  # more digits than the parser reads: over any limit
            return 413, "the request's Content-Length exceeds the limit (--max_request_bytes)"
        return 400, f"the Content-Length header is not a decimal number ({text})"
    return 400, f"malformed HTTP request: {text}"


class _Protocol(web_protocol.RequestHandler):
    """aiohttp's per-connection protocol with a header deadline and the connection cap."""

    def __init__(self, manager, *, limits, **kwargs):
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._header_timer = None
        self._refused = False
        self.last_active = self._loop.time()  # accept, or the end of its last request
        self.sending_since = None  # first byte of a request whose headers are not in yet

    # -- connection cap ---------------------------------------------------------------
    def connection_made(self, transport):
        manager = self._manager
        if len(manager.connections) >= self._limits.max_connections and \
                not manager.evict_one():
            self._refuse(transport)
            return
        super().connection_made(transport)
        self.sending_since = self._loop.time()  # a new connection has header_timeout to ask
        self._arm()

    def _refuse(self, transport):
        """Every connection has a request in progress: 503 to the newcomer, now."""
        self._refused = True
        self._manager = None  # never registered, nothing for connection_lost to undo
        self.transport = transport
        transport.write(_json_bytes(503, {
            "error": f"the server has {self._limits.max_connections} open connections, its "
                     "limit (--rest_api_max_connections), all busy; retry later"}, close=True))
        self._linger(transport)

    def _linger(self, transport):
        """Stop writing, read (and drop) what the client still sends for a moment, then
        close: closing with unread input sends a reset that can destroy the answer."""
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        self._loop.call_later(LINGER_SECONDS, transport.close)

    def data_received(self, data):
        if self._refused:
            return
        if self.sending_since is None and not self._request_in_progress:
            self.sending_since = self._loop.time()
            self._arm()
        super().data_received(data)

    def eof_received(self):
        if self._refused and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc):
        self._disarm()
        if self._refused:
            self.transport = None
            return
        super().connection_lost(exc)

    # -- header deadline --------------------------------------------------------------
    def _arm(self):
        self._disarm()
        self._header_timer = self._loop.call_at(self.sending_since + self._limits.header_timeout,
                                                self._headers_late)

    def _disarm(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _process_keepalive(self):
        if self.sending_since is not None:  # not idle: the header deadline owns it
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    def request_started(self):
        self._disarm()
        self.sending_since = None

    def request_finished(self):
        self.last_active = self._loop.time()

    def _headers_late(self):
        self._header_timer = None
        transport = self.transport
        if self._request_in_progress or self._messages or transport is None or \
                transport.is_closing():
            return
        transport.write(_json_bytes(408, {
            "error": f"the request headers did not arrive within "
                     f"{self._limits.header_timeout:g} s"}, close=True))
        self.close()  # aiohttp stops waiting for a request on it and parses nothing more
        self._linger(transport)

    def handle_error(self, request, status=500, exc=None, message=None):
        """aiohttp's own refusals (unparsable requests, a failed handler) as TF Serving's
        JSON error bodies."""
        if status == 500:
            if exc is not None:
                log.error("REST request failed", exc_info=exc)
            text = "internal error" if exc is None else client_message(str(exc))
        elif status == 400 and exc is not None:
            status, text = _parse_error(exc, message)
        else:
            text = str(message or exc or status)
        if request.writer.output_size > 0:
            raise ConnectionError("the response has been sent in part already")
        return _response(status, {"error": text}, close=True)


class _Server(web.Server):
    """aiohttp's low-level server, making `_Protocol`s and picking eviction victims."""

    def __init__(self, handler, limits, **kwargs):
        super().__init__(handler, **kwargs)
        self._limits = limits

    def __call__(self):
        return _Protocol(self, loop=self._loop, limits=self._limits, **self._kwargs)

    def evict_one(self):
        """Closes the connection without a request in progress that has waited longest;
        idle keep-alive ones first (a client reconnects), then those sending headers.
        False if every connection has a request in progress."""
        candidates = [c for c in self.connections
                      if not c._request_in_progress and not c._messages]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: (c.sending_since is not None,
                                                c.sending_since or c.last_active))
        victim.force_close()
        return True

    def counts(self):
        """(open connections, connections with a request in progress)."""
        connections = self.connections
        return len(connections), sum(c._request_in_progress for c in connections)


def default_num_threads():
    """--rest_api_num_threads default: TF Serving's 4 per core, but at least 32.

    A request thread waits while its request is in a batch, so fewer threads than
    concurrent clients keeps batches small: with 8 (TF Serving's default on 2 cores), 16
    clients cost more server CPU per request than with 32 (benchmarks/serving.py,
    BUILD_NOTES.md)."""
    return max(32, 4 * (os.cpu_count() or 1))


@dataclasses.dataclass(frozen=True)
class RestLimits:
    """What one REST endpoint allows its clients (the server's --rest_api_* flags)."""
    max_request_bytes: int = contract.DEFAULT_MAX_REQUEST_BYTES
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    num_threads: int = 32
    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    idle_timeout: float = DEFAULT_IDLE_TIMEOUT
    min_body_rate: float = DEFAULT_MIN_BODY_RATE

    def __post_init__(self):
        if self.max_connections < 1 or self.num_threads < 1:
            raise ValueError("max_connections and num_threads must be >= 1")
        if self.header_timeout <= 0 or self.idle_timeout <= 0 or self.min_body_rate <= 0:
            raise ValueError("timeouts and the minimum body rate must be > 0")


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
        self._thread = threading.Thread(target=self._run, name="rest-loop", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._server is None:
            raise RuntimeError("the REST server did not start (see the log)")
        return self

    def _run(self):
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._server = _Server(
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
            return _response(200, out)
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
        try:
            async with asyncio.timeout(seconds):
                while True:
                    chunk = await request.content.read(1 << 20)
                    if not chunk:
                        break
                    received += len(chunk)
                    if received > limits.max_request_bytes:
                        return _response(413, {"error": f"request body exceeds the limit of "
                                                        f"{limits.max_request_bytes} bytes "
                                                        "(--max_request_bytes)"}, close=True)
                    chunks.append(chunk)
        except TimeoutError:
            what = "" if length is None else f"of {length} bytes "
            return _response(408, {"error": f"the request body {what}did not arrive within "
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
