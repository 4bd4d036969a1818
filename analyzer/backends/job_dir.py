"""A trainer job dir in process (model.keras + model_spec.json), answered through the same
functions the export puts in its signatures: `faces.photo_predictor.PhotoPredictor`
(predict_photo) and `agegender.preprocessing.model_input` + `agegender.inference` +
`agegender.heads.serving_outputs` (serving_default). So a job dir answers what its export
would, without exporting it first (trainer predict mode runs here).
"""
import tensorflow as tf

from agegender import heads, inference, photo_answers, preprocessing
from agegender import job_dir as job_dir_lib
from agegender import serving_contract as contract
from agegender.errors import ModelLoadError
from agegender.results import ModelInfo
from analyzer.backends.saved_model import refusal
from faces import photo_predictor


class JobDirBackend:
    def __init__(self, path, max_image_pixels):
        try:
            self.model, self.spec = job_dir_lib.load(path)
        except (OSError, ValueError, KeyError) as e:
            raise ModelLoadError(f"{path}: not a usable trainer job dir ({e})") from None
        self._max_pixels = max_image_pixels
        self._photo_fn = None
        spec = self.spec
        # serving_default's computation as one graph: decode and resize every crop, then
        # the forward pass and the heads.
        self._crop_fn = tf.function(
            lambda b: heads.serving_outputs(inference.raw_outputs(
                self.model, preprocessing.model_input_batch(b, spec.img_dim, max_image_pixels),
                spec), spec),
            input_signature=[tf.TensorSpec([None], tf.string)])
        self.info = ModelInfo(backend="job_dir", source=path,
                              signatures=(contract.PREDICT_PHOTO, contract.SERVING_DEFAULT),
                              image_size=spec.img_dim)

    def photos(self, encoded):
        if self._photo_fn is None:  # the detector is built on first use: crops need none
            self._photo_fn = photo_predictor.PhotoPredictor(
                self.model, self.spec, max_pixels=self._max_pixels).predict_fn()
        try:
            out = self._photo_fn(tf.constant(encoded, tf.string), tf.constant([], tf.string))
        except tf.errors.InvalidArgumentError as e:
            raise refusal(e) from None
        return [answer.faces for answer in
                photo_answers.read_photos({k: v.numpy() for k, v in out.items()})]

    def crops(self, encoded):
        try:
            out = self._crop_fn(tf.constant(encoded, tf.string))
        except tf.errors.InvalidArgumentError as e:
            raise refusal(e) from None
        return photo_answers.read_crops({k: v.numpy() for k, v in out.items()})

    def close(self):
        pass
