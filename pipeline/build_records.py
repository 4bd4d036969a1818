"""Command line of the records job: face images -> sharded, leak-free TFRecords.

    python -m pipeline.build_records --input=<dir | glob | archive> --output_dir=DIR \
        [--image_size=160] [--age_deviation=5] [--split_fractions=0.8,0.1,0.1] [--labels_csv=CSV] \
        [--keep_duplicates] [--max_image_pixels=50000000] [--follow_symlinks] \
        [--archive_spread_mb=128] [--align_faces [--face_select=largest|score]] \
        [--progress_seconds=5] [-v] \
        [any Beam pipeline option, e.g. --runner=DataflowRunner ...]

The graph is `pipeline.records_graph.build_pipeline` (also importable from here, with
`BuildOptions`), the runner set-up `pipeline.runner_setup`.

Every flag this module does not know is handed to Beam (`parse_known_args`). Without a
`--runner` the job runs on the DirectRunner with one worker thread per local core, in this
process (`--direct_running_mode=multi_processing` for worker processes).
`--runner=DaskRunner [--dask_client_address=HOST:PORT]` runs it on a Dask cluster (without
an address, on a local one it starts and stops): every worker needs this project and the
same packages installed, and --input/--output_dir must be paths every worker can reach.

The records are written into a staging directory beside --output_dir and switched into place
when complete, under a lock that refuses a second run into the same directory (`publish`).
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import dataclasses
import functools
import json
import sys
import time

import apache_beam as beam

from agegender import arg_types, console, names, schema
from agegender import image_sources as sources
from faces import photo as face_photo
from pipeline import input_flags, publish, writer
from pipeline.records_graph import (DEFAULT_AGE_DEVIATION, DEFAULT_ARCHIVE_SPREAD_MB,
                                    DEFAULT_IMAGE_SIZE, DEFAULT_JPEG_QUALITY, DEFAULT_SPLIT,
                                    BuildOptions, build_pipeline)
from pipeline.runner_setup import (DaskStartFailed, RunnerUnavailable, disconnect, is_dask,
                                   local_cluster_start_failure, pipeline_options, quiet_runner)

# `build_pipeline` and `BuildOptions` keep their old path for users' scripts.
__all__ = ["BuildOptions", "build_pipeline", "main"]


def _parse_split(text):
    try:
        parts = tuple(float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"--split_fractions={text!r}: expected three numbers, e.g. 0.8,0.1,0.1")
    if len(parts) != len(schema.SPLITS) or any(x < 0 for x in parts) or abs(sum(parts) - 1) > 1e-6:
        raise argparse.ArgumentTypeError(
            f"--split_fractions={text!r}: expected {len(schema.SPLITS)} fractions >= 0 summing to 1 "
            f"(for {', '.join(schema.SPLITS)})")
    return parts


def _parser():
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.build_records", description=__doc__.split("\n")[0],
        # No prefix matching: an unknown (Beam) flag must never be taken for one of ours.
        allow_abbrev=False,
        epilog="Any other flag is a Beam pipeline option (e.g. --runner, --project, --region, "
               "--temp_location, --direct_num_workers).")
    ap.add_argument("--input", required=True,
                    help="a directory, a glob, or a .tar/.tar.gz/.tgz/.zip archive (any Beam filesystem)")
    ap.add_argument("--output_dir", required=True, help="the records directory to write")
    ap.add_argument("--labels_csv", help="CSV file,age[,gender][,race]: labels for files whose "
                                         "names carry none (keyed by file basename)")
    ap.add_argument("--image_size", type=int, default=DEFAULT_IMAGE_SIZE,
                    help="side of the square JPEG written (default %(default)s)")
    ap.add_argument("--age_deviation", type=float, default=DEFAULT_AGE_DEVIATION,
                    help="age histogram deviation in years (default %(default)s)")
    # --split names one split in every other command (evaluation, faces.template): the
    # fractions are spelled apart; the old spelling is still accepted, with a warning.
    ap.add_argument("--split_fractions", "--split", dest="split", type=_parse_split,
                    default=DEFAULT_SPLIT,
                    help="train,validation,test fractions (default 0.8,0.1,0.1)")
    ap.add_argument("--keep_duplicates", action="store_true",
                    help="write every pixel-identical copy (all in one split) instead of one")
    ap.add_argument("--min_age", type=int, default=names.DEFAULT_MIN_AGE)
    ap.add_argument("--max_age", type=int, default=names.DEFAULT_MAX_AGE)
    ap.add_argument("--jpeg_quality", type=int, default=DEFAULT_JPEG_QUALITY)
    ap.add_argument("--target_shard_mb", type=float, default=writer.DEFAULT_TARGET_SHARD_MB,
                    help="about this many MB per shard (default %(default)s)")
    ap.add_argument("--min_shards", type=int, default=writer.DEFAULT_MIN_SHARDS,
                    help="at least this many shards per split, if it has that many images")
    input_flags.add_input_flags(ap, "records")
    ap.add_argument("--align_faces", action="store_true",
                    help="treat inputs as photos: detect the faces, and write the chosen "
                         "face aligned on the face template (faces.photo, as predict_photo "
                         "serves) instead of the whole image; a photo without a face is "
                         "skipped as no_face. The template is recorded in report.json")
    ap.add_argument("--face_select", choices=(face_photo.LARGEST, face_photo.SCORE_SELECT),
                    default=face_photo.LARGEST,
                    help="with --align_faces: the face of a photo to write, the largest box "
                         "or the highest detection score (default %(default)s)")
    console.add_progress_flag(ap, "the images it processed and the records it wrote")
    console.add_verbose_flag(ap)
    return ap


_error = functools.partial(console.command_error, "build_records")


def print_summary(report, seconds=None, out=sys.stdout):
    counts = report["counts"]
    print(f"inputs {counts['inputs']}  written {counts['written']}  "
          f"skipped {counts['skipped']}", file=out)
    for split, info in report["splits"].items():
        print(f"  {split:<10} {info['examples']:>7} images in {info['shards']} shard(s), "
              f"{info['bytes'] / 1e6:.1f} MB", file=out)
    for reason, n in counts["skipped_by_reason"].items():
        print(f"  skipped {reason:<22} {n}", file=out)
    if seconds:
        print(f"{seconds:.1f} s, {counts['inputs'] / seconds:.0f} inputs/s end to end", file=out)


# Old spellings still accepted (with a warning): one spelling per concept across commands.
RENAMED_FLAGS = {"--split": "--split_fractions"}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    arg_types.warn_renamed(argv, RENAMED_FLAGS)
    args, beam_args = _parser().parse_known_args(argv)
    if args.image_size <= 0 or not 1 <= args.jpeg_quality <= 100 or args.min_shards < 1 \
            or args.target_shard_mb <= 0 or args.age_deviation < 0 \
            or args.archive_spread_mb < 0 \
            or args.progress_seconds < 0:
        return _error("--image_size, --min_shards and --target_shard_mb must be > 0, "
                      "--age_deviation, --archive_spread_mb and "
                      "--progress_seconds >= 0, --jpeg_quality in 1..100")
    if not sources.is_valid_name(args.output_dir):
        return _error(f"--output_dir {sources.printable_name(args.output_dir)!r} is not valid "
                      "UTF-8: choose another name")
    try:
        inputs = sources.list_inputs(args.input, args.follow_symlinks)
    except sources.InputError as e:
        return _error(str(e))
    csv_rows = None
    if args.labels_csv:
        try:
            csv_rows = names.read_labels_csv(sources.read_file(args.labels_csv).decode("utf-8-sig"))
        except Exception as e:
            return _error(f"cannot read --labels_csv {args.labels_csv!r}: {e}")
    options = BuildOptions(
        output_dir=args.output_dir.rstrip("/"), image_size=args.image_size,
        age_deviation=args.age_deviation, split=args.split, keep_duplicates=args.keep_duplicates,
        min_age=args.min_age, max_age=args.max_age, jpeg_quality=args.jpeg_quality,
        target_shard_mb=args.target_shard_mb, min_shards=args.min_shards,
        max_image_pixels=args.max_image_pixels, follow_symlinks=args.follow_symlinks,
        align_faces=args.align_faces, face_select=args.face_select)

    try:
        beam_options = pipeline_options(beam_args, inputs)
    except RunnerUnavailable as e:
        return _error(str(e))
    quiet_runner(beam_options)

    import tensorflow as tf

    start = time.perf_counter()
    try:
        with publish.Publication(options.output_dir) as output:
            try:
                p = beam.Pipeline(options=beam_options)
                try:
                    with p:
                        build_pipeline(
                            p, inputs, dataclasses.replace(options, output_dir=output.staging),
                            csv_rows,
                            report_extra={"input": args.input, "labels_csv": args.labels_csv},
                            archive_spread_bytes=int(args.archive_spread_mb * (1 << 20)),
                            progress_seconds=args.progress_seconds,
                            side_inputs=not is_dask(beam_options))
                finally:
                    disconnect(p)
            except BaseException as e:
                failure = (isinstance(e, Exception) and is_dask(beam_options)
                           and local_cluster_start_failure(e))
                if failure:  # nothing ran: one line, no traceback of the cluster's internals
                    raise DaskStartFailed(f"{failure}. {options.output_dir} is unchanged") \
                        from None
                print(f"build_records: the run failed; {options.output_dir} is unchanged (a "
                      f"report, if the run wrote one, is kept in {output.staging})", file=sys.stderr)
                raise
            output.publish()
    except (publish.OutputDirBusy, publish.OutputDirError, DaskStartFailed) as e:
        return _error(str(e))
    seconds = time.perf_counter() - start
    with tf.io.gfile.GFile(f"{options.output_dir}/{schema.REPORT_FILE}") as f:
        report = json.load(f)
    print_summary(report, seconds)
    print(f"records in {options.output_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
