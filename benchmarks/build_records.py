"""Benchmark of the Beam records job on the shared UTKFace subset, side by side with baselines.

    .venv/bin/python -m benchmarks.build_records [--data=DIR] [--limit=N] [beam flags...]

1. End to end: `pipeline.build_records` (DirectRunner, its defaults unless Beam flags are
   given) over every image, against a plain single-process Python loop doing the same
   per-image work (read, decode, hash, resize, encode, histogram, serialize, write) in the
   same run, one image per TensorFlow call (the job converts batches of images per call).
   Prints images/s for both and the ratio.
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


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=DEFAULT_DATA, help="UTKFace directory")
    ap.add_argument("--limit", type=int, default=0, help="only the first N images (0 = all)")
    ap.add_argument("--skip_baseline", action="store_true")
    console.add_verbose_flag(ap)
    args, beam_args = ap.parse_known_args(argv)

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

        start, cpu = time.perf_counter(), _cpu_seconds()
        rc = run_pipeline(data, os.path.join(tmp, "records"), beam_args)
        ours_s, ours_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
        if rc:
            return rc
        ours = n / ours_s
        print(f"end to end: pipeline.build_records {ours_s:.1f} s = {ours:.0f} images/s, "
              f"{ours_cpu / n * 1000:.2f} CPU-ms/image (incl. Beam start-up and shutdown)")
        if not args.skip_baseline:
            start, cpu = time.perf_counter(), _cpu_seconds()
            written = baseline_loop(paths, os.path.join(tmp, "baseline.tfrecord"))
            base_s, base_cpu = time.perf_counter() - start, _cpu_seconds() - cpu
            base = n / base_s
            print(f"end to end: plain single-process loop {base_s:.1f} s = {base:.0f} images/s, "
                  f"{base_cpu / n * 1000:.2f} CPU-ms/image ({written} written, no "
                  f"dedup/split/report)")
            print(f"end to end: ratio ours / loop = {ours / base:.2f}x images/s "
                  f"(CPU per image: {ours_cpu / base_cpu:.2f}x the loop's)")
        print(f"load average after: {os.getloadavg()[0]:.2f}")
        bench_histogram()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
