"""Bounded per-session tracking for a live page: many viewers, each with their own tracks.

A web server that answers webcam frames keeps one `video.face_tracks.FaceTracks` per page
(session), so each viewer's people keep their ids and fused ages. Nothing a client sends
may grow that state without bound or stop the server:

- at most `max_sessions` sessions; a new one past that evicts the least recently used;
- a session idle for `idle_seconds` is forgotten (checked on every call: no thread);
- at most `max_tracks` open tracks per session (`video.tracking.Tracker`), and faces per
  frame past `max_faces` are ignored (the model answers at most 16 per photo anyway);
- a frame's timestamp is the server's clock, not the client's: a client cannot make its
  tracks live forever or jump, and frames arriving out of order cannot move time back.

`SessionTracker.update(session_id, faces)` -> the frame's `TrackedFace`s. Thread-safe (one
lock; the work under it is the matching of a few boxes). Closed tracks are dropped: a live
page shows the present, and `video.annotate` is the path that reports tracks.
"""
import collections
import threading
import time

from video import face_tracks


class SessionTracker:
    def __init__(self, *, max_sessions=64, idle_seconds=60.0, max_tracks=16, max_faces=16,
                 params=None, clock=time.monotonic, **tracker_options):
        if max_sessions < 1 or max_tracks < 1 or max_faces < 1 or not idle_seconds > 0:
            raise ValueError("max_sessions, max_tracks, max_faces and idle_seconds must be "
                             "positive")
        self.max_sessions, self.idle_seconds = max_sessions, idle_seconds
        self.max_faces = max_faces
        self._options = dict(tracker_options, max_tracks=max_tracks)
        self._params = params
        self._clock = clock
        self._sessions = collections.OrderedDict()  # id -> [FaceTracks, last seen, frames]
        self._lock = threading.Lock()

    def __len__(self):
        with self._lock:
            self._expire(self._clock())
            return len(self._sessions)

    def _expire(self, now):
        while self._sessions:
            key, (_, seen, _) = next(iter(self._sessions.items()))
            if now - seen <= self.idle_seconds:
                break
            del self._sessions[key]

    def update(self, session_id, faces):
        """The faces of a session's new frame -> their `TrackedFace`s (track ids and fused
        answers). `session_id`: any hashable the caller chose (a random token per page)."""
        with self._lock:
            now = self._clock()
            self._expire(now)
            entry = self._sessions.pop(session_id, None)
            if entry is None:
                while len(self._sessions) >= self.max_sessions:
                    self._sessions.popitem(last=False)
                entry = [face_tracks.FaceTracks(self._params, **self._options), now, 0]
            entry[1] = max(entry[1], now)
            entry[2] += 1
            self._sessions[session_id] = entry  # most recently used last
            people = entry[0]
            tracked = people.update(entry[2], entry[1], list(faces)[:self.max_faces])
            people.pop_closed()
            return tracked

    def open_tracks(self):
        """Open tracks over every session held (idle sessions dropped first): what this
        state's memory grows with, at most max_sessions x max_tracks."""
        with self._lock:
            self._expire(self._clock())
            return sum(len(entry[0].open_tracks) for entry in self._sessions.values())

    def forget(self, session_id):
        """Drops a session (its page closed)."""
        with self._lock:
            self._sessions.pop(session_id, None)
