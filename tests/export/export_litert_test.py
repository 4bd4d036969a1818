"""LiteRT export: every mode round-trips on the ai_edge_litert runtime and answers like the
Keras model; the check refuses collapsed, NaN and unconvertible models and writes nothing;
int8 calibrates on the train split and never reads the test split; the CLI's errors."""
import dataclasses
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from agegender import heads, inference, preprocessing, schema
from agegender import job_dir as job_dir_lib
from agegender import model_spec as ms
from export import (export_litert, litert_check, litert_convert, litert_file, litert_images,
                    litert_metadata, litert_model)
from export.errors import ExportError

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODES = litert_convert.QUANTIZATIONS
# Largest raw-output difference from the Keras model allowed per mode, on the tiny models:
# float32 differs by summation order only; the quantized modes by their rounding (int8 also
# clips a value outside the range it was calibrated on). Ages: the export's own thresholds.
RAW_TOL = {"none": 1e-5, "float16": 2e-3, "dynamic": 2e-2, "int8": 0.1}


def _image(rng, size=40):
    """A random smooth colour image as JPEG: the tiny models' outputs vary with colour."""
    corners = rng.uniform(0, 255, (2, 2, 3))
    t = np.linspace(0, 1, size)[:, None, None]
    top = corners[0, 0] * (1 - t) + corners[0, 1] * t
    bottom = corners[1, 0] * (1 - t) + corners[1, 1] * t
    img = top[None, :, 0] * (1 - t) + bottom[None, :, 0] * t
    img = img + rng.normal(0, 8, img.shape)
    return tf.io.encode_jpeg(np.clip(img, 0, 255).astype(np.uint8), quality=95).numpy()


def write_records(directory, counts, seed=0):
    """A records directory with `counts` {split: images} (one shard each)."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    for split, n in counts.items():
        with tf.io.TFRecordWriter(f"{schema.shard_prefix(directory, split)}-00000-of-00001") as w:
            for i in range(n):
                age = int(rng.integers(1, 90))
                w.write(schema.make_example(
                    encoded_jpeg=_image(rng), height=40, width=40, source_id=f"{split}{i}.jpg",
                    sha256="0" * 64, age=age, histogram=np.eye(schema.NUM_AGE_BINS)[age],
                    gender=int(rng.integers(0, 2)), race=0).SerializeToString())
    return str(directory)


@pytest.fixture(scope="module")
def records(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("records"),
                         {"train": 24, "validation": 16, "test": 8})


def _record_images(records_dir, split):
    files = sorted(tf.io.gfile.glob(schema.shard_pattern(records_dir, split)))
    return [schema.parse_examples(r)[schema.IMAGE_ENCODED].numpy()
            for r in tf.data.TFRecordDataset(files)]


def _export(job_dir, out, mode, records, **kw):
    kw = {"representative_images": 16, "check_images": 16, **kw}
    return litert_file.export_litert(job_dir, str(out), mode, records_dir=records, **kw)


@pytest.mark.parametrize("variant", ["clf_gender", "regression", "range_gender"])
@pytest.mark.parametrize("mode", MODES)
def test_every_mode_round_trips_and_answers_like_keras(variant, mode, job_dirs, records,
                                                       tmp_path):
    out = tmp_path / "age.tflite"
    metadata = _export(job_dirs[variant], out, mode, records)
    model, spec = job_dir_lib.load(job_dirs[variant])

    # The file carries its metadata; the sidecar is the same plus the file's identity.
    content = out.read_bytes()
    assert litert_metadata.read_metadata(content) == json.loads(json.dumps(metadata))
    sidecar = json.loads((tmp_path / "age.tflite.json").read_text())
    assert sidecar.pop("model_sha256") == hashlib.sha256(content).hexdigest()
    assert sidecar.pop("model_bytes") == len(content) and sidecar.pop("model_file") == out.name
    assert sidecar == litert_metadata.read_metadata(content)
    assert metadata["quantization"] == mode and metadata["signature"] == "serving_default"
    assert metadata["input"]["shape"] == [1, 32, 32, 3]
    assert metadata["input"]["dtype"] == "float32" and metadata["input"]["range"] == [0, 255]
    names = sorted(h.output for h in heads.for_spec(spec))
    assert sorted(metadata["outputs"]) == names
    assert all(metadata["outputs"][n]["dtype"] == "float32" for n in names)  # int8 too
    assert metadata["model_spec"]["img_dim"] == 32
    assert metadata["age_histogram"]["age_deviation"] == spec.age_deviation
    assert metadata["check"]["source"].startswith("validation split")
    assert (metadata["representative"] is not None) == (mode == "int8")

    # The maintained runtime, on held-out images through the evaluation's preprocessing.
    images = _record_images(records, "validation")
    pixels = np.stack([preprocessing.model_input(b, 32).numpy() for b in images])
    lite = litert_model.LiteRTModel(str(out))
    assert lite.input_shape == (1, 32, 32, 3) and lite.output_names == names
    got = lite(pixels)
    want = {k: np.asarray(v) for k, v in model(pixels, training=False).items()}
    for name in names:
        np.testing.assert_allclose(got[name], want[name], atol=RAW_TOL[mode], err_msg=name)
    diff = np.abs(heads.ages_from_outputs(got, spec) - heads.ages_from_outputs(want, spec))
    assert diff.mean() <= litert_check.TOLERANCES[mode].mean_age
    assert diff.max() <= litert_check.TOLERANCES[mode].max_age


def test_int8_is_integer_inside_but_the_softmax_and_the_chosen_layers(job_dirs, records,
                                                                      tmp_path):
    for mode in ("none", "int8"):
        _export(job_dirs["clf_gender"], tmp_path / f"{mode}.tflite", mode, records)
    _export(job_dirs["clf_gender"], tmp_path / "all.tflite", "int8", records,
            int8_float_layers=0)
    float_model = (tmp_path / "none.tflite").read_bytes()
    int8_model = (tmp_path / "int8.tflite").read_bytes()
    all_int8 = (tmp_path / "all.tflite").read_bytes()
    assert litert_convert.float_ops(all_int8, allowed=litert_convert.INT8_FLOAT_OPS) == []
    assert litert_metadata.read_metadata(all_int8)["int8"]["float_layers"] == []
    assert "CONV_2D" in [op for op, _ in litert_convert.float_ops(float_model)]  # the scan sees it
    metadata = litert_metadata.read_metadata(int8_model)
    float_layers = metadata["int8"]["float_layers"]
    assert len(float_layers) == litert_convert.DEFAULT_INT8_FLOAT_LAYERS
    left = litert_convert.float_ops(int8_model, allowed=litert_convert.INT8_FLOAT_OPS)
    assert left and sorted(name for _, name in left) == sorted(float_layers)
    assert "SOFTMAX" in [op for op, _ in litert_convert.float_ops(int8_model)]
    assert metadata["input"]["dtype"] == "float32"
    quantized_input = litert_metadata.read_metadata(all_int8)["int8"]["input_quantization"]
    scale, zero_point = quantized_input["scale"], quantized_input["zero_point"]
    # Calibrated on 0..255 pixels: about one level per step, from -128.
    assert 0.5 < scale < 1.1 and -128 <= zero_point <= -100
    assert "int8" not in litert_metadata.read_metadata(float_model)


def test_int8_calibrates_on_train_and_checks_on_validation_never_test(job_dirs, records,
                                                                      tmp_path, monkeypatch):
    no_test = tmp_path / "no_test"
    no_test.mkdir()
    for split in ("train", "validation"):
        for f in tf.io.gfile.glob(schema.shard_pattern(records, split)):
            shutil.copy(f, no_test)
    reads = []
    real = litert_images.records_pixels

    def spy(records_dir, split, spec, count):
        reads.append((split, count))
        return real(records_dir, split, spec, count)

    monkeypatch.setattr(litert_images, "records_pixels", spy)
    metadata = _export(job_dirs["clf_gender"], tmp_path / "a.tflite", "int8", str(no_test),
                       representative_images=10, check_images=5)
    assert sorted(reads) == [("train", 10), ("validation", 5)]
    assert metadata["representative"] == {"images": 10, "source": f"train split of {no_test}"}
    assert metadata["check"]["images"] == 5

    # More representative images than the split holds: all of them, and the count says so.
    metadata = _export(job_dirs["clf_gender"], tmp_path / "b.tflite", "int8", str(no_test),
                       representative_images=1000)
    assert metadata["representative"]["images"] == 24

    no_train = tmp_path / "no_train"
    no_train.mkdir()
    for f in tf.io.gfile.glob(schema.shard_pattern(records, "validation")):
        shutil.copy(f, no_train)
    with pytest.raises(ExportError, match="no 'train' records"):
        _export(job_dirs["clf_gender"], tmp_path / "c.tflite", "int8", str(no_train))
    assert not (tmp_path / "c.tflite").exists()


def test_records_pixels_are_the_evaluation_preprocessing(records):
    spec = ms.ModelSpec(img_dim=32)
    pixels = litert_images.records_pixels(records, "validation", spec, 4)
    assert pixels.shape == (4, 32, 32, 3) and pixels.dtype == np.float32
    expected = [preprocessing.model_input(b, 32).numpy()
                for b in _record_images(records, "validation")]
    for image in pixels:  # each is exactly one record through model_input
        assert min(np.abs(image - e).max() for e in expected) == 0.0


def collapsing_job_dir(directory):
    """A model whose age reads a signal 3000x smaller than another value in the same tensor:
    float keeps it, int8's one scale per tensor rounds it to zero, so every int8 age is the
    same while the Keras ages spread by years."""
    spec = ms.ModelSpec(img_dim=32, base_model="tiny", type="classification")
    inputs = keras.Input((32, 32, 3), name="pixels")
    mix = keras.layers.Dense(2, name="mix")  # [30 * mean red, 0.01 * mean green]
    head = heads.age_head(spec).output_layer()
    x = mix(keras.layers.GlobalAveragePooling2D()(inputs))
    model = keras.Model(inputs, {head.name: head(x)})
    mix.set_weights([np.array([[30, 0], [0, 0.01], [0, 0]], np.float32), np.zeros(2, np.float32)])
    logits = np.zeros((2, schema.NUM_AGE_BINS), np.float32)
    logits[1] = (np.arange(schema.NUM_AGE_BINS) - 50) * 0.05
    head.set_weights([logits, np.zeros(schema.NUM_AGE_BINS, np.float32)])
    os.makedirs(directory, exist_ok=True)
    job_dir_lib.save(str(directory), model, spec)
    return str(directory)


def test_collapsed_int8_is_refused_and_nothing_is_written(records, tmp_path):
    job = collapsing_job_dir(tmp_path / "job")
    out = tmp_path / "models" / "age.tflite"
    # The float model is fine: the check refuses the quantization, not the model.
    _export(job, out, "none", records)
    before = out.read_bytes(), (tmp_path / "models" / "age.tflite.json").read_bytes()
    with pytest.raises(ExportError, match="collapsed") as e:
        _export(job, out, "int8", records, int8_float_layers=0)
    assert "Nothing was written" in str(e.value)
    # The earlier file and its sidecar are untouched, and no temp file is left.
    assert (out.read_bytes(), (tmp_path / "models" / "age.tflite.json").read_bytes()) == before
    assert sorted(os.listdir(tmp_path / "models")) == ["age.tflite", "age.tflite.json"]


def test_converter_output_with_nan_is_refused(job_dirs, records, tmp_path, monkeypatch):
    """A converted file that answers NaN (as a Keras model wrapped in a plain tf.Module once
    did here) is refused: the check runs the file, not the converter's promise."""
    model, spec = job_dir_lib.load(job_dirs["clf_gender"])
    broken = keras.models.clone_model(model)
    broken.set_weights([np.full_like(w, np.nan) if w.ndim == 1 else w
                        for w in model.get_weights()])
    real_convert = litert_convert.convert

    def convert_broken(saved_model_dir, quantization, *args):
        broken_dir = os.path.join(saved_model_dir, "broken")  # removed with the export's
        litert_convert.write_saved_model(broken, spec, broken_dir)
        return real_convert(broken_dir, quantization, *args)

    monkeypatch.setattr(litert_convert, "convert", convert_broken)
    out = tmp_path / "age.tflite"
    with pytest.raises(ExportError, match="NaN or infinite"):
        _export(job_dirs["clf_gender"], out, "none", records)
    assert os.listdir(tmp_path) == []


def test_unsupported_op_is_refused_by_name(records, tmp_path):
    spec = ms.ModelSpec(img_dim=32, base_model="tiny")
    inputs = keras.Input((32, 32, 3), name="pixels")
    x = keras.layers.Lambda(lambda t: tf.math.igamma(t + 1.0, t + 2.0))(inputs)
    head = heads.age_head(spec).output_layer()
    model = keras.Model(inputs, {head.name: head(keras.layers.GlobalAveragePooling2D()(x))})
    out = tmp_path / "age.tflite"
    with pytest.raises(ExportError, match=r"no builtin kernel for tf\.Igamma"):
        litert_file.export_litert(output=str(out), quantization="none", model=model,
                                  spec=spec, check_images=2)
    assert not out.exists() and not (tmp_path / "age.tflite.json").exists()


def test_without_records_the_check_uses_synthetic_images(job_dirs, tmp_path):
    metadata = litert_file.export_litert(job_dirs["regression"], str(tmp_path / "a.tflite"),
                                         "dynamic", check_images=3)
    assert metadata["check"]["source"].startswith("synthetic") and metadata["check"]["images"] == 3


def test_read_metadata_of_other_files(job_dirs, tmp_path):
    model, spec = job_dir_lib.load(job_dirs["regression"])
    litert_convert.write_saved_model(model, spec, str(tmp_path / "sm"))
    plain, _ = litert_convert.convert(str(tmp_path / "sm"), "none")
    assert litert_metadata.read_metadata(plain) is None  # converted elsewhere: no agegender entry
    tagged = litert_metadata.embed_metadata(plain, {"a": 1})
    replaced = litert_metadata.embed_metadata(tagged, {"a": 2})
    assert litert_metadata.read_metadata(replaced) == {"a": 2}


def _cli(args, capsys):
    code = export_litert.main(args)
    return code, capsys.readouterr()


def test_cli_errors_are_clear(job_dirs, records, tmp_path, capsys):
    code, out = _cli([f"--job_dir={tmp_path}/missing", f"--output={tmp_path}/a.tflite"], capsys)
    assert code == 2 and "error:" in out.err and "model.keras not found" in out.err
    code, out = _cli([f"--model={job_dirs['clf_gender']}", f"--output={tmp_path}/a.tflite",
                      "--quantization=int8"], capsys)
    assert code == 2 and "--records_dir" in out.err
    code, out = _cli([f"--model={job_dirs['clf_gender']}", f"--output={tmp_path}/a.pb"],
                     capsys)
    assert code == 2 and ".tflite" in out.err
    code, out = _cli([f"--job_dir={job_dirs['clf_gender']}", f"--output={tmp_path}/a.tflite",
                      "--quantization=int8", f"--records_dir={records}",
                      "--representative_images=0"], capsys)
    assert code == 2 and "--representative_images" in out.err
    assert not any(p.suffix == ".tflite" for p in tmp_path.iterdir())
    # A threshold tightened below what float16 rounding gives: refused, exit 2.
    code, out = _cli([f"--job_dir={job_dirs['clf_gender']}", f"--output={tmp_path}/a.tflite",
                      "--quantization=float16", f"--records_dir={records}",
                      "--max_age_difference=0"], capsys)
    assert code == 2 and "at most 0.0 allowed" in out.err


@pytest.mark.slow
def test_cli_in_a_process(job_dirs, records, tmp_path):
    out = tmp_path / "age.tflite"
    result = subprocess.run(
        [sys.executable, "-m", "export.export_litert", f"--model={job_dirs['range_gender']}",
         f"--output={out}", "--quantization=int8", f"--records_dir={records}",
         "--representative_images=8", "--check_images=8"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"exported {out} (int8)" in result.stdout and "check on 8 validation" in result.stdout
    assert json.loads(out.with_name("age.tflite.json").read_text())["quantization"] == "int8"


def test_postprocessing_in_the_metadata_reproduces_the_served_outputs(job_dirs, records,
                                                                      tmp_path):
    """An app that follows the metadata's `postprocessing` rules on the file's raw outputs
    (mirror and average, the age prior correction, temperatures for the spread and the
    gender probability) gets what the exported signatures answer for the same pixels."""
    job = tmp_path / "job"
    shutil.copytree(job_dirs["clf_gender"], job)
    model, spec = job_dir_lib.load(str(job))
    prior = np.linspace(0.5, 2.0, 101).tolist()  # old ages weigh more: moves the age
    spec = dataclasses.replace(spec, test_time_flip=True, age_temperature=0.6,
                               gender_temperature=1.7, age_prior_correction=0.5,
                               age_prior_weights=prior)
    job_dir_lib.save(str(job), model, spec)
    out = tmp_path / "age.tflite"
    metadata = _export(str(job), out, "none", records)
    post = metadata["postprocessing"]
    assert post["test_time_flip"] is True
    assert (post["age_temperature"], post["gender_temperature"]) == (0.6, 1.7)
    np.testing.assert_allclose(post["age_prior_weights"], prior)

    images = _record_images(records, "validation")[:6]
    pixels = np.stack([preprocessing.model_input(b, 32).numpy() for b in images])
    lite = litert_model.LiteRTModel(str(out))
    raw, mirrored = lite(pixels), lite(pixels[:, :, ::-1])
    app = {k: (raw[k] + mirrored[k]) / 2 for k in raw}

    def tempered(p, t):
        z = np.log(p + 1e-12) / t
        e = np.exp(z - z.max(-1, keepdims=True))
        return e / e.sum(-1, keepdims=True)

    bins = np.asarray(metadata["outputs"]["age_distribution"]["bin_ages"], np.float64)
    corrected = app["age_distribution"] * np.asarray(post["age_prior_weights"])
    corrected /= corrected.sum(-1, keepdims=True)
    age = corrected @ bins
    p = tempered(corrected, post["age_temperature"])
    std = np.sqrt(np.maximum(p @ bins ** 2 - (p @ bins) ** 2, 0))
    gender = tempered(app["gender"], post["gender_temperature"])

    # What every served path computes (the signatures, the evaluation's runners).
    served = {k: np.asarray(v) for k, v in heads.serving_outputs(
        inference.raw_outputs(model, tf.constant(pixels), spec), spec).items()}
    np.testing.assert_allclose(age, served["age"], atol=1e-3)
    np.testing.assert_allclose(std, served["age_std"], atol=1e-3)
    np.testing.assert_allclose(gender, served["gender_probability"], atol=1e-4)
    # The rules change the answer here, so a metadata that dropped them could not pass.
    assert np.abs(age - raw["age_distribution"] @ bins).max() > 0.5
    assert np.abs(std - np.sqrt(np.maximum(raw["age_distribution"] @ bins ** 2
                                           - (raw["age_distribution"] @ bins) ** 2, 0))
                  ).max() > 1e-2



def _damaged(job_dir, tmp_path, damage):
    """A copy of a good job dir with one file damaged by `damage(copy)`."""
    copy = tmp_path / "damaged_job"
    shutil.copytree(job_dir, copy)
    damage(copy)
    return copy


def _edit_spec(**changes):
    def damage(job):
        spec = json.loads((job / job_dir_lib.SPEC_FILE).read_text())
        for key, value in changes.items():
            if value is _DROP:
                spec.pop(key)
            else:
                spec[key] = value
        (job / job_dir_lib.SPEC_FILE).write_text(json.dumps(spec))
    return damage


_DROP = object()


def _truncate_model(job):
    model = job / job_dir_lib.MODEL_FILE
    model.write_bytes(model.read_bytes()[:model.stat().st_size // 2])


@pytest.mark.parametrize("damage,message", [
    (_truncate_model, r"model\.keras cannot be loaded .*damaged or incomplete"),
    (lambda job: (job / job_dir_lib.MODEL_FILE).write_bytes(b""),
     r"model\.keras cannot be loaded .*damaged or incomplete"),
    (lambda job: (job / job_dir_lib.SPEC_FILE).write_text('{"type": "classification", '),
     r"model_spec\.json is not a valid model spec: not valid JSON"),
    (lambda job: (job / job_dir_lib.SPEC_FILE).write_bytes(b"\xff\xfe\x00junk"),
     r"model_spec\.json is not a valid model spec: not valid JSON"),
    (lambda job: (job / job_dir_lib.SPEC_FILE).write_text("[1, 2]"),
     r"model_spec\.json is not a valid model spec: a JSON object was expected"),
    (_edit_spec(img_dim="big"), r"img_dim must be a whole number of pixels, got 'big'"),
    (_edit_spec(img_dim=100000), r"img_dim must be 16\.\.1024 pixels, got 100000"),
    (_edit_spec(img_dim=0), r"img_dim must be 16\.\.1024 pixels, got 0"),
    (_edit_spec(img_dim=64), r"takes \(32, 32\) pixel inputs but model_spec\.json says "
                             r"img_dim 64"),
    (_edit_spec(img_dim=_DROP, type=_DROP), r"missing type, img_dim"),
    (_edit_spec(predict_gender="yes"), r"predict_gender must be true or false"),
    (_edit_spec(type="oracle"), r"model type must be one of"),
], ids=["truncated-model", "empty-model", "cut-json", "not-utf8", "json-list",
        "img-dim-text", "img-dim-absurd", "img-dim-zero", "img-dim-other-model",
        "missing-keys", "bool-as-text", "unknown-type"])
def test_a_damaged_job_dir_is_one_clear_line_and_keeps_the_earlier_file(
        job_dirs, tmp_path, capsys, damage, message):
    """Each damage: exit 2 with one `error:` line naming the file and what is wrong (no
    traceback, no allocation sized by the damaged spec), the earlier good .tflite and its
    sidecar untouched."""
    out = tmp_path / "age.tflite"
    good = job_dirs["clf_gender"]
    assert _cli([f"--job_dir={good}", f"--output={out}", "--check_images=2"], capsys)[0] == 0
    before = out.read_bytes(), out.with_name("age.tflite.json").read_bytes()
    job = _damaged(good, tmp_path, damage)
    code, res = _cli([f"--model={job}", f"--output={out}", "--check_images=2"], capsys)
    assert code == 2
    lines = res.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.err
    assert re.search(message, lines[0]), lines[0]
    assert "File not found" not in lines[0]  # Keras' words for a file that is there
    assert (out.read_bytes(), out.with_name("age.tflite.json").read_bytes()) == before


def test_an_absurd_img_dim_is_refused_within_a_memory_limit(job_dirs, tmp_path):
    """`img_dim` 100000 in the spec once made the check images a 149 GiB array: in a process
    limited to 4 GiB of address space the export now ends with the one-line refusal."""
    job = _damaged(job_dirs["clf_gender"], tmp_path, _edit_spec(img_dim=100000))
    code = (
        "import resource, sys\n"
        "resource.setrlimit(resource.RLIMIT_DATA, (4 << 30, 4 << 30))\n"
        "from export import export_litert\n"
        f"sys.exit(export_litert.main(['--model={job}', '--output={tmp_path}/a.tflite']))\n")
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, timeout=300,
                            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"})
    assert result.returncode == 2, result.stderr[-2000:]
    assert "img_dim must be 16..1024 pixels, got 100000" in result.stderr
    assert "Traceback" not in result.stderr and "MemoryError" not in result.stderr
