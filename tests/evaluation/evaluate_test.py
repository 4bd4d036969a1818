"""evaluation.evaluate (and its alias trainer.evaluate) on a fake SavedModel whose answers are known in advance.

The fake model reads the age it should predict from the image itself (the red channel of a
solid-colour PNG) and the gender from the green channel, so every metric has a
hand-computed expected value.
"""
import io
import json
import os
import re
import subprocess
import sys
import zipfile

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from agegender import preprocessing, schema
from evaluation import evaluate, runners

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _FakeAgeModel(tf.Module):
    """serving_default(image_bytes, key) -> age = red level, gender = F if green > 128."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes"),
                                  tf.TensorSpec([None], tf.string, name="key")])
    def serve(self, image_bytes, key):
        pixels = preprocessing.model_input_batch(image_bytes, 8)
        age = tf.reduce_mean(pixels[..., 0], axis=[1, 2])
        female = tf.reduce_mean(pixels[..., 1], axis=[1, 2]) > 128
        p_female = tf.where(female, 0.9, 0.2)
        # The spread: intervals of +-1 and +-3 years around the answer, std = age / 10.
        return {"age": age, "gender": tf.where(female, "F", "M"), "key": key,
                "gender_probability": tf.stack([1 - p_female, p_female], axis=-1),
                "age_std": age / 10, "age_interval_50": tf.stack([age - 1, age + 1], -1),
                "age_interval_80": tf.stack([age - 3, age + 3], -1)}


def _png(red, green):
    buf = io.BytesIO()
    Image.fromarray(np.full((16, 16, 3), (red, green, 0), np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model_base(tmp_path_factory):
    base = tmp_path_factory.mktemp("models") / "age"
    module = _FakeAgeModel()
    for version in (1, 3):  # the newest version must be picked
        tf.saved_model.save(module, str(base / str(version)),
                            signatures={"serving_default": module.serve})
    return str(base)


# (true age, predicted age, true gender, predicted gender (green), race)
CASES = [(20, 22, 0, 0, 0), (30, 30, 1, 255, 0), (40, 34, 1, 0, 1), (50, 51, 0, 0, 2),
         (8, 8, 0, 0, 0), (65, 75, 1, 255, 3)]


@pytest.fixture
def image_dir(tmp_path):
    d = tmp_path / "faces"
    d.mkdir()
    for i, (age, pred, gender, green, race) in enumerate(CASES):
        (d / f"{age}_{gender}_{race}_2017010{i}123456789.png").write_bytes(_png(pred, green))
    (d / "notes.txt").write_text("not a face")  # bad name
    (d / "33_1_0_20170101000000000.jpg").write_bytes(b"")  # empty
    (d / "33_0_0_20170101000000001.jpg").write_bytes(b"this is text, not a JPEG")
    (d / "25_5_0_20170101000000002.jpg").write_bytes(_png(25, 0))  # gender 5
    return d


def _run(argv, module="evaluation.evaluate"):
    return subprocess.run([sys.executable, "-m", module, *argv], cwd=ROOT,
                          capture_output=True, text=True, timeout=300,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


def test_metrics_equal_hand_computed_values(model_base, image_dir, tmp_path):
    out = tmp_path / "report"
    result = _run([f"--model={model_base}", f"--input={image_dir}", f"--output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    errors = np.array([pred - age for age, pred, *_ in CASES], float)  # 2, 0, -6, 1, 0, 10
    assert m["model"].endswith(os.sep + "3")
    assert m["count"] == 6
    assert m["mae"] == pytest.approx(np.abs(errors).mean(), abs=1e-4)
    assert m["rmse"] == pytest.approx(np.sqrt((errors ** 2).mean()), abs=1e-4)
    assert m["cs@5"] == pytest.approx(4 / 6)
    assert m["median_abs_error"] == pytest.approx(1.5, abs=1e-4)
    assert m["per_decade"]["40-49"] == pytest.approx(
        {"count": 1, "mae": 6.0, "mean_signed_error": -6.0,
         "signed_error_standard_error": None}, abs=1e-4)
    assert m["gender_accuracy"] == pytest.approx(5 / 6)  # (40, female) predicted male
    assert m["per_race_gender"]["Black x female"]["gender_accuracy"] == 0.0
    assert m["skipped"]["by_reason"] == {"bad_gender": 1, "bad_name": 1, "empty_file": 1,
                                         "undecodable": 1}
    # Errors 2, 0, -6, 1, 0, 10 against intervals of +-1 and +-3 years.
    assert m["uncertainty"]["interval_50"]["coverage"] == pytest.approx(3 / 6)
    assert m["uncertainty"]["interval_80"]["coverage"] == pytest.approx(4 / 6)
    # Most confident = smallest std = youngest predictions: 8 (err 0), 22 (2), 30 (0).
    assert m["uncertainty"]["mae_most_confident"]["50%"] == pytest.approx(2 / 3, abs=1e-4)
    assert m["per_predicted_decade"]["70-79"]["mean_signed_error"] == pytest.approx(10.0)
    # Confidence 0.8 for four faces (three right), 0.9 for two (both right):
    # ECE = 4/6 * |0.8 - 0.75| + 2/6 * |0.9 - 1| = 1/15.
    assert m["gender_calibration"]["ece"] == pytest.approx(1 / 15, abs=1e-6)
    header = (out / "predictions.csv").read_text().splitlines()[0].split(",")
    assert {"age_std", "age_interval_80_low", "prob_female"} <= set(header)
    for name in ("scatter.png", "mae_per_decade.png", "cs_curve.png", "race_gender.png",
                 "gender_reliability.png", "report.html"):
        assert (out / name).stat().st_size > 2000, name
    assert len((out / "predictions.csv").read_text().splitlines()) == 1 + 6
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and "<img" in html and "src=\"http" not in html
    assert "Uncertainty" in html and "Per predicted decade" in html
    # per true decade, per predicted decade and per age band
    assert html.count("its standard error") == 3
    assert "MAE per age decade" not in result.stderr and "mae" in result.stdout
    assert f"report: {out}" in result.stdout


def test_compare_and_archive_input(model_base, image_dir, tmp_path):
    first = tmp_path / "first"
    assert _run([f"--model={model_base}/1", f"--input={image_dir}", f"--output_dir={first}",
                 "--name=baseline"], module="trainer.evaluate").returncode == 0  # the alias
    archive = tmp_path / "faces.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for p in sorted(image_dir.iterdir()):
            z.write(p, arcname=f"faces/{p.name}")
    second = tmp_path / "second"
    result = _run([f"--model={model_base}", f"--input={archive}", f"--output_dir={second}",
                   f"--compare={first}/metrics.json", "--name=candidate"])
    assert result.returncode == 0, result.stderr[-3000:]
    html = (second / "report.html").read_text()
    assert "baseline" in html and "candidate" in html
    assert "baseline" in result.stdout
    m = json.loads((second / "metrics.json").read_text())
    assert m["count"] == 6 and m["skipped"]["count"] == 4


def test_records_split(model_base, tmp_path):
    records = tmp_path / "records"
    records.mkdir()
    with tf.io.TFRecordWriter(str(records / "utk_face-test.tfrecord-00000-of-00001")) as w:
        for i, (age, pred, gender, green, race) in enumerate(CASES):
            img = tf.io.encode_jpeg(np.full((16, 16, 3), (pred, green, 0), np.uint8),
                                    quality=100).numpy()
            w.write(schema.make_example(
                encoded_jpeg=img, height=16, width=16, source_id=f"{i}.jpg", sha256="0" * 64,
                age=age, histogram=np.eye(101)[age], gender=gender, race=race
            ).SerializeToString())
    out = tmp_path / "rec_report"
    result = _run([f"--model={model_base}", f"--records_dir={records}", "--split=test",
                   f"--output_dir={out}", "--batch_size=4"])
    assert result.returncode == 0, result.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["count"] == 6
    assert m["mae"] == pytest.approx(19 / 6, abs=0.2)  # JPEG moves the solid colour slightly


def test_clear_errors(tmp_path, model_base):
    result = _run([f"--model={tmp_path}/nothing", f"--input={tmp_path}", f"--output_dir={tmp_path}/o"])
    assert result.returncode == 2 and "does not exist" in result.stderr
    result = _run([f"--model={model_base}", f"--records_dir={tmp_path}", f"--output_dir={tmp_path}/o"])
    assert result.returncode == 1 and "--records_dir needs --split" in result.stderr  # usage
    assert not (tmp_path / "o").exists()
    result = _run([f"--model={model_base}", f"--records_dir={tmp_path}", "--split=test",
                   f"--output_dir={tmp_path}/o"])
    assert result.returncode == 2 and "no 'test' records in" in result.stderr
    with pytest.raises(evaluate.EvaluationError):
        runners.resolve_saved_model(str(tmp_path))


def test_bombs_are_skipped_and_corrupt_shards_named(model_base, tmp_path, png_bomb):
    """A decompression bomb among labelled images is skipped as image_too_large (its header
    read, never decoded); random bytes as a records shard stop the run naming the file."""
    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "20_0_0_20170101000000000.png").write_bytes(_png(22, 0))
    (faces / "30_1_0_20170101000000001.png").write_bytes(png_bomb)
    out = tmp_path / "report"
    result = _run([f"--model={model_base}", f"--input={faces}", f"--output_dir={out}"])
    assert result.returncode == 0, result.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["count"] == 1 and m["skipped"]["by_reason"] == {"image_too_large": 1}
    assert "20000x20000" in m["skipped"]["examples"][0]["detail"]

    records = tmp_path / "records"
    records.mkdir()
    (records / "utk_face-test.tfrecord-00000-of-00001").write_bytes(
        np.random.default_rng(0).bytes(3000))
    result = _run([f"--model={model_base}", f"--records_dir={records}", "--split=test",
                   f"--output_dir={tmp_path}/o"])
    assert result.returncode == 2
    assert "utk_face-test.tfrecord-00000-of-00001 is not a valid records shard" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def photo_model(tiny_export):
    """A tiny trainer-contract model exported with predict_photo (its version dir)."""
    return os.path.join(tiny_export("clf_gender"), "1")


def test_photos_report_detection_recall_and_their_largest_faces(photo_model, tmp_path,
                                                                synthetic_photos, photo_tools,
                                                                png_bomb):
    """--photos: each photo's label is its largest face's; photos without a face are skipped
    as no_face and listed; the detection recall counts them; a bomb is never decoded."""
    from agegender import photo_answers
    from testing import synthetic_faces

    photos = tmp_path / "photos"
    photos.mkdir()
    several = synthetic_photos(1, 1, faces_per_photo=(3, 3), face_sizes=(70, 150))[0]
    small = synthetic_photos(1, 0, faces_per_photo=(1, 1), face_sizes=(40, 40),
                             max_rotation=5)[0]
    files = {synthetic_faces.labelled_name(several, 0): photo_tools.encode(several.image),
             synthetic_faces.labelled_name(small, 1, "png"): photo_tools.encode(small.image, "PNG"),
             "33_1_0_wall.jpg": photo_tools.encode(photo_tools.plain(), mode="L"),
             "40_0_0_bomb.png": png_bomb}
    for name, data in files.items():
        (photos / name).write_bytes(data)
    out = tmp_path / "report"
    result = _run([f"--model={photo_model}", f"--input={photos}", f"--output_dir={out}",
                   "--photos", "--batch_size=2"])
    assert result.returncode == 0, result.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["detection"] == {"photos": 3, "with_face": 2, "no_face": 1,
                              "recall": pytest.approx(2 / 3), "faces_found": 4}
    assert m["count"] == 2
    assert m["skipped"]["by_reason"] == {"image_too_large": 1, "no_face": 1}
    assert "33_1_0_wall.jpg" in result.stdout and "detection recall 0.667" in result.stdout
    # The row of the several-faces photo is its largest face's answer.
    several_name = synthetic_faces.labelled_name(several, 0)
    answer = runners.PhotoRunner(photo_model)([files[several_name]])[0]
    largest = answer["faces"][photo_answers.largest_face(answer["faces"])]
    rows = (out / "predictions.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert {"num_faces", "face_score", "face_x1", "face_y2"} <= set(header)
    row = dict(zip(header, next(r for r in rows if r.startswith(
        synthetic_faces.labelled_name(several, 0))).split(",")))
    assert float(row["pred_age"]) == pytest.approx(largest.age, abs=1e-3)
    assert int(row["num_faces"]) == 3
    assert float(row["face_x1"]) == pytest.approx(largest.box[0], abs=1e-3)
    assert "Face detection (photos)" in (out / "report.html").read_text()


def test_photos_need_images_and_a_saved_model(photo_model, model_base, tmp_path):
    result = _run([f"--model={photo_model}", f"--records_dir={tmp_path}", "--photos",
                   f"--output_dir={tmp_path}/o"])
    assert result.returncode != 0 and "--photos" in result.stderr
    with pytest.raises(evaluate.EvaluationError, match="no predict_photo signature"):
        runners.runner_for(model_base, photos=True)
    with pytest.raises(evaluate.EvaluationError, match="no face detector"):
        runners.runner_for(str(tmp_path / "m.tflite"), photos=True)


def test_a_log_gets_images_evaluated_so_far_and_a_terminal_keras_bar(model_base, image_dir,
                                                                      capsys, monkeypatch):
    runner = runners.runner_for(model_base)
    items = list(evaluate.iter_images(str(image_dir), skipped=evaluate.Skipped()))
    assert len(items) > 4
    # stdout is not a terminal here (captured): "so far" lines on stderr, at most every
    # progress_seconds (here: after every batch but the last, which the summary covers).
    evaluate.evaluate(runner, items, batch_size=2, total=len(items), progress_seconds=1e-9)
    lines = [line for line in capsys.readouterr().err.splitlines() if "so far" in line]
    counts = [re.fullmatch(rf"evaluation: (\d+) of {len(items)} images evaluated so far "
                           r"\(\d+/s\)", line)[1] for line in lines]
    assert counts == [str(n) for n in range(2, len(items), 2)]
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    evaluate.evaluate(runner, items, batch_size=2, total=len(items), progress_seconds=1e-9)
    assert "so far" not in capsys.readouterr().err
