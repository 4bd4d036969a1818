"""The three MTCNN networks (PNet, RNet, ONet) as TensorFlow ops, with the mtcnn package's weights.

Owns the network architectures and where their weights come from. The weights are the
ones the PyPI package `mtcnn` 1.0.0 ships (MIT licence; `mtcnn/assets/weights/*.lz4`, the
original MTCNN models converted by that package). They are read from the *installed*
package at run time with `importlib.resources`: nothing is downloaded and nothing is copied
into this project. Once a detector is saved in a SavedModel, the weights live in its
variables and the mtcnn package is no longer needed to load or serve it.

The files are joblib pickles (lists of float32 arrays, Keras layer order); joblib
unpickles them, so they are trusted exactly as far as the installed package's own code is.

Layer for layer the networks compute what the package's Keras models compute (same
convolutions, PReLUs, poolings and paddings; RNet/ONet transpose height and width before
flattening, an artefact of the Caffe originals their dense weights depend on), written with
`tf.nn` ops on `tf.Variable`s so that a `tf.Module` holding them saves as a SavedModel.

Inputs are normalised pixels, (x - 127.5) / 128 (`normalize`). Each network returns the
face probability (softmax of its 2-way classifier, class 1) and box offsets; ONet also
returns 10 landmark values (x of the 5 points, then y), relative to its 48x48 patch.
"""
import importlib.resources

import tensorflow as tf

WEIGHTS_PACKAGE = "mtcnn.assets.weights"
PNET, RNET, ONET = "pnet", "rnet", "onet"

# Per network: the layers in the order of the package's weight list, as (kind, arguments).
# conv: kernel, bias; prelu: alpha; dense: kernel, bias.
_PNET_LAYERS = ("conv", "prelu", "conv", "prelu", "conv", "prelu", "conv", "conv")
_RNET_LAYERS = ("conv", "prelu", "conv", "prelu", "conv", "prelu", "dense", "prelu",
                "dense", "dense")
_ONET_LAYERS = ("conv", "prelu", "conv", "prelu", "conv", "prelu", "conv", "prelu",
                "dense", "prelu", "dense", "dense", "dense")
_LAYERS = {PNET: _PNET_LAYERS, RNET: _RNET_LAYERS, ONET: _ONET_LAYERS}
_PARAMS = {"conv": 2, "prelu": 1, "dense": 2}

PNET_CELL = 12   # PNet's receptive field: one output cell sees a 12x12 window...
PNET_STRIDE = 2  # ...and neighbouring cells are 2 pixels apart
RNET_SIZE = 24   # RNet's input patches are 24x24
ONET_SIZE = 48   # ONet's, 48x48


class WeightsError(RuntimeError):
    """The mtcnn package (or one of its weight files) is not installed, or the arrays given
    are not that network's weights."""


def normalize(pixels):
    """Pixels in 0..255 (float) -> the networks' input range, (x - 127.5) / 128."""
    return (pixels - 127.5) * (1.0 / 128.0)


def load_weights(name):
    """The package's weight list for `name` (pnet, rnet or onet): a list of float32 arrays."""
    try:
        import joblib

        path = importlib.resources.files(WEIGHTS_PACKAGE) / f"{name}.lz4"
        with importlib.resources.as_file(path) as local:
            weights = joblib.load(local)
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise WeightsError(
            f"MTCNN weights {name}.lz4 not found ({e}): the face detector reads them from the "
            "installed PyPI package mtcnn==1.0.0 (pip install mtcnn==1.0.0, which brings "
            "joblib and lz4)") from e
    return _checked(name, weights, f"{name}.lz4")


# Rank of each parameter array per layer kind (a PReLU's alpha is per channel: rank 3 after
# a convolution, 1 after a dense layer).
_RANKS = {"conv": ((4,), (1,)), "prelu": ((1, 3),), "dense": ((2,), (1,))}


def _checked(name, weights, source):
    weights = list(weights)
    expected = sum(_PARAMS[kind] for kind in _LAYERS[name])
    if len(weights) != expected:
        raise WeightsError(f"{source} holds {len(weights)} arrays, expected {expected} for "
                           f"{name}: not the weights of mtcnn 1.0.0")
    ranks = [r for kind in _LAYERS[name] for r in _RANKS[kind]]
    for i, (w, allowed) in enumerate(zip(weights, ranks)):
        if getattr(w, "ndim", None) not in allowed:
            raise WeightsError(f"{source}: array {i} of {name} has shape "
                               f"{getattr(w, 'shape', None)}, expected rank {allowed}")
    return weights


def _conv(x, params):
    kernel, bias = params
    return tf.nn.conv2d(x, kernel, strides=1, padding="VALID") + bias


def _prelu(x, params):
    (alpha,) = params
    # x for x > 0, alpha * x below. alpha is per channel and outside [0, 1] for some
    # channels, so max(x, alpha * x) would be wrong; of the exact forms this one (3
    # elementwise ops) measured fastest on CPU, where PNet's PReLUs cost half as much
    # as its convolutions.
    return x + (alpha - 1.0) * tf.minimum(x, 0.0)


def _dense(x, params):
    kernel, bias = params
    return tf.matmul(x, kernel) + bias


def _face_probability(logits):
    # softmax(l)[1] of a 2-way classifier, without materialising both classes.
    return tf.sigmoid(logits[..., 1] - logits[..., 0])


def _if_any(x, network, widths):
    """`network(x)`, or empty outputs of `widths` for a batch of 0 patches: TF's CPU
    convolution returns a wrongly shaped tensor for an empty batch."""
    return tf.cond(tf.shape(x)[0] > 0, lambda: network(x),
                   lambda: tuple(tf.zeros([0, *w]) for w in widths))


def _flatten_caffe(x):
    # The dense weights expect the Caffe (channel, width, height) flattening order.
    # Static feature size: a batch of 0 patches must still reshape.
    x = tf.transpose(x, [0, 2, 1, 3])
    return tf.reshape(x, [-1, x.shape[1] * x.shape[2] * x.shape[3]])


class _Network(tf.Module):
    """Variables for one network, grouped per layer in the package's order."""

    def __init__(self, name, weights=None):
        super().__init__(name=name)
        weights = (load_weights(name) if weights is None
                   else _checked(name, weights, "the weights given"))
        self._layers = []
        i = 0
        for k, kind in enumerate(_LAYERS[name]):
            n = _PARAMS[kind]
            self._layers.append(tuple(
                tf.Variable(w, trainable=False, name=f"{kind}{k}_{j}")
                for j, w in enumerate(weights[i:i + n])))
            i += n


class PNet(_Network):
    """Proposal network, fully convolutional: [1, H, W, 3] -> probability [1, h, w], offsets
    [1, h, w, 4] with h = ceil((H - 2) / 2) - 4 (one cell per 12x12 window, stride 2)."""

    def __init__(self, weights=None):
        super().__init__(PNET, weights)

    def __call__(self, x):
        conv1, prelu1, conv2, prelu2, conv3, prelu3, reg, cls = self._layers
        x = _prelu(_conv(x, conv1), prelu1)
        x = tf.nn.max_pool2d(x, 2, 2, "SAME")
        x = _prelu(_conv(x, conv2), prelu2)
        x = _prelu(_conv(x, conv3), prelu3)
        # Both 1x1 heads as one convolution: one pass over the largest activations.
        heads = _conv(x, (tf.concat([reg[0], cls[0]], axis=-1),
                               tf.concat([reg[1], cls[1]], axis=-1)))
        return _face_probability(heads[..., 4:]), heads[..., :4]


def _three_convs(x, layers):
    """The trunk RNet and ONet share: conv-PReLU, 3x3 pool, conv-PReLU, 3x3 pool, conv-PReLU."""
    conv1, prelu1, conv2, prelu2, conv3, prelu3 = layers
    x = tf.nn.max_pool2d(_prelu(_conv(x, conv1), prelu1), 3, 2, "SAME")
    x = tf.nn.max_pool2d(_prelu(_conv(x, conv2), prelu2), 3, 2, "VALID")
    return _prelu(_conv(x, conv3), prelu3)


class RNet(_Network):
    """Refinement network: patches [N, 24, 24, 3] -> probability [N], offsets [N, 4]."""

    def __init__(self, weights=None):
        super().__init__(RNET, weights)

    def __call__(self, x):
        return _if_any(x, self._run, ([], [4]))

    def _run(self, x):
        fc4, prelu4, reg, cls = self._layers[6:]
        x = _three_convs(x, self._layers[:6])
        x = _prelu(_dense(_flatten_caffe(x), fc4), prelu4)
        return _face_probability(_dense(x, cls)), _dense(x, reg)


class ONet(_Network):
    """Output network: patches [N, 48, 48, 3] -> probability [N], offsets [N, 4], landmarks
    [N, 10] (x of the 5 points, then their y, as fractions of the patch)."""

    def __init__(self, weights=None):
        super().__init__(ONET, weights)

    def __call__(self, x):
        return _if_any(x, self._run, ([], [4], [10]))

    def _run(self, x):
        conv4, prelu4, fc5, prelu5, reg, points, cls = self._layers[6:]
        x = _three_convs(x, self._layers[:6])
        x = tf.nn.max_pool2d(x, 2, 2, "SAME")
        x = _prelu(_conv(x, conv4), prelu4)
        x = _prelu(_dense(_flatten_caffe(x), fc5), prelu5)
        return (_face_probability(_dense(x, cls)), _dense(x, reg),
                _dense(x, points))
