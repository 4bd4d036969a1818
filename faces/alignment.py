"""Face alignment: five landmarks -> a square crop framed like the training faces, in TF ops.

Owns the geometry from a detector's landmarks to a crop. `align(image, landmarks,
output_size)` fits, per face, the similarity transform (rotation, uniform scale,
translation; no reflection) that maps the template's five points onto the face's five
landmarks in the least-squares sense (the closed form of Umeyama's method, written with
complex numbers: a 2-D similarity is z -> a z + t), and samples the crop through it with
`ImageProjectiveTransformV3` (bilinear; outside the photo = `fill_value`, black by default,
as UTKFace's own crops are filled).

The template (`faces.template`) holds the five points in the crop's normalised
coordinates, learnt from the training crops; so an aligned photo face is framed, scaled and
rotated like a UTKFace crop, at any `output_size` (the records' 160 or the model's 128: the
same framing, since both are resizes of one crop).

Antialiasing: when the face is larger in the photo than in the crop (a 1000-pixel face into
a 160-pixel crop), bilinear sampling alone would skip pixels and alias. So each face's
footprint in the photo is cut out and area-downscaled (`ResizeArea`, which reads uint8
directly: no float copy of the photo) to about the crop's resolution first; the transform is
composed with that step, so the geometry is unchanged.

Coordinates: landmarks in pixel-index coordinates of `image` (`faces.boxes`); the template
in [0, 1] crop coordinates where a pixel's centre is at (index + 0.5) / size.
"""
import tensorflow as tf

from faces import template as template_lib


def similarity(source, target):
    """Least-squares similarity from `source` to `target` points, [..., K, 2] each.

    Returns [..., 4] = (a, b, tx, ty): x' = a x - b y + tx, y' = b x + a y + ty.
    Degenerate `source` (all points equal) gives a = b = 0 (everything maps to one point).
    """
    source = tf.convert_to_tensor(source, tf.float32)
    target = tf.convert_to_tensor(target, tf.float32)
    source, target = tf.broadcast_to(source, tf.shape(target)), target
    s_mean = tf.reduce_mean(source, axis=-2, keepdims=True)
    t_mean = tf.reduce_mean(target, axis=-2, keepdims=True)
    p, q = source - s_mean, target - t_mean
    norm = tf.reduce_sum(tf.square(p), axis=[-2, -1])
    # a + ib = sum(conj(p) q) / sum(|p|^2)
    a = tf.math.divide_no_nan(tf.reduce_sum(p[..., 0] * q[..., 0] + p[..., 1] * q[..., 1], -1),
                              norm)
    b = tf.math.divide_no_nan(tf.reduce_sum(p[..., 0] * q[..., 1] - p[..., 1] * q[..., 0], -1),
                              norm)
    sx, sy = s_mean[..., 0, 0], s_mean[..., 0, 1]
    tx = t_mean[..., 0, 0] - (a * sx - b * sy)
    ty = t_mean[..., 0, 1] - (b * sx + a * sy)
    return tf.stack([a, b, tx, ty], axis=-1)


def apply_similarity(params, points):
    """Maps points [..., K, 2] through `similarity` parameters [..., 4]."""
    a, b, tx, ty = (params[..., i, None] for i in range(4))
    x, y = points[..., 0], points[..., 1]
    return tf.stack([a * x - b * y + tx, b * x + a * y + ty], axis=-1)


def output_points(template, output_size):
    """Template [5, 2] (normalised) -> pixel-index coordinates in an output_size crop."""
    return tf.convert_to_tensor(template, tf.float32) * float(output_size) - 0.5


@tf.autograph.experimental.do_not_convert
def align(image, landmarks, output_size, template=None, *, antialias=True, fill_value=0.0):
    """Aligned crops float32 [N, output_size, output_size, 3] (pixel values as in `image`).

    `image`: [H, W, 3] uint8 or float; `landmarks`: [N, 5, 2] (x, y) in `image` pixels, in
    the detector's order (`faces.detector.LANDMARK_NAMES`); `template`: [5, 2] normalised
    points (default: `faces.template.load()`'s). N may be 0.
    """
    template = template_lib.load().points if template is None else template
    image = tf.convert_to_tensor(image)
    image = tf.ensure_shape(image, [None, None, 3])
    landmarks = tf.ensure_shape(tf.convert_to_tensor(landmarks, tf.float32), [None, 5, 2])
    size = int(output_size)
    # Output pixel -> photo pixel, one transform per face.
    params = similarity(output_points(template, size), landmarks)
    if not antialias:
        images = tf.cast(image, tf.float32)[None]
        a, b, tx, ty = tf.unstack(params, axis=-1)
        transforms = tf.stack([a, -b, tx, b, a, ty, tf.zeros_like(a), tf.zeros_like(a)], -1)
        return tf.map_fn(lambda t: _warp(images, t, size, fill_value), transforms,
                         fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))
    return tf.map_fn(lambda p: _align_one(image, p, size, fill_value), params,
                     fn_output_signature=tf.TensorSpec([size, size, 3], tf.float32))


def _warp(images, transform, size, fill_value):
    return tf.raw_ops.ImageProjectiveTransformV3(
        images=images, transforms=transform[None], output_shape=tf.constant([size, size]),
        fill_value=tf.cast(fill_value, tf.float32), interpolation="BILINEAR",
        fill_mode="CONSTANT")[0]


def _align_one(image, params, size, fill_value):
    """One face: cut its footprint, area-downscale it to about crop resolution, warp."""
    a, b, tx, ty = tf.unstack(params)
    shape = tf.shape(image)
    height, width = tf.cast(shape[0], tf.float32), tf.cast(shape[1], tf.float32)
    scale = tf.sqrt(a * a + b * b)  # photo pixels per crop pixel
    # The crop's corners in the photo, plus a margin for the bilinear neighbours.
    corners = apply_similarity(params, tf.constant(
        [[-0.5, -0.5], [size - 0.5, -0.5], [-0.5, size - 0.5], [size - 0.5, size - 0.5]]))
    margin = 2.0 * tf.maximum(scale, 1.0)
    low = tf.floor(tf.reduce_min(corners, axis=0) - margin)
    high = tf.math.ceil(tf.reduce_max(corners, axis=0) + margin)
    limit = tf.stack([width, height])
    low = tf.clip_by_value(low, 0.0, limit - 1.0)  # at least one pixel, inside the photo
    high = tf.clip_by_value(high, low + 1.0, limit)
    x0, y0 = tf.cast(low[0], tf.int32), tf.cast(low[1], tf.int32)
    x1, y1 = tf.cast(high[0], tf.int32), tf.cast(high[1], tf.int32)
    region = image[y0:y1, x0:x1]
    factor = tf.maximum(scale, 1.0)
    rw = tf.maximum(1, tf.cast(tf.math.ceil(tf.cast(x1 - x0, tf.float32) / factor), tf.int32))
    rh = tf.maximum(1, tf.cast(tf.math.ceil(tf.cast(y1 - y0, tf.float32) / factor), tf.int32))
    small = tf.raw_ops.ResizeArea(images=region[None], size=tf.stack([rh, rw]))
    # Photo pixel-index coordinates -> coordinates in `small`.
    rx = tf.cast(x1 - x0, tf.float32) / tf.cast(rw, tf.float32)
    ry = tf.cast(y1 - y0, tf.float32) / tf.cast(rh, tf.float32)
    ox = (tx + 0.5 - tf.cast(x0, tf.float32)) / rx - 0.5
    oy = (ty + 0.5 - tf.cast(y0, tf.float32)) / ry - 0.5
    transform = tf.stack([a / rx, -b / rx, ox, b / ry, a / ry, oy, 0.0, 0.0])
    return _warp(small, transform, size, fill_value)
