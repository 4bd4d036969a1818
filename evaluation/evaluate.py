"""Evaluation of an exported model on any labelled face folder, archive or records split.

    python -m evaluation.evaluate --model=models/age[/<version>] --input=<dir | glob | archive> \
        --output_dir=reports/utk [--labels_csv=...] [--batch_size=64] [--compare=other/metrics.json]
    python -m evaluation.evaluate --model=models/age --records_dir=records/utk_face --split=test \
        --output_dir=reports/utk_test
    python -m evaluation.evaluate --model=models/age.tflite ...   (a LiteRT file, same report)
    python -m evaluation.evaluate --model=models/age --input=photos/ --photos --output_dir=...

Images go through the SavedModel's own `serving_default` signature (encoded bytes in), so
what is measured is what TF Serving would answer; a `.tflite` --model runs on the LiteRT
runtime with the same preprocessing function (`evaluation.runners.LiteRTRunner`). Writes
`metrics.json`, `predictions.csv`, four PNG plots and a self-contained `report.html` to
--output_dir, and prints a summary table.

`--photos`: the inputs are uncropped photos, sent to the SavedModel's `predict_photo`
signature (faces found and aligned in the graph). A photo's label belongs to its largest
face found; a photo without a face is skipped as `no_face` and listed. The report adds the
detection recall (photos with a face found / photos the model could read) beside the
accuracy of the faces found.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import collections
import csv
import json
import os
import sys

from absl import app, flags, logging
import numpy as np
import tensorflow as tf

from agegender import (console, heads, image_header, image_sources, labelled_inputs, names,
                       photo_answers, records, schema)
from agegender import metrics as metrics_lib
from evaluation import report as report_lib
from evaluation import runners
from evaluation.runners import EvaluationError, runner_for

def define_flags(fv=flags.FLAGS):
    """Defines the evaluation's flags on `fv` (at run time, as every absl program here does,
    so modules can be imported together and tests can parse private FlagValues)."""
    d = dict(flag_values=fv)
    flags.DEFINE_string("model", None, "Exported model: a TF Serving base path (newest version "
                        "is used), one version directory holding saved_model.pb, or a "
                        ".tflite file from export.export_litert.", **d)
    flags.DEFINE_string("input", None, "Labelled images: a directory, a glob, or a "
                        ".zip/.tar/.tar.gz archive, with UTKFace or seed file names, or "
                        "--labels_csv.", **d)
    flags.DEFINE_string("labels_csv", None, "CSV file,age[,gender][,race] for --input images "
                        "whose names carry no labels.", **d)
    flags.DEFINE_string("records_dir", None, "Evaluate a split of a records directory instead.",
                        **d)
    flags.DEFINE_enum("split", None, list(schema.SPLITS),
                      "Split of --records_dir, always named: validation to compare runs and "
                      "choose between them, test once, for the report.", **d)
    flags.DEFINE_string("output_dir", None, "Where metrics.json, the plots and report.html go.",
                        **d)
    flags.DEFINE_integer("batch_size", 64, "Images per model call.", lower_bound=1, **d)
    flags.DEFINE_string("compare", None, "Another metrics.json to show side by side.", **d)
    flags.DEFINE_string("name", None, "Name of this model in the report (default: the model "
                        "path).", **d)
    flags.DEFINE_integer("limit", 0, "Evaluate at most this many images (0: all).",
                         lower_bound=0, **d)
    flags.DEFINE_bool("follow_symlinks", False,
                      "Follow symbolic links in --input (as the records job's flag; by "
                      "default links are skipped as not_a_regular_file, never read).", **d)
    flags.DEFINE_bool("photos", False,
                      "--input holds uncropped photos: find the faces with the model's "
                      "predict_photo signature; a photo's label belongs to its largest face, "
                      "photos without a face are skipped as no_face and counted in the "
                      "detection recall.", **d)
    flags.DEFINE_integer("max_image_pixels", image_header.DEFAULT_MAX_PIXELS,
                         "Skip (as image_too_large) images whose header declares more pixels: "
                         "decompression bombs are never decoded. 0: no limit.", lower_bound=0,
                         **d)
    flags.DEFINE_float("progress_seconds", console.PROGRESS_SECONDS,
                       "When stdout is not a terminal (a log), print the images evaluated so "
                       "far this often, on stderr; 0: never. A terminal shows Keras' progress "
                       "bar instead.", lower_bound=0, **d)
    return fv


Item = collections.namedtuple("Item", "source data labels")


def iter_images(input_spec, labels_csv=None, skipped=None,
                max_pixels=image_header.DEFAULT_MAX_PIXELS, follow_symlinks=False):
    """Yields Item(source, bytes, Labels) for labelled images; records the rest in `skipped`.

    The records job's image source (`agegender.image_sources`): the same formats, archives,
    safety rules and per-image checks (labels, the header's pixel limit before any decode),
    with the same skip reasons."""
    csv_rows = None
    if labels_csv:
        with tf.io.gfile.GFile(labels_csv) as f:
            csv_rows = names.read_labels_csv(f.read())
    try:
        for out in labelled_inputs.iter_labelled(input_spec, labelled_inputs.Labeller(csv_rows),
                                                 follow_symlinks, max_pixels):
            if isinstance(out, image_sources.Skip):
                skipped.add(out.source_id, out.reason, out.detail)
            else:
                yield Item(out.source_id, out.data, out.labels)
    except image_sources.InputError as e:
        raise EvaluationError(str(e)) from e


def iter_records(records_dir, split):
    """Yields Item(source, bytes, Labels) from one split of a records directory."""
    for example in records.iter_examples(records_dir, split):
        yield Item(example[schema.IMAGE_SOURCE_ID].decode("utf-8"),
                   example[schema.IMAGE_ENCODED],
                   names.Labels(int(example[schema.AGE]), int(example[schema.GENDER]),
                                int(example[schema.RACE])))


class Skipped:
    """Every input not evaluated, with its reason."""

    def __init__(self):
        self.items = []

    def add(self, source, reason, detail=""):
        self.items.append({"source": source, "reason": reason, "detail": detail})

    def to_json(self):
        by_reason = collections.Counter(i["reason"] for i in self.items)
        return {"count": len(self.items), "by_reason": dict(sorted(by_reason.items())),
                "examples": self.items}


def _batches(items, size, limit):
    batch = []
    for n, item in enumerate(items):
        if limit and n >= limit:
            break
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def evaluate(runner, items, batch_size=64, limit=0, total=None, skipped=None, detection=None,
             progress_seconds=console.PROGRESS_SECONDS):
    """Runs the model over `items`; returns (per-image predictions dict, skipped).

    A `runners.PhotoRunner` answers photos: the largest face found is the one evaluated,
    and `detection` (a `Detection`) counts the photos with and without a face."""
    skipped = skipped or Skipped()
    rows = collections.defaultdict(list)
    terminal = sys.stdout.isatty()
    progress = tf.keras.utils.Progbar(total, unit_name="image",
                                      stateful_metrics=["mae"],
                                      verbose=1 if terminal else 2)
    # Keras' verbose=2 prints the last line only: in a log, a line every few seconds.
    so_far = console.Progress("evaluation", "images evaluated", total=total,
                              every=0 if terminal else progress_seconds)
    done = 0
    photos = isinstance(runner, runners.PhotoRunner)
    for batch in _batches(items, batch_size, limit):
        if photos:
            kept, outputs = _photo_batch(runner, batch, skipped, detection)
        else:
            outputs, ok = runner.predict([item.data for item in batch])
            for item, good in zip(batch, ok):
                if not good:
                    skipped.add(item.source, image_sources.UNDECODABLE,
                                "the model's image_bytes input rejected it")
            kept = [item for item, good in zip(batch, ok) if good]
        rows["source"] += [item.source for item in kept]
        rows["true_age"] += [item.labels.age for item in kept]
        rows["gender"] += [item.labels.gender for item in kept]
        rows["race"] += [item.labels.race for item in kept]
        if kept:
            _add_outputs(rows, outputs)
        done += len(batch)
        so_far.add(len(batch))
        if total is None or done < total:
            progress.update(done, [("mae", _mae(rows))])
    progress.update(done, [("mae", _mae(rows))], finalize=True)
    return {k: np.asarray(v) for k, v in rows.items()}, skipped


class Detection:
    """Photos the model read, and how many had a face found (--photos)."""

    def __init__(self):
        self.photos = self.with_face = self.faces = 0

    def add(self, num_faces):
        self.photos += 1
        self.with_face += num_faces > 0
        self.faces += num_faces

    def to_json(self):
        return {"photos": self.photos, "with_face": self.with_face,
                "no_face": self.photos - self.with_face,
                "recall": self.with_face / self.photos if self.photos else None,
                "faces_found": self.faces}


# Columns of predictions.csv that only photos have: the evaluated face and its photo.
PHOTO_COLUMNS = ("num_faces", "face_score", "face_x1", "face_y1", "face_x2", "face_y2")


def _photo_batch(runner, batch, skipped, detection):
    """Photos -> (items whose largest face is evaluated, that face's outputs as a batch)."""
    kept, faces = [], []
    for item, answer in zip(batch, runner.predict_photos([item.data for item in batch])):
        if isinstance(answer, Exception):
            skipped.add(item.source, image_sources.UNDECODABLE,
                        "the model's predict_photo input rejected it: "
                        + image_sources.short_error(answer))
            continue
        if detection is not None:
            detection.add(answer["num_faces"])
        largest = photo_answers.largest_face(answer["faces"])
        if largest is None:
            skipped.add(item.source, image_sources.NO_FACE, "no face found in the photo")
            continue
        kept.append(item)
        faces.append((answer["faces"][largest], answer["num_faces"]))
    if not faces:
        return kept, {}
    return kept, _face_outputs(faces)


def _face_outputs(faces):
    """[(agegender.Face, its photo's face count)] -> the columns `_add_outputs` reads, as a
    crop signature's batch would hold them."""
    first = faces[0][0]
    outputs = {heads.AGE: np.asarray([face.age for face, _ in faces]),
               "num_faces": np.asarray([n for _, n in faces]),
               "face_score": np.asarray([face.score for face, _ in faces])}
    if first.gender is not None:
        outputs[heads.GENDER] = np.asarray([photo_answers.gender_letter(face) for face, _ in faces])
        # Two classes: the chosen gender's probability gives both.
        female = [face.gender_probability if face.gender_index == 1
                  else 1.0 - face.gender_probability for face, _ in faces]
        outputs[heads.GenderHead.probability_output] = np.stack(
            [1.0 - np.asarray(female), np.asarray(female)], axis=1)
    if first.age_std is not None:
        outputs[heads.AGE_STD] = np.asarray([face.age_std for face, _ in faces])
    for coverage in heads.INTERVALS:
        name = heads.interval_output(coverage)
        if getattr(first, name) is not None:
            outputs[name] = np.asarray([getattr(face, name) for face, _ in faces])
    boxes = np.asarray([face.box for face, _ in faces], float)
    for i, corner in enumerate(("face_x1", "face_y1", "face_x2", "face_y2")):
        outputs[corner] = boxes[:, i]
    return outputs


def _mae(rows):
    err = np.abs(np.subtract(rows["pred_age"], rows["true_age"]))
    return float(err.mean()) if err.size else 0.0


def _add_outputs(rows, outputs):
    """One batch's signature outputs -> the per-image columns (spread ones when the model
    exports them)."""
    rows["pred_age"] += outputs[heads.AGE].astype(float).tolist()
    if heads.GENDER in outputs:
        rows["pred_gender"] += [schema.GENDER_LETTERS.index(
            g.decode() if isinstance(g, bytes) else g) for g in outputs[heads.GENDER]]
    if heads.GenderHead.probability_output in outputs:
        rows["prob_female"] += outputs[heads.GenderHead.probability_output][:, 1].tolist()
    if heads.AGE_STD in outputs:
        rows["age_std"] += outputs[heads.AGE_STD].astype(float).tolist()
    for coverage in heads.INTERVALS:
        name = heads.interval_output(coverage)
        if name in outputs:
            rows[f"{name}_low"] += outputs[name][:, 0].astype(float).tolist()
            rows[f"{name}_high"] += outputs[name][:, 1].astype(float).tolist()
    for name in PHOTO_COLUMNS:
        if name in outputs:
            rows[name] += np.asarray(outputs[name]).tolist()


def build_report(predictions, skipped, model_dir, data, name=None, detection=None):
    if not len(predictions.get("true_age", [])):
        raise EvaluationError(f"no image could be evaluated ({skipped.to_json()['by_reason']})")
    intervals = {c: (predictions[f"{heads.interval_output(c)}_low"],
                     predictions[f"{heads.interval_output(c)}_high"])
                 for c in heads.INTERVALS if f"{heads.interval_output(c)}_low" in predictions}
    prob_female = predictions.get("prob_female")
    report = metrics_lib.full_report(
        predictions["true_age"], predictions["pred_age"], race=predictions["race"],
        true_gender=predictions["gender"], pred_gender=predictions.get("pred_gender"),
        age_std=predictions.get("age_std"), age_intervals=intervals,
        gender_probability=(None if prob_female is None
                            else np.stack([1 - prob_female, prob_female], axis=-1)))
    if not name:
        base, version = os.path.split(os.path.normpath(model_dir))
        name = f"{os.path.basename(base)} v{version}" if version.isdigit() else version
    report.update(name=name, model=model_dir, data=data,
                  skipped=skipped.to_json())
    if detection is not None:
        report["detection"] = detection.to_json()
    return report


def write_outputs(report, predictions, output_dir, compare=None):
    tf.io.gfile.makedirs(output_dir)
    with tf.io.gfile.GFile(os.path.join(output_dir, "metrics.json"), "w") as f:
        f.write(json.dumps(report, indent=2))
    with tf.io.gfile.GFile(os.path.join(output_dir, "predictions.csv"), "w") as f:
        writer = csv.writer(f, lineterminator="\n")
        cols = [c for c in ("source", "true_age", "pred_age", "gender", "pred_gender", "race",
                            "prob_female", "age_std", "age_interval_50_low",
                            "age_interval_50_high", "age_interval_80_low",
                            "age_interval_80_high", *PHOTO_COLUMNS)
                if c in predictions]
        writer.writerow(cols)
        for i in range(len(predictions["source"])):
            writer.writerow([predictions[c][i] for c in cols])
    plots = report_lib.write_plots(report, predictions, output_dir, compare)
    return report_lib.write_html(report, plots, output_dir, compare)


def run(cfg):
    """Runs an evaluation configured by parsed flags; returns the exit code."""
    if not cfg.model or not cfg.output_dir:
        raise app.UsageError("--model and --output_dir are required")
    if bool(cfg.input) == bool(cfg.records_dir):
        raise app.UsageError("give exactly one of --input (images) or --records_dir (records)")
    if cfg.photos and not cfg.input:
        raise app.UsageError("--photos evaluates the photos of --input (records hold crops)")
    if cfg.records_dir and not cfg.split:
        # No default: a default of test invites choosing on it, a default of validation
        # would silently change what an old command reports.
        raise app.UsageError("--records_dir needs --split: validation to compare runs and "
                             "choose between them, test once, for the report")
    try:
        compare = None
        if cfg.compare:
            with tf.io.gfile.GFile(cfg.compare) as f:
                compare = json.load(f)
        runner = runner_for(cfg.model, cfg.max_image_pixels, photos=cfg.photos)
        print(f"model: {runner.model_path}", flush=True)
        skipped = Skipped()
        if cfg.records_dir:
            items = iter_records(cfg.records_dir, cfg.split)
            total = records.expected_count(cfg.records_dir, cfg.split)
            data = f"{cfg.records_dir} ({cfg.split} split)"
        else:
            items = iter_images(cfg.input, cfg.labels_csv, skipped, cfg.max_image_pixels,
                                cfg.follow_symlinks)
            total = None
            data = cfg.input
        if cfg.limit and total:
            total = min(total, cfg.limit)
        detection = Detection() if cfg.photos else None
        predictions, skipped = evaluate(runner, items, cfg.batch_size, cfg.limit, total,
                                        skipped, detection, cfg.progress_seconds)
        if detection is not None and not detection.with_face:
            raise EvaluationError(f"no face found in any of the {detection.photos} photo(s) "
                                  f"the model read ({skipped.to_json()['by_reason']})")
        report = build_report(predictions, skipped, runner.model_path, data, cfg.name,
                              detection)
        html_path = write_outputs(report, predictions, cfg.output_dir, compare)
    except (EvaluationError, FileNotFoundError, ValueError) as e:  # incl. records' errors
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(report_lib.format_summary(report, compare))
    if detection is not None:
        d = report["detection"]
        print(f"faces found in {d['with_face']} of {d['photos']} photo(s): detection recall "
              f"{d['recall']:.3f}; the metrics above are those of each photo's largest face")
        no_face = [i["source"] for i in skipped.items
                   if i["reason"] == image_sources.NO_FACE]
        if no_face:
            print(f"no face found in: {', '.join(no_face[:20])}"
                  + (f" and {len(no_face) - 20} more" if len(no_face) > 20 else ""))
    if skipped.items:
        print(f"skipped {len(skipped.items)} input(s): {skipped.to_json()['by_reason']}")
    print(f"report: {html_path}")
    return 0


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    sys.exit(run(flags.FLAGS))


def main():
    define_flags(flags.FLAGS)
    app.run(_main)


if __name__ == "__main__":
    main()
