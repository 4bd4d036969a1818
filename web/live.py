"""The page's live mode: a page's webcam frames -> its people, tracked and fused.

`POST /api/live?session=ID` with one JPEG frame: the frame passes the same checks and the
same prediction slots as a photo (`web.app`), the model server's faces go to
`video.session.SessionTracker` under the page's session, and the answer is
`{"faces": [...]}`, one per face of the frame: `track` (the person's id, counted from 1 per
page; null while the tracker waits for a second sighting, or when the page is at its track
limit), `box` (pixels of the frame sent), `score`, and the track's fused `age`, `age_std`,
`age_interval_80`, `gender` ("M"/"F"), `gender_probability` and `frames` (the frames fused).
`DELETE /api/live?session=ID` forgets a page's tracks (its camera stopped).

What a client may hold here is bounded (`LiveSessions`): at most `max_sessions` pages (a
new one past that evicts the least recently seen), a page idle for `idle_timeout` seconds
is forgotten, at most `max_tracks` open tracks per page, and one frame of a page in flight
at a time (a second one is 429). Refusals before the frame is read close the connection. The session id is the page's random token: 16 to 64 of
A-Z a-z 0-9 _ - (the page sends 32 hex digits from `crypto.getRandomValues`).
"""
import contextlib
import re

from agegender import serving_contract as contract
from agegender.results import GENDER_NAMES
from web import backend as backend_lib
from web.connections import HttpError

PATH = "/api/live"
SESSION_ID = re.compile(r"[A-Za-z0-9_-]{16,64}")
DEFAULT_MAX_SESSIONS = 64
DEFAULT_IDLE_TIMEOUT = 60.0
DEFAULT_MAX_TRACKS = 16
# What the page sends (`page_config`): frames downscaled to this longer side, at most this
# many a second, one in flight at a time.
MAX_SIDE = 640
MAX_FRAMES_PER_SECOND = 5
_LETTERS = {name: letter for letter, name in GENDER_NAMES.items()}


def session_id(request):
    """The request's `session` query parameter, checked; HttpError(400) otherwise."""
    values = request.rel_url.query.getall("session", [])
    if len(values) != 1:
        raise HttpError(400, f"{PATH} needs one session=ID query parameter (the page's token), "
                             f"got {len(values)}", close=True)
    value = values[0]
    if not SESSION_ID.fullmatch(value):
        raise HttpError(400, "a session id is 16 to 64 characters of A-Z a-z 0-9 _ -, got "
                             f"{len(value)} characters", close=True)
    return value


def face_answer(tracked):
    """A `video.face_tracks.TrackedFace` -> the page's dict: the track's fused answer, or the
    frame's own (frames 1) for a face left untracked."""
    face, answer = tracked.face, tracked.answer
    out = {"track": tracked.track_id, "box": [round(float(v), 1) for v in face.box]}
    if face.score is not None:
        out["score"] = round(float(face.score), 4)
    if answer is None:
        fields = backend_lib.page_fields(face)
        fields.pop("landmarks", None)
        return {**fields, **out, "frames": 1}
    values = {contract.AGE: answer.age, contract.AGE_STD: answer.age_std,
              contract.AGE_INTERVAL_80: answer.age_interval_80,
              contract.GENDER: _LETTERS.get(answer.gender),
              contract.GENDER_PROBABILITY: answer.gender_probability}
    for name, value in values.items():
        if isinstance(value, float):
            out[name] = round(value, 4)
        elif isinstance(value, tuple):
            out[name] = [round(float(v), 4) for v in value]
        elif value is not None:
            out[name] = value
    out["frames"] = answer.frames
    return out


class LiveSessions:
    """The pages' tracks (`video.session.SessionTracker`) and the one-frame-per-page rule.
    Event loop only, like the rest of `web.app`'s request state.

    The tracker (SciPy's matcher, ~40 MB) is loaded with the first camera frame (`load`,
    which `web.app` runs in a thread): a page used only for photos never holds it."""

    def __init__(self, max_sessions=DEFAULT_MAX_SESSIONS, idle_timeout=DEFAULT_IDLE_TIMEOUT,
                 max_tracks=DEFAULT_MAX_TRACKS, clock=None):
        if max_sessions < 1 or max_tracks < 1 or not idle_timeout > 0:
            raise ValueError("max_live_sessions, live_idle_timeout and max_live_tracks must be "
                             f"> 0, got {max_sessions}, {idle_timeout}, {max_tracks}")
        self._options = dict(max_sessions=max_sessions, idle_seconds=idle_timeout,
                             max_tracks=max_tracks, **({} if clock is None else {"clock": clock}))
        self.tracker = None
        self._in_flight = set()

    def load(self):
        """Makes the tracker (importing `video.session`), once."""
        if self.tracker is None:
            from video import session as session_lib

            self.tracker = session_lib.SessionTracker(**self._options)
        return self.tracker

    def __len__(self):
        """Pages with tracks held (idle ones dropped first)."""
        return 0 if self.tracker is None else len(self.tracker)

    def open_tracks(self):
        """Open tracks over all pages held (what the tracks' memory is proportional to)."""
        return 0 if self.tracker is None else self.tracker.open_tracks()

    @contextlib.contextmanager
    def frame(self, session):
        """Holds the page's one frame in flight; HttpError(429) when one already is."""
        if session in self._in_flight:
            raise HttpError(429, "this page already has a frame being answered: send the next "
                                 "one after its answer", close=True)
        self._in_flight.add(session)
        try:
            yield
        finally:
            self._in_flight.discard(session)

    def update(self, session, faces):
        """The frame's `agegender.Face`s -> the page's [face dict] (see the module)."""
        return [face_answer(t) for t in self.load().update(session, faces)]

    def forget(self, session):
        if self.tracker is not None:
            self.tracker.forget(session)

    @staticmethod
    def page_config():
        return {"max_side": MAX_SIDE, "max_frames_per_second": MAX_FRAMES_PER_SECOND}

