"""Tiny models that honour the trainer contract (agegender.model_spec), for tests and demos.

Owns nothing the pipeline depends on: `make_job_dir` writes `model.keras` +
`model_spec.json` exactly as the trainer would, from a few-kilobyte Keras model
(Rescaling + one conv + pooling + dense heads), so the export and the server can be
tested without the trainer.
"""
import os

from agegender import model_spec as ms
from agegender import schema

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
    outputs = {}
    if spec.range_mode:
        outputs[ms.AGE_RANGE] = layers.Dense(ms.NUM_AGE_RANGES, activation="softmax",
                                             name=ms.AGE_RANGE)(x)
    elif spec.type == "classification":
        outputs[ms.AGE_DISTRIBUTION] = layers.Dense(schema.NUM_AGE_BINS, activation="softmax",
                                                    name=ms.AGE_DISTRIBUTION)(x)
    else:
        outputs[ms.AGE_REGRESSION] = layers.Dense(1, activation="sigmoid",
                                                  name=ms.AGE_REGRESSION)(x)
    if spec.predict_gender:
        outputs[ms.GENDER] = layers.Dense(2, activation="softmax", name=ms.GENDER)(x)
    return keras.Model(inputs, outputs, name="tiny_agegender")


def make_job_dir(job_dir, img_dim=32, seed=0, **spec_kwargs):
    """Writes a trainer-style job dir (model.keras + model_spec.json); returns its path."""
    spec = ms.ModelSpec(img_dim=img_dim, base_model="tiny", **spec_kwargs)
    model = build_tiny_model(spec, seed=seed)
    job_dir = str(job_dir)
    os.makedirs(job_dir, exist_ok=True)
    model.save(os.path.join(job_dir, ms.MODEL_FILE))
    with open(os.path.join(job_dir, ms.SPEC_FILE), "w") as f:
        f.write(spec.to_json())
    return job_dir
