"""Every person in a clip tracked, one steady age per person: the library call and its CLI.

    python -m video.annotate --model=models/age --input=clip.mp4 --output=clip_annotated.mp4 \
        --tracks=tracks.jsonl [--per_frame] [--fps=N] [--fill_gaps=10] [--detect_every=K]
    python -m video.annotate --server=localhost:8500 --input=clip.mp4 --tracks=tracks.jsonl

`annotate(analyzer, input, ...)` runs, per frame: decode (`video.io`), encode the frame as
a JPEG, find and answer every face (`analyzer.analyze`: in process on a SavedModel, a job
dir or a LiteRT file, or TF Serving's `predict_photo` over gRPC: TF Serving stays stateless),
track and fuse (`video.face_tracks`, client-side state), draw (`video.drawing`) and
encode the annotated copy. It returns a summary with per-stage seconds.

`--tracks` (JSON lines): one {"type": "track"} line per track when it ends (id, first and
last frame and time, fused age, age_std, 50%/80% intervals, gender and probability, frames
used, a representative box); with `--per_frame` also one {"type": "face"} line per face per
frame (its own answer beside the fused one displayed at that frame; "track" null for a face
that never became a track; `"interpolated": true` for a box of a frame where the detector
missed a face its track had before and after, within `--fill_gaps` frames, or of a frame
not answered (`--detect_every=K` answers every K-th frame only): no answer of its own, the
track's fused one). A face's line waits until its track is confirmed (the next
frame), so lines are in frame order per track. A clip without faces gives no line and a
summary saying so: a normal result.

Outputs are written beside their final names and renamed into place when the clip is done:
a failure (a clip past --max_frames, a server that went down) leaves no partial file and
keeps an earlier good output.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import collections
import concurrent.futures
import dataclasses
import io
import json
import os
import sys
import time

from agegender import arg_types, console, image_header, tf_threads
from agegender.errors import ImageError
from video import drawing, face_tracks
from video import fusion as fusion_lib
from video import io as video_io

JPEG_QUALITY = 95  # frames go to the model as JPEGs: ~10x faster to encode than PNG
# Frames a track may lose a face for and still have it boxed there (interpolated): the
# choice on the benchmark's validation clips (docs/video.md); frames are held this long.
FILL_GAPS = 10
MAX_FILL_GAPS = 50  # --fill_gaps' bound: the frames held in memory
# The command's frames answered at once: two keep both cores busy (one op thread each,
# `agegender.tf_threads`) while the frame before is tracked, drawn and encoded
# (docs/video.md, Speed). The library's default stays 1: a caller's analyzer may not be
# thread-safe.
IN_FLIGHT = 2
MAX_IN_FLIGHT = 8  # --in_flight's bound: each holds a frame and a model call
STAGES = ("decode", "encode_frame", "analyze", "track_fuse", "draw", "write")
# Frames answered: every one (1), or every K-th with the boxes between interpolated.
DETECT_EVERY = 1
MAX_DETECT_EVERY = 5  # a person seen for under K frames may be missed; 5 is 0.2 s at 25/s


def is_answered(position, detect_every):
    """Whether the frame at 0-based `position` among the frames read is answered with
    `detect_every`: the 1st, (K+1)th, ... (by position only, so frames in flight and any
    replay of the clip answer the same frames)."""
    return position % detect_every == 0


def check_detect_every(detect_every, fill_gaps):
    """ValueError unless 1 <= detect_every <= MAX_DETECT_EVERY and the frames between two
    answered ones can be filled (fill_gaps >= detect_every - 1)."""
    if not 1 <= detect_every <= MAX_DETECT_EVERY:
        raise ValueError(f"detect_every is 1..{MAX_DETECT_EVERY} frames, got {detect_every}")
    if fill_gaps < detect_every - 1:
        raise ValueError(f"detect_every={detect_every} needs fill_gaps >= "
                         f"{detect_every - 1} (the frames between two answered ones are "
                         f"filled like missed ones), got {fill_gaps}")


def encode_frame(image, quality=JPEG_QUALITY):
    """uint8 RGB pixels -> JPEG bytes (4:4:4: no chroma subsampling of the faces)."""
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(image).save(out, "JPEG", quality=quality, subsampling=0)
    return out.getvalue()


class _Outputs:
    """Files written under a temporary name and renamed into place by `commit()`."""

    def __init__(self):
        self._pending = []  # (temporary, final)

    def path(self, final):
        directory, name = os.path.split(os.path.abspath(final))
        os.makedirs(directory, exist_ok=True)
        stem, ext = os.path.splitext(name)
        temporary = os.path.join(directory, f".{stem}-partial-{os.getpid()}{ext}")
        self._pending.append((temporary, final))
        return temporary

    def commit(self):
        for temporary, final in self._pending:
            if os.path.isdir(temporary):
                if os.path.isdir(final):
                    import shutil
                    shutil.rmtree(final)
            os.replace(temporary, final)
        self._pending = []

    def discard(self):
        import shutil

        for temporary, _ in self._pending:
            if os.path.isdir(temporary):
                shutil.rmtree(temporary, ignore_errors=True)
            elif os.path.exists(temporary):
                os.remove(temporary)
        self._pending = []


def _face_line(frame, item):
    face = item.face
    track_id = None if item.track is None else item.track.id  # confirmed since, maybe
    line = {"type": "face", "frame": frame.index, "time": round(frame.time, 4),
            "track": track_id, "interpolated": item.interpolated}
    line.update(face.to_dict(distribution=False))
    line.pop("landmarks", None)
    if item.answer is not None and track_id is not None:
        line["fused_age"] = item.answer.age
        line["fused_age_std"] = item.answer.age_std
        line["fused_age_interval_80"] = (None if item.answer.age_interval_80 is None
                                         else list(item.answer.age_interval_80))
        line["fused_gender"] = item.answer.gender
        line["fused_gender_probability"] = item.answer.gender_probability
    return line


def _as_known_later(item):
    """`item` with its track's id as known now (a track tentative at its first frame is
    confirmed at its second)."""
    if item.track is None or item.track_id == item.track.id:
        return item
    return dataclasses.replace(item, track_id=item.track.id)


def _answered(frames, analyzer, in_flight, stage_seconds, detect_every=1):
    """(frame, faces, refusal reason or None) for each decoded frame, in frame order; faces
    None for a frame not looked at (`detect_every` > 1: only the 1st, (k+1)th, ... frame read
    is answered). With `in_flight` > 1 that many frames are JPEG-encoded and answered at once
    on a thread pool (TensorFlow and gRPC calls release the GIL) while the caller works on
    the frame before."""
    read = 0

    def looked_at():
        nonlocal read
        read += 1
        return is_answered(read - 1, detect_every)

    def answer(frame):
        t0 = time.perf_counter()
        encoded = encode_frame(frame.image)
        t1 = time.perf_counter()
        try:
            found, refusal = analyzer.analyze(encoded), None
        except ImageError as error:
            found, refusal = [], error.reason
        return found, refusal, t1 - t0, time.perf_counter() - t1

    def decoded():
        t0 = time.perf_counter()
        frame = next(frames, None)
        stage_seconds["decode"] += time.perf_counter() - t0
        return frame

    def counted(frame, result):
        found, refusal, encode_seconds, analyze_seconds = result
        stage_seconds["encode_frame"] += encode_seconds
        stage_seconds["analyze"] += analyze_seconds
        return frame, found, refusal

    not_looked = (None, None, 0.0, 0.0)
    if in_flight <= 1:
        while (frame := decoded()) is not None:
            yield counted(frame, answer(frame) if looked_at() else not_looked)
        return
    queue = collections.deque()  # (frame, future), oldest first
    pool = concurrent.futures.ThreadPoolExecutor(in_flight, thread_name_prefix="video-frame")
    try:
        ended = False

        def fill():
            nonlocal ended
            while not ended and len(queue) < in_flight:
                frame = decoded()
                if frame is None:
                    ended = True
                elif looked_at():
                    queue.append((frame, pool.submit(answer, frame)))
                else:
                    done = concurrent.futures.Future()
                    done.set_result(not_looked)
                    queue.append((frame, done))
        fill()
        while queue:
            frame, future = queue.popleft()
            fill()  # the pool stays busy while this frame is tracked, drawn and written
            yield counted(frame, future.result())
    finally:  # an error or an early stop: nothing waits for frames no one will read
        pool.shutdown(wait=True, cancel_futures=True)


def annotate(analyzer, input, *, output=None, tracks=None, per_frame=False, fps=None,
             max_frames=video_io.DEFAULT_MAX_FRAMES,
             max_image_pixels=image_header.DEFAULT_MAX_PIXELS, params=None,
             tracker_options=None, fill_gaps=FILL_GAPS, in_flight=1,
             detect_every=DETECT_EVERY, progress=True, on_frame=None):
    """Tracks and fuses every face of `input` (a clip or an image sequence) through
    `analyzer` (an object with `analyze(image) -> [agegender.Face]`). `output`: the
    annotated copy (None: none); `tracks`: the JSON-lines file (None: none).
    `fill_gaps=N`: a face its track lost for at most N frames (the detector missed it)
    gets an interpolated box in those frames (`video.face_tracks`), drawn and written
    (`"interpolated": true`): frames are drawn, written and handed to `on_frame` N frames
    after they are read (at most N + 1 frames held; 0: each at once). `on_frame`: called
    with (frame, [TrackedFace]) per frame. `in_flight=N`: up to N frames are JPEG-encoded
    and answered at once on a thread pool while this thread decodes, tracks, draws and
    writes in frame order (the same outputs as 1, faster on 2+ cores; `analyzer` must then
    be thread-safe, as `FaceAnalyzer` is in process, over gRPC and on LiteRT, not over
    REST). `detect_every=K`: only every K-th frame read is answered (from the first); the
    frames between get each track's box interpolated (as a frame the detector missed,
    `"interpolated": true`; needs `fill_gaps` >= K - 1) and its fused answer; frames after a
    track's last answered frame have no box of it. Returns the summary dict (stage seconds
    are summed over threads). Raises `video.io.VideoError` for a clip that cannot be read
    as asked."""
    check_detect_every(detect_every, fill_gaps)
    if output:
        video_io.check_output_name(output)  # before any frame is worked on
    stage_seconds = dict.fromkeys(STAGES, 0.0)
    outputs = _Outputs()
    sink = lines = None
    people = face_tracks.FaceTracks(params, fill_gaps=fill_gaps, **(tracker_options or {}))
    summary = {"input": input, "frames": 0, "frames_answered": 0, "frames_with_faces": 0,
               "faces": 0,
               "interpolated_faces": 0, "tracks": 0, "skipped_frames": []}
    pending = collections.deque()  # (frame, tracked) waiting for tentative tracks
    held = collections.deque()     # (frame, tracked) of the last fill_gaps frames
    refused = []  # (frame, reason) of frames the model refused

    def write_lines(records):
        if lines is not None:
            for record in records:
                lines.write(json.dumps(record) + "\n")

    def flush(final=False):
        while pending:
            frame, tracked = pending[0]
            undecided = any(item.track is not None and item.track.id is None and
                            item.track in people.open_tracks for item in tracked)
            if undecided and not final:
                return
            pending.popleft()
            write_lines(_face_line(frame, item) for item in tracked)

    def release(frame, tracked):
        """A frame leaves the look-behind: its lines, its picture, `on_frame`."""
        nonlocal sink
        if fill_gaps:
            tracked = [_as_known_later(item) for item in tracked]
        if per_frame:
            pending.append((frame, tracked))
            flush()
        if output:
            t4 = time.perf_counter()
            picture = drawing.draw(frame.image, tracked)
            t5 = time.perf_counter()
            if sink is None:
                rate = fps or source.info.fps or video_io.DEFAULT_SEQUENCE_FPS
                sink = video_io.open_sink(outputs.path(output), picture.shape[1],
                                          picture.shape[0], rate)
            sink.write(picture)
            stage_seconds["draw"] += t5 - t4
            stage_seconds["write"] += time.perf_counter() - t5
        if on_frame is not None:
            on_frame(frame, tracked)

    source = video_io.open_source(input, fps=fps, max_frames=max_frames,
                                  max_pixels=max_image_pixels)
    answered = _answered(iter(source), analyzer, in_flight, stage_seconds, detect_every)
    start = time.perf_counter()
    try:
        if tracks:
            lines = open(outputs.path(tracks), "w")
        meter = console.Progress("video", "frames", total=None if fps else source.info.frames
                                 ) if progress else None
        for frame, found, refusal in answered:
            if refusal is not None:  # the model refused this frame: it alone is skipped
                refused.append((f"frame {frame.index}", refusal))
            t3 = time.perf_counter()
            if found is None:  # not looked at (detect_every)
                tracked, found = people.skip(frame.index, frame.time), []
            else:
                tracked = people.update(frame.index, frame.time, found)
                summary["frames_answered"] += 1
            closed = people.pop_closed()
            filled = people.pop_filled()
            stage_seconds["track_fuse"] += time.perf_counter() - t3
            summary["frames"] += 1
            summary["faces"] += len(found)
            summary["frames_with_faces"] += bool(found)
            if filled:  # boxes for held frames (a gap is at most fill_gaps frames long)
                by_index = {held_frame.index: items for held_frame, items in held}
                for frame_index, _, item in filled:
                    by_index[frame_index].append(item)
                summary["interpolated_faces"] += len(filled)
            held.append((frame, tracked))
            if len(held) > fill_gaps:
                release(*held.popleft())
            write_lines(closed)
            summary["tracks"] += len(closed)
            if meter:
                meter.add()
        while held:
            release(*held.popleft())
        if per_frame:
            flush(final=True)
        closed = people.finish()
        write_lines(closed)
        summary["tracks"] += len(closed)
        if sink is not None:
            t = time.perf_counter()
            sink.close()
            stage_seconds["write"] += time.perf_counter() - t
            sink = None
        if lines is not None:
            lines.close()
            lines = None
        outputs.commit()
    except BaseException:
        if sink is not None:
            try:
                sink.close()
            except Exception:  # noqa: BLE001 - the original error is the one to report
                pass
        if lines is not None:
            lines.close()
        outputs.discard()
        raise
    finally:
        answered.close()  # its frames in flight are waited for (or cancelled) first
        source.close()
    seconds = time.perf_counter() - start
    summary.update(seconds=round(seconds, 3),
                   frames_per_second=round(summary["frames"] / seconds, 2) if seconds else None,
                   stage_seconds={k: round(v, 3) for k, v in stage_seconds.items()},
                   skipped_frames=source.skipped + refused, truncated=source.truncated,
                   source={"kind": source.info.kind, "width": source.info.width,
                           "height": source.info.height, "fps": source.info.fps,
                           "container": source.info.container, "codec": source.info.codec,
                           "rotation": source.info.rotation,
                           "audio_dropped": source.info.has_audio and bool(output)})
    return summary


# -- CLI ----------------------------------------------------------------------------------

def _fill_gaps(text):
    value = arg_types.at_least(0, "a frame count")(text)
    if value > MAX_FILL_GAPS:
        raise argparse.ArgumentTypeError(f"at most {MAX_FILL_GAPS} frames (each is held in "
                                         f"memory until then), got {value}")
    return value


def _in_flight(text):
    value = arg_types.positive(int, "a frame count")(text)
    if value > MAX_IN_FLIGHT:
        raise argparse.ArgumentTypeError(f"at most {MAX_IN_FLIGHT}, got {value}")
    return value


def parse_args(argv):
    parser = argparse.ArgumentParser(
        prog="python -m video.annotate", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--model", help="a SavedModel (version or base dir), a trainer job "
                       "dir, or a .tflite file: the model runs in this process")
    where.add_argument("--server", metavar="HOST:PORT",
                       help="TF Serving (or serving.server) gRPC address: predict_photo "
                            "is asked there, tracking and fusion run here")
    parser.add_argument("--model_name", default="age", help="the served model's name")
    parser.add_argument("--input", required=True,
                        help="a clip (mp4/mov/mkv/webm/avi), a directory of images or a glob")
    parser.add_argument("--output", help="the annotated copy (.mp4/.mov/.mkv: H.264, "
                        ".webm: VP8, .avi: MPEG-4; a name without extension: PNG frames)")
    parser.add_argument("--tracks", help="JSON lines: one per track (and per face with "
                        "--per_frame)")
    parser.add_argument("--per_frame", action="store_true",
                        help="also one line per face per frame in --tracks")
    parser.add_argument("--fps", type=arg_types.positive(float, "frames per second"),
                        help="sample the clip at this rate (default: every frame)")
    parser.add_argument("--max_frames", type=arg_types.positive(int, "a frame count"),
                        default=video_io.DEFAULT_MAX_FRAMES,
                        help="refuse a clip with more frames to read than this")
    arg_types.add_max_image_pixels(parser, image_header.DEFAULT_MAX_PIXELS)
    parser.add_argument("--fill_gaps", type=_fill_gaps,
                        default=FILL_GAPS,
                        help="box a face its track lost for at most this many frames "
                             "(interpolated, flagged; frames are written this many frames "
                             "late; 0: none) (default %(default)s)")
    parser.add_argument("--fusion_params", help="a JSON file with the fusion temper "
                        "(rho, temperature, gender_rho, gender_temperature), e.g. "
                        "benchmarks/video.py's fit on validation clips")
    parser.add_argument("--timeout", type=arg_types.positive(float, "seconds"), default=10.0,
                        help="seconds per frame asked of --server")
    parser.add_argument("--detect_every", type=arg_types.positive(int, "a frame count"),
                        default=DETECT_EVERY,
                        help="answer every K-th frame only (1..%d); the frames between get "
                             "each track's box interpolated and its fused age (default "
                             "%%(default)s)" % MAX_DETECT_EVERY)
    parser.add_argument("--in_flight", type=_in_flight, default=IN_FLIGHT,
                        help="frames answered at once, in process or by --server (default "
                             "%(default)s)")
    tf_threads.add_flags(parser)  # of the model in this process (--model)
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)
    if not args.output and not args.tracks:
        parser.error("nothing to write: give --output and/or --tracks")
    if args.per_frame and not args.tracks:
        parser.error("--per_frame needs --tracks")
    try:
        check_detect_every(args.detect_every, args.fill_gaps)
    except ValueError as error:
        parser.error(f"--detect_every: {error}")
    if args.output:
        try:
            video_io.check_output_name(args.output)
        except ValueError as error:
            parser.error(f"--output: {error}")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:  # the input is checked before a model is loaded (seconds of TensorFlow start-up)
        video_io.open_source(args.input, fps=args.fps, max_frames=args.max_frames,
                             max_pixels=args.max_image_pixels).close()
    except video_io.VideoError as error:
        print(f"video.annotate: {error} [{error.reason}]", file=sys.stderr)
        return 1
    from agegender import FaceAnalyzer
    from agegender.errors import AnalyzerError

    params = fusion_lib.DEFAULT_PARAMS
    try:
        if args.fusion_params:
            params = fusion_lib.FusionParams.load(args.fusion_params)
    except (OSError, ValueError, TypeError, KeyError) as error:
        print(f"video.annotate: --fusion_params {args.fusion_params}: {error}", file=sys.stderr)
        return 2
    try:
        if args.server:
            analyzer = FaceAnalyzer.from_server(args.server, protocol="grpc",
                                                model_name=args.model_name,
                                                timeout=args.timeout,
                                                max_image_pixels=args.max_image_pixels)
        else:
            tf_threads.set_from_args(args)
            analyzer = FaceAnalyzer.load(args.model, max_image_pixels=args.max_image_pixels)
        with analyzer:
            summary = annotate(analyzer, args.input, output=args.output, tracks=args.tracks,
                               per_frame=args.per_frame, fps=args.fps,
                               max_frames=args.max_frames,
                               max_image_pixels=args.max_image_pixels, params=params,
                               fill_gaps=args.fill_gaps, in_flight=args.in_flight,
                               detect_every=args.detect_every)
    except video_io.VideoError as error:
        print(f"video.annotate: {error} [{error.reason}]", file=sys.stderr)
        return 1
    except AnalyzerError as error:
        print(f"video.annotate: {error}", file=sys.stderr)
        return 1
    print(_summary_line(summary, args))
    return 0


def _summary_line(summary, args):
    frames = summary["frames"]
    people = (f"{summary['tracks']} tracks" if summary["tracks"]
              else "no face tracked (a clip without faces is a normal result)")
    wrote = ", ".join(p for p in (args.output, args.tracks) if p)
    extra = ""
    if summary["frames_answered"] < frames:
        extra += f"; {summary['frames_answered']} frames answered (--detect_every)"
    if summary.get("interpolated_faces"):
        extra += f"; {summary['interpolated_faces']} boxes interpolated across missed frames"
    if summary["skipped_frames"]:
        extra += f"; {len(summary['skipped_frames'])} images skipped"
    if summary["truncated"]:
        extra += "; the clip is truncated: frames up to the cut were read"
    return (f"{args.input}: {frames} frames, {summary['frames_with_faces']} with faces, "
            f"{people}, {summary['frames_per_second']} frames/s -> {wrote}{extra}")


if __name__ == "__main__":
    sys.exit(main())
