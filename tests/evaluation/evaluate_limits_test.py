"""evaluation.evaluate under issue 23's hostile inputs: a JPEG whose decoding costs minutes
and a zip member far larger than its header says are skips with their reasons, in a child
process with a memory limit."""
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from agegender import preprocessing

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# RLIMIT_DATA of the child: a healthy evaluation of a few images stays under it (TF loaded,
# ~1.6 GB of VmData as the records job); inflating the zip member in one call, as before,
# needed 2 GB more.
DATA_LIMIT = 5 << 29


class _FixedAgeModel(tf.Module):
    """serving_default(image_bytes, key) -> age 30, gender M, for any decodable image."""

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes"),
                                  tf.TensorSpec([None], tf.string, name="key")])
    def serve(self, image_bytes, key):
        pixels = preprocessing.model_input_batch(image_bytes, 8)
        age = tf.reduce_mean(pixels, axis=[1, 2, 3]) * 0 + 30
        return {"age": age, "gender": tf.fill(tf.shape(key), "M"), "key": key}


def _png(seed):
    out = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (16, 16, 3), np.uint8)).save(
        out, "PNG")
    return out.getvalue()


@pytest.mark.slow
def test_a_scan_bomb_and_a_false_size_zip_member_are_skips(tmp_path, hostile_files):
    model = tmp_path / "model" / "1"
    module = _FixedAgeModel()
    tf.saved_model.save(module, str(model), signatures={"serving_default": module.serve})
    faces = tmp_path / "faces"
    faces.mkdir()
    (faces / "20_0_0_20170101000000000.png").write_bytes(_png(0))
    (faces / "40_1_0_20170101000000100.jpg").write_bytes(hostile_files.jpeg_scan_bomb(2048, 5000))
    (faces / "more.zip").write_bytes(hostile_files.zip_with_false_size(
        {"50_0_0_20170101000000200.png": _png(1)}, 2_097_152_000, 1000))
    out = tmp_path / "report"
    argv = ["evaluation.evaluate", f"--model={model.parent}", f"--input={faces}",
            f"--output_dir={out}"]
    script = (f"import resource, runpy, sys\n"
              f"resource.setrlimit(resource.RLIMIT_DATA, ({DATA_LIMIT}, {DATA_LIMIT}))\n"
              f"sys.argv = {argv!r}\n"
              f"runpy.run_module('evaluation.evaluate', run_name='__main__')\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["count"] == 2
    assert m["skipped"]["by_reason"] == {"image_too_costly": 1, "file_too_large": 1}
    details = {e["source"]: e["detail"] for e in m["skipped"]["examples"]}
    assert "5,006 scans" in details["40_1_0_20170101000000100.jpg"]
    assert "its header declares 1,000" in details["30_1_0_20170101000000999.jpg"]
