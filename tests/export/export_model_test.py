"""Export: TF Serving layout, versions, signatures equal to the Keras model, warmup file."""
import functools
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import prediction_log_pb2

from agegender import heads, model_layout, preprocessing, schema
from agegender import job_dir as job_dir_lib
from agegender import model_spec as ms
from export import export_model as em
from testing import tiny_models

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
TOL = 1e-4


def _keras_reference(job_dir, images):
    model, spec = em.load_trained_model(job_dir)
    pixels = preprocessing.model_input_batch(tf.constant(images), spec.img_dim)
    raw = {k: v.numpy() for k, v in model(pixels, training=False).items()}
    return spec, pixels.numpy(), raw


def _check_outputs(out, spec, raw):
    out = {k: np.asarray(v) for k, v in out.items()}
    np.testing.assert_allclose(out["age"], heads.ages_from_outputs(raw, spec).numpy(), atol=TOL)
    if spec.range_mode:
        np.testing.assert_allclose(out["age_range"], raw[heads.RangeHead.output], atol=TOL)
        assert "age_distribution" not in out
    elif spec.type == "classification":
        np.testing.assert_allclose(out["age_distribution"], raw[heads.DistributionHead.output], atol=TOL)
        assert out["age_distribution"].shape[1] == schema.NUM_AGE_BINS
    else:
        assert "age_distribution" not in out and "age_range" not in out
    if spec.predict_gender:
        np.testing.assert_allclose(out["gender_probability"], raw[heads.GENDER], atol=TOL)
        letters = [schema.GENDER_LETTERS[i] for i in raw[heads.GENDER].argmax(-1)]
        assert [g.decode() for g in out["gender"]] == letters
    else:
        assert "gender" not in out and "gender_probability" not in out


@pytest.mark.parametrize("variant", ["clf_gender", "regression", "range_gender"])
def test_signatures_equal_keras_predictions(variant, job_dirs, exported, face_images):
    spec, pixels, raw = _keras_reference(job_dirs[variant], face_images)
    loaded = tf.saved_model.load(exported[variant])
    sigs = loaded.signatures
    assert {"serving_default", "predict_images", "serve_tf_examples"} <= set(sigs)

    n = len(face_images)
    keys = tf.constant([f"k{i}" for i in range(n)])
    out = sigs["serving_default"](image_bytes=tf.constant(face_images), key=keys)
    _check_outputs(out, spec, raw)
    assert out["key"].numpy().tolist() == keys.numpy().tolist()

    _check_outputs(sigs["predict_images"](images=tf.constant(pixels)), spec, raw)

    examples = [em_example(img).SerializeToString() for img in face_images]
    _check_outputs(sigs["serve_tf_examples"](examples=tf.constant(examples)), spec, raw)


def em_example(image):
    return schema.make_example(encoded_jpeg=image, height=1, width=1, source_id="x", sha256="0",
                               age=30, histogram=[0.0] * schema.NUM_AGE_BINS)


def test_key_is_optional_through_signature_defaults(exported, face_images):
    from tensorflow.python.saved_model import loader_impl

    sd = loader_impl.parse_saved_model(exported["clf_gender"]).meta_graphs[0].signature_def
    default = sd["serving_default"].defaults["key"]
    assert tf.make_ndarray(default).shape == (0,)
    loaded = tf.saved_model.load(exported["clf_gender"])
    out = loaded.signatures["serving_default"](image_bytes=tf.constant(face_images[:2]),
                                               key=tf.make_ndarray(default))
    assert out["key"].numpy().tolist() == [b"", b""]


def test_predict_images_resizes_other_sizes(job_dirs, exported, face_images):
    spec, _, raw = _keras_reference(job_dirs["clf_gender"], face_images[:1])
    decoded = preprocessing.decode_rgb(face_images[0]).numpy().astype(np.float32)
    out = tf.saved_model.load(exported["clf_gender"]).signatures["predict_images"](
        images=tf.constant(decoded[None]))
    _check_outputs(out, spec, raw)


def test_layout_versions_and_no_overwrite(job_dirs, tmp_path):
    # The layout is the same with or without predict_photo, whose detector tracing is
    # most of an export's cost: left out here.
    export = functools.partial(em.export_saved_model, photo_signature=False)
    base = str(tmp_path / "models" / "age")
    v1 = export(job_dirs["regression"], base)
    v2 = export(job_dirs["regression"], base)
    assert v1.endswith("/1") and v2.endswith("/2")
    for v in (v1, v2):
        assert os.path.isfile(os.path.join(v, "saved_model.pb"))
        assert os.path.isdir(os.path.join(v, "variables"))
        assert os.path.isfile(os.path.join(v, "assets.extra", "tf_serving_warmup_requests"))
    with pytest.raises(em.ExportError, match="already exists"):
        export(job_dirs["regression"], base, version=2)
    assert export(job_dirs["regression"], base, version=7).endswith("/7")
    assert model_layout.versions(base) == [1, 2, 7]
    assert sorted(os.listdir(base)) == ["1", "2", "7"]  # no temp dirs left behind
    assert em.main([f"--job_dir={job_dirs['regression']}", f"--export_base={base}",
                    "--version=1"]) == 2
    with pytest.raises(em.ExportError, match="model_spec.json"):
        em.export_saved_model(str(tmp_path / "nothing"), base)


@pytest.mark.integration
def test_in_memory_model_export_for_the_trainer(tmp_path):
    from testing import tiny_models

    spec = ms.ModelSpec(type="classification", predict_gender=False, img_dim=32)
    path = em.export_saved_model(export_base=str(tmp_path),
                                 model=tiny_models.build_tiny_model(spec), spec=spec)
    assert os.path.isfile(os.path.join(path, "saved_model.pb"))


def test_warmup_file_parses_and_replays(exported):
    path = os.path.join(exported["clf_gender"], "assets.extra", "tf_serving_warmup_requests")
    loaded = tf.saved_model.load(exported["clf_gender"])
    logs = [prediction_log_pb2.PredictionLog.FromString(r.numpy())
            for r in tf.data.TFRecordDataset(path)]
    assert 1 <= len(logs) <= 1000
    signatures = set()
    for entry in logs:
        request = entry.predict_log.request
        assert request.model_spec.name == "age"
        signatures.add(request.model_spec.signature_name)
        inputs = {k: tf.make_ndarray(v) for k, v in request.inputs.items()}
        function = loaded.signatures[request.model_spec.signature_name]
        if "key" in function.structured_input_signature[1] and "key" not in inputs:
            inputs["key"] = np.array([], dtype=object)  # the SignatureDef default
        out = function(**{k: tf.constant(v) for k, v in inputs.items()})
        n = next(iter(inputs.values())).shape[0]
        assert out["age"].shape[0] == n
    assert {"serving_default", "predict_images", "predict_photo"} <= signatures


@pytest.mark.slow
def test_cli_export_and_saved_model_cli(job_dirs, tmp_path):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    base = tmp_path / "age"
    run = subprocess.run([sys.executable, "-m", "export.export_model",
                          f"--model={job_dirs['range_gender']}", f"--output_dir={base}"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "deprecated" not in run.stderr
    assert (base / "1" / "saved_model.pb").is_file()
    again = subprocess.run([sys.executable, "-m", "export.export_model",
                            f"--job_dir={job_dirs['range_gender']}", f"--export_base={base}",
                            "--version=1"], cwd=ROOT, env=env, capture_output=True, text=True,
                           timeout=120)
    assert again.returncode == 2 and "already exists" in again.stderr
    # the old spellings still work, and say which spelling replaces them
    assert "--job_dir is deprecated, use --model" in again.stderr
    assert "--export_base is deprecated, use --output_dir" in again.stderr
    cli = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
    show = subprocess.run([cli, "show", "--dir", str(base / "1"), "--all"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert show.returncode == 0, show.stderr
    for name in ("signature_def['serving_default']", "signature_def['predict_images']",
                 "signature_def['serve_tf_examples']", "inputs['image_bytes']", "inputs['key']",
                 "outputs['age_range']", "outputs['gender']", "outputs['gender_probability']",
                 "signature_def['predict_photo']", "outputs['num_faces']", "outputs['boxes']",
                 "outputs['landmarks']", "outputs['face_scores']"):
        assert name in show.stdout


@pytest.mark.slow
def test_export_of_the_trainers_model(tmp_path, face_images):
    """With the trainer's own builder (custom preprocessing layer), when it is there."""
    trainer_model = pytest.importorskip("trainer.model")
    if not hasattr(trainer_model, "build_model"):
        pytest.skip("trainer.model.build_model not available")
    spec = ms.ModelSpec(type="classification", predict_gender=True, img_dim=64,
                        base_model="MobileNetV2", alpha=0.35)
    model = trainer_model.build_model(spec, weights=None)
    job = tmp_path / "job"
    job.mkdir()
    model.save(str(job / job_dir_lib.MODEL_FILE))
    (job / job_dir_lib.SPEC_FILE).write_text(spec.to_json())
    path = em.export_saved_model(str(job), str(tmp_path / "models"), photo_signature=False)
    _, _, raw = _keras_reference(str(job), face_images)
    out = tf.saved_model.load(path).signatures["serving_default"](
        image_bytes=tf.constant(face_images), key=tf.constant([], tf.string))
    _check_outputs(out, spec, raw)


def test_signatures_refuse_decompression_bombs(job_dirs, exported, face_images, tmp_path,
                                               png_bomb):
    """A PNG declaring 20000x20000 fails in the graph before decoding, in every byte
    signature; the limit is an export option."""
    bomb = png_bomb
    sigs = tf.saved_model.load(exported["clf_gender"]).signatures
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        sigs["serving_default"](image_bytes=tf.constant([face_images[0], bomb]),
                                key=tf.constant(["a", "b"]))
    example = schema.make_example(encoded_jpeg=bomb, height=1, width=1, source_id="bomb",
                                  sha256="0", age=1, histogram=[0.0] * schema.NUM_AGE_BINS)
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        sigs["serve_tf_examples"](examples=tf.constant([example.SerializeToString()]))
    with pytest.raises(tf.errors.InvalidArgumentError, match="image too large"):
        sigs["predict_photo"](image_bytes=tf.constant([face_images[0], bomb]),
                              key=tf.constant([], tf.string))
    # A lower limit set at export refuses a normal image too.
    small = em.export_saved_model(job_dirs["clf_gender"], str(tmp_path / "small"),
                                  max_image_pixels=10, photo_signature=False)
    with pytest.raises(tf.errors.InvalidArgumentError, match="limit of 10 pixels"):
        tf.saved_model.load(small).signatures["serving_default"](
            image_bytes=tf.constant(face_images[:1]), key=tf.constant(["a"]))


def test_stale_temp_dirs_of_killed_exports_are_removed(job_dirs, tmp_path):
    """An export killed mid-way leaves .tmp-<version>-<host>-<pid>-* behind; the next export
    removes it when that pid is gone, and never touches a live export's dir."""
    import socket

    base = tmp_path / "models"
    base.mkdir()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    host = socket.gethostname()
    stale = base / f".tmp-1-{host}-{dead}-abc123"
    live = base / f".tmp-1-{host}-{os.getpid()}-def456"
    other_host = base / f".tmp-1-elsewhere-{dead}-ghi789"
    for d in (stale, live, other_host):
        (d / "variables").mkdir(parents=True)
    path = em.export_saved_model(job_dirs["clf_gender"], str(base), photo_signature=False)
    assert path == str(base / "1")
    assert not stale.exists()
    assert live.exists() and other_host.exists()
    assert model_layout.versions(str(base)) == [1]


def test_test_time_flip_in_the_signatures(job_dirs, face_images, tmp_path):
    """--test_time_flip=true: serving_default answers the mean of the face and its mirror."""
    base = tmp_path / "flip"
    assert em.main([f"--job_dir={job_dirs['clf_gender']}", f"--export_base={base}",
                    "--test_time_flip=true", "--no_photo_signature"]) == 0
    model, spec = em.load_trained_model(job_dirs["clf_gender"])
    pixels = preprocessing.model_input_batch(tf.constant(face_images), spec.img_dim)
    both = [model(p, training=False) for p in (pixels, tf.reverse(pixels, axis=[2]))]
    want = (both[0]["age_distribution"] + both[1]["age_distribution"]) / 2
    sig = tf.saved_model.load(str(base / "1")).signatures["serving_default"]
    out = sig(image_bytes=tf.constant(face_images), key=tf.constant([""] * len(face_images)))
    np.testing.assert_allclose(out["age_distribution"], want, atol=TOL)


def _graph_ops(saved_model_dir):
    from tensorflow.python.saved_model import loader_impl

    graph = loader_impl.parse_saved_model(saved_model_dir).meta_graphs[0].graph_def
    ops = {node.op for node in graph.node}
    for function in graph.library.function:
        ops |= {node.op for node in function.node_def}
    return ops


@pytest.mark.parametrize("variant", sorted(tiny_models.VARIANTS))
def test_predict_photo_outputs_per_head(variant, exported, photo_tools):
    """Dense padded outputs per face, named as serving_default's plus the photo's own; a
    photo without a face is an answer (num_faces 0), not an error."""
    from agegender import serving_contract as contract

    sigs = tf.saved_model.load(exported[variant]).signatures
    photo = photo_tools.encode(photo_tools.plain())
    out = sigs[contract.PREDICT_PHOTO](image_bytes=tf.constant([photo, photo]),
                                       key=tf.constant(["a", "b"]))
    crops = sigs[contract.SERVING_DEFAULT](image_bytes=tf.constant([photo]),
                                           key=tf.constant(["a"]))
    faces = contract.DEFAULT_MAX_FACES
    assert set(out) == set(crops) | set(contract.PHOTO_OUTPUTS)
    assert out[contract.NUM_FACES].numpy().tolist() == [0, 0]
    assert out[contract.BOXES].shape == (2, faces, 4)
    assert out[contract.LANDMARKS].shape == (2, faces, 5, 2)
    for name, value in crops.items():
        if name != contract.KEY:
            assert out[name].shape == (2, faces, *value.shape[1:]), name
            assert out[name].dtype == value.dtype, name
    assert out[contract.KEY].numpy().tolist() == [b"a", b"b"]
    # Graph: TF's own ops only (TF Serving runs no Python and loads no custom op library).
    from tensorflow.python.framework import op_def_registry

    ops = _graph_ops(exported[variant])
    assert {"ImageProjectiveTransformV3", "CropAndResize", "DecodeImage"} <= ops
    assert not {op for op in ops if op_def_registry.get(op) is None}
    assert not {"PyFunc", "EagerPyFunc", "PyFuncStateless"} & ops


def test_predict_photo_answers_as_in_process(job_dirs, exported, synthetic_photos, photo_tools):
    """The SavedModel's predict_photo gives what `photo_predictor.PhotoPredictor` gives in
    process, on photos with faces (several, 40 px) and the template is recorded beside it."""
    from faces import photo_predictor
    from faces import template as template_lib

    photos = [photo_tools.encode(p.image) for p in
              synthetic_photos(1, 1, faces_per_photo=(3, 3), face_sizes=(70, 150))
              + synthetic_photos(1, 0, faces_per_photo=(1, 1), face_sizes=(40, 40),
                                 max_rotation=5)]
    model, spec = em.load_trained_model(job_dirs["clf_gender"])
    want = photo_predictor.PhotoPredictor(model, spec).predict_fn()(
        tf.constant(photos), tf.constant([], tf.string))
    sig = tf.saved_model.load(exported["clf_gender"]).signatures["predict_photo"]
    got = sig(image_bytes=tf.constant(photos), key=tf.constant([], tf.string))
    assert got["num_faces"].numpy().tolist() == [3, 1]
    for name in want:
        if want[name].dtype == tf.string:
            assert (got[name].numpy() == want[name].numpy()).all(), name
        else:
            np.testing.assert_allclose(got[name], want[name], atol=1e-3, err_msg=name)
    info = em.read_face_alignment(exported["clf_gender"])
    assert info["template_sha256"] == template_lib.fingerprint(template_lib.load().points)
    assert info["max_faces"] == 16 and info["detector"]["min_face_size"] == 20


def test_the_training_datas_template_is_baked_in_and_recorded(job_dirs, tmp_path, photo_tools,
                                                              synthetic_photos):
    """A spec whose records were aligned (face_alignment) exports that template: recorded in
    assets.extra and used by the graph (the crops differ from the shipped template's)."""
    import dataclasses

    from faces import template as template_lib

    model, spec = em.load_trained_model(job_dirs["clf_gender"])
    points = (np.asarray(template_lib.load().points, np.float64) * 0.8 + 0.1).round(5).tolist()
    aligned = dataclasses.replace(spec, face_alignment={
        "template": points, "template_sha256": template_lib.fingerprint(points)})
    path = em.export_saved_model(export_base=str(tmp_path / "aligned"), model=model,
                                 spec=aligned, max_faces=2, min_face_size=40)
    info = em.read_face_alignment(path)
    assert info["template"] == points and info["max_faces"] == 2
    assert info["template_sha256"] == template_lib.fingerprint(points)
    assert info["detector"]["min_face_size"] == 40
    photo = photo_tools.encode(synthetic_photos(1, 2, faces_per_photo=(1, 1),
                                                face_sizes=(120, 160))[0].image)
    plain = em.export_saved_model(export_base=str(tmp_path / "plain"), model=model, spec=spec,
                                  max_faces=2, min_face_size=40)
    ages = [tf.saved_model.load(p).signatures["predict_photo"](
        image_bytes=tf.constant([photo]), key=tf.constant([], tf.string))["age_distribution"]
        for p in (path, plain)]
    assert ages[0].shape == (1, 2, 101)
    assert np.abs(ages[0][0, 0] - ages[1][0, 0]).max() > 1e-4  # another crop, another answer


def test_predict_photo_answers_each_face_as_the_crop_signatures_do(job_dirs, tmp_path,
                                                                   synthetic_photos,
                                                                   photo_tools):
    """With test-time flip and calibration temperatures in the spec, each face of
    predict_photo gets what the crop signatures answer for its aligned crop: the same
    outputs (spread and intervals included), flipped and calibrated the same way."""
    import dataclasses

    from faces import photo as photo_lib

    model, spec = em.load_trained_model(job_dirs["clf_gender"])
    tuned = dataclasses.replace(spec, test_time_flip=True, age_temperature=2.5,
                                gender_temperature=0.4)
    path = em.export_saved_model(export_base=str(tmp_path / "tuned"), model=model, spec=tuned,
                                 max_faces=3)
    sigs = tf.saved_model.load(path).signatures
    photo = photo_tools.encode(synthetic_photos(1, 4, faces_per_photo=(2, 2),
                                                face_sizes=(110, 150), max_rotation=5)[0].image)
    got = sigs["predict_photo"](image_bytes=tf.constant([photo]), key=tf.constant([], tf.string))
    assert int(got["num_faces"][0]) == 2
    crops = photo_lib.PhotoFaces(spec.img_dim).faces_bytes(tf.constant(photo))[photo_lib.CROPS]
    want = sigs["predict_images"](images=crops)
    assert {"age_std", "age_interval_50", "age_interval_80"} <= set(want)
    assert set(got) == set(want) | {"num_faces", "boxes", "landmarks", "face_scores", "key"}
    for name, value in want.items():
        if value.dtype == tf.string:
            assert (got[name][0, :2].numpy() == value.numpy()).all(), name
        else:
            np.testing.assert_allclose(got[name][0, :2], value, rtol=0, atol=1e-6,
                                       err_msg=name)
    # The settings change the answers, so the comparison above covers them.
    plain = heads.serving_outputs(model(crops, training=False), spec)
    # The settings change the answers by far more than the tolerance above, so that
    # comparison covers them: the flip (the raw distribution; the tiny model is nearly
    # mirror-symmetric) and the temperatures (the spread, the gender probability).
    for name, change in (("age_distribution", 1e-5), ("age_std", 1e-3),
                         ("gender_probability", 1e-2)):
        assert np.abs(plain[name] - want[name]).max() > change, name


def test_no_photo_signature_and_bad_photo_options(job_dirs, tmp_path):
    path = em.export_saved_model(job_dirs["regression"], str(tmp_path / "a"),
                                 photo_signature=False)
    assert "predict_photo" not in tf.saved_model.load(path).signatures
    assert em.read_face_alignment(path) is None
    with pytest.raises(em.ExportError, match="min_face_size"):
        em.export_saved_model(job_dirs["regression"], str(tmp_path / "b"), min_face_size=5)


@pytest.mark.slow
def test_predict_photo_on_a_huge_photo_is_bounded(exported, synthetic_photos, tmp_path):
    """A 6000x4000 photo (24 MP, under the pixel limit) with one face: found, in a child
    process whose address space is capped at what a 640x427 photo needed plus 512 MB.
    Detection runs on a 1024-pixel downscale and each face's footprint is area-downscaled
    before alignment, so the decoded photo (72 MB) is the only full-size copy (measured: the
    huge photo adds 0.28 GB of address space, 0.11 GB resident, to the small one's peak)."""
    import json
    import textwrap

    from PIL import Image

    face = Image.open(synthetic_photos(1, 31, faces_per_photo=(1, 1))[0].sources[0])
    canvas = Image.new("RGB", (6000, 4000), (90, 120, 150))
    canvas.paste(face.convert("RGB").resize((900, 900), Image.BICUBIC), (3700, 1500))
    huge, small = tmp_path / "huge.jpg", tmp_path / "small.jpg"
    canvas.save(huge, "JPEG", quality=85)
    canvas.resize((640, 427)).save(small, "JPEG")
    script = textwrap.dedent(f"""
        import json, resource
        import tensorflow as tf
        sig = tf.saved_model.load({exported["clf_gender"]!r}).signatures["predict_photo"]
        none = tf.constant([], tf.string)
        sig(image_bytes=tf.constant([open({str(small)!r}, "rb").read()]), key=none)
        peak = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmPeak")][0]
        limit = peak * 1024 + (512 << 20)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        out = sig(image_bytes=tf.constant([open({str(huge)!r}, "rb").read()]), key=none)
        after = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmPeak")][0]
        print(json.dumps({{"num_faces": int(out["num_faces"][0]),
                          "box": out["boxes"][0, 0].numpy().tolist(),
                          "added_mb": (after - peak) // 1024}}))
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                            text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["num_faces"] == 1
    from faces import boxes as box_ops

    assert box_ops.overlap([[3700, 1500, 4600, 2400]], [out["box"]]).numpy()[0, 0] > 0.5
