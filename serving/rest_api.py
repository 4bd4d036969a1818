"""TF Serving's REST API on the standard library's ThreadingHTTPServer.

Owns the HTTP side: routing of
  GET  /v1/models/{name}[/versions/{v}]                  model status
  GET  /v1/models/{name}[/versions/{v}]/metadata         signature defs
  POST /v1/models/{name}[/versions/{v}]:predict          row / columnar predict
request-size limits (413 before the body is read), a cap on open connections (one thread
each; beyond the cap a new connection gets 503 at once), keep-alive, and TF Serving's
`{"error": "..."}` bodies with the HTTP status of the failure's code. Request decoding is
in `tensor_codec`, request semantics in `core`.
"""
import logging
import re
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from google.protobuf import json_format

from serving import core as core_lib
from serving import tensor_codec
from serving.errors import ServingError, invalid, not_found

log = logging.getLogger(__name__)

_ROUTE = re.compile(
    r"^/v1/models/(?P<name>[^/:]+)"
    r"(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<verb>/metadata|:predict|:classify|:regress)?/?$")


def _proto_json(message):
    return json_format.MessageToDict(message, preserving_proto_field_name=True,
                                     always_print_fields_with_no_presence=True)


def make_handler(core, max_request_bytes, socket_timeout=60.0):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive; every response has a Content-Length
        server_version = "agegender-model-server"
        timeout = socket_timeout

        def log_message(self, fmt, *args):  # quiet by default; errors are logged below
            log.debug("%s " + fmt, self.address_string(), *args)

        def setup(self):
            super().setup()
            # Responses go out in one write; without NODELAY, Nagle + delayed ACK add ~40 ms.
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def _send(self, status, body):
            data = tensor_codec.dumps(body).encode("utf-8")
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self._headers_buffer.append(b"\r\n")  # end_headers() without its separate flush
            self.wfile.write(b"".join(self._headers_buffer) + data)
            self._headers_buffer = []

        def _error(self, err):
            if err.http_status >= 500:
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
            if version is not None and not version.isdigit():
                raise invalid(f"version {version!r} is not an integer")
            return match["name"], (int(version) if version is not None else None), match["verb"]

        def do_GET(self):
            try:
                name, version, verb = self._route()
                if verb is None:
                    body = _proto_json(core_lib.status_response(core.store, name, version))
                elif verb == "/metadata":
                    body = _proto_json(core_lib.metadata_response(core.model(name, version)))
                    body["metadata"]["signature_def"].pop("@type", None)  # as TF Serving prints it
                else:
                    raise ServingError("UNIMPLEMENTED", f"{verb} needs POST")
                self._send(200, body)
            except ServingError as e:
                self._error(e)
            except Exception as e:  # a bug: report it, keep serving
                log.exception("GET %s failed", self.path)
                self._error(ServingError("INTERNAL", str(e)))

        def do_POST(self):
            try:
                body = self._read_body()
            except ServingError as e:
                self.close_connection = True  # the unread body makes the stream unusable
                self._error(e)
                return
            try:
                name, version, verb = self._route()
                if verb != ":predict":
                    if verb in (":classify", ":regress"):
                        raise ServingError("UNIMPLEMENTED", f"{verb[1:]} is not supported by "
                                           "this server; use :predict")
                    raise not_found(f"Malformed request: POST {self.path}")
                self._send(200, self._predict(name, version, body))
            except ServingError as e:
                self._error(e)
            except Exception as e:
                log.exception("POST %s failed", self.path)
                self._error(ServingError("INTERNAL", str(e)))

        def _read_body(self):
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                raise ServingError("INVALID_ARGUMENT", "chunked bodies are not supported; send "
                                   "a Content-Length")
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                raise ServingError("INVALID_ARGUMENT", "a POST needs a Content-Length header")
            length = int(length)
            if length > max_request_bytes:
                raise ServingError("RESOURCE_EXHAUSTED", f"request body of {length} bytes exceeds "
                                   f"the limit of {max_request_bytes} bytes")
            return self.rfile.read(length)

        def _predict(self, name, version, body):
            data = tensor_codec.parse_json_body(body)
            model = core.model(name, version)
            signature_name = data.get("signature_name") or "serving_default"
            if not isinstance(signature_name, str):
                raise invalid("'signature_name' must be a string")
            sd = model.signature_def(signature_name)
            inputs, fmt = tensor_codec.predict_inputs_from_json(data, sd)
            outputs = core.predict(model, signature_name, inputs)
            return tensor_codec.predict_response_json(outputs, fmt)

    return Handler


DEFAULT_MAX_CONNECTIONS = 256


class _BoundedHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer with at most `max_connections` connection threads at a time.

    A connection beyond the cap is answered 503 (TF Serving's error body) and closed without
    starting a thread, so a flood of idle keep-alive clients cannot exhaust the server's
    threads or memory; the clients already connected are served as before.
    """
    daemon_threads = True

    def __init__(self, address, handler, max_connections):
        self.max_connections = max_connections
        self._open = threading.BoundedSemaphore(max_connections)
        super().__init__(address, handler)

    def process_request(self, request, client_address):
        if not self._open.acquire(blocking=False):
            self._refuse(request)
            return
        try:
            super().process_request(request, client_address)  # starts the thread
        except BaseException:
            self._open.release()
            raise

    def process_request_thread(self, request, client_address):
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._open.release()

    def _refuse(self, request):
        body = tensor_codec.dumps({"error": f"the server has {self.max_connections} open "
                                            "connections, its limit; retry later"}).encode()
        try:
            request.settimeout(1.0)
            request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json"
                            b"\r\nConnection: close\r\nContent-Length: "
                            + str(len(body)).encode() + b"\r\n\r\n" + body)
            # Read what the client has already sent: closing a socket with unread input
            # sends a reset, which can destroy the 503 before the client reads it.
            request.setblocking(False)
            while request.recv(65536):
                pass
        except OSError:  # includes "nothing more to read now"
            pass
        finally:
            self.shutdown_request(request)


class RestServer:
    """The REST endpoint, serving in a background thread."""

    def __init__(self, core, host="127.0.0.1", port=8501, max_request_bytes=16 << 20,
                 max_connections=DEFAULT_MAX_CONNECTIONS):
        if max_connections < 1:
            raise ValueError("max_connections must be >= 1")
        handler = make_handler(core, max_request_bytes)
        self.httpd = _BoundedHTTPServer((host, port), handler, max_connections)
        self.port = self.httpd.server_address[1]
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="rest",
                                        kwargs={"poll_interval": 0.2}, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self._thread.join(timeout=10)
