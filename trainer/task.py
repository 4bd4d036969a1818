"""The training job: `python -m trainer.task --records_dir=... --job_dir=... [flags]`.

Owns the run: hardware set-up, input, model, the two phases of transfer learning (head
with the backbone frozen, then fine-tuning from --fine_tune_at at a lower learning rate),
resume after a crash (rerun the same command), and the outputs in --job_dir:

  checkpoints/<phase>/   model + optimizer per epoch (two kept)   train_state.json
  logs/                  TensorBoard                              history.json
  learning_curves.png    model.keras + model_spec.json            eval.json (validation split)
  records_fingerprint.json  the records it was trained on: a rerun on others is refused
                            without --allow_other_records (trainer.records_fingerprint)
  flags.txt              the resolved configuration: every flag's value, replayable
                         with --flagfile (trainer.flags.resolved_flags)

`--load` skips training: with --test_sample_dir it prints predictions for a directory of
images (face crops; with --photos ordinary photos, one line per face found, and
--draw_dir=DIR draws them), with --records_dir it (re)writes eval.json. `--lr_find` runs the learning-rate
finder and exits. See `trainer.flags` (or --helpfull) for every flag.

The trainer reads the train and validation splits only: experiments are compared on
validation. The test split is read only when asked for by name, once, for the report:
`--load --records_dir=... --eval_split=test` (eval_test.json), or `python -m
evaluation.evaluate --model=<export> --records_dir=... --split=test`.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import dataclasses
import importlib.util
import math
import os
import random
import shutil
import sys
import time

from absl import app, flags, logging
import keras
import tensorflow as tf

from agegender import job_dir as job_dir_lib
from agegender import age_histogram, age_prior, model_spec, records, schema
from trainer import calibration, checkpoints, consistency
from trainer import callbacks as callbacks_lib
from trainer import curves, distribution, input_pipeline, predict
from trainer import flags as trainer_flags
from trainer import keras_metrics
from trainer import model as model_lib
from trainer import records_fingerprint


class ConfigError(ValueError):
    """A flag combination or data set the job cannot train with (reported in one line)."""


def build_spec(cfg, records_meta):
    deviation = cfg.age_deviation
    if deviation is None:
        deviation = records_meta.get(schema.META_AGE_DEVIATION, age_histogram.DEFAULT_DEVIATION)
    return model_spec.ModelSpec(
        type=cfg.type, range_mode=cfg.range_mode, predict_gender=cfg.predict_gender,
        img_dim=cfg.img_dim, age_deviation=float(deviation), base_model=cfg.base_model,
        alpha=cfg.alpha, test_time_flip=cfg.test_time_flip,
        face_alignment=records_meta.get(schema.META_FACE_ALIGNMENT))


def compile_model(model, spec, cfg, learning_rate, run_eagerly=False):
    # EMA: Keras keeps the moving average and swaps it into the model when fit() ends.
    ema = dict(use_ema=True, ema_momentum=cfg.ema_momentum) if cfg.ema_momentum else {}
    if cfg.weight_decay:
        optimizer = keras.optimizers.AdamW(learning_rate, weight_decay=cfg.weight_decay, **ema)
    else:
        optimizer = keras.optimizers.Adam(learning_rate, **ema)
    # Under mixed_float16 Keras wraps the optimizer in a LossScaleOptimizer itself.
    model.compile(optimizer=optimizer, jit_compile=cfg.jit_compile,
                  steps_per_execution=cfg.steps_per_execution, run_eagerly=run_eagerly,
                  **keras_metrics.compile_args(spec, cfg.gender_loss_weight,
                                               cfg.age_mean_loss_weight))
    # Old-print consistency (0, the default: Keras's own train step, nothing installed).
    if getattr(cfg, "consistency_weight", 0.0):
        consistency.install(model, spec, cfg.consistency_weight,
                            trainer_flags.old_print_count(cfg.batch_size,
                                                          cfg.old_print_probability),
                            cfg.gender_loss_weight)


def _verbose(cfg):
    if cfg.keras_progress is not None:
        return cfg.keras_progress
    return 1 if sys.stdout.isatty() else 2


def _phase_plan(cfg):
    """[(phase, first epoch, end epoch, learning rate)]; epochs numbered across phases."""
    plan = [("head", 0, cfg.epochs, cfg.learning_rate)]
    if cfg.fine_tune_epochs > 0:
        lr = cfg.fine_tune_learning_rate or cfg.learning_rate / 10.0
        plan.append(("fine_tune", cfg.epochs, cfg.epochs + cfg.fine_tune_epochs, lr))
    return plan


def _tensorboard(out_dir):
    """The TensorBoard callback, or nothing (with a warning) without the tensorboard package."""
    if importlib.util.find_spec("tensorboard") is None:
        logging.warning("tensorboard is not installed: no TensorBoard logs (pip install "
                        "tensorboard); history.json and learning_curves.png are still written")
        return []
    return [keras.callbacks.TensorBoard(job_dir_lib.path(out_dir, job_dir_lib.LOGS_DIR),
                                        write_graph=False)]


def _worker_dir(job_dir):
    """Where this process writes: job_dir on the chief, a scratch dir on other workers."""
    if distribution.is_chief():
        return job_dir, True
    task_type, task_id = distribution.task_info()
    return os.path.join(job_dir, ".workers", f"{task_type}-{task_id}"), False


@dataclasses.dataclass
class Run:
    """What the steps of one training run share (filled in step by step)."""
    cfg: object
    spec: model_spec.ModelSpec
    strategy: object
    out_dir: str
    writer: bool  # False on non-chief workers: they write into a scratch dir
    inputs: input_pipeline.InputConfig
    counts: dict = None  # records per split, counted (and CRC-checked) before anything
    weights: object = None
    train_reader: object = None  # input_pipeline.InputReader of the train split
    val_ds: object = None
    validation_steps: int = None  # batches per validation; None: until the data runs out
    steps_per_epoch: int = 0
    model: object = None
    validation_outputs: tuple = None  # (raw outputs, labels) on validation, once calibrated


def set_seed(seed):
    """Seeds Python, NumPy and TensorFlow; a given seed also turns on op determinism (every
    op the same result for the same inputs; an op without a deterministic kernel raises).
    Returns the seed used (a random one, logged, when none is given)."""
    if seed is None:
        seed = random.SystemRandom().randrange(1 << 31)
        logging.info("Random seed %d (pass --seed for a reproducible run)", seed)
    else:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(seed)
    return seed


def prepare(cfg):
    """Checks the records, derives the model spec, sets up devices, precision and seeds."""
    if not cfg.records_dir or not cfg.job_dir:
        raise app.UsageError("--records_dir and --job_dir are required to train")
    # Fail fast, before building anything, on a records dir without train shards.
    records.split_files(cfg.records_dir, "train")
    meta = records.metadata(cfg.records_dir)
    spec = build_spec(cfg, meta)
    if cfg.rare_age_weight_max is not None and not cfg.rare_age_weight_power:
        raise app.UsageError("--rare_age_weight_max caps the weights of "
                             "--rare_age_weight_power; without it every face weighs 1")
    if cfg.age_prior_correction:  # checked now, not after the training it follows
        if cfg.age_prior_correction < 0:
            raise app.UsageError("--age_prior_correction must be >= 0")
        try:
            calibration.prior_corrected(spec, age_prior.train_decade_counts(cfg.records_dir),
                                        cfg.age_prior_correction)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    try:  # before anything is built or written: a job dir belongs to its records
        fingerprint = records_fingerprint.check(cfg.job_dir, cfg.records_dir,
                                                cfg.allow_other_records)
    except records_fingerprint.OtherRecordsError as e:
        raise ConfigError(str(e)) from None
    # The strategy first: a multi-worker strategy configures collective ops, which TensorFlow
    # allows only before its runtime starts, and counting the records (tf.data) starts it.
    strategy = distribution.make_strategy(cfg.distribution, cfg.tpu)
    if getattr(cfg, "consistency_weight", 0.0):
        try:
            consistency.check_strategy(strategy)
        except consistency.ConsistencyError as e:
            raise ConfigError(str(e)) from None
    counts = count_splits(cfg.records_dir, cfg.eval_split)  # before any model or output
    distribution.set_precision(distribution.resolve_precision(cfg.mixed_precision, strategy))
    seed = set_seed(cfg.seed)
    out_dir, writer = _worker_dir(cfg.job_dir)
    inputs = input_pipeline.InputConfig.from_records(
        cfg.records_dir, rare_age_weight_power=cfg.rare_age_weight_power,
        rare_age_weight_max=cfg.rare_age_weight_max,
        batch_size=cfg.batch_size, cache=cfg.cache,
        shuffle_buffer=cfg.shuffle_buffer, seed=seed, deterministic=cfg.seed is not None,
        num_workers=distribution.num_workers(), augment=trainer_flags.augment_config(cfg))
    run = Run(cfg=cfg, spec=spec, strategy=strategy, out_dir=out_dir, writer=writer,
              inputs=inputs, counts=counts)
    run.weights = model_lib.resolve_weights(spec.base_model, spec.alpha, cfg.weights,
                                            cfg.weights_dir)
    tf.io.gfile.makedirs(out_dir)
    if writer:
        records_fingerprint.record(out_dir, fingerprint)
        trainer_flags.write_resolved_flags(cfg, out_dir)
    return run


def count_splits(records_dir, eval_split="validation"):
    """Records per split the run reads, each shard read once (CRCs checked): train,
    validation and, only with `--eval_split=test`, test. Validation is read only after a
    whole epoch: a split that is missing or empty (records built with
    `--split_fractions=1,0,0`) is refused now, in one line. The test split is never read
    unless named: its shards may be absent."""
    needed = ("validation",) if eval_split == "validation" else ("validation", eval_split)
    counts = {split: records.count(records_dir, split) for split in ("train",) + needed}
    for split in needed:
        if not counts[split]:
            why = ("validation records (per-epoch validation, calibration, eval.json)"
                   if split == "validation" else f"{split} records (--eval_split={split})")
            raise ConfigError(
                f"the {split!r} split of {str(records_dir)!r} is empty: the trainer needs "
                f"{why}; rebuild them with a share for every split, e.g. "
                f"`python -m pipeline.build_records --split_fractions=0.8,0.1,0.1`")
    return counts


def make_datasets(run):
    """The training reader, the validation dataset, and the epoch length."""
    cfg, config, counts = run.cfg, run.inputs, run.counts
    n_train = counts["train"]
    run.steps_per_epoch = n_train // config.batch_size
    if run.steps_per_epoch == 0:
        raise ConfigError(f"{n_train} train records: fewer than one batch of "
                          f"{config.batch_size}")
    if cfg.steps_per_epoch:
        run.steps_per_epoch = min(run.steps_per_epoch, cfg.steps_per_epoch)
    parser = input_pipeline.Parser.for_config(run.spec, config)
    # Its stream is endless, so an epoch is exactly steps_per_epoch steps whatever the cap.
    run.train_reader = input_pipeline.InputReader(config, "train", parser)
    run.val_ds = input_pipeline.InputReader(config, "validation", parser).dataset(
        is_training=False)
    # The dataset states its length: unknown, Keras finds the end of the data by running
    # out of it and warns "Your input ran out of data" in every run. (Each worker of a
    # multi-worker run sees its own share: there the length is left unknown.)
    run.validation_steps = cfg.validation_steps
    if distribution.num_workers() <= 1:  # 0 outside a cluster
        batches = math.ceil(counts["validation"] / config.batch_size)
        run.val_ds = run.val_ds.apply(tf.data.experimental.assert_cardinality(batches))
        if cfg.validation_steps is None:
            # Whole passes, one iterator for every epoch: Keras keeps the validation iterator
            # across epochs when it is told the steps, and makes a new one each epoch when
            # it is not, and each new distributed iterator costs CPU-seconds (most of an
            # epoch of the tests' tiny runs). Each epoch reads exactly one pass, in order.
            run.val_ds = run.val_ds.repeat()
            run.validation_steps = batches


def build(run):
    with run.strategy.scope():
        run.model = model_lib.build_model(run.spec, run.weights, run.cfg.dropout)


def lr_find(run):
    """The learning-rate finder on the head phase; writes lr_find.json/png and returns the
    suggested rate."""
    cfg, model = run.cfg, run.model
    with run.strategy.scope():
        model_lib.freeze_backbone(model)
        compile_model(model, run.spec, cfg, 1e-7)
    finder = callbacks_lib.LRFinder(steps=cfg.lr_find_steps)
    model.fit(run.train_reader.training_stream(), epochs=1, steps_per_epoch=cfg.lr_find_steps,
              callbacks=[finder],
              verbose=_verbose(cfg))
    suggestion = finder.suggestion()
    job_dir_lib.write_json(run.out_dir, job_dir_lib.LR_FIND_JSON, {
        "learning_rates": finder.lrs, "smoothed_losses": finder.losses,
        "steepest_descent_lr": suggestion})
    path = curves.plot_lr_find(finder.lrs, finder.losses, suggestion,
                               job_dir_lib.path(run.out_dir, job_dir_lib.LR_FIND_PLOT))
    print(f"Learning-rate finder: {path} (steepest descent at {suggestion})")
    return suggestion


def run_phase(run, state, phase, first, end, lr):
    """Trains one phase (epochs first..end at learning rate lr), resuming where a killed
    run stopped; a phase finished earlier only hands its weights on."""
    cfg, model = run.cfg, run.model
    if state.epochs_done(phase) >= end:
        checkpoints.restore_weights(model, state.checkpoint(phase))
        return
    with run.strategy.scope():
        if phase == "fine_tune":
            model_lib.set_fine_tune(model, cfg.fine_tune_at)
        else:
            model_lib.freeze_backbone(model)
        compile_model(model, run.spec, cfg, lr)
        schedule, plateau = callbacks_lib.schedule_callbacks(
            cfg, keras_metrics.monitor_key(run.spec), first, end, lr, run.steps_per_epoch)
        resume = checkpoints.ResumeState(
            state, phase, job_dir_lib.path(run.out_dir, job_dir_lib.CHECKPOINTS_DIR, phase),
            plateau, run.writer)
        resumed = resume.restore(model)
    initial_epoch = max(first, resumed)
    # The stream where the uninterrupted run would be at this epoch (epochs across phases).
    train_ds = run.train_reader.training_stream(initial_epoch * run.steps_per_epoch)
    distribution.work_around_keras_multi_worker(model, run.strategy, train_ds)
    logging.info("Phase %s: epochs %d..%d (starting at %d), learning rate %g", phase,
                 first + 1, end, initial_epoch + 1, lr)
    model.fit(
        train_ds, epochs=end, initial_epoch=initial_epoch,
        steps_per_epoch=run.steps_per_epoch, validation_data=run.val_ds,
        validation_steps=run.validation_steps, verbose=_verbose(cfg),
        shuffle=False,  # the dataset shuffles
        callbacks=schedule + [keras.callbacks.TerminateOnNaN()] + _tensorboard(run.out_dir) + [
            resume,  # last: it records what the callbacks before it did to this epoch
        ])


def calibrate(run):
    """Sets what the answers do after the forward pass, in the spec saved with the model:
    the age prior correction (`--age_prior_correction`, from the train split's counts),
    then the spread's temperatures fitted on the validation split (trainer.calibration)."""
    cfg = run.cfg
    if not run.writer:
        return  # only the chief writes the spec
    if cfg.age_prior_correction:
        run.spec = calibration.prior_corrected(
            run.spec, age_prior.train_decade_counts(cfg.records_dir), cfg.age_prior_correction)
        logging.info("Age prior correction %g: class weights %.3f..%.3f",
                     cfg.age_prior_correction, min(run.spec.age_prior_weights),
                     max(run.spec.age_prior_weights))
    if not cfg.calibrate:
        return
    outputs, labels = predict.split_outputs(run.model, run.spec, cfg.records_dir,
                                            "validation", cfg.batch_size)
    run.validation_outputs = outputs, labels  # eval.json reads them too (write_outputs)
    run.spec, found = calibration.calibrate(run.spec, outputs, labels)
    logging.info("Calibration on %d validation images: %s", len(labels[schema.AGE]), found)


def write_outputs(run, state):
    """model.keras + model_spec.json, history, curves and eval.json on the validation split
    (`--eval_split`; chief only; other workers remove their scratch dir). Returns the eval
    report or None."""
    cfg, out_dir = run.cfg, run.out_dir
    if not run.writer:
        # Saving is a collective: every worker saves, the others into their scratch dir.
        run.model.save(job_dir_lib.path(out_dir, job_dir_lib.MODEL_FILE))
        shutil.rmtree(out_dir, ignore_errors=True)
        try:
            os.rmdir(os.path.dirname(out_dir))  # .workers, once the last worker is done
        except OSError:
            pass
        return None
    job_dir_lib.save(out_dir, run.model, run.spec)
    job_dir_lib.write_json(out_dir, job_dir_lib.HISTORY_FILE, state.history)
    curves.plot_learning_curves(state.history,
                                keras_metrics.monitor_key(run.spec, validation=False),
                                job_dir_lib.path(out_dir, job_dir_lib.CURVES_FILE))
    at_hand = run.validation_outputs if cfg.eval_split == "validation" else None
    return _evaluate(out_dir, cfg, at_hand)


def _evaluate(job_dir, cfg, outputs=None):
    """Writes the job dir's evaluation of `--eval_split` and prints its summary line.
    outputs: the model's (raw outputs, labels) on that whole split, if already computed."""
    report = predict.write_eval(job_dir, cfg.records_dir, cfg.eval_split, cfg.batch_size,
                                cfg.eval_limit, outputs)
    coverage = {k: round(v["coverage"], 3) for k, v in report.get("uncertainty", {}).items()
                if k.startswith("interval_")}
    print(f"{cfg.eval_split.capitalize()} split: MAE {report['mae']:.2f} years, "
          f"CS@5 {report['cs@5']:.3f}, gender accuracy {report['gender_accuracy']}"
          + (f", interval coverage {coverage}" if coverage else "")
          + f" ({report['count']} images; {job_dir_lib.eval_file(cfg.eval_split)})")
    return report


def train(cfg):
    """Trains per cfg (an absl FlagValues or any object with the same attributes)."""
    started = time.time()
    run = prepare(cfg)
    make_datasets(run)
    build(run)
    if cfg.lr_find:
        return lr_find(run)
    state = checkpoints.TrainState(job_dir_lib.path(run.out_dir, job_dir_lib.STATE_FILE))
    for phase, first, end, lr in _phase_plan(cfg):
        run_phase(run, state, phase, first, end, lr)
    calibrate(run)
    report = write_outputs(run, state)
    print(f"Done in {time.time() - started:.0f} s: {run.out_dir}")
    return report


def run(cfg):
    """Entry point for a parsed configuration: train, predict or evaluate."""
    if cfg.load:
        if not cfg.job_dir:
            raise app.UsageError("--load needs --job_dir")
        if cfg.test_sample_dir:  # predict mode has a command of its own now
            logging.warning("trainer.task --load --test_sample_dir is deprecated: use "
                            "python -m analyzer.predict --model=%s %s%s (the same lines, any "
                            "model)", cfg.job_dir, "--photos " if cfg.photos else "",
                            cfg.test_sample_dir)
        if cfg.test_sample_dir and cfg.photos:
            return predict.predict_photos(cfg.job_dir, cfg.test_sample_dir,
                                          max_pixels=cfg.max_image_pixels,
                                          draw_dir=cfg.draw_dir)
        if cfg.draw_dir:
            raise app.UsageError("--draw_dir needs --photos")
        if cfg.test_sample_dir:
            return predict.predict_dir(cfg.job_dir, cfg.test_sample_dir, cfg.batch_size,
                                       max_pixels=cfg.max_image_pixels)
        if cfg.records_dir:
            return _evaluate(cfg.job_dir, cfg)
        raise app.UsageError("--load needs --test_sample_dir or --records_dir")
    return train(cfg)


def _main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    try:
        run(flags.FLAGS)
    except (FileNotFoundError, ConfigError, records.RecordsCorruptError) as e:
        # Configuration and data errors: one clear line, no traceback.
        logging.error("%s", e)
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def main():
    trainer_flags.define_flags(flags.FLAGS)
    app.run(_main)


if __name__ == "__main__":
    main()
