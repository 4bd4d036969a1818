"""The REST call from the page's server to the model server, and its failures as HTTP statuses.

aiohttp's client rather than `serving.client.RestClient`: that module imports TensorFlow
(10 s and ~580 MB at import on the 2-core machine), which this forwarding process never
needs, and the page's server is an aiohttp event loop already. One short-lived connection
per photo (a loopback connect costs far less than the model's forward pass, and no pooled
connection can have been closed by the model server meanwhile).

What the model server sends back is bounded as what a browser sends is: the whole answer
(connect, headers, body) within the photo's deadline, at most MAX_RESPONSE_BYTES read, no
compressed bodies (a small gzip can inflate to gigabytes), and JSON nested at most
MAX_JSON_DEPTH deep (`read_json`). Each breach is a 502/504 with a one-line reason.
"""
import asyncio
import json
import time

import aiohttp

from agegender import serving_contract as contract
from web import photo_contract

# A predict answer for one photo is a few KB (faces x outputs); more is not a model server.
MAX_RESPONSE_BYTES = 4 << 20
# A predict_photo answer nests 5 deep ({"predictions": [{"landmarks": [[[x, y]]]}]}).
MAX_JSON_DEPTH = 32


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
    if not host or not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536 or "/" in host:
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
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.url = f"http://{host}:{self.port}"

    def __str__(self):
        return f"model '{self.model_name}' at {self.url}"

    async def predict_photo(self, image_bytes, deadline=None):
        """Encoded photo -> [face dict] (see photo_contract.faces); raises BackendError.

        `deadline` (time.monotonic()) bounds the whole call, the answer's last byte
        included; default now + timeout."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        body = photo_contract.request_bytes(image_bytes)
        status, payload = await self._post(f"/v1/models/{self.model_name}:predict", body,
                                           deadline)
        if status != 200:
            raise self._refusal(status, payload)
        try:
            return photo_contract.faces(payload)
        except photo_contract.ContractError as e:
            raise BackendError(502, f"the model server's answer is not what this page "
                                    f"expects: {e}") from None

    async def _post(self, path, body, deadline):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise BackendError(504, f"no time left to ask the model server at {self.url}")
        try:
            async with asyncio.timeout(remaining), aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(force_close=True),
                    auto_decompress=False) as session, session.post(
                    self.url + path, data=body,
                    headers={"Content-Type": "application/json"}) as response:
                encoding = response.headers.get("Content-Encoding", "identity").lower()
                if encoding != "identity":
                    raise BackendError(502, f"the model server at {self.url} answered with "
                                            f"Content-Encoding {encoding[:40]!r}; expected none")
                raw = await _read_bounded(response.content, MAX_RESPONSE_BYTES + 1)
                status = response.status
        except TimeoutError:
            raise BackendError(504, f"the model server at {self.url} did not answer within "
                                    f"{self.timeout:g} s") from None
        except aiohttp.ClientConnectorError as e:  # refused, unknown host, unreachable
            reason = ("connection refused): is it running?"
                      if isinstance(e.os_error, ConnectionRefusedError)
                      else f"{e.os_error.strerror or e.os_error})")
            raise BackendError(503, f"the model server at {self.url} is not reachable "
                                    f"({reason}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                aiohttp.ClientResponseError) as e:
            raise BackendError(502, f"the model server at {self.url} broke off its answer "
                                    f"({type(e).__name__}: {str(e)[:200]})") from None
        except (aiohttp.ClientError, OSError) as e:  # reset, or anything else on the wire
            raise BackendError(503, f"the model server at {self.url} is not reachable "
                                    f"({type(e).__name__}: {str(e)[:200]})") from None
        if len(raw) > MAX_RESPONSE_BYTES:
            raise BackendError(502, f"the model server's answer is over {MAX_RESPONSE_BYTES} bytes")
        try:
            return status, read_json(raw)
        except ValueError as e:
            raise BackendError(502, f"the model server at {self.url} answered HTTP {status} "
                                    f"without usable JSON: {e}") from None

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
        if status == 429:  # over its budget of pixels or bytes in flight: retry shortly
            return BackendError(503, f"the model server is busy: {message}")
        return BackendError(502, f"the model server answered HTTP {status}: {message}")


async def _read_bounded(stream, limit):
    """At most `limit` bytes of a body (fewer at its end)."""
    chunks, size = [], 0
    while size < limit:
        chunk = await stream.read(limit - size)
        if not chunk:
            break
        chunks.append(chunk)
        size += len(chunk)
    return b"".join(chunks)


def read_json(raw, max_depth=MAX_JSON_DEPTH):
    """Bytes (already bounded in size) -> the parsed JSON; ValueError when it is not JSON or
    nests deeper than `max_depth`.

    CPython's json parser guards its own recursion (RecursionError past the interpreter's
    limit, ~1000 levels, at a cost linear in what it read), so a 10**6-deep answer fails
    there; what parses is then held to `max_depth` without recursion."""
    try:
        value = json.loads(raw)
    except RecursionError:
        raise ValueError(f"JSON nested deeper than {max_depth} levels") from None
    except ValueError as e:  # JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{str(e)[:120]}: {raw[:80]!r}") from None
    stack = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(
            node, list) else ()
        for child in children:
            if isinstance(child, (dict, list)):
                if depth + 1 > max_depth:
                    raise ValueError(f"JSON nested deeper than {max_depth} levels")
                stack.append((child, depth + 1))
    return value
