"""benchmarks.old_print on a fake model that reads its answer from the pixels: what the
benchmark adds up (conditions, bands, coverage, targets), without a trained model."""
import io

import numpy as np
import pytest
import tensorflow as tf

from agegender import names
from benchmarks import old_print as bench
from evaluation import evaluate


class _ReadsRed:
    """Answers the red level of the (solid) face as its age, intervals of +-2 and +-6."""

    def predict(self, encoded):
        ages = np.array([tf.io.decode_image(e, channels=3).numpy()[..., 0].mean()
                         for e in encoded])
        return ({"age": ages, "age_interval_50": np.stack([ages - 2, ages + 2], -1),
                 "age_interval_80": np.stack([ages - 6, ages + 6], -1)},
                np.ones(len(encoded), bool))


def _items(ages):
    for i, age in enumerate(ages):
        pixels = np.full((40, 40, 3), (age, 120, 90), np.uint8)
        data = tf.io.encode_png(pixels).numpy()
        yield evaluate.Item(f"{i}.png", data, names.Labels(int(age), 0, 0))


AGES = [1, 3, 6, 8, 11, 13, 16, 18, 25, 35, 45, 55, 62, 66, 72, 90] * 2


@pytest.fixture(scope="module")
def results():
    return bench.measure_faces(_ReadsRed(), _items(AGES), ["low", "mid", "high"], seed=1,
                               batch_size=12)


def test_clean_row_is_the_model_on_the_faces_themselves(results):
    clean = results["clean"]
    assert clean["count"] == len(AGES) and clean["mae"] == pytest.approx(0.0, abs=1e-6)
    assert clean["uncertainty"]["interval_50"]["coverage"] == 1.0
    bands = clean["per_age_band"]
    assert list(bands) == ["0-4", "5-9", "10-14", "15-19", "20-39", "40-59", "60-69", "70+"]
    assert [b["count"] for b in bands.values()] == [4, 4, 4, 4, 4, 4, 4, 4]


def test_severities_age_the_same_faces_more_and_more(results):
    assert list(results) == ["clean", "old_print_low", "old_print_mid", "old_print_high"]
    maes = [results[k]["mae"] for k in results]
    assert maes == sorted(maes) and maes[-1] > 5.0
    # Lifted blacks raise the red of the darkest (youngest) faces: they read older.
    assert results["old_print_high"]["per_age_band"]["0-4"]["mean_signed_error"] > 5.0
    assert results["old_print_high"]["uncertainty"]["interval_80"]["coverage"] < 1.0
    assert results["old_print_mid"]["signed_error_standard_error"] > 0


def test_targets_name_what_is_over_them(results):
    over = bench.targets(results)
    assert any("over clean" in o for o in over)
    assert not any(o.startswith("0-4") for o in over)  # 4 faces: under MIN_BAND_FACES
    honest = dict(results["clean"], uncertainty={
        "interval_50": {"nominal": 0.5, "coverage": 0.55},
        "interval_80": {"nominal": 0.8, "coverage": 0.75}})
    assert bench.targets({"clean": results["clean"], "old_print_mid": honest}) == []
    too_sure = dict(honest, uncertainty={"interval_80": {"nominal": 0.8, "coverage": 0.6}})
    assert bench.targets({"clean": results["clean"], "old_print_mid": too_sure}) == [
        "interval_80 coverage 0.60"]


def test_tables_print_every_condition_and_band(results):
    out = io.StringIO()
    bench.print_tables("faces", results, out)
    text = out.getvalue()
    for name in results:
        assert name in text
    assert "0-4" in text and "70+" in text


def test_bad_arguments_are_refused_before_any_model_is_loaded(capsys):
    for argv in (["--severities=medium"], ["--photos=-1"]):
        with pytest.raises(SystemExit) as e:
            bench.main(["--model=/nonexistent", "--records_dir=/nonexistent", *argv])
        assert e.value.code == 2
    assert "medium" in capsys.readouterr().err


def _band(signed, count=150):
    return {"count": count, "mae": abs(signed), "mean_signed_error": signed,
            "signed_error_standard_error": 0.5}


def test_a_missed_band_is_split_into_the_clean_bias_and_the_prints_own_shift():
    clean = {"mae": 5.0, "per_age_band": {"20-39": _band(0.2), "60-69": _band(-3.5),
                                          "70+": _band(-4.0, count=99)}}
    printed = {"mae": 5.5, "per_age_band": {"20-39": _band(0.6), "60-69": _band(-5.0),
                                            "70+": _band(-6.0, count=99),
                                            "5-9": _band(2.5)}}
    results = {"clean": clean, "old_print_mid": printed}
    shifts = bench.band_shifts(results)
    assert shifts["60-69"] == {"clean": -3.5, "printed": -5.0, "shift": pytest.approx(-1.5)}
    assert shifts["20-39"]["shift"] == pytest.approx(0.4)
    assert shifts["5-9"] == {"clean": None, "printed": 2.5, "shift": None}
    # 20-39 is within +-1; 70+ has too few faces to count; 5-9 has no clean row.
    assert bench.targets(results) == [
        "60-69 signed -5.00 (clean -3.50, the print's own -1.50)", "5-9 signed +2.50"]
    assert bench.band_shifts(results, severity="high") == {}


def test_the_fake_models_clean_bias_is_zero_so_the_shift_is_the_whole_error(results):
    shifts = bench.band_shifts(results)
    for band, cell in shifts.items():
        assert cell["clean"] == pytest.approx(0.0, abs=1e-6)
        assert cell["shift"] == pytest.approx(
            results["old_print_mid"]["per_age_band"][band]["mean_signed_error"])
