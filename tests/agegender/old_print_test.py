"""The old-print composite: seeded, each stage doing what its name says, in range."""
import numpy as np
import pytest
import tensorflow as tf

from agegender import old_print


@pytest.fixture(scope="module")
def faces():
    rng = np.random.default_rng(0)
    smooth = tf.image.resize(rng.uniform(0, 255, (4, 8, 8, 3)).astype(np.float32), [64, 64])
    detail = rng.uniform(-30, 30, (4, 64, 64, 3)).astype(np.float32)
    return tf.clip_by_value(smooth + detail, 0.0, 255.0)


def _saturation(images):
    return float(tf.reduce_mean(tf.reduce_max(images, 3) - tf.reduce_min(images, 3)))


def _local_variance(images):
    """Mean squared difference between neighbouring pixels: fine texture and noise."""
    return float(tf.reduce_mean(tf.square(images[:, :, 1:] - images[:, :, :-1])))


def _n(value, images):
    return tf.fill([images.shape[0]], float(value))


def test_same_seed_same_prints_other_seed_other_prints(faces):
    a = old_print.old_print(faces, 0.5, [1, 2]).numpy()
    b = old_print.old_print(faces, 0.5, [1, 2]).numpy()
    c = old_print.old_print(faces, 0.5, [1, 3]).numpy()
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).mean() > 1.0


def test_shape_dtype_range_kept_at_every_severity(faces):
    for severity in [0.0, *old_print.SEVERITIES.values()]:
        out = old_print.old_print(faces, severity, [0, 0])
        assert out.shape == faces.shape and out.dtype == tf.float32
        assert 0.0 <= float(tf.reduce_min(out)) and float(tf.reduce_max(out)) <= 255.0


def test_severity_orders_the_damage(faces):
    diffs = [float(tf.reduce_mean(tf.abs(old_print.old_print(faces, s, [4, 4]) - faces)))
             for s in (0.0, 0.25, 0.5, 1.0)]
    # Severity 0: the photo, bar the rescan's quality-95 JPEG.
    jpeg_only = old_print.rescan_jpeg(faces, _n(95, faces))
    assert abs(diffs[0] - float(tf.reduce_mean(tf.abs(jpeg_only - faces)))) < 0.1
    assert diffs == sorted(diffs) and diffs[-1] > 20.0


def test_per_image_severity(faces):
    out = old_print.old_print(faces, tf.constant([0.0, 1.0, 0.0, 1.0]), [5, 5]).numpy()
    diff = np.abs(out - faces.numpy()).mean(axis=(1, 2, 3))
    assert max(diff[0], diff[2]) * 2 < min(diff[1], diff[3])


def test_parameters_within_their_stated_ranges():
    for severity in (0.3, 1.0):
        params = old_print.sample_params(tf.constant([7, 7], tf.int64), 2000, severity)
        for name, (none, (low, high)) in old_print.RANGES.items():
            values = params[name].numpy()
            bounds = sorted([none + severity * (low - none), none + severity * (high - none)])
            if name in ("halftone", "scratches"):  # zero on the prints without them
                values = values[values != 0]
            assert bounds[0] - 1e-4 <= values.min() and values.max() <= bounds[1] + 1e-4, name
            assert values.max() - values.min() > 0.5 * (bounds[1] - bounds[0]), name
    gray = params["grayscale"].numpy().mean()
    assert abs(gray - old_print.GRAYSCALE_SHARE) < 0.05


def test_soft_focus_removes_detail_per_image(faces):
    out = old_print.soft_focus(faces, tf.constant([0.0, 2.0, 0.0, 1.0]))
    np.testing.assert_allclose(out[0], faces[0], atol=1e-3)  # sigma 0: unchanged
    v = [_local_variance(out[i:i + 1]) for i in range(4)]
    assert v[1] < v[3] < 0.5 * _local_variance(faces[3:4])
    np.testing.assert_allclose(tf.reduce_mean(out[1]), tf.reduce_mean(faces[1]), rtol=0.02)


def test_film_grain_raises_local_variance(faces):
    flat = tf.fill([2, 64, 64, 3], 128.0)
    grainy = old_print.film_grain(flat, tf.constant([0.0, 10.0]), tf.constant([0.0, 0.5]),
                                  tf.constant([1, 1], tf.int64))
    assert _local_variance(grainy[:1]) < 1e-6
    assert _local_variance(grainy[1:]) > 50.0
    assert abs(float(tf.math.reduce_std(grainy[1])) - 10.0) < 3.0


def test_fade_lowers_saturation_and_grayscale_removes_it(faces):
    faded = old_print.fade(faces, _n(0.6, faces), _n(0, faces))
    assert _saturation(faded) < 0.5 * _saturation(faces)
    gray = old_print.fade(faces, _n(0.0, faces), _n(1, faces)).numpy()
    np.testing.assert_allclose(gray[..., 0], gray[..., 2], atol=1e-3)


def test_warm_cast_turns_gray_yellow():
    gray = tf.fill([1, 8, 8, 3], 150.0)
    warm = old_print.colour_cast(gray, tf.constant([0.3]), tf.constant([0.0])).numpy()[0, 0, 0]
    assert warm[0] > 150.0 > warm[2]  # red up, blue down
    magenta = old_print.colour_cast(gray, tf.constant([0.0]), tf.constant([0.2])).numpy()[0, 0, 0]
    assert magenta[1] < magenta[0] and magenta[1] < magenta[2]


def test_dynamic_range_lifts_blacks_and_dulls_whites(faces):
    ends = tf.constant([[[[0.0] * 3, [255.0] * 3]]])
    out = old_print.dynamic_range(ends, tf.constant([40.0]), tf.constant([210.0])).numpy()
    np.testing.assert_allclose(out[0, 0, 0], 40.0, atol=1e-3)
    np.testing.assert_allclose(out[0, 0, 1], 210.0, atol=1e-3)


def test_vignette_darkens_corners_not_centre():
    flat = tf.fill([1, 33, 33, 3], 200.0)
    out = old_print.vignette(flat, tf.constant([0.5])).numpy()[0, :, :, 0]
    assert abs(out[16, 16] - 200.0) < 1.0 and out[0, 0] < 110.0


def test_paper_and_halftone_add_texture():
    flat = tf.fill([1, 64, 64, 3], 128.0)
    paper = old_print.paper_texture(flat, tf.constant([0.08]), tf.constant([2, 2], tf.int64))
    screen = old_print.halftone(flat, tf.constant([10.0]), tf.constant([4.0 * np.sqrt(2)], tf.float32))
    assert float(tf.math.reduce_std(paper)) > 3.0
    assert _local_variance(screen) > 20.0
    # A 45-degree screen of period 4 sqrt(2): it repeats every 8 pixels across and down.
    s = screen.numpy()[0, :, :, 0]
    np.testing.assert_allclose(s[10:20, 10:20], s[10:20, 18:28], atol=1e-2)
    np.testing.assert_allclose(s[10:20, 10:20], s[18:28, 10:20], atol=1e-2)


def test_dust_and_scratches_mark_few_pixels():
    flat = tf.fill([2, 128, 128, 3], 128.0)
    out = old_print.dust_and_scratches(
        flat, tf.constant([0.002, 0.002]), tf.constant([1.0, -1.0]), tf.constant([0.0, 0.0]),
        tf.constant([3, 3], tf.int64)).numpy()
    light, dark = out[0, ..., 0], out[1, ..., 0]
    assert 0 < (light > 200).mean() < 0.01 and (light < 128).sum() == 0
    assert 0 < (dark < 60).mean() < 0.01 and (dark > 128).sum() == 0
    scratched = old_print.dust_and_scratches(
        tf.fill([16, 64, 64, 3], 60.0), tf.zeros([16]), tf.ones([16]), tf.ones([16]),
        tf.constant([4, 4], tf.int64)).numpy()
    lit = (scratched[..., 0] > 100).mean(axis=(1, 2))
    assert (lit > 0).any() and lit.max() < 0.15  # thin lines on some prints


def test_rescan_jpeg_per_image_quality(faces):
    out = old_print.rescan_jpeg(faces, tf.constant([95.0, 10.0, 95.0, 10.0]))
    err = tf.reduce_mean(tf.abs(out - faces), axis=[1, 2, 3]).numpy()
    assert err[1] > 1.4 * err[0] and err[3] > 1.4 * err[2]


def test_severity_names_and_bad_values():
    assert old_print.severity_value("mid") == old_print.SEVERITIES["mid"]
    assert old_print.severity_value(0.7) == 0.7
    for bad in ("medium", 1.5, -0.1):
        with pytest.raises(ValueError, match="severity"):
            old_print.severity_value(bad)
