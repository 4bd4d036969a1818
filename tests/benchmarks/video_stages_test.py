"""benchmarks.video_stages on a fake analyzer that burns a known amount of CPU: the wall and
CPU time land in the right stage, per frame, and the in-flight variant keeps every frame."""
import os
import time

import numpy as np
import pytest

from benchmarks import video_stages as bench
from video import io as video_io

FRAMES = 6
BUSY = 0.03  # CPU seconds the fake model burns per frame


class _Busy:
    """Answers no face after spinning `BUSY` seconds of this thread's CPU time."""

    def __init__(self):
        self.calls = 0

    def analyze(self, encoded):
        assert encoded[:2] == b"\xff\xd8"  # the frame arrives as a JPEG
        self.calls += 1
        start = time.thread_time()
        while time.thread_time() - start < BUSY:
            pass
        return []


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    path = str(folder / "clip.mp4")
    rng = np.random.default_rng(0)
    with video_io.open_sink(path, 64, 48, 25.0) as sink:
        for _ in range(FRAMES):
            sink.write(rng.integers(0, 255, (48, 64, 3), np.uint8))
    return path, str(folder)


def test_the_model_stage_gets_the_model_cpu_time(clip):
    path, folder = clip
    model = _Busy()
    clock, frames, faces = bench.sequential(model, path, folder)
    assert (frames, faces, model.calls) == (FRAMES, 0, FRAMES)
    figures = clock.per_frame(frames)
    analyze = figures["analyze"]
    assert analyze["cpu_ms"] >= 1000 * BUSY * 0.95
    assert analyze["wall_ms"] >= analyze["cpu_ms"] * 0.9  # one thread: wall >= CPU
    # Every other stage is far cheaper than the spinning model on 64x48 frames.
    assert all(figures[k]["cpu_ms"] < analyze["cpu_ms"] for k in bench.STAGES
               if k != "analyze")
    total = figures["total"]
    assert total["cpu_ms"] == pytest.approx(sum(figures[k]["cpu_ms"] for k in bench.STAGES),
                                            abs=0.1)
    assert total["frames_per_second_2_cores_from_cpu"] == pytest.approx(
        2000 / total["cpu_ms"], rel=0.01)


def test_extra_cpu_counts_in_the_total(clip):
    clock = bench.Clock(bench.STAGES)
    clock.start()
    clock.lap("analyze")
    with_server = clock.per_frame(2, extra_cpu=0.2)
    assert with_server["total"]["cpu_ms"] >= 100.0


def test_in_flight_frames_are_all_answered(clip):
    path, folder = clip
    model = _Busy()
    wall, cpu, frames = bench.overlapped(model, path, folder, in_flight=2)
    assert (frames, model.calls) == (FRAMES, FRAMES)
    assert cpu >= FRAMES * BUSY * 0.95
    assert os.path.getsize(os.path.join(folder, "overlap.mp4")) > 0


def test_process_cpu_seconds_reads_this_process():
    before = bench.process_cpu_seconds(os.getpid())
    start = time.process_time()
    while time.process_time() - start < 0.1:
        pass
    assert bench.process_cpu_seconds(os.getpid()) - before >= 0.05
