"""Face boxes: the coordinate convention, their overlap, and matching detections to truth.

Owns the box convention every module of `faces` uses: float [..., 4] as (x1, y1, x2, y2)
in pixels of the image they were found in, x to the right and y down, (x1, y1) the top-left
corner, in pixel-index coordinates (pixel (i, j) is the point x=j, y=i). Note that this is
not `tf.image`'s (y1, x1, y2, x2); `to_tf_image` converts.

- `overlap(a, b, method)`: pairwise intersection over union ("union") or over the smaller
  box ("min"), a TF op; the detector's suppression and the evaluation both use it.
- `match(truth, detected, threshold)`: which detection (if any) found each truth box and
  which detections are false positives (greedy, highest IoU first), for tests,
  `testing.reference_detector` and `benchmarks/faces.py`.
"""
import collections

import numpy as np
import tensorflow as tf

UNION, MIN = "union", "min"


def area(boxes):
    """Width times height, as the mtcnn package computes it (no +1 for pixel extents)."""
    return (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])


def overlap(a, b, method=UNION):
    """[N, 4], [M, 4] -> [N, M]: intersection over union, or over the smaller area ("min").

    A pair whose denominator is 0 (degenerate boxes) overlaps by 0.
    """
    a = tf.convert_to_tensor(a, tf.float32)
    b = tf.convert_to_tensor(b, tf.float32)
    a_ = a[:, None, :]
    b_ = b[None, :, :]
    width = tf.nn.relu(tf.minimum(a_[..., 2], b_[..., 2]) - tf.maximum(a_[..., 0], b_[..., 0]))
    height = tf.nn.relu(tf.minimum(a_[..., 3], b_[..., 3]) - tf.maximum(a_[..., 1], b_[..., 1]))
    inter = width * height
    area_a, area_b = area(a)[:, None], area(b)[None, :]
    if method == UNION:
        denominator = area_a + area_b - inter
    elif method == MIN:
        denominator = tf.minimum(area_a, area_b)
    else:
        raise ValueError(f"overlap method {method!r}: expected {UNION!r} or {MIN!r}")
    return tf.math.divide_no_nan(inter, denominator)


def to_tf_image(boxes):
    """(x1, y1, x2, y2) -> `tf.image`'s (y1, x1, y2, x2)."""
    return tf.gather(boxes, [1, 0, 3, 2], axis=-1)


Match = collections.namedtuple("Match", ["pair", "iou", "false_positive"])


def match(truth, detected, threshold=0.5):
    """Greedy one-to-one matching by IoU (highest first) of two [n, 4] arrays of boxes.

    Returns `Match`: `pair` int [len(truth)], the index of the detection matched to each truth
    box or -1; `iou` [len(truth)], the pair's IoU (0 when unmatched); `false_positive` bool
    [len(detected)], the detections matched to no truth box.
    """
    truth = np.asarray(truth, np.float32).reshape(-1, 4)
    detected = np.asarray(detected, np.float32).reshape(-1, 4)
    pair = np.full(len(truth), -1, np.int64)
    best = np.zeros(len(truth), np.float32)
    used = np.zeros(len(detected), bool)
    if len(truth) and len(detected):
        iou = overlap(truth, detected).numpy()
        for flat in np.argsort(-iou, axis=None, kind="stable"):
            t, d = np.unravel_index(flat, iou.shape)
            if iou[t, d] < threshold:
                break
            if pair[t] < 0 and not used[d]:
                pair[t], used[d], best[t] = d, True, iou[t, d]
    return Match(pair, best, ~used)

