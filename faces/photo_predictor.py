"""The photo path: whole photos -> every face found, aligned, and the model's answer per face.

Owns composing face detection and alignment (`faces.photo.PhotoFaces`, TF ops only) with the
one forward pass (`agegender.inference.raw_outputs`) and the heads' outputs
(`agegender.heads.serving_outputs`), per face, as the dense padded tensors of the
`predict_photo` signature (`agegender.serving_contract`). The export's signature and the Python API's
job-dir backend both run `PhotoPredictor`, so a photo gets the same answer in
process and over the wire. Reading the answers: `agegender.photo_answers`.

Which template the faces are aligned on: the spec's `face_alignment` (the records were
built with --align_faces, `faces.photo.describe`), else the shipped template
(`faces.template`), which was learnt from the UTKFace crops such a model was trained on.

Work per request is bounded: photos are decoded one at a time (the pixel limit is checked
from each header before decoding, `agegender.preprocessing.decode_rgb`), detection runs on
at most `max_side` pixels a side (`faces.detector`), and the model sees at most max_faces
crops per photo.
"""
import numpy as np
import tensorflow as tf

from agegender import heads, image_header, inference, preprocessing
from agegender import serving_contract as contract

# Detector settings the signature exposes (the export's --min_face_size, --max_faces);
# the rest are `faces.detector.DetectorConfig`'s defaults.
DEFAULT_MIN_FACE_SIZE = 20.0  # the mtcnn package's default, in pixels of the photo
                              # (of its 1024-pixel-side downscale for larger photos)

def template_points(spec):
    """The [5, 2] template the model's training faces were framed like, or None (the
    shipped one): see the module docstring."""
    alignment = spec.face_alignment or {}
    points = alignment.get("template")
    return None if points is None else np.asarray(points, np.float32)


class _Untracked:
    """Holds objects out of TF's object tracking (a plain object is not tracked)."""

    def __init__(self, **items):
        self.__dict__.update(items)


class PhotoPredictor(tf.Module):
    """Keras model + spec -> `predict(image_bytes, key)`: the `predict_photo` outputs.

    `predict` is plain graph ops (call it inside a `tf.function`: the export's signature);
    `predict_fn()` is it as a `tf.function` for use in process.

    What a SavedModel keeps of this module: the model and the detector's variables. The
    face modules (`faces.photo`, `faces.detector`) are held untracked, so the tf.functions
    they define for use in process are not traced and saved too (measured: that halves
    the export's time and size).
    """

    def __init__(self, model, spec, *, max_faces=contract.DEFAULT_MAX_FACES,
                 min_face_size=DEFAULT_MIN_FACE_SIZE,
                 max_pixels=image_header.DEFAULT_MAX_PIXELS):
        from faces import detector as detector_lib
        from faces import photo as photo_lib

        super().__init__(name="photo_predictor")
        self.model = model
        self.spec = spec
        self.max_faces = int(max_faces)
        self._max_pixels = max_pixels
        config = detector_lib.DetectorConfig(min_face_size=float(min_face_size),
                                             max_faces=self.max_faces)
        faces = photo_lib.PhotoFaces(
            spec.img_dim, detector=detector_lib.FaceDetector(config, max_pixels),
            template=template_points(spec), max_pixels=max_pixels)
        self.detector_variables = list(faces.detector.variables)
        self._held = _Untracked(faces=faces, predict_fn=None)

    @property
    def faces(self):
        """The `faces.photo.PhotoFaces` that detects and aligns."""
        return self._held.faces

    def predict_fn(self):
        """`predict` as a tf.function (string [N] photos, string [N] or [0] keys)."""
        if self._held.predict_fn is None:
            self._held.predict_fn = tf.function(self.predict, input_signature=[
                tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.string)])
        return self._held.predict_fn

    def describe(self):
        """JSON-able: the template (points, sha256, where it came from), the detector's
        settings and max_faces; the export writes it beside the SavedModel."""
        info = self.faces.describe()
        info.pop("select")  # every face is answered, none is chosen
        info["template_source"] = ("model_spec.face_alignment (records built with "
                                   "--align_faces)" if self.spec.face_alignment else
                                   "faces/utkface_template.json (the shipped template, "
                                   "learnt from the UTKFace train crops)")
        info["max_faces"] = self.max_faces
        info["max_image_pixels"] = self._max_pixels
        return info

    def _detect(self, image_bytes):
        """Per photo: num_faces [N], boxes, landmarks, scores, crops [N, F, S, S, 3]."""
        from faces import detector as detector_lib
        from faces import photo as photo_lib

        count, size = self.max_faces, self.spec.img_dim

        def one(data):
            found = self.faces.faces_graph(preprocessing.decode_rgb(data, self._max_pixels))
            n = found[photo_lib.NUM_FACES]
            crops = tf.pad(found[photo_lib.CROPS], [[0, count - n], [0, 0], [0, 0], [0, 0]])
            return (n, found[detector_lib.BOXES], found[detector_lib.LANDMARKS],
                    found[detector_lib.SCORES], tf.ensure_shape(crops, [count, size, size, 3]))

        # One photo at a time: each is decoded whole (up to the pixel limit), so running
        # them side by side would multiply the memory a request can take.
        return tf.map_fn(one, image_bytes, parallel_iterations=1, fn_output_signature=(
            tf.TensorSpec([], tf.int32), tf.TensorSpec([count, 4]),
            tf.TensorSpec([count, 5, 2]), tf.TensorSpec([count]),
            tf.TensorSpec([count, size, size, 3])))

    @tf.autograph.experimental.do_not_convert
    def predict(self, image_bytes, key=None):
        """string [N] photos (and optional keys [N], or [0]: none) -> the signature's dict."""
        count = self.max_faces
        num_faces, boxes, landmarks, scores, crops = self._detect(image_bytes)
        found = tf.sequence_mask(num_faces, count)  # [N, F]
        flat = tf.boolean_mask(crops, found)  # [T, S, S, 3], photo by photo, in score order
        total = tf.shape(flat)[0]
        spec, model = self.spec, self.model
        per_face = tf.cond(
            total > 0,
            lambda: heads.serving_outputs(inference.raw_outputs(model, flat, spec), spec),
            lambda: heads.serving_outputs(heads.empty_raw_outputs(spec), spec))
        # Face j of photo i is row starts[i] + j of `flat`; padding slots point one past the
        # end, at a row of zeros (empty strings) appended to every output.
        starts = tf.cumsum(num_faces, exclusive=True)
        rows = tf.where(found, starts[:, None] + tf.range(count)[None, :], total)
        outputs = {contract.NUM_FACES: num_faces, contract.BOXES: boxes,
                   contract.LANDMARKS: landmarks, contract.FACE_SCORES: scores}
        for name, values in per_face.items():
            outputs[name] = tf.gather(_with_blank_row(values), rows)
        n = tf.shape(image_bytes)[0]
        if key is None:
            key = tf.constant([], tf.string)
        outputs[contract.KEY] = tf.cond(tf.size(key) > 0, lambda: key,
                                        lambda: tf.fill([n], tf.constant("", tf.string)))
        tf.debugging.assert_equal(tf.size(outputs[contract.KEY]), n,
                                  message="key must have one value per image")
        return outputs


def _with_blank_row(values):
    """`values` [T, ...] with one more row of zeros (or empty strings) at the end."""
    shape = tf.concat([[1], tf.shape(values)[1:]], 0)
    blank = (tf.fill(shape, tf.constant("", tf.string)) if values.dtype == tf.string
             else tf.zeros(shape, values.dtype))
    return tf.concat([values, blank], 0)
