"""Loading a trained job and using it: predict a directory of images, evaluate a split.

Both read `--job_dir/model.keras` + `model_spec.json` exactly as the export does
(`agegender.job_dir.load`) and feed
pixels from `agegender.preprocessing.model_input`, so what they report is what the served
model would answer.
"""
import os

from absl import logging
import numpy as np
import tensorflow as tf

from agegender import heads, image_header, prediction_line, preprocessing, schema
from agegender import job_dir as job_dir_lib
from agegender import metrics as metrics_lib
from trainer import input_pipeline

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")


def load(job_dir):
    """(Keras model, ModelSpec) from a job directory, with a clear error when absent."""
    return job_dir_lib.load(job_dir)


def _predict_fn(model):
    return tf.function(lambda x: model(x, training=False), reduce_retracing=True)


def outputs_to_predictions(outputs, spec):
    """(ages [N] float, genders [N] int or None, gender probability of the argmax or None)."""
    ages = np.asarray(heads.ages_from_outputs(outputs, spec))
    gender = heads.gender_head(spec)
    if gender is not None and gender.output in outputs:
        classes, probability = gender.predictions(outputs[gender.output])
        return ages, classes, probability
    return ages, None, None


def _is_image(name):
    # UTKFace has a file without extension; accept those that are not obviously other files.
    lower = name.lower()
    return lower.endswith(IMAGE_EXTENSIONS) or "." not in name


def predict_dir(job_dir, sample_dir, batch_size=32, out=print,
                max_pixels=image_header.DEFAULT_MAX_PIXELS):
    """Prints one line per image: predicted age (and gender), true ones from the name.

    Each image's header is read first: an image over `max_pixels` (a decompression bomb) or
    bytes that are no image are skipped with a warning, never decoded."""
    model, spec = load(job_dir)
    predict = _predict_fn(model)
    files = sorted(f for f in tf.io.gfile.listdir(sample_dir)
                   if _is_image(f) and not tf.io.gfile.isdir(os.path.join(sample_dir, f)))
    if not files:
        raise FileNotFoundError(f"no images in {sample_dir!r}")
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
        outputs = {k: v.numpy() for k, v in predict(tf.stack(images)).items()}
        ages, genders, gprobs = outputs_to_predictions(outputs, spec)
        for i, name in enumerate(chunk):
            labels = prediction_line.true_labels(name)
            line = prediction_line.prediction_line(
                name, ages[i], None if genders is None else int(genders[i]),
                None if genders is None else float(gprobs[i]))
            out(line)
            results.append({"file": name, "predicted_age": float(ages[i]),
                            "true_age": labels.age if labels else None,
                            "predicted_gender": (None if genders is None
                                                 else int(genders[i]))})
    known = [r for r in results if r["true_age"] is not None]
    if known:
        mae = float(np.mean([abs(r["predicted_age"] - r["true_age"]) for r in known]))
        out(f"MAE over {len(known)} image(s) with a known age: {mae:.2f}")
    return results


def evaluate_split(model, spec, records_dir, split="test", batch_size=64, limit=0):
    """agegender.metrics.full_report of `model` on a records split (deterministic order)."""
    config = input_pipeline.InputConfig(records_dir, batch_size=batch_size,
                                        augment=input_pipeline.AugmentConfig(enabled=False))
    reader = input_pipeline.InputReader(config, split, input_pipeline.Parser.for_config(
        spec, config))
    ds = reader.dataset(is_training=False, targets=False)
    predict = _predict_fn(model)
    true_age, race, true_gender, pred_age, pred_gender = [], [], [], [], []
    seen = 0
    for batch in ds:
        outputs = {k: v.numpy() for k, v in predict(batch["image"]).items()}
        ages, genders, _ = outputs_to_predictions(outputs, spec)
        pred_age.append(ages)
        if genders is not None:
            pred_gender.append(genders)
        true_age.append(batch[schema.AGE].numpy())
        race.append(batch[schema.RACE].numpy())
        true_gender.append(batch[schema.GENDER].numpy())
        seen += len(ages)
        if limit and seen >= limit:
            break
    cat = lambda xs: np.concatenate(xs)[:limit] if limit else np.concatenate(xs)  # noqa: E731
    report = metrics_lib.full_report(
        cat(true_age), cat(pred_age), race=cat(race), true_gender=cat(true_gender),
        pred_gender=cat(pred_gender) if pred_gender else None)
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
