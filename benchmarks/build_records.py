"""Benchmark of the Beam records job on the shared UTKFace subset, side by side with baselines.

    .venv/bin/python -m benchmarks.build_records [--data=DIR] [--limit=N] \
        [--runners=direct,dask,dask-cold] [--dask_workers=2] [--repeat=1] [beam flags...]

1. End to end: `pipeline.build_records` over every image on each runner named, against a
   plain single-process Python loop doing the same per-image work (read, decode, hash,
   resize, encode, histogram, serialize, write) in the same run, one image per TensorFlow
   call (the job converts batches of images per call). Prints images/s for each and the
   ratios, and checks that every runner wrote the same bytes (shards and report.json).
   - direct: the DirectRunner with the job's defaults (one worker thread per core, in this
     process, which has imported TensorFlow before the clock starts); Beam flags given are
     passed to it.
   - dask: the DaskRunner on a local Dask cluster this benchmark starts first (a scheduler
     and --dask_workers worker processes of one thread each, on 127.0.0.1, as `dask
     scheduler` / `dask worker --preload pipeline.transforms` would): the cluster's
     start-up, with the workers' import of TensorFlow and the job's modules, is printed
     apart, not counted, as this process's own imports are not counted for the others.
     A new cluster for every run.
   - dask-cold: the same without the preload: the workers import TensorFlow in the job's
     first tasks, and that is counted (a cluster's first job).
   --repeat runs the runners (and the loop) that many times, alternating.
2. The age histogram: `compute_histogram` (uncached), `age_histogram` (the cached path the
   job uses) and the seed's method (1,000,000 normal samples histogrammed into 101 bins).
   Prints medians and ratios.

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
import sys
import tempfile
import time

import numpy as np

from agegender import console

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "utkface",
                            "UTKFace")


def baseline_loop(paths, out_path, image_size=160, deviation=5.0):
    """What a plain script would do: one process, one image after another, one output file."""
    import tensorflow as tf
    from apache_beam.pvalue import TaggedOutput

    from pipeline.transforms import Face, MakeRecord

    make = MakeRecord(image_size=image_size, age_deviation=deviation)
    make.setup()
    written = 0
    with tf.io.TFRecordWriter(out_path) as out:
        for path in paths:
            with open(path, "rb") as f:
                element = (os.path.basename(path), f.read())
            for result in make.process([element]):  # one image at a time
                if not isinstance(result, TaggedOutput):  # a Face (as a tuple); else a skip
                    out.write(Face._make(result).example)
                    written += 1
    return written


def _cpu_seconds():
    """CPU time of this process and its finished children (threads included)."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def run_pipeline(data, out_dir, beam_args):
    from pipeline import build_records

    # --follow_symlinks: a --limit slice is a directory of links (the job skips links by default).
    return build_records.main([f"--input={data}", f"--output_dir={out_dir}", "--follow_symlinks",
                               *beam_args])


# What `dask worker --preload` imports on start-up: TensorFlow and the job's DoFns.
DASK_PRELOAD = "pipeline.transforms"


def start_dask_cluster(workers, preload=True):
    """A local Dask cluster of `workers` processes x 1 thread on loopback, each having
    imported DASK_PRELOAD if `preload` -> (cluster, seconds)."""
    from distributed import LocalCluster

    start = time.perf_counter()
    cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None,
                           silence_logs=logging.ERROR,
                           preload=[DASK_PRELOAD] if preload else [])
    return cluster, time.perf_counter() - start


def _outputs(out_dir):
    """{file name: bytes} of the shards and report.json of a records directory."""
    return {name: open(os.path.join(out_dir, name), "rb").read()
            for name in sorted(os.listdir(out_dir))
            if ".tfrecord-" in name or name == "report.json"}


def run_runner(runner, data, out_dir, beam_args, dask_workers):
    """One timed run of the job -> (seconds, CPU seconds of this process and its children)."""
    cluster = None
    args = list(beam_args)
    if runner.startswith("dask"):
        preload = runner == "dask"
        cluster, startup = start_dask_cluster(dask_workers, preload)
        print(f"  ({runner}: local cluster of {dask_workers} worker processes started "
              f"{'with' if preload else 'without'} {DASK_PRELOAD} in {startup:.1f} s, "
              f"not counted)")
        args = ["--runner=DaskRunner", f"--dask_client_address={cluster.scheduler_address}"]
    start, cpu = time.perf_counter(), _cpu_seconds()
    try:
        rc = run_pipeline(data, out_dir, args)
        seconds = time.perf_counter() - start
    finally:
        if cluster is not None:
            cluster.close()  # the workers' CPU time is counted once they have exited
    return rc, seconds, _cpu_seconds() - cpu


def _median_us(fn, args_list, repeat):
    """Median over `repeat` rounds of the mean time per call over `args_list`, in µs."""
    rounds = []
    for _ in range(repeat):
        start = time.perf_counter()
        for args in args_list:
            fn(*args)
        rounds.append((time.perf_counter() - start) / len(args_list) * 1e6)
    return statistics.median(rounds)


def seed_histogram(age, deviation, rng=np.random):
    """The seed project's label: 1,000,000 normal samples put into 101 one-year bins."""
    samples = rng.normal(age, deviation, 1_000_000)
    hist, _ = np.histogram(samples, bins=101, range=(-0.5, 100.5))
    return (hist / hist.sum()).astype(np.float32)


def bench_histogram(deviation=5.0):
    from agegender import age_histogram

    ages = [(a, deviation) for a in range(0, 117)]
    ours = _median_us(age_histogram.compute_histogram, ages, repeat=21)
    cached = _median_us(age_histogram.age_histogram, ages, repeat=21)
    seed = _median_us(seed_histogram, ages[::13], repeat=5)
    print(f"histogram: seed (1e6 samples) median {seed / 1000:.2f} ms/label")
    print(f"histogram: ours compute_histogram (uncached) median {ours:.1f} us/label "
          f"-> {seed / ours:,.0f}x faster")
    print(f"histogram: ours age_histogram (cached, what the job calls) median {cached:.2f} "
          f"us/label -> {seed / cached:,.0f}x faster")
    return seed / ours


RUNNERS = ("direct", "dask", "dask-cold")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="UTKFace directory")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    ap.add_argument("--runners", default="direct",
                    help=f"comma-separated, of {', '.join(RUNNERS)} (default %(default)s)")
    ap.add_argument("--dask_workers", type=int, default=2,
                    help="worker processes of the local Dask cluster (default %(default)s)")
    ap.add_argument("--repeat", type=int, default=1, help="runs of each, alternating")
    ap.add_argument("--skip_baseline", action="store_true")
    console.add_verbose_flag(ap)
    args, beam_args = ap.parse_known_args(argv)
    runners = [r.strip() for r in args.runners.split(",") if r.strip()]
    if not runners or set(runners) - set(RUNNERS):
        ap.error(f"--runners: choose among {', '.join(RUNNERS)}")

    paths = sorted(p for p in glob.glob(os.path.join(args.data, "*")) if os.path.isfile(p))
    if not paths:
        print(f"no images in {args.data}", file=sys.stderr)
        return 2
    tmp = tempfile.mkdtemp(prefix="bench_build_records_")
    try:
        data = args.data
        if args.limit:
            paths = paths[:args.limit]
            data = os.path.join(tmp, "input")
            os.makedirs(data)
            for p in paths:  # symlinks: the images are never copied
                os.symlink(os.path.abspath(p), os.path.join(data, os.path.basename(p)))
        n = len(paths)
        print(f"{n} images from {args.data}; {os.cpu_count()} cores; load average before: "
              f"{os.getloadavg()[0]:.2f}")

        # Imports are paid once by the process, not by either contestant.
        import apache_beam  # noqa: F401
        import tensorflow  # noqa: F401
        import tensorflow_datasets  # noqa: F401

        rates, cpus, outputs = {}, {}, {}
        contestants = runners + ([] if args.skip_baseline else ["loop"])
        for round_ in range(args.repeat):
            for name in contestants:
                out_dir = os.path.join(tmp, f"records-{name}")
                if name == "loop":
                    start, cpu = time.perf_counter(), _cpu_seconds()
                    written = baseline_loop(paths, os.path.join(tmp, "baseline.tfrecord"))
                    seconds, cpu = time.perf_counter() - start, _cpu_seconds() - cpu
                    what = f"plain single-process loop ({written} written, no dedup/split/report)"
                else:
                    shutil.rmtree(out_dir, ignore_errors=True)
                    rc, seconds, cpu = run_runner(name, data, out_dir, beam_args,
                                                  args.dask_workers)
                    if rc:
                        return rc
                    outputs.setdefault(name, _outputs(out_dir))
                    what = f"pipeline.build_records on {name} (incl. Beam start-up and shutdown)"
                rates.setdefault(name, []).append(n / seconds)
                cpus.setdefault(name, []).append(cpu)
                print(f"end to end, round {round_ + 1}: {what}: {seconds:.1f} s = "
                      f"{n / seconds:.0f} images/s, {cpu / n * 1000:.2f} CPU-ms/image "
                      f"(load average {os.getloadavg()[0]:.2f})")
        for name in contestants:
            print(f"{name}: images/s {', '.join(f'{r:.0f}' for r in rates[name])}")
        if "loop" in rates:
            for name in runners:
                ratios = [a / b for a, b in zip(rates[name], rates["loop"])]
                print(f"ratio {name} / loop = {', '.join(f'{r:.2f}' for r in ratios)}x images/s "
                      f"(CPU per image: {', '.join(f'{a / b:.2f}' for a, b in zip(cpus[name], cpus['loop']))}x)")
        for name in ("dask", "dask-cold"):
            if "direct" in rates and name in rates:
                ratios = [a / b for a, b in zip(rates[name], rates["direct"])]
                print(f"ratio {name} / direct = {', '.join(f'{r:.2f}' for r in ratios)}x "
                      f"images/s")
        if len(outputs) > 1:
            first, *others = outputs
            same = all(outputs[o] == outputs[first] for o in others)
            print(f"same shards and report.json on {', '.join(outputs)}: {'yes' if same else 'NO'}")
            if not same:
                return 1
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        bench_histogram()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
