"""The exported object: the Keras model and the serving signatures' functions.

Every signature reaches the model through `agegender.preprocessing` (the trainer's
function) and `agegender.inference` (the forward pass with test-time flip and prior
correction), and answers through `agegender.heads`; what each signature takes and returns
is in `export.export_model`'s doc. `predict_photo` is `faces.photo_predictor`'s.
"""
import tensorflow as tf

from agegender import heads, image_header, inference, preprocessing, schema
from agegender import serving_contract as contract
from faces import photo_predictor

SIG_DEFAULT = contract.SERVING_DEFAULT
SIG_IMAGES = contract.PREDICT_IMAGES
SIG_EXAMPLES = contract.SERVE_TF_EXAMPLES
SIG_PHOTO = contract.PREDICT_PHOTO
IMAGE_BYTES, KEY, IMAGES, EXAMPLES = (contract.IMAGE_BYTES, contract.KEY, contract.IMAGES,
                                      contract.EXAMPLES)

OUT_KEY = contract.KEY


class ServingModule(tf.Module):
    """The exported object: the Keras model plus the signature functions. `photo`: a dict
    of `photo_predictor.PhotoPredictor` options (max_faces, min_face_size) for the
    predict_photo signature, or None for none."""

    def __init__(self, model, spec, max_image_pixels=image_header.DEFAULT_MAX_PIXELS,
                 photo=None):
        super().__init__()
        self.model = model
        self.spec = spec
        dim = spec.img_dim
        limit = max_image_pixels

        @tf.function(input_signature=[
            tf.TensorSpec([None], tf.string, name=IMAGE_BYTES),
            tf.TensorSpec([None], tf.string, name=KEY)])
        def serving_default(image_bytes, key=tf.constant([], tf.string)):
            outputs = self._predict(preprocessing.model_input_batch(image_bytes, dim, limit))
            n = tf.shape(image_bytes)[0]
            outputs[OUT_KEY] = tf.cond(tf.size(key) > 0, lambda: key,
                                       lambda: tf.fill([n], tf.constant("", tf.string)))
            tf.debugging.assert_equal(tf.size(outputs[OUT_KEY]), n,
                                      message="key must have one value per image")
            return outputs

        @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32, name=IMAGES)])
        def predict_images(images):
            shape = tf.shape(images)
            same = tf.logical_and(tf.equal(shape[1], dim), tf.equal(shape[2], dim))
            pixels = tf.cond(
                same, lambda: tf.reshape(images, [-1, dim, dim, 3]),
                lambda: tf.map_fn(lambda im: preprocessing.resize_square(im, dim), images,
                                  fn_output_signature=tf.TensorSpec([dim, dim, 3], tf.float32)))
            return self._predict(pixels)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name=EXAMPLES)])
        def serve_tf_examples(examples):
            features = schema.parse_examples(examples)
            return self._predict(
                preprocessing.model_input_batch(features[schema.IMAGE_ENCODED], dim, limit))

        self.serving_default = serving_default
        self.predict_images = predict_images
        self.serve_tf_examples = serve_tf_examples
        self.predict_photo = self.photo = None
        if photo is not None:
            self.photo = photo_predictor.PhotoPredictor(model, spec, max_pixels=limit, **photo)

            @tf.function(input_signature=[
                tf.TensorSpec([None], tf.string, name=IMAGE_BYTES),
                tf.TensorSpec([None], tf.string, name=KEY)])
            def predict_photo(image_bytes, key=tf.constant([], tf.string)):
                return self.photo.predict(image_bytes, key)

            self.predict_photo = predict_photo

    def _predict(self, pixels):
        raw = inference.raw_outputs(self.model, pixels, self.spec)
        return heads.serving_outputs(raw, self.spec)

    def signatures(self):
        found = {SIG_DEFAULT: self.serving_default, SIG_IMAGES: self.predict_images,
                 SIG_EXAMPLES: self.serve_tf_examples}
        if self.predict_photo is not None:
            found[SIG_PHOTO] = self.predict_photo
        return found
