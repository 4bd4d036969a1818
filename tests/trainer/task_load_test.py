"""A finished job dir used again: predict mode, --load (evaluation), and reruns that only
refit what follows training (the age prior correction, the calibration on other records).

The job dir is trained once for the file (`_trained`) and copied for each test.
"""
import json
import os
import shutil

import keras
import numpy as np
import pytest

from agegender import age_prior, heads, model_spec, records
from agegender import job_dir as job_dir_lib
from trainer import flags as trainer_flags
from trainer import task

JOB_FLAGS = ("--predict_gender",)


def _run(records_dir, job_dir, tiny_run_args, *extra):
    return task.run(trainer_flags.parse(tiny_run_args(records_dir, job_dir, *extra)))


@pytest.fixture(scope="module")
def _trained(tiny_records, tmp_path_factory, tiny_run_args):
    job = tmp_path_factory.mktemp("finished") / "job"
    _run(tiny_records, job, tiny_run_args, *JOB_FLAGS)
    keras.backend.clear_session()
    return job


@pytest.fixture
def finished_job(_trained, tmp_path):
    """A copy of a finished tiny run (--predict_gender) of the test's own; its state names
    the copy's checkpoints."""
    job = tmp_path / "job"
    shutil.copytree(_trained, job)
    state = job / "train_state.json"
    state.write_text(state.read_text().replace(str(_trained), str(job)))
    return job


def test_load_predicts_directory(tiny_records, tmp_path, tiny_run_args, capsys, png_bomb,
                                caplog, finished_job):
    job = finished_job
    samples = tmp_path / "samples"
    samples.mkdir()
    from PIL import Image
    Image.new("RGB", (50, 60), (120, 90, 60)).save(samples / "34_1_0_20170116174525125.jpg")
    Image.new("RGB", (40, 40), (10, 90, 60)).save(samples / "someone.png")
    (samples / "notes.txt").write_text("not an image")
    (samples / "40_0_0_20170116174525126.png").write_bytes(png_bomb)  # skipped, never decoded
    capsys.readouterr()
    results = _run(tiny_records, job, tiny_run_args, "--load",
                   f"--test_sample_dir={samples}")
    out = capsys.readouterr().out
    assert "Predicted age:" in out and "true age: 34" in out and "true age: unknown" in out
    assert " ± " in out and "(80%: " in out  # the calibrated spread
    assert "predicted gender:" in out and "true gender: female" in out
    assert len(results) == 2
    assert "20000x20000" in caplog.text and "over the limit" in caplog.text


def _assert_same_report(got, want, where="report"):
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), where
        for key in want:
            _assert_same_report(got[key], want[key], f"{where}.{key}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), where
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same_report(g, w, f"{where}[{i}]")
    elif isinstance(want, float):
        assert got == pytest.approx(want, abs=1e-5), where
    else:
        assert got == want, where


def test_load_rewrites_the_validation_eval_and_names_the_test_split_apart(
        tiny_records, tiny_run_args, finished_job, capsys):
    """--load --records_dir rewrites eval.json on the validation split; the test split is
    evaluated only when named (--eval_split=test), into eval_test.json, which leaves
    eval.json as it was."""
    job = finished_job
    trained = json.loads((job / "eval.json").read_text())
    assert trained["split"] == "validation" and trained["count"] == 16  # --eval_limit=16
    (job / "eval.json").unlink()
    capsys.readouterr()
    report = _run(tiny_records, job, tiny_run_args, *JOB_FLAGS, "--load")
    assert report["split"] == "validation"
    assert "Validation split: MAE" in capsys.readouterr().out
    rewritten = json.loads((job / "eval.json").read_text())
    # The trainer's eval.json came from the outputs of its calibration pass, this one from
    # the model saved and loaded again: the same report, figure for figure.
    _assert_same_report(rewritten, trained)
    assert not (job / "eval_test.json").exists()
    report = _run(tiny_records, job, tiny_run_args, *JOB_FLAGS, "--load", "--eval_split=test",
                  "--eval_limit=0")
    assert "Test split: MAE" in capsys.readouterr().out
    test_eval = json.loads((job / "eval_test.json").read_text())
    assert test_eval["split"] == report["split"] == "test"
    assert test_eval["count"] == records.report(tiny_records)["splits"]["test"]["examples"]
    assert json.loads((job / "eval.json").read_text()) == rewritten


def test_load_photos_prints_each_face_and_draws_them(tiny_records, tmp_path, tiny_run_args,
                                                     capsys, caplog, png_bomb, synthetic_photos,
                                                     photo_tools):
    """--load --photos: one line per face (the photo's labels on its largest face), "no face
    found", bombs skipped undecoded; --draw_dir gets each photo with its faces drawn."""
    from PIL import Image
    from testing import synthetic_faces, tiny_models

    job = tiny_models.make_job_dir(tmp_path / "job", img_dim=32, type="classification",
                                   predict_gender=True)
    samples = tmp_path / "photos"
    samples.mkdir()
    several = synthetic_photos(1, 1, faces_per_photo=(3, 3), face_sizes=(70, 150))[0]
    name = synthetic_faces.labelled_name(several, 0)
    (samples / name).write_bytes(photo_tools.encode(several.image))
    (samples / "wall.png").write_bytes(photo_tools.encode(photo_tools.plain(), "PNG"))
    (samples / "40_0_0_20170116174525126.png").write_bytes(png_bomb)
    capsys.readouterr()
    results = _run(tiny_records, job, tiny_run_args, "--load", f"--test_sample_dir={samples}",
                   "--photos", f"--draw_dir={tmp_path / 'drawn'}")
    out = capsys.readouterr().out.splitlines()
    assert sum(line.startswith(f"{name} face ") for line in out) == 3
    largest = max(results[0]["faces"], key=lambda f: (f["box"][2] - f["box"][0]))
    labelled = [line for line in out if "true age:" in line]
    assert len(labelled) == 1 and f"Predicted age: {largest['age']:.1f}" in labelled[0]
    assert "wall.png: no face found" in out
    assert "faces found in 1 of 2 photo(s)" in out
    assert "20000x20000" in caplog.text
    assert [r["file"] for r in results] == [name, "wall.png"]
    assert Image.open(tmp_path / "drawn" / name).size == (640, 480)
    assert (tmp_path / "drawn" / "wall.png").is_file()
    with pytest.raises(Exception, match="--draw_dir needs --photos"):
        _run(tiny_records, job, tiny_run_args, "--load", f"--test_sample_dir={samples}",
             f"--draw_dir={tmp_path / 'drawn'}")


def test_age_prior_correction_goes_into_the_spec_and_can_change_without_retraining(
        tiny_records, tiny_run_args, finished_job):
    """--age_prior_correction sets the spec's class weights from the records' train counts;
    rerunning the finished job with another value changes them (and eval.json) while the
    trained weights stay as they were; rerun without it, the job is back where it was."""
    job = finished_job
    first_eval = json.loads((job / "eval.json").read_text())
    model = keras.models.load_model(os.path.join(job, job_dir_lib.MODEL_FILE), compile=False)
    before = [w.copy() for w in model.get_weights()]
    _run(tiny_records, job, tiny_run_args, *JOB_FLAGS, "--age_prior_correction=1.0")
    spec = model_spec.ModelSpec.from_json((job / "model_spec.json").read_text())
    counts = records.report(tiny_records)["splits"]["train"]["age_decade"]
    assert spec.age_prior_correction == 1.0
    assert spec.age_prior_weights == age_prior.class_weights(
        heads.DistributionHead().class_ages(), counts, 1.0)
    model = keras.models.load_model(os.path.join(job, job_dir_lib.MODEL_FILE), compile=False)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    corrected = json.loads((job / "eval.json").read_text())
    assert corrected["mae"] != pytest.approx(first_eval["mae"], abs=1e-6)
    _run(tiny_records, job, tiny_run_args, *JOB_FLAGS)  # the same run, without the correction
    spec = model_spec.ModelSpec.from_json((job / "model_spec.json").read_text())
    assert spec.age_prior_weights is None and spec.age_prior_correction == 0.0
    again = json.loads((job / "eval.json").read_text())
    assert again["mae"] == pytest.approx(first_eval["mae"], abs=1e-6)


@pytest.mark.slow
def test_rerunning_a_finished_job_on_other_records_is_refused_unless_allowed(
        tiny_records, tmp_path, tiny_run_args, finished_job):
    """A finished job rerun on records of another image size: refused before anything is
    built, its eval.json and spec untouched; with --allow_other_records it refits on them
    and the job dir names them from then on."""
    from agegender import schema
    from trainer import records_fingerprint

    job = finished_job
    other = tmp_path / "records_160"
    shutil.copytree(tiny_records, other)
    report = json.loads((other / schema.REPORT_FILE).read_text())
    report["metadata"][schema.META_IMAGE_SIZE] = 160
    (other / schema.REPORT_FILE).write_text(json.dumps(report))
    before = {name: (job / name).read_bytes() for name in ("eval.json", "model_spec.json")}
    with pytest.raises(task.ConfigError, match=r"was trained on other records \(48 px.*"
                                               r"\(160 px.*--allow_other_records"):
        _run(other, job, tiny_run_args, *JOB_FLAGS)
    assert {name: (job / name).read_bytes() for name in before} == before
    _run(other, job, tiny_run_args, *JOB_FLAGS, "--allow_other_records")
    assert records_fingerprint.stored(job)["records_dir"] == str(other)
