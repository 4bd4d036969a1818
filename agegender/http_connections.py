"""What both aiohttp servers (the model server's REST API, the web page's server) add to
aiohttp's per-connection protocol: a header deadline and a refusal at accept.

aiohttp parses HTTP and keeps connections alive but has no deadline for a request that is
sent slowly and no connection cap. `BoundedConnection` holds the pieces both servers use
to add them: the header timer (`_arm_header_timer` calls the subclass's `_headers_late`),
refusing a newcomer at accept with a whole JSON answer written to the transport (aiohttp
never sees it), and lingering before a close (closing with unread input sends a reset that
can destroy the answer unread). What is answered, and how the cap picks whom to close,
stay with each server (`serving.rest_connections`, `web.connections`).

aiohttp only (no TensorFlow): the web page's process imports it.
"""
from http import HTTPStatus

from aiohttp import web_protocol

# A refused or timed-out connection reads and drops its client's input this long before it
# closes.
LINGER_SECONDS = 2.0


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
