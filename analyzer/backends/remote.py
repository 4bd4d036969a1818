"""TF Serving (or `serving.server`) over gRPC or REST (`analyzer.tf_serving`).

The model's info comes from the server's metadata (its signatures, the version it
serves); refusals of one photo come back as INVALID_ARGUMENT (gRPC) or 400 (REST) and are
`ImageError`s, anything else a `ServerError`.
"""
from agegender.errors import IMAGE_TOO_LARGE, UNDECODABLE, ImageError, ModelLoadError, ServerError
from agegender.results import ModelInfo
from analyzer import tf_serving

_REFUSED = ("INVALID_ARGUMENT", 400)


class RemoteBackend:
    def __init__(self, address, protocol, *, model_name, timeout, version=None):
        try:
            tf_serving.split_hostport(address)
        except ValueError as e:
            raise ModelLoadError(str(e)) from None
        client_class = tf_serving.GrpcClient if protocol == "grpc" else tf_serving.RestClient
        self._client = client_class(address, timeout)
        self._protocol = protocol
        self._model_name = model_name
        self._version = version
        self._info = None
        self._address = address

    @property
    def info(self):
        """Asked of the server on first use (a server that is down fails here, not at load)."""
        if self._info is None:
            self._info = ModelInfo(backend=self._protocol, source=self._address,
                                   model_name=self._model_name, **self._metadata())
        return self._info

    def _metadata(self):
        if self._protocol == "grpc":
            response, signatures = self._client.metadata(self._model_name, self._version)
            return {"version": int(response.model_spec.version.value) or None,
                    "signatures": tuple(sorted(signatures.signature_def))}
        answer = self._client.metadata(self._model_name, self._version)
        try:
            version = answer["model_spec"]["version"]
            names = answer["metadata"]["signature_def"]["signature_def"]
            return {"version": int(version) if version else None,
                    "signatures": tuple(sorted(names))}
        except (KeyError, TypeError, ValueError):
            raise ServerError(None, "the server's metadata answer has no model_spec.version "
                                    "and signature_def") from None

    def _ask(self, method, encoded):
        try:
            return method(encoded, self._model_name, version=self._version)
        except tf_serving.ClientError as e:
            if e.code in _REFUSED:
                reason = IMAGE_TOO_LARGE if "too large" in str(e.message) else UNDECODABLE
                raise ImageError(reason, f"the model refused the image: {e.message}") from None
            raise

    def photos(self, encoded):
        return [answer.faces for answer in self._ask(self._client.photo_answers, encoded)]

    def crops(self, encoded):
        return self._ask(self._client.crop_faces, encoded)

    def close(self):
        self._client.close()
