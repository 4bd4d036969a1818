"""MTCNN face detection as one TensorFlow graph: a photo in, dense padded face tensors out.

Owns the detection cascade and its output contract. `FaceDetector` (a `tf.Module`, so it
saves in a SavedModel with its weights as variables) has two `tf.function`s with fixed
input signatures:

- `detect(image)`: uint8 [H, W, 3] of any size;
- `detect_bytes(image_bytes)`: a scalar string, a JPEG/PNG/GIF/BMP/WebP image, decoded by
  `agegender.preprocessing.decode_rgb`, so the pixel limit (`max_pixels`, default
  `image_header.DEFAULT_MAX_PIXELS`) is checked from the header before anything is decoded
  and grayscale is expanded to RGB. A refused or undecodable image raises
  `tf.errors.InvalidArgumentError`.

Both return a dict of tensors, the same for every input (`max_faces` = `config.max_faces`):

  num_faces  int32 []                    faces found, at most max_faces
  boxes      float32 [max_faces, 4]      x1, y1, x2, y2 in pixels of the input (faces.boxes),
                                         clipped to the image: [0, W-1] x [0, H-1]
  landmarks  float32 [max_faces, 5, 2]   (x, y) of LANDMARK_NAMES, in pixels, not clipped
  scores     float32 [max_faces]         ONet's face probability, > onet_threshold

Rows are sorted by score, highest first; rows from num_faces on are zeros. A photo with no
face gives num_faces 0 (not an error); so does an image under 12 pixels on a side.

The cascade is the mtcnn package's (1.0.0) `MTCNN().detect_faces`, written in TF ops with
its weights (`faces.networks`), its defaults (`DetectorConfig`) and its arithmetic:
an image pyramid of area-resized copies at scales (12 / min_face_size) * 0.709^k, PNet
windows over 0.6 with their regression applied, suppression per scale (IoU 0.5) and across
scales (0.7), squared boxes, RNet on 24x24 patches (`tf.image.crop_and_resize` on the
normalised image, boxes divided by the image size as the package does, outside = 0) over
0.7, calibrated and suppressed (0.7) and squared, then ONet on 48x48 patches over 0.8, its
landmarks decoded on the RNet box, calibrated and suppressed (intersection over the
smaller box, 0.7).

Where it differs from the package, on purpose:
- Bounded work. A photo whose longer side exceeds `max_side` (default 1024) is first
  area-downscaled (`ResizeArea` reads the uint8 pixels directly: no float copy of the full
  photo) and the results are mapped back to the photo's coordinates; so faces smaller than
  min_face_size * longer_side / max_side are not found in such a photo. Candidates are capped
  at every stage (`max_level_candidates`, `max_rnet_inputs`, `max_onet_inputs`, keeping the
  highest scores), so a photo that makes every PNet window fire costs a bounded amount.
- The package suppresses a box when *any* higher-scored box overlaps it past the threshold
  (whether or not that box survives), which is not the greedy rule of
  `tf.image.non_max_suppression`; and its last round uses the overlap over the smaller box,
  which no `tf.image` op offers. `suppress` reproduces that rule with an overlap matrix,
  which the caps keep small (at most max_rnet_inputs^2 entries).
- Pyramid levels: the package's level count; a level whose shorter side would be under 12
  pixels (only possible with min_face_size over 20) is skipped instead of failing.
- Ties. Face probabilities often saturate at exactly 1.0 in float32, and which of two tied
  windows is sorted first decides which one survives suppression. The package sorts with
  numpy's argsort (reversed), whose order among equals is its sort algorithm's; we put the
  later row first, as a stable sort would. Where numpy's order differs (long lists), a
  different window can win: 5 of 494 faces of 200 synthetic photos came out with IoU
  0.90-0.99 instead of ~1.0 (benchmarks/faces.py).

Agreement with the package and speed: tests/faces/detector_test.py, benchmarks/faces.py.
"""
import collections
import dataclasses
import math

import numpy as np
import tensorflow as tf

from agegender import image_header, preprocessing
from faces import boxes as box_ops
from faces import networks

NUM_FACES, BOXES, LANDMARKS, SCORES = "num_faces", "boxes", "landmarks", "scores"
OUTPUTS = (NUM_FACES, BOXES, LANDMARKS, SCORES)
# The mtcnn package's names, in its order. "left" is the image's left (smaller x): the
# person's right eye.
LANDMARK_NAMES = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")

# A face found by the Python helper `FaceDetector.find`: numpy arrays of the found faces only.
Detections = collections.namedtuple("Detections", ["boxes", "landmarks", "scores"])


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    """Detection settings; the defaults are the mtcnn package's, plus the work bounds."""
    min_face_size: float = 20.0   # smallest face searched for, in detection-image pixels
    scale_factor: float = 0.709   # between pyramid levels
    pnet_threshold: float = 0.6
    rnet_threshold: float = 0.7
    onet_threshold: float = 0.8
    nms_level: float = 0.5        # IoU, within one pyramid level
    nms_pyramid: float = 0.7      # IoU, across levels
    nms_rnet: float = 0.7         # IoU
    nms_onet: float = 0.7         # intersection over the smaller box
    max_side: int = 1024          # longer side of the image detection runs on
    max_faces: int = 16           # rows of the outputs
    max_level_candidates: int = 500  # PNet windows kept per level (highest scores)
    max_rnet_inputs: int = 1000   # proposals into RNet (and into the cross-level suppression)
    max_onet_inputs: int = 200    # boxes into ONet

    def __post_init__(self):
        if not 0 < self.scale_factor < 1:
            raise ValueError(f"scale_factor {self.scale_factor}: must be in (0, 1)")
        if self.min_face_size < networks.PNET_CELL:
            raise ValueError(f"min_face_size {self.min_face_size}: must be >= "
                             f"{networks.PNET_CELL} (PNet's window)")
        if self.max_side < networks.PNET_CELL:
            raise ValueError(f"max_side {self.max_side}: must be >= {networks.PNET_CELL}")
        for name in ("max_faces", "max_level_candidates", "max_rnet_inputs", "max_onet_inputs"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")

    @property
    def levels(self):
        """Pyramid levels of the largest detection image (shorter side = max_side): the
        graph holds this many, and smaller images skip the levels they do not have."""
        return max(1, pyramid_size(self.max_side, self.scale_factor))


def settings(config):
    """A `DetectorConfig` as a plain dict (for reports and template files)."""
    return dataclasses.asdict(config)


def pyramid_size(shorter_side, scale_factor):
    """The mtcnn package's number of pyramid levels for an image's shorter side."""
    if shorter_side < networks.PNET_CELL:
        return 0
    return max(0, round(math.log(shorter_side / networks.PNET_CELL)
                        / math.log(1.0 / scale_factor) - 1))


def suppress(boxes, threshold, method=box_ops.UNION):
    """Keep-mask [N] for `boxes` [N, 4] sorted by score (highest first): a box is dropped
    when any higher-scored box overlaps it by more than `threshold` (the mtcnn package's
    rule; see the module docstring)."""
    n = tf.shape(boxes)[0]
    index = tf.range(n)
    earlier = index[:, None] < index[None, :]
    hit = tf.logical_and(box_ops.overlap(boxes, boxes, method) > threshold, earlier)
    return tf.logical_not(tf.reduce_any(hit, axis=0))


def square(boxes):
    """Boxes grown to squares on their longer side, about the same centre."""
    x1, y1, x2, y2 = tf.unstack(boxes, axis=-1)
    w, h = x2 - x1, y2 - y1
    side = tf.maximum(w, h)
    x1 = x1 + 0.5 * (w - side)
    y1 = y1 + 0.5 * (h - side)
    return tf.stack([x1, y1, x1 + side, y1 + side], axis=-1)


def calibrate(boxes, offsets):
    """Applies a network's box regression (offsets are fractions of the box's extent)."""
    w = boxes[:, 2] - boxes[:, 0] + 1.0
    h = boxes[:, 3] - boxes[:, 1] + 1.0
    return boxes + offsets * tf.stack([w, h, w, h], axis=-1)


def patches(normalized, boxes, size):
    """Patches [N, size, size, 3] of `boxes` (image pixels), outside the image = 0 (grey)."""
    shape = tf.cast(tf.shape(normalized), tf.float32)
    # Divided by the image size (not size - 1) exactly as the mtcnn package does.
    relative = box_ops.to_tf_image(boxes) / tf.stack([shape[0], shape[1], shape[0], shape[1]])
    return tf.image.crop_and_resize(normalized[None], relative,
                                    tf.zeros([tf.shape(boxes)[0]], tf.int32), [size, size])


def _by_score(tensors, scores, limit=None):
    """`tensors` and `scores` reordered by score, highest first, the first `limit` kept.

    Equal scores (common: probabilities saturate at 1.0 in float32) keep the package's
    order, later rows first (it sorts ascending and reverses); which of two tied windows
    comes first decides which one survives suppression.
    """
    n = tf.shape(scores)[0]
    order = n - 1 - tf.argsort(tf.reverse(scores, [0]), direction="DESCENDING", stable=True)
    if limit is not None:
        order = order[:limit]
    return [tf.gather(t, order) for t in tensors], tf.gather(scores, order)


def _masked(tensors, mask):
    return [tf.boolean_mask(t, mask) for t in tensors]


class FaceDetector(tf.Module):
    """MTCNN in one graph. `config`: a `DetectorConfig`; `max_pixels`: the pixel limit of
    `detect_bytes` (0 or None: none); `weights`: {"pnet"|"rnet"|"onet": weight list}, read
    from the installed mtcnn package when None."""

    def __init__(self, config=None, max_pixels=image_header.DEFAULT_MAX_PIXELS, weights=None):
        super().__init__(name="face_detector")
        self.config = config or DetectorConfig()
        weights = weights or {}
        self.pnet = networks.PNet(weights.get(networks.PNET))
        self.rnet = networks.RNet(weights.get(networks.RNET))
        self.onet = networks.ONet(weights.get(networks.ONET))
        self._max_pixels = max_pixels

        # autograph=False: the graph code uses explicit tf.cond / tf.while_loop only.
        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8, name="image")],
                     autograph=False)
        def detect(image):
            return self.detect_graph(image)

        @tf.function(input_signature=[tf.TensorSpec([], tf.string, name="image_bytes")],
                     autograph=False)
        def detect_bytes(image_bytes):
            return self.detect_graph(preprocessing.decode_rgb(image_bytes, self._max_pixels))

        self.detect = detect
        self.detect_bytes = detect_bytes

    # -- Python helper -----------------------------------------------------------------

    def find(self, image):
        """Python convenience: encoded bytes, or pixels (uint8 [H, W], [H, W, 1], [H, W, 3] or
        [H, W, 4]) -> `Detections` of numpy arrays holding the found faces only."""
        if isinstance(image, (bytes, bytearray, memoryview)):
            out = self.detect_bytes(tf.constant(bytes(image)))
        else:
            out = self.detect(as_rgb(image))
        n = int(out[NUM_FACES])
        return Detections(out[BOXES].numpy()[:n], out[LANDMARKS].numpy()[:n],
                          out[SCORES].numpy()[:n])

    # -- the graph ---------------------------------------------------------------------

    @tf.autograph.experimental.do_not_convert
    def detect_graph(self, image):
        """The cascade on uint8 [H, W, 3] as graph ops (callable inside any tf.function:
        autograph leaves it as it is); returns the dict of the module docstring."""
        c = self.config
        image = tf.ensure_shape(tf.convert_to_tensor(image, tf.uint8), [None, None, 3])
        shape = tf.shape(image)
        height, width = shape[0], shape[1]
        pixels, scale_y, scale_x = self._detection_image(image, height, width)
        normalized = networks.normalize(pixels)

        def cascade():
            boxes, _ = self._propose(normalized)
            boxes, _ = self._refine(normalized, boxes)
            return self._output(normalized, boxes)

        # An image smaller than PNet's window holds no face (and an empty one would fail
        # in crop_and_resize).
        boxes, landmarks, scores = tf.cond(
            tf.reduce_min(tf.shape(pixels)[:2]) >= networks.PNET_CELL, cascade,
            lambda: (tf.zeros([0, 4]), tf.zeros([0, 5, 2]), tf.zeros([0])))

        # Back to the input's pixel grid (identity when no downscale happened).
        unscale = tf.stack([scale_x, scale_y, scale_x, scale_y])
        boxes = (boxes + 0.5) / unscale - 0.5
        landmarks = (landmarks + 0.5) / tf.stack([scale_x, scale_y]) - 0.5
        limit = tf.cast(tf.stack([width, height, width, height]) - 1, tf.float32)
        boxes = tf.clip_by_value(boxes, 0.0, tf.maximum(limit, 0.0))

        n = tf.minimum(tf.shape(scores)[0], c.max_faces)
        pad = c.max_faces - n
        return {
            NUM_FACES: n,
            BOXES: tf.ensure_shape(tf.pad(boxes[:n], [[0, pad], [0, 0]]), [c.max_faces, 4]),
            LANDMARKS: tf.ensure_shape(tf.pad(landmarks[:n], [[0, pad], [0, 0], [0, 0]]),
                                       [c.max_faces, 5, 2]),
            SCORES: tf.ensure_shape(tf.pad(scores[:n], [[0, pad]]), [c.max_faces]),
        }

    def _detection_image(self, image, height, width):
        """float32 pixels of at most max_side on the longer side, and the y, x scales."""
        max_side = self.config.max_side
        longest = tf.maximum(tf.maximum(height, width), 1)
        ratio = tf.minimum(1.0, max_side / tf.cast(longest, tf.float32))
        new_h = tf.maximum(1, tf.cast(tf.round(tf.cast(height, tf.float32) * ratio), tf.int32))
        new_w = tf.maximum(1, tf.cast(tf.round(tf.cast(width, tf.float32) * ratio), tf.int32))
        pixels = tf.cond(
            longest > max_side,
            lambda: tf.raw_ops.ResizeArea(images=image[None], size=tf.stack([new_h, new_w]),
                                          align_corners=False)[0],
            lambda: tf.cast(image, tf.float32))
        scale_y = tf.cast(tf.shape(pixels)[0], tf.float32) / tf.cast(tf.maximum(height, 1),
                                                                     tf.float32)
        scale_x = tf.cast(tf.shape(pixels)[1], tf.float32) / tf.cast(tf.maximum(width, 1),
                                                                     tf.float32)
        return pixels, scale_y, scale_x

    def _propose(self, normalized):
        """PNet over the pyramid -> squared proposals [N, 4] and their scores,
        N <= max_rnet_inputs."""
        c = self.config
        shape = tf.shape(normalized)
        # Sizes and scales in float64, as the package computes them (a scaled size is
        # truncated, so float32 rounding could shift a level by a pixel).
        height, width = tf.cast(shape[0], tf.float64), tf.cast(shape[1], tf.float64)
        shorter = tf.minimum(height, width)
        # The package's level count, from the shorter side of the detection image...
        count = tf.round(tf.math.log(shorter / networks.PNET_CELL)
                         / math.log(1.0 / c.scale_factor) - 1.0)
        scales = ((networks.PNET_CELL / c.min_face_size)
                  * c.scale_factor ** tf.range(c.levels, dtype=tf.float64))
        # ...minus levels under PNet's window (sizes shrink with k: the valid ones are a prefix).
        valid = tf.logical_and(tf.range(c.levels, dtype=tf.float64) < count,
                               tf.floor(shorter * scales) >= networks.PNET_CELL)
        levels = tf.reduce_sum(tf.cast(valid, tf.int32))

        # One loop body for every level keeps the graph (and its tracing) small.
        def body(k, found_boxes, found_scores):
            scale = scales[k]
            size = tf.cast(tf.floor(tf.stack([height, width]) * scale), tf.int32)
            level_boxes, level_scores = self._level(normalized, tf.cast(scale, tf.float32), size)
            return k + 1, found_boxes.write(k, level_boxes), found_scores.write(k, level_scores)

        empty = dict(dtype=tf.float32, size=levels, infer_shape=False)
        _, found_boxes, found_scores = tf.while_loop(
            lambda k, *_: k < levels, body,
            (tf.constant(0), tf.TensorArray(element_shape=[None, 4], **empty),
             tf.TensorArray(element_shape=[None], **empty)))
        boxes = tf.reshape(found_boxes.concat(), [-1, 4])
        (boxes,), scores = _by_score([boxes], tf.reshape(found_scores.concat(), [-1]),
                                     c.max_rnet_inputs)
        keep = suppress(boxes, c.nms_pyramid)
        return square(tf.boolean_mask(boxes, keep)), tf.boolean_mask(scores, keep)

    def _level(self, normalized, scale, size):
        """One pyramid level: PNet windows over the threshold, suppressed, in image pixels."""
        c = self.config
        resized = tf.image.resize(normalized[None], size, method="area")
        probability, offsets = self.pnet(resized)
        probability, offsets = probability[0], offsets[0]
        cells_w = tf.shape(probability)[1]
        # Highest first, ties in reverse raster order as the package sorts them (top_k puts
        # the lower index first among equals: so it runs on the reversed grid).
        flat = tf.reverse(tf.reshape(probability, [-1]), [0])
        scores, index = tf.math.top_k(flat, tf.minimum(c.max_level_candidates, tf.size(flat)))
        index = tf.size(flat) - 1 - index
        over = scores > c.pnet_threshold
        scores, index = tf.boolean_mask(scores, over), tf.boolean_mask(index, over)
        offsets = tf.gather(tf.reshape(offsets, [-1, 4]), index)
        x = tf.cast(index % cells_w, tf.float32) * networks.PNET_STRIDE
        y = tf.cast(index // cells_w, tf.float32) * networks.PNET_STRIDE
        # The package's window of a cell: from (stride*i + 1) to (stride*i + 12), and the
        # offsets are fractions of that window's extent (11).
        cell = float(networks.PNET_CELL)
        windows = tf.stack([x + 1.0, y + 1.0, x + cell, y + cell], axis=-1)
        boxes = (windows + offsets * (cell - 1.0)) / scale
        keep = suppress(boxes, c.nms_level)
        return tf.boolean_mask(boxes, keep), tf.boolean_mask(scores, keep)

    def _refine(self, normalized, boxes):
        """RNet -> calibrated, suppressed, squared boxes and scores, N <= max_onet_inputs."""
        c = self.config
        probability, offsets = self.rnet(patches(normalized, boxes, networks.RNET_SIZE))
        boxes = calibrate(boxes, offsets)
        over = probability > c.rnet_threshold
        (boxes,), scores = _by_score(_masked([boxes], over), tf.boolean_mask(probability, over))
        keep = suppress(boxes, c.nms_rnet)
        (boxes,), scores = _by_score([square(tf.boolean_mask(boxes, keep))],
                                     tf.boolean_mask(scores, keep), c.max_onet_inputs)
        return boxes, scores

    def _output(self, normalized, boxes):
        """ONet -> final boxes, landmarks [N, 5, 2] and scores, highest score first."""
        c = self.config
        probability, offsets, points = self.onet(
            patches(normalized, boxes, networks.ONET_SIZE))
        # Landmarks are fractions of the box ONet saw (before its own calibration).
        w = boxes[:, 2:3] - boxes[:, 0:1] + 1.0
        h = boxes[:, 3:4] - boxes[:, 1:2] + 1.0
        xs = w * points[:, :5] + boxes[:, 0:1] - 1.0
        ys = h * points[:, 5:] + boxes[:, 1:2] - 1.0
        landmarks = tf.stack([xs, ys], axis=-1)
        boxes = calibrate(boxes, offsets)
        over = probability > c.onet_threshold
        (boxes, landmarks), scores = _by_score(_masked([boxes, landmarks], over),
                                               tf.boolean_mask(probability, over))
        keep = suppress(boxes, c.nms_onet, box_ops.MIN)
        return (tf.boolean_mask(boxes, keep), tf.boolean_mask(landmarks, keep),
                tf.boolean_mask(scores, keep))


def as_rgb(pixels):
    """uint8 pixels [H, W], [H, W, 1], [H, W, 3] or [H, W, 4] -> uint8 [H, W, 3] (grey is
    repeated, alpha dropped). Anything else raises ValueError."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:
        raise ValueError(f"pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.ndim != 3 or pixels.shape[-1] not in (1, 3, 4):
        raise ValueError(f"pixels of shape {pixels.shape}: expected [H, W], [H, W, 1], "
                         "[H, W, 3] or [H, W, 4]")
    if pixels.shape[-1] == 1:
        return np.repeat(pixels, 3, axis=-1)
    return pixels[..., :3]
