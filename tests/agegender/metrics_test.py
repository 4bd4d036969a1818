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
    assert d["0-9"] == {"count": 2, "mae": 0.5, "mean_signed_error": 0.5}
    assert d["10-19"]["mae"] == 5 and d["10-19"]["mean_signed_error"] == -5
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
