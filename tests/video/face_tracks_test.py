"""video.face_tracks: boxes for frames where the detector missed a tracked face (interpolated
across a gap offline, predicted for a few frames live), flagged and without an age."""
import numpy as np
import pytest

from agegender.results import Face
from video import face_tracks


def face(x, y=100.0, side=40.0, age=30.0):
    p = np.exp(-0.5 * ((np.arange(101) - age) / 4.0) ** 2)
    p /= p.sum()
    return Face(box=(x, y, x + side, y + side), score=0.99, age=float(p @ np.arange(101)),
                age_distribution=p, gender="female", gender_probability=0.9)


def run(people, script, fps=25.0):
    """script[i]: the faces of frame i -> (tracked per frame, [(frame, time, item)] filled,
    with the frame at which each fill was handed over)."""
    tracked, filled = [], []
    for i, faces in enumerate(script):
        tracked.append(people.update(i, i / fps, faces))
        filled += [(i, *fill) for fill in people.pop_filled()]
    return tracked, filled


def test_a_gap_is_filled_once_the_track_is_found_again():
    # One face moving 5 px a frame, missed at frames 5-7.
    script = [[face(100 + 5 * i)] if not 5 <= i <= 7 else [] for i in range(12)]
    people = face_tracks.FaceTracks(fill_gaps=3)
    tracked, filled = run(people, script)
    assert [(at, frame) for at, frame, _, _ in filled] == [(8, 5), (8, 6), (8, 7)]
    answer_before = tracked[4][0].answer
    for _, frame, time, item in filled:
        assert time == pytest.approx(frame / 25.0)
        assert item.interpolated and item.filled and not item.predicted
        assert item.track_id == 1 and item.track is tracked[4][0].track
        assert np.allclose(item.face.box, face(100 + 5 * frame).box)  # linear motion
        assert item.face.age is None and item.face.score is None  # no answer of its own
        assert item.answer == answer_before  # the track's fused answer, as displayed
        assert item.face.to_dict(distribution=False)["age"] is None
    # Fusion and the track's record count only the detections.
    assert tracked[-1][0].answer.frames == 9
    assert people.finish()[0]["frames"] == 9
    assert people.pop_filled() == []  # handed over once


def test_a_gap_longer_than_fill_gaps_is_not_filled():
    script = [[face(100)] if not 5 <= i <= 8 else [] for i in range(12)]  # 4 missed
    tracked, filled = run(face_tracks.FaceTracks(fill_gaps=3), script)
    assert filled == [] and tracked[9][0].track_id == 1
    assert run(face_tracks.FaceTracks(fill_gaps=4), script)[1]  # 4 frames are filled
    assert run(face_tracks.FaceTracks(), script)[1] == []     # off by default (live)


def test_a_frame_where_the_face_was_behind_a_found_one_is_not_filled():
    # B (40 px at x 100) is missed at frames 5-7; at frames 5 and 6 a found face A (a
    # nearer, larger person, tracked since frame 3) covers where B would be: B was hidden
    # there, not missed. Frame 7 is clear and filled.
    script = []
    for i in range(10):
        faces = [face(100, age=60)] if not 5 <= i <= 7 else []
        if 3 <= i <= 6:
            faces.append(face(70, y=70, side=100, age=20))
        script.append(faces)
    _, filled = run(face_tracks.FaceTracks(fill_gaps=5), script)
    assert [frame for _, frame, _, _ in filled] == [7]
    _, unchecked = run(face_tracks.FaceTracks(fill_gaps=5, hidden_fraction=0), script)
    assert [frame for _, frame, _, _ in unchecked] == [5, 6, 7]


def test_a_one_frame_false_positive_gets_no_fill_and_no_coast():
    script = [[face(100)] + ([face(400)] if i == 2 else []) for i in range(8)]
    tracked, filled = run(face_tracks.FaceTracks(fill_gaps=5, coast=2), script)
    assert filled == []
    assert all(len(items) == 1 for i, items in enumerate(tracked) if i != 2)


def test_coast_shows_the_predicted_box_for_a_few_missed_frames():
    script = [[face(100 + 4 * i)] if i < 6 else [] for i in range(10)]
    tracked, _ = run(face_tracks.FaceTracks(coast=2), script)
    coasted = [[item for item in items if item.predicted] for items in tracked]
    assert [len(items) for items in coasted] == [0] * 6 + [1, 1, 0, 0]
    item = coasted[7][0]
    assert item.track_id == 1 and item.filled and not item.interpolated
    assert item.face.age is None and item.answer == tracked[5][0].answer
    assert item.face.box[0] == pytest.approx(100 + 4 * 7, abs=2.5)  # carried on by its motion
    assert run(face_tracks.FaceTracks(), script)[0][6] == []  # off by default


def test_bad_counts_are_refused():
    for options in ({"fill_gaps": -1}, {"coast": -2}):
        with pytest.raises(ValueError, match="frame counts"):
            face_tracks.FaceTracks(**options)


def test_a_frame_not_looked_at_keeps_tentative_tracks_and_is_filled():
    # Every other frame is not looked at (skip): a face moving 5 px a frame, found at the
    # even frames only, is one track (its tentative first frame survives the skipped frame
    # after it) with every odd frame between two answered ones filled.
    people = face_tracks.FaceTracks(fill_gaps=1)
    tracked, filled = [], []
    for i in range(9):
        t = i / 25.0
        tracked.append(people.update(i, t, [face(100 + 5 * i)]) if i % 2 == 0
                       else people.skip(i, t))
        filled += people.pop_filled()
    assert [item.track_id for frame in tracked[::2] for item in frame] == [None, 1, 1, 1, 1]
    assert all(frame == [] for frame in tracked[1::2])  # no coast: nothing at once
    assert [frame for frame, _, _ in filled] == [1, 3, 5, 7]
    for frame, _, item in filled:
        assert item.interpolated and item.track_id == 1 and item.face.age is None
        assert np.allclose(item.face.box, face(100 + 5 * frame).box)
    assert tracked[-1][0].answer.frames == 5  # fusion counts only the answered frames
    # A skipped frame counts as a frame of the gap: 1 skipped + 1 missed is 2 > fill_gaps.
    people = face_tracks.FaceTracks(fill_gaps=1)
    for i, faces in enumerate([[face(100)], [face(100)], None, [], [face(100)]]):
        people.skip(i, i / 25.0) if faces is None else people.update(i, i / 25.0, faces)
    assert people.pop_filled() == []


def test_coast_covers_a_frame_not_looked_at():
    people = face_tracks.FaceTracks(coast=1)
    for i in range(3):
        people.update(i, i / 25.0, [face(100 + 5 * i)])
    coasted = people.skip(3, 3 / 25.0)
    assert len(coasted) == 1 and coasted[0].predicted and coasted[0].track_id == 1
    assert coasted[0].face.box[0] == pytest.approx(115, abs=2)  # moved on at its velocity
    assert people.skip(4, 4 / 25.0) == []  # coast=1: one frame only
