"""The page's server: one static page, and its photos forwarded to a TF Serving REST endpoint.

  python -m web.app --server=localhost:8501 --model_name=age --port=8080

then open http://127.0.0.1:8080/. TF Serving sends no CORS headers, so the browser talks to
this process only; it calls the model's `predict_photo` signature over REST and answers the
page with the faces found.

Routes: `GET /` (the page), `GET /app.js`, `GET /style.css`, `GET /api/config` (the limits the
page applies before uploading), `POST /api/predict` (body: one JPEG/PNG photo; answer
`{"faces": [...]}` or `{"error": "..."}` with 400/404/405/408/411/413/415 for a bad request
and 502/503/504 when the model server answers an error, is down or is too slow),
`POST /api/live?session=ID` (a camera frame, checked and predicted as a photo is, answered
with the page's tracked, fused faces: `web.live`) and `DELETE /api/live?session=ID`.

It runs on aiohttp's low-level server, one event loop thread (`web.connections` bounds each
connection's time and their number; docs/web.md says why aiohttp). It must not be a new
way to hurt the model server, so everything is bounded: the upload (`--max_request_bytes`,
refused from its Content-Length before it is read), its declared pixels
(`--max_image_pixels`, from the header), the upload bytes held at once
(`--max_inflight_request_bytes`), the time a request may take to arrive
(`--header_timeout`, then `--min_body_rate`), open connections (`--max_connections`),
idle keep-alive connections (`--idle_timeout`), predictions in flight to the model server
(`--max_concurrent_predictions`, one of them kept for photos no larger than the page sends;
a photo waits for a slot at most half its `--timeout`, then gets 503), and each photo
(`--timeout`, the wait for a slot and the model server's whole answer included); the
live pages' tracks (`--max_live_sessions`, `--live_idle_timeout`, `--max_live_tracks`).
Binds 127.0.0.1 unless `--host` says otherwise.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import asyncio
import importlib.resources
import logging
import signal
import socket
import sys
import threading
import time

from aiohttp import web

from agegender import arg_types, console, image_header
from agegender import serving_contract as contract
from web import app_flags
from web import backend as backend_lib
from web import connections
from web import live as live_lib
from web.connections import HttpError

log = logging.getLogger("web.app")

# A photo is forwarded as base64 in JSON (4/3 of its size): this is the largest photo whose
# request fits the model server's default limit (16 MiB), so the page refuses what the
# model server would.
DEFAULT_MAX_REQUEST_BYTES = (contract.DEFAULT_MAX_REQUEST_BYTES - 1024) // 4 * 3
DEFAULT_BACKEND = f"localhost:{contract.DEFAULT_REST_PORT}"
DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_CONCURRENT_PREDICTIONS = 2
# Connections cost a socket and a few KB on the event loop, not a thread: 256 leave room for
# a crowd of slow clients beside the browsers (each also closed after header_timeout).
DEFAULT_MAX_CONNECTIONS = 256
DEFAULT_IDLE_TIMEOUT = 30.0
DEFAULT_HEADER_TIMEOUT = 5.0
DEFAULT_MIN_BODY_RATE = float(256 << 10)  # bytes/s: a 16 MB upload may take 5 + 64 s
# Upload bytes held at once (received, or waiting for the model server): ~100 page uploads,
# or 4 at the 16 MiB limit; the page's memory bound.
DEFAULT_MAX_INFLIGHT_REQUEST_BYTES = 64 << 20
# Connections waiting to be accepted: a burst of uploads queues here instead of being reset.
LISTEN_BACKLOG = 1024
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


class WebApp:
    """The page's server, its event loop in a background thread (`start()`/`stop()`, or
    `with`)."""

    def __init__(self, backend=DEFAULT_BACKEND, model_name=contract.DEFAULT_MODEL_NAME,
                 host="127.0.0.1", port=8080,
                 max_request_bytes=DEFAULT_MAX_REQUEST_BYTES, timeout=DEFAULT_TIMEOUT,
                 max_concurrent_predictions=DEFAULT_MAX_CONCURRENT_PREDICTIONS,
                 max_connections=DEFAULT_MAX_CONNECTIONS, idle_timeout=DEFAULT_IDLE_TIMEOUT,
                 max_side=DEFAULT_MAX_SIDE, max_image_pixels=image_header.DEFAULT_MAX_PIXELS,
                 header_timeout=DEFAULT_HEADER_TIMEOUT, min_body_rate=DEFAULT_MIN_BODY_RATE,
                 max_inflight_request_bytes=DEFAULT_MAX_INFLIGHT_REQUEST_BYTES,
                 max_live_sessions=live_lib.DEFAULT_MAX_SESSIONS,
                 live_idle_timeout=live_lib.DEFAULT_IDLE_TIMEOUT,
                 max_live_tracks=live_lib.DEFAULT_MAX_TRACKS):
        for name, value in (("max_request_bytes", max_request_bytes), ("timeout", timeout),
                            ("max_concurrent_predictions", max_concurrent_predictions),
                            ("max_side", max_side), ("max_image_pixels", max_image_pixels),
                            ("max_inflight_request_bytes", max_inflight_request_bytes)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.limits = connections.Limits(max_connections, header_timeout, idle_timeout,
                                         min_body_rate)
        self.backend = backend_lib.RestBackend(backend, model_name, timeout)
        self.max_request_bytes = max_request_bytes
        self.timeout = timeout
        self.max_side = max_side
        self.max_image_pixels = max_image_pixels
        self.max_concurrent_predictions = max_concurrent_predictions
        self.uploads = connections.ByteBudget(max_inflight_request_bytes)
        self.live = live_lib.LiveSessions(max_live_sessions, live_idle_timeout, max_live_tracks)
        self.static = load_static()
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._listener = socket.create_server((host, port), family=family,
                                              backlog=LISTEN_BACKLOG)
        self.host, self.port = self._listener.getsockname()[:2]
        self._loop = self._server = self._aio = self._thread = None
        self._slots = self._large_slots = None
        self._started = threading.Event()

    @property
    def url(self):
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def page_config(self):
        """What the page needs to know before it uploads."""
        return {"model_name": self.backend.model_name, "max_request_bytes": self.max_request_bytes,
                "max_side": self.max_side, "jpeg_quality": DEFAULT_JPEG_QUALITY,
                "timeout_seconds": self.timeout, "live": self.live.page_config()}

    # -- lifecycle ---------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._run, name="web", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._aio is None:
            raise RuntimeError("the page's server did not start (see the log)")
        return self

    def _run(self):
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._slots = asyncio.Semaphore(self.max_concurrent_predictions)
            self._large_slots = asyncio.Semaphore(max(1, self.max_concurrent_predictions - 1))
            # auto_decompress off: a gzip-encoded upload is not a photo (415), and it could
            # inflate past --max_request_bytes.
            self._server = connections.Server(self._handle, self.limits, loop=loop,
                                              access_log=None, auto_decompress=False,
                                              lingering_time=connections.LINGER_SECONDS)
            self._aio = loop.run_until_complete(loop.create_server(self._server,
                                                                   sock=self._listener))
        except Exception:
            log.exception("the page's server failed to start")
        finally:
            self._started.set()
        if self._aio is not None:
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_default_executor())  # the header checks
        loop.close()

    def stop(self):
        """Stops listening and ends every open connection (a keep-alive browser would
        otherwise go on being served)."""
        loop = self._loop
        if loop is None or not loop.is_running():
            self._listener.close()
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=10)
        except Exception as e:
            log.warning("stopping the page's server: %s", e)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(timeout=10)

    async def _shutdown(self):
        self._aio.close()
        self._server.pre_shutdown()
        await self._server.shutdown(timeout=2)
        # What is left (a lingering refusal's task, a photo at the model server) is
        # cancelled here, not destroyed pending with the loop.
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def connection_counts(self):
        """(open connections, connections with a request in progress)."""
        async def counts():
            return self._server.counts()
        return asyncio.run_coroutine_threadsafe(counts(), self._loop).result(5)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- requests ------------------------------------------------------------------------
    async def _handle(self, request):
        connection = request.protocol
        started = connection.request_started()
        try:
            response = await self._answer(request, started)
        except HttpError as e:
            response = self._error(request, e)
        except backend_lib.BackendError as e:
            response = self._error(request, HttpError(e.status, e.message))
        except Exception as e:  # a bug: report it, keep serving
            log.exception("%s %s failed", request.method, request.path)
            response = self._error(request, HttpError(500, f"internal error: {e}"))
        finally:
            connection.request_finished()
        response.headers.update(connections.COMMON_HEADERS)
        return response

    def _error(self, request, err):
        if err.status >= 500:
            log.warning("%s %s -> %d %s", request.method, request.path, err.status, err.message)
        return connections.json_response(err.status, {"error": err.message}, close=err.close)

    async def _answer(self, request, started):
        path = request.path
        if request.method in ("GET", "HEAD"):
            if path in self.static:
                body, ctype = self.static[path]
                return web.Response(body=body, headers={
                    "Content-Type": ctype, "Content-Security-Policy": CONTENT_SECURITY_POLICY,
                    "Referrer-Policy": "no-referrer"})
            if path == "/api/config":
                return connections.json_response(200, self.page_config())
            if path in ("/api/predict", live_lib.PATH):
                raise HttpError(405, f"POST a photo to {path}")
            raise HttpError(404, f"no such page: {path}")
        # Refusals before a body is read close the connection, so that body is not taken for
        # the next request.
        if request.method == "DELETE" and path == live_lib.PATH:
            session = live_lib.session_id(request)
            if request.content_length or "Transfer-Encoding" in request.headers:
                raise HttpError(400, f"DELETE {path} takes no body", close=True)
            self.live.forget(session)
            return connections.json_response(200, {"forgotten": True})
        if request.method != "POST":
            raise HttpError(405, f"{request.method} is not supported here", close=True)
        if path == live_lib.PATH:
            session = live_lib.session_id(request)
            with self.live.frame(session):
                faces = await self._predict_upload(request, started)
                if self.live.tracker is None:
                    await asyncio.to_thread(self.live.load)
                answer = self.live.update(session, faces)
            return connections.json_response(200, {"faces": answer})
        if path != "/api/predict":
            raise HttpError(404, f"no such endpoint: POST {path}", close=True)
        faces = await self._predict_upload(request, started)
        return connections.json_response(200, {"faces": [backend_lib.page_fields(f)
                                                         for f in faces]})

    async def _predict_upload(self, request, started):
        """The request's photo read (`_read_photo`) and predicted; its bytes held in the
        upload budget until the model server has answered."""
        photo = await self._read_photo(request, started)
        try:
            return await self.predict_faces(photo)
        finally:
            self.uploads.give(len(photo))

    async def _read_photo(self, request, started):
        """The upload, refused from its headers when they say it cannot be a photo here.
        (aiohttp's parser has refused Content-Lengths that are not decimal numbers.)"""
        if "chunked" in request.headers.get("Transfer-Encoding", "").lower():
            raise HttpError(411, "send the photo with a Content-Length, not chunked", close=True)
        length = request.content_length
        if length is None:
            raise HttpError(411, "a POST needs a Content-Length header", close=True)
        if length > self.max_request_bytes:
            raise HttpError(413, f"the photo is too large: {length} bytes, the limit is "
                                 f"{self.max_request_bytes} bytes", close=True)
        if length == 0:
            raise HttpError(400, "the request holds no photo")
        if not self.uploads.fits(length):  # refused before its body is read (another
            raise connections.budget_full(self.uploads)  # may still fill it meanwhile)
        seconds = started + self.limits.request_seconds(length) - self._loop.time()
        photo = await connections.read_body(request, max_bytes=length, seconds=seconds,
                                            budget=self.uploads)
        if len(photo) < length:
            self.uploads.give(len(photo))
            raise HttpError(400, "the photo was cut off before its Content-Length", close=True)
        return photo

    async def predict_faces(self, photo):
        """Encoded photo -> [`agegender.Face`]; raises HttpError / BackendError."""
        try:
            # In a thread: the header walk is linear in the photo's bytes.
            size = await asyncio.to_thread(image_header.check, photo, self.max_image_pixels)
        except image_header.ImageTooLarge as e:
            raise HttpError(413, f"the photo is too large: {e}") from None
        except image_header.NotAnImage as e:
            raise HttpError(415, f"not a JPEG or PNG photo ({e})") from None
        if size.format not in ACCEPTED_FORMATS:
            raise HttpError(415, f"a {size.format.upper()} image: send a JPEG or PNG photo")
        deadline = time.monotonic() + self.timeout
        # Bounded concurrency toward the model server: a photo waits for a slot at most half
        # its timeout (the other half is the model's), so a crowd of uploads is turned away
        # instead of queueing there. Photos larger than the page itself sends (over
        # max_side^2 pixels: not from its upload path) cost the model server seconds each;
        # they may hold all slots but one, which stays for the page's own photos.
        large = size.pixels > self.max_side ** 2 and self.max_concurrent_predictions > 1
        held = []
        try:
            async with asyncio.timeout(self.timeout / 2):
                for slots in (self._large_slots, self._slots) if large else (self._slots,):
                    await slots.acquire()
                    held.append(slots)
        except TimeoutError:
            for slots in held:
                slots.release()
            which = (f"{self.max_concurrent_predictions - 1} photos larger than "
                     f"{self.max_side}x{self.max_side}" if large
                     else f"{self.max_concurrent_predictions} photos")
            raise HttpError(503, f"busy: the model server already has the page's {which} in "
                                 "flight; retry shortly") from None
        try:
            return await self.backend.predict_faces(photo, deadline)
        finally:
            for slots in held:
                slots.release()


def main(argv=None):
    p = argparse.ArgumentParser(description="A web page that shows the age and gender the "
                                            "served model sees in photos and in a camera.")
    p.add_argument("--server", "--backend", dest="server", default=DEFAULT_BACKEND,
                   help="TF Serving REST endpoint, HOST:PORT (default %(default)s; "
                        "--backend is its deprecated spelling)")
    p.add_argument("--model_name", default=contract.DEFAULT_MODEL_NAME)
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback only)")
    p.add_argument("--port", type=int, default=8080, help="0 picks a free port")
    app_flags.add_limit_flags(p, WebApp)
    console.add_verbose_flag(p, also=", and log at DEBUG level")
    argv = sys.argv[1:] if argv is None else argv
    arg_types.warn_renamed(argv, app_flags.RENAMED_FLAGS)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        app = WebApp(args.server, args.model_name, args.host, args.port,
                     **{name: getattr(args, name) for name in app_flags.LIMIT_FLAGS})
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
