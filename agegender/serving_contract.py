"""The serving contract: the names and limits every client of an exported model relies on.

Owned here, imported by the export (which writes the signatures), the local server, the
clients, the evaluation and the benchmarks, so a name is spelled once:

  signatures   serving_default (encoded images: `image_bytes`, optional `key`),
               predict_images (float pixels: `images`), serve_tf_examples (serialized
               records: `examples`)
  outputs      `age` and the heads' own (`agegender.heads`: age_distribution / age_range,
               age_std, age_interval_50/80, gender, gender_probability), and `key`
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
