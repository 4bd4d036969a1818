"""The protocol-independent serving core that the REST and gRPC front ends share.

Owns request semantics once for both protocols: resolving model name/version/signature,
the per-request limits checked before anything reaches a batch (the task size of
`batching.task_size`, and every encoded image's header against `--max_image_pixels` via
`agegender.image_header`, so bytes that are not an image, or an image that would decode to
gigabytes, get a clear INVALID_ARGUMENT naming the input and row), output filtering,
routing through the batching queue (or straight to the model when batching is off), saying
which row an undecodable image is in when the model refuses a request, and the status
response, which reports the served version as not AVAILABLE while its batch threads
cannot answer.

Memory: one request's rows are bounded by the task size and its tensors by
--max_request_bytes, but a request decodes to several times its size (a JSON array of
numbers to ~10x: a Python float per number), so many large requests at once could still
take gigabytes. `admit` bounds the bytes of requests being decoded and run at once
(--max_inflight_request_bytes, shared by REST and gRPC); a request that does not fit waits
for room, up to the request timeout, then gets UNAVAILABLE.

CPU: what an image costs to decode (and, in `predict_photo`, to search for faces) grows with
its pixels, not its bytes: a 6 KB 1-bit PNG can declare 50 million pixels. `PixelBudget`
admits requests by the pixels their image headers declare (read before anything is decoded),
for REST and gRPC alike: a request over `--max_request_pixels` is refused (413 /
RESOURCE_EXHAUSTED), and one that does not fit in `--max_inflight_pixels` right now is
refused at once (429 / RESOURCE_EXHAUSTED, "retry later") instead of being queued into a
timeout. A quarter of the budget is kept for small requests (face crops, small photos), so a
flood of large photos cannot lock out the ordinary ones.
"""
import contextlib
import threading

from agegender import image_header
from agegender import serving_contract as contract
from serving import batching
from serving.errors import ServingError, busy, client_message, invalid


def is_image_input(name, array):
    """Inputs the server checks image headers of: string tensors named *image_bytes."""
    return name.endswith(contract.IMAGE_BYTES) and array.dtype == object


DEFAULT_MAX_INFLIGHT_REQUEST_BYTES = 32 << 20
# One photo at the default --max_image_pixels (50 MP) and some room; ~0.5-0.7 CPU-s of
# decoding for a 50 MP PNG (docs/serving.md).
DEFAULT_MAX_REQUEST_PIXELS = 64_000_000
# Decoded at once by all clients: on 2 cores, ~1-1.5 CPU-s of decoding, so a request admitted
# behind it waits about a second, not a timeout (docs/serving.md).
DEFAULT_MAX_INFLIGHT_PIXELS = 100_000_000


class PixelBudget:
    """The image pixels of the requests being run, all clients together.

    A request of more than 1/16 of the budget ("large") is admitted only while large and
    small requests together stay within 3/4 of it; a small one, while all stay within the
    whole. So large requests never take the last quarter, and a request needing more than is
    free is refused at once (`busy`), never queued."""

    def __init__(self, max_request_pixels=DEFAULT_MAX_REQUEST_PIXELS,
                 max_inflight_pixels=DEFAULT_MAX_INFLIGHT_PIXELS):
        if max_request_pixels < 1 or max_inflight_pixels < 1:
            raise ValueError("pixel limits must be positive")
        self.max_request_pixels = max_request_pixels
        self.max_inflight_pixels = max_inflight_pixels
        self.large_share = max_inflight_pixels * 3 // 4
        if max_request_pixels > self.large_share:
            raise ValueError(
                f"--max_request_pixels ({max_request_pixels}) must be at most 3/4 of "
                f"--max_inflight_pixels ({max_inflight_pixels}): a larger request could never "
                "be admitted")
        self.inflight = 0
        self.refused = 0
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def admit(self, pixels):
        if pixels > self.max_request_pixels:
            raise ServingError(
                "RESOURCE_EXHAUSTED", f"the request's images declare {pixels:,} pixels, over "
                f"the limit of {self.max_request_pixels:,} per request (--max_request_pixels); "
                "send fewer or smaller images per request")
        if pixels:
            limit = (self.max_inflight_pixels if pixels <= self.max_inflight_pixels // 16
                     else self.large_share)
            with self._lock:
                if self.inflight + pixels > limit:
                    self.refused += 1
                    raise busy(
                        f"the server is decoding {self.inflight:,} pixels of other requests; "
                        f"this one's {pixels:,} do not fit its budget of "
                        f"{self.max_inflight_pixels:,} (--max_inflight_pixels); retry later")
                self.inflight += pixels
        try:
            yield
        finally:
            if pixels:
                with self._lock:
                    self.inflight -= pixels


class ServingCore:
    def __init__(self, store, batcher=None, request_timeout=30.0, max_batch_size=16,
                 max_image_pixels=image_header.DEFAULT_MAX_PIXELS,
                 max_inflight_request_bytes=DEFAULT_MAX_INFLIGHT_REQUEST_BYTES,
                 max_request_pixels=DEFAULT_MAX_REQUEST_PIXELS,
                 max_inflight_pixels=DEFAULT_MAX_INFLIGHT_PIXELS):
        self.store = store
        self.batcher = batcher
        self.request_timeout = request_timeout
        # Rows per request: the batcher's max_batch_size when batching is on; with batching
        # off, the same flag still bounds what one request makes the model allocate.
        self.max_batch_size = batcher.max_batch_size if batcher is not None else max_batch_size
        self.max_image_pixels = max_image_pixels
        self.max_inflight_request_bytes = max_inflight_request_bytes
        self._inflight = 0
        self._inflight_cv = threading.Condition()
        self.pixels = PixelBudget(max_request_pixels, max_inflight_pixels)

    @contextlib.contextmanager
    def admit(self, nbytes):
        """Holds `nbytes` of the in-flight budget while a request is decoded and run.

        A request larger than the whole budget runs when nothing else is in flight."""
        limit = self.max_inflight_request_bytes
        with self._inflight_cv:
            if not self._inflight_cv.wait_for(
                    lambda: self._inflight == 0 or self._inflight + nbytes <= limit,
                    timeout=self.request_timeout):
                raise ServingError(
                    "UNAVAILABLE", f"the server is decoding {self._inflight} bytes of other "
                    f"requests, its limit being {limit} (--max_inflight_request_bytes); retry "
                    "later")
            self._inflight += nbytes
        try:
            yield
        finally:
            with self._inflight_cv:
                self._inflight -= nbytes
                self._inflight_cv.notify_all()

    def model(self, name, version=None):
        return self.store.get(name, version)

    def predict(self, model, signature_name, inputs, output_filter=()):
        """Runs one validated request; returns {output name: ndarray}."""
        signature_name = signature_name or contract.SERVING_DEFAULT
        sd = model.signature_def(signature_name)
        batching.task_size(inputs, self.max_batch_size)
        images = [(f"input '{name}'[{i}]", value) for name, array in inputs.items()
                  if is_image_input(name, array) for i, value in enumerate(array.reshape(-1))]
        pixels = sum(self._declared_pixels(where, value) for where, value in images)
        unknown = sorted(set(output_filter) - set(sd.outputs))
        if unknown:
            raise invalid(f"output_filter {unknown} not in the signature's outputs "
                          f"{sorted(sd.outputs)}")
        try:
            with self.pixels.admit(pixels):
                # The whole check (a decode cost the pixels do not bound, e.g. a JPEG's
                # scans) can cost a few ms per image itself: run within the budget.
                for where, value in images:
                    try:
                        image_header.check(value, self.max_image_pixels)
                    except ValueError as e:  # NotAnImage, ImageTooLarge
                        raise invalid(f"{where}: {e}") from None
                if self.batcher is not None:
                    outputs = self.batcher.submit(model, signature_name, inputs,
                                                  timeout=self.request_timeout)
                else:
                    outputs = model.run(signature_name, inputs)
        except ServingError as e:
            if e.code == "INVALID_ARGUMENT":
                raise self._which_image(inputs, e) from None
            raise
        if output_filter:
            outputs = {k: v for k, v in outputs.items() if k in set(output_filter)}
        return outputs

    def _declared_pixels(self, where, value):
        """An image's pixels from its header alone (cheap), refused over --max_image_pixels."""
        size = image_header.read_size(value)
        try:
            if size is None:
                image_header.check(value, self.max_image_pixels)  # raises NotAnImage
            elif self.max_image_pixels and size.pixels > self.max_image_pixels:
                raise image_header.ImageTooLarge(size, self.max_image_pixels)
        except ValueError as e:
            raise invalid(f"{where}: {e}") from None
        return size.pixels

    def _which_image(self, inputs, error):
        """The model refused the request: if an image does not decode, say which one.

        Only on this failure path, and one image at a time (each already within the pixel
        limit), so it costs nothing on success and its memory is one image's.
        """
        import tensorflow as tf

        from agegender import preprocessing

        for name, array in inputs.items():
            if not is_image_input(name, array):
                continue
            for i, value in enumerate(array.reshape(-1)):
                try:
                    preprocessing.decode_rgb(  # with a limit even when the server has none
                        tf.constant(value),
                        max_pixels=self.max_image_pixels or image_header.DEFAULT_MAX_PIXELS)
                except tf.errors.OpError as e:
                    fmt = (image_header.sniff_format(value) or "image").upper()
                    return invalid(f"input '{name}'[{i}]: {client_message(e.message)} "
                                   f"(a truncated or corrupt {fmt} of {len(value)} bytes)")
        return error

    def health(self):
        """None when predictions are being answered, else why not."""
        return self.batcher.health() if self.batcher is not None else None

    def status_response(self, name, version=None):
        """GetModelStatusResponse for a model (all known versions, or one).

        The served version is AVAILABLE only while predictions can be answered: when every
        batch thread is stuck, it is reported as UNKNOWN with error UNAVAILABLE and why,
        so a health check that looks for AVAILABLE sees the server is not serving.
        """
        from tensorflow_serving.apis import get_model_status_pb2

        statuses = self.store.statuses(name, version)
        problem = self.health()
        response = get_model_status_pb2.GetModelStatusResponse()
        for v, state, code, message in statuses:
            if state == "AVAILABLE" and problem:
                state, code, message = "UNKNOWN", "UNAVAILABLE", problem
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
