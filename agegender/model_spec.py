"""What a trained model is: its heads, input size and label settings.

The contract between the trainer (which writes it into the job dir, `agegender.job_dir`),
the export (which builds serving signatures from it) and the evaluation tool:

- The Keras model takes one input, float32 [N, img_dim, img_dim, 3] pixels in 0..255 (the
  output of `agegender.preprocessing.model_input`), and returns a dict of float32 outputs
  named by its heads (`agegender.heads`): exactly one age head, plus the gender head if
  `predict_gender`.
"""
import dataclasses
import json

from agegender import age_histogram, heads

TYPES = ("classification", "regression")
# Input sides a face model can have: below 16 px no backbone sees a face, above 1024 px one
# image alone is gigabytes of activations. A spec outside is a damaged file, refused before
# anything allocates pixels for it.
MIN_IMG_DIM, MAX_IMG_DIM = 16, 1024
# What defines the model's shape and heads: a spec file without them is not a spec (the
# other fields were added over time and keep their defaults in older files).
REQUIRED_KEYS = ("type", "range_mode", "predict_gender", "img_dim")


@dataclasses.dataclass
class ModelSpec:
    type: str = "classification"
    range_mode: bool = False
    predict_gender: bool = False
    img_dim: int = 128
    age_deviation: float = age_histogram.DEFAULT_DEVIATION
    base_model: str = "MobileNetV2"
    alpha: float = 1.0
    # Calibration (fitted on the validation split after training, `trainer.calibration`):
    # the softmax temperatures that make the age intervals and the gender probability honest.
    age_temperature: float = 1.0
    gender_temperature: float = 1.0
    # The age prior correction (`agegender.age_prior`, set after training by
    # `--age_prior_correction`): its power, and the weight of each class of the age
    # distribution that the answers multiply the distribution by (None: as trained).
    age_prior_correction: float = 0.0
    age_prior_weights: list = None
    # Inference (agegender.inference): average the outputs over the face and its mirror.
    test_time_flip: bool = False
    # How the training faces were framed: the records' face_alignment metadata
    # (`faces.photo.describe`: template points and sha256, face choice, detector) when they
    # were built with --align_faces; None when they are the dataset's own crops. The
    # export's predict_photo aligns faces on this template (None: the shipped one, learnt
    # from those crops).
    face_alignment: dict = None

    def __post_init__(self):
        if isinstance(self.img_dim, bool) or not isinstance(self.img_dim, int):
            raise ValueError(f"img_dim must be a whole number of pixels, got {self.img_dim!r}")
        if not MIN_IMG_DIM <= self.img_dim <= MAX_IMG_DIM:
            raise ValueError(f"img_dim must be {MIN_IMG_DIM}..{MAX_IMG_DIM} pixels, got "
                             f"{self.img_dim}")
        for name in ("range_mode", "predict_gender", "test_time_flip"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.type not in TYPES:
            raise ValueError(f"model type must be one of {TYPES}, got {self.type!r}")
        if self.range_mode and self.type != "classification":
            raise ValueError("range mode is a classification over age ranges")
        if self.age_prior_weights is not None:
            head = heads.age_head(self)
            if isinstance(head, heads.RegressionHead):
                raise ValueError("age_prior_weights: a regression head has no distribution "
                                 "to correct")
            if len(self.age_prior_weights) != head.units:
                raise ValueError(f"age_prior_weights: one weight per class of the {head.kind} "
                                 f"head ({head.units}), got {len(self.age_prior_weights)}")

    @property
    def age_output(self):
        """The Keras output name of the age head."""
        return heads.age_head(self).output

    def to_json(self):
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text):
        """The spec `to_json` wrote; ValueError (one line) for anything else."""
        try:
            values = json.loads(text)
        except ValueError as e:  # JSONDecodeError, or bytes that are not UTF-8
            raise ValueError(f"not valid JSON ({e})") from None
        if not isinstance(values, dict):
            raise ValueError(f"a JSON object was expected, got {type(values).__name__}")
        missing = [k for k in REQUIRED_KEYS if k not in values]
        if missing:
            raise ValueError(f"missing {', '.join(missing)}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})
