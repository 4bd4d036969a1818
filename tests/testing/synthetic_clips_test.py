"""testing.synthetic_clips: labelled clips (deterministic, truth only for visible faces)."""
import numpy as np
from testing import synthetic_clips


def fake_faces(n):
    rng = np.random.default_rng(0)
    return [(f"/x/{20 + 10 * k}_{k % 2}_0_2017.jpg.chip.jpg",
             rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)) for k in range(n)]


def test_same_seed_same_clip_and_labels():
    a = synthetic_clips.clip(fake_faces(2), seed=1, frames=6, width=160, height=120,
                             face_sizes=(30, 50))
    b = synthetic_clips.clip(fake_faces(2), seed=1, frames=6, width=160, height=120,
                             face_sizes=(30, 50))
    assert all(np.array_equal(x, y) for x, y in zip(a.frames, b.frames))
    assert a.truth == b.truth and a.frames[0].shape == (120, 160, 3)
    assert [(p.age, p.gender) for p in a.people] == [(20, 0), (30, 1)]


def test_truth_boxes_are_visible_faces_only():
    made = synthetic_clips.clip(fake_faces(3), seed=2, frames=60, width=200, height=150,
                                face_sizes=(30, 60), leave_fraction=1.0, degrade=False)
    counts = [len(t) for t in made.truth]
    assert max(counts) == 3 and min(counts) < 3  # people leave (and are hidden) at times
    for frame_truth in made.truth:
        for person, (x1, y1, x2, y2) in frame_truth:
            assert 0 <= person < 3 and x2 - x1 == y2 - y1
            # at least 70% of the square inside the frame
            inside = (min(x2, 200) - max(x1, 0)) * (min(y2, 150) - max(y1, 0))
            assert inside >= 0.7 * (x2 - x1) ** 2


def test_degradations_change_pixels():
    clean = synthetic_clips.clip(fake_faces(1), seed=3, frames=3, width=96, height=64,
                                 face_sizes=(30, 40), degrade=False)
    rough = synthetic_clips.clip(fake_faces(1), seed=3, frames=3, width=96, height=64,
                                 face_sizes=(30, 40), degrade=True)
    assert clean.truth == rough.truth
    assert not np.array_equal(clean.frames[1], rough.frames[1])
