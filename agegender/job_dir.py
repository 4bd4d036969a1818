"""A trainer job directory: the files the trainer leaves there, and loading the model back.

    <job_dir>/model.keras        the trained Keras model (loaded by `load`)
              model_spec.json    its `ModelSpec`
              history.json       per-epoch metrics          eval.json   validation metrics
              eval_test.json     test metrics, only when asked (--eval_split=test)
              learning_curves.png                           train_state.json  resume state
              checkpoints/<phase>/   logs/ (TensorBoard)    lr_find.json / lr_find.png
              records_fingerprint.json  the records it was trained on (trainer.records_fingerprint)

The trainer writes it (`save`); predict mode, the export and the evaluation read it
(`load`), on any filesystem TensorFlow knows. `load` registers the project's custom Keras
layers (`agegender.model_layers`) first, so nobody needs to import the trainer for that.
"""
import json
import posixpath

MODEL_FILE = "model.keras"
SPEC_FILE = "model_spec.json"
HISTORY_FILE = "history.json"
EVAL_FILE = "eval.json"
EVAL_TEST_FILE = "eval_test.json"
EVAL_SPLITS = ("validation", "test")
STATE_FILE = "train_state.json"
CURVES_FILE = "learning_curves.png"
LR_FIND_JSON = "lr_find.json"
LR_FIND_PLOT = "lr_find.png"
RECORDS_FINGERPRINT_FILE = "records_fingerprint.json"
CHECKPOINTS_DIR = "checkpoints"
LOGS_DIR = "logs"


class JobDirError(FileNotFoundError):
    """A job dir without the trained model's files, or with damaged ones."""


def eval_file(split):
    """The job dir's file of an evaluation on `split`: `eval.json` for validation (what runs
    are compared on), `eval_test.json` for the test split, so that evaluating the test split
    for a report never replaces the validation figures, and eval.json never holds test
    figures. Either names its split inside ("split")."""
    if split not in EVAL_SPLITS:
        raise ValueError(f"a job dir is evaluated on one of {EVAL_SPLITS}, not {split!r}")
    return EVAL_FILE if split == "validation" else EVAL_TEST_FILE


def path(job_dir, *names):
    """A path inside the job dir (local paths and gs:// alike)."""
    return posixpath.join(str(job_dir), *names)


def write_text(job_dir, name, text):
    import tensorflow as tf

    with tf.io.gfile.GFile(path(job_dir, name), "w") as f:
        f.write(text)


def write_json(job_dir, name, obj, **options):
    write_text(job_dir, name, json.dumps(obj, **{"indent": 1, **options}))


def save(job_dir, model, spec):
    """Writes model.keras and model_spec.json (the model first: a spec says it is complete)."""
    model.save(path(job_dir, MODEL_FILE))
    write_text(job_dir, SPEC_FILE, spec.to_json())


def load_spec(job_dir):
    import tensorflow as tf

    from agegender import model_spec

    spec_path = path(job_dir, SPEC_FILE)
    if not tf.io.gfile.exists(spec_path):
        raise JobDirError(f"{spec_path} not found: is {str(job_dir)!r} a job dir written by "
                          f"the trainer (it must hold {MODEL_FILE} and {SPEC_FILE})?")
    with tf.io.gfile.GFile(spec_path, "rb") as f:
        text = f.read()
    try:
        return model_spec.ModelSpec.from_json(text)
    except (ValueError, TypeError) as e:  # TypeError: a key of the wrong kind
        raise JobDirError(f"{spec_path} is not a valid model spec: {e}; it is damaged or "
                          f"was edited (the trainer writes it with {MODEL_FILE})") from None


def load(job_dir):
    """(Keras model, ModelSpec) from a job dir; `JobDirError` when a file is missing."""
    import keras
    import tensorflow as tf

    from agegender import model_layers  # noqa: F401  (registers the custom layers)

    model_path = path(job_dir, MODEL_FILE)
    if not tf.io.gfile.exists(model_path):
        raise JobDirError(f"{model_path} not found: is {str(job_dir)!r} a job dir written by "
                          f"the trainer (it must hold {MODEL_FILE} and {SPEC_FILE})?")
    spec = load_spec(job_dir)
    try:
        model = keras.models.load_model(model_path, compile=False)
    except Exception as e:  # noqa: BLE001 (Keras raises many kinds for a damaged archive)
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        if reason.startswith("File not found"):  # what Keras says of a cut-off archive
            reason = "not a complete .keras zip archive"
        raise JobDirError(f"{model_path} cannot be loaded ({reason}): the file is damaged "
                          f"or incomplete; copy it again or rerun the training") from None
    side = tuple(model.inputs[0].shape[1:3]) if model.inputs else None
    if side != (spec.img_dim, spec.img_dim):
        raise JobDirError(f"{model_path} takes {side} pixel inputs but {SPEC_FILE} says "
                          f"img_dim {spec.img_dim}: they are not from the same training")
    return model, spec
