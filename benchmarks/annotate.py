"""Benchmark of the annotation job (`pipeline.annotate`) against a plain loop, in one run.

    .venv/bin/python -m benchmarks.annotate --model=MODEL [--data=DIR] [--limit=1000] \
        [--batch_size=16] [--runners=direct,dask] [--dask_workers=2] [--repeat=1] \
        [--crops] [--keep_models] [--pad_mb=0] [--rss_repeat=10] [--rss_limit=N] \
        [--rss_photos=N,N,...] [--rss_data_limit_mb=6144] [--rss_listing] [job flags]

1. Throughput, the same photos (the first --limit files of --data, UTKFace by default:
   each a photo of one face) and the same batch size for every contestant:
   - loop: a plain single-process Python loop: read each file, and for every --batch_size
     photos one `FaceAnalyzer.analyze_batch` call (the SavedModel's predict_photo
     signature and the reading of its answer, what the job's handler calls); no Parquet.
   - direct: `pipeline.annotate` on the DirectRunner with its defaults (one worker thread
     per core, in this process, which has imported TensorFlow and loaded nothing else
     before the clock starts); end to end: listing, Beam, Parquet files, report.json.
   - dask: the same on a local Dask cluster this benchmark starts first (--dask_workers
     processes of one thread each on 127.0.0.1, having imported the job's modules and
     TensorFlow, as `dask worker --preload pipeline.annotate` would; start-up not
     counted; the model is loaded in the job's first tasks, counted).
   Every round is a first run for every contestant (a new cluster; the direct job's
   process drops the model it loaded before). --keep_models: one Dask cluster for all
   rounds and every contestant keeps its loaded model, so round 1 is a first run and the
   next ones are runs on workers that have answered before (long-running `dask worker`s).
   Prints photos/s and the ratios direct / loop and dask / direct, and checks that the runners
   wrote the same Parquet bytes and report. --repeat=N: N rounds, each running every
   contestant once in turn (a load that changes hits each round's contestants alike).
   --crops: the photos are aligned face crops (UTKFace's are): every contestant answers them
   with serving_default (loop: `FaceAnalyzer.estimate_crops`; the job: --crops), no detection.
   --pad_mb=N: every contestant reads copies of the photos padded with zeros to N MB (a
   JPEG decoder stops at its end marker): large files, whose bytes show in a Dask worker's
   peak RSS if a step's output holds a partition's photos. Other flags go to both jobs
   (e.g. --min_shards).
2. Memory: the job (with --crops if given) on the DirectRunner in a child process under
   RLIMIT_DATA --rss_data_limit_mb, its peak RSS (the in-process runner's only worker
   process) and CPU time. --rss_repeat > 0: the --limit photos listed that many times
   (a directory of links, read with --follow_symlinks; --rss_limit caps the photo count).
   --rss_photos=N,N,...: instead one run per count, each of all the photos of --data
   (not --limit) listed over and over up to N inputs, e.g. 10x the shared UTKFace subset
   is --rss_photos=189700. With dask among the runners, each Dask worker's peak RSS after
   the dask run. --rss_listing: with each memory run, the listing's share (no photo read):
   peak RSS of a child that lists the inputs, and of one that also carries the units of
   work through a DirectRunner Create -> Reshuffle, as the Create's values or as the job's
   listing-file references (`pipeline.photo_batches.write_units`).

The machine may be shared: quote the ratios, which are measured within one run.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import glob
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from agegender import console

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "utkface",
                            "UTKFace")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASK_PRELOAD = "pipeline.annotate"


_KEPT = {}  # model -> the loop's FaceAnalyzer, with --keep_models


def baseline_loop(model, paths, batch_size, crops=False, keep_model=False):
    """One process, one batch of photos after another -> (photos answered, faces)."""
    from agegender import FaceAnalyzer

    analyzer = _KEPT.get(model) if keep_model else None
    if analyzer is None:
        analyzer = FaceAnalyzer.load(model)
        if keep_model:
            _KEPT[model] = analyzer
    photos = faces = 0
    for i in range(0, len(paths), batch_size):
        batch = []
        for path in paths[i:i + batch_size]:
            with open(path, "rb") as f:
                batch.append(f.read())
        if crops:
            answers = [[face] for face in analyzer.estimate_crops(batch)]
        else:
            answers = analyzer.analyze_batch(batch)
        for found in answers:
            photos += 1
            faces += len(found)
    return photos, faces


def _link_dir(directory, paths, count=None, first=0):
    """A directory of `count` (default: one per path) symbolic links to `paths`, taken in
    turn over and over, the r-th time named `<r:03d>_<name>` -> the directory. first > 0:
    the directory already holds the first `first` links (made by this function with the
    same paths); only the others are added."""
    if not paths:
        raise ValueError("no paths to link")
    count = len(paths) if count is None else count
    if count < 1 or not 0 <= first <= count:
        raise ValueError(f"a link count must be >= 1 and >= first ({first}), not {count}")
    os.makedirs(directory, exist_ok=first > 0)
    for i in range(first, count):
        r, p = divmod(i, len(paths))
        p = paths[p]
        os.symlink(os.path.abspath(p), os.path.join(directory, f"{r:03d}_{os.path.basename(p)}"))
    return directory


def _padded_dir(directory, paths, size):
    """Copies of `paths` in `directory`, each padded with zeros to `size` bytes (a photo
    larger than that is copied as it is) -> the copies' paths, in the same order."""
    os.makedirs(directory)
    out = []
    for i, path in enumerate(paths):
        with open(path, "rb") as f:
            data = f.read()
        copy = os.path.join(directory, f"{i:06d}_{os.path.basename(path)}")
        with open(copy, "wb") as f:
            f.write(data + bytes(max(0, size - len(data))))
        out.append(copy)
    return out


def _counts(text):
    """'10000,189700' -> [10000, 189700] (positive, ascending, no duplicates)."""
    try:
        counts = [int(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a list of photo counts: {text!r}") from None
    if not counts or min(counts) < 1 or counts != sorted(set(counts)):
        raise argparse.ArgumentTypeError(
            f"photo counts must be positive and ascending, not {text!r}")
    return counts


def _outputs(out_dir):
    from pipeline import parquet_sink

    data = os.path.join(out_dir, parquet_sink.DATASET_DIR)
    files = {n: open(os.path.join(data, n), "rb").read() for n in sorted(os.listdir(data))}
    report = parquet_sink.read_report(out_dir)
    report.pop("throughput")
    return files, report


def _job_argv(model, data, out_dir, batch_size, crops):
    return [f"--model={model}", f"--input={data}", f"--output_dir={out_dir}",
            f"--batch_size={batch_size}", "--follow_symlinks", *(["--crops"] if crops else [])]


def run_job(model, data, out_dir, batch_size, beam_args, crops=False, keep_model=True):
    """keep_model=False: the model this process loaded for an earlier job is dropped first
    (the job loads it again, as a new command would)."""
    from pipeline import annotate, inference_handler

    if not keep_model:
        inference_handler._LOADED.clear()  # the process-wide cache of loaded models
    start = time.perf_counter()
    rc = annotate.main([*_job_argv(model, data, out_dir, batch_size, crops), *beam_args])
    return rc, time.perf_counter() - start


def start_dask_cluster(workers):
    from distributed import LocalCluster

    start = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                           preload=[DASK_PRELOAD])
    return cluster, time.perf_counter() - start


def _own_cpu_seconds():
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    return own.ru_utime + own.ru_stime


def _workers_cpu_seconds(cluster):
    """CPU seconds so far of all worker processes of a running cluster."""
    from distributed import Client

    def cpu():  # defined here: sent by value, whatever the workers import
        import resource
        own = resource.getrusage(resource.RUSAGE_SELF)
        return own.ru_utime + own.ru_stime

    with Client(cluster) as client:
        return sum(client.run(cpu).values())


def _worker_peak_rss(cluster):
    """Peak RSS (MB) of each worker process of a running cluster: its own address space's
    high-water mark (VmHWM). Not `ru_maxrss`, which Linux carries over an exec: a worker
    started from this process (TensorFlow imported, ~1.1 GB) would report this process's
    peak while its own stays under it."""
    from distributed import Client

    def peak():  # defined here: sent by value, whatever the workers import
        try:
            with open("/proc/self/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            pass
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with Client(cluster) as client:
        return sorted(client.run(peak).values())


def _data_limit(limit_bytes):
    def limit():
        import resource
        resource.setrlimit(resource.RLIMIT_DATA, (limit_bytes, limit_bytes))
    return limit


# The job as `python -m pipeline.annotate` would run it, then this process's own peak RSS
# (VmHWM, kB) written to the file named by the environment's BENCH_PEAK_FILE.
_PEAK_CHILD = """
import os, runpy, sys
try:
    sys.argv = ["pipeline.annotate", *sys.argv[1:]]
    runpy.run_module("pipeline.annotate", run_name="__main__", alter_sys=True)
finally:
    with open("/proc/self/status") as status, open(os.environ["BENCH_PEAK_FILE"], "w") as f:
        f.write(next(line.split()[1] for line in status if line.startswith("VmHWM:")))
"""


def child_peak_rss(model, data, out_dir, batch_size, crops=False, data_limit_mb=0):
    """The job in a child process (DirectRunner defaults; RLIMIT_DATA of data_limit_mb if
    > 0) -> (rc, seconds, peak RSS MB, CPU seconds). The peak is the child's own (VmHWM):
    the `ru_maxrss` `wait4` returns keeps what the child's address space held before its
    exec, a copy of this process's (Linux), so it would never be under this process's."""
    argv = [sys.executable, "-c", _PEAK_CHILD, *_job_argv(model, data, out_dir, batch_size, crops)]
    start = time.perf_counter()
    with tempfile.NamedTemporaryFile("r") as peak:
        proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL,
                                env={**os.environ, "PYTHONPATH": REPO,
                                     "BENCH_PEAK_FILE": peak.name},
                                preexec_fn=_data_limit(data_limit_mb << 20) if data_limit_mb > 0
                                else None)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        own = peak.read().strip()
    rss = int(own) / 1024 if own else usage.ru_maxrss / 1024
    return proc.returncode, time.perf_counter() - start, rss, usage.ru_utime + usage.ru_stime


# The listing's share of the memory run (--rss_listing): a child process lists --input, then
# runs a DirectRunner pipeline carrying the units of work ("create": the units themselves
# as a Create's values; "file": `photo_batches.write_units`' references, as the job does)
# through a Reshuffle and nothing else; prints its peak RSS (MB) after each step.
_LISTING_CHILD = """
import resource, sys, tempfile
import apache_beam as beam
from agegender import image_sources
from pipeline import parquet_sink, photo_batches, runner_setup

def peak():  # own high-water mark (ru_maxrss keeps the parent's, from before the exec)
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) // 1024

inputs = image_sources.list_inputs(sys.argv[1], True)
listed = peak()
how = sys.argv[2]
with tempfile.TemporaryDirectory() as tmp:
    units = (photo_batches.units(inputs, parquet_sink.DEFAULT_PHOTOS_PER_FILE) if how == "create"
             else photo_batches.write_units(inputs, parquet_sink.DEFAULT_PHOTOS_PER_FILE, tmp))
    options = runner_setup.pipeline_options([], inputs)
    del inputs
    with beam.Pipeline(options=options) as p:
        p | beam.Create(units) | beam.Reshuffle() | beam.Map(len)
    print(listed, peak())
"""


def listing_peak_rss(data, how):
    """(peak RSS MB after `list_inputs`, after the pipeline) of _LISTING_CHILD."""
    out = subprocess.run([sys.executable, "-c", _LISTING_CHILD, data, how], cwd=REPO,
                         env={**os.environ, "PYTHONPATH": REPO}, capture_output=True,
                         text=True, check=True).stdout.split()
    return int(out[-2]), int(out[-1])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", required=True, help="an exported SavedModel (or base dir)")
    ap.add_argument("--data", default=DEFAULT_DATA, help="a directory of photos")
    ap.add_argument("--limit", type=int, default=1000, help="only the first N photos (0: all)")
    ap.add_argument("--batch_size", type=int, default=16)
    ap.add_argument("--runners", default="direct,dask", help="of direct, dask")
    ap.add_argument("--dask_workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="rounds of every contestant")
    ap.add_argument("--rss_repeat", type=int, default=10,
                    help="the memory run lists the photos this many times (0: no memory run)")
    ap.add_argument("--rss_limit", type=int, default=0,
                    help="at most this many photos in the memory run (0: no cap)")
    ap.add_argument("--rss_photos", type=_counts,
                    help="memory runs of these input counts (ascending, comma-separated), "
                         "all photos of --data listed over and over; overrides --rss_repeat")
    ap.add_argument("--rss_data_limit_mb", type=int, default=6144,
                    help="RLIMIT_DATA of the memory run's child process (0: none)")
    ap.add_argument("--rss_listing", action="store_true",
                    help="with each memory run, the listing's share: peak RSS of a child "
                         "that only lists the inputs and carries the units of work through "
                         "a DirectRunner Create -> Reshuffle, as values and as the job's "
                         "listing-file references")
    ap.add_argument("--crops", action="store_true",
                    help="the photos are aligned face crops: serving_default, no detection")
    ap.add_argument("--pad_mb", type=float, default=0,
                    help="read copies of the photos padded with zeros to this many MB (0: "
                         "the photos themselves)")
    ap.add_argument("--keep_models", action="store_true",
                    help="one Dask cluster for all rounds; every contestant keeps its model")
    console.add_verbose_flag(ap)
    args, beam_args = ap.parse_known_args(argv)
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    if set(runners) - {"direct", "dask"}:
        ap.error("--runners: choose among direct, dask")
    if args.repeat < 0 or args.rss_repeat < 0 or args.rss_limit < 0 \
            or args.rss_data_limit_mb < 0 or args.pad_mb < 0:
        ap.error("--repeat, --rss_repeat, --rss_limit, --rss_data_limit_mb and --pad_mb must "
                 "be >= 0")

    every_path = sorted(p for p in glob.glob(os.path.join(args.data, "*")) if os.path.isfile(p))
    paths = every_path[:args.limit] if args.limit else every_path
    if not paths:
        print(f"no photos in {args.data}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="bench_annotate_")
    cluster = None  # with --keep_models, the Dask cluster of every round
    try:
        if args.pad_mb:
            paths = _padded_dir(os.path.join(tmp, "input"), paths, int(args.pad_mb * (1 << 20)))
            data = os.path.join(tmp, "input")
        else:
            data = _link_dir(os.path.join(tmp, "input"), paths)
        n = len(paths)
        print(f"{n} photos from {args.data}"
              f"{f', padded to {args.pad_mb:g} MB' if args.pad_mb else ''}; "
              f"model {args.model}; batch size {args.batch_size}; "
              f"signature {'serving_default (--crops)' if args.crops else 'predict_photo'}; "
              f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}")
        import apache_beam  # noqa: F401  (imports are paid once, by no contestant)
        import tensorflow  # noqa: F401

        rates, cpus, outputs = {}, {}, {}
        for round_ in range(args.repeat):
            for name in ["loop", *runners]:
                out_dir = os.path.join(tmp, f"out-{name}")
                shutil.rmtree(out_dir, ignore_errors=True)
                cpu = _own_cpu_seconds()
                if name == "loop":
                    start = time.perf_counter()
                    photos, faces = baseline_loop(args.model, paths, args.batch_size, args.crops,
                                                  args.keep_models)
                    seconds = time.perf_counter() - start
                    what = (f"plain loop, {'estimate_crops' if args.crops else 'analyze_batch'} "
                            f"({photos} photos, {faces} faces)")
                elif name == "direct":
                    rc, seconds = run_job(args.model, data, out_dir, args.batch_size, beam_args,
                                          args.crops, keep_model=args.keep_models)
                    if rc:
                        return rc
                    what = "pipeline.annotate, DirectRunner (end to end)"
                else:
                    if cluster is None:
                        cluster, startup = start_dask_cluster(args.dask_workers)
                        print(f"  (dask: {args.dask_workers} worker processes started with "
                              f"{DASK_PRELOAD} in {startup:.1f} s, not counted)")
                    rc = 1
                    try:
                        workers_cpu = _workers_cpu_seconds(cluster)
                        rc, seconds = run_job(args.model, data, out_dir, args.batch_size, [
                            *beam_args, "--runner=DaskRunner",
                            f"--dask_client_address={cluster.scheduler_address}"], args.crops,
                            keep_model=args.keep_models)
                        cpu -= _workers_cpu_seconds(cluster) - workers_cpu
                        rss = _worker_peak_rss(cluster)
                    finally:
                        if not args.keep_models or rc or round_ == args.repeat - 1:
                            cluster.close()
                            cluster = None
                    if rc:
                        return rc
                    what = (f"pipeline.annotate, DaskRunner (end to end; worker peak RSS "
                            f"{', '.join(f'{r:.0f}' for r in rss)} MB)")
                # this process, and with dask the workers' CPU during the job
                cpu = _own_cpu_seconds() - cpu
                if name != "loop":
                    outputs.setdefault(name, _outputs(out_dir))
                rates.setdefault(name, []).append(n / seconds)
                cpus.setdefault(name, []).append(cpu / n * 1000)
                print(f"round {round_ + 1}: {what}: {seconds:.1f} s = {n / seconds:.1f} "
                      f"photos/s, {cpu / n * 1000:.1f} CPU-ms/photo (this process"
                      f"{' + Dask workers' if name == 'dask' else ''}; load average "
                      f"{os.getloadavg()[0]:.2f})")
        for name in rates:
            print(f"{name}: photos/s {', '.join(f'{r:.1f}' for r in rates[name])}; "
                  f"CPU-ms/photo {', '.join(f'{c:.1f}' for c in cpus[name])}")
        for a, b in (("direct", "loop"), ("dask", "direct")):
            if a in rates and b in rates:
                ratios = [x / y for x, y in zip(rates[a], rates[b])]
                print(f"ratio {a} / {b} = {', '.join(f'{r:.2f}' for r in ratios)}x; median "
                      f"{statistics.median(ratios):.2f}x, range {min(ratios):.2f}-"
                      f"{max(ratios):.2f}x")
        if len(outputs) > 1:
            same = outputs["dask"] == outputs["direct"]
            print(f"same Parquet bytes and report on direct and dask: {'yes' if same else 'NO'}")
            if not same:
                return 1
        if args.rss_photos:
            memory_runs = [(every_path, count, f"{count / len(every_path):.2f}x the "
                            f"{len(every_path)} photos of --data") for count in args.rss_photos]
        elif args.rss_repeat > 0:
            count = n * args.rss_repeat
            capped = args.rss_limit and args.rss_limit < count
            count = min(count, args.rss_limit) if capped else count
            memory_runs = [(paths, count, f"{args.rss_repeat}x {n} listed"
                            f"{', capped' if capped else ''}")]
        else:
            memory_runs = []
        linked = 0  # ascending counts of the same photos: each run's links extend the last's
        for source, count, what in memory_runs:
            big = _link_dir(os.path.join(tmp, "repeated"), source, count, linked)
            linked = count
            rc, seconds, rss, cpu = child_peak_rss(
                args.model, big, os.path.join(tmp, "out-rss"), args.batch_size, args.crops,
                args.rss_data_limit_mb)
            limit = (f"RLIMIT_DATA {args.rss_data_limit_mb} MB" if args.rss_data_limit_mb
                     else "no data limit")
            if rc:
                print(f"memory: {count} photos: the job failed (exit {rc}, {limit})",
                      file=sys.stderr)
                return rc
            print(f"memory: {count} photos ({what}), DirectRunner in a child process "
                  f"({limit}): peak RSS {rss:.0f} MB, {seconds:.1f} s = {count / seconds:.1f} "
                  f"photos/s, {cpu / count * 1000:.2f} CPU-ms/photo (load average "
                  f"{os.getloadavg()[0]:.2f})", flush=True)
            shutil.rmtree(os.path.join(tmp, "out-rss"), ignore_errors=True)
            if args.rss_listing:
                listed, as_values = listing_peak_rss(big, "create")
                _, as_file = listing_peak_rss(big, "file")
                print(f"listing: {count} inputs: peak RSS {listed} MB listed (list_inputs); "
                      f"{as_values} MB with the units as a Create's values, {as_file} MB as "
                      f"listing-file references (Create -> Reshuffle, DirectRunner)", flush=True)
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        if cluster is not None:
            cluster.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
