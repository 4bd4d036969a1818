"""Keras callbacks of the trainer: learning-rate schedules, the LR finder and resumable state.

- `StepLRSchedule` sets the learning rate every step from a function of the global step
  (cyclic triangular and cosine), computed from the epoch so it is right after a resume.
- `LRFinder` raises the learning rate exponentially, one step at a time, recording the
  smoothed loss, and stops when the loss diverges.
- `ResumeState` makes a run resumable: at the end of every epoch it writes a
  `tf.train.Checkpoint` (model *and* optimizer state) and then, atomically, a JSON state
  file holding the phase, the epochs done, the checkpoint path, the history so far and the
  plateau scheduler's counters. The checkpoint also holds the dropout layers' random
  states, so a seeded run resumed after epoch k trains on as the uninterrupted one did
  (the input stream's part: `input_pipeline.InputReader.training_stream`). A process
  killed at any moment leaves either the previous or the new epoch recorded, never half of
  one, and no epoch is counted twice.
"""
import json
import math
import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf


def cyclic_lr(base_lr, max_lr, half_cycle_steps):
    """Triangular cyclic learning rate (Smith 2017) as a function of the step."""
    def fn(step):
        cycle_pos = (step % (2 * half_cycle_steps)) / half_cycle_steps
        frac = cycle_pos if cycle_pos <= 1 else 2 - cycle_pos
        return base_lr + (max_lr - base_lr) * frac
    return fn


def cosine_lr(max_lr, min_lr, total_steps, warmup_steps=0):
    """Linear warm-up then cosine decay to min_lr."""
    def fn(step):
        if warmup_steps and step < warmup_steps:
            return max_lr * (step + 1) / warmup_steps
        t = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return min_lr + 0.5 * (max_lr - min_lr) * (1 + math.cos(math.pi * t))
    return fn


def set_lr(optimizer, value):
    optimizer.learning_rate.assign(float(value))


def get_lr(optimizer):
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


class StepLRSchedule(keras.callbacks.Callback):
    """Sets the optimizer's learning rate to fn(global step) before every step."""

    def __init__(self, fn, steps_per_epoch, first_epoch=0):
        super().__init__()
        self.fn = fn
        self.steps_per_epoch = steps_per_epoch
        self.first_epoch = first_epoch  # the phase's first epoch: its step 0
        self._epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self._epoch = epoch - self.first_epoch

    def on_train_batch_begin(self, batch, logs=None):
        set_lr(self.model.optimizer, self.fn(self._epoch * self.steps_per_epoch + batch))

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["learning_rate"] = get_lr(self.model.optimizer)


class LRFinder(keras.callbacks.Callback):
    """Exponential learning-rate sweep; results in `self.lrs`, `self.losses`."""

    def __init__(self, min_lr=1e-7, max_lr=1.0, steps=100, smoothing=0.9, diverge=4.0):
        super().__init__()
        self.min_lr, self.max_lr, self.steps = min_lr, max_lr, steps
        self.smoothing, self.diverge = smoothing, diverge
        self.lrs, self.losses = [], []
        self._avg, self._best, self._step = 0.0, math.inf, 0

    def _lr(self, step):
        return self.min_lr * (self.max_lr / self.min_lr) ** (step / max(1, self.steps - 1))

    def on_train_batch_begin(self, batch, logs=None):
        set_lr(self.model.optimizer, self._lr(self._step))

    def on_train_batch_end(self, batch, logs=None):
        loss = float(logs["loss"])
        self._step += 1
        # Keras logs the running mean of the epoch; fine for a trend, smoothed again here.
        self._avg = self.smoothing * self._avg + (1 - self.smoothing) * loss
        smoothed = self._avg / (1 - self.smoothing ** self._step)
        self.lrs.append(self._lr(self._step - 1))
        self.losses.append(smoothed)
        self._best = min(self._best, smoothed)
        if (not math.isfinite(loss) or smoothed > self.diverge * self._best
                or self._step >= self.steps):
            self.model.stop_training = True

    def suggestion(self):
        """The LR of the steepest descent of the smoothed loss (a common heuristic)."""
        if len(self.losses) < 3:
            return None
        grads = np.gradient(np.asarray(self.losses), np.log10(np.asarray(self.lrs)))
        return float(self.lrs[int(np.argmin(grads))])


def _atomic_write_json(path, obj):
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(obj, indent=1, sort_keys=True))
    tf.io.gfile.rename(tmp, path, overwrite=True)


class TrainState:
    """The JSON record of a run's progress (see the module docstring)."""

    def __init__(self, path):
        self.path = path
        self.data = {"phase_epochs": {}, "checkpoints": {}, "history": [], "plateau": {}}
        if tf.io.gfile.exists(path):
            with tf.io.gfile.GFile(path) as f:
                self.data.update(json.load(f))

    def epochs_done(self, phase):
        return int(self.data["phase_epochs"].get(phase, 0))

    def checkpoint(self, phase):
        return self.data["checkpoints"].get(phase)

    @property
    def history(self):
        return self.data["history"]

    def save(self):
        _atomic_write_json(self.path, self.data)


def random_states(model):
    """The state variables of the model's random number generators (Dropout's
    `SeedGenerator`s), in layer order. They are among `model.variables` but not its weights,
    and the model's checkpoint leaves them out: restored, a resumed run draws the dropout
    masks the uninterrupted run drew; left out, it would start their sequence again."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights]


class ResumeState(keras.callbacks.Callback):
    """Per-epoch checkpoint of model + optimizer and the run state; restores on demand.

    `writer` is False on non-chief workers of a multi-worker job: they still save (the
    checkpoint of mirrored variables is a collective) but into a scratch directory.
    """

    def __init__(self, state, phase, checkpoint_dir, plateau=None, writer=True):
        super().__init__()
        self.state, self.phase, self.plateau, self.writer = state, phase, plateau, writer
        self.checkpoint_dir = checkpoint_dir
        self._ckpt = None

    def _checkpoint(self):
        if self._ckpt is None:
            self._ckpt = tf.train.Checkpoint(model=self.model, optimizer=self.model.optimizer,
                                             seeds=random_states(self.model))
        return self._ckpt

    def restore(self, model):
        """Restores model + optimizer of this phase if the state has a checkpoint.

        Returns the number of epochs already done in this phase.
        """
        self.set_model(model)
        path = self.state.checkpoint(self.phase)
        if not path:
            return 0
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        # save_counter is not written by Checkpoint.write(): match everything else.
        self._checkpoint().restore(path).expect_partial().assert_nontrivial_match()
        if self.plateau is not None and self.phase in self.state.data["plateau"]:
            p = self.state.data["plateau"][self.phase]
            self.plateau.best, self.plateau.wait = p["best"], p["wait"]
            self.plateau.cooldown_counter = p["cooldown_counter"]
        done = self.state.epochs_done(self.phase)
        logging.info("Resuming phase %s after epoch %d from %s", self.phase, done, path)
        return done

    def on_epoch_end(self, epoch, logs=None):
        path = self._checkpoint().write(os.path.join(self.checkpoint_dir, f"ckpt-{epoch + 1}"))
        if not self.writer:
            return
        record = {"phase": self.phase, "epoch": epoch + 1}
        record.update({k: float(v) for k, v in (logs or {}).items()
                       if np.ndim(v) == 0})
        record.setdefault("learning_rate", get_lr(self.model.optimizer))
        data = self.state.data
        previous = data["checkpoints"].get(self.phase)
        data["history"] = [h for h in data["history"]
                           if not (h["phase"] == self.phase and h["epoch"] >= epoch + 1)]
        data["history"].append(record)
        data["phase_epochs"][self.phase] = epoch + 1
        data["checkpoints"][self.phase] = path
        if self.plateau is not None:
            data["plateau"][self.phase] = {
                "best": float(self.plateau.best), "wait": int(self.plateau.wait),
                "cooldown_counter": int(self.plateau.cooldown_counter)}
        self.state.save()
        # Two checkpoints kept: the one the state names and the one before it.
        self._prune(keep={path, previous})

    def _prune(self, keep):
        keep = {os.path.basename(p) for p in keep if p}
        for f in tf.io.gfile.glob(os.path.join(self.checkpoint_dir, "ckpt-*")):
            stem = os.path.basename(f).split(".")[0]
            if stem not in keep:
                tf.io.gfile.remove(f)
