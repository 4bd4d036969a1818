"""An exported SavedModel in process: its `predict_photo` and `serving_default` signatures.

What is answered is what TF Serving would answer for the same version: the signatures are
the served ones, called with the same inputs. A photo the signature refuses (undecodable
past its header, over the in-graph pixel limit) raises `ImageError`.
"""
import hashlib

import tensorflow as tf

from agegender import model_layout, photo_answers
from agegender import serving_contract as contract
from agegender.errors import IMAGE_TOO_LARGE, UNDECODABLE, ImageError, ModelLoadError
from agegender.results import ModelInfo
from analyzer import model_paths


def saved_model_sha256(directory):
    """sha256 of the directory's saved_model.pb (hex), None when unreadable."""
    try:
        with tf.io.gfile.GFile(model_layout.join(directory, model_layout.SAVED_MODEL_FILE),
                               "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()
    except (OSError, tf.errors.OpError):
        return None


def model_info(directory, signature_names, image_size):
    """The `ModelInfo` of the exported SavedModel version in `directory` that has these
    signatures (TF's internal `__...` entries of saved_model.pb left out) and crop size:
    what this backend answers, and what a command reads from the files alone
    (`pipeline.inference_handler.saved_model_info`)."""
    return ModelInfo(backend="saved_model", source=directory,
                     version=model_paths.version_of(directory),
                     signatures=tuple(sorted(n for n in signature_names
                                             if not n.startswith("__"))),
                     saved_model_sha256=saved_model_sha256(directory), image_size=image_size)


def refusal(error):
    """A signature's InvalidArgumentError -> ImageError with the line that says what is
    wrong (TF ends its message with graph context lines, `[[{{node X}}]]`: left out)."""
    text = getattr(error, "message", None) or str(error)
    lines = [line.strip() for line in text.strip().splitlines()
             if line.strip() and not line.strip().startswith("[[")]
    message = (lines[-1] if lines else type(error).__name__).split("{{")[0].strip()[:200]
    reason = IMAGE_TOO_LARGE if "too large" in message else UNDECODABLE
    return ImageError(reason, f"the model refused the image: {message}")


class SavedModelBackend:
    def __init__(self, path):
        self.directory = model_paths.resolve_saved_model(path)
        try:
            self._loaded = tf.saved_model.load(self.directory)
        except (OSError, ValueError, tf.errors.OpError) as e:
            raise ModelLoadError(f"{self.directory}: not a loadable SavedModel ({e})") from None
        signatures = self._loaded.signatures
        self._photo = signatures.get(contract.PREDICT_PHOTO)
        self._crop = signatures.get(contract.SERVING_DEFAULT)
        if self._photo is None and self._crop is None:
            raise ModelLoadError(f"{self.directory} has neither a {contract.PREDICT_PHOTO} nor "
                                 f"a {contract.SERVING_DEFAULT} signature")
        image_size = None
        if contract.PREDICT_IMAGES in signatures:
            _, kwargs = signatures[contract.PREDICT_IMAGES].structured_input_signature
            spec = kwargs.get(contract.IMAGES)
            image_size = None if spec is None else spec.shape[1]
        self.info = model_info(self.directory, signatures, image_size)

    def _call(self, fn, name, encoded):
        if fn is None:
            raise ModelLoadError(f"{self.directory} has no {name} signature (export the model "
                                 "again with `python -m export.export_model`)")
        try:
            out = fn(**{contract.IMAGE_BYTES: tf.constant(encoded, tf.string),
                        contract.KEY: tf.constant([], tf.string)})
        except tf.errors.InvalidArgumentError as e:
            raise refusal(e) from None
        return {k: v.numpy() for k, v in out.items()}

    def photos(self, encoded):
        out = self._call(self._photo, contract.PREDICT_PHOTO, encoded)
        return [answer.faces for answer in photo_answers.read_photos(out)]

    def crops(self, encoded):
        return photo_answers.read_crops(self._call(self._crop, contract.SERVING_DEFAULT, encoded))

    def close(self):
        pass
