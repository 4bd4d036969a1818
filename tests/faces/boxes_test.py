"""Box overlap and matching."""
import numpy as np
import pytest

from faces import boxes


def test_overlap_union_and_min():
    a = np.array([[0, 0, 10, 10]], np.float32)
    b = np.array([[5, 0, 15, 10], [0, 0, 5, 5], [20, 20, 30, 30]], np.float32)
    np.testing.assert_allclose(boxes.overlap(a, b).numpy(), [[50 / 150, 25 / 100, 0]])
    # Over the smaller box: a box inside another overlaps it fully.
    np.testing.assert_allclose(boxes.overlap(a, b, boxes.MIN).numpy(), [[0.5, 1.0, 0]])


def test_degenerate_boxes_overlap_nothing_instead_of_nan():
    a = np.array([[3, 3, 3, 3]], np.float32)
    assert boxes.overlap(a, a).numpy()[0, 0] == 0
    assert boxes.overlap(a, a, boxes.MIN).numpy()[0, 0] == 0


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="union"):
        boxes.overlap([[0, 0, 1, 1]], [[0, 0, 1, 1]], "mean")


def test_match_pairs_each_truth_with_at_most_one_detection():
    truth = [[0, 0, 10, 10], [100, 100, 120, 120], [200, 0, 220, 20]]
    detected = [[1, 1, 10, 10], [0, 0, 11, 11], [101, 99, 121, 121], [50, 50, 60, 60]]
    m = boxes.match(truth, detected, 0.5)
    # Truth 0 takes its best detection (index 1, IoU 100/121); index 0 is then a false positive.
    assert m.pair.tolist() == [1, 2, -1]
    assert m.false_positive.tolist() == [True, False, False, True]
    assert m.iou[0] == pytest.approx(100 / 121) and m.iou[2] == 0


def test_match_with_nothing_on_either_side():
    m = boxes.match(np.zeros((0, 4)), [[0, 0, 1, 1]])
    assert m.pair.shape == (0,) and m.false_positive.tolist() == [True]
    m = boxes.match([[0, 0, 1, 1]], np.zeros((0, 4)))
    assert m.pair.tolist() == [-1] and m.false_positive.shape == (0,)


def test_to_tf_image_swaps_axes():
    assert boxes.to_tf_image(np.array([[1., 2., 3., 4.]])).numpy().tolist() == [[2, 1, 4, 3]]
