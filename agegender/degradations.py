"""What the photos users bring do to a face: grayscale, sepia and faded colour, JPEG
artefacts, low resolution and blur, uneven light.

Batched TensorFlow ops on float32 pixels [N, H, W, 3] in 0..255, one definition for the
trainer's augmentation (`trainer.input_pipeline`) and the robustness benchmark
(`benchmarks/robustness.py`), so the model is trained on the same kinds of damage it is
measured on. `BENCHMARK` is the benchmark's fixed set, one named setting each.
"""
import math

import tensorflow as tf

# ITU-R BT.601 luma, as tf.image.rgb_to_grayscale.
_LUMA = (0.2989, 0.5870, 0.1140)
# The classic sepia tone matrix (rows: output R, G, B).
_SEPIA = ((0.393, 0.769, 0.189), (0.349, 0.686, 0.168), (0.272, 0.534, 0.131))


def _clip(images):
    return tf.clip_by_value(images, 0.0, 255.0)


def grayscale(images):
    """Black-and-white photos (scans of old prints, some phone filters)."""
    luma = tf.tensordot(images, tf.constant(_LUMA), axes=[[3], [0]])[..., None]
    return tf.tile(luma, [1, 1, 1, 3])


def sepia(images):
    return _clip(tf.tensordot(images, tf.transpose(tf.constant(_SEPIA)), axes=[[3], [0]]))


def faded(images, amount=0.5):
    """An aged colour print: lower contrast, lifted blacks, a warm cast; amount in 0..1
    (or one amount per image, [N])."""
    amount = _per_image(amount, images)
    mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
    out = mean + (images - mean) * (1.0 - 0.5 * amount) + 40.0 * amount
    cast = tf.pow(tf.constant([1.0, 0.95, 0.8]), amount)
    return _clip(out * cast)


def jpeg(images, quality):
    """Re-encoded at a low JPEG quality (blocking, ringing, colour bleeding). One image at a
    time (TensorFlow's JPEG ops take one image), so keep it to a few images per batch."""
    def one(image):
        return tf.image.adjust_jpeg_quality(image / 255.0, quality) * 255.0
    return tf.map_fn(one, images, fn_output_signature=tf.TensorSpec(
        images.shape[1:], tf.float32))


def low_resolution(images, side):
    """A face `side` pixels wide, upscaled back: what a small face in a group photo is."""
    size = tf.shape(images)[1:3]
    small = tf.image.resize(images, [side, side], antialias=True)
    return _clip(tf.image.resize(small, size, method="bilinear"))


def _per_image(value, images):
    """A scalar or one value per image, shaped to broadcast over [N, H, W, C]."""
    value = tf.cast(value, tf.float32)
    return tf.reshape(value, [-1, 1, 1, 1]) if value.shape.rank else value


def uneven_light(images, strength=0.5, angle=0.0):
    """Light from one side: pixels scaled by a ramp from 1 - strength to 1 + strength across
    the picture, along `angle` (radians; 0: left dark, right bright). Both may be one value
    per image ([N])."""
    shape = tf.shape(images)
    ys = tf.linspace(-1.0, 1.0, shape[1])[None, :, None, None]
    xs = tf.linspace(-1.0, 1.0, shape[2])[None, None, :, None]
    angle = _per_image(angle, images)
    ramp = (xs * tf.cos(angle) + ys * tf.sin(angle)) / math.sqrt(2.0)
    return _clip(images * (1.0 + _per_image(strength, images) * ramp))


# The benchmark's degradations, each one fixed setting (deterministic).
BENCHMARK = {
    "grayscale": grayscale,
    "sepia": sepia,
    "faded": lambda x: faded(x, 0.7),
    "jpeg_q15": lambda x: jpeg(x, 15),
    "low_res_48px": lambda x: low_resolution(x, 48),
    "low_res_32px": lambda x: low_resolution(x, 32),
    "uneven_light": lambda x: uneven_light(x, 0.6, 0.0),
}
