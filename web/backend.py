"""The REST call from the page's server to the model server, and its failures as HTTP statuses.

Plain `http.client` rather than `serving.client.RestClient`: that module imports TensorFlow
(10 s and ~580 MB at import on the 2-core machine), which this forwarding process never needs.
One short-lived connection per photo: the call is thread-safe without a pool, and a
loopback connect costs far less than the model's forward pass.
"""
import http.client
import json
import socket
import time

from agegender import serving_contract as contract
from web import photo_contract

# A predict answer for one photo is a few KB (faces x outputs); more is not a model server.
MAX_RESPONSE_BYTES = 4 << 20


class BackendError(Exception):
    """A failed forward: `status` is the HTTP status the page's server answers with."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status
        self.message = message


def parse_address(address):
    """'host:port' or 'http://host:port[/]' -> (host, port); ValueError when it is neither."""
    text = address.strip()
    if text.startswith("https://"):
        raise ValueError(f"{address!r}: TF Serving's REST API is plain HTTP; use http://host:port")
    if text.startswith("http://"):
        text = text[len("http://"):]
    text = text.rstrip("/")
    host, _, port = text.rpartition(":")
    host = host.strip("[]")  # [::1]:8501
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise ValueError(f"--backend must be host:port (e.g. localhost:8501), got {address!r}")
    return host, int(port)


class RestBackend:
    """`predict_photo` on one model of a TF Serving REST endpoint."""

    def __init__(self, address, model_name=contract.DEFAULT_MODEL_NAME, timeout=10.0):
        self.host, self.port = parse_address(address)
        if not model_name or "/" in model_name or ":" in model_name:
            raise ValueError(f"bad model name {model_name!r}")
        self.model_name = model_name
        self.timeout = timeout
        self.url = f"http://{self.host}:{self.port}"

    def __str__(self):
        return f"model '{self.model_name}' at {self.url}"

    def predict_photo(self, image_bytes, deadline=None):
        """Encoded photo -> [face dict] (see photo_contract.faces); raises BackendError.

        `deadline` (time.monotonic()) bounds the whole call; default now + timeout."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        body = json.dumps(photo_contract.request_body(image_bytes)).encode("ascii")
        status, payload = self._post(f"/v1/models/{self.model_name}:predict", body, deadline)
        if status != 200:
            raise self._refusal(status, payload)
        try:
            return photo_contract.faces(payload)
        except photo_contract.ContractError as e:
            raise BackendError(502, f"the model server's answer is not what this page "
                                    f"expects: {e}") from None

    def _post(self, path, body, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BackendError(504, f"no time left to ask the model server at {self.url}")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=remaining)
        try:
            conn.request("POST", path, body=body,
                         headers={"Content-Type": "application/json", "Connection": "close"})
            conn.sock.settimeout(max(deadline - time.monotonic(), 0.001))
            response = conn.getresponse()
            raw = response.read(MAX_RESPONSE_BYTES + 1)
        except (socket.timeout, TimeoutError):
            raise BackendError(504, f"the model server at {self.url} did not answer within "
                                    f"{self.timeout:g} s") from None
        except ConnectionRefusedError:
            raise BackendError(503, f"the model server at {self.url} is not reachable "
                                    "(connection refused): is it running?") from None
        except http.client.HTTPException as e:
            raise BackendError(502, f"the model server at {self.url} broke off its answer "
                                    f"({type(e).__name__}: {e})") from None
        except OSError as e:  # unknown host, network unreachable, reset
            raise BackendError(503, f"the model server at {self.url} is not reachable "
                                    f"({e.strerror or e})") from None
        finally:
            conn.close()
        if len(raw) > MAX_RESPONSE_BYTES:
            raise BackendError(502, f"the model server's answer is over {MAX_RESPONSE_BYTES} bytes")
        try:
            payload = json.loads(raw)
        except ValueError:
            raise BackendError(502, f"the model server at {self.url} answered HTTP "
                                    f"{response.status} without JSON: {raw[:200]!r}") from None
        return response.status, payload

    def _refusal(self, status, payload):
        """TF Serving's {"error": ...} -> BackendError with the status the page should see."""
        message = payload.get("error") if isinstance(payload, dict) else None
        message = str(message if message is not None else payload)[:2000]
        if f'"{photo_contract.SIGNATURE}" not found' in message:
            # TF Serving says 400 (FAILED_PRECONDITION), the local server 404: a model exported
            # before face detection. The page's user can do nothing about it; its operator can.
            return BackendError(502, f"the model '{self.model_name}' has no "
                                     f"'{photo_contract.SIGNATURE}' signature (export a model "
                                     f"with face detection): {message}")
        if status == 400:  # the request (the photo) was refused: the page's caller is at fault
            return BackendError(400, f"the model server refused the photo: {message}")
        if status == 413:
            return BackendError(413, f"the photo is too large for the model server: {message}")
        if status == 404:
            return BackendError(502, f"the model server has no model '{self.model_name}': "
                                     f"{message}")
        if status == 503:
            return BackendError(503, f"the model server is unavailable: {message}")
        return BackendError(502, f"the model server answered HTTP {status}: {message}")
