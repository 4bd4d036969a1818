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
