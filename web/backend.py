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

from agegender import photo_answers
from agegender import serving_contract as contract
from agegender.errors import ServerError
from analyzer.tf_serving import split_hostport
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
    """'host:port', '[::1]:port' or 'http://host:port[/]' -> (host, port); ValueError when it
    is neither. The host:port part is `analyzer.tf_serving.split_hostport`'s (every client of
    a TF Serving address parses it there); the page also takes the REST URL's form."""
    text = address.strip()
    if text.startswith("https://"):
        raise ValueError(f"{address!r}: TF Serving's REST API is plain HTTP; use http://host:port")
    if text.startswith("http://"):
        text = text[len("http://"):].rstrip("/")
    try:
        return split_hostport(text)
    except ValueError:
        raise ValueError(f"--server must be host:port (e.g. localhost:8501), "
                         f"got {address!r}") from None


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
        """Encoded photo -> [face dict] (see `page_faces`); raises BackendError."""
        return [page_fields(face) for face in await self.predict_faces(image_bytes, deadline)]

    async def predict_faces(self, image_bytes, deadline=None):
        """Encoded photo -> [`agegender.Face`] (see `read_faces`); raises BackendError.

        `deadline` (time.monotonic()) bounds the whole call, the answer's last byte
        included; default now + timeout."""
        deadline = deadline if deadline is not None else time.monotonic() + self.timeout
        body = photo_contract.request_bytes(image_bytes)
        status, payload = await self._post(f"/v1/models/{self.model_name}:predict", body,
                                           deadline)
        if status != 200:
            raise self._refusal(status, payload)
        return read_faces(payload)

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


# What the page's script reads of a face (web/static/app.js), under the signature's names.
PAGE_FIELDS = ("box", "score", "landmarks", contract.AGE, contract.AGE_STD,
               contract.AGE_INTERVAL_80, contract.GENDER, contract.GENDER_PROBABILITY)


def page_faces(payload):
    """A REST predict answer for ONE photo -> [face dict] for the page (`read_faces`, then
    `page_fields`)."""
    return [page_fields(face) for face in read_faces(payload)]


def read_faces(payload):
    """A REST predict answer for ONE photo -> its [`agegender.Face`], read by the project's
    one reader (`agegender.photo_answers.read_rest`, strict: the answer comes from a peer).
    Raises BackendError(502) on any answer that is not one photo's `predict_photo` answer."""
    try:
        answers = photo_answers.read_rest(payload, strict=True)
    except ServerError as e:
        raise BackendError(502, f"the model server's answer is not a predict_photo answer: "
                                f"{e}") from None
    if len(answers) != 1:
        raise BackendError(502, f"the model server's answer is not a predict_photo answer: "
                                f"{len(answers)} photos in it, for one photo asked")
    return answers[0].faces


def page_fields(face):
    """A `Face` -> the page's dict: `box` [x1, y1, x2, y2], `score`, `landmarks`
    [[x, y] * 5], `age`, and when the model exports them `age_std`, `age_interval_80`
    [low, high], `gender` ("M"/"F") and `gender_probability` (of that gender); fields the
    answer lacks are left out."""
    return {name: value for name, value in photo_answers.face_fields(face).items()
            if name in PAGE_FIELDS and value is not None}


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
