"""The serving contract: the names and limits every client of an exported model relies on.

Owned here, imported by the export (which writes the signatures), the local server, the
clients, the evaluation and the benchmarks, so a name is spelled once:

  signatures   serving_default (encoded images: `image_bytes`, optional `key`),
               predict_images (float pixels: `images`), serve_tf_examples (serialized
               records: `examples`), predict_photo (encoded photos of any framing:
               `image_bytes`, optional `key`; the faces are found and aligned in the graph)
  outputs      `age` and the heads' own (`agegender.heads`: age_distribution / age_range,
               age_std, age_interval_50/80, gender, gender_probability), and `key`;
               predict_photo: the same per face, [N, max_faces, ...], plus PHOTO_OUTPUTS
  model name   "age" by default (TF Serving's --model_name, the REST path /v1/models/age)
  limits       16 MiB per request (REST body / gRPC message), TF Serving's own default
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
