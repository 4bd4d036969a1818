"""The training job: `python -m trainer.task --records_dir=... --job_dir=... [flags]`.

Owns the run: hardware set-up, input, model, the two phases of transfer learning (head
with the backbone frozen, then fine-tuning from --fine_tune_at at a lower learning rate),
resume after a crash (rerun the same command), and the outputs in --job_dir:

  checkpoints/<phase>/   model + optimizer per epoch (two kept)   train_state.json
  logs/                  TensorBoard                              history.json
  learning_curves.png    model.keras + model_spec.json            eval.json (test split)

`--load` skips training: with --test_sample_dir it prints predictions for a directory of
images, with --records_dir it (re)writes eval.json. `--lr_find` runs the learning-rate
finder and exits. See `trainer.flags` (or --helpfull) for every flag.
"""
import importlib.util
import json
import os
import shutil
import sys
import time

from absl import app, flags, logging
import keras
import tensorflow as tf

from agegender import model_spec, schema
from trainer import callbacks as callbacks_lib
from trainer import curves, distribution, input_pipeline, losses, predict
from trainer import flags as trainer_flags
from trainer import metrics as metrics_lib
from trainer import model as model_lib

STATE_FILE = "train_state.json"
HISTORY_FILE = "history.json"


class ConfigError(ValueError):
    """A flag combination or data set the job cannot train with (reported in one line)."""


def build_spec(cfg, records_meta):
    deviation = cfg.age_deviation
    if deviation is None:
        deviation = records_meta.get(schema.META_AGE_DEVIATION, 5.0)
    return model_spec.ModelSpec(
        type=cfg.type, range_mode=cfg.range_mode, predict_gender=cfg.predict_gender,
        img_dim=cfg.img_dim, age_deviation=float(deviation), base_model=cfg.base_model,
        alpha=cfg.alpha)


def compile_model(model, spec, cfg, learning_rate, run_eagerly=False):
    if cfg.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=cfg.weight_decay)
    else:
        optimizer = keras.optimizers.Adam(learning_rate)
    loss, loss_weights = losses.losses_for(spec, cfg.gender_loss_weight)
    metrics, weighted = metrics_lib.metrics_for(spec)
    # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer itself.
    model.compile(optimizer=optimizer, loss=loss, loss_weights=loss_weights, metrics=metrics,
                  weighted_metrics=weighted, jit_compile=cfg.jit_compile,
                  steps_per_execution=cfg.steps_per_execution, run_eagerly=run_eagerly)


def _verbose(cfg):
    if cfg.verbose is not None:
        return cfg.verbose
    return 1 if sys.stdout.isatty() else 2


def _phase_plan(cfg):
    """[(phase, first epoch, end epoch, learning rate)]; epochs numbered across phases."""
    plan = [("head", 0, cfg.epochs, cfg.learning_rate)]
    if cfg.fine_tune_epochs > 0:
        lr = cfg.fine_tune_learning_rate or cfg.learning_rate / 10.0
        plan.append(("fine_tune", cfg.epochs, cfg.epochs + cfg.fine_tune_epochs, lr))
    return plan


def _scheduler_callbacks(cfg, spec, first, end, lr, steps_per_epoch):
    """(callbacks, plateau callback or None) for the phase's learning-rate schedule."""
    if cfg.lr_scheduler == "reduce_lr_on_plateau":
        plateau = keras.callbacks.ReduceLROnPlateau(
            monitor=metrics_lib.monitor_key(spec), factor=0.3, patience=2,
            min_lr=cfg.min_learning_rate, mode="min", verbose=1)
        return [plateau], plateau
    if cfg.lr_scheduler == "cyclic":
        fn = callbacks_lib.cyclic_lr(max(cfg.min_learning_rate, lr / 10.0), lr,
                                     cfg.cyclic_half_cycle_epochs * steps_per_epoch)
    elif cfg.lr_scheduler == "cosine":
        fn = callbacks_lib.cosine_lr(lr, cfg.min_learning_rate, (end - first) * steps_per_epoch,
                                     warmup_steps=min(steps_per_epoch, 500))
    else:
        return [], None
    return [callbacks_lib.StepLRSchedule(fn, steps_per_epoch, first_epoch=first)], None


def _tensorboard(out_dir):
    """The TensorBoard callback, or nothing (with a warning) without the tensorboard package."""
    if importlib.util.find_spec("tensorboard") is None:
        logging.warning("tensorboard is not installed: no TensorBoard logs (pip install "
                        "tensorboard); history.json and learning_curves.png are still written")
        return []
    return [keras.callbacks.TensorBoard(os.path.join(out_dir, "logs"), write_graph=False)]


def _worker_dir(job_dir):
    """Where this process writes: job_dir on the chief, a scratch dir on other workers."""
    if distribution.is_chief():
        return job_dir, True
    task_type, task_id = distribution.task_info()
    return os.path.join(job_dir, ".workers", f"{task_type}-{task_id}"), False


def _restore_weights_only(model, path):
    tf.train.Checkpoint(model=model).restore(path).expect_partial()


def lr_find(cfg, model, spec, train_ds, out_dir, strategy):
    with strategy.scope():
        model_lib.freeze_backbone(model)
        compile_model(model, spec, cfg, 1e-7)
    finder = callbacks_lib.LRFinder(steps=cfg.lr_find_steps)
    model.fit(train_ds, epochs=1, steps_per_epoch=cfg.lr_find_steps, callbacks=[finder],
              verbose=_verbose(cfg))
    suggestion = finder.suggestion()
    with tf.io.gfile.GFile(os.path.join(out_dir, "lr_find.json"), "w") as f:
        json.dump({"learning_rates": finder.lrs, "smoothed_losses": finder.losses,
                   "steepest_descent_lr": suggestion}, f, indent=1)
    path = curves.plot_lr_find(finder.lrs, finder.losses, suggestion,
                               os.path.join(out_dir, "lr_find.png"))
    print(f"Learning-rate finder: {path} (steepest descent at {suggestion})")
    return suggestion


def train(cfg):
    """Trains per cfg (an absl FlagValues or any object with the same attributes)."""
    if not cfg.records_dir or not cfg.job_dir:
        raise app.UsageError("--records_dir and --job_dir are required to train")
    started = time.time()
    # Fail fast, before building anything, on a records dir without train shards.
    input_pipeline.split_files(cfg.records_dir, "train")
    meta = schema.read_metadata(cfg.records_dir)
    spec = build_spec(cfg, meta)
    strategy = distribution.make_strategy(cfg.distribution, cfg.tpu)
    distribution.set_precision(distribution.resolve_precision(cfg.mixed_precision, strategy))
    keras.utils.set_random_seed(cfg.seed)
    weights = model_lib.resolve_weights(spec.base_model, spec.alpha, cfg.weights,
                                        cfg.weights_dir)
    out_dir, writer = _worker_dir(cfg.job_dir)
    tf.io.gfile.makedirs(out_dir)

    parser = input_pipeline.Parser(spec, meta.get(schema.META_AGE_DEVIATION),
                                   augment=cfg.augment, blur_probability=cfg.blur_probability,
                                   records_image_size=meta.get(schema.META_IMAGE_SIZE))
    train_reader = input_pipeline.InputReader(cfg.records_dir, "train", parser, cfg.batch_size,
                                              cfg.cache, cfg.shuffle_buffer, cfg.seed,
                                              distribution.num_workers())
    n_train = input_pipeline.count_records(cfg.records_dir, "train")
    for split in ("validation", "test"):  # read at the end of an epoch / of the run: check now
        if tf.io.gfile.glob(schema.shard_pattern(cfg.records_dir, split)):
            input_pipeline.count_records(cfg.records_dir, split)
    steps_per_epoch = n_train // cfg.batch_size
    if steps_per_epoch == 0:
        raise ConfigError(f"{n_train} train records: fewer than one batch of {cfg.batch_size}")
    if cfg.steps_per_epoch:
        steps_per_epoch = min(steps_per_epoch, cfg.steps_per_epoch)
    # Repeated, so an epoch is exactly steps_per_epoch steps whatever the cap.
    train_ds = train_reader.dataset(is_training=True).repeat()
    val_ds = None
    if tf.io.gfile.glob(schema.shard_pattern(cfg.records_dir, "validation")):
        val_reader = input_pipeline.InputReader(cfg.records_dir, "validation", parser,
                                                cfg.batch_size,
                                                num_workers=distribution.num_workers())
        val_ds = val_reader.dataset(is_training=False)

    with strategy.scope():
        model = model_lib.build_model(spec, weights, cfg.dropout)

    if cfg.lr_find:
        return lr_find(cfg, model, spec, train_ds, out_dir, strategy)

    state = callbacks_lib.TrainState(os.path.join(out_dir, STATE_FILE))
    for phase, first, end, lr in _phase_plan(cfg):
        done = state.epochs_done(phase)
        if done >= end:
            # Finished in an earlier run: carry its final weights into the next phase.
            _restore_weights_only(model, state.checkpoint(phase))
            continue
        with strategy.scope():
            if phase == "fine_tune":
                model_lib.set_fine_tune(model, cfg.fine_tune_at)
            else:
                model_lib.freeze_backbone(model)
            compile_model(model, spec, cfg, lr)
            schedule, plateau = _scheduler_callbacks(cfg, spec, first, end, lr, steps_per_epoch)
            resume = callbacks_lib.ResumeState(
                state, phase, os.path.join(out_dir, "checkpoints", phase), plateau, writer)
            resumed = resume.restore(model)
        distribution.work_around_keras_multi_worker(model, strategy, train_ds)
        initial_epoch = max(first, resumed)
        logging.info("Phase %s: epochs %d..%d (starting at %d), learning rate %g", phase,
                     first + 1, end, initial_epoch + 1, lr)
        model.fit(
            train_ds, epochs=end, initial_epoch=initial_epoch, steps_per_epoch=steps_per_epoch,
            validation_data=val_ds, validation_steps=cfg.validation_steps,
            verbose=_verbose(cfg), shuffle=False,  # the dataset shuffles
            callbacks=schedule + [keras.callbacks.TerminateOnNaN()] + _tensorboard(out_dir) + [
                resume,  # last: it records what the callbacks before it did to this epoch
            ])

    model.save(os.path.join(out_dir, model_spec.MODEL_FILE))
    if not writer:
        shutil.rmtree(out_dir, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(out_dir))  # .workers, once the last worker is done
        except OSError:
            pass
        return None
    with tf.io.gfile.GFile(os.path.join(out_dir, model_spec.SPEC_FILE), "w") as f:
        f.write(spec.to_json())
    with tf.io.gfile.GFile(os.path.join(out_dir, HISTORY_FILE), "w") as f:
        json.dump(state.history, f, indent=1)
    curves.plot_learning_curves(state.history, metrics_lib.monitor_key(spec, validation=False),
                                os.path.join(out_dir, "learning_curves.png"))
    report = None
    if tf.io.gfile.glob(schema.shard_pattern(cfg.records_dir, "test")):
        report = predict.write_eval(out_dir, cfg.records_dir, "test", cfg.batch_size,
                                    cfg.eval_limit)
        print(f"Test split: MAE {report['mae']:.2f} years, CS@5 {report['cs@5']:.3f}, "
              f"gender accuracy {report['gender_accuracy']}")
    print(f"Done in {time.time() - started:.0f} s: {out_dir}")
    return report


def run(cfg):
    """Entry point for a parsed configuration: train, predict or evaluate."""
    if cfg.load:
        if not cfg.job_dir:
            raise app.UsageError("--load needs --job_dir")
        if cfg.test_sample_dir:
            return predict.predict_dir(cfg.job_dir, cfg.test_sample_dir, cfg.batch_size,
                                       max_pixels=cfg.max_image_pixels)
        if cfg.records_dir:
            return predict.write_eval(cfg.job_dir, cfg.records_dir, "test", cfg.batch_size,
                                      cfg.eval_limit)
        raise app.UsageError("--load needs --test_sample_dir or --records_dir")
    return train(cfg)


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        run(flags.FLAGS)
    except (FileNotFoundError, ConfigError, input_pipeline.RecordsCorruptError) as e:
        # Configuration and data errors: one clear line, no traceback.
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main():
    trainer_flags.define_flags(flags.FLAGS)
    app.run(_main)


if __name__ == "__main__":
    main()
