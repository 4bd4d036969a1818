"""A photo -> its faces, detected and aligned: what serving and the records job call.

Owns the composition detect -> choose -> align and its output contract. `PhotoFaces` is a
`tf.Module` (save it, or call its graph methods inside another `tf.function`, e.g. a
`predict_photo` serving signature that runs the age model on `crops`):

- `faces(image)` / `faces_bytes(image_bytes)` (tf.functions; uint8 [H, W, 3] or a scalar
  string, decoded with the pixel limit as `faces.detector` does), and `faces_graph(image)`
  (plain graph ops) -> the detector's dict (num_faces, boxes, landmarks, scores: padded to
  max_faces, highest score first, see `faces.detector`) plus

    crops  float32 [num_faces, S, S, 3]   every found face aligned, pixel values 0..255,
                                          crops[i] is the face of boxes[i]

- `best_face(image)` / `best_face_bytes(image_bytes)` / `best_face_graph(image)`: one face
  per photo, fixed shapes (so a batch can `tf.map_fn` it):

    found      bool []             a face was found
    crop       float32 [S, S, 3]   the chosen face aligned (zeros when none was found)
    box        float32 [4]         its box (x1, y1, x2, y2; zeros when none)
    landmarks  float32 [5, 2]      its landmarks (zeros when none)
    score      float32 []          its detection score (0 when none)
    num_faces  int32 []            how many faces the photo holds (up to max_faces)

  `best_face_spec` gives their `tf.TensorSpec`s (tf.map_fn's fn_output_signature).
  The face chosen is the largest box (`select="largest"`, the default: the subject of a
  selfie or portrait) or the highest score (`select="score"`).
- `best(image_or_bytes)`: Python convenience for the records job -> `BestFace` of numpy
  arrays (crop as uint8) or None.

S is `output_size`: the records' 160 or the model's 128 (the template is normalised, so
both give the same framing). Crops are aligned on the template of `faces.template`.

`describe(template, select, config)` (and `PhotoFaces.describe()`) is how crops were made,
as plain JSON: the template's points and fingerprint, the face chosen, the detector's
settings. The records job stores it in report.json's metadata (`--align_faces`), the
trainer copies it into the model spec, the export into the SavedModel.
"""
import collections
import functools

import numpy as np
import tensorflow as tf

from agegender import image_header, preprocessing
from faces import alignment, detector as detector_lib
from faces import template as template_lib

CROPS = "crops"
FOUND, CROP, BOX, LANDMARKS, SCORE = "found", "crop", "box", "landmarks", "score"
NUM_FACES = detector_lib.NUM_FACES
LARGEST, SCORE_SELECT = "largest", "score"

BestFace = collections.namedtuple("BestFace", ["crop", "box", "landmarks", "score", "num_faces"])


def describe(template=None, select=LARGEST, config=None):
    """How aligned crops are made, as JSON-able values: {"template": [[x, y] x 5],
    "template_sha256", "select", "detector": settings}. `template`: a `template.Template`,
    points, or None (the shipped one); `config`: a `DetectorConfig` (None: the defaults)."""
    points = template_lib.load().points if template is None else getattr(
        template, "points", template)
    points = np.asarray(points, np.float64).reshape(5, 2)
    return {"template": np.round(points, 5).tolist(),
            "template_sha256": template_lib.fingerprint(points), "select": select,
            "detector": detector_lib.settings(config or detector_lib.DetectorConfig())}


class PhotoFaces(tf.Module):
    """Detect + align. `detector`: a `FaceDetector` (default settings when None);
    `template`: a `template.Template` or [5, 2] points (default: the shipped one)."""

    def __init__(self, output_size=160, *, detector=None, template=None, select=LARGEST,
                 antialias=True, max_pixels=image_header.DEFAULT_MAX_PIXELS):
        super().__init__(name="photo_faces")
        if select not in (LARGEST, SCORE_SELECT):
            raise ValueError(f"select={select!r}: {LARGEST!r} or {SCORE_SELECT!r}")
        self.output_size = int(output_size)
        if self.output_size < 1:
            raise ValueError(f"output_size {output_size}: must be >= 1")
        self.detector = detector or detector_lib.FaceDetector(max_pixels=max_pixels)
        points = template_lib.load().points if template is None else getattr(
            template, "points", template)
        self.template_points = tf.constant(np.asarray(points, np.float32).reshape(5, 2))
        self.select = select
        self.antialias = antialias
        self._max_pixels = max_pixels

        image_spec = tf.TensorSpec([None, None, 3], tf.uint8, name="image")
        bytes_spec = tf.TensorSpec([], tf.string, name="image_bytes")
        graph = functools.partial(tf.function, autograph=False)  # explicit control flow only
        self.faces = graph(self.faces_graph, input_signature=[image_spec])
        self.faces_bytes = graph(lambda b: self.faces_graph(self._decode(b)),
                                 input_signature=[bytes_spec])
        self.best_face = graph(self.best_face_graph, input_signature=[image_spec])
        self.best_face_bytes = graph(lambda b: self.best_face_graph(self._decode(b)),
                                     input_signature=[bytes_spec])

    def _decode(self, image_bytes):
        return preprocessing.decode_rgb(image_bytes, self._max_pixels)

    def _align(self, image, landmarks):
        return alignment.align(image, landmarks, self.output_size, self.template_points,
                               antialias=self.antialias)

    def describe(self):
        """`describe` of this module's template, face choice and detector settings."""
        return describe(self.template_points.numpy(), self.select, self.detector.config)

    @tf.autograph.experimental.do_not_convert
    def faces_graph(self, image):
        """Every face: the detector's outputs plus `crops` [num_faces, S, S, 3]."""
        found = self.detector.detect_graph(image)
        out = dict(found)
        out[CROPS] = self._align(image, found[detector_lib.LANDMARKS][:found[NUM_FACES]])
        return out

    @tf.autograph.experimental.do_not_convert
    def best_face_graph(self, image):
        """One face (see the module docstring), fixed shapes."""
        found = self.detector.detect_graph(image)
        n = found[NUM_FACES]
        boxes = found[detector_lib.BOXES]
        if self.select == LARGEST:
            areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
            # Rows past num_faces are padding: never chosen.
            areas = tf.where(tf.range(tf.shape(areas)[0]) < n, areas, -1.0)
            index = tf.argmax(areas, output_type=tf.int32)
        else:
            index = tf.constant(0)  # rows are sorted by score
        has = n > 0
        landmarks = found[detector_lib.LANDMARKS][index]
        size = self.output_size
        crop = tf.cond(has, lambda: self._align(image, landmarks[None])[0],
                       lambda: tf.zeros([size, size, 3]))
        zero = lambda t: tf.where(has, t, tf.zeros_like(t))  # noqa: E731
        return {FOUND: has, CROP: tf.ensure_shape(crop, [size, size, 3]),
                BOX: zero(boxes[index]), LANDMARKS: zero(landmarks),
                SCORE: zero(found[detector_lib.SCORES][index]), NUM_FACES: n}

    @property
    def best_face_spec(self):
        """`tf.TensorSpec`s of `best_face_graph`'s outputs: `tf.map_fn`'s fn_output_signature
        for a batch of photos."""
        size = self.output_size
        return {FOUND: tf.TensorSpec([], tf.bool), CROP: tf.TensorSpec([size, size, 3]),
                BOX: tf.TensorSpec([4]), LANDMARKS: tf.TensorSpec([5, 2]),
                SCORE: tf.TensorSpec([]), NUM_FACES: tf.TensorSpec([], tf.int32)}

    def best(self, image):
        """Python: encoded bytes or uint8 pixels -> `BestFace` (numpy; crop uint8) or None."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            out = self.best_face_bytes(tf.constant(bytes(image)))
        else:
            out = self.best_face(detector_lib.as_rgb(image))
        if not bool(out[FOUND]):
            return None
        return BestFace(preprocessing.to_uint8(out[CROP]).numpy(), out[BOX].numpy(),
                        out[LANDMARKS].numpy(), float(out[SCORE]), int(out[NUM_FACES]))
