"""Benchmark of the annotation job (`pipeline.annotate`) against a plain loop, in one run.

    .venv/bin/python -m benchmarks.annotate --model=MODEL [--data=DIR] [--limit=1000] \
        [--batch_size=16] [--runners=direct,dask] [--dask_workers=2] [--repeat=1] \
        [--rss_repeat=10] [--rss_limit=N]

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
   Prints photos/s and the ratios direct / loop and dask / direct, and checks that the runners
   wrote the same Parquet bytes and report.
2. Memory (--rss_repeat > 0): the job on the DirectRunner in a child process over the same
   photos listed --rss_repeat times (a directory of links, read with --follow_symlinks;
   --rss_limit caps the photo count), its peak RSS (the in-process runner's only worker
   process); with dask among the runners, each Dask worker's peak RSS after the dask run.

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
import subprocess
import sys
import tempfile
import time

from agegender import console
from benchmarks.build_records import _cpu_seconds

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "utkface",
                            "UTKFace")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DASK_PRELOAD = "pipeline.annotate"


def baseline_loop(model, paths, batch_size):
    """One process, one batch of photos after another -> (photos answered, faces)."""
    from agegender import FaceAnalyzer

    analyzer = FaceAnalyzer.load(model)
    photos = faces = 0
    for i in range(0, len(paths), batch_size):
        batch = []
        for path in paths[i:i + batch_size]:
            with open(path, "rb") as f:
                batch.append(f.read())
        for found in analyzer.analyze_batch(batch):
            photos += 1
            faces += len(found)
    return photos, faces


def _link_dir(directory, paths, repeat=1):
    """A directory of symbolic links to `paths`, `repeat` times under other names."""
    os.makedirs(directory)
    for r in range(repeat):
        for p in paths:
            os.symlink(os.path.abspath(p), os.path.join(directory, f"{r:03d}_{os.path.basename(p)}"))
    return directory


def _outputs(out_dir):
    from pipeline import parquet_sink

    data = os.path.join(out_dir, parquet_sink.DATASET_DIR)
    files = {n: open(os.path.join(data, n), "rb").read() for n in sorted(os.listdir(data))}
    report = parquet_sink.read_report(out_dir)
    report.pop("throughput")
    return files, report


def run_job(model, data, out_dir, batch_size, beam_args):
    from pipeline import annotate

    start = time.perf_counter()
    rc = annotate.main([f"--model={model}", f"--input={data}", f"--output_dir={out_dir}",
                        f"--batch_size={batch_size}", "--follow_symlinks", *beam_args])
    return rc, time.perf_counter() - start


def start_dask_cluster(workers):
    from distributed import LocalCluster

    start = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR,
                           preload=[DASK_PRELOAD])
    return cluster, time.perf_counter() - start


def _worker_peak_rss(cluster):
    """Peak RSS (MB) of each worker process of a running cluster."""
    from distributed import Client

    def peak():
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    with Client(cluster) as client:
        return sorted(client.run(peak).values())


def child_peak_rss(model, data, out_dir, batch_size):
    """The job in a child process (DirectRunner defaults) -> (rc, seconds, peak RSS MB)."""
    argv = [sys.executable, "-m", "pipeline.annotate", f"--model={model}", f"--input={data}",
            f"--output_dir={out_dir}", f"--batch_size={batch_size}", "--follow_symlinks"]
    start = time.perf_counter()
    proc = subprocess.Popen(argv, cwd=REPO, stdout=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": REPO})
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, time.perf_counter() - start, usage.ru_maxrss / 1024


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
    console.add_verbose_flag(ap)
    args, beam_args = ap.parse_known_args(argv)
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    if set(runners) - {"direct", "dask"}:
        ap.error("--runners: choose among direct, dask")

    paths = sorted(p for p in glob.glob(os.path.join(args.data, "*")) if os.path.isfile(p))
    paths = paths[:args.limit] if args.limit else paths
    if not paths:
        print(f"no photos in {args.data}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="bench_annotate_")
    try:
        data = _link_dir(os.path.join(tmp, "input"), paths)
        n = len(paths)
        print(f"{n} photos from {args.data}; model {args.model}; batch size {args.batch_size}; "
              f"{os.cpu_count()} cores; load average before: {os.getloadavg()[0]:.2f}")
        import apache_beam  # noqa: F401  (imports are paid once, by no contestant)
        import tensorflow  # noqa: F401

        rates, cpus, outputs = {}, {}, {}
        for round_ in range(args.repeat):
            for name in ["loop", *runners]:
                out_dir = os.path.join(tmp, f"out-{name}")
                shutil.rmtree(out_dir, ignore_errors=True)
                cpu = _cpu_seconds()
                if name == "loop":
                    start = time.perf_counter()
                    photos, faces = baseline_loop(args.model, paths, args.batch_size)
                    seconds = time.perf_counter() - start
                    what = f"plain loop, analyze_batch ({photos} photos, {faces} faces)"
                elif name == "direct":
                    rc, seconds = run_job(args.model, data, out_dir, args.batch_size, beam_args)
                    if rc:
                        return rc
                    what = "pipeline.annotate, DirectRunner (end to end)"
                else:
                    cluster, startup = start_dask_cluster(args.dask_workers)
                    print(f"  (dask: {args.dask_workers} worker processes started with "
                          f"{DASK_PRELOAD} in {startup:.1f} s, not counted)")
                    try:
                        rc, seconds = run_job(args.model, data, out_dir, args.batch_size, [
                            "--runner=DaskRunner",
                            f"--dask_client_address={cluster.scheduler_address}"])
                        rss = _worker_peak_rss(cluster)
                    finally:
                        cluster.close()
                    if rc:
                        return rc
                    what = (f"pipeline.annotate, DaskRunner (end to end; worker peak RSS "
                            f"{', '.join(f'{r:.0f}' for r in rss)} MB)")
                cpu = _cpu_seconds() - cpu  # this process (Dask workers: not counted)
                if name != "loop":
                    outputs.setdefault(name, _outputs(out_dir))
                rates.setdefault(name, []).append(n / seconds)
                cpus.setdefault(name, []).append(cpu / n * 1000)
                print(f"round {round_ + 1}: {what}: {seconds:.1f} s = {n / seconds:.1f} "
                      f"photos/s, {cpu / n * 1000:.1f} CPU-ms/photo in this process "
                      f"(load average {os.getloadavg()[0]:.2f})")
        for name in rates:
            print(f"{name}: photos/s {', '.join(f'{r:.1f}' for r in rates[name])}; "
                  f"CPU-ms/photo {', '.join(f'{c:.1f}' for c in cpus[name])}")
        for a, b in (("direct", "loop"), ("dask", "direct")):
            if a in rates and b in rates:
                print(f"ratio {a} / {b} = "
                      f"{', '.join(f'{x / y:.2f}' for x, y in zip(rates[a], rates[b]))}x")
        if len(outputs) > 1:
            same = outputs["dask"] == outputs["direct"]
            print(f"same Parquet bytes and report on direct and dask: {'yes' if same else 'NO'}")
            if not same:
                return 1
        if args.rss_repeat > 0:
            count = n * args.rss_repeat
            repeated = paths * args.rss_repeat
            if args.rss_limit:
                count = min(count, args.rss_limit)
            big = _link_dir(os.path.join(tmp, "repeated"), paths, args.rss_repeat)
            if count < len(repeated):  # keep the first `count` links only
                for name in sorted(os.listdir(big))[count:]:
                    os.unlink(os.path.join(big, name))
            rc, seconds, rss = child_peak_rss(args.model, big, os.path.join(tmp, "out-rss"),
                                              args.batch_size)
            if rc:
                return rc
            print(f"memory: {count} photos ({args.rss_repeat}x {n} listed"
                  f"{', capped' if count < len(repeated) else ''}), DirectRunner in a child "
                  f"process: peak RSS {rss:.0f} MB, {seconds:.1f} s = {count / seconds:.1f} "
                  "photos/s")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
