"""Video speed per stage: wall and CPU time per frame, and the model call split in two.

    .venv/bin/python -m benchmarks.video_stages --model=models/age [--frames=150] \
        [--tensorflow_intra_op_parallelism=N] [--tensorflow_inter_op_parallelism=N] \
        [--in_flight=N] [--no_split] [--server] \
        [--answers=answers.json] [--output=stages.json]

The clip is `benchmarks.video`'s speed clip (640x480, 25 frames/s, 4 people, seed 7,
written as H.264 and read back). Measured, each after one warm-up pass over the clip:

1. `sequential`: the stages of `video.annotate.annotate` one after the other, with the same
   library calls (decode, JPEG-encode the frame, `analyzer.analyze`, track + fuse, draw,
   H.264 encode), each timed by wall clock and by process CPU time (`time.process_time`:
   every thread of this process, TensorFlow's pools included). CPU time is what a load
   from other jobs inflates least: `2 / CPU seconds per frame` is the frame rate two
   dedicated cores could reach if the stages overlapped perfectly.
2. `split` (the in-process model only): `predict_photo` is one graph (decode, MTCNN,
   alignment, then MobileNetV2 on every found face in one batch, twice with test-time
   flip); here its two halves are run apart on the same frames: the detector with the
   export's settings (`faces.photo.PhotoFaces.faces_bytes`: JPEG decode, MTCNN, align)
   and the age network on the crops (the export's `predict_images` signature, one call
   per frame), plus the age network alone on 1, 2, 4 and 8 crops.
3. `--in_flight=N`: `video.annotate.annotate(in_flight=N)`: up to N frames' model calls
   at once (tracking, drawing and writing stay in frame order): frames/s and CPU per frame.
4. `--server`: the same sequential stages through `python -m serving.server` over gRPC;
   the server's CPU time (from /proc) is added to this process's.

`--tensorflow_intra_op_parallelism` / `--tensorflow_inter_op_parallelism`: TensorFlow's
thread pools (0: TensorFlow's choice), set before the model is loaded. The load average is
recorded beside every figure.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console, tf_threads
    console.quiet()

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

from agegender import console

STAGES = ("decode", "encode_frame", "analyze", "track_fuse", "draw", "write")


class Clock:
    """Wall and process CPU seconds, summed per stage."""

    def __init__(self, stages):
        self.wall = dict.fromkeys(stages, 0.0)
        self.cpu = dict.fromkeys(stages, 0.0)
        self._last = None

    def start(self):
        self._last = (time.perf_counter(), time.process_time())

    def lap(self, stage):
        now = (time.perf_counter(), time.process_time())
        self.wall[stage] += now[0] - self._last[0]
        self.cpu[stage] += now[1] - self._last[1]
        self._last = now

    def per_frame(self, frames, extra_cpu=None):
        """{stage: {"wall_ms", "cpu_ms"}} per frame, and the totals."""
        out = {k: {"wall_ms": round(1000 * self.wall[k] / frames, 2),
                   "cpu_ms": round(1000 * self.cpu[k] / frames, 2)} for k in self.wall}
        wall, cpu = sum(self.wall.values()), sum(self.cpu.values()) + (extra_cpu or 0.0)
        out["total"] = {"wall_ms": round(1000 * wall / frames, 2),
                        "cpu_ms": round(1000 * cpu / frames, 2),
                        "frames_per_second": round(frames / wall, 2),
                        "frames_per_second_2_cores_from_cpu": round(2 * frames / cpu, 2)}
        return out


def load_average():
    return [round(v, 2) for v in os.getloadavg()]


def speed_clip(path, frames, seed=0):
    """`benchmarks.video`'s speed clip (4 test-split people, 640x480) written to `path`."""
    from testing import synthetic_clips
    from video import io as video_io

    faces = synthetic_clips.FaceSource("test", seed=seed + 7).take(4)
    clip = synthetic_clips.clip(faces, seed=seed + 7, frames=frames)
    with video_io.open_sink(path, 640, 480, clip.fps) as sink:
        for frame in clip.frames:
            sink.write(frame)
    return clip


def sequential(analyzer, path, out_dir, on_answers=None):
    """The annotator's stages one after the other -> (Clock, frames, faces)."""
    from video import annotate, drawing, face_tracks
    from video import io as video_io

    clock = Clock(STAGES)
    people = face_tracks.FaceTracks()
    frames = faces = 0
    source = video_io.open_source(path)
    sink = video_io.open_sink(os.path.join(out_dir, "stages.mp4"), 640, 480, 25.0)
    iterator = iter(source)
    try:
        while True:
            clock.start()
            frame = next(iterator, None)
            clock.lap("decode")
            if frame is None:
                break
            encoded = annotate.encode_frame(frame.image)
            clock.lap("encode_frame")
            found = analyzer.analyze(encoded)
            clock.lap("analyze")
            tracked = people.update(frame.index, frame.time, found)
            people.pop_closed()
            clock.lap("track_fuse")
            picture = drawing.draw(frame.image, tracked)
            clock.lap("draw")
            sink.write(picture)
            clock.lap("write")
            frames += 1
            faces += len(found)
            if on_answers is not None:
                on_answers(encoded, found)
        clock.start()
        sink.close()
        clock.lap("write")
    finally:
        source.close()
    people.finish()
    return clock, frames, faces


def overlapped(analyzer, path, out_dir, in_flight):
    """`video.annotate.annotate` with up to `in_flight` frames' model calls at once (tracking,
    drawing and writing in frame order) -> (wall s, CPU s, frames)."""
    from video import annotate

    wall, cpu = time.perf_counter(), time.process_time()
    summary = annotate.annotate(analyzer, path, output=os.path.join(out_dir, "overlap.mp4"),
                                in_flight=in_flight, progress=False)
    return time.perf_counter() - wall, time.process_time() - cpu, summary["frames"]


def split(model_dir, jpegs):
    """The detector and the age network apart, on the frames' JPEGs (see the docstring)."""
    import tensorflow as tf

    from analyzer import model_paths
    from export import export_model
    from faces import detector as detector_lib
    from faces import photo as photo_lib

    directory = model_paths.resolve_saved_model(model_dir)
    info = export_model.read_face_alignment(directory) or {}
    settings = info.get("detector", {})
    config = detector_lib.DetectorConfig(**settings) if settings else None
    loaded = tf.saved_model.load(directory)
    images_fn = loaded.signatures["predict_images"]
    size = images_fn.structured_input_signature[1]["images"].shape[1] or 128
    template = info.get("template")
    faces = photo_lib.PhotoFaces(size, detector=detector_lib.FaceDetector(config),
                                 template=None if template is None else np.asarray(template))

    def detect(data):
        out = faces.faces_bytes(tf.constant(data))
        return out[photo_lib.CROPS].numpy()

    def answer(crops):
        return images_fn(images=tf.constant(crops, tf.float32))

    for data in jpegs[:5]:  # warm-up (traces)
        crop = detect(data)
        if len(crop):
            answer(crop)
    out = {"detector_settings": settings, "load_average_start": load_average()}
    clock = Clock(("detect_align", "age_network"))
    found = []
    for data in jpegs:
        clock.start()
        crop = detect(data)
        clock.lap("detect_align")
        if len(crop):
            answer(crop)
        clock.lap("age_network")
        found.append(len(crop))
    out["per_frame"] = clock.per_frame(len(jpegs))
    out["faces_per_frame"] = round(float(np.mean(found)), 2)
    pool = np.concatenate([c for c in (detect(j) for j in jpegs[:20]) if len(c)])
    by_count = {}
    for n in (1, 2, 4, 8):
        batch = np.resize(pool, (n,) + pool.shape[1:])
        answer(batch)
        reps = 20
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(reps):
            answer(batch)
        by_count[n] = {"wall_ms": round(1000 * (time.perf_counter() - wall) / reps, 2),
                       "cpu_ms": round(1000 * (time.process_time() - cpu) / reps, 2)}
    out["age_network_by_faces"] = by_count
    out["load_average_end"] = load_average()
    return out


def process_cpu_seconds(pid):
    """utime + stime of a process (from /proc), seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.video_stages",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an exported SavedModel with "
                        "predict_photo (a version or base directory)")
    parser.add_argument("--frames", type=int, default=150)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(tf_threads.INTRA_OP_FLAG, type=tf_threads.thread_count, default=0,
                        help="TensorFlow's threads per op (default 0: TensorFlow picks)")
    parser.add_argument(tf_threads.INTER_OP_FLAG, type=tf_threads.thread_count, default=0,
                        help="ops at once (default 0: TensorFlow picks)")
    parser.add_argument("--no_split", action="store_true", help="skip the detector / age "
                        "network split")
    parser.add_argument("--server", action="store_true", help="also through the local "
                        "server over gRPC")
    parser.add_argument("--in_flight", type=int, default=0, help="also with up to this "
                        "many frames' model calls at once (0: not measured)")
    parser.add_argument("--server_flag", action="append", default=[],
                        help="a flag for the server (repeat), e.g. "
                        "--server_flag=--tensorflow_intra_op_parallelism=1")
    parser.add_argument("--answers", help="write each frame's answers (boxes, ages) here "
                        "as JSON, to compare two exports")
    parser.add_argument("--output", help="write every figure here as JSON")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)

    tf_threads.set_from_args(args)
    from agegender import FaceAnalyzer

    results = {"model": args.model, "frames": args.frames,
               "intra_op": args.tensorflow_intra_op_parallelism,
               "inter_op": args.tensorflow_inter_op_parallelism, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "speed.mp4")
        speed_clip(path, args.frames, args.seed)
        analyzer = FaceAnalyzer.load(args.model)
        sequential(analyzer, path, folder)  # warm-up (traces, caches)
        jpegs, answers = [], []

        def keep(encoded, found):
            jpegs.append(encoded)
            answers.append([{"box": [round(float(v), 1) for v in f.box], "age": f.age,
                             "gender": f.gender} for f in found])

        load = load_average()
        clock, frames, faces = sequential(analyzer, path, folder, keep)
        results["in_process"] = {"per_frame": clock.per_frame(frames),
                                 "faces_per_frame": round(faces / frames, 2),
                                 "load_average_start": load, "load_average_end": load_average()}
        print(f"in process: {json.dumps(results['in_process'])}", flush=True)
        if args.in_flight:
            overlapped(analyzer, path, folder, args.in_flight)  # warm-up
            load = load_average()
            wall, cpu, frames = overlapped(analyzer, path, folder, args.in_flight)
            results["overlapped"] = {
                "in_flight": args.in_flight, "frames_per_second": round(frames / wall, 2),
                "wall_ms": round(1000 * wall / frames, 2), "cpu_ms": round(1000 * cpu / frames, 2),
                "load_average_start": load, "load_average_end": load_average()}
            print(f"overlapped: {json.dumps(results['overlapped'])}", flush=True)
        if not args.no_split:
            results["split"] = split(args.model, jpegs)
            print(f"split: {json.dumps(results['split'])}", flush=True)
        if args.answers:
            with open(args.answers, "w") as f:
                json.dump(answers, f)
        if args.server:
            from benchmarks.video import base_of
            from serving.server_process import ServerProcess

            with ServerProcess(base_of(args.model), flags=args.server_flag) as server:
                remote = FaceAnalyzer.from_server(server.grpc_address, protocol="grpc")
                sequential(remote, path, folder)
                load = load_average()
                server_cpu = process_cpu_seconds(server.proc.pid)
                clock, frames, faces = sequential(remote, path, folder)
                server_cpu = process_cpu_seconds(server.proc.pid) - server_cpu
                remote.close()
            per_frame = clock.per_frame(frames, extra_cpu=server_cpu)
            per_frame["server_cpu_ms"] = round(1000 * server_cpu / frames, 2)
            results["grpc"] = {"per_frame": per_frame, "load_average_start": load,
                               "load_average_end": load_average()}
            print(f"grpc: {json.dumps(results['grpc'])}", flush=True)
    if args.output:
        with open(args.output, "w") as f:
            json.dump(results, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
