"""Keras callbacks of the trainer: learning-rate schedules, the LR finder and resumable state.

- `StepLRSchedule` sets the learning rate every step from a function of the global step
  (cyclic triangular and cosine), computed from the epoch so it is right after a resume.
- `LRFinder` raises the learning rate exponentially, one step at a time, recording the
  smoothed loss, and stops when the loss diverges.
- `schedule_callbacks` picks the callbacks of `--lr_scheduler` for one phase.

Checkpoints and resume: `trainer.checkpoints`.
"""
import math

import keras
import numpy as np


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


def schedule_callbacks(cfg, monitor, first, end, lr, steps_per_epoch):
    """(callbacks, plateau callback or None) of the phase's learning-rate schedule; the
    phase runs epochs first..end at learning rate lr, `monitor` is the plateau's metric."""
    if cfg.lr_scheduler == "reduce_lr_on_plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor=monitor, factor=0.3, patience=2, min_lr=cfg.min_learning_rate,
            mode="min", verbose=1)
        return [plateau], plateau
    if cfg.lr_scheduler == "cyclic":
        fn = cyclic_lr(max(cfg.min_learning_rate, lr / 10.0), lr,
                       cfg.cyclic_half_cycle_epochs * steps_per_epoch)
    elif cfg.lr_scheduler == "cosine":
        fn = cosine_lr(lr, cfg.min_learning_rate, (end - first) * steps_per_epoch,
                       warmup_steps=min(steps_per_epoch, 500))
    else:
        return [], None
    return [StepLRSchedule(fn, steps_per_epoch, first_epoch=first)], None


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
