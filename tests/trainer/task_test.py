"""The training job in-process: every mode and flag combination builds and trains steps.

Runs are tiny (MobileNetV2 alpha 0.35 at 32 px, random weights, two steps an epoch); the
flag sets are grouped so that each run covers several options at once. Every run here is
trained on records without a test split: the trainer reads train and validation only, and
a run that read the test split would fail. A finished job dir used again (predict mode,
--load, reruns) is `task_load_test.py`; seeded and resumed runs are `seeded_run_test.py`.
"""
import json
import os
import shutil
import warnings

import keras
import numpy as np
import pytest

from agegender import heads, model_spec, records, schema
from agegender import job_dir as job_dir_lib
from trainer import flags as trainer_flags
from trainer import task


def _run(records, job_dir, tiny_run_args, *extra):
    return task.run(trainer_flags.parse(tiny_run_args(records, job_dir, *extra)))


@pytest.fixture(scope="module")
def records_without_test(tiny_records, tmp_path_factory):
    """The tiny records without a single shard of the test split (report.json unchanged)."""
    copy = tmp_path_factory.mktemp("no_test") / "records"
    shutil.copytree(tiny_records, copy)
    shards = list(copy.glob("*-test.tfrecord-*"))
    assert shards
    for shard in shards:
        shard.unlink()
    return copy


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
def test_modes_train_and_leave_outputs(records_without_test, tmp_path, tiny_run_args, extra,
                                       outputs, capsys):
    job = tmp_path / "job"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        report = _run(records_without_test, job, tiny_run_args, *extra)
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
    # eval.json is the validation split's (the run had no test split to read), and says so.
    eval_json = json.loads((job / "eval.json").read_text())
    assert eval_json["split"] == report["split"] == "validation"
    assert "Validation split: MAE" in capsys.readouterr().out
    assert not (job / "eval_test.json").exists()
    assert {"mae", "cs@5", "per_decade", "per_race_gender", "gender_accuracy"} <= set(eval_json)
    assert (eval_json["gender_accuracy"] is not None) == spec.predict_gender
    if "--age_deviation=3" in extra:
        assert spec.age_deviation == 3.0
    # The resolved configuration, replayable as a flagfile, says how this run was made.
    replayed = trainer_flags.parse([f"--flagfile={job / 'flags.txt'}"])
    assert replayed.job_dir == str(job) and replayed.records_dir == str(records_without_test)
    assert replayed.eval_split == "validation"
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


@pytest.mark.parametrize("split, extra", [("validation", []), ("test", ["--eval_split=test"])])
def test_corrupt_shard_is_named_before_training(tmp_path, tiny_records, tiny_run_args, split,
                                                extra):
    """Random bytes in place of a shard that the run reads only after an epoch (validation)
    or at its end (test, when --eval_split names it): the run stops at once and names the
    file, instead of a DataLossError traceback."""
    copy = tmp_path / "records"
    shutil.copytree(tiny_records, copy)
    shard = sorted(copy.glob(f"*-{split}.tfrecord-*"))[0]
    shard.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(records.RecordsCorruptError,
                       match=f"{shard.name} is not a valid records shard"):
        _run(copy, tmp_path / "job", tiny_run_args, *extra)
    assert not (tmp_path / "job" / "train_state.json").exists()


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
    import tensorflow as tf

    copy = tmp_path / f"records_no_{split}"
    shutil.copytree(tiny_records, copy)
    for shard in copy.glob(f"*-{split}.tfrecord-*"):
        shard.unlink()
    with tf.io.TFRecordWriter(f"{schema.shard_prefix(copy, split)}-00000-of-00001"):
        pass
    return copy


@pytest.mark.parametrize("split, extra", [("validation", []), ("test", ["--eval_split=test"])])
def test_an_empty_split_the_run_reads_is_refused_before_training(
        tiny_records, tmp_path, tiny_run_args, split, extra):
    """Records built with --split=1,0,0: refused in one line before any model or dataset is
    built (it used to train a whole epoch, then fail on the missing validation metrics). The
    test split is one the run reads only when --eval_split names it."""
    empty = _records_with_empty(tiny_records, tmp_path, split)
    built = []
    original = task.build
    task.build = lambda run: built.append(run)  # must never be reached
    try:
        with pytest.raises(task.ConfigError, match=f"the '{split}' split of .* is empty"):
            _run(empty, tmp_path / "j", tiny_run_args, *extra)
    finally:
        task.build = original
    assert not built and not (tmp_path / "j" / "train_state.json").exists()


def test_the_run_counts_only_the_splits_it_reads(tiny_records, records_without_test, tmp_path):
    """Train and validation, and test only when --eval_split names it: without test shards
    the default run's check passes, the explicit one names the missing split."""
    written = {split: value["examples"]
               for split, value in records.report(tiny_records)["splits"].items()}
    assert task.count_splits(records_without_test) == {
        "train": written["train"], "validation": written["validation"]}
    assert task.count_splits(tiny_records, "test") == written
    with pytest.raises(records.RecordsNotFoundError, match="no 'test' records"):
        task.count_splits(records_without_test, "test")
    empty_test = _records_with_empty(tiny_records, tmp_path, "test")
    assert task.count_splits(empty_test) == {
        "train": written["train"], "validation": written["validation"]}
