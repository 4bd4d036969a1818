"""The mtcnn package's own detector, as the reference `faces.detector` is checked against.

Owns running `mtcnn.MTCNN().detect_faces` (the package's numpy-glued cascade, not exportable)
and comparing its faces with ours; used by tests/faces/detector_test.py and
benchmarks/faces.py only, never on a serving or records path (so it is not shipped).

- `Reference().find(pixels)` -> `detector.Detections` (boxes x1, y1, x2, y2, unrounded; the
  package's default settings; clipped to the image as its `fit_to_image` does).
- `compare(ours, theirs)` -> `Agreement`: faces matched one to one by IoU, the IoU of each
  matched pair, the largest landmark distance in each pair, and the faces only one side found.
"""
import collections

import numpy as np

from faces import boxes as box_ops
from faces.detector import Detections

Agreement = collections.namedtuple("Agreement", [
    "matched",         # pairs found by both (IoU >= match_iou)
    "ours_only",       # faces only our detector found
    "theirs_only",     # faces only the package found
    "ious",            # [matched] IoU of each pair
    "landmark_error",  # [matched] largest distance between corresponding landmarks, pixels
])


class Reference:
    """The package's detector with its defaults (built once: it loads three Keras models)."""

    def __init__(self):
        from mtcnn import MTCNN

        self._mtcnn = MTCNN()

    def find(self, pixels):
        """uint8 [H, W, 3] -> `Detections` (numpy), highest score first."""
        rows = self._mtcnn.detect_faces(np.asarray(pixels), box_format="xyxy",
                                        output_type="numpy")
        rows = np.asarray(rows, np.float32).reshape(-1, 16)
        rows = rows[np.argsort(-rows[:, 5], kind="stable")]
        # Columns: image index, x1, y1, x2, y2, score, the 5 x's, the 5 y's.
        landmarks = np.stack([rows[:, 6:11], rows[:, 11:16]], axis=-1)
        return Detections(rows[:, 1:5], landmarks, rows[:, 5])


def compare(ours, theirs, match_iou=0.5):
    """Agreement between two `Detections` (faces paired one to one, greedily by IoU)."""
    m = box_ops.match(ours.boxes, theirs.boxes, match_iou)
    mine = np.flatnonzero(m.pair >= 0)
    errors = [float(np.linalg.norm(ours.landmarks[i] - theirs.landmarks[m.pair[i]], axis=-1).max())
              for i in mine]
    return Agreement(len(mine), int((m.pair < 0).sum()), int(m.false_positive.sum()),
                     m.iou[mine], np.asarray(errors, np.float32))
