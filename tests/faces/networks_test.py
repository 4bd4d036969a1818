"""The networks compute what the mtcnn package's Keras models compute, from its weights."""
import numpy as np
import pytest
import tensorflow as tf

from faces import networks


@pytest.mark.parametrize("ours, stage_name, shape", [
    (networks.PNet, "StagePNet", (1, 57, 83, 3)),
    (networks.RNet, "StageRNet", (7, 24, 24, 3)),
    (networks.ONet, "StageONet", (7, 48, 48, 3)),
])
def test_same_outputs_as_the_packages_keras_models(ours, stage_name, shape):
    import mtcnn.stages

    theirs = getattr(mtcnn.stages, stage_name)().model
    x = np.random.default_rng(0).uniform(-1, 1, shape).astype(np.float32)
    mine = ours()(x)
    reference = theirs(x)
    # The package returns (offsets, [landmarks,] class softmax); we return the face
    # probability first.
    np.testing.assert_allclose(mine[0], reference[-1][..., 1], atol=1e-5)
    np.testing.assert_allclose(mine[1], reference[0], atol=1e-4)
    if len(mine) == 3:
        np.testing.assert_allclose(mine[2], reference[1], atol=1e-4)


def test_pnet_output_grid_matches_its_stride_and_window():
    prob, offsets = networks.PNet()(tf.zeros([1, 36, 50, 3]))
    # 12-pixel windows every 2 pixels: (36 - 12) / 2 + 1 = 13 rows, (50 - 12) / 2 + 1 = 20.
    assert prob.shape == (1, 13, 20) and offsets.shape == (1, 13, 20, 4)


def test_an_empty_batch_of_patches_gives_empty_outputs():
    prob, offsets = networks.RNet()(tf.zeros([0, 24, 24, 3]))
    assert prob.shape == (0,) and offsets.shape == (0, 4)
    prob, offsets, points = networks.ONet()(tf.zeros([0, 48, 48, 3]))
    assert prob.shape == (0,) and offsets.shape == (0, 4) and points.shape == (0, 10)


def test_missing_weights_say_which_package_to_install(monkeypatch):
    monkeypatch.setattr(networks, "WEIGHTS_PACKAGE", "no_such_package_for_mtcnn_weights")
    with pytest.raises(networks.WeightsError, match="mtcnn==1.0.0"):
        networks.PNet()


def test_weights_of_another_network_are_refused():
    with pytest.raises(networks.WeightsError, match="expected 13 for pnet"):
        networks.PNet(weights=networks.load_weights(networks.RNET))
    onet = networks.load_weights(networks.ONET)
    onet[12] = onet[12][None]  # a dense kernel of rank 3
    with pytest.raises(networks.WeightsError, match="array 12 of onet"):
        networks.ONet(weights=onet)
