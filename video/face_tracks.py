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
"""
import dataclasses

import numpy as np

from video import fusion as fusion_lib
from video import tracking


@dataclasses.dataclass(frozen=True)
class TrackedFace:
    track_id: int | None
    face: object                          # the per-frame answer (agegender.Face)
    answer: fusion_lib.Answer | None      # the track's fused answer after this frame
    track: tracking.Track | None = None   # its track (a tentative one is confirmed later)


@dataclasses.dataclass
class _TrackState:
    fusion: fusion_lib.TrackFusion
    best_box: tuple | None = None    # the representative box: the most confident detection
    best_score: float = -1.0
    best_frame: int | None = None


def _box(face):
    return tuple(float(v) for v in face.box)


class FaceTracks:
    """Tracks and fuses; see the module docstring. `tracker_options` go to
    `video.tracking.Tracker` (e.g. max_tracks, max_missed_seconds)."""

    def __init__(self, params=None, **tracker_options):
        self.params = params or fusion_lib.DEFAULT_PARAMS
        self._fusion_params = None  # params with the model's calibration temperature
        self.tracker = tracking.Tracker(**tracker_options)

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
        tracks = self.tracker.update(frame_index, time, boxes, appearances)
        tracked = []
        for face, track in zip(faces, tracks):
            if track is None:
                tracked.append(TrackedFace(None, face, None))
                continue
            if track.state is None:
                track.state = _TrackState(fusion_lib.TrackFusion(self._params_for(face)))
            state = track.state
            state.fusion.add(face)
            score = -1.0 if face.score is None else float(face.score)
            if score > state.best_score:
                state.best_box, state.best_score, state.best_frame = _box(face), score, frame_index
            track.appearance = state.fusion.distribution()
            tracked.append(TrackedFace(track.id, face, state.fusion.answer(), track))
        return tracked

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
