"""video.annotate: the clip loop (fake analyzer: fast) and the CLI end to end (tiny model)."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from agegender.errors import ServerError
from agegender.results import Face
from video import annotate
from video import io as video_io

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def distribution(mean, sd=4.0):
    p = np.exp(-0.5 * ((np.arange(101) - mean) / sd) ** 2)
    return p / p.sum()


class ScriptedAnalyzer:
    """Answers call i with script(i): a list of (x, age) faces; fails at `fail_at`."""

    def __init__(self, script, fail_at=None):
        self.script, self.fail_at, self.calls = script, fail_at, 0

    def analyze(self, encoded):
        assert encoded[:3] == b"\xff\xd8\xff"  # frames reach the model as JPEGs
        i = self.calls
        self.calls += 1
        if i == self.fail_at:
            raise ServerError("UNAVAILABLE", "the server went away")
        out = []
        for x, age in self.script(i):
            p = distribution(age + (i % 3 - 1))
            out.append(Face(box=(x, 10.0, x + 30.0, 40.0), score=0.99, age=float(p @ np.arange(101)),
                            age_distribution=p, gender="male", gender_probability=0.8))
        return out


def two_people(i):
    return [(5.0 + i, 30.0), (100.0 - i, 60.0)]


@pytest.fixture
def clip(tmp_path, clips):
    return clips.write(tmp_path / "clip.mp4", clips.noise(12, width=160, height=96), rate=12)


def read_lines(path):
    return [json.loads(line) for line in open(path)]


def test_tracks_and_per_frame_lines(tmp_path, clip):
    out, tracks = str(tmp_path / "out.mp4"), str(tmp_path / "tracks.jsonl")
    summary = annotate.annotate(ScriptedAnalyzer(two_people), clip, output=out, tracks=tracks,
                                per_frame=True, progress=False)
    assert summary["frames"] == 12 and summary["tracks"] == 2 and summary["faces"] == 24
    assert set(summary["stage_seconds"]) == set(annotate.STAGES)
    lines = read_lines(tracks)
    people = [line for line in lines if line["type"] == "track"]
    faces = [line for line in lines if line["type"] == "face"]
    assert len(faces) == 24
    # A face's line waits for its track to be confirmed: frame 0 carries the id too.
    assert {(f["frame"], f["track"]) for f in faces if f["frame"] == 0} == {(0, 1), (0, 2)}
    assert [f["frame"] for f in faces if f["track"] == 1] == list(range(12))
    by_id = {p["track"]: p for p in people}
    assert abs(by_id[1]["age"] - 30) < 1 and abs(by_id[2]["age"] - 60) < 1
    assert by_id[1]["frames"] == 12 and (by_id[1]["first_frame"], by_id[1]["last_frame"]) == (0, 11)
    assert by_id[1]["last_time"] == pytest.approx(11 / 12, abs=1e-3)
    assert by_id[1]["gender"] == "male" and by_id[1]["gender_probability"] > 0.8
    lo, hi = by_id[1]["age_interval_80"]
    assert lo <= by_id[1]["age"] <= hi and len(by_id[1]["box"]) == 4
    # The fused age moves less than the per-frame answers.
    fused = [f["fused_age"] for f in faces if f["track"] == 1]
    per_frame = [f["age"] for f in faces if f["track"] == 1]
    assert np.abs(np.diff(fused[4:])).max() < np.abs(np.diff(per_frame[4:])).max()
    with video_io.open_source(out) as written:
        frames = list(written)
    assert len(frames) == 12 and frames[0].image.shape == (96, 160, 3)


def test_a_frame_the_model_refuses_is_skipped_alone(tmp_path, clip):
    from agegender.errors import ImageError

    class Refusing(ScriptedAnalyzer):
        def analyze(self, encoded):
            if self.calls == 3:
                self.calls += 1
                raise ImageError("undecodable", "the model refused the image")
            return super().analyze(encoded)
    summary = annotate.annotate(Refusing(two_people), clip, tracks=str(tmp_path / "t.jsonl"),
                                progress=False)
    assert summary["frames"] == 12 and summary["faces"] == 22 and summary["tracks"] == 2
    assert summary["skipped_frames"] == [("frame 3", "undecodable")]


def test_clip_without_faces_is_a_normal_result(tmp_path, clip):
    tracks = str(tmp_path / "tracks.jsonl")
    summary = annotate.annotate(ScriptedAnalyzer(lambda i: []), clip, tracks=tracks,
                                per_frame=True, progress=False)
    assert summary["frames"] == 12 and summary["tracks"] == 0
    assert open(tracks).read() == ""


def test_failure_leaves_no_partial_output_and_keeps_the_old_one(tmp_path, clip):
    out, tracks = tmp_path / "out.mp4", tmp_path / "tracks.jsonl"
    tracks.write_text("earlier good result\n")
    with pytest.raises(ServerError):
        annotate.annotate(ScriptedAnalyzer(two_people, fail_at=5), clip, output=str(out),
                          tracks=str(tracks), progress=False)
    assert tracks.read_text() == "earlier good result\n" and not out.exists()
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4", "tracks.jsonl"]


def test_too_many_frames_is_refused_before_any_output(tmp_path, clip):
    with pytest.raises(video_io.VideoError) as error:
        annotate.annotate(ScriptedAnalyzer(two_people), clip, tracks=str(tmp_path / "t.jsonl"),
                          max_frames=5, progress=False)
    assert error.value.reason == video_io.TOO_MANY_FRAMES
    assert sorted(os.listdir(tmp_path)) == ["clip.mp4"]


def test_fps_sampling_and_frame_directory_output(tmp_path, clip):
    out = tmp_path / "frames"
    summary = annotate.annotate(ScriptedAnalyzer(two_people), clip, output=str(out), fps=4,
                                progress=False)
    assert summary["frames"] == 4 and len(os.listdir(out)) == 4


def run_cli(*args, timeout=600):
    return subprocess.run([sys.executable, "-m", "video.annotate", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=timeout)


def test_cli_usage_errors(capsys):
    for argv, words in ((["--model=x", "--input=y.mp4"], "--output and/or --tracks"),
                        (["--model=x", "--input=y.mp4", "--tracks=t", "--max_image_pixels=0"],
                         "max_image_pixels"),
                        (["--model=x", "--input=y.mp4", "--output=y.jpg"], "extension"),
                        (["--model=x", "--server=h:1", "--input=y.mp4", "--tracks=t"],
                         "not allowed with"),
                        (["--model=x", "--input=y.mp4", "--tracks=t", "--fill_gaps=-1"],
                         "a frame count >= 0"),
                        (["--model=x", "--input=y.mp4", "--tracks=t", "--fill_gaps=51"],
                         "at most 50 frames"),
                        (["--model=x", "--input=y.mp4", "--tracks=t", "--in_flight=0"],
                         "a frame count > 0"),
                        (["--model=x", "--input=y.mp4", "--tracks=t", "--in_flight=9"],
                         "at most 8"),
                        (["--model=x", "--input=y.mp4", "--tracks=t", "--detect_every=0"],
                         "a frame count > 0"),
                        (["--model=x", "--input=y.mp4", "--tracks=t", "--detect_every=6"],
                         "1..5 frames"),
                        (["--model=x", "--input=y.mp4", "--tracks=t", "--detect_every=3",
                          "--fill_gaps=1"], "needs fill_gaps >= 2"),
                        (["--model=x", "--input=y.mp4", "--tracks=t",
                          "--tensorflow_intra_op_parallelism=-1"], "a thread count >= 0")):
        with pytest.raises(SystemExit) as exit_:
            annotate.parse_args(argv)
        assert exit_.value.code == 2 and words in capsys.readouterr().err


def test_cli_refuses_a_bad_input_before_loading_a_model(tmp_path, capsys):
    bad = tmp_path / "clip.mp4"
    bad.write_text("not a video")
    code = annotate.main(["--model=/nonexistent/model", f"--input={bad}",
                          f"--tracks={tmp_path / 't'}"])
    err = capsys.readouterr().err
    assert code == 1 and "not_a_video" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "t").exists()


@pytest.fixture(scope="module")
def tiny_model(tiny_export):
    return tiny_export("clf_gender")


@pytest.fixture(scope="module")
def face_clip(tmp_path_factory):
    """A 320x240 clip of 16 frames with two real test-split faces moving (seed 5: both
    visible and found in every frame)."""
    from faces import utkface
    from testing import synthetic_clips

    if not os.path.isdir(utkface.SHARED_UTKFACE):
        pytest.skip("../shared UTKFace images not available")
    faces = synthetic_clips.FaceSource("test", seed=5).take(2)
    made = synthetic_clips.clip(faces, seed=5, frames=16, width=320, height=240,
                                face_sizes=(60, 90), leave_fraction=0, degrade=False)
    path = str(tmp_path_factory.mktemp("clip") / "people.mp4")
    with video_io.open_sink(path, 320, 240, 8) as sink:
        for frame in made.frames:
            sink.write(frame)
    return path, made


@pytest.mark.slow
def test_cli_in_process_end_to_end(tmp_path, tiny_model, face_clip):
    path, made = face_clip
    out, tracks = tmp_path / "annotated.mp4", tmp_path / "tracks.jsonl"
    result = run_cli(f"--model={tiny_model}", f"--input={path}", f"--output={out}",
                     f"--tracks={tracks}", "--per_frame")
    assert result.returncode == 0, result.stderr
    assert "16 frames" in result.stdout and "2 tracks" in result.stdout
    people = [line for line in read_lines(tracks) if line["type"] == "track"]
    assert sorted(p["track"] for p in people) == [1, 2]
    assert all(p["frames"] >= 14 for p in people), people
    with video_io.open_source(str(out)) as written:
        assert len(list(written)) == 16


@pytest.mark.slow
def test_cli_through_the_server_over_grpc(tmp_path, tiny_model, face_clip):
    from serving.server import ModelServer

    path, _ = face_clip
    server = ModelServer(tiny_model, "age", grpc_port=0, rest_port=0,
                         file_system_poll_wait_seconds=0).start()
    try:
        tracks = tmp_path / "tracks.jsonl"
        result = run_cli(f"--server=127.0.0.1:{server.grpc_port}", f"--input={path}",
                         f"--tracks={tracks}")
        assert result.returncode == 0, result.stderr
        people = [line for line in read_lines(tracks) if line["type"] == "track"]
        assert sorted(p["track"] for p in people) == [1, 2]
    finally:
        server.stop()
    result = run_cli(f"--server=127.0.0.1:{server.grpc_port}", f"--input={path}",
                     f"--tracks={tmp_path / 'again.jsonl'}", "--timeout=2")
    assert result.returncode == 1 and "UNAVAILABLE" in result.stderr
    assert not (tmp_path / "again.jsonl").exists()


def test_a_face_missed_between_two_detections_is_boxed_and_flagged(tmp_path, clip):
    # Person at x 5+i missed at frames 4-6 (the other is found throughout).
    def script(i):
        return [(x, age) for x, age in two_people(i) if not (age == 30.0 and 4 <= i <= 6)]
    tracks = str(tmp_path / "tracks.jsonl")
    seen = []
    summary = annotate.annotate(ScriptedAnalyzer(script), clip, tracks=tracks, per_frame=True,
                                output=str(tmp_path / "out.mp4"), fill_gaps=3, progress=False,
                                on_frame=lambda frame, tracked: seen.append((frame.index, tracked)))
    assert summary["faces"] == 21 and summary["interpolated_faces"] == 3
    faces = [line for line in read_lines(tracks) if line["type"] == "face"]
    filled = [f for f in faces if f["interpolated"]]
    assert [(f["frame"], f["track"]) for f in filled] == [(4, 1), (5, 1), (6, 1)]
    for f in filled:
        assert f["age"] is None and f["score"] is None  # no answer of its own
        assert f["fused_age"] == pytest.approx(30, abs=1)  # the track's
        assert f["box"][0] == pytest.approx(5 + f["frame"], abs=1e-3)  # interpolated
    assert [f["frame"] for f in faces if f["track"] == 1] == list(range(12))
    # Frames reach on_frame (and the picture) in order, the filled box among them, and a
    # track's first frame already with its id (known a frame later, within the look-behind).
    assert [index for index, _ in seen] == list(range(12))
    assert [item.track_id for item in seen[0][1]] == [1, 2]
    assert [item.interpolated for item in seen[5][1]] == [False, True]
    with video_io.open_source(str(tmp_path / "out.mp4")) as written:
        assert len(list(written)) == 12

    again = annotate.annotate(ScriptedAnalyzer(script), clip, tracks=tracks, per_frame=True,
                              fill_gaps=0, progress=False)
    assert again["interpolated_faces"] == 0
    assert not any(f["interpolated"] for f in read_lines(tracks) if f["type"] == "face")
    gap_too_long = annotate.annotate(ScriptedAnalyzer(script), clip, tracks=tracks,
                                     fill_gaps=2, progress=False)
    assert gap_too_long["interpolated_faces"] == 0 and gap_too_long["tracks"] == 2


class FrameKeyedAnalyzer:
    """Answers a frame from its own pixels (`marked` frames: grey level = 10 x its number),
    sleeping a random while first, so concurrent calls finish out of order."""

    def __init__(self, script, seed=0):
        import threading

        self.script, self.rng, self.lock = script, np.random.default_rng(seed), threading.Lock()
        self.running = self.most_running = 0

    def analyze(self, encoded):
        import io
        import time

        from PIL import Image

        index = int(round(np.asarray(Image.open(io.BytesIO(encoded)))[:, 40:].mean() / 10))
        with self.lock:
            delay = self.rng.uniform(0, 0.02)
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        time.sleep(delay)
        with self.lock:
            self.running -= 1
        return ScriptedAnalyzer(lambda _: self.script(index)).analyze(encoded)


def test_frames_in_flight_give_the_outputs_of_one_at_a_time(tmp_path, clips):
    clip = clips.write(tmp_path / "marked.mp4", clips.marked(20, width=160, height=96), rate=10)

    def script(i):  # one person missed at frames 6-8 (filled), one leaving at 14
        return [(x, age) for x, age in two_people(i) if not (age == 30.0 and 6 <= i <= 8)
                and not (age == 60.0 and i >= 14)]
    results = {}
    for in_flight in (1, 3):
        folder = tmp_path / str(in_flight)
        analyzer = FrameKeyedAnalyzer(script, seed=in_flight)
        summary = annotate.annotate(analyzer, clip, tracks=str(folder / "t.jsonl"),
                                    output=str(folder / "out.mp4"), per_frame=True,
                                    fill_gaps=3, in_flight=in_flight, progress=False)
        assert analyzer.most_running == in_flight  # frames really were answered at once
        with video_io.open_source(str(folder / "out.mp4")) as written:
            pictures = [frame.image for frame in written]
        results[in_flight] = (open(folder / "t.jsonl").read(), pictures,
                              {k: summary[k] for k in ("frames", "faces", "tracks",
                                                       "interpolated_faces")})
    (lines, pictures, counts), (lines3, pictures3, counts3) = results[1], results[3]
    assert counts == counts3 == {"frames": 20, "faces": 31, "tracks": 2, "interpolated_faces": 3}
    assert lines3 == lines
    assert len(pictures3) == len(pictures) == 20
    assert all(np.array_equal(a, b) for a, b in zip(pictures, pictures3))


def test_an_error_with_frames_in_flight_stops_the_clip_and_leaves_no_output(tmp_path, clips):
    clip = clips.write(tmp_path / "marked.mp4", clips.marked(20, width=160, height=96), rate=10)

    class Failing(FrameKeyedAnalyzer):
        def analyze(self, encoded):
            answer = super().analyze(encoded)
            if self.calls_seen() == 7:
                raise ServerError("UNAVAILABLE", "the server went away")
            return answer

        def calls_seen(self):
            with self.lock:
                self.count = getattr(self, "count", 0) + 1
                return self.count
    with pytest.raises(ServerError):
        annotate.annotate(Failing(two_people), clip, tracks=str(tmp_path / "t.jsonl"),
                          output=str(tmp_path / "out.mp4"), in_flight=2, progress=False)
    assert sorted(os.listdir(tmp_path)) == ["marked.mp4"]


def test_detect_every_answers_every_kth_frame_and_boxes_the_frames_between(tmp_path, clips):
    clip = clips.write(tmp_path / "marked.mp4", clips.marked(20, width=160, height=96), rate=10)

    class Recording(FrameKeyedAnalyzer):
        def analyze(self, encoded):
            from PIL import Image
            import io

            image = np.asarray(Image.open(io.BytesIO(encoded)))
            with self.lock:
                self.seen = getattr(self, "seen", []) + [int(round(image[:, 40:].mean() / 10))]
            return super().analyze(encoded)

    results = []
    for in_flight in (1, 3):
        analyzer = Recording(two_people, seed=in_flight)
        tracks = tmp_path / f"t{in_flight}.jsonl"
        summary = annotate.annotate(analyzer, clip, tracks=str(tracks), per_frame=True,
                                    output=str(tmp_path / f"out{in_flight}.mp4"), fill_gaps=1,
                                    detect_every=2, in_flight=in_flight, progress=False)
        assert sorted(analyzer.seen) == list(range(0, 20, 2))  # the model saw frames 0, 2, ..
        assert (summary["frames"], summary["frames_answered"], summary["faces"]) == (20, 10, 20)
        faces = [line for line in read_lines(tracks) if line["type"] == "face"]
        # Each person is boxed on frames 0..18: answered even frames, interpolated odd ones
        # (frame 19 comes after the last answered frame: no box).
        for track in (1, 2):
            mine = [f for f in faces if f["track"] == track]
            assert [f["frame"] for f in mine] == list(range(19))
            assert [f["interpolated"] for f in mine] == [i % 2 == 1 for i in range(19)]
        x = {f["frame"]: f["box"][0] for f in faces if f["track"] == 1}
        assert x[7] == pytest.approx(5 + 7, abs=1e-3)  # between frames 6 and 8
        with video_io.open_source(str(tmp_path / f"out{in_flight}.mp4")) as written:
            assert len(list(written)) == 20
        results.append(open(tracks).read())
    assert results[0] == results[1]  # frames in flight change nothing
    with pytest.raises(ValueError, match="needs fill_gaps >= 1"):
        annotate.annotate(Recording(two_people), clip, tracks=str(tmp_path / "x.jsonl"),
                          fill_gaps=0, detect_every=2, progress=False)
    assert not os.path.exists(tmp_path / "x.jsonl")
