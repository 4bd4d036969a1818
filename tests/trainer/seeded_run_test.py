"""Seeded runs are reproducible: resumed in either phase, or rerun in another process, a
run ends with exactly the weights, per-epoch metrics and eval.json of one uninterrupted run.

One uninterrupted run (`reference`, in process) is what every test here compares against,
so it is trained once for the file. Its flags turn on every lever the CPU recipe turns on
(degradations on every face, rare-age and gender loss weights, the mean term, the cached
frames, the cosine schedule, the flipped evaluation), so none of them can bring randomness
in unnoticed; its epochs cover 3 of the train split's 12 batches, so every resume has to
pick the data stream up mid-pass. The stream itself, resumed at any batch with and without
the cache, is compared image for image in `input_pipeline_test.py`.
"""
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from agegender import job_dir as job_dir_lib
from trainer import flags as trainer_flags
from trainer import task

SEEDED = ["--seed=7", "--predict_gender", "--epochs=2", "--fine_tune_epochs=2",
          "--fine_tune_at=120", "--steps_per_epoch=3", "--lr_scheduler=cosine",
          "--degrade_probability=1.0", "--rare_age_weight_power=1.0", "--rare_age_weight_max=3",
          "--gender_loss_weight=1.5", "--age_mean_loss_weight=3.0", "--cache=memory",
          "--test_time_flip"]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class _Killed(Exception):
    """Stands for the process being killed after an epoch's checkpoint was written."""


def _train(records, job, tiny_run_args, *extra, stop_after=()):
    """Trains in process; raises _Killed (returns its epoch) after an epoch in stop_after,
    as a process killed right after that epoch's checkpoint. None when the run finished."""
    from trainer import checkpoints

    original = checkpoints.ResumeState.on_epoch_end

    def on_epoch_end(self, epoch, logs=None):
        original(self, epoch, logs)
        if epoch + 1 in stop_after:
            raise _Killed(epoch + 1)
    checkpoints.ResumeState.on_epoch_end = on_epoch_end
    keras.backend.clear_session()
    try:
        task.run(trainer_flags.parse(tiny_run_args(records, job, *SEEDED, *extra)))
    except _Killed as stopped:
        return int(str(stopped))
    finally:
        checkpoints.ResumeState.on_epoch_end = original
        keras.mixed_precision.set_global_policy("float32")
        keras.backend.clear_session()
    return None


def _outputs(job):
    """(history, weights, eval.json) of a finished job dir."""
    return (json.loads((job / "history.json").read_text()), job_dir_lib.load(job)[0].get_weights(),
            json.loads((job / "eval.json").read_text()))


def _assert_same_run(one, other):
    (h1, w1, e1), (h2, w2, e2) = one, other
    assert [(h["phase"], h["epoch"]) for h in h2] == [(h["phase"], h["epoch"]) for h in h1]
    for r1, r2 in zip(h1, h2):
        assert set(r1) == set(r2)
        for key in r1:
            assert r1[key] == pytest.approx(r2[key], abs=1e-6), key
    assert len(w1) == len(w2)
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    assert e1["split"] == e2["split"] == "validation"
    for key in ("mae", "cs@5", "gender_accuracy"):
        assert e1[key] == pytest.approx(e2[key], abs=1e-6), key


@pytest.fixture(scope="module")
def reference(tiny_records, tmp_path_factory, tiny_run_args):
    """The uninterrupted seeded run: (job dir, its outputs)."""
    job = tmp_path_factory.mktemp("reference") / "job"
    assert _train(tiny_records, job, tiny_run_args) is None
    outputs = _outputs(job)
    assert [(h["phase"], h["epoch"]) for h in outputs[0]] == [
        ("head", 1), ("head", 2), ("fine_tune", 3), ("fine_tune", 4)]
    return job, outputs


@pytest.mark.slow
def test_a_resumed_run_ends_as_the_uninterrupted_one(tiny_records, tmp_path, tiny_run_args,
                                                    reference):
    """Stopped after epoch 1 (head phase) and again after epoch 3 (fine-tuning), each time
    resumed with the same command: the end is the uninterrupted run's, bit for bit."""
    resumed = tmp_path / "resumed"
    assert _train(tiny_records, resumed, tiny_run_args, stop_after={1, 3}) == 1
    assert not (resumed / "model.keras").exists()
    assert _train(tiny_records, resumed, tiny_run_args, stop_after={1, 3}) == 3  # 1 not rerun
    assert _train(tiny_records, resumed, tiny_run_args, stop_after={1, 3}) is None
    _assert_same_run(reference[1], _outputs(resumed))


@pytest.mark.slow
def test_same_seed_same_run(tiny_records, tmp_path, tiny_run_args, reference):
    """The same flags as `python -m trainer.task` in a process of its own give the in-process
    run's per-epoch metrics, weights and eval.json (op determinism, ordered input, seeded
    augmentation); another seed trains another first epoch."""
    job = tmp_path / "b"
    res = subprocess.run(
        [sys.executable, "-m", "trainer.task", *tiny_run_args(tiny_records, job, *SEEDED)],
        cwd=REPO, capture_output=True, text=True, timeout=600,
        env={**{k: v for k, v in os.environ.items() if k != "TF_CONFIG"},
             "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": REPO})
    assert res.returncode == 0, res.stderr[-3000:]
    _assert_same_run(reference[1], _outputs(job))
    # Another seed (nothing else changed) trains another first epoch: its metrics differ.
    # (One head epoch is enough to show it: the seed reaches the weights' initialisation,
    # the order and the augmentation from the first step on.)
    other = tmp_path / "c"
    assert _train(tiny_records, other, tiny_run_args, "--seed=8", "--epochs=1",
                  "--fine_tune_epochs=0") is None
    first = json.loads((other / "history.json").read_text())[0]
    want = reference[1][0][0]
    assert (first["phase"], first["epoch"]) == (want["phase"], want["epoch"]) == ("head", 1)
    assert any(first[k] != pytest.approx(want[k], abs=1e-6) for k in want
               if isinstance(want[k], float))
