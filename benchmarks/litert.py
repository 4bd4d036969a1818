"""LiteRT files per quantization mode, side by side with the SavedModel, in one run.

  python -m benchmarks.litert --job_dir=runs/exp1 --records_dir=records/utk_face \
      --output_dir=/tmp/litert_bench [--modes=none,float16,dynamic,int8] [--latency_runs=300] \
      [--int8_float_layers=0,1,3]

Exports the job dir's model as a SavedModel (`export.export_model`) and as one LiteRT file
per mode (`export.export_litert`, its default check thresholds; a mode the check refuses is
reported as refused and measured anyway from an export with the thresholds lifted), then
prints per model:

  size         the .tflite file; the SavedModel version directory (all files)
  MAE, gender  on the records' test split: the same images, the same preprocessing
               function (`evaluation.evaluate` with `runner_for`), and deltas to the
               SavedModel's
  max |dAge|   the largest difference, on one test image, from the SavedModel's age
  p50          single-thread latency of one model call on one preprocessed image (decoding
               excluded): LiteRT with num_threads=1, the SavedModel's `predict_images`
               signature with TensorFlow's intra/inter-op threads set to 1

and checks the issue's targets (float16 and dynamic: MAE within 0.05 years of the
SavedModel; int8: within 0.3 years, file <= 30% of the float32 file, p50 <= 60% of the
float32 LiteRT model's). Writes benchmark.json to --output_dir. Not a test: latency depends on
what else runs on the machine.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import json
import os
import sys
import time

import numpy as np
import tensorflow as tf

from agegender import arg_types, console
from agegender import serving_contract as contract

TARGETS = {  # mode: (max |MAE delta| years, max size share of float32, max p50 share of float32)
    "float16": (0.05, None, None),
    "dynamic": (0.05, None, None),
    "int8": (0.3, 0.30, 0.60),
}


def _dir_size(path):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(path)
               for f in files)


def _p50_ms(call, pixels, runs):
    for image in pixels[:10]:  # warm up (delegate setup, tf.function tracing)
        call(image[None])
    times = []
    for i in range(runs):
        image = pixels[i % len(pixels)][None]
        start = time.perf_counter()
        call(image)
        times.append(time.perf_counter() - start)
    return 1000.0 * float(np.median(times))


def _evaluate(runner, items, batch_size):
    from agegender import metrics as metrics_lib
    from evaluation import evaluate

    predictions, skipped = evaluate.evaluate(runner, items, batch_size)
    report = metrics_lib.full_report(predictions["true_age"], predictions["pred_age"],
                                     race=predictions["race"],
                                     true_gender=predictions["gender"],
                                     pred_gender=predictions.get("pred_gender"))
    ages = dict(zip(predictions["source"], predictions["pred_age"].astype(float)))
    return report, ages, len(skipped.items)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--job_dir", required=True)
    parser.add_argument("--records_dir", required=True)
    parser.add_argument("--output_dir", "--out", dest="out", required=True, help="work directory (exports, benchmark.json)")
    parser.add_argument("--modes", default="none,float16,dynamic,int8")
    parser.add_argument("--int8_float_layers", default=None,
                        help="comma-separated: one int8 file per value (default: the "
                             "export's default)")
    parser.add_argument("--representative_images", type=int, default=200)
    parser.add_argument("--check_images", type=int, default=200)
    parser.add_argument("--latency_runs", type=int, default=300)
    parser.add_argument("--batch_size", type=int, default=64, help="SavedModel evaluation batch")
    parser.add_argument("--limit", type=int, default=0, help="test images (0: all)")
    console.add_verbose_flag(parser)
    argv = sys.argv[1:] if argv is None else argv
    arg_types.warn_renamed(argv, {"--out": "--output_dir"})
    args = parser.parse_args(argv)
    # Single-thread TensorFlow for the SavedModel's latency; set before TF starts its pools.
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)

    from agegender import job_dir as job_dir_lib
    from agegender import preprocessing
    from evaluation import evaluate, runners
    from export import export_model, litert_check, litert_convert, litert_file
    from export.litert_model import LiteRTModel

    modes = []
    for mode in (m for m in args.modes.split(",") if m):
        if mode == "int8" and args.int8_float_layers:
            modes += [(mode, int(k)) for k in args.int8_float_layers.split(",")]
        else:
            modes.append((mode, litert_convert.DEFAULT_INT8_FLOAT_LAYERS))
    os.makedirs(args.out, exist_ok=True)
    model, spec = job_dir_lib.load(args.job_dir)
    items = list(evaluate.iter_records(args.records_dir, "test"))
    if args.limit:
        items = items[:args.limit]
    pixels = np.stack([preprocessing.model_input(item.data, spec.img_dim).numpy()
                       for item in items[:64]])

    rows = []
    saved_dir = export_model.export_saved_model(model=model, spec=spec,
                                                export_base=os.path.join(args.out, "saved_model"))
    sm = runners.SavedModelRunner(saved_dir)
    report, base_ages, skipped = _evaluate(sm, items, args.batch_size)
    predict_images = sm._loaded.signatures[contract.PREDICT_IMAGES]
    rows.append(dict(model="SavedModel", size=_dir_size(saved_dir), mae=report["mae"],
                     gender_accuracy=report.get("gender_accuracy"), count=report["count"],
                     skipped=skipped, max_age_diff=0.0,
                     p50_ms=_p50_ms(lambda x: predict_images(images=tf.constant(x)), pixels,
                                    args.latency_runs)))
    base = rows[0]

    for mode, float_layers in modes:
        label = f"{mode}/{float_layers}fl" if mode == "int8" else mode
        output = os.path.join(args.out, f"age_{label.replace('/', '_')}.tflite")
        refused = None
        started = time.time()
        try:
            metadata = litert_file.export_litert(
                args.job_dir, output, mode, records_dir=args.records_dir,
                representative_images=args.representative_images,
                check_images=args.check_images, int8_float_layers=float_layers, model=model,
                spec=spec)
        except export_model.ExportError as e:
            refused = str(e)
            print(f"{label}: REFUSED by the export's check: {e}", flush=True)
            lax = litert_check.Tolerance(float("inf"), float("inf"), 0.0)
            metadata = litert_file.export_litert(
                args.job_dir, output, mode, records_dir=args.records_dir,
                representative_images=args.representative_images,
                check_images=args.check_images, tolerance=lax, int8_float_layers=float_layers,
                model=model, spec=spec)
        export_seconds = time.time() - started
        runner = runners.LiteRTRunner(output)
        report, ages, skipped = _evaluate(runner, items, args.batch_size)
        common = sorted(set(ages) & set(base_ages))
        diff = np.abs(np.array([ages[s] - base_ages[s] for s in common]))
        single = LiteRTModel(output, num_threads=1)
        rows.append(dict(model=f"LiteRT {label}", mode=mode, size=os.path.getsize(output),
                         float_layers=metadata.get("int8", {}).get("float_layers"),
                         mae=report["mae"], gender_accuracy=report.get("gender_accuracy"),
                         count=report["count"], skipped=skipped,
                         max_age_diff=float(diff.max()), mean_age_diff=float(diff.mean()),
                         p50_ms=_p50_ms(single, pixels, args.latency_runs),
                         check=metadata["check"], refused=refused,
                         export_seconds=export_seconds))

    float_row = next((r for r in rows if r.get("mode") == "none"), None)
    print(f"\nmodel: {args.job_dir} ({spec.base_model} alpha {spec.alpha}, {spec.img_dim} px, "
          f"{spec.type}{', range' if spec.range_mode else ''}"
          f"{', gender' if spec.predict_gender else ''}); test split of {args.records_dir}: "
          f"{base['count']} images")
    header = (f"{'model':<20}{'size':>11}{'MAE':>8}{'dMAE':>9}{'gender':>8}{'dGender':>9}"
              f"{'max|dAge|':>11}{'p50 ms':>9}  check")
    print(header)
    print("-" * len(header))
    for r in rows:
        g = r["gender_accuracy"]
        dg = None if g is None or base["gender_accuracy"] is None else g - base["gender_accuracy"]
        check = ("refused (measured anyway)" if r.get("refused") else
                 "passed" if "check" in r else "")
        print(f"{r['model']:<20}{r['size'] / 1e6:>9.2f}MB{r['mae']:>8.3f}"
              f"{r['mae'] - base['mae']:>+9.3f}"
              f"{(g if g is not None else float('nan')):>8.3f}"
              f"{(dg if dg is not None else float('nan')):>+9.3f}"
              f"{r['max_age_diff']:>11.3f}{r['p50_ms']:>9.3f}  {check}")
    targets = []
    for r in rows:
        limits = TARGETS.get(r.get("mode"))
        if not limits:
            continue
        mae_max, size_share, p50_share = limits
        d = abs(r["mae"] - base["mae"])
        name = r["model"].replace("LiteRT ", "")
        targets.append((f"{name}: |dMAE| {d:.3f} <= {mae_max}", d <= mae_max))
        if size_share and float_row:
            share = r["size"] / float_row["size"]
            targets.append((f"{name}: size {share:.1%} of float32 <= {size_share:.0%}",
                            share <= size_share))
        if p50_share and float_row:
            share = r["p50_ms"] / float_row["p50_ms"]
            targets.append((f"{name}: p50 {share:.1%} of float32 LiteRT <= "
                            f"{p50_share:.0%}", share <= p50_share))
    print()
    for text, met in targets:
        print(f"  {'met    ' if met else 'NOT MET'}  {text}")
    with open(os.path.join(args.out, "benchmark.json"), "w") as f:
        json.dump({"job_dir": args.job_dir, "records_dir": args.records_dir,
                   "model_spec": vars(spec), "rows": rows,
                   "targets": [{"target": t, "met": m} for t, m in targets]}, f, indent=1)
    print(f"\nwrote {os.path.join(args.out, 'benchmark.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
