"""The SavedModel's warmup file (`assets.extra/tf_serving_warmup_requests`): the requests TF
Serving replays before it serves a new version, one per signature shape clients use."""
import numpy as np
import tensorflow as tf

from agegender import model_layout, preprocessing
from export.serving_module import IMAGE_BYTES, IMAGES, KEY, SIG_DEFAULT, SIG_IMAGES, SIG_PHOTO

MAX_WARMUP_RECORDS = 1000  # TF Serving reads at most this many


def synthetic_jpeg(size=160, seed=0):
    """A deterministic smooth RGB test image as JPEG bytes (warmup, tests)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    base = rng.uniform(0, 1, size=3).astype(np.float32)
    img = np.stack([x, y, (x + y) / 2], axis=-1) * 200 + base * 55
    return tf.io.encode_jpeg(tf.constant(img.astype(np.uint8))).numpy()


def warmup_requests(model_name, images, img_dim, photo=False):
    """PredictionLog records (predict requests) for the warmup file: one per signature shape
    clients will use (serving_default with and without key, batch of 1 and of all images;
    predict_images; predict_photo on one image when `photo`)."""
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    def log(signature, inputs):
        request = predict_pb2.PredictRequest()
        request.model_spec.name = model_name
        request.model_spec.signature_name = signature
        for name, value in inputs.items():
            request.inputs[name].CopyFrom(tf.make_tensor_proto(value))
        return prediction_log_pb2.PredictionLog(
            predict_log=prediction_log_pb2.PredictLog(request=request))

    images = list(images)
    pixels = np.stack([preprocessing.model_input(b, img_dim).numpy() for b in images[:1]])
    logs = [
        log(SIG_DEFAULT, {IMAGE_BYTES: np.array(images[:1], dtype=object)}),
        log(SIG_DEFAULT, {IMAGE_BYTES: np.array(images, dtype=object),
                          KEY: np.array([f"warmup-{i}".encode() for i in range(len(images))],
                                        dtype=object)}),
        log(SIG_IMAGES, {IMAGES: pixels.astype(np.float32)}),
    ]
    if photo:
        logs.append(log(SIG_PHOTO, {IMAGE_BYTES: np.array(images[:1], dtype=object)}))
    return logs[:MAX_WARMUP_RECORDS]


def write_warmup(saved_model_dir, logs):
    path = model_layout.join(saved_model_dir, model_layout.WARMUP_PATH)
    tf.io.gfile.makedirs(model_layout.join(saved_model_dir, model_layout.WARMUP_DIR))
    with tf.io.TFRecordWriter(path) as writer:
        for entry in logs:
            writer.write(entry.SerializeToString())
    return path
