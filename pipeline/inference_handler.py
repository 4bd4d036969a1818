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
keyed by what was asked for, so every thread of the DirectRunner, every new DoFn copy the
DaskRunner makes per bundle and every job run in the same process (the DirectRunner's
reuses the model the command loaded to check --model) get the same loaded model.
TensorFlow's session is thread-safe.

A batch the model refuses (`agegender.errors.ImageError`, carrying the records job's skip
reason, or any other error: a server down) is answered again one photo at a time, here;
a photo that fails alone is answered with a `Refusal` (its skip reason and detail) instead
of its faces. Why here and not through RunInference's dead-letter output
(`with_exception_handling`): a dead letter is a collection of its own, answered in another
step, so the step that writes a range's Parquet file downstream could never tell whether
the range's last photos were refused or are still to come (`pipeline.annotate`). Answered
here, every photo comes out of RunInference once, in the order it went in, with its faces
or its refusal; the photos of a refused batch are answered alone on every run and runner.

Batch size: `batch_elements_kwargs()` says `min_batch_size`/`max_batch_size` as for
`beam.BatchElements`; `max_batch_bytes` bounds the encoded bytes of one batch.
`pipeline.annotate` forms its batches itself from these (deterministic batches: see there).
"""
import collections
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


def saved_model_info(model):
    """The `ModelInfo` `FaceAnalyzer.load(model)` answers with for an exported SavedModel (a
    version or base directory), read from its files without building the model: for a
    command whose workers load the model themselves (a Dask cluster), where loading it
    once more only for its version, signatures and sha256 costs seconds of the job.
    None when `model` is no SavedModel directory (a job dir, a .tflite file, a server
    address) or cannot be read as one: load it to learn (or to tell the error).

    The ModelInfo is built by its owner (`analyzer.backends.saved_model.model_info`);
    the signature names and the crop size come from saved_model.pb's signature map, which
    holds what the loaded model's `signatures` hold, plus TF's internal `__...` entries.
    A test checks that this equals the loaded analyzer's `info`."""
    model = str(model)
    if model.endswith(".tflite") or ("://" in model and not model.startswith(
            ("gs://", "s3://", "hdfs://"))):
        return None
    from agegender import model_layout
    from agegender import serving_contract as contract
    from analyzer import model_paths
    from analyzer.backends import saved_model

    try:
        if model_paths.is_job_dir(model):
            return None
        directory = model_paths.resolve_saved_model(model)
        signatures = model_layout.serving_meta_graph(directory).signature_def
    except Exception:  # noqa: BLE001 - not a readable SavedModel: loading it tells why
        return None
    image_size = None
    images = signatures[contract.PREDICT_IMAGES].inputs.get(contract.IMAGES) \
        if contract.PREDICT_IMAGES in signatures else None
    if images is not None and len(images.tensor_shape.dim) > 1 \
            and images.tensor_shape.dim[1].size >= 0:
        image_size = images.tensor_shape.dim[1].size
    return saved_model.model_info(directory, signatures, image_size)


INFERENCE_FAILED = "inference_failed"  # a photo the model could not answer, not an ImageError
MAX_DETAIL = 200  # characters of a refusal's detail kept for the report


class Refusal(collections.namedtuple("Refusal", ["reason", "detail"])):
    """The inference of a photo the model could not answer alone: its skip reason (the
    records job's, e.g. `undecodable`, or INFERENCE_FAILED) and a short detail."""


def refusal_of(error):
    """The `Refusal` of an exception the model raised for one photo."""
    from agegender.errors import ImageError

    if isinstance(error, ImageError):
        return Refusal(error.reason, str(error)[:MAX_DETAIL])
    return Refusal(INFERENCE_FAILED, f"{type(error).__name__}: {error!r}"[:MAX_DETAIL])


class AnalyzerHandler(ModelHandler):
    """RunInference handler: encoded photos (bytes) -> `PredictionResult(photo, faces)`
    (`faces`: a `Refusal` for a photo the model could not answer alone)."""

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
        photos = list(batch)
        try:
            answers = self._answer(model, photos)
        except Exception:  # noqa: BLE001 - which photo failed is found out alone
            answers = [self._alone(model, photo) for photo in photos]
        return [PredictionResult(photo, faces) for photo, faces in zip(photos, answers)]

    def _answer(self, model, photos):
        if self.crops:
            return [[face] for face in model.estimate_crops(photos)]
        return model.analyze_batch(photos)

    def _alone(self, model, photo):
        try:
            return self._answer(model, [photo])[0]
        except Exception as e:  # noqa: BLE001 - a skip with its reason, never a crash
            return refusal_of(e)

    def get_num_bytes(self, batch):
        return sum(len(photo) for photo in batch)

    def get_metrics_namespace(self):
        return "annotate"

    def __repr__(self):
        return f"AnalyzerHandler({self.model!r}, {self.signature})"
