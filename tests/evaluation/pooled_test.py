"""evaluation.pooled: a group's bias over several reports against a target with its error."""
import json

import pytest

from agegender import metrics
from evaluation import pooled


def _write(path, true, pred):
    path.write_text(json.dumps(metrics.full_report(true, pred)))
    return str(path)


def test_pooled_60s_against_the_target_with_its_error(tmp_path, capsys):
    # -4 and -3 years on 3 faces each: pooled -3.5 with a standard error of ~1.3.
    val = _write(tmp_path / "val.json", [60, 64, 68], [56, 58, 66])
    test = _write(tmp_path / "test.json", [61, 65, 69], [58, 61, 67])
    assert pooled.main([f"--input={val},{test}"]) == 0
    out = capsys.readouterr().out
    assert "n=6 signed -3.50" in out and "met" in out
    # Far off and sure of it: missed.
    far = _write(tmp_path / "far.json", [60, 64, 68, 62], [50, 54, 58, 52])
    assert pooled.main([f"--input={far}", "--target=3"]) == 1
    # An age band works too.
    assert pooled.main([f"--input={val}", "--group=60-69", "--target=4"]) == 0


def test_meets_target_uses_two_standard_errors():
    assert pooled.meets_target({"mean_signed_error": -3.8, "signed_error_standard_error": 0.5},
                               3.0)
    assert not pooled.meets_target(
        {"mean_signed_error": -3.8, "signed_error_standard_error": 0.3}, 3.0)


def test_bad_input_is_one_clear_line(tmp_path, capsys):
    val = _write(tmp_path / "val.json", [20, 30], [21, 30])
    for argv, words in (([f"--input={tmp_path}/missing.json"], "missing.json"),
                        ([f"--input={val}"], "no group '60-69'"),
                        ([f"--input={val}", "--target=0"], "--target")):
        with pytest.raises(SystemExit) as e:
            pooled.main(argv)
        assert e.value.code == 2 and words in capsys.readouterr().err
