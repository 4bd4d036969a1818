"""The trainer's command-line flags (absl), defined on demand.

`define_flags(flag_values)` is called by `trainer.task.main` on the global `absl.flags.FLAGS`
(so `--flagfile` and `--helpfull` work through `absl.app.run`). Nothing is defined at import
time, the style of every absl program here (`evaluation.evaluate` too): programs with
flags of the same names can be imported together, and tests build private `FlagValues` with
`parse(argv)`.
"""
import os

from absl import flags
import numpy as np

from agegender import arg_types, image_header, job_dir, model_spec
from trainer import input_pipeline

BASE_MODELS = ("MobileNetV2", "ResNet50", "MobileNetV3Small", "EfficientNetB0")
LR_SCHEDULERS = ("reduce_lr_on_plateau", "cyclic", "cosine", "constant")
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
DISTRIBUTIONS = ("auto", "one_device", "mirrored", "multi_worker", "tpu")
WEIGHTS_DIR_ENV = "AGEGENDER_WEIGHTS_DIR"


def define_flags(fv=flags.FLAGS):
    """Defines every trainer flag on `fv`."""
    d = dict(flag_values=fv)
    # Data and outputs.
    flags.DEFINE_string("records_dir", None,
                        "Records directory written by `python -m pipeline.build_records`.", **d)
    flags.DEFINE_string("job_dir", None,
                        "Output directory: checkpoints, logs, history, model, eval.json "
                        "(validation split).", **d)
    flags.DEFINE_bool("allow_other_records", False,
                      "Let a job dir go on (resume, refit the calibration, rewrite eval.json) on "
                      "records other than those it was trained on; without it such a rerun "
                      "is refused (the job dir keeps the records' fingerprint).", **d)
    flags.DEFINE_string("cache", "",
                        "Cache the decoded training images: '' (off), 'memory', or a file path "
                        "prefix (evaluation reads its records anew each time).", **d)
    flags.DEFINE_integer("shuffle_buffer", 4096, "Training shuffle buffer (images).", **d)
    # Model.
    flags.DEFINE_enum("type", "classification", list(model_spec.TYPES),
                      "Age head: distribution over 101 one-year bins, or one scaled value.", **d)
    flags.DEFINE_bool("range_mode", False,
                      "Classify 5-year age ranges instead of one-year bins.", **d)
    flags.DEFINE_bool("predict_gender", False, "Add a gender head (softmax over 2).", **d)
    flags.DEFINE_enum("base_model", "MobileNetV2", list(BASE_MODELS), "Backbone.", **d)
    flags.DEFINE_float("alpha", 1.0, "Width multiplier (MobileNet backbones only).", **d)
    flags.DEFINE_string("weights", "imagenet",
                        "Backbone weights: 'imagenet' (resolved offline first), 'none' "
                        "(random), or a path to a no-top .h5 file.", **d)
    flags.DEFINE_string("weights_dir", os.environ.get(WEIGHTS_DIR_ENV),
                        "Where to look for ImageNet weight files (Keras file names) before "
                        f"$KERAS_HOME/models and ~/.keras/models. Default: ${WEIGHTS_DIR_ENV}.",
                        **d)
    flags.DEFINE_integer("img_dim", 128, "Input size in pixels (square).",
                         lower_bound=model_spec.MIN_IMG_DIM, upper_bound=model_spec.MAX_IMG_DIM,
                         **d)
    flags.DEFINE_float("dropout", 0.2, "Dropout before the heads.", **d)
    flags.DEFINE_float("age_deviation", None,
                       "Label deviation in years; recomputed in-graph when it differs from "
                       "the records' metadata. Default: the records' value.", **d)
    flags.DEFINE_float("gender_loss_weight", 1.0, "Weight of the gender loss.", **d)
    flags.DEFINE_float("rare_age_weight_power", 0.0,
                       "Weigh each face's age loss by (faces of its decade in the train split "
                       "/ mean) ** -power, normalised to a mean of 1: rare ages pull harder "
                       "(0: every face weighs 1).", **d)
    flags.DEFINE_float("rare_age_weight_max", None,
                       "With --rare_age_weight_power: no decade's faces weigh more than this "
                       "times the mean face (>= 1), the others scaled to keep the mean at 1. "
                       "Default: no cap.", lower_bound=1, **d)
    flags.DEFINE_float("age_prior_correction", 0.0,
                       "Distribution heads: answer with the predicted age distribution times "
                       "(faces of its decade in the train split / mean) ** -power, "
                       "renormalised, so the answers are pulled less toward the common ages "
                       "(0: as trained; 1: as if every decade were equally common). Set after "
                       "training, in the model's spec; rerunning a finished job dir with "
                       "another value changes it without retraining.", **d)
    flags.DEFINE_float("age_mean_loss_weight", 0.0,
                       "Distribution heads: add this weight times |mean of the predicted "
                       "distribution - true age| / 100 to the EMD loss (0: EMD only).", **d)
    # Schedule.
    flags.DEFINE_integer("batch_size", 64, "Global batch size.", **d)
    flags.DEFINE_integer("epochs", 10, "Epochs with the backbone frozen (head training).", **d)
    flags.DEFINE_integer("fine_tune_epochs", 0,
                         "Epochs after --epochs with backbone layers from --fine_tune_at "
                         "unfrozen (BatchNorm stays in inference mode).", **d)
    flags.DEFINE_integer("fine_tune_at", 100,
                         "Index of the first backbone layer to unfreeze for fine-tuning "
                         "(0: all).", **d)
    flags.DEFINE_float("learning_rate", 1e-3, "Learning rate of the head phase.", **d)
    flags.DEFINE_float("fine_tune_learning_rate", None,
                       "Learning rate of the fine-tune phase. Default: --learning_rate / 10.",
                       **d)
    flags.DEFINE_float("weight_decay", 0.0, "AdamW weight decay (0: Adam).", **d)
    flags.DEFINE_float("ema_momentum", 0.0,
                       "Keep an exponential moving average of the weights with this momentum "
                       "(e.g. 0.999) and end each phase on it; 0: off.", **d)
    flags.DEFINE_enum("lr_scheduler", "reduce_lr_on_plateau", list(LR_SCHEDULERS),
                      "Learning-rate schedule within each phase.", **d)
    flags.DEFINE_float("min_learning_rate", 1e-6, "Floor of the schedules.", **d)
    flags.DEFINE_integer("cyclic_half_cycle_epochs", 2,
                         "Cyclic schedule: epochs from the floor to the peak.", **d)
    flags.DEFINE_bool("lr_find", False,
                      "Run the learning-rate finder, write lr_find.png/json and exit.", **d)
    flags.DEFINE_integer("lr_find_steps", 100, "Steps of the learning-rate finder.", **d)
    flags.DEFINE_integer("steps_per_epoch", None,
                         "Cap the steps per epoch (default: one pass over the train split).",
                         **d)
    flags.DEFINE_integer("validation_steps", None, "Cap the validation steps.", **d)
    flags.DEFINE_bool("test_time_flip", False,
                      "Average the outputs over each face and its mirror image wherever the "
                      "model predicts (eval.json, predict mode, the exported signatures).", **d)
    flags.DEFINE_bool("calibrate", True,
                      "After training, fit the temperatures of the age spread and the gender "
                      "probability on the validation split (stored in model_spec.json).", **d)
    flags.DEFINE_enum("eval_split", "validation", list(job_dir.EVAL_SPLITS),
                      "The split the job dir is evaluated on after training (and by --load "
                      "--records_dir): validation (eval.json), what runs are compared on; "
                      "test (eval_test.json) only when named, once, for the report. Without "
                      "it the test split is never read.", **d)
    flags.DEFINE_integer("eval_limit", 0,
                         "Evaluate on at most this many images of --eval_split (0: all).", **d)
    flags.DEFINE_integer("seed", None,
                         "Random seed. Given, the run is reproducible: the same flags on the "
                         "same records give the same weights and metrics (op determinism, "
                         "deterministic input order and augmentation; somewhat slower). "
                         "Default: a random seed, logged.", **d)
    # Augmentation.
    aug = input_pipeline.AugmentConfig()
    flags.DEFINE_bool("augment", aug.enabled, "Flip, shift/zoom, brightness/contrast, blur.",
                      **d)
    flags.DEFINE_list("crop_fraction", _pair(aug.crop_fraction),
                      "min,max side of the random crop as a fraction of the frame.", **d)
    flags.DEFINE_float("max_shift", aug.max_shift,
                       "Largest shift of the crop's centre, as a fraction of the frame.", **d)
    flags.DEFINE_float("brightness", aug.brightness, "Brightness jitter, +- pixel levels.", **d)
    flags.DEFINE_list("contrast", _pair(aug.contrast), "min,max contrast factor.", **d)
    flags.DEFINE_float("blur_probability", aug.blur_probability,
                       "Share of training images blurred.", **d)
    flags.DEFINE_list("blur_scale", _pair(aug.blur_scale),
                      "min,max size (fraction of the side) a blurred image passes through.", **d)
    flags.DEFINE_float("degrade_probability", aug.degrade_probability,
                       "Share of training images given one photo degradation (grayscale, "
                       "sepia, faded colour, JPEG artefacts, low resolution, side light).",
                       **d)
    _define_range("low_res_scale", _pair(aug.low_res_scale),
                  "min,max size (fraction of the side) a low-resolution degradation passes "
                  "through, drawn log-uniformly.", _is_scale_range,
                  "two fractions 0 < min <= max <= 1", d)
    flags.DEFINE_float("old_print_probability", aug.old_print_probability,
                       "Share of training images made old scanned prints: soft focus, "
                       "vignetting, grain, faded dyes and cast, narrow range, paper or "
                       "halftone, dust and scratches, rescan JPEG, all at once "
                       "(agegender.old_print).", lower_bound=0.0, upper_bound=1.0, **d)
    _define_range("old_print_severity", _pair(aug.old_print_severity),
                  "min,max severity (0..1) of the old prints, drawn uniformly per image.",
                  _is_severity_range, "two numbers 0 <= min <= max <= 1", d)
    flags.DEFINE_float("consistency_weight", 0.0,
                       "Add this weight times how far each old-printed face's predicted age "
                       "distribution (and gender) is from the same face's clean one, the "
                       "clean one held fixed (squared EMD, as the age loss; L1 for "
                       "--type=regression; KL for gender), averaged over each batch's "
                       "old-printed faces, which the model also sees clean, in inference "
                       "mode: a forward pass of --old_print_probability of the batch more "
                       "per step (trainer.consistency). Needs --old_print_probability > 0 "
                       "and one device. 0: off.", lower_bound=0.0, **d)
    flags.register_multi_flags_validator(
        ["consistency_weight", "old_print_probability", "augment", "batch_size"],
        _check_consistency, **d)
    flags.DEFINE_float("source_margin", aug.source_margin,
                       "The training frame is up to img_dim times this, so crops take real "
                       "pixels (records of 160 px give 128 px inputs a 1.25 margin).", **d)
    # Hardware.
    flags.DEFINE_enum("mixed_precision", "auto", list(PRECISIONS),
                      "auto: mixed_float16 on GPUs of compute capability >= 7.0, "
                      "mixed_bfloat16 on TPU, float32 otherwise.", **d)
    flags.DEFINE_bool("jit_compile", False, "Compile the train step with XLA.", **d)
    flags.DEFINE_enum("distribution", "auto", list(DISTRIBUTIONS),
                      "auto: multi_worker when TF_CONFIG names several workers, mirrored "
                      "on several GPUs, else one_device.", **d)
    flags.DEFINE_string("tpu", None, "TPU name or address for --distribution=tpu.", **d)
    flags.DEFINE_integer("steps_per_execution", 1, "Train steps per tf.function call.", **d)
    # Modes.
    flags.DEFINE_bool("load", False,
                      "Do not train: load --job_dir/model.keras (predict with "
                      "--test_sample_dir, or evaluate on --records_dir).", **d)
    flags.DEFINE_string("test_sample_dir", None,
                        "Directory of face images to predict (with --load).", **d)
    flags.DEFINE_integer("max_image_pixels", image_header.DEFAULT_MAX_PIXELS,
                         "With --test_sample_dir: skip images whose header declares more "
                         "pixels (decompression bombs are never decoded); 0: no limit.",
                         lower_bound=0, **d)
    flags.DEFINE_bool("photos", False,
                      "With --test_sample_dir: the images are ordinary photos; find and align "
                      "the faces (as the export's predict_photo does) and print one line per "
                      "face, 'no face found' for a photo without one.", **d)
    flags.DEFINE_string("draw_dir", None, "With --photos: where copies of the photos go, "
                        "with each face's box and age drawn on them.", **d)
    flags.DEFINE_integer("keras_progress", None,
                         "Keras fit's progress output: 0 none, 1 a progress bar, 2 one line per "
                         "epoch. Default: 1 on a terminal, 2 otherwise. (-v/--verbosity is the "
                         "libraries' log lines, as in every command.)", **d)
    # The old spelling, still accepted (the same flag), with a warning.
    flags.DEFINE_alias("verbose", "keras_progress", **d)
    flags.register_validator("keras_progress", lambda _: _warn_old_verbose(fv), **d)
    return fv


def _warn_old_verbose(fv):
    if fv["verbose"].present:
        arg_types.warn_renamed(["--verbose"], {"--verbose": "--keras_progress"})
    return True


def old_print_count(batch_size, probability):
    """How many faces of a batch the old-print composite degrades (as
    `input_pipeline.Parser` rounds it: float32, half to even)."""
    return int(np.round(np.float32(batch_size) * np.float32(probability)))


def _check_consistency(values):
    """--consistency_weight pairs the faces the old-print composite degrades with their
    clean copies: there must be some in every batch."""
    if not values["consistency_weight"]:
        return True
    if not values["augment"] or not values["old_print_probability"]:
        raise flags.ValidationError(
            "--consistency_weight compares old-printed faces with the same faces clean: it "
            "needs --old_print_probability > 0 (and --augment, which applies it)")
    if values["batch_size"] and not old_print_count(values["batch_size"],
                                                    values["old_print_probability"]):
        raise flags.ValidationError(
            f"--consistency_weight: --old_print_probability={values['old_print_probability']}"
            f" of a batch of {values['batch_size']} rounds to no old-printed face (no pair); "
            f"raise either")
    return True


def _is_scale_range(values):
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        return False
    return 0 < low <= high <= 1


def _is_severity_range(values):
    try:
        low, high = (float(v) for v in values)
    except ValueError:
        return False
    return 0 <= low <= high <= 1


def _pair(values):
    return [str(v) for v in values]


def _floats(fv, name, count=2):
    try:
        values = tuple(float(v) for v in getattr(fv, name))
    except ValueError:
        values = ()
    if len(values) != count:
        raise flags.ValidationError(f"--{name} takes {count} numbers, got {getattr(fv, name)}")
    return values


def augment_config(fv):
    """The `input_pipeline.AugmentConfig` the augmentation flags describe."""
    return input_pipeline.AugmentConfig(
        enabled=fv.augment, crop_fraction=_floats(fv, "crop_fraction"), max_shift=fv.max_shift,
        brightness=fv.brightness, contrast=_floats(fv, "contrast"),
        blur_probability=fv.blur_probability, blur_scale=_floats(fv, "blur_scale"),
        source_margin=fv.source_margin, degrade_probability=fv.degrade_probability,
        low_res_scale=_floats(fv, "low_res_scale"),
        old_print_probability=fv.old_print_probability,
        old_print_severity=_floats(fv, "old_print_severity"),
        old_print_pairs=fv.consistency_weight > 0)


def _define_range(name, default, help_text, check, what, d):
    """A min,max list flag whose two values `check` accepts, else '--name: what'."""
    flags.DEFINE_list(name, default, help_text, **d)
    flags.register_validator(name, check, f"--{name}: {what}", **d)


RESOLVED_FLAGS_FILE = "flags.txt"


def resolved_flags(fv):
    """The run's configuration as a flagfile: every trainer flag set to a value, one per
    line, defaults included, so `--flagfile=<job_dir>/flags.txt` replays the run even if a
    default changes later (and the flagfiles it came from may be edited or gone)."""
    names = sorted(define_flags(flags.FlagValues()))
    lines = [fv[name].serialize() for name in names if fv[name].value is not None]
    return ("# The resolved configuration of this run (trainer.flags.resolved_flags): replay it\n"
            "# with python -m trainer.task --flagfile=<this file>.\n"
            + "".join(line + "\n" for line in lines if line))


def write_resolved_flags(fv, out_dir):
    """<out_dir>/flags.txt from the command's flags (a hand-built config has none)."""
    if isinstance(fv, flags.FlagValues):
        import tensorflow as tf  # gfile: job dirs may be gs:// paths

        with tf.io.gfile.GFile(os.path.join(out_dir, RESOLVED_FLAGS_FILE), "w") as f:
            f.write(resolved_flags(fv))


def parse(argv):
    """A private FlagValues with every trainer flag, parsed from argv (no program name)."""
    fv = define_flags(flags.FlagValues())
    fv(["trainer"] + list(argv))
    return fv
