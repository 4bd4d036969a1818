"""Faces per frame -> tracked faces with their track's fused answer, and the tracks' records.

Owns the state a clip (or a live page) keeps between frames: the tracker
(`video.tracking`), one `video.fusion.TrackFusion` per track, and what is reported of a
track when it ends (`track_record`). Input per frame: `agegender.Face`s (anything with
`box`, `score`, `age`, `age_distribution`, `gender`, `gender_probability`), from any
analyzer (in process or a TF Serving address): the tracking and fusion are client-side.

`FaceTracks.update(frame_index, time, faces)` -> one `TrackedFace` per face: its track's
public id (None while the track is tentative or when the face was left untracked at the
track limit), the face's own per-frame answer and the track's fused `Answer` (what is
displayed: it moves smoothly). `pop_closed()` gives the records of tracks that ended;
`finish()` ends every track.

Frames where the detector missed a face its track was following (blur, JPEG, a face half
hidden) can be given a box anyway, flagged, never with an age of their own:

- `fill_gaps=N` (offline, for a file): when a track is found again after missing 1..N of
  the frames given to `update`, those frames get its box interpolated (linearly in time
  between the two detections) as `TrackedFace(interpolated=True)`, handed over by
  `pop_filled()` as (frame_index, time, TrackedFace) once the track is found again: a
  caller that holds its last N frames back can show them. A gap longer than N frames
  (a person who left, a false positive's track) is not filled, nor a frame where the
  interpolated box is covered by at least `hidden_fraction` by a face that was found
  there (the person was behind someone, not missed).
- `coast=K` (live, no look-behind): a confirmed track missed for 1..K frames is returned
  by `update` with its predicted box (`video.tracking.Track.predicted`) as a
  `TrackedFace(predicted=True)`.

Both carry the track's fused answer as it was at the track's last detection; their
`face` is a `FilledFace` (a box, nothing else). `skip(frame_index, time)` stands for a
frame the detector was not run on (`video.annotate --detect_every`): no track misses it,
and with `fill_gaps` it is filled like a missed frame once its tracks are found again.
"""
import collections
import dataclasses

import numpy as np

from video import fusion as fusion_lib
from video import tracking


# A gap's frame is not filled where a found face covers this much of the interpolated box
# (chosen on the benchmark's validation clips: docs/video.md).
HIDDEN_FRACTION = 0.3


@dataclasses.dataclass(frozen=True)
class TrackedFace:
    track_id: int | None
    face: object                          # the per-frame answer (agegender.Face)
    answer: fusion_lib.Answer | None      # the track's fused answer after this frame
    track: tracking.Track | None = None   # its track (a tentative one is confirmed later)
    interpolated: bool = False            # a box between two detections (`fill_gaps`)
    predicted: bool = False               # a missed track's predicted box (`coast`)

    @property
    def filled(self):
        """True for a box the detector did not give (interpolated or predicted)."""
        return self.interpolated or self.predicted


@dataclasses.dataclass(frozen=True)
class FilledFace:
    """The face of a frame where the detector missed it: a box, no answer of its own (the
    fields `agegender.Face` has, None)."""
    box: tuple
    score = None
    age = None
    age_std = None
    age_interval_50 = None
    age_interval_80 = None
    age_distribution = None
    gender = None
    gender_probability = None
    landmarks = None

    def to_dict(self, distribution=True):
        out = {"box": list(self.box), "score": None, "age": None, "age_std": None,
               "age_interval_50": None, "age_interval_80": None, "gender": None,
               "gender_probability": None}
        if distribution:
            out["age_distribution"] = None
        return out


@dataclasses.dataclass
class _TrackState:
    fusion: fusion_lib.TrackFusion
    best_box: tuple | None = None    # the representative box: the most confident detection
    best_score: float = -1.0
    best_frame: int | None = None
    step: int = 0                    # the `update` call of its last detection
    box: np.ndarray | None = None    # its last detection's box, and time
    time: float = 0.0
    answer: fusion_lib.Answer | None = None  # the fused answer after that detection


def _box(face):
    return tuple(float(v) for v in face.box)


class FaceTracks:
    """Tracks and fuses; see the module docstring. `tracker_options` go to
    `video.tracking.Tracker` (e.g. max_tracks, max_missed_seconds)."""

    def __init__(self, params=None, *, fill_gaps=0, coast=0, hidden_fraction=HIDDEN_FRACTION,
                 **tracker_options):
        if fill_gaps < 0 or coast < 0:
            raise ValueError(f"fill_gaps and coast are frame counts >= 0, got {fill_gaps}, "
                             f"{coast}")
        self.params = params or fusion_lib.DEFAULT_PARAMS
        self._fusion_params = None  # params with the model's calibration temperature
        self.tracker = tracking.Tracker(**tracker_options)
        self.fill_gaps, self.coast = int(fill_gaps), int(coast)
        self.hidden_fraction = hidden_fraction
        self._step = 0
        # (step, frame index, time) of the last fill_gaps frames: the frames a gap can span.
        self._recent = collections.deque(maxlen=self.fill_gaps)
        self._filled = []

    def _params_for(self, face):
        """The fusion's params, its temperature times the model's calibration temperature
        (`fusion.served_temperature`, read from the first face that shows it)."""
        if self._fusion_params is None:
            served = fusion_lib.served_temperature(face)
            if served is None:
                return self.params
            self._fusion_params = dataclasses.replace(
                self.params, temperature=self.params.temperature * served)
        return self._fusion_params

    def update(self, frame_index, time, faces):
        faces = [f for f in faces if getattr(f, "box", None) is not None]
        boxes = np.array([_box(f) for f in faces], np.float64).reshape(-1, 4)
        appearances = [None if f.age_distribution is None else np.asarray(f.age_distribution)
                       for f in faces]
        self._step += 1
        tracks = self.tracker.update(frame_index, time, boxes, appearances)
        tracked = []
        for face, box, track in zip(faces, boxes, tracks):
            if track is None:
                tracked.append(TrackedFace(None, face, None))
                continue
            if track.state is None:
                track.state = _TrackState(fusion_lib.TrackFusion(self._params_for(face)))
            state = track.state
            if state.box is not None and 1 < self._step - state.step <= self.fill_gaps + 1:
                self._fill(track, state, box, time)
            state.fusion.add(face)
            score = -1.0 if face.score is None else float(face.score)
            if score > state.best_score:
                state.best_box, state.best_score, state.best_frame = _box(face), score, frame_index
            track.appearance = state.fusion.distribution()
            answer = state.fusion.answer()
            state.step, state.box, state.time, state.answer = self._step, box, time, answer
            tracked.append(TrackedFace(track.id, face, answer, track))
        tracked.extend(self._coasted(time))
        if self.fill_gaps:
            self._recent.append((self._step, frame_index, time, boxes))
        return tracked

    def skip(self, frame_index, time):
        """A frame the detector was not run on (`video.annotate --detect_every`): no track
        is asked to match, so none counts it as a miss (a tentative track is not dropped),
        but it is a frame a gap spans: with `fill_gaps`, each track found again in a later
        frame gets its box here interpolated. Returns the coasted boxes (`coast`), else []."""
        self._step += 1
        tracked = self._coasted(time)
        if self.fill_gaps:
            # No face was looked for: nothing can hide an interpolated box here.
            self._recent.append((self._step, frame_index, time, np.zeros((0, 4))))
        return tracked

    def _coasted(self, time):
        """`coast`: the confirmed tracks missed for 1..coast steps, at their predicted box."""
        coasted = []
        if self.coast:
            for track in self.tracker.open_tracks:
                state = track.state
                if (track.confirmed and state is not None and
                        0 < self._step - state.step <= self.coast):
                    box = tuple(float(v) for v in track.predicted(time))
                    coasted.append(TrackedFace(track.id, FilledFace(box), state.answer, track,
                                               predicted=True))
        return coasted

    def _fill(self, track, state, box, time):
        """The frames between the track's last detection and `box` (now), interpolated."""
        span = time - state.time
        for step, frame_index, frame_time, found in self._recent:
            if state.step < step < self._step:
                u = (frame_time - state.time) / span if span > 0 else 0.5
                between = (1 - u) * state.box + u * box
                if self.hidden_fraction and len(found) and tracking.covered(
                        between, found).max() >= self.hidden_fraction:
                    continue  # behind a face that was found: hidden, not missed
                self._filled.append((frame_index, frame_time, TrackedFace(
                    track.id, FilledFace(tuple(float(v) for v in between)), state.answer,
                    track, interpolated=True)))

    def pop_filled(self):
        """(frame_index, time, TrackedFace) of the boxes interpolated since the last call
        (`fill_gaps`), in the order their tracks were found again."""
        filled, self._filled = self._filled, []
        return filled

    def pop_closed(self):
        """Records (`track_record`) of the tracks closed since the last call."""
        return [track_record(t) for t in self.tracker.pop_closed()]

    def finish(self):
        """Ends every open track; the records of all tracks not yet handed over."""
        self.tracker.close_all()
        return self.pop_closed()

    @property
    def open_tracks(self):
        return self.tracker.open_tracks


def track_record(track):
    """One JSON-ready line for a finished track: id, first/last frame and time, the fused
    answer with its intervals, gender and probability, the frames used, and the
    representative box (of its most confident detection, and that frame)."""
    answer = track.state.fusion.answer() if track.state else None
    record = {"type": "track", "track": track.id,
              "first_frame": track.first_frame, "last_frame": track.last_frame,
              "first_time": round(track.first_time, 4), "last_time": round(track.last_time, 4),
              "frames": track.hits}
    if answer is not None:
        fused = answer.to_dict()
        fused.pop("frames")
        record.update(fused)
    if track.state is not None and track.state.best_box is not None:
        record["box"] = [round(v, 1) for v in track.state.best_box]
        record["box_frame"] = track.state.best_frame
    return record
