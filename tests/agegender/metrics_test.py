"""Metrics against hand-computed values."""
import numpy as np
import pytest

from agegender import metrics


def test_age_metrics_by_hand():
    m = metrics.age_metrics([10, 20, 30, 40], [12, 20, 24, 41])  # errors +2, 0, -6, +1
    assert m["count"] == 4
    assert m["mae"] == pytest.approx(9 / 4)
    assert m["rmse"] == pytest.approx(np.sqrt((4 + 0 + 36 + 1) / 4))
    assert m["median_abs_error"] == pytest.approx(1.5)
    assert m["mean_signed_error"] == pytest.approx(-3 / 4)
    assert m["cs@1"] == 0.5 and m["cs@2"] == 0.75 and m["cs@5"] == 0.75 and m["cs@6"] == 1.0


def test_per_decade_pools_100_plus():
    d = metrics.per_decade([5, 9, 15, 101, 116], [6, 9, 10, 100, 100])
    # errors +1 and 0: sample sd 0.7071, over sqrt(2) -> 0.5
    assert d["0-9"] == pytest.approx({"count": 2, "mae": 0.5, "mean_signed_error": 0.5,
                                      "signed_error_standard_error": 0.5})
    assert d["10-19"]["mae"] == 5 and d["10-19"]["mean_signed_error"] == -5
    assert d["10-19"]["signed_error_standard_error"] is None  # one face: no spread to tell
    assert d["100+"]["count"] == 2 and d["100+"]["mae"] == pytest.approx(8.5)


def test_gender_and_race_groups_skip_unknowns():
    assert metrics.gender_accuracy([0, 1, -1, 1], [0, 0, 1, 1]) == pytest.approx(2 / 3)
    assert metrics.gender_accuracy([-1], [0]) is None
    g = metrics.per_race_gender([20, 30, 40, 50], [22, 30, 40, 45], race=[0, 0, -1, 2],
                                true_gender=[1, 1, 0, 0], pred_gender=[1, 0, 0, 0])
    assert g == {"White x female": {"count": 2, "mae": 1.0, "gender_accuracy": 0.5},
                 "Asian x male": {"count": 1, "mae": 5.0, "gender_accuracy": 1.0}}


def test_full_report_and_errors():
    r = metrics.full_report([20, 30], [25, 30])
    assert r["mae"] == 2.5 and r["gender_accuracy"] is None and r["per_race_gender"] == {}
    assert metrics.age_metrics([], []) == {"count": 0}
    with pytest.raises(ValueError):
        metrics.age_metrics([1, 2], [1])


def test_uncertainty_hand_computed():
    true = [20, 30, 40, 50]
    pred = [21, 33, 40, 60]
    std = [1.0, 4.0, 2.0, 9.0]
    intervals = {0.5: ([20, 31, 39, 55], [22, 35, 41, 65]),
                 0.8: ([19, 28, 37, 45], [23, 38, 43, 75])}
    u = metrics.uncertainty(true, pred, std, intervals)
    assert u["interval_50"]["coverage"] == pytest.approx(2 / 4)  # 30 and 50 fall outside
    assert u["interval_80"]["coverage"] == pytest.approx(1.0)
    assert u["interval_50"]["mean_width_years"] == pytest.approx((3 + 5 + 3 + 11) / 4)
    # Most confident first: std 1 (err 1), 2 (err 0), 4 (err 3), 9 (err 10).
    assert u["mae_most_confident"] == pytest.approx({"50%": 0.5, "80%": 4 / 3, "100%": 3.5})


def test_per_predicted_decade_and_gender_calibration():
    by_pred = metrics.per_predicted_decade([65, 75, 30], [62, 68, 41])
    # errors -3 and -7: sample sd 2.83, over sqrt(2) -> 2.0
    assert by_pred["60-69"] == pytest.approx({"count": 2, "mae": 5.0, "mean_signed_error": -5.0,
                                              "signed_error_standard_error": 2.0})
    assert by_pred["40-49"]["count"] == 1
    probs = np.array([[0.9, 0.1], [0.95, 0.05], [0.3, 0.7], [0.4, 0.6]])
    cal = metrics.gender_calibration([0, 1, 1, -1], probs, bins=5)
    # Known: conf 0.9 right(0), 0.95 wrong (true 1), 0.7 right -> bins [0.9,1.0) x2, [0.7,0.8)
    assert sum(b["count"] for b in cal["bins"]) == 3
    assert cal["ece"] == pytest.approx((2 / 3) * abs(0.925 - 0.5) + (1 / 3) * abs(0.7 - 1.0))
    report = metrics.full_report([20, 30], [22, 29], true_gender=[0, 1], pred_gender=[0, 1],
                                 age_std=[1, 2], gender_probability=probs[:2])
    assert "uncertainty" in report and "gender_calibration" in report
    assert "uncertainty" not in metrics.full_report([20], [21])


def test_per_age_band_splits_children_in_five_year_bands():
    true = [0, 4, 5, 9, 12, 17, 19, 25, 45, 65, 70, 99]
    pred = [2, 4, 8, 9, 10, 18, 25, 25, 45, 60, 80, 89]
    bands = metrics.per_age_band(true, pred)
    assert list(bands) == ["0-4", "5-9", "10-14", "15-19", "20-39", "40-59", "60-69", "70+"]
    assert bands["0-4"]["count"] == 2 and bands["0-4"]["mean_signed_error"] == 1.0
    assert bands["5-9"]["mae"] == 1.5 and bands["15-19"]["mean_signed_error"] == 3.5
    assert bands["70+"]["count"] == 2 and bands["70+"]["mean_signed_error"] == 0.0
    assert bands["60-69"]["signed_error_standard_error"] is None  # one face
    assert "per_age_band" in metrics.full_report(true, pred)


def test_pooled_equals_the_statistics_of_all_faces():
    rng = np.random.default_rng(1)
    a_true, b_true = rng.integers(60, 70, 40), rng.integers(60, 70, 70)
    a_pred, b_pred = a_true + rng.normal(-3, 4, 40), b_true + rng.normal(-1, 6, 70)
    parts = [metrics.per_decade(a_true, a_pred)["60-69"],
             metrics.per_decade(b_true, b_pred)["60-69"]]
    whole = metrics.per_decade(np.r_[a_true, b_true], np.r_[a_pred, b_pred])["60-69"]
    got = metrics.pooled(parts)
    for key in ("count", "mae", "mean_signed_error", "signed_error_standard_error"):
        assert got[key] == pytest.approx(whole[key]), key
    assert metrics.pooled([None, {"count": 0}]) == {"count": 0}
