"""The Keras model: backbone, its input normalisation, pooling and heads; weight resolution.

The model honours `agegender.model_spec`: one float32 input [N, S, S, 3] of pixels in
0..255 and a dict of float32 outputs, one per head (`agegender.heads`). It owns the
backbone's normalisation as a layer (`agegender.model_layers.BackbonePreprocess`), so the
export and serving need nothing backbone-specific.

ImageNet weights are resolved offline first (`resolve_weights`): `--weights_dir`, then
$KERAS_HOME/models and ~/.keras/models, under Keras's own file names. The 224-pixel file is
loaded into any input size (convolution weights do not depend on it). Only when nothing is
found offline is the network tried, after a short reachability probe, so a machine without
network gets a clear error instead of a hang.
"""
import os
import socket

from absl import logging
import keras
import tensorflow as tf

from agegender import heads
from agegender.model_layers import BackbonePreprocess

WEIGHTS_HOST = ("storage.googleapis.com", 443)


# name -> (constructor, preprocess mode, offline weight file name(alpha), takes alpha)
def _mobilenet_v2_file(alpha):
    return f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_224_no_top.h5"


BACKBONES = {
    "MobileNetV2": (keras.applications.MobileNetV2, "tf", _mobilenet_v2_file, True),
    "ResNet50": (keras.applications.ResNet50, "caffe",
                 lambda a: "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5", False),
    "MobileNetV3Small": (
        # include_preprocessing=True: the backbone rescales 0..255 itself.
        lambda **kw: keras.applications.MobileNetV3Small(include_preprocessing=True, **kw),
        "none", lambda a: f"weights_mobilenet_v3_small_224_{float(a)}_float_no_top_v2.h5",
        True),
    "EfficientNetB0": (keras.applications.EfficientNetB0, "none",
                       lambda a: "efficientnetb0_notop.h5", False),
}


class WeightsNotFoundError(FileNotFoundError):
    pass


def weight_search_dirs(weights_dir=None):
    dirs = []
    if weights_dir:
        dirs.append(weights_dir)
    keras_home = os.environ.get("KERAS_HOME")
    if keras_home:
        dirs.append(os.path.join(keras_home, "models"))
    dirs.append(os.path.join(os.path.expanduser("~"), ".keras", "models"))
    return dirs


def _network_reachable(timeout=3.0):
    try:
        with socket.create_connection(WEIGHTS_HOST, timeout=timeout):
            return True
    except OSError:
        return False


def resolve_weights(base_model, alpha=1.0, weights="imagenet", weights_dir=None):
    """What to pass as `weights=` to the keras.applications constructor.

    Returns None (random), a local file path, or 'imagenet' (download: only when nothing
    is found offline and the weights host answers). Raises WeightsNotFoundError otherwise.
    """
    if weights in (None, "", "none", "None", "random"):
        return None
    if weights != "imagenet":
        if not tf.io.gfile.exists(weights):
            raise WeightsNotFoundError(f"--weights={weights!r}: no such file")
        return weights
    file_name = BACKBONES[base_model][2](alpha)
    dirs = weight_search_dirs(weights_dir)
    for d in dirs:
        path = os.path.join(d, file_name)
        if tf.io.gfile.exists(path):
            logging.info("ImageNet weights for %s: %s", base_model, path)
            return path
    if _network_reachable():
        logging.info("%s not found offline; Keras will download it", file_name)
        return "imagenet"
    raise WeightsNotFoundError(
        f"ImageNet weights for {base_model} (alpha {alpha}) not found: looked for "
        f"{file_name} in {dirs} and the network is unreachable. Pass --weights_dir (or set "
        f"$AGEGENDER_WEIGHTS_DIR) to a directory holding that file, --weights=<path>, or "
        f"--weights=none for random weights.")


def build_backbone(base_model, img_dim, alpha=1.0, weights=None):
    """The headless keras.applications backbone for `img_dim` inputs, weights resolved."""
    if base_model not in BACKBONES:
        raise ValueError(f"unknown base model {base_model!r}; one of {sorted(BACKBONES)}")
    ctor, _, _, takes_alpha = BACKBONES[base_model]
    kwargs = dict(input_shape=(img_dim, img_dim, 3), include_top=False)
    if takes_alpha:
        kwargs["alpha"] = alpha
    if weights == "imagenet":
        return ctor(weights="imagenet", **kwargs)
    backbone = ctor(weights=None, **kwargs)
    if weights:
        # Loaded by the application's own path-loading code path would check the size in
        # the file name; loading into the built model works for any input size.
        backbone.load_weights(weights)
    return backbone


def build_model(spec, weights=None, dropout=0.2):
    """Backbone + normalisation + global average pooling + heads, per `spec`.

    `weights` is what `resolve_weights` returned. The backbone is called with
    training=False so its BatchNorm layers stay in inference mode, also when unfrozen
    for fine-tuning (updating their statistics on small batches would wreck them).
    """
    backbone = build_backbone(spec.base_model, spec.img_dim, spec.alpha, weights)
    backbone.trainable = False
    mode = BACKBONES[spec.base_model][1]
    inputs = keras.Input((spec.img_dim, spec.img_dim, 3), dtype="float32", name="image")
    x = BackbonePreprocess(mode, name="backbone_preprocess")(inputs)
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(dropout, name="dropout")(x)
    # Heads compute in float32 whatever the policy: softmax and losses need the range.
    outputs = {head.output: head.output_layer()(x) for head in heads.for_spec(spec)}
    return keras.Model(inputs, outputs, name=f"agegender_{spec.base_model}")


def get_backbone(model):
    """The backbone sub-model inside a model from `build_model`."""
    for layer in model.layers:
        if isinstance(layer, keras.Model):
            return layer
    raise ValueError("model has no backbone sub-model")


def set_fine_tune(model, fine_tune_at):
    """Unfreezes backbone layers from index `fine_tune_at` on; BatchNorm stays frozen."""
    backbone = get_backbone(model)
    backbone.trainable = True
    for i, layer in enumerate(backbone.layers):
        frozen = i < fine_tune_at or isinstance(layer, keras.layers.BatchNormalization)
        layer.trainable = not frozen
    n = sum(1 for layer in backbone.layers if layer.trainable and layer.weights)
    logging.info("Fine-tuning: %d backbone layers with weights trainable (from %d of %d)",
                 n, fine_tune_at, len(backbone.layers))


def freeze_backbone(model):
    get_backbone(model).trainable = False
