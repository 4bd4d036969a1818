"""Command line and graph of the job: photo collections -> every face's age and gender, as
Parquet.

    python -m pipeline.annotate --model=models/age --input=<dir | glob | archive> \
        --output_dir=annotations/photos [--faces_dir=DIR] [--crops] \
        [--max_image_pixels=50000000] [--follow_symlinks] \
        [--batch_size=16] [--photos_per_file=10000] [--min_shards=4] \
        [--progress_seconds=5] [-v] \
        [any Beam pipeline option, e.g. --runner=DaskRunner --dask_client_address=HOST:PORT]

Inputs, limits, skips, runners and the atomic publication of the output directory are the
records job's (`pipeline.build_records`, `agegender.image_sources`, `pipeline.publish`):
the same --input forms, the same refusals with the same reasons, the same Beam options.

The model answers through Beam's RunInference (`pipeline.inference_handler`: the Python
API's `FaceAnalyzer`, one per worker process): `predict_photo` on whole photos (every face
found, aligned and answered in the model), or with --crops `serving_default` on images that
already are aligned face crops. Batches are formed from the listing
(`pipeline.photo_batches`); the photos of a batch the model refuses are answered again one
at a time by the handler, so only the bad photo is skipped. A plain file is read inside
RunInference, right before its batch is answered (`photo_batches.PhotoHandler`): no step
hands a plain file's bytes to the next.

Why one fused step from reading to writing (`build_pipeline`): no process may hold the rows
of every input (a million-photo folder). The rows of a Parquet file are written by the step that
answers its photos, as soon as the file's last photo is answered (its reader marks it),
instead of meeting the other rows at a GroupByKey, which the in-process runner buffers
whole; so the unit of work the runner spreads is a whole file's inputs (a range of the
listing: --photos_per_file, or fewer so that the listing makes at least --min_shards
files, as the records job's --min_shards) or a whole archive. Consequences: at most as
many workers answer at once as there are files and archives; an archive's members are
answered by the worker that reads it (the records job's --archive_spread_mb has no effect
here); a worker holds the rows of the files it is answering, and the photos' bytes of one
batch.

Output (`pipeline.parquet_sink`): Parquet files of one row per face (one per photo without
a face), the same rows in the same order on every run and runner, and report.json
(inputs = annotated + skipped, with reasons; faces per photo; the model; throughput).
--faces_dir: every face's aligned crop and a labels template (`pipeline.face_crops`).
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import contextlib
import dataclasses
import functools
import sys
import time

import apache_beam as beam
from apache_beam.ml.inference.base import KeyedModelHandler, RunInference

from agegender import arg_types, console, image_header
from agegender import image_sources as sources
from pipeline import (face_crops, inference_handler, input_flags, parquet_sink, photo_batches,
                      portable, publish, runner_setup, writer)
from pipeline.photo_batches import INPUTS, SKIPPED
from pipeline.worker_progress import ProgressDoFn


@dataclasses.dataclass(frozen=True)
class AnnotateOptions:
    """What the annotations depend on (stored in report.json and every file's metadata)."""
    output_dir: str
    model: str
    crops: bool = False
    faces_dir: str | None = None
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS
    follow_symlinks: bool = False
    max_batch_size: int = inference_handler.DEFAULT_MAX_BATCH_SIZE
    photos_per_file: int = parquet_sink.DEFAULT_PHOTOS_PER_FILE
    min_shards: int = writer.DEFAULT_MIN_SHARDS

    def handler(self):
        return photo_batches.PhotoHandler(
            self.model, crops=self.crops, max_image_pixels=self.max_image_pixels,
            max_batch_size=self.max_batch_size, follow_symlinks=self.follow_symlinks,
            keep_bytes=bool(self.faces_dir))

    def range_size(self, num_inputs):
        """Plain files per Parquet file for a listing of `num_inputs` inputs."""
        return photo_batches.range_size(num_inputs, self.photos_per_file, self.min_shards)

    def metadata(self, model_info, extra=None):
        """model_info: `ModelInfo.to_dict()` of the model (`load_model`)."""
        return {"model": model_info, "signature": self.handler().signature,
                "options": {"crops": self.crops, "max_image_pixels": self.max_image_pixels,
                            "follow_symlinks": self.follow_symlinks,
                            "batch_size": self.max_batch_size,
                            "photos_per_file": self.photos_per_file,
                            "min_shards": self.min_shards, **(extra or {})}}


class WriteAnswers(ProgressDoFn):
    """`(key, PredictionResult)` of each photo, in the order its reader sent it -> each file's
    entry once the file is written (`parquet_sink.OpenFiles`); a photo the model could not
    answer -> its Skip (tagged SKIPPED). With a crop writer, each photo's aligned face
    crops are written too."""

    def __init__(self, output_dir, metadata, crop_writer=None,
                 progress_seconds=console.PROGRESS_SECONDS):
        super().__init__("annotate job", "photos written", progress_seconds)
        self._output_dir, self._metadata = output_dir, metadata
        self._crops = crop_writer
        self._files = None

    def setup(self):
        super().setup()
        self._files = parquet_sink.OpenFiles(self._output_dir, self._metadata)
        if self._crops is not None:
            self._crops.setup()

    def process(self, element):
        (shard, position, path, archive, width, height, closes), result = element
        faces, rows, data = result.inference, None, result.example
        if isinstance(faces, inference_handler.Refusal):
            yield beam.pvalue.TaggedOutput(SKIPPED, sources.Skip(path, *faces))
        else:
            if width is None:  # a plain file, read by the handler (photo_batches.PhotoHandler)
                width, height, data = data
            if self._crops is not None and faces:
                self._crops.write(path, data, faces)
            rows = parquet_sink.photo_rows(path, archive, width, height, faces)
        entry = self._files.add(shard, position, rows, closes)
        if entry is not None:
            beam.metrics.Metrics.counter(parquet_sink.NAMESPACE, "photos_annotated").inc(
                entry["photos"])
            if self._progress is not None:
                self._progress.add(entry["photos"])
            yield entry


def _tagged(value, tag):
    return tag, value


def build_pipeline(p, inputs, options, model_info, *, template=None, report_extra=None,
                   progress_seconds=console.PROGRESS_SECONDS):
    """Adds the whole job to pipeline `p`; returns the PCollection holding the report dict.

    inputs: `sources.InputFile`s from `sources.list_inputs` (sorted); options:
    `AnnotateOptions` (output_dir and faces_dir: where to write, e.g. staging directories);
    model_info: the model's `ModelInfo.to_dict()`; template: the face template points the
    crops of --faces_dir are aligned on.

    The units of work (`photo_batches.units`: the plain files of one Parquet file's range
    of the listing, `options.range_size`, or one archive) are written to a listing file in
    the output's temporary directory; the graph holds references to them. One fused step
    per unit: read (an archive's members; plain files are handed on by reference) ->
    RunInference (reads the plain files of a batch, then answers it) -> rows -> its Parquet
    files. Nothing between them is materialised (no Flatten, no GroupByKey): the rows stay
    in the step; only the files' entries, the skips and the input counts meet, for the
    report.
    """
    handler = options.handler()
    crop_writer = None
    if options.faces_dir:
        crop_writer = face_crops.CropWriter(options.faces_dir, template, options.max_image_pixels)
    metadata = options.metadata(model_info, report_extra)

    range_size = options.range_size(len(inputs))
    units = photo_batches.write_units(inputs, range_size,
                                      f"{options.output_dir}/{parquet_sink.TMP_DIR}")
    read = (p | "ListInputs" >> beam.Create(units)
            | "SpreadInputs" >> beam.Reshuffle()
            | "ReadPhotos" >> portable.ParDoWithOutputs(
                photo_batches.ReadPhotos(options.photos_per_file, handler.max_batch_size,
                                         handler.max_batch_bytes, options.max_image_pixels,
                                         options.follow_symlinks, range_size),
                SKIPPED, INPUTS))
    written = (read[portable.MAIN]
               | "Annotate" >> RunInference(KeyedModelHandler(handler).with_no_batching())
               | "WriteFiles" >> portable.ParDoWithOutputs(
                   WriteAnswers(options.output_dir, metadata, crop_writer, progress_seconds),
                   SKIPPED))
    skips = ((read[SKIPPED], written[SKIPPED]) | "AllSkips" >> beam.Flatten()
             | "CountSkips" >> beam.Map(parquet_sink.count_skip))
    num_inputs = (read[INPUTS] | "KeyInputs" >> beam.Map(_tagged, "inputs")
                  | "SumInputs" >> beam.CombinePerKey(sum))
    entries = ((written[portable.MAIN] | "TagFiles" >> beam.Map(_tagged, "file"),
                skips | "TagSkips" >> beam.Map(_tagged, "skip"), num_inputs)
               | "AllEntries" >> beam.Flatten())
    # Last: on the DaskRunner only what the last transform depends on is computed.
    return (entries | "ReportEntries" >> portable.Gather()
            | "Finalize" >> beam.Map(_finalize, options.output_dir, options.faces_dir,
                                     metadata))


def _finalize(entries, output_dir, faces_dir, metadata):
    after = None
    if faces_dir:
        def after(report):
            face_crops.write_labels(faces_dir, output_dir, report)
    return parquet_sink.finalize(entries, output_dir=output_dir, metadata=metadata, after=after)


def _parser():
    ap = argparse.ArgumentParser(
        prog="python -m pipeline.annotate", description=__doc__.split("\n")[0],
        allow_abbrev=False,  # an unknown (Beam) flag must never be taken for one of ours
        epilog="Any other flag is a Beam pipeline option (e.g. --runner, "
               "--dask_client_address, --direct_num_workers).")
    ap.add_argument("--model", required=True,
                    help="an exported SavedModel (version or base directory), a trainer job "
                         "dir, a .tflite file, or grpc://HOST:PORT / http://HOST:PORT")
    ap.add_argument("--input", required=True,
                    help="a directory, a glob, or a .tar/.tar.gz/.tgz/.zip archive (any Beam "
                         "filesystem)")
    ap.add_argument("--output_dir", required=True, help="the annotations directory to write")
    ap.add_argument("--faces_dir",
                    help="also write every face found as an aligned JPEG crop here, with a "
                         "labels.csv template for pipeline.build_records --labels_csv")
    ap.add_argument("--crops", action="store_true",
                    help="the inputs are aligned face crops (serving_default), not photos")
    input_flags.add_input_flags(ap, "rows")
    ap.add_argument("--batch_size", type=arg_types.positive(int, "a photo count"),
                    default=inference_handler.DEFAULT_MAX_BATCH_SIZE,
                    help="photos per model call (default %(default)s)")
    ap.add_argument("--photos_per_file", type=arg_types.positive(int, "a photo count"),
                    default=parquet_sink.DEFAULT_PHOTOS_PER_FILE,
                    help="at most this many photos per Parquet file (default %(default)s)")
    ap.add_argument("--min_shards", type=arg_types.positive(int, "a file count"),
                    default=writer.DEFAULT_MIN_SHARDS,
                    help="at least this many Parquet files when the listing has that many "
                         "inputs, so that a small folder is spread over that many workers "
                         "(the plain files of the listing are cut into ranges of "
                         "min(--photos_per_file, inputs // --min_shards)); as the records "
                         "job's --min_shards (default %(default)s)")
    console.add_progress_flag(ap, "the photos it wrote")
    console.add_verbose_flag(ap)
    return ap


_error = functools.partial(console.command_error, "annotate")


def load_model(options, in_process=True):
    """The model's `ModelInfo` and the crop template. In process (the DirectRunner's
    default), the analyzer is loaded here, once: a bad --model is a clear error before the
    job starts, and the runner's workers reuse it. Otherwise (workers in other processes,
    which load it themselves) an exported SavedModel's info is read from its files without
    building the model (`inference_handler.saved_model_info`); other models are loaded."""
    info = None if in_process else inference_handler.saved_model_info(options.model)
    if info is None:
        info = inference_handler.load(options.model, options.max_image_pixels).info
    wanted = options.handler().signature
    if info.signatures and wanted not in info.signatures:
        raise ValueError(f"--model {options.model!r} has no {wanted} signature "
                         f"(it has {', '.join(info.signatures)})"
                         + ("" if options.crops else "; --crops takes aligned face crops"))
    template = None
    if options.faces_dir:
        from faces import template as template_lib

        alignment = None
        if info.backend == "saved_model":
            from export import export_model
            alignment = export_model.read_face_alignment(info.source)
        template = (alignment or {}).get("template") or template_lib.load().points.tolist()
    return info, template


def print_summary(report, seconds, out=sys.stdout):
    counts = report["counts"]
    print(f"inputs {counts['inputs']}  annotated {counts['annotated']}  skipped "
          f"{counts['skipped']}  faces {counts['faces']}", file=out)
    for faces, n in counts["faces_per_photo"].items():
        print(f"  {n:>8} photo(s) with {faces} face(s)", file=out)
    for reason, n in counts["skipped_by_reason"].items():
        print(f"  skipped {reason:<22} {n}", file=out)
    print(f"{seconds:.1f} s, {counts['inputs'] / max(seconds, 1e-9):.1f} inputs/s end to end",
          file=out)


def _with_throughput(directory, seconds, runner):
    report = parquet_sink.read_report(directory)
    counts = report["counts"]
    report["throughput"] = {"seconds": round(seconds, 3), "runner": runner,
                            "photos_per_second": round(counts["annotated"] / seconds, 3),
                            "faces_per_second": round(counts["faces"] / seconds, 3)}
    parquet_sink.write_report(directory, report)
    return report


def main(argv=None):
    args, beam_args = _parser().parse_known_args(argv)
    if args.archive_spread_mb < 0 or args.progress_seconds < 0:
        return _error("--archive_spread_mb and --progress_seconds must be >= 0")
    if args.archive_spread_mb != input_flags.DEFAULT_ARCHIVE_SPREAD_MB:
        print("annotate: --archive_spread_mb has no effect here: an archive's members are "
              "answered by the worker that reads it", file=sys.stderr)
    if args.crops and args.faces_dir:
        return _error("--faces_dir writes the faces found in photos; with --crops the inputs "
                      "already are face crops")
    for flag in ("output_dir", "faces_dir"):
        value = getattr(args, flag)
        if value is not None and not sources.is_valid_name(value):
            return _error(f"--{flag} {sources.printable_name(value)!r} is not valid UTF-8")
    if args.faces_dir and args.faces_dir.rstrip("/") == args.output_dir.rstrip("/"):
        return _error("--faces_dir and --output_dir must be different directories")
    try:
        inputs = sources.list_inputs(args.input, args.follow_symlinks)
    except sources.InputError as e:
        return _error(str(e))
    options = AnnotateOptions(
        output_dir=args.output_dir.rstrip("/"), model=args.model, crops=args.crops,
        faces_dir=args.faces_dir.rstrip("/") if args.faces_dir else None,
        max_image_pixels=args.max_image_pixels, follow_symlinks=args.follow_symlinks,
        max_batch_size=args.batch_size, photos_per_file=args.photos_per_file,
        min_shards=args.min_shards)
    try:
        beam_options = runner_setup.pipeline_options(beam_args, inputs)
    except runner_setup.RunnerUnavailable as e:
        return _error(str(e))
    from agegender.errors import AnalyzerError
    try:
        info, template = load_model(options, runner_setup.runs_in_process(beam_options))
    except (AnalyzerError, ValueError) as e:
        return _error(str(e))
    runner_setup.quiet_runner(beam_options)

    start = time.perf_counter()
    try:
        with contextlib.ExitStack() as stack:
            output = stack.enter_context(publish.Publication(
                options.output_dir, parquet_sink.owns, parquet_sink.METADATA_FILES,
                kind="an annotations directory"))
            faces = None
            if options.faces_dir:
                faces = stack.enter_context(publish.Publication(
                    options.faces_dir, face_crops.owns, face_crops.METADATA_FILES,
                    kind="a faces directory", flag="--faces_dir"))
            staged = dataclasses.replace(options, output_dir=output.staging,
                                         faces_dir=faces.staging if faces else None)
            p = beam.Pipeline(options=beam_options)
            try:
                try:
                    with p:
                        build_pipeline(p, inputs, staged, info.to_dict(), template=template,
                                       report_extra={"input": args.input},
                                       progress_seconds=args.progress_seconds)
                        del inputs  # the workers read the listing from its file
                finally:
                    runner_setup.disconnect(p)
            except BaseException:
                print(f"annotate: the run failed; {options.output_dir} is unchanged",
                      file=sys.stderr)
                raise
            seconds = time.perf_counter() - start
            runner = beam_options.view_as(beam.options.pipeline_options.StandardOptions).runner
            report = _with_throughput(output.staging, seconds, str(runner).rsplit(".", 1)[-1])
            if faces:
                faces.publish()
            output.publish()
    except (publish.OutputDirBusy, publish.OutputDirError) as e:
        return _error(str(e))
    print_summary(report, seconds)
    print(f"annotations in {options.output_dir}"
          + (f", face crops in {options.faces_dir}" if options.faces_dir else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
