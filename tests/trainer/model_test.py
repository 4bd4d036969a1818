"""Backbones, heads, dtype policies, weight resolution and the saved-model contract."""
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf

from agegender import heads, model_layers, model_spec
from agegender import job_dir as job_dir_lib
from trainer import distribution, task
from trainer import flags as trainer_flags
from trainer import model as model_lib

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parents[3] / "shared" / "weights"

MNV2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


@pytest.fixture(autouse=True)
def _float32_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()


@pytest.mark.integration
@pytest.mark.parametrize("base_model,img_dim", [
    ("MobileNetV2", 32), ("ResNet50", 32), ("MobileNetV3Small", 32), ("EfficientNetB0", 32)])
def test_backbones_build_with_all_heads(base_model, img_dim):
    spec = model_spec.ModelSpec(type="classification", predict_gender=True, img_dim=img_dim,
                                base_model=base_model, alpha=0.35 if "Mobile" in base_model
                                else 1.0)
    if base_model == "MobileNetV3Small":
        spec.alpha = 0.75
    model = model_lib.build_model(spec, weights=None)
    x = np.random.uniform(0, 255, (2, img_dim, img_dim, 3)).astype(np.float32)
    out = model(x)
    assert set(out) == {heads.DistributionHead.output, heads.GENDER}
    assert out[heads.DistributionHead.output].shape == (2, 101)
    np.testing.assert_allclose(np.sum(out[heads.GENDER], -1), 1.0, rtol=1e-5)
    # One training step with the trainer's losses and metrics (head, then fine-tune).
    cfg = trainer_flags.parse(["--weights=none"])
    y = {heads.DistributionHead.output: np.eye(101, dtype=np.float32)[[20, 40]],
         heads.GENDER: np.array([0, 1])}
    for fine_tune in (False, True):
        if fine_tune:
            model_lib.set_fine_tune(model, 0)
        # Eagerly: tracing a big backbone's train step costs more than running it once.
        task.compile_model(model, spec, cfg, 1e-3, run_eagerly=True)
        logs = model.train_on_batch(x, y, return_dict=True)
        assert np.isfinite(logs["loss"])


@pytest.mark.integration
@pytest.mark.parametrize("kw,output,width", [
    (dict(type="regression"), heads.RegressionHead.output, 1),
    (dict(range_mode=True), heads.RangeHead.output, heads.NUM_AGE_RANGES)])
def test_heads(kw, output, width):
    spec = model_spec.ModelSpec(img_dim=32, alpha=0.35, **kw)
    out = model_lib.build_model(spec)(np.zeros((1, 32, 32, 3), np.float32))
    assert list(out) == [output] and out[output].shape == (1, width)


@pytest.mark.integration
@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
def test_mixed_precision_keeps_float32_outputs(policy):
    distribution.set_precision(policy)
    spec = model_spec.ModelSpec(img_dim=32, alpha=0.35, predict_gender=True)
    model = model_lib.build_model(spec)
    assert model.get_layer("backbone_preprocess").compute_dtype == policy.split("_")[1]
    out = model(np.zeros((2, 32, 32, 3), np.float32))
    assert all(v.dtype == tf.float32 for v in out.values())


def test_precision_auto_rules():
    assert distribution.resolve_precision("auto", gpu_capabilities=[(8, 0)]) == "mixed_float16"
    assert distribution.resolve_precision("auto", gpu_capabilities=[(6, 1)]) == "float32"
    assert distribution.resolve_precision("auto", gpu_capabilities=[(8, 0), (6, 1)]) == "float32"
    assert distribution.resolve_precision("auto", gpu_capabilities=[]) == "float32"
    assert distribution.resolve_precision("mixed_bfloat16") == "mixed_bfloat16"


@pytest.mark.integration
def test_save_load_contract(tmp_path):
    spec = model_spec.ModelSpec(img_dim=32, alpha=0.35, predict_gender=True)
    model = model_lib.build_model(spec)
    path = tmp_path / job_dir_lib.MODEL_FILE
    model.save(path)
    loaded = keras.models.load_model(path, compile=False)
    x = np.random.uniform(0, 255, (2, 32, 32, 3)).astype(np.float32)
    for k, v in model(x).items():
        np.testing.assert_allclose(loaded(x)[k], v, rtol=1e-5, atol=1e-6)
    # The caffe normalisation is a registered layer: RGB->BGR minus the ImageNet mean.
    pre = model_layers.BackbonePreprocess.from_config(
        model_layers.BackbonePreprocess("caffe").get_config())
    np.testing.assert_allclose(pre(np.full((1, 1, 1, 3), 200.0, np.float32))[0, 0, 0],
                               200.0 - np.array(model_layers.BackbonePreprocess.CAFFE_MEAN_BGR),
                               rtol=1e-6)


@pytest.mark.integration
@pytest.mark.skipif(not (WEIGHTS_DIR / MNV2_035).exists(), reason="no shared weights")
def test_imagenet_resolved_offline_for_any_size(tmp_path, monkeypatch):
    monkeypatch.setattr(model_lib, "_network_reachable", lambda timeout=3.0: False)
    path = model_lib.resolve_weights("MobileNetV2", 0.35, "imagenet", str(WEIGHTS_DIR))
    assert path == str(WEIGHTS_DIR / MNV2_035)
    # 224-trained weights load into a 64 px backbone: same convolution kernels.
    backbone = model_lib.build_backbone("MobileNetV2", 64, 0.35, path)
    reference = keras.applications.MobileNetV2(alpha=0.35, input_shape=(96, 96, 3),
                                               include_top=False, weights=path)
    np.testing.assert_array_equal(backbone.get_layer("Conv1").kernel.numpy(),
                                  reference.get_layer("Conv1").kernel.numpy())
    assert np.abs(backbone.get_layer("Conv1").kernel.numpy()).sum() > 0


def test_missing_weights_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(model_lib, "_network_reachable", lambda timeout=3.0: False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_HOME", raising=False)
    with pytest.raises(model_lib.WeightsNotFoundError, match="no such file"):
        model_lib.resolve_weights("MobileNetV2", 1.0, str(tmp_path / "nope.h5"))
    with pytest.raises(model_lib.WeightsNotFoundError,
                       match=r"mobilenet_v2_.*_1.0_224_no_top.h5.*network is unreachable"):
        model_lib.resolve_weights("MobileNetV2", 1.0, "imagenet", str(tmp_path))
    assert model_lib.resolve_weights("ResNet50", 1.0, "none") is None


def test_network_probe_does_not_hang():
    import time

    start = time.time()
    model_lib._network_reachable(timeout=1.0)
    assert time.time() - start < 5


@pytest.mark.integration
def test_fine_tune_unfreezes_from_index_but_not_batchnorm():
    spec = model_spec.ModelSpec(img_dim=32, alpha=0.35)
    model = model_lib.build_model(spec)
    backbone = model_lib.get_backbone(model)
    assert not backbone.trainable
    head_only = len(model.trainable_weights)
    model_lib.set_fine_tune(model, 100)
    for i, layer in enumerate(backbone.layers):
        if isinstance(layer, keras.layers.BatchNormalization) or i < 100:
            assert not layer.trainable, layer.name
    assert len(model.trainable_weights) > head_only
    model_lib.freeze_backbone(model)
    assert len(model.trainable_weights) == head_only
