"""Command line and graph of the job: face images -> sharded, leak-free TFRecords.

    python -m pipeline.build_records --input=<dir | glob | archive> --output_dir=DIR \
        [--image_size=160] [--age_deviation=5] [--split_fractions=0.8,0.1,0.1] [--labels_csv=CSV] \
        [--keep_duplicates] [--max_image_pixels=50000000] [--follow_symlinks] \
        [--archive_spread_mb=128] [--align_faces [--face_select=largest|score]] \
        [--progress_seconds=5] [-v] \
        [any Beam pipeline option, e.g. --runner=DataflowRunner ...]

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
import json
import logging
import os
import sys
import time

import apache_beam as beam
from apache_beam.options.pipeline_options import (
    DirectOptions, PipelineOptions, StandardOptions, WorkerOptions)

from agegender import age_histogram, arg_types, console, image_header, names, schema, splits
from agegender import image_sources as sources
from faces import photo as face_photo
from pipeline import publish, transforms, writer
from pipeline import portable

DEFAULT_IMAGE_SIZE = 160  # the trainer's default input is 128 px: room for crop augmentation
DEFAULT_AGE_DEVIATION = age_histogram.DEFAULT_DEVIATION
DEFAULT_SPLIT = splits.DEFAULT_FRACTIONS
DEFAULT_JPEG_QUALITY = 95
# Member bytes of all archives together that are handed to other workers undecoded (and so
# held in memory between steps, several copies); later members are converted where they are
# read. The shared UTKFace set (93 MB) fits whole, so it is still converted on every core.
DEFAULT_ARCHIVE_SPREAD_MB = 128


@dataclasses.dataclass(frozen=True)
class BuildOptions:
    """What the records depend on (all of it is stored in report.json's metadata)."""
    output_dir: str
    image_size: int = DEFAULT_IMAGE_SIZE
    age_deviation: float = DEFAULT_AGE_DEVIATION
    split: tuple = DEFAULT_SPLIT  # fractions for schema.SPLITS, in that order
    keep_duplicates: bool = False
    min_age: int = names.DEFAULT_MIN_AGE
    max_age: int = names.DEFAULT_MAX_AGE
    jpeg_quality: int = DEFAULT_JPEG_QUALITY
    target_shard_mb: float = writer.DEFAULT_TARGET_SHARD_MB
    min_shards: int = writer.DEFAULT_MIN_SHARDS
    max_image_pixels: int = image_header.DEFAULT_MAX_PIXELS
    follow_symlinks: bool = False
    align_faces: bool = False  # detect + align each input (faces.photo); no face: a skip
    face_select: str = face_photo.LARGEST  # which face of a photo: largest box or score

    @property
    def fractions(self):
        return tuple(zip(schema.SPLITS, self.split))

    def metadata(self, extra=None):
        # Only aligned records carry the face_alignment entry: unaligned ones keep the
        # report of the records written before the option existed.
        aligned = {}
        if self.align_faces:
            aligned = {schema.META_FACE_ALIGNMENT: face_photo.describe(select=self.face_select)}
        return {
            **aligned,
            schema.META_AGE_DEVIATION: self.age_deviation,
            schema.META_IMAGE_SIZE: self.image_size,
            "splits": dict(self.fractions),
            "options": {"keep_duplicates": self.keep_duplicates, "min_age": self.min_age,
                        "max_age": self.max_age, "jpeg_quality": self.jpeg_quality,
                        "target_shard_mb": self.target_shard_mb, "min_shards": self.min_shards,
                        "max_image_pixels": self.max_image_pixels,
                        "follow_symlinks": self.follow_symlinks, **(extra or {})},
        }


# Per split, the least number of buckets in the shard plan's join (see _with_bucket).
MIN_PLAN_BUCKETS = 16


# Faces travel as plain tuples (see transforms.Face): [0] is the sha256, [-1] the example.
def _with_split(face, fractions):
    return splits.split_of(face[0], fractions), face


def _split_size(keyed):
    split, face = keyed
    return split, (1, len(face[-1]))


def _sum_pairs(pairs):
    count = nbytes = 0
    for c, b in pairs:
        count, nbytes = count + c, nbytes + b
    return count, nbytes


def _split_plan(split_size, target_shard_bytes, min_shards):
    split, (count, nbytes) = split_size
    return split, writer.num_shards(count, nbytes, target_shard_bytes, min_shards)


def _with_shard(keyed, plan):
    split, face = keyed
    num_shards = plan[split]
    return (split, splits.shard_of(face[0], num_shards), num_shards), face


# Without side inputs (see build_pipeline), a split's shard count meets its faces in a
# GroupByKey: the faces go to buckets by their hash, the count to every bucket of the split;
# there each face gets its shard. The buckets only bound the memory of that step (a bucket's
# faces are held at once); they never change a record.
def _with_bucket(keyed, num_buckets):
    split, face = keyed
    return (split, splits.bucket_of(face[0], num_buckets)), (False, face)


def _to_buckets(split_plan, num_buckets):
    split, num_shards = split_plan
    for bucket in range(num_buckets):
        yield (split, bucket), (True, num_shards)


def _with_shard_in_bucket(group):
    (split, _), values = group
    values = list(values)
    num_shards = next(value for is_plan, value in values if is_plan)
    for is_plan, face in values:
        if not is_plan:
            yield (split, splits.shard_of(face[0], num_shards), num_shards), face


def num_buckets(inputs, target_shard_bytes):
    """Buckets per split of the shard plan's join: about one shard's worth of input each."""
    listed = sum(f.size or 0 for f in inputs)
    return max(MIN_PLAN_BUCKETS, -(-listed // target_shard_bytes))


def _one(_):
    return 1


def _tagged(value, tag):
    return tag, value


def _finalize(entries, output_dir, metadata):
    shards = [value for tag, value in entries if tag == "shard"]
    skips = [value for tag, value in entries if tag == "skip"]
    num_inputs = sum(value for tag, value in entries if tag == "inputs")
    return writer.finalize(None, shards, skips, num_inputs, output_dir=output_dir,
                           metadata=metadata)


def build_pipeline(p, inputs, options, labels_csv_rows=None, report_extra=None,
                   archive_spread_bytes=DEFAULT_ARCHIVE_SPREAD_MB << 20,
                   progress_seconds=console.PROGRESS_SECONDS, side_inputs=True):
    """Adds the whole job to pipeline `p`; returns the PCollection holding the report dict.

    inputs: `sources.InputFile`s (from `sources.list_inputs`); options: `BuildOptions`;
    labels_csv_rows: `names.read_labels_csv(...)` output, or None to label from file names;
    archive_spread_bytes: archive member bytes, over all archives, spread to other workers
    undecoded (see transforms.ReadArchive; it bounds memory and never changes a record);
    progress_seconds: each worker prints images processed and records written so far this
    often (`agegender.console.Progress`; 0: never).
    side_inputs: False brings the shard plan to the faces through a GroupByKey instead of a
    side input, for a runner that computes a side input again in every task reading it
    (the DaskRunner, see `pipeline.portable`); True elsewhere, where it is cheaper (one
    shuffle of the records fewer: ~8% less CPU on the DirectRunner). Same records either way.

    Only constructs every runner runs the same way (`pipeline.portable`): no tagged outputs
    but through `portable.ParDoWithOutputs`, no finish_bundle outputs, one side input.
    """
    files = [f for f in inputs if not f.is_archive]
    archives = [f for f in inputs if f.is_archive]
    make_record = transforms.MakeRecord(
        image_size=options.image_size, age_deviation=options.age_deviation,
        jpeg_quality=options.jpeg_quality, labels_csv_rows=labels_csv_rows,
        min_age=options.min_age, max_age=options.max_age, max_pixels=options.max_image_pixels,
        align_faces=options.face_select if options.align_faces else None,
        progress_seconds=progress_seconds)
    data, source_skips, archive_faces = [], [], []
    # Inputs are counted where they are known, before any shuffle: the listed files, and
    # archive members as the archive is read. finalize checks inputs = written + skipped.
    input_counts = [p | "CountFiles" >> beam.Create([len(files)])]
    if files:
        # Create puts everything in one bundle; the Reshuffle lets the runner spread the
        # groups of files over all workers (each is read and converted where it lands).
        read = (p | "ListFiles" >> beam.Create(transforms.group_files(files))
                | "SpreadFiles" >> beam.Reshuffle()
                | "ReadFiles" >> portable.ParDoWithOutputs(
                    transforms.ReadFiles(options.follow_symlinks), transforms.SKIPPED))
        data.append(read[portable.MAIN])
        source_skips.append(read[transforms.SKIPPED])
    if archives:
        # An archive is one sequential stream: read by one worker, then its members spread
        # (up to each archive's equal share of the budget; the rest is converted in place).
        read_archive = transforms.ReadArchive(
            make_record, archive_spread_bytes // len(archives), options.follow_symlinks)
        members = (p | "ListArchives" >> beam.Create(archives)
                   | "ReadArchives" >> portable.ParDoWithOutputs(
                       read_archive, transforms.SKIPPED, transforms.FACES))
        data.append(members[portable.MAIN] | "SpreadMembers" >> beam.Reshuffle())
        source_skips.append(members[transforms.SKIPPED])
        archive_faces.append(members[transforms.FACES])
        input_counts += [members[portable.MAIN] | "MembersInBatch" >> beam.Map(len),
                         members[transforms.FACES] | "OneMemberFace" >> beam.Map(_one),
                         members[transforms.SKIPPED] | "OneMemberSkip" >> beam.Map(_one)]
    batches = data | "AllInputs" >> beam.Flatten()
    source_skips = source_skips | "SourceSkips" >> beam.Flatten()

    made = batches | "MakeRecords" >> portable.ParDoWithOutputs(make_record, transforms.SKIPPED)
    faces = [made[portable.MAIN], *archive_faces] | "AllFaces" >> beam.Flatten()

    by_split = faces | "AssignSplit" >> beam.Map(_with_split, options.fractions)
    target_shard_bytes = int(options.target_shard_mb * 1024 * 1024)
    # Every split with a fraction gets a shard count (an empty split: one empty shard).
    no_faces = [(split, (0, 0)) for split, fraction in options.fractions if fraction > 0]
    plan = ((by_split | "SizeOf" >> beam.Map(_split_size),
             p | "EverySplit" >> beam.Create(no_faces))
            | "SizesAndZeros" >> beam.Flatten()
            | "SplitSizes" >> beam.CombinePerKey(_sum_pairs)
            | "PlanShards" >> beam.Map(_split_plan, target_shard_bytes, options.min_shards))
    if side_inputs:
        keyed = by_split | "AssignShard" >> beam.Map(_with_shard, beam.pvalue.AsDict(plan))
    else:
        buckets = num_buckets(inputs, target_shard_bytes)
        keyed = ((by_split | "ToBuckets" >> beam.Map(_with_bucket, buckets),
                  plan | "PlanToBuckets" >> beam.FlatMap(_to_buckets, buckets))
                 | "WithPlan" >> beam.Flatten()
                 | "JoinPlan" >> beam.GroupByKey()
                 | "AssignShard" >> beam.FlatMap(_with_shard_in_bucket))
    markers = plan | "ShardMarkers" >> beam.FlatMap(writer.shard_markers)
    deduped = ((keyed, markers) | "WithMarkers" >> beam.Flatten()
               | "GroupByShard" >> beam.GroupByKey()
               | "Dedup" >> portable.ParDoWithOutputs(
                   transforms.DedupShard(options.keep_duplicates), transforms.SKIPPED))
    written = deduped[portable.MAIN] | "WriteShards" >> beam.ParDo(
        writer.WriteShard(options.output_dir, progress_seconds))

    skips = ((source_skips, made[transforms.SKIPPED], deduped[transforms.SKIPPED])
             | "AllSkips" >> beam.Flatten()
             | "CountSkips" >> beam.Map(writer.count_skip))
    num_inputs = (input_counts | "InputCounts" >> beam.Flatten()
                  | "KeyInputs" >> beam.Map(_tagged, "inputs")
                  | "SumInputs" >> beam.CombinePerKey(sum))  # ("inputs", n): lifted where it can be
    entries = ((written | "TagShards" >> beam.Map(_tagged, "shard"),
                skips | "TagSkips" >> beam.Map(_tagged, "skip"), num_inputs)
               | "AllEntries" >> beam.Flatten())
    # Last: on the DaskRunner only what the last transform depends on is computed.
    return (entries | "ReportEntries" >> portable.Gather()
            | "Finalize" >> beam.Map(_finalize, output_dir=options.output_dir,
                                     metadata=options.metadata(report_extra)))


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
    arg_types.add_max_image_pixels(ap, image_header.DEFAULT_MAX_PIXELS)
    ap.add_argument("--follow_symlinks", action="store_true",
                    help="follow symbolic links in a local --input (to regular files and "
                         "directories only); by default they are skipped as not_a_regular_file")
    ap.add_argument("--archive_spread_mb", type=float, default=DEFAULT_ARCHIVE_SPREAD_MB,
                    help="archive member MB (all archives together) spread to other workers "
                         "before decoding; later members are converted by the worker reading "
                         "the archive. Bounds memory; never changes the records "
                         "(default %(default)s)")
    ap.add_argument("--align_faces", action="store_true",
                    help="treat inputs as photos: detect the faces, and write the chosen "
                         "face aligned on the face template (faces.photo, as predict_photo "
                         "serves) instead of the whole image; a photo without a face is "
                         "skipped as no_face. The template is recorded in report.json")
    ap.add_argument("--face_select", choices=(face_photo.LARGEST, face_photo.SCORE_SELECT),
                    default=face_photo.LARGEST,
                    help="with --align_faces: the face of a photo to write, the largest box "
                         "or the highest detection score (default %(default)s)")
    ap.add_argument("--progress_seconds", type=float, default=console.PROGRESS_SECONDS,
                    help="each worker prints the images it processed and the records it "
                         "wrote so far this often, on stderr; 0: never (default %(default)s)")
    console.add_verbose_flag(ap)
    return ap


DEFAULT_DIRECT_RUNNING_MODE = "in_memory"

# dask's configuration of the `distributed` logger, as an environment variable.
DASK_WORKER_LOG_LEVEL_VARIABLE = "DASK_LOGGING__DISTRIBUTED"

# Runners Beam knows only by their full name.
RUNNER_NAMES = {"DaskRunner": "apache_beam.runners.dask.dask_runner.DaskRunner"}


def pipeline_options(beam_args, inputs=(), cluster_threads=None):
    """Beam options from the unknown flags; local default: DirectRunner on all cores.

    inputs: the listed `sources.InputFile`s, which size the DaskRunner's partitions, with
    `cluster_threads(DaskOptions)`, the Dask cluster's worker threads (default:
    `dask_cluster_threads`, which asks the scheduler).
    """
    options = PipelineOptions(beam_args)
    given = {a.split("=", 1)[0].lstrip("-") for a in beam_args if a.startswith("--")}
    standard = options.view_as(StandardOptions)
    if "runner" not in given:
        standard.runner = "DirectRunner"
    standard.runner = RUNNER_NAMES.get(standard.runner, standard.runner)
    if "direct_running_mode" not in given:
        # Threads of this process, data handed over in memory: the TF ops (decode, resize,
        # encode) release the GIL, so the workers still use every core, and the job pays no
        # worker processes (each imports TensorFlow, and exits slowly) and no gRPC data
        # channel: ~7 s less per run and ~30% less CPU per image than multi_processing,
        # same bytes (docs/records.md). With more than one worker Beam runs the
        # parts of each stage in parallel threads, one in-memory worker each, although it
        # logs that in_memory "should" be multi_processing or multi_threading (silenced in
        # `main`). multi_threading (in-process workers behind gRPC) lost elements on the
        # full 18,970 images in two checked runs. finalize checks inputs = written + skipped.
        options.view_as(DirectOptions).direct_running_mode = DEFAULT_DIRECT_RUNNING_MODE
    if "direct_num_workers" not in given:
        options.view_as(DirectOptions).direct_num_workers = 0  # 0 = one worker per core
    if "default_sdk_harness_log_level" not in given:
        # Worker processes otherwise log every gRPC channel they open at INFO.
        options.view_as(WorkerOptions).default_sdk_harness_log_level = "WARNING"
    if is_dask(options):
        try:
            from apache_beam.runners.dask.dask_runner import DaskOptions
        except ImportError as e:
            raise RunnerUnavailable(
                f"the DaskRunner needs dask and distributed ({e}): pip install "
                "'apache-beam[dask]', or this project with its 'dask' extra") from e
        if not given & {"dask_npartitions", "dask_partition_size"}:
            dask_options = options.view_as(DaskOptions)
            threads = (cluster_threads or dask_cluster_threads)(dask_options)
            dask_options.npartitions = dask_partitions(inputs, threads)
    return options


def dask_partitions(inputs, threads):
    """The DaskRunner's partitions of each Create (--dask_npartitions) for these inputs on
    a cluster of `threads` worker threads.

    That runner never repartitions (its Reshuffle does nothing, a GroupByKey keeps the
    number of partitions, a Flatten adds them up), so this number is both the parallelism
    of the conversion and the size of every shuffle after it: a Dask "tasks" shuffle of n
    partitions is ~n^2 small tasks while n <= 32, and every Flatten before a GroupByKey adds
    partitions. So: as few as keep every thread busy, in equal waves (a multiple of
    `threads`), with at most about DASK_PARTITION_BYTES of listed input each (a partition's
    data is held in memory whole, as a list; Dask's guidance is partitions of ~100 MB).
    """
    threads = max(1, threads)
    listed = sum(f.size or 0 for f in inputs)
    waves = max(1, -(-listed // (DASK_PARTITION_BYTES * threads)))
    return waves * threads


DASK_PARTITION_BYTES = 128 << 20


def dask_cluster_threads(dask_options):
    """The worker threads of the Dask cluster `dask_options` (DaskOptions) name: asked of
    its scheduler, or, without an address or scheduler file, those of the local cluster
    the runner will start (dask's default: one per core)."""
    if starts_local_cluster(dask_options):
        from dask.system import CPU_COUNT
        return CPU_COUNT
    from distributed import Client

    where = dask_options.address or dask_options.scheduler_file
    kwargs = {"timeout": dask_options.timeout} if isinstance(dask_options.timeout, int) else {}
    try:
        with Client(address=dask_options.address, scheduler_file=dask_options.scheduler_file,
                    set_as_default=False, **kwargs) as client:
            threads = sum(client.nthreads().values())
    except (OSError, ValueError) as e:  # unreachable (TimeoutError is an OSError), bad file
        raise RunnerUnavailable(f"cannot reach the Dask scheduler at {where}: {e}") from e
    if not threads:
        raise RunnerUnavailable(f"the Dask cluster at {where} has no workers yet: start "
                                "them (dask worker ...) before the job")
    return threads


def starts_local_cluster(dask_options):
    """Whether the DaskRunner starts a cluster of its own on this machine: `dask_options`
    (DaskOptions) name no scheduler, by address or by file."""
    return not (dask_options.address or dask_options.scheduler_file)


def is_dask(options):
    """Whether Beam `options` name the DaskRunner."""
    return options.view_as(StandardOptions).runner in (
        "DaskRunner", RUNNER_NAMES["DaskRunner"])


class RunnerUnavailable(Exception):
    """The --runner named cannot run: packages not installed, or its cluster not reachable."""


def local_cluster_start_failure(error):
    """A one-line reason when `error` is the local Dask cluster failing to start (a worker
    process killed or dying while it started, a start-up timeout), else None.

    The DaskRunner starts that cluster inside `Client()`, so the failure arrives as whatever
    the pipeline run raised; it is recognised by coming from `distributed.deploy` (where
    LocalCluster starts its workers). The deepest cause names what failed.
    """
    import traceback

    frames = traceback.extract_tb(error.__traceback__)
    if not any(f"{os.sep}distributed{os.sep}deploy{os.sep}" in f.filename for f in frames):
        return None
    cause = error
    for _ in range(32):  # a chain, bounded (an exception can be its own context)
        if (cause.__cause__ or cause.__context__) is None:
            break
        cause = cause.__cause__ or cause.__context__
    reason = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return (f"the local Dask cluster did not start ({reason}): a worker process was killed "
            f"or failed while starting; run the job again, or start a cluster and pass "
            f"--dask_client_address")


class DaskStartFailed(Exception):
    """The local Dask cluster failed to start (the message says why, in one line)."""


def disconnect(p):
    """Closes the Dask client a DaskRunner run leaves open (it also stops the local cluster
    the client started when no --dask_client_address was given; a failed run's remaining
    tasks are cancelled)."""
    client = getattr(getattr(p, "result", None), "client", None)
    if client is not None:
        client.close()


class _InMemoryWorkersFilter(logging.Filter):
    """Drops the FnApiRunner's warning that in_memory with several workers "should" be
    another mode: it does run them in parallel (see pipeline_options), on purpose here."""

    def filter(self, record):
        return not str(record.msg).startswith("If direct_num_workers is not equal to 1")


_IN_MEMORY_FILTER = _InMemoryWorkersFilter()


def _quiet_in_memory_warning():
    # The FnApiRunner's module logger (adding the same filter twice is a no-op).
    logging.getLogger("apache_beam.runners.portability.fn_api_runner.fn_runner").addFilter(
        _IN_MEMORY_FILTER)


def quiet_runner(beam_options):
    """Keeps the runner's start-up and per-connection log lines off the terminal (the jobs'
    quiet default, `agegender.console`); call before running a pipeline."""
    _quiet_in_memory_warning()
    if is_dask(beam_options):
        # The client (and a local cluster's scheduler) log every connection at INFO, and
        # the worker processes of the local cluster the runner starts (no address) ~15
        # lines each at start and stop: they read their logging level from the
        # environment they inherit when they import distributed.
        logging.getLogger("distributed").setLevel(logging.WARNING)
        from apache_beam.runners.dask.dask_runner import DaskOptions
        if starts_local_cluster(beam_options.view_as(DaskOptions)):
            os.environ.setdefault(DASK_WORKER_LOG_LEVEL_VARIABLE, "warning")


def _error(message):
    print(f"build_records: error: {message}", file=sys.stderr)
    return 2


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
