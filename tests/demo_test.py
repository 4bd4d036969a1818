"""`make demo`'s chain (scripts/demo.py) end to end on a slice of the shared faces."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_UTK = os.path.join(ROOT, "..", "shared", "data", "utkface", "UTKFace")


def _demo(*args, timeout=1200):
    return subprocess.run([sys.executable, "scripts/demo.py", *args], cwd=ROOT, timeout=timeout,
                          capture_output=True, text=True,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isdir(SHARED_UTK), reason="needs ../shared UTKFace images")
def test_demo_runs_the_whole_chain(tmp_path):
    result = _demo("--limit=300", "--config=configs/demo_tiny.flags", f"--out={tmp_path}",
                   "--queries=3")
    out = result.stdout
    assert result.returncode == 0, out[-4000:] + result.stderr[-4000:]
    for step in ("records", "train", "export", "serve", "query REST", "query gRPC",
                 "evaluate", "stop server"):
        assert f"] {step} ===" in out
    # Both protocols answered for three test-split faces, with the true age beside.
    assert out.count("Predicted age:") >= 6 and out.count("rue age") >= 6
    assert (tmp_path / "models" / "age" / "1" / "saved_model.pb").exists()
    assert (tmp_path / "report" / "report.html").stat().st_size > 10000
    assert out.rstrip().endswith(f"report: {tmp_path / 'report' / 'report.html'}")


def test_demo_names_the_failing_step(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = _demo(f"--data={empty}", f"--out={tmp_path / 'out'}", timeout=300)
    assert result.returncode == 1
    assert "demo failed at step 'records'" in result.stderr


def test_demo_without_data_says_where_to_get_it(tmp_path):
    result = _demo(f"--data={tmp_path / 'missing'}", timeout=60)
    assert result.returncode == 2 and "UTKFace" in result.stderr
