"""The protocol-independent serving core that the REST and gRPC front ends share.

Owns request semantics once for both protocols: resolving model name/version/signature,
per-request validation before batching (e.g. image bytes that are not an image are
rejected here, with a clear INVALID_ARGUMENT, before they can reach a batch), output
filtering, and routing through the batching queue (or straight to the model when
batching is off).
"""
from serving.errors import invalid

# Leading bytes of the formats tf.io.decode_image reads (JPEG, PNG, GIF, BMP, WebP).
_IMAGE_MAGIC = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")


def looks_like_image(data):
    return data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP")


class ServingCore:
    def __init__(self, store, batcher=None, request_timeout=30.0):
        self.store = store
        self.batcher = batcher
        self.request_timeout = request_timeout

    def model(self, name, version=None):
        return self.store.get(name, version)

    def predict(self, model, signature_name, inputs, output_filter=()):
        """Runs one validated request; returns {output name: ndarray}."""
        signature_name = signature_name or "serving_default"
        sd = model.signature_def(signature_name)
        for name, array in inputs.items():
            if name.endswith("image_bytes") and array.dtype == object:
                for i, value in enumerate(array.reshape(-1)):
                    if not looks_like_image(value):
                        raise invalid(f"input '{name}'[{i}] is not a JPEG/PNG/GIF/BMP/WebP image "
                                      f"({len(value)} bytes starting {value[:8]!r})")
        unknown = sorted(set(output_filter) - set(sd.outputs))
        if unknown:
            raise invalid(f"output_filter {unknown} not in the signature's outputs "
                          f"{sorted(sd.outputs)}")
        if self.batcher is not None:
            outputs = self.batcher.submit(model, signature_name, inputs,
                                          timeout=self.request_timeout)
        else:
            outputs = model.run(signature_name, inputs)
        if output_filter:
            outputs = {k: v for k, v in outputs.items() if k in set(output_filter)}
        return outputs


def status_response(store, name, version=None):
    """GetModelStatusResponse for a model (all known versions, or one)."""
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    for v, state, code, message in store.statuses(name, version):
        entry = response.model_version_status.add()
        entry.version = v
        entry.state = get_model_status_pb2.ModelVersionStatus.State.Value(state)
        entry.status.error_code = _error_code(code)
        entry.status.error_message = message
    return response


def _error_code(name):
    from tensorflow.core.protobuf import error_codes_pb2

    return error_codes_pb2.Code.Value(name) if name in error_codes_pb2.Code.keys() else 2


def metadata_response(model):
    """GetModelMetadataResponse with the `signature_def` metadata field, as TF Serving."""
    from tensorflow_serving.apis import get_model_metadata_pb2

    response = get_model_metadata_pb2.GetModelMetadataResponse()
    response.model_spec.name = model.name
    response.model_spec.version.value = model.version
    sig_map = get_model_metadata_pb2.SignatureDefMap()
    for key, sd in model.signature_defs.items():
        sig_map.signature_def[key].CopyFrom(sd)
    response.metadata["signature_def"].Pack(sig_map)
    return response
