"""benchmarks.video_tracking.idf1_losses: every true face-frame and tracked box not credited
to IDF1 is counted once, in the category that says why."""
import types

import pytest

from benchmarks import video_tracking as bench
from video import face_tracks


def b(x):
    return (x, 0.0, x + 40.0, 40.0)


def test_each_loss_is_counted_where_it_happens():
    found = lambda x: types.SimpleNamespace(box=b(x))  # noqa: E731
    truth = [[(0, b(0)), (1, b(200))], [(0, b(0)), (1, b(200))], [(0, b(0))], [(0, b(0))],
             [(0, b(0))], [(0, b(0))], [(0, b(0))]]
    tracked = [[(None, found(0), None)],             # tentative: found, no id
               [(1, found(0), None)],                # credited
               [(1, found(0), None), (1, found(400), None)],  # credited; a false box
               [],                                   # missed inside id 1's frames
               [(2, found(0), None)],                # another id, on the face
               [(1, face_tracks.FilledFace(b(0)), None)],  # credited (interpolated)
               []]                                   # missed after id 1's last frame
    clip = types.SimpleNamespace(truth=truth)
    losses = bench.idf1_losses([clip], [tracked])
    assert losses == {"idtp": 3, "found_untracked": 1, "missed_inside_track": 1,
                      "found_other_id": 1, "false_on_face_other_id": 1, "false_no_face": 1,
                      "missed_outside_track": 1, "missed_no_track": 2,
                      "idf1": pytest.approx(6 / 14)}


def test_run_ours_answers_every_kth_frame_only():
    import numpy as np

    from agegender.results import Face
    from video import fusion

    p = np.full(101, 1 / 101)
    answers = [[Face(box=b(5.0 * i), score=0.9, age=50.0, age_distribution=p)]
               for i in range(7)]
    out = bench.run_ours(answers, 25.0, fusion.DEFAULT_PARAMS, fill_gaps=2, detect_every=3)
    kinds = [[isinstance(face, face_tracks.FilledFace) for _, face, _ in items] for items in out]
    # Frames 0, 3, 6 answered; 1, 2, 4, 5 filled between them, all one track.
    assert kinds == [[False], [True], [True], [False], [True], [True], [False]]
    assert {tid for items in out for tid, _, _ in items} == {1}
    assert out[4][0][1].box == pytest.approx(b(20.0))
    every = bench.run_ours(answers, 25.0, fusion.DEFAULT_PARAMS, fill_gaps=2)
    assert not any(isinstance(face, face_tracks.FilledFace) for items in every
                   for _, face, _ in items)
