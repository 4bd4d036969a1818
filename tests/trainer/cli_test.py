"""The trainer as a user runs it: `python -m trainer.task` in subprocesses.

Covers --helpfull, --flagfile, predict mode, clear errors, resume after a SIGKILL, and a
two-process MultiWorkerMirroredStrategy run on localhost. The same seed in another process
is `seeded_run_test.py::test_same_seed_same_run`.
"""
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from serving.server_process import free_port

REPO = pathlib.Path(__file__).resolve().parents[2]


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _task(args, timeout=300, **env):
    return subprocess.run([sys.executable, "-m", "trainer.task", *args], cwd=REPO,
                          env=_env(**env), capture_output=True, text=True, timeout=timeout)


def test_helpfull_lists_flags():
    res = _task(["--helpfull"], timeout=120)
    assert res.returncode in (0, 1), res.stderr  # absl exits 1 after printing help
    for flag in ("--records_dir", "--fine_tune_at", "--lr_scheduler", "--mixed_precision",
                 "--distribution", "--flagfile"):
        assert flag in res.stdout


def test_empty_records_dir_is_one_clear_line(tmp_path):
    res = _task([f"--records_dir={tmp_path}", f"--job_dir={tmp_path}/job"], timeout=120)
    assert res.returncode == 2
    assert "error: no 'train' records in" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.slow
def test_flagfile_train_then_predict(tiny_records, tmp_path, tiny_run_args):
    job = tmp_path / "job"
    flagfile = tmp_path / "tiny.flags"
    flagfile.write_text("\n".join(tiny_run_args(tiny_records, job, "--predict_gender")) + "\n")
    res = _task([f"--flagfile={flagfile}"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Validation split: MAE" in res.stdout and "Test split" not in res.stdout
    assert (job / "model.keras").exists() and (job / "eval.json").exists()

    samples = tmp_path / "samples"
    samples.mkdir()
    from PIL import Image
    Image.new("RGB", (64, 64), (128, 100, 90)).save(samples / "52_0_3_20170119181000000.jpg")
    res = _task([f"--job_dir={job}", "--load", f"--test_sample_dir={samples}"])
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Predicted age:" in res.stdout and "true age: 52" in res.stdout
    assert "true gender: male" in res.stdout


def _state(job):
    try:
        return json.loads((job / "train_state.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _run_until_killed(args, job, predicate, timeout=240):
    """Starts a run and SIGKILLs it once predicate(state) holds; returns its return code."""
    proc = subprocess.Popen([sys.executable, "-m", "trainer.task", *args], cwd=REPO,
                            env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    try:
        while proc.poll() is None and time.time() < deadline:
            if predicate(_state(job).get("phase_epochs", {})):
                proc.send_signal(signal.SIGKILL)
                break
            time.sleep(0.02)
        return proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_resume_after_sigkill_in_the_fine_tuning_phase(tiny_records, tmp_path, tiny_run_args):
    """A process SIGKILLed after its first fine-tuning epoch was checkpointed: the same
    command finishes the job without redoing any epoch of either phase. (Resuming in each
    phase, bit for bit, is `seeded_run_test.py`, in process; here the kill is real.)"""
    job = tmp_path / "job"
    args = tiny_run_args(tiny_records, job, "--epochs=2", "--fine_tune_epochs=3",
                         "--steps_per_epoch=2", "--eval_limit=8", "--verbose=2")
    rc = _run_until_killed(args, job, lambda e: e.get("fine_tune", 0) >= 3)
    assert rc == -signal.SIGKILL
    assert _state(job)["phase_epochs"]["head"] == 2
    assert not (job / "model.keras").exists()
    done = _state(job)["phase_epochs"]["fine_tune"]
    res = _task(args)
    assert res.returncode == 0, res.stderr[-3000:]
    started = [int(line.split()[1].split("/")[0]) for line in res.stdout.splitlines()
               if line.startswith("Epoch ")]
    if done < 5:
        assert started and min(started) == done + 1  # no epoch run twice, no head epoch
    history = json.loads((job / "history.json").read_text())
    assert [(h["phase"], h["epoch"]) for h in history] == [
        ("head", 1), ("head", 2), ("fine_tune", 3), ("fine_tune", 4), ("fine_tune", 5)]
    assert (job / "eval.json").exists()


@pytest.mark.slow
def test_two_worker_multi_worker_mirrored(tiny_records, tmp_path, tiny_run_args):
    job = tmp_path / "job"
    workers = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    args = tiny_run_args(tiny_records, job, "--distribution=multi_worker", "--eval_limit=8",
                         "--verbose=2")
    procs = []
    for i in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers},
                                "task": {"type": "worker", "index": i}})
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "trainer.task", *args], cwd=REPO, env=_env(TF_CONFIG=tf_config),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        outs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    assert "Strategy with 2 replica(s)" in outs[0][1] + outs[0][0]
    assert (job / "model.keras").exists() and (job / "eval.json").exists()
    history = json.loads((job / "history.json").read_text())
    assert [h["epoch"] for h in history] == [1]
    assert not (job / ".workers" / "worker-1").exists()  # the scratch dir is cleaned up
