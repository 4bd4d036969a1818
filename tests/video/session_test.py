"""video.session: per-page tracks, bounded in sessions, tracks and faces, forgotten when idle."""
import threading

import pytest

from agegender.results import Face
from video import session


def face(x, y=50, side=40, age=30.0):
    return Face(box=(x, y, x + side, y + side), score=0.99, age=age, gender="female",
                gender_probability=0.9)


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_each_session_has_its_own_ids():
    clock = Clock()
    tracker = session.SessionTracker(clock=clock)
    for step in range(3):
        clock.now += 0.1
        a = tracker.update("page-a", [face(10 + 2 * step), face(200 + 2 * step)])
        b = tracker.update("page-b", [face(300 - 2 * step)])
    assert [t.track_id for t in a] == [1, 2] and [t.track_id for t in b] == [1]
    assert a[0].answer.frames == 3 and a[0].answer.gender == "female"


def test_sessions_are_bounded_least_recently_used_first():
    clock = Clock()
    tracker = session.SessionTracker(max_sessions=3, clock=clock)
    for name in ("a", "b", "c"):
        tracker.update(name, [face(10)])
    tracker.update("a", [face(10)])  # a is fresh again
    tracker.update("d", [face(10)])  # evicts b
    assert len(tracker) == 3
    clock.now += 0.1
    again = tracker.update("b", [face(10)])
    assert again[0].track_id is None  # b starts over: its track is tentative again
    kept = tracker.update("a", [face(10)])
    assert kept[0].track_id == 1


def test_idle_sessions_are_forgotten():
    clock = Clock()
    tracker = session.SessionTracker(idle_seconds=5, clock=clock)
    tracker.update("a", [face(10)])
    clock.now = 4.0
    tracker.update("b", [face(10)])
    clock.now = 6.0
    assert len(tracker) == 1  # a was idle for 6 s
    tracker.forget("b")
    assert len(tracker) == 0


def test_tracks_and_faces_per_frame_are_bounded():
    clock = Clock()
    tracker = session.SessionTracker(max_tracks=4, max_faces=6, clock=clock)
    crowd = [face(50 * k, 10) for k in range(100)]  # a hostile frame: 100 boxes
    for _ in range(5):
        clock.now += 0.1
        tracked = tracker.update("a", crowd)
    assert len(tracked) == 6
    assert sum(t.track_id is not None for t in tracked) == 4


def test_concurrent_updates():
    tracker = session.SessionTracker(max_sessions=8)
    errors = []

    def worker(n):
        try:
            for i in range(50):
                tracker.update(f"s{n % 12}", [face(10 + i % 5)])
        except Exception as error:  # noqa: BLE001
            errors.append(error)
    threads = [threading.Thread(target=worker, args=(n,)) for n in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(tracker) <= 8


def test_bad_limits():
    with pytest.raises(ValueError):
        session.SessionTracker(max_sessions=0)
    with pytest.raises(ValueError):
        session.SessionTracker(idle_seconds=0)
