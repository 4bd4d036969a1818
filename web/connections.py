"""The page's HTTP connections on aiohttp's low-level server, each bounded in time and count.

aiohttp parses HTTP (its C parser, request line and header lines bounded by
`max_line_size` / `max_field_size`), answers keep-alive and pipelined requests in order and
closes a connection idle for `keepalive_timeout` (from its accept, or its last answer). It
has no deadline for a request that is being sent slowly and no cap on connections, so the
protocol here (`Connection`) adds them:
- headers: complete within `header_timeout` seconds of the request's first byte (of the
  accept, for a new connection), else 408 and closed. A slowloris holds a socket that long,
  never a thread, and never the service;
- body: `read_body` reads it against a whole-request deadline (`header_timeout` + its
  size / `min_body_rate`, from the same first byte), a size cap, and a budget of upload bytes
  held by the whole server (`ByteBudget`: bytes actually received, so a client that declares
  16 MB and sends nothing holds none of it);
- at most `max_connections` open: a newcomer beyond that takes the place of the connection
  that has waited longest without a request in progress (idle keep-alive ones first, then
  those still sending headers), once it has had `EVICTION_GRACE` seconds; when there is
  none, the newcomer gets 503 at once.
`web.app` owns what is answered; this module owns how long and how many. The header timer,
the refusal at accept and the linger before a close are `agegender.http_connections`'
(shared with the model server's REST API).
"""
import dataclasses
import json
import logging
from http import HTTPStatus

from aiohttp import web

from agegender.http_connections import LINGER_SECONDS  # noqa: F401  (web.app's lingering_time)
from agegender.http_connections import BoundedConnection, raw_json_response, read_within

log = logging.getLogger(__name__)

# A connection that has just been accepted is given this long to send its request before a
# newcomer may take its place: a browser sends right after connecting.
EVICTION_GRACE = 1.0
MAX_HEADER_BYTES = 8190  # the request line, and each header line (aiohttp's defaults)


class HttpError(Exception):
    """An answer `{"error": message}` with `status`; `close` ends the connection after it."""

    def __init__(self, status, message, close=False):
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


# On every answer: no content sniffing, no caching, and no library versions told.
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store",
                  "Server": "agegender-web"}


def json_response(status, obj, close=False):
    response = web.Response(status=status, headers=COMMON_HEADERS,
                            content_type="application/json",
                            body=json.dumps(obj, allow_nan=False).encode("utf-8"))
    if close:
        response.force_close()
    return response


def raw_response(status, obj):
    """A whole HTTP/1.1 JSON answer as bytes, for a transport that aiohttp no longer writes."""
    return raw_json_response(status, json.dumps(obj).encode("utf-8"))


@dataclasses.dataclass(frozen=True)
class Limits:
    max_connections: int
    header_timeout: float
    idle_timeout: float
    min_body_rate: float  # bytes/s a body is given after header_timeout

    def __post_init__(self):
        for name in ("max_connections", "header_timeout", "idle_timeout", "min_body_rate"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be > 0, got {getattr(self, name)}")

    def request_seconds(self, length):
        """Seconds a request with a body of `length` bytes has, from its first byte."""
        return self.header_timeout + length / self.min_body_rate


class ByteBudget:
    """Upload bytes held in memory by all requests at once (event loop only: no lock)."""

    def __init__(self, limit):
        self.limit, self.used = limit, 0

    def fits(self, n):
        return self.used + n <= self.limit

    def take(self, n):
        if self.used + n > self.limit:
            return False
        self.used += n
        return True

    def give(self, n):
        self.used -= n


class Connection(BoundedConnection):
    """aiohttp's per-connection protocol with a header deadline and the connection cap."""

    def __init__(self, manager, *, limits, **kwargs):
        super().__init__(manager, limits=limits, **kwargs)
        self._discard = False  # answered here (408): its input is dropped until it closes
        self.waiting_since = self._loop.time()  # accept, or the end of its last request
        self.sending_since = None  # first byte of a request not yet handed to the app
        self.pending = False  # a request's headers are in, its answer not yet given
        self.busy = False  # a request is in the app's hands
        self._last_body = None  # the payload of the last request whose headers came

    def connection_made(self, transport):
        if not self._manager.make_room(self._limits.max_connections):
            self._refuse(transport, raw_response(503, {
                "error": f"this page's server has {self._limits.max_connections} open "
                         "connections, its limit, all in use; retry later"}))
            return
        super().connection_made(transport)
        self._start_request(self._loop.time())

    def data_received(self, data):
        if self._refused or self._discard:
            return
        if self.sending_since is None and not self.busy:
            self._start_request(self._loop.time())
        super().data_received(data)
        if self._messages:  # headers in: the request is the app's to answer
            self.pending = True
            self._last_body = self._messages[-1][1]

    def eof_received(self):
        """The client stopped sending. The requests it sent are still answered, the last one
        seen short by the app if its body is not all in (400); the transport stays half
        open for the answers. Otherwise the connection closes."""
        if self._refused or self._discard or not (self.busy or self.pending):
            return None
        if self._last_body is not None and not self._last_body.is_eof():
            self._last_body.feed_eof()
        self.close()  # after these answers
        return True

    # -- the request's phases, told by the app's handler ---------------------------------
    def request_started(self):
        """The app has the request (headers in): -> the time its first byte came."""
        self._cancel_header_timer()
        started = self.sending_since if self.sending_since is not None else self._loop.time()
        self.sending_since, self.busy = None, True
        return started

    def request_finished(self):
        self.busy = False
        self.pending = bool(self._messages)  # a pipelined request is next
        self.waiting_since = self._loop.time()

    def closing(self):
        """Answered here (408) or closed: no longer counted against the cap."""
        return self._discard or self.transport is None or self.transport.is_closing()

    def evictable_since(self):
        """When it started waiting without a request in the app's hands; None if it has one."""
        if self.busy or self.pending or self._discard:
            return None
        return self.sending_since if self.sending_since is not None else self.waiting_since

    # -- the header deadline ---------------------------------------------------------------
    def _start_request(self, now):
        self.sending_since = now
        self._arm_header_timer(now)

    def _headers_late(self):
        transport = self.transport
        if self.busy or self.pending or transport is None or transport.is_closing():
            return
        self._discard = True  # aiohttp sees nothing more of it, so answers nothing
        transport.write(raw_response(408, {
            "error": f"the request did not arrive within {self._limits.header_timeout:g} s"}))
        self._linger(transport)

    def handle_error(self, request, status=500, exc=None, message=None):
        """aiohttp's own refusals (an unparsable request) as a JSON error and one log line;
        the request's own text is not echoed whole."""
        if status == 500:
            log.error("%s %s failed", request.method, request.path, exc_info=exc)
            text = "internal error"
        else:
            reason = str(getattr(exc, "message", None) or message or exc or "").strip()
            reason = reason.splitlines()[0][:120].rstrip(":") if reason else \
                HTTPStatus(status).phrase
            log.debug("refused a malformed request: %s", reason)
            text = f"malformed HTTP request: {reason}"
            if "content-length" in reason.lower():
                text = f"a bad Content-Length header ({reason})"
        if request.writer.output_size > 0:
            raise ConnectionError("the response has been sent in part already")
        return json_response(status, {"error": text}, close=True)


class Server(web.Server):
    """aiohttp's low-level server making `Connection`s, and choosing whom to close."""

    def __init__(self, handler, limits, **kwargs):
        super().__init__(handler, keepalive_timeout=limits.idle_timeout,
                         max_line_size=MAX_HEADER_BYTES, max_field_size=MAX_HEADER_BYTES,
                         **kwargs)
        self.limits = limits

    def __call__(self):
        return Connection(self, loop=self._loop, limits=self.limits, **self._kwargs)

    def make_room(self, limit):
        """True when a new connection may open: under `limit`, or after closing the one
        that has waited longest without a request in progress (idle keep-alive ones first,
        then those still sending headers), if it has waited EVICTION_GRACE or more."""
        open_ = [c for c in self.connections if not c.closing()]
        if len(open_) < limit:
            return True
        now = self._loop.time()
        waiting = [(c.sending_since is not None, since, c) for c in open_
                   if (since := c.evictable_since()) is not None
                   and now - since >= EVICTION_GRACE]
        if not waiting:
            return False
        _, since, victim = min(waiting, key=lambda w: w[:2])
        log.debug("connection limit: closing one that waited %.1f s", now - since)
        victim.force_close()
        return True

    def counts(self):
        """(open connections, connections with a request in the app's hands)."""
        connections = self.connections
        return len(connections), sum(c.busy for c in connections)


def budget_full(budget):
    return HttpError(503, f"busy: this page's server holds {budget.used} bytes of uploads, "
                          f"its limit being {budget.limit}; retry shortly", close=True)


async def read_body(request, *, max_bytes, seconds, budget):
    """The request's body (a bytearray: grown in place, no joined copy), read within
    `seconds`; bytes counted against `budget` as they arrive (the caller gives back
    len(body) when done). Raises HttpError (closing)."""
    body = bytearray()
    received = 0

    def keep(chunk):
        nonlocal received
        if received + len(chunk) > max_bytes:
            raise HttpError(413, f"the photo is too large: over {max_bytes} bytes", close=True)
        if not budget.take(len(chunk)):
            raise budget_full(budget)
        received += len(chunk)
        body.extend(chunk)

    try:
        await read_within(request, seconds, 1 << 16, keep)
    except TimeoutError:
        budget.give(received)
        raise HttpError(408, f"the photo did not arrive within {seconds:.0f} s",
                        close=True) from None
    except HttpError:
        budget.give(received)
        raise
    except Exception:  # the connection broke while the body was being read
        budget.give(received)
        raise HttpError(400, "the connection broke off before the photo was in",
                        close=True) from None
    return body
