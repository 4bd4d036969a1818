"""Per-frame face boxes -> stable track ids (a Hungarian matcher over boxes, scipy).

Owns which detection of a frame continues which person. Each frame, `Tracker.update`
matches the frame's boxes to the open tracks with `scipy.optimize.linear_sum_assignment`
on a cost that is:

- 1 - IoU between the detection and the track's *predicted* box (constant velocity of the
  box's centre and size, smoothed), when they overlap by at least `min_iou`;
- otherwise, for a track missed for a while or moving fast, 1 + the distance between the
  centres in units of the track's box side, gated at `max_distance` sides (growing with the
  time the track has been missing, so a person re-found after an occlusion still matches);
- plus, when both sides carry an age distribution (the tracker is given them), a small
  `appearance_weight` x the Hellinger distance between the track's fused distribution and
  the detection's: two people crossing are told apart by who they look like to the model,
  not only by where their boxes are.

Pairs outside the gates never match. Detections left over start tentative tracks, which
become confirmed (and get their public id, counted from 1) after `min_hits` frames; a track
not matched for `max_missed_seconds` is closed, and `pop_closed()` hands it over once.
Tracks that never reached `min_hits` close silently (a detector's one-frame false positive
is no person). Why this and not norfair or supervision's ByteTrack: measured on the
benchmark clips (docs/video.md, "Design decisions").

Bounded: at most `max_tracks` tracks are open; past that, new detections stay untracked
(a page or a clip cannot grow the state without limit).
"""
import dataclasses

import numpy as np
from scipy.optimize import linear_sum_assignment


MAX_EXTRAPOLATION = 0.5  # seconds
MAX_SCALE = 1.25  # the predicted box's size: within this factor of the last box's


@dataclasses.dataclass
class Track:
    """A person followed across frames. `id` is None while tentative."""
    key: int                      # internal, unique per tracker
    id: int | None
    box: np.ndarray               # last matched box (x1, y1, x2, y2)
    first_frame: int
    first_time: float
    last_frame: int
    last_time: float
    hits: int = 1
    velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))
    appearance: np.ndarray | None = None   # set by the caller (the fused distribution)
    state: object = None                   # the caller's per-track state (fusion)

    @property
    def confirmed(self):
        return self.id is not None

    def predicted(self, time, max_scale=MAX_SCALE):
        """The box expected at `time`: its centre moved at constant velocity and its size
        changed at its rate, for at most `MAX_EXTRAPOLATION` seconds (a person hidden
        longer is looked for near where they were going, not carried off screen), the size
        kept within `max_scale` of the last box's either way: a face shrinking as it is
        hidden by a nearer one, or cut by the frame's edge, must not be extrapolated to a
        speck that the person, seen again whole, no longer matches."""
        dt = min(max(time - self.last_time, 0.0), MAX_EXTRAPOLATION)
        box = self.box + self.velocity * dt
        if dt:
            size = np.clip(self.box[2:] - self.box[:2], 1.0, None)
            centre = (box[:2] + box[2:]) / 2
            half = np.clip(box[2:] - box[:2], size / max_scale, size * max_scale) / 2
            box = np.concatenate([centre - half, centre + half])
        return box


def _pairs(a, b):
    """[N, 4] and [M, 4] boxes as [N, 1, 4] and [1, M, 4], their pairwise intersection areas
    [N, M], and their areas [N, 1] and [1, M]."""
    a = np.asarray(a, np.float64).reshape(-1, 4)[:, None, :]
    b = np.asarray(b, np.float64).reshape(-1, 4)[None, :, :]
    w = np.clip(np.minimum(a[..., 2], b[..., 2]) - np.maximum(a[..., 0], b[..., 0]), 0, None)
    h = np.clip(np.minimum(a[..., 3], b[..., 3]) - np.maximum(a[..., 1], b[..., 1]), 0, None)
    area_a = (a[..., 2] - a[..., 0]) * (a[..., 3] - a[..., 1])
    area_b = (b[..., 2] - b[..., 0]) * (b[..., 3] - b[..., 1])
    return w * h, area_a, area_b


def iou_matrix(a, b):
    """[N, 4] x [M, 4] boxes -> [N, M] intersection over union (0 for degenerate pairs)."""
    inter, area_a, area_b = _pairs(a, b)
    union = area_a + area_b - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1), 0.0)


def covered(box, boxes):
    """The fraction of `box` ([4]) covered by each of `boxes` ([M, 4]) -> [M]."""
    inter, area, _ = _pairs(box, boxes)
    return (inter / np.maximum(area, 1e-9))[0]


def hellinger(p, q):
    """Hellinger distance between rows of two [N, K] / [M, K] distributions -> [N, M]."""
    p = np.sqrt(np.clip(np.asarray(p, np.float64), 0, None))
    q = np.sqrt(np.clip(np.asarray(q, np.float64), 0, None))
    return np.sqrt(np.clip(1.0 - p @ q.T, 0.0, 1.0))


class Tracker:
    """`update(frame_index, time, boxes, appearances=None)` -> the `Track` of each box
    (None for a box left untracked at `max_tracks`); `open_tracks`, `pop_closed()`,
    `close_all()` at the end of a clip."""

    def __init__(self, *, min_iou=0.2, max_distance=1.0, distance_growth=2.5,
                 max_missed_seconds=2.0, min_hits=2, appearance_weight=0.3,
                 velocity_smoothing=0.5, max_scale=MAX_SCALE, max_tracks=64):
        self.min_iou, self.max_distance = min_iou, max_distance
        self.max_scale = max_scale
        self.distance_growth = distance_growth  # extra box sides allowed per second missed
        self.max_missed_seconds, self.min_hits = max_missed_seconds, min_hits
        self.appearance_weight = appearance_weight
        self.velocity_smoothing = velocity_smoothing
        self.max_tracks = max_tracks
        self.tracks = []          # open tracks
        self._closed = []
        self._next_key = 0
        self._next_id = 1

    @property
    def open_tracks(self):
        return list(self.tracks)

    def _cost(self, time, boxes, appearances):
        n, m = len(self.tracks), len(boxes)
        cost = np.full((n, m), np.inf)
        if not n or not m:
            return cost
        predicted = np.stack([t.predicted(time, self.max_scale) for t in self.tracks])
        iou = iou_matrix(predicted, boxes)
        centre_t = (predicted[:, :2] + predicted[:, 2:]) / 2
        centre_d = (boxes[:, :2] + boxes[:, 2:]) / 2
        side = np.sqrt(np.clip((predicted[:, 2] - predicted[:, 0]) *
                               (predicted[:, 3] - predicted[:, 1]), 1.0, None))
        distance = np.linalg.norm(centre_t[:, None] - centre_d[None], axis=-1) / side[:, None]
        missed = np.array([time - t.last_time for t in self.tracks])
        gate = self.max_distance + self.distance_growth * np.clip(missed, 0, None)
        # Sizes must agree too (a far smaller box at the same place is someone else).
        area_t = side ** 2
        area_d = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        ratio = np.maximum(area_t[:, None], area_d[None]) / np.clip(
            np.minimum(area_t[:, None], area_d[None]), 1.0, None)
        by_iou = iou >= self.min_iou
        by_distance = (distance <= gate[:, None]) & (ratio <= 4.0)
        cost = np.where(by_iou, 1.0 - iou, np.where(by_distance, 1.0 + distance, np.inf))
        if appearances is not None and self.appearance_weight:
            known = [i for i, t in enumerate(self.tracks) if t.appearance is not None]
            rows = [i for i in range(m) if appearances[i] is not None]
            if known and rows:
                d = hellinger(np.stack([self.tracks[i].appearance for i in known]),
                              np.stack([appearances[j] for j in rows]))
                cost[np.ix_(known, rows)] += self.appearance_weight * d
        return cost

    def update(self, frame_index, time, boxes, appearances=None):
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        cost = self._cost(time, boxes, appearances)
        assigned = [None] * len(boxes)
        if cost.size:
            finite = np.where(np.isfinite(cost), cost, 1e6)
            rows, cols = linear_sum_assignment(finite)
            for r, c in zip(rows, cols):
                if np.isfinite(cost[r, c]):
                    assigned[c] = self.tracks[r]
                    self._matched(self.tracks[r], frame_index, time, boxes[c])
        for j, track in enumerate(assigned):
            if track is None and len(self.tracks) < self.max_tracks:
                assigned[j] = self._start(frame_index, time, boxes[j])
        self._expire(time)
        return assigned

    def _matched(self, track, frame_index, time, box):
        dt = time - track.last_time
        if dt > 0:
            measured = (box - track.box) / dt
            a = self.velocity_smoothing
            track.velocity = a * track.velocity + (1 - a) * measured
        track.box = box
        track.last_frame, track.last_time = frame_index, time
        track.hits += 1
        if track.id is None and track.hits >= self.min_hits:
            track.id = self._next_id
            self._next_id += 1

    def _start(self, frame_index, time, box):
        track = Track(self._next_key, None, box, frame_index, time, frame_index, time)
        self._next_key += 1
        if self.min_hits <= 1:
            track.id = self._next_id
            self._next_id += 1
        self.tracks.append(track)
        return track

    def _expire(self, time):
        keep = []
        for track in self.tracks:
            if not track.confirmed and track.last_time < time:
                continue  # a tentative track missed once was no person
            if time - track.last_time > self.max_missed_seconds:
                if track.confirmed:
                    self._closed.append(track)
            else:
                keep.append(track)
        self.tracks = keep

    def close_all(self):
        """Closes every open track (the end of a clip)."""
        self._closed.extend(t for t in self.tracks if t.confirmed)
        self.tracks = []

    def pop_closed(self):
        """Tracks closed since the last call (confirmed ones only), in closing order."""
        closed, self._closed = self._closed, []
        return closed
