"""agegender.job_dir: which file holds which split's evaluation."""
import pytest

from agegender import job_dir


def test_each_split_has_its_own_evaluation_file():
    assert job_dir.eval_file("validation") == job_dir.EVAL_FILE == "eval.json"
    assert job_dir.eval_file("test") == "eval_test.json"
    # The train split is never evaluated into a job dir, and nothing else is guessed at.
    for split in ("train", "Test", ""):
        with pytest.raises(ValueError, match="evaluated on one of"):
            job_dir.eval_file(split)
