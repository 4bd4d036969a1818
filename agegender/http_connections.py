"""What both aiohttp servers (the model server's REST API, the web page's server) add to
aiohttp's per-connection protocol: a header deadline and a refusal at accept.

aiohttp parses HTTP and keeps connections alive but has no deadline for a request that is
sent slowly and no connection cap. `BoundedConnection` holds the pieces both servers use
to add them: the header timer (`_arm_header_timer` calls the subclass's `_headers_late`),
refusing a newcomer at accept with a whole JSON answer written to the transport (aiohttp
never sees it), and lingering before a close (closing with unread input sends a reset that
can destroy the answer unread). `read_within` reads a body within its deadline and
`start_loop_thread` runs a server's event loop in its own thread. What is answered, and
how the cap picks whom to close, stay with each server (`serving.rest_connections`,
`web.connections`).

aiohttp only (no TensorFlow): the web page's process imports it.
"""
import asyncio
import threading
from http import HTTPStatus

from aiohttp import web_protocol

# A refused or timed-out connection reads and drops its client's input this long before it
# closes.
LINGER_SECONDS = 2.0


def start_loop_thread(run, name, started, running, what):
    """Runs `run` (a server's event loop, which sets the `started` event once it listens or
    has failed) in a daemon thread named `name`; returns the thread once `started` is set
    and `running()` is true, else raises RuntimeError naming `what` (the log says why)."""
    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    started.wait()
    if not running():
        raise RuntimeError(f"{what} did not start (see the log)")
    return thread


async def read_within(request, seconds, chunk_bytes, keep):
    """Reads `request`'s body in chunks of at most `chunk_bytes`, all within `seconds`
    (TimeoutError past them), handing each to `keep(chunk)`: None goes on, anything else
    stops the reading and is returned (None once the whole body is in). `keep` may raise."""
    async with asyncio.timeout(seconds):
        while True:
            chunk = await request.content.read(chunk_bytes)
            if not chunk:
                return None
            stop = keep(chunk)
            if stop is not None:
                return stop


def raw_json_response(status, body, extra_headers=()):
    """A whole HTTP/1.1 answer (`body`: encoded JSON) that closes the connection, as bytes,
    for a transport that aiohttp does not write."""
    head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
            f"Content-Length: {len(body)}", *extra_headers, "Connection: close"]
    return ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body


class BoundedConnection(web_protocol.RequestHandler):
    """aiohttp's per-connection protocol, with a header timer and a refusal at accept."""

    def __init__(self, manager, *, limits, **kwargs):
        super().__init__(manager, **kwargs)
        self._limits = limits
        self._header_timer = None
        self._refused = False  # refused at accept: never registered with aiohttp

    def _refuse(self, transport, answer):
        """Writes `answer` (bytes, see `raw_json_response`) to a newcomer and lingers;
        aiohttp never registers the connection."""
        self._refused = True
        self._manager = None  # never registered: connection_lost has nothing to undo
        self.transport = transport
        transport.write(answer)
        self._linger(transport)

    def _linger(self, transport):
        """Stop writing, read (and drop) what the client still sends for a moment, then
        close."""
        try:
            transport.write_eof()
        except (OSError, RuntimeError):
            transport.close()
            return
        self._loop.call_later(LINGER_SECONDS, transport.close)

    def connection_lost(self, exc):
        self._cancel_header_timer()
        if self._refused:
            self.transport = None
            return
        super().connection_lost(exc)

    def _arm_header_timer(self, since):
        """The request that began at `since` (loop time) must have its headers in within the
        limits' `header_timeout`, else `_headers_late` runs."""
        self._cancel_header_timer()
        self._header_timer = self._loop.call_at(since + self._limits.header_timeout,
                                                self._late)

    def _cancel_header_timer(self):
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _late(self):
        self._header_timer = None
        self._headers_late()

    def _headers_late(self):
        raise NotImplementedError
