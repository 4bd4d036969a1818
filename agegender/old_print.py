"""An old print, scanned: the composite of what decades and a scanner do to a photo.

A family photo from past decades carries many kinds of damage at once, and a model reads
them as the person's age (issue 27): the camera's soft focus and vignetting, film grain,
the print's faded dyes (less saturation, a warm or magenta cast), its reduced dynamic range
(lifted blacks, dull whites), paper texture or a halftone screen (yearbooks, newspapers),
dust and scratches, and the JPEG of the rescan. `old_print` applies all of them stacked,
in that physical order, each with a strength drawn per image from `RANGES`, scaled by a
severity in 0..1 (`SEVERITIES` names three).

Batched, stateless TensorFlow ops on float32 pixels [N, H, W, 3] in 0..255: the same seed
gives the same pictures (on the same machine), and the trainer (`trainer.input_pipeline`,
`--old_print_probability`) and the benchmark (`benchmarks/old_print.py`) share this one
definition. The single-kind degradations users' modern photos carry are in
`agegender.degradations`; the grayscale conversion is theirs.
"""
import math

import tensorflow as tf

from agegender import degradations

# name: (value at severity 0, (low, high) drawn uniformly at severity 1). At severity s a
# value is none + s * (draw - none), so severity 0 is the photo itself (bar the JPEG) and
# the middle severity (0.5) is about the quick composite: saturation halved, a
# yellow cast, contrast cut by a third with lifted blacks, grain, a ~1.2 px blur, JPEG ~55.
RANGES = {
    "blur_sigma": (0.0, (1.0, 2.4)),        # soft focus, Gaussian sigma in pixels (128 px face)
    "vignette": (0.0, (0.25, 0.6)),         # darkening at the corners, fraction
    "grain_sigma": (0.0, (5.0, 13.0)),      # film grain, std in pixel levels
    "grain_coarseness": (0.0, (0.0, 1.0)),  # 0: pixel-fine grain, 1: 2 px clumps
    "desaturation": (0.0, (0.7, 1.0)),      # faded dyes: share of colour lost toward gray
    "warm_cast": (0.0, (0.15, 0.45)),       # yellowed print: blue cut, red lifted
    "magenta_cast": (0.0, (-0.12, 0.18)),   # faded cyan dye (> 0) or faded magenta (< 0)
    "black_level": (0.0, (30.0, 65.0)),     # lifted blacks, pixel levels
    "white_level": (255.0, (195.0, 235.0)),  # dull whites, pixel levels
    "paper_texture": (0.0, (0.04, 0.10)),   # mottled paper, multiplicative amplitude
    "halftone": (0.0, (6.0, 16.0)),         # printed screen, amplitude in pixel levels
    "halftone_period": (4.0, (3.0, 5.0)),   # pixels per screen dot
    "dust": (0.0, (0.0003, 0.0015)),         # share of pixels under a speck
    "scratches": (0.0, (0.3, 0.7)),         # scratch opacity
    "jpeg_quality": (95.0, (18.0, 40.0)),   # the rescan's JPEG quality
}
# Shares of prints that have a feature at all (drawn per image, at any severity > 0).
GRAYSCALE_SHARE = 0.2   # black-and-white prints (19% of the scanned family photos)
HALFTONE_SHARE = 0.25   # printed matter (yearbooks, newspapers) rather than photo paper
SCRATCH_SHARE = 0.3     # prints with scratches, up to MAX_SCRATCHES each
MAX_SCRATCHES = 3
SEVERITIES = {"low": 0.25, "mid": 0.5, "high": 1.0}
# The Gaussian kernel's half-width: 3 sigma of the widest soft focus.
_BLUR_RADIUS = int(math.ceil(3 * RANGES["blur_sigma"][1][1]))


def severity_value(severity):
    """'low' | 'mid' | 'high' or a number in 0..1 -> the number; anything else is refused."""
    if isinstance(severity, str):
        if severity not in SEVERITIES:
            raise ValueError(f"severity {severity!r}: one of {', '.join(SEVERITIES)} or 0..1")
        return SEVERITIES[severity]
    value = float(severity)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"severity {severity!r}: outside 0..1")
    return value


def sample_params(seed, n, severity):
    """Per-image parameters {name: [n]} for `apply`, drawn from `RANGES` with the stateless
    seed (int [2]); `severity`: a number in 0..1 or one per image ([n])."""
    severity = tf.broadcast_to(tf.cast(severity, tf.float32), [n])
    seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, len(RANGES) + 4)))

    def uniform(low=0.0, high=1.0):
        return tf.random.stateless_uniform([n], next(seeds), low, high)

    params = {}
    for name, (none, (low, high)) in RANGES.items():
        params[name] = none + severity * (uniform(low, high) - none)
    on = tf.cast(severity > 0, tf.float32)
    params["grayscale"] = tf.cast(uniform() < GRAYSCALE_SHARE, tf.float32) * on
    params["halftone"] *= tf.cast(uniform() < HALFTONE_SHARE, tf.float32)
    params["scratches"] *= tf.cast(uniform() < SCRATCH_SHARE, tf.float32)
    params["dust_sign"] = tf.where(uniform() < 0.5, -1.0, 1.0)  # dark or light specks
    params["severity"] = severity
    return params


def _col(value):
    return tf.reshape(value, [-1, 1, 1, 1])


def _grid(images):
    """Pixel coordinates y, x in -1..1, shaped [1, H, W, 1]."""
    shape = tf.shape(images)
    ys = tf.linspace(-1.0, 1.0, shape[1])[None, :, None, None]
    xs = tf.linspace(-1.0, 1.0, shape[2])[None, None, :, None]
    return ys, xs


def soft_focus(images, sigma):
    """A Gaussian blur of `sigma` pixels per image ([N]): one separable depthwise
    convolution for the whole batch, each image's channels with their own kernel."""
    shape = tf.shape(images)
    n, h, w = shape[0], shape[1], shape[2]
    taps = tf.range(-_BLUR_RADIUS, _BLUR_RADIUS + 1, dtype=tf.float32)
    sigma = tf.maximum(sigma, 1e-3)[:, None]  # ~0: a delta kernel, the image unchanged
    kernel = tf.exp(-0.5 * tf.square(taps[None, :] / sigma))
    kernel /= tf.reduce_sum(kernel, axis=1, keepdims=True)          # [N, K]
    kernel = tf.reshape(tf.repeat(kernel, 3, axis=0), [n * 3, -1])  # [N*3, K]
    kernel = tf.transpose(kernel)                                   # [K, N*3]
    # [N, H, W, 3] -> [1, H, W, N*3]: a depthwise kernel per (image, channel).
    stacked = tf.reshape(tf.transpose(images, [1, 2, 0, 3]), [1, h, w, n * 3])
    pad = [[0, 0], [_BLUR_RADIUS] * 2, [_BLUR_RADIUS] * 2, [0, 0]]
    stacked = tf.pad(stacked, pad, mode="REFLECT")
    stacked = tf.nn.depthwise_conv2d(stacked, kernel[None, :, :, None], [1, 1, 1, 1], "VALID")
    stacked = tf.nn.depthwise_conv2d(stacked, kernel[:, None, :, None], [1, 1, 1, 1], "VALID")
    return tf.transpose(tf.reshape(stacked, [h, w, n, 3]), [2, 0, 1, 3])


def vignette(images, strength):
    """Corners darkened by `strength` ([N]), the centre untouched (a simple camera lens)."""
    ys, xs = _grid(images)
    radius2 = (tf.square(ys) + tf.square(xs)) / 2.0  # 0 centre, 1 corners
    return images * (1.0 - _col(strength) * radius2)


def film_grain(images, sigma, coarseness, seed):
    """Grain of `sigma` levels ([N]): mostly in the luminance, a little in colour, a mix of
    pixel-fine and 2-pixel noise by `coarseness` ([N])."""
    shape = tf.shape(images)
    s1, s2, s3 = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    fine = tf.random.stateless_normal(shape[:3], s1)[..., None]
    coarse = tf.random.stateless_normal([shape[0], shape[1] // 2, shape[2] // 2, 1], s2)
    coarse = tf.image.resize(coarse, shape[1:3], method="bilinear") * 1.6  # keep ~unit std
    c = _col(coarseness)
    luma = (1.0 - c) * fine + c * coarse
    chroma = tf.random.stateless_normal(shape, s3) * 0.3
    return images + _col(sigma) * (luma + chroma)


def fade(images, desaturation, grayscale):
    """Dyes faded: colour pulled toward gray by `desaturation`; `grayscale` ([N], 0 or 1)
    marks black-and-white prints."""
    gray = degradations.grayscale(images)
    amount = tf.maximum(_col(desaturation), _col(grayscale))
    return images + amount * (gray - images)


def colour_cast(images, warm, magenta):
    """A yellowed print (`warm` ([N]): red up, blue down) with a magenta (`magenta` > 0:
    red and blue up, green down, the faded cyan dye of 1970s prints) or green (< 0) tint."""
    gains = tf.stack([1.0 + 0.25 * warm + 0.3 * magenta,
                      1.0 - 0.05 * warm - 0.5 * magenta,
                      1.0 - 0.6 * warm + 0.2 * magenta], axis=1)
    return images * gains[:, None, None, :]


def dynamic_range(images, black, white):
    """Blacks lifted to `black`, whites dulled to `white` levels ([N]): a faded print's
    narrow range, and a scanner's that never reaches either end."""
    return _col(black) + images * (_col(white) - _col(black)) / 255.0


def paper_texture(images, amount, seed):
    """Mottled paper: smooth multiplicative noise of about `amount` ([N]), plus fibres."""
    shape = tf.shape(images)
    s1, s2 = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    blotches = tf.random.stateless_normal([shape[0], 6, 6, 1], s1)
    blotches = tf.image.resize(blotches, shape[1:3], method="bicubic")
    fibres = tf.random.stateless_normal([shape[0], shape[1], shape[2], 1], s2) * 0.3
    return images * (1.0 + _col(amount) * (blotches + fibres))


def halftone(images, amplitude, period):
    """A printed screen: a 45-degree dot pattern of `period` pixels ([N]) and `amplitude`
    levels ([N]), stronger in the mid-tones where screens show most."""
    shape = tf.shape(images)
    ys = tf.cast(tf.range(shape[1]), tf.float32)[None, :, None, None]
    xs = tf.cast(tf.range(shape[2]), tf.float32)[None, None, :, None]
    freq = 2.0 * math.pi / _col(period) / math.sqrt(2.0)
    dots = tf.cos((xs + ys) * freq) * tf.cos((xs - ys) * freq)
    midtones = 1.0 - tf.square(tf.reduce_mean(images, axis=3, keepdims=True) / 127.5 - 1.0)
    return images + _col(amplitude) * dots * midtones


def dust_and_scratches(images, dust, sign, scratches, seed):
    """Specks covering a `dust` share of pixels ([N]), dark or light by `sign` ([N]), and
    up to `MAX_SCRATCHES` thin light lines at `scratches` opacity ([N], 0 = none)."""
    shape = tf.shape(images)
    n = shape[0]
    s1, s2, s3 = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    specks = tf.cast(tf.random.stateless_uniform(shape[:3], s1)[..., None] < _col(dust),
                     tf.float32)
    # Some specks are two pixels across: a 2x2 max over a shifted copy.
    specks = tf.maximum(specks, tf.nn.max_pool2d(specks, 2, 1, "SAME") *
                        tf.cast(tf.random.stateless_uniform(shape[:3], s2)[..., None] < 0.3,
                                tf.float32))
    target = tf.where(_col(sign) > 0, 235.0, 25.0)
    images = images + specks * (target - images)
    ys, xs = _grid(images)
    lines = tf.random.stateless_uniform([n, MAX_SCRATCHES, 4], s3)
    angle = lines[..., 0] * math.pi
    offset = lines[..., 1] * 1.6 - 0.8
    present = tf.cast(lines[..., 2] < 0.4, tf.float32)  # 0..3 lines, ~1 on average
    width = 0.006 + 0.01 * lines[..., 3]  # in -1..1 units: ~0.4-1 px at 128 px
    mask = tf.zeros_like(images[..., :1])
    for i in range(MAX_SCRATCHES):
        dist = tf.abs(xs * _col(tf.cos(angle[:, i])) + ys * _col(tf.sin(angle[:, i]))
                      - _col(offset[:, i]))
        mask = tf.maximum(mask, _col(present[:, i]) * tf.exp(-tf.square(dist / _col(width[:, i]))))
    return images + _col(scratches) * mask * (245.0 - images)


def rescan_jpeg(images, quality):
    """Re-encoded at `quality` ([N], per image). One image at a time (TensorFlow's JPEG ops
    take one image)."""
    quality = tf.cast(tf.round(quality), tf.int32)

    def one(args):
        image, q = args
        return tf.image.adjust_jpeg_quality(image / 255.0, q) * 255.0
    return tf.map_fn(one, (images, quality), fn_output_signature=tf.TensorSpec(
        images.shape[1:], tf.float32))


def _clip(images):
    return tf.clip_by_value(images, 0.0, 255.0)


def apply(images, params, seed):
    """`images` (float32 [N, H, W, 3], 0..255) as old scanned prints with `params` (from
    `sample_params`); `seed` (int [2]) draws the noise fields. In the physical order:
    camera, film, print, paper, scanner."""
    s1, s2, s3 = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    p = params
    out = soft_focus(images, p["blur_sigma"])
    out = vignette(out, p["vignette"])
    out = film_grain(out, p["grain_sigma"], p["grain_coarseness"], s1)
    out = fade(_clip(out), p["desaturation"], p["grayscale"])
    out = colour_cast(out, p["warm_cast"], p["magenta_cast"])
    out = dynamic_range(_clip(out), p["black_level"], p["white_level"])
    out = paper_texture(out, p["paper_texture"], s2)
    out = halftone(out, p["halftone"], p["halftone_period"])
    out = dust_and_scratches(_clip(out), p["dust"], p["dust_sign"], p["scratches"], s3)
    return rescan_jpeg(_clip(out), p["jpeg_quality"])


def old_print(images, severity, seed):
    """`images` as old scanned prints: parameters drawn from `RANGES` at `severity` (a
    number in 0..1, or one per image [N]) with the stateless `seed` (int [2])."""
    seed = tf.convert_to_tensor(seed)
    param_seed, noise_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    params = sample_params(param_seed, tf.shape(images)[0], severity)
    return apply(images, params, noise_seed)
