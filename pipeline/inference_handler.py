"""Beam's RunInference on the project's model: a `ModelHandler` over the Python API.

`AnalyzerHandler(model, crops=False)` loads `agegender.FaceAnalyzer.load(model)` (an
exported SavedModel, a version or base directory, a trainer job dir, a .tflite file or a
TF Serving address) and answers a batch of encoded photos with one model call:
`analyze_batch` (the SavedModel's `predict_photo` signature: every face found, aligned and
answered inside the model), or with `crops=True` `estimate_crops` (`serving_default`, for
images that already are aligned face crops). Each example is the photo's bytes; the
inference is its list of `agegender.Face` (a crop: one face, box None).

Why not Beam's own TensorFlow handlers (`apache_beam.ml.inference.tensorflow_inference`):
they load a Keras model (or a SavedModel through tensorflow_hub's KerasLayer) and call it
on tensors; they cannot pick a signature, and `predict_photo` takes encoded bytes and
returns per-photo padded outputs the API already reads (`agegender.photo_answers`).

One model per worker process: `load_model` keeps the analyzer it loads in this module,
keyed by what was asked for, so every RunInference step of a pipeline (the job has more
than one: see `pipeline.annotate`), every thread of the DirectRunner and every new DoFn
copy the DaskRunner makes per bundle get the same loaded model. TensorFlow's session is
thread-safe; nothing is loaded in the process that builds the pipeline.

A photo the model refuses makes `run_inference` raise (`agegender.errors.ImageError`,
carrying the records job's skip reason): RunInference's `with_exception_handling` sends
the batch to its dead-letter output, where the job retries its photos one at a time.

Batch size: `batch_elements_kwargs()` says `min_batch_size`/`max_batch_size` as for
`beam.BatchElements`; `max_batch_bytes` bounds the encoded bytes of one batch.
`pipeline.annotate` forms its batches itself from these (deterministic batches: see there).
"""
import ast
import threading

from apache_beam.ml.inference.base import ModelHandler, PredictionResult

from agegender import image_header

DEFAULT_MAX_BATCH_SIZE = 16  # photos per model call
DEFAULT_MAX_BATCH_BYTES = 64 << 20  # encoded bytes per model call

_LOADED = {}  # (model, max_image_pixels) -> FaceAnalyzer, for this process
_LOAD_LOCK = threading.Lock()


def load(model, max_image_pixels):
    """The `FaceAnalyzer` of `model` in this process, loaded on first use."""
    key = (model, max_image_pixels)
    with _LOAD_LOCK:  # two threads asking at once must not load it twice
        analyzer = _LOADED.get(key)
        if analyzer is None:
            from agegender import FaceAnalyzer

            analyzer = FaceAnalyzer.load(model, max_image_pixels=max_image_pixels)
            _LOADED[key] = analyzer
    return analyzer


class PhotoRefused(ValueError):
    """The model refused a photo of the batch: "<skip reason>: <message>". RunInference's
    dead-letter output keeps only an exception's type and repr (`failure_reason` reads it)."""


def failure_reason(exc_type, exc_repr):
    """A dead letter's exception type and repr -> (skip reason or None, detail)."""
    if exc_type is PhotoRefused:
        prefix = f"{PhotoRefused.__name__}("
        try:
            text = ast.literal_eval(exc_repr[len(prefix):-1])
        except (ValueError, SyntaxError):
            text = exc_repr
        reason, _, detail = str(text).partition(": ")
        return reason, detail[:200]
    return None, f"{getattr(exc_type, '__name__', exc_type)}: {exc_repr}"[:200]


class AnalyzerHandler(ModelHandler):
    """RunInference handler: encoded photos (bytes) -> `PredictionResult(photo, faces)`."""

    def __init__(self, model, *, crops=False, max_image_pixels=image_header.DEFAULT_MAX_PIXELS,
                 min_batch_size=1, max_batch_size=DEFAULT_MAX_BATCH_SIZE,
                 max_batch_bytes=DEFAULT_MAX_BATCH_BYTES):
        if not 1 <= min_batch_size <= max_batch_size:
            raise ValueError(f"batch sizes must satisfy 1 <= min ({min_batch_size}) <= max "
                             f"({max_batch_size})")
        if max_image_pixels <= 0 or max_batch_bytes <= 0:
            raise ValueError("max_image_pixels and max_batch_bytes must be > 0")
        super().__init__(min_batch_size=min_batch_size, max_batch_size=max_batch_size)
        self.model = str(model)
        self.crops = bool(crops)
        self.max_image_pixels = int(max_image_pixels)
        self.max_batch_bytes = int(max_batch_bytes)

    @property
    def max_batch_size(self):
        return self.batch_elements_kwargs()["max_batch_size"]

    @property
    def signature(self):
        """The signature the answers come from."""
        from agegender import serving_contract as contract

        return contract.SERVING_DEFAULT if self.crops else contract.PREDICT_PHOTO

    def load_model(self):
        return load(self.model, self.max_image_pixels)

    def run_inference(self, batch, model, inference_args=None):
        from agegender.errors import ImageError

        photos = list(batch)
        try:
            if self.crops:
                answers = [[face] for face in model.estimate_crops(photos)]
            else:
                answers = model.analyze_batch(photos)
        except ImageError as e:
            raise PhotoRefused(f"{e.reason}: {e}") from e
        return [PredictionResult(photo, faces) for photo, faces in zip(photos, answers)]

    def get_num_bytes(self, batch):
        return sum(len(photo) for photo in batch)

    def get_metrics_namespace(self):
        return "annotate"

    def __repr__(self):
        return f"AnalyzerHandler({self.model!r}, {self.signature})"
