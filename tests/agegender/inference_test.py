"""The forward pass every prediction path uses: test-time flip averages the two views."""
import dataclasses

import numpy as np
import pytest
import tensorflow as tf

from agegender import inference
from agegender.model_spec import ModelSpec
from testing import tiny_models


@pytest.fixture(scope="module")
def model_and_spec():
    spec = ModelSpec(img_dim=32, base_model="tiny", predict_gender=True)
    return tiny_models.build_tiny_model(spec), spec


def test_test_time_flip_averages_face_and_mirror(model_and_spec):
    model, spec = model_and_spec
    pixels = tf.constant(np.random.default_rng(0).uniform(0, 255, (3, 32, 32, 3)), tf.float32)
    plain = inference.raw_outputs(model, pixels, spec)
    mirror = inference.raw_outputs(model, tf.reverse(pixels, axis=[2]), spec)
    flipped = inference.raw_outputs(model, pixels, dataclasses.replace(spec, test_time_flip=True))
    for name in plain:
        np.testing.assert_allclose(flipped[name], (plain[name] + mirror[name]) / 2, atol=1e-6)
        assert not np.allclose(plain[name], mirror[name], atol=1e-4)  # the views differ
    # A mirror-symmetric face gives the same answer either way.
    symmetric = tf.concat([pixels[:, :, :16], tf.reverse(pixels[:, :, :16], axis=[2])], axis=2)
    a = inference.raw_outputs(model, symmetric, spec)
    b = inference.raw_outputs(model, symmetric, dataclasses.replace(spec, test_time_flip=True))
    for name in a:
        np.testing.assert_allclose(a[name], b[name], atol=1e-5)
