"""The alignment template: where the five landmarks sit in a training crop, learnt from the data.

Owns the template's file format, the default template shipped in this package
(`utkface_template.json`), and the command that computes one:

    python -m faces.template --input=../shared/data/utkface/UTKFace --output=template.json \\
        [--split=train] [--split_fractions=0.8,0.1,0.1] [--limit=N]

For every crop in the records' split `--split` (the split `agegender.splits.split_of`
gives the crop's decoded pixels; `--split_fractions` are the records job's `--split`
fractions, its default when omitted; `--split=all` takes every crop), the detector
(`faces.detector`, default settings) runs on the crop and the landmarks of its largest face
are taken in the crop's normalised coordinates ((x + 0.5) / width, (y + 0.5) / height:
pixel centres). The template is their mean; the file
also records the spread (standard deviation, median), how many crops were used, how many had
no face found, and what was skipped. Only train crops by default: the template is part of
the model's input pipeline, so it must not be learnt from the faces it is evaluated on.

File format (JSON): {"points": [[x, y] x 5] (the mean, in `detector.LANDMARK_NAMES` order),
"std": [[x, y] x 5], "median": [[x, y] x 5], "landmarks": names, "crops": n, "no_face": k,
"skipped": {...}, "split": ..., "input": ..., "detector": settings}.

A template is named by `fingerprint(points)` (SHA-256 of the rounded points) wherever it is
recorded: the records' report.json, the model spec, the exported model's assets.extra.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import collections
import functools
import hashlib
import importlib.resources
import json
import os
import sys

import numpy as np

from agegender import console

DEFAULT_FILE = "utkface_template.json"

Template = collections.namedtuple("Template", ["points", "std", "crops", "no_face", "info"])


class TemplateError(ValueError):
    """A template file that is missing, unreadable or malformed."""


def from_json(text, source="template"):
    """`Template` from the file's JSON text; raises TemplateError saying what is wrong."""
    try:
        data = json.loads(text)
        points = np.asarray(data["points"], np.float32)
        std = np.asarray(data.get("std", np.zeros((5, 2))), np.float32)
    except (ValueError, KeyError, TypeError) as e:
        raise TemplateError(f"{source}: not a template file ({e})") from e
    if points.shape != (5, 2) or not np.all(np.isfinite(points)):
        raise TemplateError(f"{source}: 'points' must be 5 finite [x, y] pairs, got "
                            f"shape {points.shape}")
    if np.ptp(points[:, 0]) <= 0 or np.ptp(points[:, 1]) <= 0:
        raise TemplateError(f"{source}: the 5 points are degenerate (no extent)")
    return Template(points, std, int(data.get("crops", 0)), int(data.get("no_face", 0)), data)


def fingerprint(points):
    """Hex SHA-256 naming a template's points (rounded to the file's 5 decimals): what a
    records directory, a model spec and an exported model record, so two can be compared."""
    rounded = np.round(np.asarray(points, np.float64).reshape(5, 2), 5).tolist()
    return hashlib.sha256(json.dumps(rounded).encode("ascii")).hexdigest()


def to_json(data):
    """The file's text: one key per line, so diffs of a recomputed template stay readable."""
    lines = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in data.items()]
    return "{\n" + ",\n".join(lines) + "\n}\n"


@functools.lru_cache(maxsize=None)
def _default():
    text = (importlib.resources.files("faces") / DEFAULT_FILE).read_text()
    return from_json(text, DEFAULT_FILE)


def load(path=None):
    """The template in `path` (a JSON file written by this command), or the default one."""
    if path is None:
        return _default()
    try:
        with open(path) as f:
            text = f.read()
    except OSError as e:
        raise TemplateError(f"cannot read template {path}: {e}") from e
    return from_json(text, path)


def _largest(detections):
    """Index of the largest face of `detector.Detections`, or None."""
    if not len(detections.boxes):
        return None
    b = detections.boxes
    return int(np.argmax((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])))


def compute(paths, *, split="train", fractions=None, limit=None, detector=None, log=None):
    """The template dict (the file's content) from the crops in `paths`."""
    from agegender import splits
    from faces import detector as detector_lib
    from faces import utkface

    detector = detector or detector_lib.FaceDetector()
    fractions = fractions or splits.default_fractions()
    crops = utkface.Crops(paths, fractions)
    wanted = None if split == "all" else split
    points, no_face = [], []
    for path, pixels in crops.in_split(wanted):
        found = detector.find(pixels)
        i = _largest(found)
        if i is None:
            no_face.append(os.path.basename(path))
        else:
            height, width = pixels.shape[:2]
            points.append((found.landmarks[i] + 0.5) / np.asarray([width, height], np.float32))
        seen = len(points) + len(no_face)
        if log and seen % 1000 == 0:
            log(f"{seen} crops, {len(no_face)} without a face")
        if limit and seen >= limit:
            break
    if not points:
        raise TemplateError(f"no face found in any {split} crop of {len(paths)} files")
    points = np.stack(points).astype(np.float64)
    visited = crops.visited(wanted)
    return {
        "points": np.round(points.mean(0), 5).tolist(),
        "std": np.round(points.std(0), 5).tolist(),
        "median": np.round(np.median(points, 0), 5).tolist(),
        "landmarks": list(detector_lib.LANDMARK_NAMES),
        "crops": int(len(points)),
        "no_face": len(no_face),
        "no_face_examples": sorted(no_face)[:20],
        "skipped": {"other_split": visited["other_split"], "undecodable": visited["undecodable"]},
        "split": split,
        "split_fractions": dict(fractions),
        "detector": detector_lib.settings(detector.config),
    }


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m faces.template",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--input", required=True, help="a directory of face crops or a glob")
    parser.add_argument("--output", required=True, help="the template JSON file to write")
    parser.add_argument("--split", default="train",
                        help="the records' split whose crops are used (train, validation, "
                             "test) or 'all' (default: train)")
    parser.add_argument("--split_fractions", default=None,
                        help="the records job's --split (e.g. 0.8,0.1,0.1); default: its default")
    parser.add_argument("--limit", type=int, default=0, help="use at most N crops (0: all)")
    console.add_verbose_flag(parser)
    args = parser.parse_args(argv)

    from agegender import schema
    from faces import utkface

    if args.split not in (*schema.SPLITS, "all"):
        parser.error(f"--split={args.split}: one of {', '.join(schema.SPLITS)}, all")
    fractions = None
    if args.split_fractions:
        try:
            values = [float(v) for v in args.split_fractions.split(",")]
        except ValueError:
            values = []
        if len(values) != len(schema.SPLITS) or abs(sum(values) - 1) > 1e-6 or min(values) < 0:
            parser.error(f"--split_fractions={args.split_fractions}: {len(schema.SPLITS)} "
                         "fractions >= 0 summing to 1")
        fractions = tuple(zip(schema.SPLITS, values))
    paths = utkface.list_files(args.input)
    if not paths:
        print(f"no files in {args.input}", file=sys.stderr)
        return 2
    try:
        result = compute(paths, split=args.split, fractions=fractions, limit=args.limit,
                         log=lambda m: print(m, file=sys.stderr))
    except TemplateError as e:
        print(str(e), file=sys.stderr)
        return 1
    result["input"] = args.input
    with open(args.output, "w") as f:
        f.write(to_json(result))
    print(f"{args.output}: {result['crops']} crops, {result['no_face']} without a face; "
          f"points {result['points']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
