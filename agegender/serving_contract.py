"""The serving contract: the names and limits every client of an exported model relies on.

Owned here, imported by the export (which writes the signatures), the local server, the
clients, the evaluation and the benchmarks, so a name is spelled once:

  signatures   serving_default (encoded images: `image_bytes`, optional `key`),
               predict_images (float pixels: `images`), serve_tf_examples (serialized
               records: `examples`), predict_photo (encoded photos of any framing:
               `image_bytes`, optional `key`; the faces are found and aligned in the graph)
  outputs      `age`, the spread (`age_std`, `age_interval_50/80`), `gender` and
               `gender_probability` (names below; `agegender.heads` computes them), each
               age head's raw output (age_distribution / age_range), and `key`;
               predict_photo: the same per face, [N, max_faces, ...], plus PHOTO_OUTPUTS
  model name   "age" by default (TF Serving's --model_name, the REST path /v1/models/age)
  limits       16 MiB per request (REST body / gRPC message), TF Serving's own default

Plain Python without imports: the web page's process (no TensorFlow) reads it too.
"""
DEFAULT_MODEL_NAME = "age"
DEFAULT_GRPC_PORT = 8500
DEFAULT_REST_PORT = 8501
DEFAULT_MAX_REQUEST_BYTES = 16 << 20

SERVING_DEFAULT = "serving_default"
PREDICT_IMAGES = "predict_images"
SERVE_TF_EXAMPLES = "serve_tf_examples"

IMAGE_BYTES = "image_bytes"  # string [N]: JPEG/PNG/GIF/BMP/WebP bytes
KEY = "key"  # string [N], optional, echoed back
IMAGES = "images"  # float32 [N, H, W, 3], pixels 0..255
EXAMPLES = "examples"  # string [N], serialized tf.train.Example (agegender.schema)

# Outputs per image (serving_default, predict_images, serve_tf_examples) and per face
# (predict_photo). Models without a gender head have no gender outputs; models whose age
# head predicts no distribution (regression) have no spread.
AGE = "age"  # float32: years, the mean of the predicted distribution
AGE_STD = "age_std"  # float32: years, standard deviation of the (calibrated) distribution
# Nominal coverages of the central intervals of the calibrated distribution, each exported
# as float32 [2] (first, last year) under `interval_output(coverage)`.
AGE_INTERVALS = (0.5, 0.8)
GENDER = "gender"  # string: one of GENDER_LETTERS
GENDER_PROBABILITY = "gender_probability"  # float32 [2]: in the order of GENDER_LETTERS
GENDER_LETTERS = ("M", "F")  # male, female: the gender classes' order


def interval_output(coverage):
    """The output name of the central interval of nominal `coverage` (0.8 -> age_interval_80)."""
    return f"age_interval_{round(coverage * 100)}"


AGE_INTERVAL_50, AGE_INTERVAL_80 = (interval_output(c) for c in AGE_INTERVALS)

# predict_photo: `image_bytes` string [N] holds whole photos (JPEG/PNG/GIF/BMP/WebP, any
# size up to the pixel limit), `key` [N] optional. Per photo up to max_faces faces, dense
# and padded: rows from num_faces on are zeros (empty strings for `gender`). Every head
# output of serving_default (`age`, the spread, the distribution, `gender`,
# `gender_probability`) comes per face: [N, max_faces, ...]. A photo without a face is a
# normal answer: num_faces 0 and nothing but padding.
PREDICT_PHOTO = "predict_photo"
NUM_FACES = "num_faces"  # int32 [N]: faces found (at most max_faces), highest score first
BOXES = "boxes"  # float32 [N, max_faces, 4]: x1, y1, x2, y2 in pixels of the decoded photo
LANDMARKS = "landmarks"  # float32 [N, max_faces, 5, 2]: eyes, nose, mouth corners (x, y)
FACE_SCORES = "face_scores"  # float32 [N, max_faces]: the detector's face probability
PHOTO_OUTPUTS = (NUM_FACES, BOXES, LANDMARKS, FACE_SCORES)
DEFAULT_MAX_FACES = 16  # faces per photo the signature returns (the export's --max_faces)
