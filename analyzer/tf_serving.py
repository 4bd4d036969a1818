"""TF Serving's API on the wire: a gRPC and a REST client (real TF Serving or
`serving.server`), and "host:port" addresses.

Owns the requests (inputs as tensors or as TF Serving JSON, `{"b64": ...}` for bytes), the
connection handling and the failures: every failure is a `ClientError` (an
`agegender.ServerError`) with `code` (the gRPC status name, or the HTTP status for REST)
and the server's message; a server that is down gives code UNAVAILABLE after `timeout`
seconds at most. Answers are read by `agegender.photo_answers` (REST strictly: the answer
comes from a peer).

REST is `http.client` and NumPy only: no TensorFlow. gRPC needs the
`tensorflow_serving.apis` protos, whose generated modules import TensorFlow.
"""
import base64
import http.client
import json
import socket

import numpy as np

from agegender import photo_answers
from agegender import serving_contract as contract
from agegender.errors import ServerError

DEFAULT_SIGNATURE = contract.SERVING_DEFAULT
MODEL = contract.DEFAULT_MODEL_NAME


class ClientError(ServerError):
    """A failed request: `code` (gRPC status name or HTTP status) and the server's message."""


def split_hostport(server):
    """"host:port" or "[v6 address]:port" -> (host, port); ValueError otherwise."""
    host, _, port = server.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not host or not port.isdigit() or not 0 < int(port) < 65536 or "/" in host:
        raise ValueError(f"server must be host:port, got {server!r}")
    return host, int(port)


def _rows(columns, n):
    """{output: list/array of n rows} -> [{output: value}] with plain Python values."""
    rows = [{} for _ in range(n)]
    for name, values in columns.items():
        for i in range(n):
            v = values[i]
            if isinstance(v, bytes):
                v = v.decode("utf-8", "replace")
            elif isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, np.generic):
                v = v.item()
            rows[i][name] = v
    return rows


def _grpc_inputs(images, keys):
    """The request's inputs as tensors: encoded images (and keys) as string arrays."""
    inputs = {contract.IMAGE_BYTES: np.array(list(images), dtype=object)}
    if keys is not None:
        inputs[contract.KEY] = np.array([k.encode() if isinstance(k, str) else k for k in keys],
                                        dtype=object)
    return inputs


def _rest_inputs(images, keys):
    """The request's inputs in TF Serving's JSON: bytes as {"b64": ...}."""
    inputs = {contract.IMAGE_BYTES: [{"b64": base64.b64encode(b).decode("ascii")}
                                     for b in images]}
    if keys is not None:
        inputs[contract.KEY] = list(keys)
    return inputs


def _trusted(read, outputs):
    """A gRPC answer read without the strict checks (typed tensors), any shape error a
    ServerError."""
    try:
        return read(outputs)
    except (KeyError, IndexError, ValueError, TypeError) as e:
        raise ServerError(None, f"malformed answer: {e!r:.200}") from None


class GrpcClient:
    """PredictionService client over one gRPC channel."""

    def __init__(self, server, timeout=10.0, max_message_bytes=64 << 20):
        import grpc
        from tensorflow_serving.apis import prediction_service_pb2_grpc

        self._grpc = grpc
        self.timeout = timeout
        self.channel = grpc.insecure_channel(server, options=[
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)])
        self.stub = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)

    def close(self):
        self.channel.close()

    def _call(self, method, request):
        try:
            return method(request, timeout=self.timeout)
        except self._grpc.RpcError as e:
            raise ClientError(e.code().name, e.details()) from None

    def predict_raw(self, inputs, model_name=MODEL, signature_name=DEFAULT_SIGNATURE,
                    version=None):
        """{input: array-like} -> {output: ndarray} (any signature)."""
        from tensorflow_serving.apis import predict_pb2

        from agegender.tensor_protos import array_to_proto, proto_to_array

        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature_name
        if version is not None:
            request.model_spec.version.value = int(version)
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(array_to_proto(value))
        response = self._call(self.stub.Predict, request)
        return {k: proto_to_array(v) for k, v in response.outputs.items()}

    def predict(self, images, model_name=MODEL, keys=None, version=None):
        """Encoded images -> one dict of outputs per image."""
        inputs = _grpc_inputs(images, keys)
        out = self.predict_raw(inputs, model_name, DEFAULT_SIGNATURE, version)
        return _rows(out, len(inputs[contract.IMAGE_BYTES]))

    def crop_faces(self, images, model_name=MODEL, version=None):
        """Encoded aligned crops -> one `Face` each (serving_default)."""
        out = self.predict_raw(_grpc_inputs(images, None), model_name, DEFAULT_SIGNATURE,
                               version)
        return _trusted(photo_answers.read_crops, out)

    def photo_answers(self, photos, model_name=MODEL, keys=None, version=None):
        """Encoded photos -> one `PhotoAnswer(key, [Face])` per photo (predict_photo)."""
        out = self.predict_raw(_grpc_inputs(photos, keys), model_name, contract.PREDICT_PHOTO,
                               version)
        return _trusted(photo_answers.read_photos, out)

    def predict_photos(self, photos, model_name=MODEL, keys=None, version=None):
        """Encoded photos -> one {"key", "num_faces", "faces"} per photo (the signature-named
        view of `photo_answers`)."""
        return photo_answers.photo_dicts(self.photo_answers(photos, model_name, keys, version))

    def metadata(self, model_name=MODEL, version=None):
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
        request.model_spec.name = model_name
        if version is not None:
            request.model_spec.version.value = int(version)
        response = self._call(self.stub.GetModelMetadata, request)
        sig_map = get_model_metadata_pb2.SignatureDefMap()
        response.metadata["signature_def"].Unpack(sig_map)
        return response, sig_map

    def status(self, model_name=MODEL, version=None):
        from tensorflow_serving.apis import get_model_status_pb2, model_service_pb2_grpc

        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = model_name
        if version is not None:
            request.model_spec.version.value = int(version)
        stub = model_service_pb2_grpc.ModelServiceStub(self.channel)
        return self._call(stub.GetModelStatus, request)


class RestClient:
    """REST client on http.client with one keep-alive connection (not thread-safe: one per
    thread)."""

    def __init__(self, server, timeout=10.0):
        self.host, self.port = split_hostport(server)
        self.timeout = timeout
        self._conn = None

    def close(self):
        if self._conn:
            self._conn.close()
            self._conn = None

    def request(self, method, path, body=None):
        """-> (HTTP status, parsed JSON). Raises ClientError UNAVAILABLE if unreachable."""
        data = None if body is None else json.dumps(body).encode("utf-8")
        for attempt in (0, 1):  # one retry on a stale keep-alive connection
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection(self.host, self.port,
                                                            timeout=self.timeout)
                    self._conn.connect()
                    # headers and a large body go out in two writes: no Nagle stalls
                    self._conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                headers = {"Content-Type": "application/json"} if data is not None else {}
                self._conn.request(method, path, body=data, headers=headers)
                response = self._conn.getresponse()
                raw = response.read()
                break
            except (ConnectionError, http.client.HTTPException, socket.timeout, OSError) as e:
                self.close()
                fresh = isinstance(e, (http.client.RemoteDisconnected, BrokenPipeError,
                                       ConnectionResetError))
                if attempt == 0 and fresh:
                    continue
                raise ClientError("UNAVAILABLE", f"{self.host}:{self.port}: {e}") from None
        try:
            payload = json.loads(raw) if raw else {}
        except (ValueError, RecursionError):
            payload = {"error": raw.decode("utf-8", "replace")}
        if response.will_close:
            self.close()
        return response.status, payload

    def _check(self, status, payload):
        if status != 200:
            message = payload.get("error", payload) if isinstance(payload, dict) else payload
            raise ClientError(status, message)
        return payload

    def _path(self, model_name, version, suffix=""):
        v = f"/versions/{int(version)}" if version is not None else ""
        return f"/v1/models/{model_name}{v}{suffix}"

    def predict_json(self, body, model_name=MODEL, version=None):
        return self._check(*self.request("POST", self._path(model_name, version, ":predict"),
                                         body))

    def _outputs(self, signature, images, keys, model_name, version):
        answer = self.predict_json({"signature_name": signature,
                                    "inputs": _rest_inputs(images, keys)}, model_name, version)
        if not isinstance(answer, dict) or not isinstance(answer.get("outputs"), dict):
            raise ClientError(None, "the answer has no 'outputs' object")
        return answer["outputs"]

    def predict(self, images, model_name=MODEL, keys=None, version=None):
        out = self._outputs(DEFAULT_SIGNATURE, images, keys, model_name, version)
        return _rows(out, len(images))

    def crop_faces(self, images, model_name=MODEL, version=None):
        """Encoded aligned crops -> one `Face` each (serving_default), read strictly."""
        out = self._outputs(DEFAULT_SIGNATURE, images, None, model_name, version)
        faces = photo_answers.read_crops(out, strict=True)
        if len(faces) != len(images):
            raise ClientError(None, f"{len(faces)} answers for {len(images)} images")
        return faces

    def photo_answers(self, photos, model_name=MODEL, keys=None, version=None):
        """Encoded photos -> one `PhotoAnswer(key, [Face])` per photo (predict_photo), the
        answer read strictly."""
        out = self._outputs(contract.PREDICT_PHOTO, photos, keys, model_name, version)
        answers = photo_answers.read_photos(out, strict=True)
        if len(answers) != len(photos):
            raise ClientError(None, f"{len(answers)} answers for {len(photos)} photos")
        return answers

    def predict_photos(self, photos, model_name=MODEL, keys=None, version=None):
        """Encoded photos -> one {"key", "num_faces", "faces"} per photo (the signature-named
        view of `photo_answers`)."""
        return photo_answers.photo_dicts(self.photo_answers(photos, model_name, keys, version))

    def metadata(self, model_name=MODEL, version=None):
        return self._check(*self.request("GET", self._path(model_name, version, "/metadata")))

    def status(self, model_name=MODEL, version=None):
        return self._check(*self.request("GET", self._path(model_name, version)))


def _predict_once(client_class, server, timeout, *args):
    client = client_class(server, timeout)
    try:
        return client.predict(*args)
    finally:
        client.close()


def predict_grpc(server, images, model_name=MODEL, keys=None, version=None, timeout=10.0):
    return _predict_once(GrpcClient, server, timeout, images, model_name, keys, version)


def predict_rest(server, images, model_name=MODEL, keys=None, version=None, timeout=10.0):
    return _predict_once(RestClient, server, timeout, images, model_name, keys, version)
