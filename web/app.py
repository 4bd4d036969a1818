"""The page's server: one static page, and its photos forwarded to a TF Serving REST endpoint.

  python -m web.app --backend=localhost:8501 --model_name=age --port=8080

then open http://127.0.0.1:8080/. TF Serving sends no CORS headers, so the browser talks to
this process only; it calls the model's `predict_photo` signature over REST and answers the
page with the faces found.

Routes: `GET /` (the page), `GET /app.js`, `GET /style.css`, `GET /api/config` (the limits the
page applies before uploading), `POST /api/predict` (body: one JPEG/PNG photo; answer
`{"faces": [...]}` or `{"error": "..."}` with 400/404/405/411/413/415 for a bad request and
502/503/504 when the model server answers an error, is down or is too slow).

It must not be a new way to hurt the model server, so everything is bounded: the upload
(`--max_request_bytes`, refused from its Content-Length before it is read) and its declared
pixels (`--max_image_pixels`, from the header), open connections (`--max_connections`, one
thread each; beyond, 503 at once), idle keep-alive connections (`--idle_timeout`),
predictions in flight to the model server (`--max_concurrent_predictions`; a photo waits for
a slot at most half its `--timeout`, then gets 503), and each photo (`--timeout`, the wait
for a slot included).
Binds 127.0.0.1 unless `--host` says otherwise.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import importlib.resources
import json
import logging
import signal
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from agegender import arg_types, console, image_header
from agegender import serving_contract as contract
from web import backend as backend_lib

log = logging.getLogger("web.app")

DEFAULT_MAX_REQUEST_BYTES = contract.DEFAULT_MAX_REQUEST_BYTES  # as the model server's
DEFAULT_BACKEND = f"localhost:{contract.DEFAULT_REST_PORT}"
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_CONCURRENT_PREDICTIONS = 2
DEFAULT_MAX_CONNECTIONS = 32
DEFAULT_IDLE_TIMEOUT = 30.0
# The page downscales photos whose longer side is larger before uploading: a 12 MP phone
# photo becomes ~0.3-0.6 MB of JPEG, and faces of a group photo keep ~50+ px at this size.
DEFAULT_MAX_SIDE = 1600
DEFAULT_JPEG_QUALITY = 0.9

ACCEPTED_FORMATS = (image_header.JPEG, image_header.PNG)

# path -> (file in web/static, Content-Type)
_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
# The page loads only its own files and talks only to this server; blob: is the photo it
# re-encoded. A page that tried to fetch anything else would be blocked by the browser.
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; "
                           "img-src 'self' blob: data:; connect-src 'self'; base-uri 'none'; "
                           "form-action 'none'; frame-ancestors 'none'")


def load_static():
    """{path: (bytes, content type)} read once from the package data."""
    root = importlib.resources.files("web") / "static"
    return {path: (root.joinpath(name).read_bytes(), ctype)
            for path, (name, ctype) in _STATIC.items()}


class _HttpError(Exception):
    def __init__(self, status, message, close=False):
        super().__init__(message)
        self.status, self.message, self.close = status, message, close


def make_handler(app):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every answer has a Content-Length
        server_version = "agegender-web"
        timeout = app.idle_timeout  # an idle or stalled connection is closed after this

        def log_message(self, fmt, *args):
            log.debug("%s " + fmt, self.address_string(), *args)

        def _send(self, status, body, content_type, extra_headers=()):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("Cache-Control", "no-store")
            for name, value in extra_headers:
                self.send_header(name, value)
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status, obj):
            self._send(status, json.dumps(obj, allow_nan=False).encode("utf-8"),
                       "application/json")

        def _error(self, err):
            if err.close:
                self.close_connection = True
            if err.status >= 500:
                log.warning("%s %s -> %d %s", self.command, self.path, err.status, err.message)
            self._json(err.status, {"error": err.message})

        def send_error(self, code, message=None, explain=None):
            """http.server's own refusals (malformed request line or headers, unknown method)
            in the same JSON shape, always with a status line."""
            self.close_connection = True
            if self.request_version == "HTTP/0.9":
                self.request_version = "HTTP/1.0"
            self._json(code, {"error": message or self.responses.get(code, ("error",))[0]})

        def _path(self):
            return self.path.split("?", 1)[0]

        def do_GET(self):
            path = self._path()
            if path in app.static:
                body, ctype = app.static[path]
                self._send(200, body, ctype,
                           [("Content-Security-Policy", CONTENT_SECURITY_POLICY),
                            ("Referrer-Policy", "no-referrer")])
            elif path == "/api/config":
                self._json(200, app.page_config())
            elif path == "/api/predict":
                self._error(_HttpError(405, "POST a photo to /api/predict"))
            else:
                self._error(_HttpError(404, f"no such page: {path}"))

        do_HEAD = do_GET

        def do_POST(self):
            try:
                if self._path() != "/api/predict":
                    # Its body is not read: close so it is not taken for the next request.
                    raise _HttpError(404, f"no such endpoint: POST {self._path()}", close=True)
                photo = self._read_body()
                self._json(200, {"faces": app.predict(photo)})
            except _HttpError as e:
                self._error(e)
            except backend_lib.BackendError as e:
                self._error(_HttpError(e.status, e.message))
            except Exception as e:  # a bug: report it, keep serving
                log.exception("POST %s failed", self.path)
                self._error(_HttpError(500, f"internal error: {e}"))

        def _read_body(self):
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                raise _HttpError(411, "send the photo with a Content-Length, not chunked",
                                 close=True)
            length = self.headers.get("Content-Length")
            if length is None or not length.strip().isdigit():
                raise _HttpError(411, "a POST needs a Content-Length header", close=True)
            length = int(length)
            if length > app.max_request_bytes:
                raise _HttpError(413, f"the photo is too large: {length} bytes, the limit is "
                                      f"{app.max_request_bytes} bytes", close=True)
            if length == 0:
                raise _HttpError(400, "the request holds no photo")
            try:
                data = self.rfile.read(length)
            except (socket.timeout, TimeoutError):
                raise _HttpError(408, "the photo did not arrive in time", close=True) from None
            if len(data) < length:
                raise _HttpError(400, "the photo was cut off before its Content-Length",
                                 close=True)
            return data

    return Handler


class _BoundedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `max_connections` connection threads at a time; a
    connection beyond the cap gets 503 and is closed without a thread. (The model server's
    REST endpoint does the same; its module imports TensorFlow, so it is not reused here.)"""
    daemon_threads = True

    def __init__(self, address, handler, max_connections):
        self.max_connections = max_connections
        self._open = threading.BoundedSemaphore(max_connections)
        self._lock = threading.Lock()
        self._connections = set()
        super().__init__(address, handler)

    def close_connections(self):
        """Ends every open connection: a keep-alive browser would otherwise go on being
        served by its thread after the listening socket is closed."""
        with self._lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def process_request(self, request, client_address):
        if not self._open.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._open.release()
            raise

    def process_request_thread(self, request, client_address):
        with self._lock:
            self._connections.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._connections.discard(request)
            self._open.release()

    def _refuse(self, request):
        body = json.dumps({"error": f"this page's server has {self.max_connections} open "
                                    "connections, its limit; retry later"}).encode()
        try:
            request.settimeout(1.0)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json"
                            b"\r\nConnection: close\r\nContent-Length: "
                            + str(len(body)).encode() + b"\r\n\r\n" + body)
            request.setblocking(False)
            while request.recv(65536):  # unread input would turn the close into a reset
                pass
        except OSError:
            pass
        finally:
            self.shutdown_request(request)


class WebApp:
    """The page's server, serving in a background thread (`start()`/`stop()`, or `with`)."""

    def __init__(self, backend=DEFAULT_BACKEND, model_name=contract.DEFAULT_MODEL_NAME,
                 host="127.0.0.1", port=8080,
                 max_request_bytes=DEFAULT_MAX_REQUEST_BYTES, timeout=DEFAULT_TIMEOUT,
                 max_concurrent_predictions=DEFAULT_MAX_CONCURRENT_PREDICTIONS,
                 max_connections=DEFAULT_MAX_CONNECTIONS, idle_timeout=DEFAULT_IDLE_TIMEOUT,
                 max_side=DEFAULT_MAX_SIDE, max_image_pixels=image_header.DEFAULT_MAX_PIXELS):
        for name, value in (("max_request_bytes", max_request_bytes), ("timeout", timeout),
                            ("max_concurrent_predictions", max_concurrent_predictions),
                            ("max_connections", max_connections),
                            ("idle_timeout", idle_timeout), ("max_side", max_side)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.backend = backend_lib.RestBackend(backend, model_name, timeout)
        self.max_request_bytes = max_request_bytes
        self.timeout = timeout
        self.idle_timeout = idle_timeout
        self.max_side = max_side
        self.max_image_pixels = max_image_pixels
        self.max_concurrent_predictions = max_concurrent_predictions
        self._slots = threading.BoundedSemaphore(max_concurrent_predictions)
        self.static = load_static()
        self.httpd = _BoundedHTTPServer((host, port), make_handler(self), max_connections)
        self.host, self.port = self.httpd.server_address[:2]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="web",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def page_config(self):
        """What the page needs to know before it uploads."""
        return {"model_name": self.backend.model_name, "max_request_bytes": self.max_request_bytes,
                "max_side": self.max_side, "jpeg_quality": DEFAULT_JPEG_QUALITY,
                "timeout_seconds": self.timeout}

    def predict(self, photo):
        """Encoded photo -> [face dict]; raises _HttpError / BackendError."""
        try:
            size = image_header.check(photo, self.max_image_pixels)
        except image_header.ImageTooLarge as e:
            raise _HttpError(413, f"the photo is too large: {e}") from None
        except image_header.NotAnImage as e:
            raise _HttpError(415, f"not a JPEG or PNG photo ({e})") from None
        if size.format not in ACCEPTED_FORMATS:
            raise _HttpError(415, f"a {size.format.upper()} image: send a JPEG or PNG photo")
        deadline = time.monotonic() + self.timeout
        # Bounded concurrency toward the model server: a photo waits for a slot at most half
        # its timeout (the other half is the model's), so a crowd of uploads is turned away
        # instead of queueing there.
        if not self._slots.acquire(timeout=self.timeout / 2):
            raise _HttpError(503, f"busy: the model server already has the page's "
                                  f"{self.max_concurrent_predictions} photos in flight; retry shortly")
        try:
            return self.backend.predict_photo(photo, deadline)
        finally:
            self._slots.release()

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.httpd.close_connections()
        self._thread.join(timeout=10)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


_positive = arg_types.positive


def main(argv=None):
    p = argparse.ArgumentParser(description="A web page that shows the age and gender the "
                                            "served model sees in photos.")
    p.add_argument("--backend", default=DEFAULT_BACKEND,
                   help="TF Serving REST endpoint, host:port (default %(default)s)")
    p.add_argument("--model_name", default=contract.DEFAULT_MODEL_NAME)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    p.add_argument("--max_request_bytes", type=_positive(int, "a byte count"),
                   default=DEFAULT_MAX_REQUEST_BYTES, help="largest upload (default 16 MiB)")
    p.add_argument("--max_image_pixels", type=_positive(int, "a pixel count"),
                   default=image_header.DEFAULT_MAX_PIXELS,
                   help="largest photo by its header's width x height (default %(default)s)")
    p.add_argument("--timeout", type=_positive(float, "seconds"), default=DEFAULT_TIMEOUT,
                   help="seconds one photo may take, waiting for a slot included "
                        "(default %(default)s)")
    p.add_argument("--max_concurrent_predictions", type=_positive(int, "a count"),
                   default=DEFAULT_MAX_CONCURRENT_PREDICTIONS,
                   help="photos in flight to the model server at once (default %(default)s)")
    p.add_argument("--max_connections", type=_positive(int, "a count"),
                   default=DEFAULT_MAX_CONNECTIONS,
                   help="open browser connections, one thread each (default %(default)s)")
    p.add_argument("--idle_timeout", type=_positive(float, "seconds"),
                   default=DEFAULT_IDLE_TIMEOUT,
                   help="seconds before an idle connection is closed (default %(default)s)")
    p.add_argument("--max_side", type=_positive(int, "pixels"), default=DEFAULT_MAX_SIDE,
                   help="the page downscales photos to this longer side before uploading "
                        "(default %(default)s)")
    console.add_verbose_flag(p, also=", and log at DEBUG level")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = WebApp(args.backend, args.model_name, args.host, args.port,
                     max_request_bytes=args.max_request_bytes, timeout=args.timeout,
                     max_concurrent_predictions=args.max_concurrent_predictions,
                     max_connections=args.max_connections, idle_timeout=args.idle_timeout,
                     max_side=args.max_side, max_image_pixels=args.max_image_pixels)
    except ValueError as e:
        p.error(str(e))
    except OSError as e:
        print(f"error: cannot listen on {args.host}:{args.port}: {e.strerror or e}",
              file=sys.stderr)
        return 1
    done = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: done.set())
    app.start()
    print(f"page: {app.url} -> {app.backend}", flush=True)
    done.wait()
    app.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
