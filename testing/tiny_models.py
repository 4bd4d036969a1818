"""Tiny models that honour the trainer contract (agegender.model_spec), for tests and benchmarks.

Owns nothing the pipeline depends on: `make_job_dir` writes `model.keras` +
`model_spec.json` exactly as the trainer would (`agegender.job_dir.save`), from a
few-kilobyte Keras model (Rescaling + two convs + pooling + the heads of
`agegender.heads`), so the export and the server can be tested without the trainer.
"""
import os

from agegender import heads
from agegender import job_dir as job_dir_lib
from agegender import model_spec as ms

# name -> ModelSpec keyword arguments; covers all three head types, with and without gender.
VARIANTS = {
    "clf_gender": dict(type="classification", predict_gender=True),
    "regression": dict(type="regression", predict_gender=False),
    "range_gender": dict(type="classification", range_mode=True, predict_gender=True),
}


def build_tiny_model(spec, seed=0):
    import keras
    from keras import layers

    keras.utils.set_random_seed(seed)
    inputs = keras.Input((spec.img_dim, spec.img_dim, 3), dtype="float32", name="pixels")
    x = layers.Rescaling(1.0 / 127.5, offset=-1.0)(inputs)
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = layers.Conv2D(8, 3, strides=2, activation="relu")(x)
    x = layers.GlobalAveragePooling2D()(x)
    outputs = {head.output: head.output_layer()(x) for head in heads.for_spec(spec)}
    return keras.Model(inputs, outputs, name="tiny_agegender")


def make_job_dir(directory, img_dim=32, seed=0, **spec_kwargs):
    """Writes a trainer-style job dir (model.keras + model_spec.json); returns its path."""
    spec = ms.ModelSpec(img_dim=img_dim, base_model="tiny", **spec_kwargs)
    model = build_tiny_model(spec, seed=seed)
    os.makedirs(str(directory), exist_ok=True)
    job_dir_lib.save(str(directory), model, spec)
    return str(directory)
