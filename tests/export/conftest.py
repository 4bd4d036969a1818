"""Fixtures: tiny Keras models honouring the trainer contract, saved as trainer job dirs and
exported once per session."""
import os

import pytest

from export import export_model, testing

UTK_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "..", "shared", "data", "utkface",
                       "UTKFace")


@pytest.fixture(scope="session")
def job_dirs(tmp_path_factory):
    """{name: job_dir} for a classification+gender, a regression and a range+gender model."""
    return {name: testing.make_job_dir(tmp_path_factory.mktemp(f"job_{name}"), **kw)
            for name, kw in testing.VARIANTS.items()}


@pytest.fixture(scope="session")
def exported(job_dirs, tmp_path_factory):
    """{name: version dir} of each variant exported as version 1."""
    return {name: export_model.export_saved_model(job_dir, str(tmp_path_factory.mktemp(name)))
            for name, job_dir in job_dirs.items()}


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
