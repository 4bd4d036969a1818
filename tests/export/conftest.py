"""Fixtures: tiny Keras models honouring the trainer contract, saved as trainer job dirs and
exported once per session."""
import os

import pytest

from export import export_model
from testing import tiny_models

UTK_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "utkface",
                       "UTKFace")


@pytest.fixture(scope="session")
def job_dirs(tiny_job):
    """{name: job_dir} for a classification+gender, a regression and a range+gender model."""
    return {name: tiny_job(name) for name in tiny_models.VARIANTS}


@pytest.fixture(scope="session")
def exported(tiny_export):
    """{name: version dir} of each variant exported as version 1."""
    return {name: os.path.join(tiny_export(name), "1") for name in tiny_models.VARIANTS}


@pytest.fixture(scope="session")
def face_images():
    """A few encoded images: real UTKFace JPEGs when ../shared is there, a PNG, synthetic ones."""
    import tensorflow as tf

    images = []
    if os.path.isdir(UTK_DIR):
        names = sorted(os.listdir(UTK_DIR))[:3]
        images += [open(os.path.join(UTK_DIR, n), "rb").read() for n in names]
    images.append(export_model.synthetic_jpeg(size=90, seed=3))
    png = tf.io.encode_png(tf.cast(tf.random.stateless_uniform([50, 70, 3], [1, 2], 0, 255),
                                   tf.uint8)).numpy()
    images.append(png)
    return images
