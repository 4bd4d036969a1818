"""Loading a trained job and using it: predict a directory of images, evaluate a split.

Both read `--job_dir/model.keras` + `model_spec.json` exactly as the export does
(`agegender.job_dir.load`). Predict mode asks the job dir through the Python API
(`FaceAnalyzer.from_job_dir`: the export's serving_default and predict_photo functions in
process), so what it prints is what the served model would answer: `predict_dir` one line
per face image, `predict_photos` one line per face found in ordinary photos.
"""
import os

from absl import logging
import numpy as np
import tensorflow as tf

from agegender import (console, heads, image_header, inference, photo_answers, prediction_line,
                       records, schema)
from agegender import job_dir as job_dir_lib
from agegender import metrics as metrics_lib
from agegender.errors import ImageError, ModelLoadError
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


def _analyzer(job_dir, max_pixels):
    """The job dir's FaceAnalyzer; a missing or broken job dir is a FileNotFoundError, as
    `load` raises it."""
    from analyzer.face_analyzer import FaceAnalyzer

    try:
        return FaceAnalyzer.from_job_dir(job_dir, max_image_pixels=max_pixels)
    except ModelLoadError as e:
        raise FileNotFoundError(str(e)) from None


def _read_images(sample_dir, names):
    return [tf.io.gfile.GFile(os.path.join(sample_dir, name), "rb").read() for name in names]


def predict_photos(job_dir, sample_dir, out=print, max_pixels=image_header.DEFAULT_MAX_PIXELS,
                   draw_dir=None):
    """Prints one line per face found in each photo of `sample_dir` ("no face found" for a
    photo without one), through the predict_photo path in process; with `draw_dir`, writes
    each photo with its faces drawn (`faces.drawing`). A photo over `max_pixels` or that
    is no image is skipped with a warning, never decoded. Returns [{"file", "faces"}], each
    face as `photo_answers.face_fields` names it."""
    from faces import drawing

    analyzer = _analyzer(job_dir, max_pixels)
    results, drawn = [], set()
    for name in _image_files(sample_dir):
        (data,) = _read_images(sample_dir, [name])
        # One photo per call: each is decoded whole, and a bad one fails alone.
        (faces,) = analyzer.analyze_batch([data], on_error="return")
        if isinstance(faces, ImageError):
            logging.warning("skipping %s: %s", name, faces)
            continue
        for line in prediction_line.photo_lines(name, faces):
            out(line)
        if draw_dir:
            picture = drawing.draw(data, faces, [prediction_line.face_label(f) for f in faces],
                                   max_pixels)
            drawing.save(picture, draw_dir, name, drawn)
        results.append({"file": name, "faces": [photo_answers.face_fields(f) for f in faces],
                        "largest": photo_answers.largest_face(faces),
                        "ages": [f.age for f in faces]})
    known = []
    for result in results:
        labels = prediction_line.true_labels(result["file"])
        if labels and result["largest"] is not None:
            known.append(abs(result["ages"][result["largest"]] - labels.age))
    found = sum(1 for r in results if r["faces"])
    out(f"faces found in {found} of {len(results)} photo(s)")
    if known:
        out(f"MAE over {len(known)} photo(s) with a known age (their largest face): "
            f"{float(np.mean(known)):.2f}")
    return [{"file": r["file"], "faces": r["faces"]} for r in results]


def predict_dir(job_dir, sample_dir, batch_size=32, out=print,
                max_pixels=image_header.DEFAULT_MAX_PIXELS):
    """Prints one line per image: predicted age (and gender), true ones from the name.

    Each image's header is read first: an image over `max_pixels` (a decompression bomb) or
    bytes that are no image are skipped with a warning, never decoded."""
    analyzer = _analyzer(job_dir, max_pixels)
    files = _image_files(sample_dir)
    results = []
    for start in range(0, len(files), batch_size):
        chunk = files[start:start + batch_size]
        answers = analyzer.estimate_crops(_read_images(sample_dir, chunk), on_error="return")
        for name, face in zip(chunk, answers):
            if isinstance(face, ImageError):
                logging.warning("skipping %s: %s", name, face)
                continue
            out(prediction_line.answer_line(name, face))
            labels = prediction_line.true_labels(name)
            results.append({"file": name, "predicted_age": face.age,
                            "true_age": labels.age if labels else None,
                            "predicted_gender": face.gender_index})
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


def write_eval(job_dir, records_dir, split="validation", batch_size=64, limit=0,
               outputs=None):
    """Loads the job's saved model and writes `job_dir.eval_file(split)` (eval.json for
    validation); returns the report, its split named under "split".

    outputs: (raw outputs, labels) of this job's model on the whole split, as
    `split_outputs` gives them, when they are at hand (the trainer's calibration pass over
    validation): the model is then not run again. Raw outputs do not depend on what
    calibration changes in the spec, so the report is the same either way."""
    name = job_dir_lib.eval_file(split)
    if outputs is None:
        model, spec = load(job_dir)
        outputs = split_outputs(model, spec, records_dir, split, batch_size, limit)
    else:
        spec = job_dir_lib.load_spec(job_dir)
        outputs = [{k: v[:limit or None] for k, v in part.items()} for part in outputs]
    report = report_from_outputs(*outputs, spec)
    report["split"] = split
    job_dir_lib.write_json(job_dir, name, report, indent=2, sort_keys=True)
    path = job_dir_lib.path(job_dir, name)
    logging.info("%s: MAE %.2f, CS@5 %.3f, gender accuracy %s over %d %s images", path,
                 report["mae"], report["cs@5"], report["gender_accuracy"], report["count"],
                 split)
    return report
