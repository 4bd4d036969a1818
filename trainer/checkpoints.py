"""Checkpoints and resume: what makes a killed run continue as if never stopped.

`ResumeState` (a Keras callback) writes, at the end of every epoch, a `tf.train.Checkpoint`
of the model, the optimizer (iterations, learning rate, Adam moments) and the dropout
layers' random states, and then, atomically, the JSON state file (`TrainState`): the phase,
the epochs done, the checkpoint path, the history so far and the plateau scheduler's
counters. A process killed at any moment leaves either the previous or the new epoch
recorded, never half of one, and no epoch is counted twice. Rerun, the job restores all of
it; with the input stream resumed where it stopped
(`input_pipeline.InputReader.training_stream`), a seeded run then ends exactly as the
uninterrupted one.
"""
import json
import os

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from agegender import atomic_files
from trainer.callbacks import get_lr


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
        atomic_files.write_json_atomically(self.path, self.data)


def restore_weights(model, path):
    """The model's weights from a phase's checkpoint (a finished phase hands them on)."""
    tf.train.Checkpoint(model=model).restore(path).expect_partial()


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
