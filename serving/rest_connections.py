"""The REST API's connections: aiohttp's HTTP protocol with the limits aiohttp lacks.

Owns how long a request may take to arrive, how many connections are open, and how
aiohttp's own refusals read (TF Serving's `{"error": ...}` JSON). aiohttp parses HTTP (its C
parser: request line and each header bounded by `max_line_size` / `max_field_size`), keeps
connections alive, answers pipelined requests in order and closes idle keep-alive
connections (`keepalive_timeout`). It has no deadline for a request's headers or body and no
connection cap, so `Protocol` (its per-connection protocol) adds them:
- headers: complete within `header_timeout` seconds of the connection's accept, or of the
  first byte of a later request on it, else 408 and close. A slowloris (a header line every
  10 s) holds one connection for that long, no thread and no budget;
- body: within `header_timeout` + its size / `min_body_rate` seconds (`serving.rest_api`
  reads it under that deadline), else 408 and close;
- at most `max_connections` connections: a new one beyond that closes the longest-idle
  keep-alive connection, else the one that has been sending its headers longest; only when
  every connection has a request in progress does the newcomer get 503.
The header timer, the refusal at accept and the linger before a close are
`agegender.http_connections`' (shared with the web page's server).
It reads aiohttp internals of its protocol (`_request_in_progress`, `_messages`, `_close`,
`_force_close`: whether a request is being answered or queued, whether the connection is
closing), covered by tests/serving/rest_api_test.py.
"""
import dataclasses
import logging

from aiohttp import web
from aiohttp.http_exceptions import LineTooLong

from agegender import serving_contract as contract
from agegender.http_connections import BoundedConnection, raw_json_response
from serving import tensor_codec
from serving.errors import client_message

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEADER_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MIN_BODY_RATE = 256 << 10  # bytes/s: a 16 MB body may take 5 + 64 s
MAX_HEADER_BYTES = 64 << 10  # the request line, and each header line


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


def json_bytes(status, body):
    """A whole closing HTTP/1.1 answer as bytes, for answers written straight to a transport."""
    return raw_json_response(status, tensor_codec.dumps(body).encode("utf-8"))


def json_response(status, body, close=False):
    response = web.Response(status=status, body=tensor_codec.dumps(body).encode("utf-8"),
                            content_type="application/json")
    if status == 429:
        response.headers["Retry-After"] = "1"
    if close:
        response.force_close()
    return response


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


class Protocol(BoundedConnection):
    """aiohttp's per-connection protocol with a header deadline and the connection cap."""

    def __init__(self, manager, *, limits, **kwargs):
        super().__init__(manager, limits=limits, **kwargs)
        self.last_active = self._loop.time()  # accept, or the end of its last request
        self.sending_since = None  # first byte of a request whose headers are not in yet

    # -- connection cap ---------------------------------------------------------------
    def connection_made(self, transport):
        manager = self._manager
        if manager.open_count() >= self._limits.max_connections and \
                not manager.evict_one():
            # Every connection has a request in progress: 503 to the newcomer, now.
            self._refuse(transport, json_bytes(503, {
                "error": f"the server has {self._limits.max_connections} open connections, "
                         "its limit (--rest_api_max_connections), all busy; retry later"}))
            return
        super().connection_made(transport)
        self.sending_since = self._loop.time()  # a new connection has header_timeout to ask
        self._arm_header_timer(self.sending_since)

    def data_received(self, data):
        if self._refused:
            return
        if self.sending_since is None and not self._request_in_progress:
            self.sending_since = self._loop.time()
            self._arm_header_timer(self.sending_since)
        super().data_received(data)

    def eof_received(self):
        if self._refused and self.transport is not None:
            self.transport.close()

    # -- header deadline --------------------------------------------------------------
    def _process_keepalive(self):
        if self.sending_since is not None:  # not idle: the header deadline owns it
            self._keepalive_handle = None
            return
        super()._process_keepalive()

    def request_started(self):
        self._cancel_header_timer()
        self.sending_since = None

    def request_finished(self):
        self.last_active = self._loop.time()

    def _headers_late(self):
        transport = self.transport
        if self._request_in_progress or self._messages or transport is None or \
                transport.is_closing():
            return
        transport.write(json_bytes(408, {
            "error": f"the request headers did not arrive within "
                     f"{self._limits.header_timeout:g} s"}))
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
        return json_response(status, {"error": text}, close=True)


class Server(web.Server):
    """aiohttp's low-level server, making `Protocol`s and picking eviction victims."""

    def __init__(self, handler, limits, **kwargs):
        super().__init__(handler, **kwargs)
        self._limits = limits

    def __call__(self):
        return Protocol(self, loop=self._loop, limits=self._limits, **self._kwargs)

    def evict_one(self):
        """Closes the connection without a request in progress that has waited longest;
        idle keep-alive ones first (a client reconnects), then those sending headers.
        False if every connection has a request in progress."""
        candidates = [c for c in self._open()
                      if not c._request_in_progress and not c._messages]
        if not candidates:
            return False
        victim = min(candidates, key=lambda c: (c.sending_since is not None,
                                                c.sending_since or c.last_active))
        victim.force_close()
        return True

    def _open(self):
        # aiohttp forgets a closed connection only once its handler task ends; one closed or
        # closing (evicted, or answered 408 and lingering) counts no more.
        return [c for c in self.connections
                if c.transport is not None and not c._close and not c._force_close]

    def open_count(self):
        return len(self._open())

    def counts(self):
        """(open connections, connections with a request in progress)."""
        connections = self._open()
        return len(connections), sum(c._request_in_progress for c in connections)
