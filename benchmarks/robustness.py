"""Robustness off the training distribution: the test split degraded as users' photos are.

    .venv/bin/python -m benchmarks.robustness --model=build/full/models/age \
        --records_dir=build/full/records [--limit=0] [--out=build/robustness.json]

Each test-split face (the records' 160 px JPEG) is decoded, degraded by one of
`agegender.degradations.BENCHMARK` (grayscale, sepia, faded colour, JPEG quality 15, a
48 px or 32 px face upscaled, light from one side; fixed settings, deterministic),
re-encoded as JPEG (quality 95) and sent through the exported model's `serving_default`
signature, as TF Serving would see it. Prints MAE and mean signed error per degradation
beside the clean split, and the differences; the targets: no degradation adds more than
1.0 year of MAE or moves the signed error by more than 2 years.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import json
import sys

import numpy as np
import tensorflow as tf

from agegender import arg_types, console, degradations, heads
from evaluation import evaluate
from evaluation.runners import SavedModelRunner

MAX_EXTRA_MAE = 1.0
MAX_EXTRA_BIAS = 2.0


@tf.function(input_signature=[tf.TensorSpec([None], tf.string), tf.TensorSpec([], tf.int32)])
def degrade_jpegs(jpegs, index):
    """JPEGs -> the same faces degraded by the `index`-th of `degradations.BENCHMARK`, as
    JPEGs (quality 95). One function for all of them (a branch each), traced once."""
    def one(data):
        return tf.cast(tf.io.decode_jpeg(data, channels=3), tf.float32)
    images = tf.map_fn(one, jpegs, fn_output_signature=tf.TensorSpec([None, None, 3],
                                                                      tf.float32))
    branches = [lambda fn=fn: fn(images) for fn in degradations.BENCHMARK.values()]
    out = tf.cast(tf.round(tf.switch_case(index, branches)), tf.uint8)
    return tf.map_fn(lambda im: tf.io.encode_jpeg(im, quality=95), out,
                     fn_output_signature=tf.TensorSpec([], tf.string))


def measure(runner, items, batch_size=64):
    """{degradation: {count, mae, mean_signed_error}} with "clean" first."""
    indices = {"clean": None, **{k: i for i, k in enumerate(degradations.BENCHMARK)}}
    errors = {k: [] for k in indices}
    batch = []

    def flush():
        data = [item.data for item in batch]
        true = np.array([item.labels.age for item in batch], np.float64)
        for name, index in indices.items():
            encoded = data if index is None else list(
                degrade_jpegs(tf.constant(data), index).numpy())
            outputs, ok = runner.predict(encoded)
            errors[name].append(outputs[heads.AGE].astype(np.float64) - true[ok])
    for item in items:
        batch.append(item)
        if len(batch) == batch_size:
            flush()
            batch = []
    if batch:
        flush()
    results = {}
    for name, errs in errors.items():
        err = np.concatenate(errs)
        results[name] = {"count": int(err.size), "mae": float(np.abs(err).mean()),
                         "mean_signed_error": float(err.mean())}
    return results


def print_table(results, out=sys.stdout):
    clean = results["clean"]
    print(f"{'degradation':<14} {'n':>5} {'MAE':>6} {'+MAE':>6} {'signed':>7} {'+signed':>8}",
          file=out)
    failed = []
    for name, r in results.items():
        extra = r["mae"] - clean["mae"]
        bias = r["mean_signed_error"] - clean["mean_signed_error"]
        ok = extra <= MAX_EXTRA_MAE and abs(bias) <= MAX_EXTRA_BIAS
        if not ok:
            failed.append(name)
        print(f"{name:<14} {r['count']:>5} {r['mae']:>6.2f} {extra:>+6.2f} "
              f"{r['mean_signed_error']:>+7.2f} {bias:>+8.2f}{'' if ok else '  over target'}",
              file=out)
    return failed


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="exported model (base path or version dir)")
    p.add_argument("--records_dir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=0, help="at most this many faces (0: all)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--output", "--out", dest="out", help="write the results as JSON here")
    console.add_verbose_flag(p)
    argv = sys.argv[1:] if argv is None else argv
    arg_types.warn_renamed(argv, {"--out": "--output"})
    args = p.parse_args(argv)
    runner = SavedModelRunner(args.model)
    items = evaluate.iter_records(args.records_dir, args.split)
    if args.limit:
        items = (item for i, item in zip(range(args.limit), items))
    results = measure(runner, items, args.batch_size)
    print(f"model: {runner.model_dir}, {args.split} split of {args.records_dir}")
    failed = print_table(results)
    if args.out:
        with tf.io.gfile.GFile(args.out, "w") as f:
            json.dump({"model": runner.model_dir, "results": results}, f, indent=1)
    print("targets met" if not failed else f"over target: {', '.join(failed)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
