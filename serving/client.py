"""Clients for a TF Serving age/gender model (real TF Serving or `serving.server`).

Python API:
  predict_grpc("localhost:8500", [jpeg_bytes, ...])  -> [{"age": 31.2, "gender": "F", ...}]
  predict_rest("localhost:8501", [jpeg_bytes, ...])  -> same
  GrpcClient / RestClient keep one channel / connection pool for repeated calls; their
  `predict_photos(photos)` calls the predict_photo signature (faces found in whole photos)
  -> one {"key", "num_faces", "faces": [{"box", "age", "gender", ...}]} per photo
  (`agegender.photo_answers`).
Failures raise `ClientError` with `code` (gRPC status name, or the HTTP status for REST)
and the server's message; a server that is down gives code UNAVAILABLE (gRPC) or
"UNAVAILABLE" (REST) after `timeout` seconds at most.

CLI (like the original project's predict mode):
  python -m serving.client --server=localhost:8500 --protocol=grpc --model_name=age IMAGE...
  python -m serving.client --photos [--draw_dir=DIR] PHOTO...   (one line per face found,
      "no face found" for a photo without one; DIR gets a copy of each photo with the boxes
      and ages drawn on it)
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import base64
import http.client
import json
import socket
import sys

import numpy as np

from agegender import console, photo_answers, prediction_line
from agegender import serving_contract as contract

DEFAULT_SIGNATURE = contract.SERVING_DEFAULT
MODEL = contract.DEFAULT_MODEL_NAME


class ClientError(Exception):
    def __init__(self, code, message):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def _split_hostport(server):
    host, _, port = server.rpartition(":")
    if not host or not port.isdigit():
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

        from serving.tensor_codec import array_to_proto, proto_to_array

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

    def predict_photos(self, photos, model_name=MODEL, keys=None, version=None):
        """Encoded photos -> one {"key", "num_faces", "faces"} per photo (predict_photo)."""
        out = self.predict_raw(_grpc_inputs(photos, keys), model_name, contract.PREDICT_PHOTO,
                               version)
        return photo_answers.photo_faces(out)

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
        self.host, self.port = _split_hostport(server)
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
        except ValueError:
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

    def predict(self, images, model_name=MODEL, keys=None, version=None):
        inputs = _rest_inputs(images, keys)
        out = self.predict_json({"signature_name": DEFAULT_SIGNATURE, "inputs": inputs},
                                model_name, version)["outputs"]
        return _rows(out, len(inputs[contract.IMAGE_BYTES]))

    def predict_photos(self, photos, model_name=MODEL, keys=None, version=None):
        """Encoded photos -> one {"key", "num_faces", "faces"} per photo (predict_photo)."""
        out = self.predict_json({"signature_name": contract.PREDICT_PHOTO,
                                 "inputs": _rest_inputs(photos, keys)},
                                model_name, version)["outputs"]
        return photo_answers.photo_faces(out)

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


def _read(paths):
    """[(path, bytes)] of the files; prints the error and returns None when one is unreadable."""
    try:
        return [(path, open(path, "rb").read()) for path in paths]
    except OSError as e:
        print(f"error: {e}", file=sys.stderr)
        return None


def _predict_photos(client, files, args):
    """[(path, bytes, photo answer or ClientError)]: a batch in one request; when it is
    refused (e.g. one photo over the pixel limit), photo by photo, so only that one fails."""
    paths = [path for path, _ in files]
    try:
        answers = client.predict_photos([data for _, data in files], args.model_name,
                                        keys=paths, version=args.model_version)
    except ClientError as e:
        if len(files) == 1 or e.code in ("UNAVAILABLE", "NOT_FOUND", 404):
            return [(path, data, e) for path, data in files]
        return [one for item in files for one in _predict_photos(client, [item], args)]
    return [(path, data, answer) for (path, data), answer in zip(files, answers)]


def _print_photo(path, data, answer, args, drawn):
    for line in prediction_line.photo_lines(path, answer["faces"]):
        print(line)
    if args.draw_dir:
        from faces import drawing

        try:
            picture = drawing.draw(data, answer["faces"],
                                   [prediction_line.face_label(f) for f in answer["faces"]])
            drawing.save(picture, args.draw_dir, path, drawn)
        except (ValueError, OSError) as e:  # PIL cannot read it, or the directory is not writable
            print(f"warning: {path}: not drawn: {e}", file=sys.stderr)


def main(argv=None):
    p = argparse.ArgumentParser(description="Predict age (and gender) of face images with a "
                                            "served model.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="JPEG/PNG files")
    p.add_argument("--server", default=None,
                   help="host:port (default localhost:8500 for gRPC, localhost:8501 for REST)")
    p.add_argument("--protocol", choices=("grpc", "rest"), default="grpc")
    p.add_argument("--model_name", default=MODEL)
    p.add_argument("--model_version", type=int, default=None)
    p.add_argument("--batch_size", type=int, default=16, help="images per request")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds per request")
    p.add_argument("--photos", action="store_true",
                   help="the images are ordinary photos: find the faces in them (the model's "
                        "predict_photo signature) and print one line per face")
    p.add_argument("--draw_dir", default=None,
                   help="with --photos: write a copy of each photo with its faces' boxes and "
                        "ages drawn on it into this directory")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    if args.draw_dir and not args.photos:
        p.error("--draw_dir needs --photos")
    server = args.server or (f"localhost:{contract.DEFAULT_GRPC_PORT}" if args.protocol == "grpc"
                             else f"localhost:{contract.DEFAULT_REST_PORT}")
    client = GrpcClient(server, args.timeout) if args.protocol == "grpc" else RestClient(
        server, args.timeout)
    status = 0
    drawn = set()
    try:
        for start in range(0, len(args.images), args.batch_size):
            files = _read(args.images[start:start + args.batch_size])
            if files is None:
                return 2
            if args.photos:
                for path, data, answer in _predict_photos(client, files, args):
                    if isinstance(answer, ClientError):
                        print(f"error: {args.protocol} {server}: {path}: {answer}",
                              file=sys.stderr)
                        status = 1
                    else:
                        _print_photo(path, data, answer, args, drawn)
                continue
            paths = [path for path, _ in files]
            try:
                predictions = client.predict([data for _, data in files], args.model_name,
                                             keys=paths, version=args.model_version)
            except ClientError as e:
                print(f"error: {args.protocol} {server}: {e}", file=sys.stderr)
                status = 1
                continue
            for path, prediction in zip(paths, predictions):
                print(prediction_line.answer_line(path, prediction))
    finally:
        client.close()
    return status


if __name__ == "__main__":
    sys.exit(main())
