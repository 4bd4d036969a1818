"""Calling a model on batches of encoded images, as the evaluation does.

`SavedModelRunner` calls the exported SavedModel's own `serving_default` signature
(encoded bytes in), so what is measured is what TF Serving would answer. `LiteRTRunner`
calls a LiteRT file (`export.export_litert`) on the `ai_edge_litert` runtime, with the
pixels of `agegender.preprocessing.model_input` (the function the SavedModel's signature
runs), and turns its raw outputs into the SavedModel's output dict with `agegender.heads`.
`runner_for(path)` picks one by the path. A runner returns {output name: ndarray} per
batch; `predict` isolates an undecodable image so that it alone is skipped.

`PhotoRunner` asks the SavedModel's `predict_photo` signature about whole photos (faces
found and aligned in the graph) through the Python API (`agegender.FaceAnalyzer`):
`predict_photos` -> per photo {"num_faces", "faces": [agegender.Face]} or the
`agegender.ImageError` that refused it. The API's `ModelLoadError`s are `EvaluationError`s
here.
"""
import numpy as np
import tensorflow as tf

from agegender import serving_contract as contract
from agegender.errors import ImageError, ModelLoadError

LITERT_SUFFIX = ".tflite"


class EvaluationError(Exception):
    """A problem with the arguments or the model that stops the evaluation."""


def resolve_saved_model(path):
    """A version directory, or the newest numeric version under a TF Serving base path."""
    from analyzer import model_paths

    try:
        return model_paths.resolve_saved_model(path)
    except ModelLoadError as e:
        raise EvaluationError(f"--{e}") from None


class _Runner:
    model_path = None

    def __call__(self, image_bytes):
        raise NotImplementedError

    def predict(self, image_bytes):
        """Like __call__, but an undecodable image fails alone: returns (outputs, ok mask)."""
        try:
            out = self(image_bytes)
            return out, np.ones(len(image_bytes), bool)
        except tf.errors.InvalidArgumentError:
            # One bad image fails the whole batch: retry one by one to find it.
            rows, ok = [], np.zeros(len(image_bytes), bool)
            for i, data in enumerate(image_bytes):
                try:
                    rows.append(self([data]))
                    ok[i] = True
                except tf.errors.InvalidArgumentError:
                    pass
            if not rows:
                return {}, ok
            return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}, ok


class SavedModelRunner(_Runner):
    """Calls the SavedModel's serving_default signature on batches of encoded images."""

    def __init__(self, model_dir):
        self.model_dir = self.model_path = resolve_saved_model(model_dir)
        self._loaded = tf.saved_model.load(self.model_dir)
        if contract.SERVING_DEFAULT not in self._loaded.signatures:
            raise EvaluationError(f"{self.model_dir} has no serving_default signature")
        self._fn = self._loaded.signatures[contract.SERVING_DEFAULT]
        _, kwargs = self._fn.structured_input_signature
        if contract.IMAGE_BYTES not in kwargs:
            raise EvaluationError(f"{self.model_dir}: serving_default takes {sorted(kwargs)}, "
                                  "expected an `image_bytes` input")
        self._needs_key = contract.KEY in kwargs

    def __call__(self, image_bytes):
        """{output: np.ndarray} for a list of encoded images; raises InvalidArgumentError."""
        inputs = {contract.IMAGE_BYTES: tf.constant(image_bytes, tf.string)}
        if self._needs_key:
            inputs[contract.KEY] = tf.constant([str(i) for i in range(len(image_bytes))])
        return {k: v.numpy() for k, v in self._fn(**inputs).items()}


class LiteRTRunner(_Runner):
    """Calls a LiteRT file's `serving_default` (one image per invocation) on encoded images:
    the Python API's LiteRT age model (`analyzer.backends.litert.LiteRTAgeModel`).

    The file's metadata (`export.litert_metadata.read_metadata`) gives the model's spec: the
    input size and the heads that turn the raw outputs into `age`, `age_distribution` /
    `age_range`, `gender` and `gender_probability`, exactly as the SavedModel does.
    `max_image_pixels`: images declaring more are refused before decoding, as the
    SavedModel's signature does.
    """

    def __init__(self, model_path, num_threads=None, max_image_pixels=None):
        from analyzer.backends.litert import LiteRTAgeModel

        try:
            self._model = LiteRTAgeModel(model_path, num_threads, max_image_pixels)
        except ModelLoadError as e:
            raise EvaluationError(f"--{e}" if str(e).startswith("model ") else str(e)) from None
        self.model_path = self.model_dir = model_path
        self.metadata = self._model.metadata
        self.spec = self._model.spec

    def __call__(self, image_bytes):
        """{output: np.ndarray} for a list of encoded images; raises InvalidArgumentError."""
        return self._model(image_bytes)


class PhotoRunner:
    """Asks the SavedModel's predict_photo signature about batches of encoded photos."""

    def __init__(self, model_dir, max_image_pixels=None):
        from analyzer.face_analyzer import FaceAnalyzer

        limits = {} if max_image_pixels is None else {"max_image_pixels": max_image_pixels}
        try:
            self._analyzer = FaceAnalyzer.from_saved_model(resolve_saved_model(model_dir),
                                                           **limits)
        except ModelLoadError as e:
            raise EvaluationError(str(e)) from None
        self.model_dir = self.model_path = self._analyzer.info.source
        if contract.PREDICT_PHOTO not in self._analyzer.info.signatures:
            raise EvaluationError(
                f"{self.model_dir} has no {contract.PREDICT_PHOTO} signature (photos need the "
                "face detector: export the model again with `python -m export.export_model`)")

    def __call__(self, photos):
        """{"num_faces", "faces": [Face]} per photo; raises ImageError."""
        return [_answer(faces) for faces in self._analyzer.analyze_batch(photos)]

    def predict_photos(self, photos):
        """Like __call__, but a photo that is refused (not an image, over the pixel limit)
        fails alone: its entry is the `agegender.ImageError`."""
        return [answer if isinstance(answer, ImageError) else _answer(answer)
                for answer in self._analyzer.analyze_batch(photos, on_error="return")]


def _answer(faces):
    return {"num_faces": len(faces), "faces": faces}


def runner_for(path, max_image_pixels=None, photos=False):
    """A PhotoRunner with `photos`, else a LiteRTRunner for a .tflite file, else a
    SavedModelRunner."""
    if str(path).endswith(LITERT_SUFFIX):
        if photos:
            raise EvaluationError(f"{path}: a LiteRT file has no face detector; evaluate "
                                  "photos with the SavedModel (its predict_photo signature)")
        return LiteRTRunner(path, max_image_pixels=max_image_pixels)
    if photos:
        return PhotoRunner(path, max_image_pixels)
    return SavedModelRunner(path)
