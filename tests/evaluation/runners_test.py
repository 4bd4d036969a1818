"""LiteRTRunner answers like SavedModelRunner (same output dict, same values, same skipped
images) and `python -m evaluation.evaluate` reports the same metrics for a .tflite file."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from agegender import schema
from evaluation import runners
from export import litert_file, litert_metadata

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _jpeg(seed, size=48):
    rng = np.random.default_rng(seed)
    img = rng.uniform(0, 255, (1, 1, 3)) + rng.normal(0, 30, (size, size + 10, 3))
    return tf.io.encode_jpeg(np.clip(img, 0, 255).astype(np.uint8)).numpy()


@pytest.fixture(scope="module")
def models(tiny_job, tiny_export, tmp_path_factory):
    """{variant: (SavedModel version dir, .tflite path)} of the same tiny model."""
    out = {}
    for variant in ("clf_gender", "regression", "range_gender"):
        saved = os.path.join(tiny_export(variant), "1")
        lite = str(tmp_path_factory.mktemp(f"lite_{variant}") / "age.tflite")
        litert_file.export_litert(tiny_job(variant), lite, "none", check_images=4)
        out[variant] = (saved, lite)
    return out


@pytest.mark.parametrize("variant", ["clf_gender", "regression", "range_gender"])
def test_litert_runner_returns_what_the_saved_model_returns(variant, models):
    saved, lite = models[variant]
    images = [_jpeg(i) for i in range(5)]
    want = runners.SavedModelRunner(saved)(images)
    want.pop("key")
    got = runners.runner_for(lite)(images)
    assert isinstance(runners.runner_for(lite), runners.LiteRTRunner)
    assert sorted(got) == sorted(want)
    for name, values in want.items():
        if values.dtype == object:  # gender letters
            assert got[name].tolist() == values.tolist()
        else:
            np.testing.assert_allclose(got[name], values, atol=1e-4, err_msg=name)


def test_undecodable_and_oversized_images_fail_alone(models, png_bomb):
    runner = runners.LiteRTRunner(models["clf_gender"][1], max_image_pixels=10_000_000)
    images = [_jpeg(0), b"not an image", _jpeg(1), png_bomb]
    out, ok = runner.predict(images)
    assert ok.tolist() == [True, False, True, False]
    assert len(out["age"]) == 2 and out["age_distribution"].shape == (2, schema.NUM_AGE_BINS)


def test_files_the_runner_cannot_use_are_named(models, tmp_path):
    with pytest.raises(runners.EvaluationError, match="does not exist"):
        runners.runner_for(str(tmp_path / "missing.tflite"))
    garbage = tmp_path / "garbage.tflite"
    garbage.write_bytes(np.random.default_rng(0).bytes(5000))
    with pytest.raises(runners.EvaluationError, match="not a usable LiteRT model"):
        runners.runner_for(str(garbage))
    # A LiteRT file from another exporter: no metadata to read the outputs with.
    plain = tmp_path / "plain.tflite"
    content = open(models["regression"][1], "rb").read()
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    model.metadata = [m for m in model.metadata
                      if m.name != litert_metadata.METADATA_NAME.encode()]  # bytes here
    plain.write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(model)))
    with pytest.raises(runners.EvaluationError, match="carries no agegender metadata"):
        runners.runner_for(str(plain))


def _records(directory):
    rng = np.random.default_rng(1)
    os.makedirs(directory)
    with tf.io.TFRecordWriter(f"{schema.shard_prefix(directory, 'test')}-00000-of-00001") as w:
        for i in range(12):
            age = int(rng.integers(1, 90))
            w.write(schema.make_example(
                encoded_jpeg=_jpeg(100 + i), height=48, width=58, source_id=f"{i}.jpg",
                sha256="0" * 64, age=age, histogram=np.eye(schema.NUM_AGE_BINS)[age],
                gender=i % 2, race=0).SerializeToString())
    return str(directory)


@pytest.mark.slow
def test_evaluate_cli_reports_the_same_metrics_for_a_tflite_file(models, tmp_path):
    records = _records(tmp_path / "records")
    saved, lite = models["clf_gender"]
    metrics = {}
    for name, model in (("saved", os.path.dirname(saved)), ("lite", lite)):
        out = tmp_path / name
        result = subprocess.run(
            [sys.executable, "-m", "evaluation.evaluate", f"--model={model}",
             f"--records_dir={records}", "--split=test", f"--output_dir={out}",
             "--batch_size=5"], cwd=ROOT, capture_output=True, text=True, timeout=300,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
        assert result.returncode == 0, result.stderr[-3000:]
        metrics[name] = json.loads((out / "metrics.json").read_text())
    assert metrics["lite"]["model"] == lite and metrics["lite"]["count"] == 12
    for key in ("count", "gender_accuracy", "cs@5"):
        assert metrics["lite"][key] == metrics["saved"][key], key
    for key in ("mae", "rmse", "mean_signed_error"):
        assert metrics["lite"][key] == pytest.approx(metrics["saved"][key], abs=1e-4), key
