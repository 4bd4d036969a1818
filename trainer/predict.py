"""Loading a trained job and using it: predict a directory of images, evaluate a split.

Both read `--job_dir/model.keras` + `model_spec.json` exactly as the export does
(`agegender.job_dir.load`) and feed
pixels from `agegender.preprocessing.model_input`, so what they report is what the served
model would answer. `predict_photos` runs ordinary photos through the export's
predict_photo path in process (`agegender.photo_inference`: faces found and aligned in TF
ops), one line per face.
"""
import os

from absl import logging
import numpy as np
import tensorflow as tf

from agegender import (console, heads, image_header, inference, photo_answers, photo_inference,
                       prediction_line, preprocessing, records, schema)
from agegender import job_dir as job_dir_lib
from agegender import metrics as metrics_lib
from trainer import input_pipeline

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def load(job_dir):
    """(Keras model, ModelSpec) from a job directory, with a clear error when absent."""
    return job_dir_lib.load(job_dir)


def _predict_fn(model, spec):
    """The model's raw outputs as every prediction path computes them (agegender.inference)."""
    return tf.function(lambda x: inference.raw_outputs(model, x, spec), reduce_retracing=True)


def _is_image(name):
    # UTKFace has a file without extension; accept those that are not obviously other files.
    lower = name.lower()
    return lower.endswith(IMAGE_EXTENSIONS) or "." not in name


def _image_files(sample_dir):
    files = sorted(f for f in tf.io.gfile.listdir(sample_dir)
                   if _is_image(f) and not tf.io.gfile.isdir(os.path.join(sample_dir, f)))
    if not files:
        raise FileNotFoundError(f"no images in {sample_dir!r}")
    return files


def predict_photos(job_dir, sample_dir, out=print, max_pixels=image_header.DEFAULT_MAX_PIXELS,
                   draw_dir=None):
    """Prints one line per face found in each photo of `sample_dir` ("no face found" for a
    photo without one), through the predict_photo path in process; with `draw_dir`, writes
    each photo with its faces drawn (`faces.drawing`). A photo over `max_pixels` or that
    is no image is skipped with a warning, never decoded. Returns [{"file", "faces"}]."""
    from faces import drawing

    model, spec = load(job_dir)
    predict = photo_inference.PhotoPredictor(model, spec, max_pixels=max_pixels).predict_fn()
    results, drawn = [], set()
    for name in _image_files(sample_dir):
        data = tf.io.gfile.GFile(os.path.join(sample_dir, name), "rb").read()
        try:
            image_header.check(data, max_pixels)
            # One photo per call: each is decoded whole, and a bad one fails alone.
            outputs = predict(tf.constant([data]), tf.constant([], tf.string))
        except (ValueError, tf.errors.InvalidArgumentError) as e:  # NotAnImage, ImageTooLarge
            logging.warning("skipping %s: %s", name, getattr(e, "message", e))
            continue
        faces = photo_answers.photo_faces({k: v.numpy() for k, v in outputs.items()})[0]["faces"]
        for line in prediction_line.photo_lines(name, faces):
            out(line)
        if draw_dir:
            picture = drawing.draw(data, faces, [prediction_line.face_label(f) for f in faces],
                                   max_pixels)
            drawing.save(picture, draw_dir, name, drawn)
        results.append({"file": name, "faces": faces})
    known = []
    for result in results:
        labels = prediction_line.true_labels(result["file"])
        largest = photo_answers.largest_face(result["faces"])
        if labels and largest is not None:
            known.append(abs(result["faces"][largest][heads.AGE] - labels.age))
    found = sum(1 for r in results if r["faces"])
    out(f"faces found in {found} of {len(results)} photo(s)")
    if known:
        out(f"MAE over {len(known)} photo(s) with a known age (their largest face): "
            f"{float(np.mean(known)):.2f}")
    return results


def predict_dir(job_dir, sample_dir, batch_size=32, out=print,
                max_pixels=image_header.DEFAULT_MAX_PIXELS):
    """Prints one line per image: predicted age (and gender), true ones from the name.

    Each image's header is read first: an image over `max_pixels` (a decompression bomb) or
    bytes that are no image are skipped with a warning, never decoded."""
    model, spec = load(job_dir)
    predict = _predict_fn(model, spec)
    files = _image_files(sample_dir)
    results = []
    for start in range(0, len(files), batch_size):
        chunk, images = [], []
        for name in files[start:start + batch_size]:
            data = tf.io.gfile.GFile(os.path.join(sample_dir, name), "rb").read()
            try:
                image_header.check(data, max_pixels)
            except ValueError as e:  # NotAnImage, ImageTooLarge
                logging.warning("skipping %s: %s", name, e)
                continue
            try:
                images.append(preprocessing.model_input(data, spec.img_dim, max_pixels))
                chunk.append(name)
            except tf.errors.InvalidArgumentError:
                logging.warning("skipping %s: not a decodable image", name)
        if not images:
            continue
        raw = {k: v.numpy() for k, v in predict(tf.stack(images)).items()}
        # The signatures' outputs: calibrated spread and gender probability included.
        served = {k: np.asarray(v) for k, v in heads.serving_outputs(raw, spec).items()}
        for i, name in enumerate(chunk):
            answer = {k: v[i] for k, v in served.items()}
            out(prediction_line.answer_line(name, answer))
            labels = prediction_line.true_labels(name)
            results.append({"file": name, "predicted_age": float(answer[heads.AGE]),
                            "true_age": labels.age if labels else None,
                            "predicted_gender": photo_answers.gender_index(answer)})
    known = [r for r in results if r["true_age"] is not None]
    if known:
        mae = float(np.mean([abs(r["predicted_age"] - r["true_age"]) for r in known]))
        out(f"MAE over {len(known)} image(s) with a known age: {mae:.2f}")
    return results


def split_outputs(model, spec, records_dir, split, batch_size=64, limit=0):
    """The model's raw outputs on a records split (deterministic order, evaluation
    preprocessing) and the labels: ({output: ndarray}, {feature: ndarray})."""
    config = input_pipeline.InputConfig(records_dir, batch_size=batch_size,
                                        augment=input_pipeline.AugmentConfig(enabled=False))
    reader = input_pipeline.InputReader(config, split, input_pipeline.Parser.for_config(
        spec, config))
    predict = _predict_fn(model, spec)
    outputs, labels = {}, {k: [] for k in (schema.AGE, schema.RACE, schema.GENDER)}
    seen = 0
    total = records.expected_count(records_dir, split)
    progress = console.Progress(f"{split} split", "images predicted",
                                total=min(limit, total or limit) if limit else total)
    for batch in reader.dataset(is_training=False, targets=False):
        for k, v in predict(batch["image"]).items():
            outputs.setdefault(k, []).append(v.numpy())
        for k in labels:
            labels[k].append(batch[k].numpy())
        seen += len(batch[schema.AGE])
        progress.add(len(batch[schema.AGE]))
        if limit and seen >= limit:
            break
    end = limit or None
    return ({k: np.concatenate(v)[:end] for k, v in outputs.items()},
            {k: np.concatenate(v)[:end] for k, v in labels.items()})


def report_from_outputs(outputs, labels, spec):
    """agegender.metrics.full_report from raw outputs, through the heads' serving outputs
    (the same numbers the exported signatures give, spread and calibration included)."""
    served = {k: np.asarray(v) for k, v in heads.serving_outputs(outputs, spec).items()}
    gender = heads.gender_head(spec)
    intervals = {c: (served[heads.interval_output(c)][:, 0], served[heads.interval_output(c)][:, 1])
                 for c in heads.INTERVALS if heads.interval_output(c) in served}
    probability = served.get(gender.probability_output) if gender else None
    return metrics_lib.full_report(
        labels[schema.AGE], served[heads.AGE], race=labels[schema.RACE],
        true_gender=labels[schema.GENDER],
        pred_gender=None if probability is None else probability.argmax(-1),
        age_std=served.get(heads.AGE_STD), age_intervals=intervals,
        gender_probability=probability)


def evaluate_split(model, spec, records_dir, split="test", batch_size=64, limit=0):
    """agegender.metrics.full_report of `model` on a records split (deterministic order)."""
    outputs, labels = split_outputs(model, spec, records_dir, split, batch_size, limit)
    report = report_from_outputs(outputs, labels, spec)
    report["split"] = split
    return report


def write_eval(job_dir, records_dir, split="test", batch_size=64, limit=0):
    """Loads the job's saved model and writes `eval.json` on `split`; returns the report."""
    model, spec = load(job_dir)
    report = evaluate_split(model, spec, records_dir, split, batch_size, limit)
    job_dir_lib.write_json(job_dir, job_dir_lib.EVAL_FILE, report, indent=2, sort_keys=True)
    path = job_dir_lib.path(job_dir, job_dir_lib.EVAL_FILE)
    logging.info("%s: MAE %.2f, CS@5 %.3f, gender accuracy %s over %d %s images", path,
                 report["mae"], report["cs@5"], report["gender_accuracy"], report["count"],
                 split)
    return report
