"""Encoded image bytes -> model input pixels: the one function training and serving share.

`model_input(image_bytes, img_dim)` is what the trainer's evaluation parser, the export's
`image_bytes` signature and the evaluation tool all call, so a face gets the same pixels
whether it comes from a record or over the wire. The model itself owns the
backbone-specific normalisation (it takes float32 pixels in 0..255), which is why the
`predict_images` signature can take raw pixels too.

Geometry: the shorter side is resized to the target and the centre is cropped to a square
(`resize_square`); the Beam job uses the same op to write its records, so a raw image and
its record reach the model framed the same way.
"""
import tensorflow as tf

from agegender import image_header, image_header_tf


def decode_rgb(image_bytes, max_pixels=image_header.DEFAULT_MAX_PIXELS):
    """JPEG/PNG/GIF/BMP/WebP bytes -> uint8 [H, W, 3]. Grayscale is expanded, alpha dropped.

    Raises `tf.errors.InvalidArgumentError` on bytes that are not a decodable image, and on
    an image whose header declares more than `max_pixels` pixels, before decoding it
    (`image_header`; 0 or None: no limit).
    """
    check = image_header_tf.assert_within_limit_tf(image_bytes, max_pixels)
    with tf.control_dependencies([check]):
        image = tf.io.decode_image(image_bytes, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image


def resize_square(image, size):
    """Aspect-preserving resize (shorter side = size), then a centred square crop.

    Returns float32 [size, size, 3] in the input's value range. Antialiased, so large
    inputs are downscaled without aliasing.
    """
    image = tf.convert_to_tensor(image)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.cast(size, tf.float32) / tf.minimum(height, width)
    new_h = tf.maximum(tf.cast(tf.round(height * scale), tf.int32), size)
    new_w = tf.maximum(tf.cast(tf.round(width * scale), tf.int32), size)
    image = tf.image.resize(image, [new_h, new_w], method="bilinear", antialias=True)
    offset_h = (new_h - size) // 2
    offset_w = (new_w - size) // 2
    image = tf.image.crop_to_bounding_box(image, offset_h, offset_w, size, size)
    return tf.ensure_shape(image, [size, size, 3])


def to_uint8(image):
    """float pixels in 0..255 -> uint8, rounded and clipped."""
    return tf.cast(tf.clip_by_value(tf.round(image), 0.0, 255.0), tf.uint8)


def model_input(image_bytes, img_dim, max_pixels=image_header.DEFAULT_MAX_PIXELS):
    """Encoded image bytes (scalar string) -> float32 [img_dim, img_dim, 3] in 0..255."""
    return resize_square(decode_rgb(image_bytes, max_pixels), img_dim)


def model_input_batch(image_bytes, img_dim, max_pixels=image_header.DEFAULT_MAX_PIXELS):
    """A batch of encoded images (string [N]) -> float32 [N, img_dim, img_dim, 3]."""
    return tf.map_fn(
        lambda b: model_input(b, img_dim, max_pixels), image_bytes,
        fn_output_signature=tf.TensorSpec([img_dim, img_dim, 3], tf.float32))
