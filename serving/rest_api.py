"""TF Serving's REST API: one selector thread for the connections, a fixed pool for requests.

Owns the HTTP side: routing of
  GET  /v1/models/{name}[/versions/{v}]                  model status
  GET  /v1/models/{name}[/versions/{v}]/metadata         signature defs
  POST /v1/models/{name}[/versions/{v}]:predict          row / columnar predict
request-size limits (413 before the body is read), keep-alive, and TF Serving's
`{"error": "..."}` bodies with the HTTP status of the failure's code. Request decoding is
in `tensor_codec`, request semantics in `core`.

Connections, so that a slow or idle client cannot take the API away from others:
- One thread (the loop, `selectors`) holds every connection that is not being answered.
  It accepts, reads request headers as they arrive without blocking, and hands a
  connection to the pool of `num_threads` request threads only once a whole header block
  is in. An idle keep-alive connection, or one that never sends anything, costs a socket
  and a few bytes, not a thread. The pool's size also bounds the memory of the requests
  decoded at once.
- Time limits: a request's headers must be complete within `header_timeout` seconds of its
  first byte (of the accept, for a new connection), else 408 and close; a body must arrive
  within `header_timeout` + its size / `min_body_rate` seconds, else 408 and close; a
  keep-alive connection idle for `idle_timeout` seconds is closed. A response gets the
  same time to be written.
- `max_connections` open connections at most. A new connection beyond that closes one in
  the loop: the longest-idle keep-alive connection, else the one that has been sending its
  headers longest; so idle and half-open connections cannot lock anyone out. Only when
  every connection has a request being answered does the newcomer get 503.
- Each connection gets TCP_NODELAY and every response goes out in one write (without
  them, Nagle + delayed ACK added ~40 ms per request); requests pipelined on a connection
  are answered in order.
"""
import collections
import dataclasses
import errno
import logging
import os
import queue
import re
import selectors
import socket
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler

from google.protobuf import json_format

from agegender import serving_contract as contract
from serving import core as core_lib
from serving import tensor_codec
from serving.errors import ServingError, invalid, not_found

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_HEADER_TIMEOUT = 5.0
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MIN_BODY_RATE = 256 << 10  # bytes/s: a 16 MB body may take 5 + 64 s
MAX_HEADER_BYTES = 64 << 10  # request line + headers

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>/metadata|:predict|:classify|:regress)?/?$")
_DECIMAL = re.compile(r"[0-9]+")  # ASCII only: str.isdigit() also accepts "²", int() does not


def _proto_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def _json_response(status, body, close=False):
    """A whole HTTP/1.1 response (headers and body) as one bytes object, for one write."""
    data = tensor_codec.dumps(body).encode("utf-8")
    phrase = HTTPStatus(status).phrase
    return (f"HTTP/1.1 {status} {phrase}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n" + ("Connection: close\r\n" if close else "")
            + "\r\n").encode("latin-1") + data


class _Connection:
    __slots__ = ("sock", "address", "buffer", "since", "started", "closing", "linger_until")

    def __init__(self, sock, address, now):
        self.sock = sock
        self.address = address
        self.buffer = bytearray()  # received, not yet consumed
        self.since = now  # entered the loop (accept, or end of its last response)
        self.started = now  # first byte of the request being received; None while idle
        self.closing = False  # set by a request thread: close instead of keeping alive
        self.linger_until = None  # closing: reading what the client still sends until then


def _request_ready(buffer):
    """A whole header block is in, or a first line that no HTTP/1.x request starts with."""
    if b"\r\n\r\n" in buffer or b"\n\n" in buffer:
        return True
    end = buffer.find(b"\n")
    return end >= 0 and len(buffer[:end].split()) < 3  # e.g. HTTP/0.9 "GET /": refuse now


class _Reader:
    """A request thread's rfile: the connection's buffered bytes, then its socket, with a
    deadline for the whole read (TimeoutError past it)."""

    def __init__(self, conn, deadline):
        self.conn = conn
        self.deadline = deadline

    def _wait(self):
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError("the client is too slow")
        self.conn.sock.settimeout(remaining)

    def _fill(self):
        self._wait()
        data = self.conn.sock.recv(65536)
        if not data:
            return False
        self.conn.buffer += data
        return True

    def readline(self, limit=-1):
        buffer = self.conn.buffer
        while True:
            end = buffer.find(b"\n")
            if end >= 0 and (limit < 0 or end < limit):
                n = end + 1
                break
            if limit >= 0 and len(buffer) >= limit:
                n = limit
                break
            if not self._fill():
                n = len(buffer)
                break
        line = bytes(buffer[:n])
        del buffer[:n]
        return line

    def read(self, n):
        """n bytes (fewer if the client closed), received straight into one buffer."""
        buffer = self.conn.buffer
        got = min(n, len(buffer))
        out = bytearray(n)
        out[:got] = buffer[:got]
        del buffer[:got]
        view = memoryview(out)
        while got < n:
            self._wait()
            received = self.conn.sock.recv_into(view[got:])
            if not received:
                break
            got += received
        view.release()
        del out[got:]
        return out


class _Writer:
    """A request thread's wfile: each write is one sendall, given a rate-based time."""

    def __init__(self, sock, grace, min_rate):
        self.sock, self.grace, self.min_rate = sock, grace, min_rate

    def write(self, data):
        self.sock.settimeout(self.grace + len(data) / self.min_rate)
        self.sock.sendall(data)  # the timeout bounds the whole call (Python >= 3.5)

    def flush(self):
        pass


class _Handler(BaseHTTPRequestHandler):
    """One request on one connection (the loop owns the connection between requests)."""
    protocol_version = "HTTP/1.1"  # keep-alive; every response has a Content-Length
    server_version = "agegender-model-server"

    def __init__(self, conn, server):  # not the base class's: that one loops over a connection
        self.server = server
        self.core = server.core
        self.conn = conn
        self.request = self.connection = conn.sock
        self.client_address = conn.address
        limits = server.limits
        self.rfile = _Reader(conn, time.monotonic() + limits.header_timeout)
        self.wfile = _Writer(conn.sock, limits.header_timeout, limits.min_body_rate)
        self.close_connection = True
        self.command = None
        self.request_version = self.default_request_version
        self.requestline = ""

    def log_message(self, fmt, *args):  # quiet by default; errors are logged below
        log.debug("%s " + fmt, self.address_string(), *args)

    def parse_request(self):
        if len(self.raw_requestline.split()) == 2:  # HTTP/0.9: no headers, no status line
            self.requestline = str(self.raw_requestline, "iso-8859-1").rstrip("\r\n")
            self.send_error(HTTPStatus.BAD_REQUEST, "HTTP/0.9 requests are not supported; "
                            "send an HTTP/1.1 request line (GET /path HTTP/1.1)")
            return False
        return super().parse_request()

    def send_error(self, code, message=None, explain=None):
        """The base class's errors (bad request line, too many headers, ...), as TF Serving's
        JSON error body, then close."""
        if self.request_version == "HTTP/0.9":  # a status line and headers all the same
            self.request_version = "HTTP/1.0"
        self.close_connection = True
        self._send(code, {"error": message or HTTPStatus(code).phrase})

    def _send(self, status, body):
        data = tensor_codec.dumps(body).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self._headers_buffer.append(b"\r\n")  # end_headers() without its separate write
        self.wfile.write(b"".join(self._headers_buffer) + data)
        self._headers_buffer = []

    def _error(self, err):
        """Answers a failed request (socket errors while answering go to the caller)."""
        if not isinstance(err, ServingError):  # a bug: report it, keep serving
            log.error("%s %s failed", self.command, self.path, exc_info=err)
            err = ServingError("INTERNAL", str(err))
        elif err.http_status >= 500:
            log.warning("%s %s -> %s", self.command, self.path, err)
        self._send(err.http_status, {"error": err.message})

    def _route(self):
        match = _ROUTE.match(self.path.split("?", 1)[0])
        if not match:
            raise not_found(f"Malformed request: {self.command} {self.path}")
        if match["label"] is not None:
            raise not_found("version labels are not supported by this server; use "
                            "/versions/{N}")
        version = match["version"]
        if version is not None and not (_DECIMAL.fullmatch(version) and len(version) <= 18):
            raise invalid(f"version {version[:40]!r} is not an integer")
        return match["name"], (int(version) if version is not None else None), match["verb"]

    def do_GET(self):
        try:
            name, version, verb = self._route()
            if verb is None:
                body = _proto_json(self.core.status_response(name, version))
            elif verb == "/metadata":
                body = _proto_json(core_lib.metadata_response(self.core.model(name, version)))
                body["metadata"]["signature_def"].pop("@type", None)  # as TF Serving prints it
            else:
                raise ServingError("UNIMPLEMENTED", f"{verb} needs POST")
        except Exception as e:
            self._error(e)
            return
        self._send(200, body)

    def do_POST(self):
        try:
            length = self._content_length()
        except ServingError as e:
            self.close_connection = True  # the unread body makes the stream unusable
            self._error(e)
            return
        body = self._read_body(length)
        if body is None:
            return
        try:
            name, version, verb = self._route()
            if verb != ":predict":
                if verb in (":classify", ":regress"):
                    raise ServingError("UNIMPLEMENTED", f"{verb[1:]} is not supported by "
                                       "this server; use :predict")
                raise not_found(f"Malformed request: POST {self.path}")
            # Admitted once the body is in: a slow upload holds a thread, not the budget.
            with self.core.admit(length):
                response = self._predict(name, version, body)
        except Exception as e:
            self._error(e)
            return
        self._send(200, response)

    def _content_length(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise invalid("chunked bodies are not supported; send a Content-Length")
        length = self.headers.get("Content-Length")
        if length is None:
            raise invalid("a POST needs a Content-Length header")
        length = length.strip()
        if not _DECIMAL.fullmatch(length):
            raise invalid(f"Content-Length {length[:40]!r} is not a decimal number")
        limit = self.server.limits.max_request_bytes
        # Count digits before int(): a 60,000-digit number would exceed Python's int()
        # digit limit (4300), and any number of more digits than the limit's is larger.
        if len(length.lstrip("0")) > len(str(limit)) or int(length) > limit:
            raise ServingError("RESOURCE_EXHAUSTED", f"request body of {length[:40]} bytes "
                               f"exceeds the limit of {limit} bytes (--max_request_bytes)")
        return int(length)

    def _read_body(self, length):
        """The body, or None when the client went away or sent it too slowly (answered)."""
        limits = self.server.limits
        seconds = limits.header_timeout + length / limits.min_body_rate
        self.rfile.deadline = time.monotonic() + seconds
        try:
            body = self.rfile.read(length)
        except TimeoutError:
            self.close_connection = True
            self._send(408, {"error": f"the request body of {length} bytes did not arrive "
                                      f"within {seconds:.0f} s (at least "
                                      f"{limits.min_body_rate} bytes/s after "
                                      f"{limits.header_timeout:g} s)"})
            return None
        if len(body) < length:  # the client closed the connection mid-body
            self.close_connection = True
            return None
        return body

    def _predict(self, name, version, body):
        data = tensor_codec.parse_json_body(body)
        model = self.core.model(name, version)
        signature_name = data.get("signature_name") or contract.SERVING_DEFAULT
        if not isinstance(signature_name, str):
            raise invalid("'signature_name' must be a string")
        sd = model.signature_def(signature_name)
        inputs, fmt = tensor_codec.predict_inputs_from_json(data, sd)
        del data  # the parsed JSON (~10x the body) is not kept while the model runs
        outputs = self.core.predict(model, signature_name, inputs)
        return tensor_codec.predict_response_json(outputs, fmt)


def default_num_threads():
    """--rest_api_num_threads default: TF Serving's 4 per core, but at least 32.

    A request thread waits while its request is in a batch, so fewer threads than
    concurrent clients keeps batches small: with 8 (TF Serving's default on 2 cores), 16
    clients cost more server CPU per request than with 32 (benchmarks/serving.py,
    BUILD_NOTES.md). Each thread holds at most one request body (--max_request_bytes),
    which bounds the memory of bodies being received."""
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
    """The REST endpoint: a connection loop thread and `num_threads` request threads."""

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
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._idle = {}  # fileno -> _Connection held by the loop
        self._busy = set()  # connections a request thread has (under _busy_lock)
        self._busy_lock = threading.Lock()
        self._open = 0  # connections accepted and not closed (touched by the loop only)
        self._returned = collections.deque()  # connections request threads gave back
        self._requests = queue.SimpleQueue()
        self._stopping = threading.Event()
        self._threads = []

    # -- lifecycle ------------------------------------------------------------------------
    def start(self):
        self._selector.register(self._listener, selectors.EVENT_READ, "listener")
        self._selector.register(self._wake_r, selectors.EVENT_READ, "wake")
        self._threads = [threading.Thread(target=self._loop, name="rest-loop", daemon=True)]
        self._threads += [threading.Thread(target=self._worker, name=f"rest-{i}", daemon=True)
                          for i in range(self.limits.num_threads)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self):
        self._stopping.set()
        self._wake()
        for _ in range(self.limits.num_threads):
            self._requests.put(None)
        with self._busy_lock:
            busy = list(self._busy)
        for conn in busy:  # unblock request threads waiting on a client
            try:
                conn.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in self._threads:
            thread.join(timeout=10)

    def _wake(self):
        try:
            self._wake_w.send(b"x")
        except OSError:  # the pipe is full (the loop will wake anyway) or closed
            pass

    # -- the loop -------------------------------------------------------------------------
    def _loop(self):
        next_sweep = 0.0
        try:
            while not self._stopping.is_set():
                while self._returned:  # first: they are candidates for eviction
                    self._take_back(self._returned.popleft())
                for key, _ in self._selector.select(timeout=0.25):
                    if key.data == "listener":
                        self._accept()
                    elif key.data == "wake":
                        try:
                            while self._wake_r.recv(4096):
                                pass
                        except OSError:
                            pass
                    else:
                        self._on_readable(key.data)
                while self._returned:
                    self._take_back(self._returned.popleft())
                now = time.monotonic()
                if now >= next_sweep:
                    self._sweep(now)
                    next_sweep = now + 0.25
        except Exception:
            log.exception("the REST connection loop failed")
            raise
        finally:
            for conn in list(self._idle.values()):
                self._close(conn)
            self._selector.close()
            self._listener.close()
            self._wake_r.close()
            self._wake_w.close()

    def _accept(self):
        while True:
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:  # e.g. EMFILE: leave it in the backlog for now
                if e.errno not in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.warning("accept failed: %s", e)
                return
            now = time.monotonic()
            if self._open >= self.limits.max_connections and not self._evict_one():
                self._refuse(sock)
                continue
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            sock.setblocking(False)
            conn = _Connection(sock, address, now)
            self._open += 1
            self._hold(conn)

    def _hold(self, conn):
        self._idle[conn.sock.fileno()] = conn
        self._selector.register(conn.sock, selectors.EVENT_READ, conn)

    def _release(self, conn):
        self._selector.unregister(conn.sock)
        del self._idle[conn.sock.fileno()]

    def _on_readable(self, conn):
        try:
            data = conn.sock.recv(65536)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._release(conn)
            self._close(conn)
            return
        if conn.linger_until is not None:
            return  # closing: what the client still sends is read and dropped
        conn.buffer += data
        if conn.buffer[:1] in (b"\r", b"\n"):  # blank lines before a request are ignored
            conn.buffer = bytearray(conn.buffer.lstrip(b"\r\n"))
            if not conn.buffer:
                return
        if conn.started is None:
            conn.started = time.monotonic()
        self._dispatch_if_ready(conn)

    def _dispatch_if_ready(self, conn):
        if _request_ready(conn.buffer):
            self._release(conn)
            with self._busy_lock:
                self._busy.add(conn)
            self._requests.put(conn)
        elif len(conn.buffer) > MAX_HEADER_BYTES:
            self._answer_and_close(conn, 431, f"the request line and headers exceed "
                                              f"{MAX_HEADER_BYTES} bytes")

    def _take_back(self, conn):
        """A request thread is done with `conn`: keep it alive or close it."""
        with self._busy_lock:
            self._busy.discard(conn)
        if self._stopping.is_set():
            self._close(conn)
            return
        try:
            conn.sock.setblocking(False)
        except OSError:
            conn.closing = True
        if conn.closing:
            self._linger(conn)
            return
        now = time.monotonic()
        conn.since = now
        conn.started = now if conn.buffer else None
        self._hold(conn)
        self._dispatch_if_ready(conn)  # a pipelined request may be in already

    def _sweep(self, now):
        for conn in list(self._idle.values()):
            if conn.linger_until is not None:
                if now > conn.linger_until:
                    self._release(conn)
                    self._close(conn)
            elif conn.started is not None:
                if now - conn.started > self.limits.header_timeout:
                    self._answer_and_close(conn, 408, f"the request headers did not arrive "
                                                      f"within {self.limits.header_timeout:g} s")
            elif now - conn.since > self.limits.idle_timeout:
                self._release(conn)
                self._close(conn)

    def _evict_one(self):
        """Closes the connection that has waited longest in the loop; False if none."""
        if not self._idle:
            return False
        # Connections already closing go first, then idle keep-alive ones (the longest idle
        # first: a client reconnects), then those sending headers (the oldest request first).
        victim = min(self._idle.values(), key=lambda c: (
            c.linger_until is None, c.started is not None, c.started or c.since))
        self._release(victim)
        self._close(victim)
        return True

    def _answer_and_close(self, conn, status, message):
        try:
            conn.sock.send(_json_response(status, {"error": message}, close=True))
        except OSError:
            pass
        self._release(conn)
        self._linger(conn)

    def _linger(self, conn):
        """Stop writing, then read (and drop) what the client still sends for a moment
        before closing: closing with unread input sends a reset, which can destroy the
        response before the client has read it."""
        try:
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)
            return
        conn.buffer = bytearray()
        conn.linger_until = time.monotonic() + 2.0
        self._hold(conn)

    def _close(self, conn):
        try:
            conn.sock.close()
        except OSError:
            pass
        self._open -= 1

    def _refuse(self, sock):
        """Every connection has a request being answered: 503 to the newcomer, now."""
        try:
            sock.setblocking(False)
            sock.send(_json_response(503, {
                "error": f"the server has {self.limits.max_connections} open connections, its "
                         "limit (--rest_api_max_connections), all busy; retry later"},
                close=True))
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):  # drop what the client already sent (see _linger)
                pass
        except OSError:  # includes "nothing more to read now"
            pass
        finally:
            sock.close()

    # -- request threads --------------------------------------------------------------------
    def _worker(self):
        while True:
            conn = self._requests.get()
            if conn is None:
                return
            try:
                handler = _Handler(conn, self)
                handler.handle_one_request()
                conn.closing = handler.close_connection
            except Exception as e:  # the client went away or was too slow; or a bug
                if not isinstance(e, OSError):
                    log.exception("REST request from %s failed", conn.address)
                conn.closing = True
            if self._stopping.is_set():  # the loop may be gone
                conn.sock.close()
                continue
            self._returned.append(conn)
            self._wake()
