"""Video: per-frame vs fused-track accuracy, steadiness, coverage, tracking quality, speed.

    .venv/bin/python -m benchmarks.video --model=models/age [--clips=6] [--val_clips=6] \
        [--frames=125] [--people=2,4] [--seed=0] [--speed_frames=150] [--no_server] \
        [--compare_trackers] [--output=video.json] [--fusion_output=fusion.json]

Clips come from `testing.synthetic_clips`: 640x480 at 25 frames/s, 2-4 labelled UTKFace faces
each, moving along smooth paths, changing scale (40-160 px), crossing (the nearer hides the
farther), half of them leaving the frame and coming back, with per-frame motion blur, JPEG
(quality 30-90) and brightness flicker. Test clips use only TEST-split faces; the fusion
temper (`video.fusion.fit`) is fitted on clips of VALIDATION-split faces, then applied to
the test clips. Every frame is answered once by the model (`--model`, in process); the
trackers and fusions are then compared on the same answers:

1. tracking (motmetrics, a detection matches a visible true face at IoU >= 0.5): IDF1, ID
   switches per 100 true face-frames, MOTA, and where IDF1 is lost (`idf1_losses` of
   `benchmarks.video_tracking`: faces the detector missed inside a track / outside / with
   no track, found without an id or under another, tracked boxes on no true face); ours (`video.tracking` through
   `video.face_tracks`) in the variants of `OUR_VARIANTS` side by side (as
   `video.annotate` runs it, with interpolated gaps; without filling; as a live page
   shows it, with and without coasting; without the appearance term; the settings before
   2026-12-06), on the validation clips (where the settings are chosen) and the test
   clips; with --compare_trackers supervision's ByteTrack and norfair when importable
   (neither is a project dependency: norfair pins numpy < 2, and supervision moved
   ByteTrack out after 0.26; see docs/video.md for how they were installed);
2. age, on the detections matched to a true face and tracked: per-frame MAE vs the MAE of
   the fused (displayed) age at the same frames, and of each track's final fused age;
   the displayed age's frame-to-frame change after a track's 10th frame (median), beside
   the per-frame answers' change; the fused 50% / 80% intervals' coverage (at every
   displayed frame and at track end), with the fitted temper and with rho = 0
   (independent frames) and 1 (geometric mean) for reference; gender accuracy per frame
   and fused;
3. speed end to end (`video.annotate.annotate`: decode, JPEG-encode the frame, detect and
   answer, track, fuse, draw, encode the annotated H.264 copy), frames per second and
   seconds per stage, on a `--speed_frames` clip with 4 people: in process, and through
   the local server (`python -m serving.server`, started here on 127.0.0.1) over gRPC.

The machine may be shared: the load average is printed beside the speed figures, with
this process's CPU time per frame (which a load inflates less than wall time; CPU time per
stage, the model call split into detector and age network, and the server's CPU:
`benchmarks.video_stages`).
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time

import numpy as np

from agegender import console, tf_threads
from benchmarks.video_tracking import (LOSSES, OUR_VARIANTS, idf1_losses, labelled_tracks,
                                       run_bytetrack, run_norfair, run_ours, tracking_quality)
from testing import synthetic_clips
from video import fusion
from video import annotate as annotate_lib
from video import io as video_io

STEADY_AFTER = 10  # frames of a track before the displayed age is expected to hold still


# -- clips and the model's answers ---------------------------------------------------------

def answered_clips(analyzer, split, count, frames, people, seed):
    """(clips without their frames, the model's faces for every frame): each clip is made,
    answered frame by frame (as the annotator sends frames) and its pixels dropped."""
    source = synthetic_clips.FaceSource(split, seed=seed)
    rng = np.random.default_rng(seed)
    clips, answers = [], []
    for i in range(count):
        n = int(rng.integers(people[0], people[1] + 1))
        clip = synthetic_clips.clip(source.take(n), seed=seed * 1000 + i, frames=frames)
        answers.append([analyzer.analyze(annotate_lib.encode_frame(f)) for f in clip.frames])
        clips.append(clip._replace(frames=None))
    return clips, answers


def served_temperature(answers):
    """The model's calibration temperature, from the first face that shows it."""
    for frames in answers:
        for faces in frames:
            for face in faces:
                found = fusion.served_temperature(face)
                if found is not None:
                    return found
    return 1.0


def calibrated(distribution, temperature):
    z = np.log(np.clip(np.asarray(distribution, np.float64), 1e-12, None)) / temperature
    z = np.exp(z - z.max())
    return z / z.sum()


def fit_inputs(tracks, served):
    """(age tracks, gender tracks) for `fusion.fit`: distributions calibrated as the
    model's served spread is (as `video.face_tracks` fuses them)."""
    ages, genders = [], []
    for person, frames in tracks:
        distributions = [calibrated(face.age_distribution, served)
                         for _, face, _, _ in frames if face.age_distribution is not None]
        if distributions:
            ages.append((person.age, distributions))
        females = [fusion.female_probability(face) for _, face, _, _ in frames]
        if all(q is not None for q in females) and person.gender in (0, 1):
            genders.append((person.gender == 1, np.array(females)))
    return ages, genders


def accuracy(tracks, params, served=1.0):
    """Per-frame vs fused figures on the matched, tracked detections (fusion rerun with
    `params` over each track's frames, so several tempers are compared on one tracking;
    `served`: the model's calibration temperature, as `video.face_tracks` applies it)."""
    params = dataclasses.replace(params, temperature=params.temperature * served)
    frame_err, fused_err, end_err, frame_step, fused_step = [], [], [], [], []
    cover = {"frame80": [], "fused50": [], "fused80": [], "end50": [], "end80": []}
    gender_frame, gender_fused = [], []
    for person, frames in tracks:
        state = fusion.TrackFusion(params)
        previous = None
        for n, (_, face, _, matched) in enumerate(frames, start=1):
            state.add(face)
            answer = state.answer()
            if previous is not None and n > STEADY_AFTER:
                fused_step.append(abs(answer.age - previous[0]))
                frame_step.append(abs(face.age - previous[1]))
            previous = (answer.age, face.age)
            if matched is None:
                continue
            frame_err.append(abs(face.age - person.age))
            fused_err.append(abs(answer.age - person.age))
            if face.age_interval_80 is not None:
                cover["frame80"].append(_inside(person.age, face.age_interval_80))
            if answer.age_interval_80 is not None:
                cover["fused50"].append(_inside(person.age, answer.age_interval_50))
                cover["fused80"].append(_inside(person.age, answer.age_interval_80))
            if face.gender is not None and person.gender in (0, 1):
                truth = "female" if person.gender == 1 else "male"
                gender_frame.append(face.gender == truth)
                gender_fused.append(answer.gender == truth)
        answer = state.answer()
        end_err.append(abs(answer.age - person.age))
        if answer.age_interval_80 is not None:
            cover["end50"].append(_inside(person.age, answer.age_interval_50))
            cover["end80"].append(_inside(person.age, answer.age_interval_80))
    mean = lambda v: float(np.mean(v)) if len(v) else float("nan")  # noqa: E731
    return {"faces": len(frame_err), "tracks": len(tracks),
            "per_frame_mae": mean(frame_err), "fused_mae": mean(fused_err),
            "track_end_mae": mean(end_err),
            "per_frame_change_median": float(np.median(frame_step)) if frame_step else None,
            "fused_change_median": float(np.median(fused_step)) if fused_step else None,
            "coverage": {k: mean(v) for k, v in cover.items()},
            "gender_accuracy_per_frame": mean(gender_frame),
            "gender_accuracy_fused": mean(gender_fused)}


def _inside(age, interval):
    return float(interval[0] <= min(age, 100) <= interval[1])


# -- speed ----------------------------------------------------------------------------------

def speed(analyzer, clip_path, frames, in_flight, detect_every=annotate_lib.DETECT_EVERY):
    """Frames/s and wall ms per stage (summed over the frames in flight); `cpu_ms_per_frame`:
    this process's CPU time (per stage: benchmarks/video_stages.py)."""
    cpu = time.process_time()
    with tempfile.TemporaryDirectory() as out:
        summary = annotate_lib.annotate(analyzer, clip_path,
                                        output=os.path.join(out, "annotated.mp4"),
                                        tracks=os.path.join(out, "tracks.jsonl"),
                                        in_flight=in_flight, detect_every=detect_every,
                                        progress=False)
    cpu = time.process_time() - cpu
    assert summary["frames"] == frames
    per_frame_ms = {k: round(1000 * v / frames, 1) for k, v in summary["stage_seconds"].items()}
    return {"frames_per_second": summary["frames_per_second"], "stage_ms_per_frame": per_frame_ms,
            "cpu_ms_per_frame": round(1000 * cpu / frames, 1), "tracks": summary["tracks"],
            "in_flight": in_flight, "detect_every": detect_every,
            "frames_answered": summary["frames_answered"]}


def base_of(model):
    """The base directory (numbered versions) a server is started on."""
    if os.path.exists(os.path.join(model, "saved_model.pb")):
        return os.path.dirname(os.path.abspath(model))
    return model


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.video",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="an exported SavedModel with "
                        "predict_photo (a version or base directory)")
    parser.add_argument("--clips", type=int, default=6, help="test-split clips (0: the "
                        "speed figures only)")
    parser.add_argument("--val_clips", type=int, default=6,
                        help="validation-split clips to fit the fusion temper on")
    parser.add_argument("--frames", type=int, default=125, help="frames per clip (25/s)")
    parser.add_argument("--people", default="2,4", help="people per clip: min,max")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--speed_frames", type=int, default=150)
    parser.add_argument("--no_server", action="store_true", help="skip the gRPC speed run")
    parser.add_argument("--in_flight", type=int, default=annotate_lib.IN_FLIGHT,
                        help="frames answered at once in the speed runs (default: "
                             "video.annotate's, %(default)s)")
    parser.add_argument("--detect_every", type=int, default=annotate_lib.DETECT_EVERY,
                        help="frames answered in the speed runs: every K-th (default: "
                             "video.annotate's, %(default)s)")
    tf_threads.add_flags(parser)  # of the in-process model (default: video.annotate's)
    parser.add_argument("--compare_trackers", action="store_true",
                        help="also supervision's ByteTrack and norfair (when importable)")
    parser.add_argument("--answers_cache", help="a pickle of the clips and the model's "
                        "answers: written on the first run, read on the next (same flags)")
    parser.add_argument("--output", help="write every figure here as JSON")
    parser.add_argument("--fusion_output", help="write the fitted temper here (for "
                        "video.annotate --fusion_params)")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    people = tuple(int(v) for v in args.people.split(","))

    from agegender import FaceAnalyzer

    results = {"model": args.model, "seed": args.seed, "frames_per_clip": args.frames,
               "load_average_start": os.getloadavg()}
    tf_threads.set_from_args(args)
    analyzer = FaceAnalyzer.load(args.model)
    if args.clips <= 0:  # the speed figures only
        return speed_figures(analyzer, args, results)
    fps = 25.0
    t = time.time()
    splits = {}
    if args.answers_cache and os.path.exists(args.answers_cache):
        import pickle

        with open(args.answers_cache, "rb") as f:
            splits = pickle.load(f)
    for split, count, seed in (("validation", args.val_clips, args.seed + 100),
                               ("test", args.clips, args.seed)):
        if split in splits:
            continue
        clips, answers = answered_clips(analyzer, split, count, args.frames, people, seed)
        splits[split] = (clips, answers)
        print(f"{split}: {count} clips, {sum(len(a) for a in answers)} frames, "
              f"{sum(len(t) for c in clips for t in c.truth)} true face-frames answered "
              f"({time.time() - t:.0f} s)", flush=True)
    if args.answers_cache and not os.path.exists(args.answers_cache):
        import pickle

        with open(args.answers_cache, "wb") as f:
            pickle.dump(splits, f)

    # Fit on validation clips (tracked by ours with the default temper: the tracks'
    # frames, not the temper, are what the fit needs).
    val_clips, val_answers = splits["validation"]
    val_tracked = [run_ours(a, fps, fusion.DEFAULT_PARAMS) for a in val_answers]
    served = served_temperature(val_answers)
    results["served_temperature"] = served
    ages, genders = fit_inputs(labelled_tracks(val_clips, val_tracked), served)
    fitted = fusion.fit(ages, genders, temperatures=(0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0))
    results["fusion"] = fitted.to_dict()
    results["validation_coverage_by_length"] = {
        str(n): v for n, v in fusion.coverage_by_length(ages, fitted).items()}
    print(f"fitted on {len(ages)} validation tracks (the model's own calibration "
          f"temperature {served:.3f} applied first): {fitted}")
    if args.fusion_output:
        with open(args.fusion_output, "w") as f:
            json.dump({"fusion": fitted.to_dict(), "fitted_on": f"{len(ages)} validation "
                       f"tracks, benchmarks.video seed {args.seed}", "model": args.model}, f,
                      indent=1)

    # Our tracker's variants on the validation clips (where its settings are chosen).
    results["tracking_validation"] = {}
    for name, options in OUR_VARIANTS.items():
        tracked = [run_ours(a, fps, fitted, **options) for a in val_answers]
        quality = tracking_quality(val_clips, tracked)
        quality["losses"] = idf1_losses(val_clips, tracked)
        results["tracking_validation"][name] = quality
        _print_tracking(f"validation {name}", quality)

    clips, answers = splits["test"]
    trackers = {name: lambda a, options=options: run_ours(a, fps, fitted, **options)
                for name, options in OUR_VARIANTS.items()}
    if args.compare_trackers:
        for name, fn in (("bytetrack", run_bytetrack), ("norfair", run_norfair)):
            try:
                fn([[]], fps)
                trackers[name] = lambda a, fn=fn: fn(a, fps)
            except ImportError as error:
                print(f"{name}: not importable ({error}); left out")
    results["tracking"] = {}
    tracked_by = {}
    for name, run in trackers.items():
        started = time.perf_counter()
        tracked_by[name] = [run(a) for a in answers]
        quality = tracking_quality(clips, tracked_by[name])
        quality["ms_per_frame"] = 1000 * (time.perf_counter() - started) / sum(
            len(a) for a in answers)
        quality["losses"] = idf1_losses(clips, tracked_by[name])
        results["tracking"][name] = quality
        _print_tracking(f"test {name}", quality)

    # Answering every K-th frame only (video.annotate --detect_every): the same figures on
    # the tracks it gives, on the validation clips (where K is chosen) and the test clips,
    # with the temper fitted on every frame and with one fitted on its own validation tracks
    # (fewer, less alike frames per track).
    results["accuracy_detect_every"] = {}
    every = [("ours", OUR_VARIANTS["ours"])] + [
        (n, o) for n, o in OUR_VARIANTS.items() if n.startswith("ours_detect_every_")]
    for name, options in every:
        k = options.get("detect_every", 1)
        own = fitted if k == 1 else fusion.fit(*fit_inputs(labelled_tracks(
            val_clips, [run_ours(a, fps, fusion.DEFAULT_PARAMS, detect_every=k)
                        for a in val_answers]), served),
            temperatures=(0.8, 0.9, 1.0, 1.1, 1.25, 1.5, 2.0))
        figures = {"own_fit": own.to_dict()}
        for split, split_clips, tracked in (
                ("validation", val_clips, [run_ours(a, fps, own, **options)
                                           for a in val_answers]),
                ("test", clips, tracked_by[name])):
            for temper_name, params in (("every_frame_fit", fitted), ("own_fit", own)):
                if k == 1 and temper_name == "own_fit":
                    continue
                figures[f"{split}_{temper_name}"] = accuracy(
                    labelled_tracks(split_clips, tracked), params, served)
                _print_accuracy(f"{name} {split} {temper_name}",
                                figures[f"{split}_{temper_name}"])
        results["accuracy_detect_every"][name] = figures
        print(f"{name}: own temper {own}")

    tracks = labelled_tracks(clips, tracked_by["ours"])
    results["accuracy"] = {}
    for name, params in (("fitted", fitted), ("independent_rho0", fusion.FusionParams(
            0.0, fitted.temperature, 0.0)), ("geometric_mean_rho1", fusion.FusionParams(
            1.0, fitted.temperature, 1.0))):
        figures = accuracy(tracks, params, served)
        results["accuracy"][name] = figures
        _print_accuracy(name, figures)

    return speed_figures(analyzer, args, results)


def _print_accuracy(name, figures):
    c = figures["coverage"]
    print(f"age [{name}]: per-frame MAE {figures['per_frame_mae']:.2f}, fused "
          f"(displayed) {figures['fused_mae']:.2f}, track end {figures['track_end_mae']:.2f} "
          f"({figures['faces']} faces, {figures['tracks']} tracks); change per frame after "
          f"{STEADY_AFTER}: per-frame {figures['per_frame_change_median']:.2f}, displayed "
          f"{figures['fused_change_median']:.3f}; 80% coverage per frame "
          f"{c['frame80']:.3f}, fused {c['fused80']:.3f} (end {c['end80']:.3f}), 50% fused "
          f"{c['fused50']:.3f} (end {c['end50']:.3f}); gender per frame "
          f"{figures['gender_accuracy_per_frame']:.3f}, fused "
          f"{figures['gender_accuracy_fused']:.3f}")


def _print_tracking(name, quality):
    losses = quality["losses"]
    print(f"tracking {name:34s} IDF1 {quality['idf1']:.3f} (on the faces the detector "
          f"found: {quality['idf1_detected_faces']:.3f}; on the people it found: "
          f"{quality['idf1_found_people']:.3f}, {quality['never_found_face_frames']} "
          f"face-frames of people never found left out; detection recall "
          f"{quality['detection_recall']:.3f})  ID switches {quality['id_switches']} "
          f"({quality['id_switches_per_100']:.2f} per 100 face-frames)  MOTA "
          f"{quality['mota']:.3f}" + (f"  {quality['ms_per_frame']:.2f} ms/frame"
                                      if "ms_per_frame" in quality else ""))
    print("    IDF1 lost to: " + ", ".join(f"{k} {losses[k]}" for k in LOSSES) +
          f" (IDTP {losses['idtp']})")


def speed_figures(analyzer, args, results):
    """Speed: one clip of 4 people, 640x480, written as H.264 and read back."""
    fps = 25.0
    if args.speed_frames <= 0:
        return _write(results, args.output)
    speed_faces = synthetic_clips.FaceSource("test", seed=args.seed + 7).take(4)
    speed_clip = synthetic_clips.clip(speed_faces, seed=args.seed + 7, frames=args.speed_frames)
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "speed.mp4")
        with video_io.open_sink(path, 640, 480, fps) as sink:
            for frame in speed_clip.frames:
                sink.write(frame)
        annotate_lib.annotate(analyzer, path, progress=False, tracks=os.path.join(
            folder, "warm.jsonl"), max_frames=args.speed_frames)  # warm-up (traces)
        results["speed_in_process"] = speed(analyzer, path, args.speed_frames, args.in_flight,
                                               args.detect_every)
        results["speed_in_process"]["load_average"] = os.getloadavg()
        print(f"speed in process: {results['speed_in_process']}")
        if not args.no_server:
            from agegender import FaceAnalyzer
            from serving.server_process import ServerProcess

            with ServerProcess(base_of(args.model)) as server:
                remote = FaceAnalyzer.from_server(server.grpc_address, protocol="grpc")
                annotate_lib.annotate(remote, path, progress=False, tracks=os.path.join(
                    folder, "warm.jsonl"))
                results["speed_grpc"] = speed(remote, path, args.speed_frames, args.in_flight,
                                          args.detect_every)
                results["speed_grpc"]["load_average"] = os.getloadavg()
                remote.close()
            print(f"speed over gRPC (local server): {results['speed_grpc']}")
    return _write(results, args.output)


def _write(results, path):
    if path:
        with open(path, "w") as f:
            json.dump(results, f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
