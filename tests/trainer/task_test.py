"""The training job in-process: every mode and flag combination builds and trains steps.

Runs are tiny (MobileNetV2 alpha 0.35 at 32 px, random weights, two steps an epoch); the
flag sets are grouped so that each run covers several options at once.
"""
import json
import os
import warnings

import keras
import numpy as np
import pytest

from agegender import age_prior, heads, model_spec, records
from agegender import job_dir as job_dir_lib
from trainer import flags as trainer_flags
from trainer import task


@pytest.fixture(autouse=True)
def _reset_keras():
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()


def _run(records, job_dir, tiny_run_args, *extra):
    return task.run(trainer_flags.parse(tiny_run_args(records, job_dir, *extra)))


def _outputs_of(job_dir):
    model = keras.models.load_model(os.path.join(job_dir, job_dir_lib.MODEL_FILE), compile=False)
    out = model(np.zeros((2, 32, 32, 3), np.float32))
    return {k: v.dtype.name if hasattr(v.dtype, "name") else str(v.dtype)
            for k, v in out.items()}


@pytest.mark.parametrize("extra,outputs", [
    # classification + gender + plateau scheduler + fine-tune phase + relabel + EMA + mean
    # loss term + photo degradations + test-time flip
    (["--predict_gender", "--fine_tune_epochs=1", "--fine_tune_at=120", "--age_deviation=3",
      "--ema_momentum=0.9", "--age_mean_loss_weight=1.0", "--degrade_probability=0.5",
      "--test_time_flip"],
     {heads.DistributionHead.output, heads.GENDER}),
    # regression + cosine + memory cache + AdamW
    (["--type=regression", "--lr_scheduler=cosine", "--cache=memory", "--weight_decay=1e-4"],
     {heads.RegressionHead.output}),
    # range mode + gender + cyclic + fine-tune + mixed precision + no augmentation
    (["--range_mode", "--predict_gender", "--lr_scheduler=cyclic", "--fine_tune_epochs=1",
      "--mixed_precision=mixed_float16", "--noaugment"],
     {heads.RangeHead.output, heads.GENDER}),
], ids=["classification-gender-finetune-relabel", "regression-cosine-cache", "range-cyclic-fp16"])
def test_modes_train_and_leave_outputs(tiny_records, tmp_path, tiny_run_args, extra, outputs):
    job = tmp_path / "job"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = _run(tiny_records, job, tiny_run_args, *extra)
    # The validation dataset states its length: Keras never has to run out of it.
    assert not [w for w in caught if "ran out of data" in str(w.message)]
    for name in ("model.keras", "model_spec.json", "history.json", "learning_curves.png",
                 "eval.json", "train_state.json"):
        assert (job / name).exists(), name
    assert any((job / "logs").iterdir())
    spec = model_spec.ModelSpec.from_json((job / "model_spec.json").read_text())
    dtypes = _outputs_of(job)
    assert set(dtypes) == outputs and set(dtypes.values()) == {"float32"}
    history = json.loads((job / "history.json").read_text())
    expected_epochs = 2 if "--fine_tune_epochs=1" in extra else 1
    assert [h["epoch"] for h in history] == list(range(1, expected_epochs + 1))
    assert all(np.isfinite(h["loss"]) for h in history)
    prefix = f"{spec.age_output}_" if spec.predict_gender else ""
    assert f"val_{prefix}age_mae" in history[0] and f"{prefix}age_cs5" in history[0]
    assert report["count"] == 16 and np.isfinite(report["mae"]) and report["mae"] > 0
    eval_json = json.loads((job / "eval.json").read_text())
    assert {"mae", "cs@5", "per_decade", "per_race_gender", "gender_accuracy"} <= set(eval_json)
    assert (eval_json["gender_accuracy"] is not None) == spec.predict_gender
    if "--age_deviation=3" in extra:
        assert spec.age_deviation == 3.0
    # The resolved configuration, replayable as a flagfile, says how this run was made.
    replayed = trainer_flags.parse([f"--flagfile={job / 'flags.txt'}"])
    assert replayed.job_dir == str(job) and replayed.records_dir == str(tiny_records)
    assert replayed.type == ("regression" if "--type=regression" in extra else "classification")
    assert replayed.range_mode == ("--range_mode" in extra)


@pytest.mark.slow
def test_xla_jit_compile_trains(tiny_records, tmp_path, tiny_run_args):
    # XLA compiles the whole train and test steps: tens of seconds on CPU even when tiny.
    _run(tiny_records, tmp_path / "xla", tiny_run_args, "--jit_compile", "--steps_per_epoch=1",
         "--eval_limit=8")
    assert (tmp_path / "xla" / "model.keras").exists()


def test_lr_find_writes_plot_and_exits(tiny_records, tmp_path, tiny_run_args):
    job = tmp_path / "find"
    _run(tiny_records, job, tiny_run_args, "--lr_find", "--lr_find_steps=6")
    found = json.loads((job / "lr_find.json").read_text())
    assert len(found["learning_rates"]) == 6
    assert found["learning_rates"] == sorted(found["learning_rates"])
    assert (job / "lr_find.png").stat().st_size > 1000
    assert not (job / "model.keras").exists()


def test_load_predicts_directory(tiny_records, tmp_path, tiny_run_args, capsys, png_bomb,
                                caplog):
    job = tmp_path / "job"
    _run(tiny_records, job, tiny_run_args, "--predict_gender")
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
    # --load with --records_dir rewrites eval.json from the saved model.
    (job / "eval.json").unlink()
    _run(tiny_records, job, tiny_run_args, "--load")
    assert (job / "eval.json").exists()


def test_clear_errors(tmp_path, tiny_records, tiny_run_args):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(records.RecordsNotFoundError, match="no 'train' records"):
        _run(empty, tmp_path / "j1", tiny_run_args)
    with pytest.raises(FileNotFoundError, match="no such file"):
        _run(tiny_records, tmp_path / "j2", tiny_run_args, f"--weights={tmp_path}/missing.h5")
    with pytest.raises(FileNotFoundError, match="model.keras not found"):
        _run(tiny_records, tmp_path / "j3", tiny_run_args, "--load",
             f"--test_sample_dir={tmp_path}")


def test_corrupt_shard_is_named_before_training(tmp_path, tiny_records, tiny_run_args):
    """Random bytes in place of a shard (here the test split's, read only at the end of a
    run): the run stops at once and names the file, instead of a DataLossError traceback."""
    import shutil

    copy = tmp_path / "records"
    shutil.copytree(tiny_records, copy)
    shard = sorted(copy.glob("*-test.tfrecord-*"))[0]
    shard.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(records.RecordsCorruptError,
                       match=f"{shard.name} is not a valid records shard"):
        _run(copy, tmp_path / "job", tiny_run_args)
    assert not (tmp_path / "job" / "train_state.json").exists()


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


def test_the_records_face_alignment_goes_into_the_spec(tiny_records, tmp_path, tiny_run_args):
    """Records built with --align_faces name their template: the model's spec carries it (the
    export aligns served photos on it); records of plain crops leave it None."""
    cfg = trainer_flags.parse(tiny_run_args(tiny_records, tmp_path / "job"))
    alignment = {"template": [[0.3, 0.3], [0.7, 0.3], [0.5, 0.5], [0.3, 0.7], [0.7, 0.7]],
                 "template_sha256": "ab" * 32, "select": "largest"}
    assert task.build_spec(cfg, {"face_alignment": alignment}).face_alignment == alignment
    assert task.build_spec(cfg, records.metadata(tiny_records)).face_alignment is None
    spec = task.build_spec(cfg, {"face_alignment": alignment})
    assert model_spec.ModelSpec.from_json(spec.to_json()).face_alignment == alignment


def test_age_prior_correction_goes_into_the_spec_and_can_change_without_retraining(
        tiny_records, tmp_path, tiny_run_args):
    """--age_prior_correction sets the spec's class weights from the records' train counts;
    rerunning the finished job with another value changes them (and eval.json) while the
    trained weights stay as they were."""
    job = tmp_path / "job"
    _run(tiny_records, job, tiny_run_args, "--age_prior_correction=1.0")
    spec = model_spec.ModelSpec.from_json((job / "model_spec.json").read_text())
    counts = records.report(tiny_records)["splits"]["train"]["age_decade"]
    assert spec.age_prior_correction == 1.0
    assert spec.age_prior_weights == age_prior.class_weights(
        heads.DistributionHead().class_ages(), counts, 1.0)
    first_eval = json.loads((job / "eval.json").read_text())
    model = keras.models.load_model(os.path.join(job, job_dir_lib.MODEL_FILE), compile=False)
    before = [w.copy() for w in model.get_weights()]
    _run(tiny_records, job, tiny_run_args)  # the same run, now without the correction
    spec = model_spec.ModelSpec.from_json((job / "model_spec.json").read_text())
    assert spec.age_prior_weights is None and spec.age_prior_correction == 0.0
    model = keras.models.load_model(os.path.join(job, job_dir_lib.MODEL_FILE), compile=False)
    for a, b in zip(before, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert json.loads((job / "eval.json").read_text())["mae"] != first_eval["mae"]


def test_age_prior_correction_is_refused_before_training(tiny_records, tmp_path,
                                                         tiny_run_args):
    with pytest.raises(task.ConfigError, match="regression"):
        _run(tiny_records, tmp_path / "j", tiny_run_args, "--type=regression",
             "--age_prior_correction=0.5")
    assert not (tmp_path / "j" / "model.keras").exists()


def test_a_rare_age_weight_cap_without_weighting_is_refused(tiny_records, tmp_path,
                                                            tiny_run_args):
    """A cap with nothing to cap would silently train unweighted: refused, nothing written."""
    from absl import app

    with pytest.raises(app.UsageError, match="--rare_age_weight_power"):
        _run(tiny_records, tmp_path / "j", tiny_run_args, "--rare_age_weight_max=3")
    assert not (tmp_path / "j").exists()


def _records_with_empty(tiny_records, tmp_path, split):
    """A copy of the records whose `split` is one empty shard, as `--split=1,0,0` writes it."""
    import shutil

    import tensorflow as tf

    from agegender import schema

    copy = tmp_path / f"records_no_{split}"
    shutil.copytree(tiny_records, copy)
    for shard in copy.glob(f"*-{split}.tfrecord-*"):
        shard.unlink()
    with tf.io.TFRecordWriter(f"{schema.shard_prefix(copy, split)}-00000-of-00001"):
        pass
    return copy


@pytest.mark.parametrize("split", ["validation", "test"])
def test_an_empty_validation_or_test_split_is_refused_before_training(
        tiny_records, tmp_path, tiny_run_args, split):
    """Records built with --split=1,0,0: refused in one line before any model or dataset is
    built (it used to train a whole epoch, then fail on the missing validation metrics)."""
    empty = _records_with_empty(tiny_records, tmp_path, split)
    built = []
    original = task.build
    task.build = lambda run: built.append(run)  # must never be reached
    try:
        with pytest.raises(task.ConfigError, match=f"the '{split}' split of .* is empty"):
            _run(empty, tmp_path / "j", tiny_run_args)
    finally:
        task.build = original
    assert not built and not (tmp_path / "j" / "train_state.json").exists()


class _Killed(Exception):
    """Stands for the process being killed after an epoch's checkpoint was written."""


@pytest.mark.slow
@pytest.mark.parametrize("cache", ["", "memory"], ids=["records", "memory-cache"])
def test_a_resumed_run_ends_as_the_uninterrupted_one(tiny_records, tmp_path, tiny_run_args,
                                                    monkeypatch, cache):
    """Seeded: a run stopped after epoch 1 (head phase) and again after epoch 3 (fine-tune
    phase), each time resumed with the same command, ends with exactly the weights,
    per-epoch metrics and eval.json of a run never stopped. Epochs cover 3 of the split's
    12 batches, so every resume has to pick the data stream up mid-pass."""
    from trainer import checkpoints

    args = ["--seed=5", "--predict_gender", "--epochs=2", "--fine_tune_epochs=2",
            "--fine_tune_at=120", "--steps_per_epoch=3", "--lr_scheduler=cosine",
            "--degrade_probability=0.5", f"--cache={cache}"]

    def train(job, stop_after=()):
        original = checkpoints.ResumeState.on_epoch_end

        def on_epoch_end(self, epoch, logs=None):
            original(self, epoch, logs)
            if epoch + 1 in stop_after:
                raise _Killed(epoch + 1)
        monkeypatch.setattr(checkpoints.ResumeState, "on_epoch_end", on_epoch_end)
        keras.backend.clear_session()
        try:
            _run(tiny_records, job, tiny_run_args, *args)
        except _Killed as stopped:
            return int(str(stopped))
        finally:
            monkeypatch.undo()
        return None

    def outputs(job):
        model = keras.models.load_model(os.path.join(job, job_dir_lib.MODEL_FILE),
                                        compile=False)
        return (json.loads((job / "history.json").read_text()), model.get_weights(),
                json.loads((job / "eval.json").read_text()))

    whole = tmp_path / "whole"
    assert train(whole) is None
    resumed = tmp_path / "resumed"
    assert train(resumed, stop_after={1, 3}) == 1
    assert not (resumed / "model.keras").exists()
    assert train(resumed, stop_after={1, 3}) == 3  # epoch 1 is not run again
    assert train(resumed, stop_after={1, 3}) is None
    (h1, w1, e1), (h2, w2, e2) = outputs(whole), outputs(resumed)
    assert [(h["phase"], h["epoch"]) for h in h2] == [(h["phase"], h["epoch"]) for h in h1]
    for r1, r2 in zip(h1, h2):
        for key in r1:
            assert r1[key] == pytest.approx(r2[key], abs=1e-6), key
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert e1["mae"] == pytest.approx(e2["mae"], abs=1e-6)


@pytest.mark.slow
def test_rerunning_a_finished_job_on_other_records_is_refused_unless_allowed(
        tiny_records, tmp_path, tiny_run_args):
    """A finished job rerun on records of another image size: refused before anything is
    built, its eval.json and spec untouched; with --allow_other_records it refits on them
    and the job dir names them from then on."""
    import shutil

    from agegender import schema
    from trainer import records_fingerprint

    job = tmp_path / "job"
    _run(tiny_records, job, tiny_run_args)
    other = tmp_path / "records_160"
    shutil.copytree(tiny_records, other)
    report = json.loads((other / schema.REPORT_FILE).read_text())
    report["metadata"][schema.META_IMAGE_SIZE] = 160
    (other / schema.REPORT_FILE).write_text(json.dumps(report))
    before = {name: (job / name).read_bytes() for name in ("eval.json", "model_spec.json")}
    with pytest.raises(task.ConfigError, match=r"was trained on other records \(48 px.*"
                                               r"\(160 px.*--allow_other_records"):
        _run(other, job, tiny_run_args)
    assert {name: (job / name).read_bytes() for name in before} == before
    _run(other, job, tiny_run_args, "--allow_other_records")
    assert records_fingerprint.stored(job)["records_dir"] == str(other)
