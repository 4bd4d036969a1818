"""The Python API's answer types (`agegender.FaceAnalyzer`), TF-free.

- `Face`: one face's answer: where it is (box, landmarks, detector score; None for an
  aligned crop given as such) and what the model says (age with its spread and
  distribution, gender with its probability).
- `ModelInfo`: what was loaded (backend, version, signatures, sha256 of saved_model.pb,
  input image size).

Plain Python and NumPy: a REST client, the web page and the Beam job's workers read them
without TensorFlow. `agegender.photo_answers` is the one place that builds `Face`s from a
model's outputs.
"""
import dataclasses

import numpy as np

from agegender import serving_contract as contract

# The gender classes by the model's letter (serving_contract.GENDER_LETTERS order).
GENDER_NAMES = {"M": "male", "F": "female"}
GENDERS = tuple(GENDER_NAMES[letter] for letter in contract.GENDER_LETTERS)  # index = class


def _pair(value):
    return None if value is None else (float(value[0]), float(value[1]))


@dataclasses.dataclass(frozen=True, kw_only=True)
class Face:
    """One face. `age` is the answer (the calibrated distribution's mean, or the
    regression's point); `gender_probability` is the probability of `gender`."""

    box: tuple[float, float, float, float] | None = None  # x1, y1, x2, y2, photo pixels
    landmarks: tuple[tuple[float, float], ...] | None = None  # eyes, nose, mouth corners
    score: float | None = None  # the detector's face probability
    age: float
    age_std: float | None = None
    age_interval_50: tuple[float, float] | None = None  # (first, last year)
    age_interval_80: tuple[float, float] | None = None
    # Probabilities over ages 0..N-1 (index = age) or over the range model's ranges;
    # left out of == and hash (an array has no single truth value) and of repr (101 numbers).
    age_distribution: np.ndarray | None = dataclasses.field(default=None, compare=False,
                                                           repr=False)
    gender: str | None = None  # "male" | "female"; None: the model has no gender head
    gender_probability: float | None = None  # of `gender`, calibrated

    def __post_init__(self):
        if self.gender is not None and self.gender not in GENDERS:
            raise ValueError(f"gender must be one of {GENDERS} or None, got {self.gender!r}")
        if self.age_distribution is not None:
            distribution = np.array(self.age_distribution, np.float32)
            distribution.setflags(write=False)  # frozen means frozen
            object.__setattr__(self, "age_distribution", distribution)

    @property
    def gender_index(self):
        """0 (male), 1 (female) or None: the class index the records and metrics use."""
        return None if self.gender is None else GENDERS.index(self.gender)

    @property
    def area(self):
        """The box's area in pixels (0 without a box)."""
        if self.box is None:
            return 0.0
        x1, y1, x2, y2 = self.box
        return max(0.0, x2 - x1) * max(0.0, y2 - y1)

    def to_dict(self, distribution=True):
        """JSON-ready: tuples as lists, the distribution as a list (left out with
        `distribution=False`)."""
        out = {
            "box": None if self.box is None else list(self.box),
            "landmarks": None if self.landmarks is None else [list(p) for p in self.landmarks],
            "score": self.score, "age": self.age, "age_std": self.age_std,
            "age_interval_50": None if self.age_interval_50 is None else list(self.age_interval_50),
            "age_interval_80": None if self.age_interval_80 is None else list(self.age_interval_80),
            "gender": self.gender, "gender_probability": self.gender_probability,
        }
        if distribution:
            out["age_distribution"] = (None if self.age_distribution is None
                                       else [float(p) for p in self.age_distribution])
        return out


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelInfo:
    """What an analyzer answers with. `version`: the SavedModel's version directory number
    (or the server's), None when unknown; `saved_model_sha256`: of saved_model.pb where
    there is one in reach (in-process SavedModel); `image_size`: the crop side the age
    network takes, None when the backend cannot tell (a server)."""

    backend: str  # "saved_model" | "litert" | "grpc" | "rest"
    source: str  # the path or address loaded
    version: int | None = None
    signatures: tuple[str, ...] = ()
    saved_model_sha256: str | None = None
    image_size: int | None = None
    model_name: str | None = None  # the served model's name (servers only)

    def to_dict(self):
        out = dataclasses.asdict(self)
        out["signatures"] = list(self.signatures)
        return out
