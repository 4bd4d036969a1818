"""What a trained model is: its heads, input size and label settings, and how to read its outputs.

The contract between the trainer (which writes it), the export (which builds serving
signatures from it) and the evaluation tool:

- The trainer leaves in `--job_dir`: `model.keras` (loadable with
  `keras.models.load_model(path, compile=False)` after `import trainer.model`) and
  `model_spec.json` (this dataclass).
- The Keras model takes one input, float32 [N, img_dim, img_dim, 3] pixels in 0..255 (the
  output of `agegender.preprocessing.model_input`), and returns a dict of float32 outputs
  named by the constants below: exactly one age head, plus `gender` if `predict_gender`.
"""
import dataclasses
import json

import numpy as np

from agegender import schema

# Output names of the Keras model (and of the serving signatures that wrap it).
AGE_DISTRIBUTION = "age_distribution"  # classification: softmax over schema.NUM_AGE_BINS
AGE_REGRESSION = "age_scaled"  # regression: age / REGRESSION_SCALE, shape [N, 1]
AGE_RANGE = "age_range"  # range mode: softmax over NUM_AGE_RANGES
GENDER = "gender"  # softmax over 2 (0 male, 1 female)

REGRESSION_SCALE = 100.0
AGE_RANGE_WIDTH = 5
# Ranges 0-4, 5-9, ..., 95-99 and a last one for 100 and above.
NUM_AGE_RANGES = schema.MAX_AGE_BIN // AGE_RANGE_WIDTH + 1

TYPES = ("classification", "regression")
SPEC_FILE = "model_spec.json"
MODEL_FILE = "model.keras"


@dataclasses.dataclass
class ModelSpec:
    type: str = "classification"
    range_mode: bool = False
    predict_gender: bool = False
    img_dim: int = 128
    age_deviation: float = 5.0
    base_model: str = "MobileNetV2"
    alpha: float = 1.0

    def __post_init__(self):
        if self.type not in TYPES:
            raise ValueError(f"model type must be one of {TYPES}, got {self.type!r}")
        if self.range_mode and self.type != "classification":
            raise ValueError("range mode is a classification over age ranges")

    @property
    def age_output(self):
        if self.range_mode:
            return AGE_RANGE
        return AGE_DISTRIBUTION if self.type == "classification" else AGE_REGRESSION

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        values = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})


def age_to_range(age):
    """Age in years -> range class index (NumPy or Python ints)."""
    return np.minimum(np.asarray(age) // AGE_RANGE_WIDTH, NUM_AGE_RANGES - 1)


def range_midpoints():
    """The age each range class stands for (its centre; the last, open range: 102)."""
    starts = np.arange(NUM_AGE_RANGES, dtype=np.float64) * AGE_RANGE_WIDTH
    return starts + (AGE_RANGE_WIDTH - 1) / 2.0


def ages_from_outputs(outputs, spec):
    """Age in years [N] from the model's output dict (NumPy or TF tensors, float64/32).

    classification: the expected value over the bins; regression: the scaled output times
    the scale; range mode: the expected value of the range midpoints.
    """
    import tensorflow as tf

    if spec.range_mode:
        probs = tf.cast(outputs[AGE_RANGE], tf.float32)
        return tf.linalg.matvec(probs, tf.constant(range_midpoints(), tf.float32))
    if spec.type == "classification":
        probs = tf.cast(outputs[AGE_DISTRIBUTION], tf.float32)
        return tf.linalg.matvec(probs, tf.range(probs.shape[-1], dtype=tf.float32))
    return tf.reshape(tf.cast(outputs[AGE_REGRESSION], tf.float32), [-1]) * REGRESSION_SCALE
