"""Calling a model on batches of encoded images, as the evaluation does.

`SavedModelRunner` calls the exported SavedModel's own `serving_default` signature
(encoded bytes in), so what is measured is what TF Serving would answer. A runner returns
{output name: ndarray} per batch; `predict` isolates an undecodable image so that it alone
is skipped.
"""
import numpy as np
import tensorflow as tf

from agegender import model_layout

class EvaluationError(Exception):
    """A problem with the arguments or the model that stops the evaluation."""


def resolve_saved_model(path):
    """A version directory, or the newest numeric version under a TF Serving base path."""
    if model_layout.is_saved_model_dir(path):
        return path
    if not tf.io.gfile.isdir(path):
        raise EvaluationError(f"--model {path!r} does not exist")
    version = model_layout.newest_version(path)
    if version is None:
        raise EvaluationError(f"--model {path!r} holds no saved_model.pb and no numeric version "
                              "directory with one (export with `python -m export.export_model`)")
    return model_layout.version_dir(path, version)


class SavedModelRunner:
    """Calls the SavedModel's serving_default signature on batches of encoded images."""

    def __init__(self, model_dir):
        self.model_dir = resolve_saved_model(model_dir)
        self._loaded = tf.saved_model.load(self.model_dir)
        if "serving_default" not in self._loaded.signatures:
            raise EvaluationError(f"{self.model_dir} has no serving_default signature")
        self._fn = self._loaded.signatures["serving_default"]
        _, kwargs = self._fn.structured_input_signature
        if "image_bytes" not in kwargs:
            raise EvaluationError(f"{self.model_dir}: serving_default takes {sorted(kwargs)}, "
                                  "expected an `image_bytes` input")
        self._needs_key = "key" in kwargs

    def __call__(self, image_bytes):
        """{output: np.ndarray} for a list of encoded images; raises InvalidArgumentError."""
        inputs = {"image_bytes": tf.constant(image_bytes, tf.string)}
        if self._needs_key:
            inputs["key"] = tf.constant([str(i) for i in range(len(image_bytes))])
        return {k: v.numpy() for k, v in self._fn(**inputs).items()}

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
