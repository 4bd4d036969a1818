"""video.tracking: stable ids through motion, misses, occlusions and crossings."""
import numpy as np

from video import tracking


def box(cx, cy, side=40):
    return [cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2]


def run(tracker, frames, fps=10.0, appearances=None):
    """frames: list of lists of boxes -> ids per frame (None where untracked/tentative)."""
    ids = []
    for i, boxes in enumerate(frames):
        tracks = tracker.update(i, i / fps, boxes,
                                None if appearances is None else appearances[i])
        ids.append([None if t is None else t.id for t in tracks])
    return ids


def test_two_people_crossing_keep_their_ids():
    frames = [[box(50 + 10 * i, 100), box(350 - 10 * i, 110)] for i in range(31)]
    ids = run(tracking.Tracker(appearance_weight=0), frames)
    assert ids[1] == [1, 2]
    assert all(frame == [1, 2] for frame in ids[1:])  # they cross at frame 15


def test_missed_detections_keep_the_id():
    frames = [[box(100 + 5 * i, 100)] if not 10 <= i < 15 else [] for i in range(30)]
    ids = run(tracking.Tracker(max_missed_seconds=1.0), frames)
    assert {i for frame in ids[1:] for i in frame} == {1}


def test_a_track_missing_too_long_is_closed_and_reported():
    tracker = tracking.Tracker(max_missed_seconds=0.5)
    frames = [[box(100, 100)]] * 5 + [[]] * 10 + [[box(100, 100)]] * 5
    ids = run(tracker, frames)
    closed = tracker.pop_closed()
    assert [t.id for t in closed] == [1]
    assert (closed[0].first_frame, closed[0].last_frame, closed[0].hits) == (0, 4, 5)
    assert ids[-1] == [2]
    assert tracker.pop_closed() == []  # handed over once
    tracker.close_all()
    assert [t.id for t in tracker.pop_closed()] == [2]


def test_one_frame_false_positive_gets_no_id_and_is_not_reported():
    tracker = tracking.Tracker()
    frames = [[box(100, 100)] + ([box(300, 300)] if i == 3 else []) for i in range(8)]
    ids = run(tracker, frames)
    assert ids[3] == [1, None]
    tracker.close_all()
    assert [t.id for t in tracker.pop_closed()] == [1]


def test_open_tracks_are_bounded():
    tracker = tracking.Tracker(max_tracks=3)
    tracks = tracker.update(0, 0.0, [box(60 * k + 40, 50) for k in range(6)])
    assert sum(t is not None for t in tracks) == 3 and len(tracker.open_tracks) == 3


def test_fast_mover_is_followed_past_iou():
    # 44 px per frame with a 40 px box: consecutive boxes never overlap.
    frames = [[box(40 + 44 * i, 200)] for i in range(10)]
    ids = run(tracking.Tracker(), frames)
    assert {i for frame in ids[1:] for i in frame} == {1}


def test_appearance_tells_crossing_people_apart():
    # Both pass behind each other and come out where the other would be expected when
    # only motion counts: A turns back at the crossing. The model's view of them differs.
    young = np.exp(-0.5 * ((np.arange(101) - 20) / 3.0) ** 2)
    old = np.exp(-0.5 * ((np.arange(101) - 70) / 3.0) ** 2)
    young, old = young / young.sum(), old / old.sum()
    frames, looks = [], []
    for i in range(20):
        a = 100 + 10 * i if i < 10 else 200 - 10 * (i - 10)   # A turns back at 200
        b = 300 - 10 * i
        frames.append([box(a, 100), box(b, 100)])
        looks.append([young, old])
    with_look = tracking.Tracker(appearance_weight=1.0)
    ids = []
    for i, (boxes, appear) in enumerate(zip(frames, looks)):
        tracks = with_look.update(i, i / 10, boxes, appear)
        for t, a in zip(tracks, appear):
            t.appearance = a  # the caller keeps each track's fused distribution
        ids.append([t.id for t in tracks])
    assert all(frame == [1, 2] for frame in ids[1:])


def test_iou_and_hellinger():
    assert np.allclose(tracking.iou_matrix([[0, 0, 2, 2]], [[1, 1, 3, 3], [5, 5, 6, 6]]),
                       [[1 / 7, 0]])
    assert tracking.iou_matrix([[0, 0, 0, 0]], [[0, 0, 0, 0]])[0, 0] == 0
    p = np.array([[0.5, 0.5, 0]])
    assert np.allclose(tracking.hellinger(p, p), 0, atol=1e-6)
    assert np.allclose(tracking.hellinger(p, [[0, 0, 1]]), 1)


def test_a_face_shrinking_behind_another_is_found_again_whole():
    # The detector's box of a face being hidden shrinks (x2 moves left 8 px a frame); the
    # face is gone for 12 frames and comes back whole where it was. Extrapolating the
    # shrinking size would look for a speck (the size rate is kept within max_scale).
    frames = [[[100, 100, 160 - 8 * i, 160]] for i in range(5)]
    frames += [[]] * 12 + [[[100, 100, 160, 160]]] * 3
    ids = run(tracking.Tracker(), frames, fps=25.0)
    assert {i for frame in ids[1:] for i in frame} == {1}
    unbounded = run(tracking.Tracker(max_scale=float("inf")), frames, fps=25.0)
    assert unbounded[-1] == [2]  # the case the bound is for


def test_a_person_back_within_max_missed_seconds_keeps_the_id():
    # Gone for 1.5 s, back 60 px (1.5 box sides) from where they left.
    frames = [[box(100, 100)]] * 5 + [[]] * 15 + [[box(160, 100)]] * 3
    assert run(tracking.Tracker(), frames)[-1] == [1]
    assert run(tracking.Tracker(max_missed_seconds=1.0), frames)[-1] == [2]


def test_predicted_box_keeps_its_centre_motion_and_a_bounded_size():
    track = tracking.Track(0, 1, np.array([0.0, 0.0, 40.0, 40.0]), 0, 0.0, 0, 0.0,
                           velocity=np.array([10.0, 0.0, -30.0, 0.0]))  # shrinking, moving
    predicted = track.predicted(0.5)
    assert np.allclose((predicted[:2] + predicted[2:]) / 2, [20 + 0.5 * (10 - 30) / 2, 20])
    assert predicted[2] - predicted[0] == 40 / tracking.MAX_SCALE
    assert np.allclose(track.predicted(0.0), track.box)
    assert np.allclose(track.predicted(5.0), track.predicted(tracking.MAX_EXTRAPOLATION))


def test_covered():
    assert np.allclose(tracking.covered(np.array([0, 0, 10, 10.0]),
                                    [[5, 0, 20, 10], [20, 20, 30, 30]]), [0.5, 0])
