"""The TF detector: agreement with the mtcnn package, the output contract, hostile photos."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from faces import boxes as box_ops
from faces import detector as detector_lib
from testing import reference_detector as reference_lib

D = detector_lib


def _truth_found(photo, found, iou=0.5):
    return box_ops.match(photo.boxes, found.boxes, iou)


def test_agrees_with_the_mtcnn_package(detector, reference, photos, utk_dir):
    """Same faces, boxes IoU >= 0.9, landmarks within 3 pixels: on synthetic photos with
    several faces and on UTKFace crops themselves."""
    crops = sorted(os.listdir(utk_dir))[::6000]
    images = [p.image for p in photos(2, seed=21, faces_per_photo=(3, 4))]
    images += [np.asarray(Image.open(os.path.join(utk_dir, c)).convert("RGB")) for c in crops]
    ious = []
    for image in images:
        a = reference_lib.compare(detector.find(image), reference.find(image))
        assert a.ours_only == 0 and a.theirs_only == 0, a
        assert np.all(a.ious >= 0.9), a
        assert np.all(a.landmark_error <= 3.0), a
        ious += a.ious.tolist()
    assert len(ious) >= 9  # the photos hold 6-8 faces and the crops one each
    # Same arithmetic, not just the same faces: a window off by one pixel in PNet's box
    # decoding gave a median IoU of 0.95.
    assert np.median(ious) > 0.99


def test_output_contract(detector, photos):
    photo = photos(1, seed=22, faces_per_photo=(3, 3))[0]
    out = detector.detect(photo.image)
    c = detector.config
    assert out[D.NUM_FACES].dtype == tf.int32 and out[D.NUM_FACES].shape == ()
    assert out[D.BOXES].shape == (c.max_faces, 4) and out[D.BOXES].dtype == tf.float32
    assert out[D.LANDMARKS].shape == (c.max_faces, 5, 2)
    assert out[D.SCORES].shape == (c.max_faces,)
    n = int(out[D.NUM_FACES])
    assert n == 3
    boxes, landmarks, scores = (out[k].numpy() for k in (D.BOXES, D.LANDMARKS, D.SCORES))
    assert not boxes[n:].any() and not landmarks[n:].any() and not scores[n:].any()
    assert np.all(np.diff(scores[:n]) <= 0) and np.all(scores[:n] > c.onet_threshold)
    height, width = photo.image.shape[:2]
    assert np.all(boxes[:n, [0, 2]] >= 0) and np.all(boxes[:n, [0, 2]] <= width - 1)
    assert np.all(boxes[:n, [1, 3]] >= 0) and np.all(boxes[:n, [1, 3]] <= height - 1)
    # Landmarks of an upright face: eyes above the nose above the mouth, left of right.
    for lm in landmarks[:n]:
        assert lm[0, 0] < lm[1, 0] and lm[3, 0] < lm[4, 0]
        assert max(lm[0, 1], lm[1, 1]) < lm[2, 1] < min(lm[3, 1], lm[4, 1])


def test_a_photo_without_a_face_finds_none(detector, tools):
    for image in (tools.noise_photo(1), np.full((240, 320, 3), 128, np.uint8)):
        out = detector.detect(image)
        assert int(out[D.NUM_FACES]) == 0
        assert not out[D.BOXES].numpy().any() and not out[D.SCORES].numpy().any()


@pytest.mark.parametrize("shape", [(0, 0), (1, 1), (5, 7), (11, 300), (300, 11), (12, 12)])
def test_images_too_small_for_any_face_give_none(detector, shape):
    out = detector.detect(np.zeros((*shape, 3), np.uint8))
    assert int(out[D.NUM_FACES]) == 0


def test_several_faces_are_all_found(detector, photos):
    for photo in photos(3, seed=23, faces_per_photo=(4, 4)):
        m = _truth_found(photo, detector.find(photo.image))
        assert np.all(m.pair >= 0), (photo.sources, m)
        assert not m.false_positive.any()


def test_a_40_pixel_face_is_found(detector, photos):
    for photo in photos(3, seed=24, faces_per_photo=(1, 1), face_sizes=(40, 40)):
        assert photo.boxes[0, 2] - photo.boxes[0, 0] == 40
        m = _truth_found(photo, detector.find(photo.image))
        assert m.pair[0] >= 0, photo.sources


def test_grayscale_photos_as_bytes_and_as_arrays(detector, photos, tools):
    photo = photos(1, seed=25, faces_per_photo=(2, 2))[0]
    grey = np.asarray(Image.fromarray(photo.image).convert("L"))
    expected = detector.find(np.repeat(grey[..., None], 3, -1))
    assert len(expected.boxes) == 2
    for found in (detector.find(grey), detector.find(grey[..., None]),
                  detector.find(tools.encode(grey, "PNG"))):
        np.testing.assert_allclose(found.boxes, expected.boxes, atol=1e-3)
    jpeg = detector.find(tools.encode(grey, "JPEG", quality=95))
    assert np.all(box_ops.match(expected.boxes, jpeg.boxes, 0.8).pair >= 0)


def test_png_bytes_give_the_same_faces_as_the_pixels(detector, photos, tools):
    photo = photos(1, seed=26, faces_per_photo=(2, 3))[0]
    from_pixels = detector.detect(photo.image)
    from_png = detector.detect_bytes(tools.encode(photo.image, "PNG"))
    for key in D.OUTPUTS:
        np.testing.assert_allclose(from_png[key], from_pixels[key], atol=1e-4)
    rgba = np.concatenate([photo.image, np.full(photo.image.shape[:2] + (1,), 255, np.uint8)],
                          -1)
    np.testing.assert_allclose(detector.find(rgba).boxes,
                               from_pixels[D.BOXES][:int(from_pixels[D.NUM_FACES])], atol=1e-4)


def test_a_large_photo_is_detected_downscaled_and_mapped_back(photos):
    """With max_side 640, a 1280x960 photo is detected at 640x480: the boxes are those of
    the small photo, scaled back up to the large one's pixels."""
    photo = photos(1, seed=27, faces_per_photo=(2, 3))[0]
    small = D.FaceDetector(D.DetectorConfig(max_side=640))
    large = np.asarray(Image.fromarray(photo.image).resize((1280, 960), Image.BICUBIC))
    at_small = small.find(photo.image)
    at_large = small.find(large)
    assert len(at_large.boxes) == len(at_small.boxes) == len(photo.boxes)
    m = box_ops.match(at_small.boxes * 2 + 0.5, at_large.boxes, 0.9)
    assert np.all(m.pair >= 0)
    lm = at_large.landmarks[m.pair]
    assert np.abs(lm - (at_small.landmarks * 2 + 0.5)).max() < 4
    # And the truth (in the large photo's pixels) is found.
    assert np.all(box_ops.match(photo.boxes * 2, at_large.boxes).pair >= 0)


def test_bytes_over_the_pixel_limit_or_not_an_image_are_refused(detector, png_bomb):
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        detector.detect_bytes(tf.constant(png_bomb))
    with pytest.raises(tf.errors.InvalidArgumentError):
        detector.detect_bytes(tf.constant(b"not an image at all"))
    limited = D.FaceDetector(max_pixels=100)
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 100 pixels"):
        limited.detect_bytes(tf.constant(tf.io.encode_png(tf.zeros([20, 20, 3], tf.uint8))))


def test_max_faces_keeps_the_best_rows(detector, photos):
    photo = photos(1, seed=28, faces_per_photo=(4, 4))[0]
    everything = detector.find(photo.image)
    assert len(everything.boxes) == 4
    two = D.FaceDetector(D.DetectorConfig(max_faces=2)).detect(photo.image)
    assert two[D.BOXES].shape == (2, 4) and int(two[D.NUM_FACES]) == 2
    np.testing.assert_allclose(two[D.BOXES], everything.boxes[:2], atol=1e-4)
    np.testing.assert_allclose(two[D.SCORES], everything.scores[:2], atol=1e-6)


def test_candidate_caps_bound_what_reaches_the_next_stage(photos):
    """With one proposal allowed into RNet, at most one face can come out of a 4-face photo."""
    photo = photos(1, seed=28, faces_per_photo=(4, 4))[0]
    capped = D.FaceDetector(D.DetectorConfig(max_rnet_inputs=1, max_level_candidates=5))
    assert int(capped.detect(photo.image)[D.NUM_FACES]) <= 1


def test_composes_inside_another_tf_function(detector, photos):
    photo = photos(1, seed=29, faces_per_photo=(2, 2))[0]

    @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.uint8)])
    def count(image):
        return detector.detect_graph(image)[D.NUM_FACES] + 100

    assert int(count(photo.image)) == 102


@pytest.mark.slow
def test_saved_model_round_trip(detector, photos, tools, tmp_path):
    photo = photos(1, seed=30, faces_per_photo=(2, 2))[0]
    path = str(tmp_path / "detector")
    tf.saved_model.save(detector, path, signatures={
        "detect": detector.detect, "detect_bytes": detector.detect_bytes})
    loaded = tf.saved_model.load(path)
    expected = detector.detect(photo.image)
    data = tools.encode(photo.image, "PNG")
    for out in (loaded.detect(tf.constant(photo.image)), loaded.detect_bytes(tf.constant(data)),
                loaded.signatures["detect_bytes"](image_bytes=tf.constant(data))):
        for key in D.OUTPUTS:
            np.testing.assert_allclose(out[key], expected[key], atol=1e-4)
    assert int(expected[D.NUM_FACES]) == 2


@pytest.mark.slow
def test_a_huge_photo_costs_bounded_memory(photos, tools, tmp_path):
    """A 6000x4000 JPEG with a 900-pixel face, in a child whose address space is capped at
    its own healthy peak (after a 640x480 photo) plus 512 MB. Decoding it takes 72 MB; the
    detection image (1024 px) a few MB. Without the downscale, PNet's first pyramid level
    alone would need over 1 GB of activations (measured: peak RSS 2.2 GB vs 0.87 GB)."""
    face = Image.open(photos(1, seed=31, faces_per_photo=(1, 1))[0].sources[0]).convert("RGB")
    canvas = Image.new("RGB", (6000, 4000), (90, 120, 150))
    canvas.paste(face.resize((900, 900), Image.BICUBIC), (3700, 1500))
    huge = tmp_path / "huge.jpg"
    canvas.save(huge, "JPEG", quality=85)
    small = tmp_path / "small.jpg"
    canvas.resize((640, 427)).save(small, "JPEG")
    script = textwrap.dedent(f"""
        import json, os, resource
        import tensorflow as tf
        from faces import detector
        det = detector.FaceDetector()
        det.detect_bytes(tf.constant(open({str(small)!r}, "rb").read()))  # healthy first
        peak = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmPeak")][0]
        limit = peak * 1024 + (512 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        out = det.detect_bytes(tf.constant(open({str(huge)!r}, "rb").read()))
        print(json.dumps({{k: v.numpy().tolist() for k, v in out.items()}}))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], cwd=tools.REPO, capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out[D.NUM_FACES] == 1
    box = np.asarray(out[D.BOXES][0])
    assert box_ops.overlap([[3700, 1500, 4600, 2400]], [box]).numpy()[0, 0] > 0.5


def test_config_is_checked():
    with pytest.raises(ValueError, match="scale_factor"):
        D.DetectorConfig(scale_factor=1.0)
    with pytest.raises(ValueError, match="min_face_size"):
        D.DetectorConfig(min_face_size=8)
    with pytest.raises(ValueError, match="max_faces"):
        D.DetectorConfig(max_faces=0)


@pytest.mark.parametrize("shorter", [12, 13, 20, 47, 100, 200, 480, 481, 719, 1024, 3000])
def test_pyramid_has_the_packages_levels(shorter):
    from mtcnn.utils.images import build_scale_pyramid

    expected = build_scale_pyramid(shorter + 5, shorter, min_face_size=20, scale_factor=0.709)
    assert D.pyramid_size(shorter, 0.709) == len(expected)


def test_as_rgb_refuses_what_is_not_an_image():
    with pytest.raises(ValueError, match="uint8"):
        D.as_rgb(np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match="shape"):
        D.as_rgb(np.zeros((4, 4, 2), np.uint8))
