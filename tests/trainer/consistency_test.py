"""The old-print consistency term (--consistency_weight, trainer.consistency): its divergences,
the pairs the input pipeline hands over, the training step against Keras's own, a tiny run,
and the flags' checks. Tiny models: a small convolution with the trainer's heads, and
MobileNetV2 alpha 0.35 at 32 px (the shared ImageNet weights when present, else random)."""
import json
import os
import pathlib
import types

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl import flags as absl_flags

from agegender import heads, model_spec
from agegender import job_dir as job_dir_lib
from trainer import consistency, input_pipeline, task
from trainer import flags as trainer_flags
from trainer import model as model_lib

PAIRS = ["--old_print_probability=0.25", "--batch_size=8"]
WEIGHTS_DIR = pathlib.Path(__file__).resolve().parents[3] / "shared" / "weights"
MNV2_035 = "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5"


def _softmax(rng, n, units):
    logits = rng.normal(size=(n, units)).astype(np.float32) * 3
    return tf.nn.softmax(logits).numpy()


@pytest.mark.parametrize("kw", [dict(type="classification"), dict(range_mode=True),
                                dict(type="regression")], ids=["bins", "ranges", "regression"])
def test_divergence_is_zero_for_equal_answers_and_positive_otherwise(kw):
    spec = model_spec.ModelSpec(predict_gender=True, **kw)
    rng = np.random.default_rng(0)
    age = heads.age_head(spec)
    if age.units == 1:
        ref, other = rng.uniform(0, 1, (5, 1)), rng.uniform(0, 1, (5, 1))
    else:
        ref, other = _softmax(rng, 5, age.units), _softmax(rng, 5, age.units)
    ref, other = ref.astype(np.float32), other.astype(np.float32)
    gender_ref, gender_other = _softmax(rng, 5, 2), _softmax(rng, 5, 2)
    same = consistency.pair_divergences(spec, {age.output: ref, heads.GENDER: gender_ref},
                                        {age.output: ref, heads.GENDER: gender_ref})
    apart = consistency.pair_divergences(spec, {age.output: ref, heads.GENDER: gender_ref},
                                         {age.output: other, heads.GENDER: gender_other})
    for name in (age.output, heads.GENDER):
        assert same[name].shape == (5,) == apart[name].shape
        np.testing.assert_allclose(same[name], 0.0, atol=1e-6)
        assert (apart[name].numpy() > 1e-4).all(), name


def test_the_age_divergence_knows_the_bins_are_ordered():
    """One-hot ages: 3 years apart costs less than 30 years apart (KL would see both as
    equally far)."""
    head = heads.age_head(model_spec.ModelSpec())
    eye = np.eye(head.units, dtype=np.float32)
    near = float(head.divergence(eye[[30]], eye[[33]])[0])
    far = float(head.divergence(eye[[30]], eye[[60]])[0])
    assert 0 < near < far


def _reader(records, augment):
    spec = model_spec.ModelSpec(img_dim=32)
    config = input_pipeline.InputConfig(
        str(records), batch_size=8, shuffle_buffer=64, seed=3, deterministic=True,
        augment=augment, records_age_deviation=5.0, records_image_size=48)
    return input_pipeline.InputReader(config, "train",
                                      input_pipeline.Parser.for_config(spec, config))


def test_the_pairs_are_the_old_printed_faces_before_the_print(tiny_records):
    """With pairs: the batch is exactly the batch without them, plus the last 25% of it as
    they were before the old-print composite (the batch without old prints, seeded alike)."""
    batch = next(iter(_reader(tiny_records, input_pipeline.AugmentConfig())
                      .decoded(is_training=True).batch(8)))
    seed = tf.constant([5, 6], tf.int64)
    spec = model_spec.ModelSpec(img_dim=32)

    def augmented(**kw):
        parser = input_pipeline.Parser(spec, augment=input_pipeline.AugmentConfig(**kw),
                                       records_image_size=48)
        return parser.augment_batch(batch, seed)
    plain = augmented()["image"].numpy()
    printed = augmented(old_print_probability=0.25)
    paired = augmented(old_print_probability=0.25, old_print_pairs=True)
    assert input_pipeline.OLD_PRINT_CLEAN not in printed
    np.testing.assert_array_equal(paired["image"].numpy(), printed["image"].numpy())
    clean = paired[input_pipeline.OLD_PRINT_CLEAN].numpy()
    assert clean.shape == (2, 32, 32, 3)
    np.testing.assert_array_equal(clean, plain[6:])
    # The pairs differ by the print (the check can fail).
    assert np.abs(clean - paired["image"].numpy()[6:]).mean() > 5.0


def test_the_training_stream_hands_over_the_pairs(tiny_records):
    with_pairs = _reader(tiny_records, input_pipeline.AugmentConfig(
        old_print_probability=0.25, old_print_pairs=True))
    x, y, sw = next(iter(with_pairs.dataset(is_training=True)))
    # The 8 faces, then the clean copies of the last 2, labelled as the faces they copy.
    assert x.shape == (10, 32, 32, 3) and x.dtype == tf.float32
    for t in tf.nest.flatten((y, sw)):
        assert t.shape[0] == 10
        np.testing.assert_array_equal(t[8:].numpy(), t[6:8].numpy())
    without = _reader(tiny_records, input_pipeline.AugmentConfig(old_print_probability=0.25))
    images, _, _ = next(iter(without.dataset(is_training=True)))
    assert images.shape == (8, 32, 32, 3)
    np.testing.assert_array_equal(images.numpy(), x[:8].numpy())
    assert np.abs(x[8:].numpy() - images[6:].numpy()).mean() > 5.0


def _tiny_model(spec):
    """A functional model with the trainer's heads whose answers depend on the image (the
    random-weight MobileNetV2 of the tiny runs answers every image alike), no dropout."""
    keras.utils.set_random_seed(0)
    inputs = keras.Input((32, 32, 3), name="image")
    x = keras.layers.Rescaling(1 / 64.0)(inputs)
    x = keras.layers.Conv2D(8, 3, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, {head.output: head.output_layer()(x)
                                for head in heads.for_spec(spec)})


def _batch(spec, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.uniform(0, 255, (8, 32, 32, 3)).astype(np.float32)
    ages = rng.integers(1, 90, 8)
    y = {heads.DistributionHead.output: np.eye(101, dtype=np.float32)[ages],
         heads.GENDER: rng.integers(0, 2, 8)}
    return images, y


def test_the_step_is_todays_plus_the_weighted_term():
    """The consistency step's loss is Keras's step's loss (same weights, same batch) plus
    weight x the logged terms; with clean copies equal to the batch's last faces the term
    is 0 and the updated weights are today's; with other clean copies it is positive and
    the update differs."""
    spec = model_spec.ModelSpec(img_dim=32, alpha=0.35, predict_gender=True)
    images, y = _batch(spec)
    weight = 0.5
    today = _tiny_model(spec)
    start = today.get_weights()
    task.compile_model(today, spec, trainer_flags.parse(PAIRS + ["--gender_loss_weight=2"]),
                       1e-2)
    assert "train_step" not in vars(today)  # the default installs nothing
    logs_today = today.train_on_batch(images, y, return_dict=True)
    cfg = trainer_flags.parse(PAIRS + [f"--consistency_weight={weight}",
                                       "--gender_loss_weight=2"])

    def paired_step(clean):  # a twin with the same weights and a fresh optimizer
        paired = _tiny_model(spec)
        paired.set_weights(start)
        task.compile_model(paired, spec, cfg, 1e-2)
        assert "train_step" in vars(paired)
        logs = paired.train_on_batch(np.concatenate([images, clean]),
                                     {k: np.concatenate([v, v[6:]]) for k, v in y.items()},
                                     return_dict=True)
        return logs, paired.get_weights()

    logs, after = paired_step(images[6:])
    assert set(logs) >= {"loss", consistency.METRIC, consistency.GENDER_METRIC}
    assert abs(logs[consistency.METRIC]) < 1e-6 and abs(logs[consistency.GENDER_METRIC]) < 1e-5
    np.testing.assert_allclose(logs["loss"], logs_today["loss"], rtol=1e-5)
    for a, b in zip(after, today.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for key in ("age_distribution_age_mae", "gender_accuracy"):
        assert logs[key] == pytest.approx(logs_today[key], rel=1e-5)  # one count per face

    clean = np.clip(images[6:] * 0.3 + 60.0, 0, 255)  # a faded copy: other answers
    logs, after = paired_step(clean)
    assert logs[consistency.METRIC] > 0 and logs[consistency.GENDER_METRIC] > 0
    term = logs[consistency.METRIC] + 2 * logs[consistency.GENDER_METRIC]
    np.testing.assert_allclose(logs["loss"], logs_today["loss"] + weight * term, rtol=1e-5)
    assert logs["age_distribution_age_mae"] == pytest.approx(
        logs_today["age_distribution_age_mae"], rel=1e-5)  # the metrics see the batch alone
    assert any(not np.allclose(a, b, rtol=1e-4, atol=1e-6)
               for a, b in zip(after, today.get_weights()))


def test_the_step_refuses_batches_without_pairs():
    spec = model_spec.ModelSpec(img_dim=32, alpha=0.35)
    cfg = trainer_flags.parse(PAIRS + ["--consistency_weight=1"])
    images, y = _batch(spec)
    age = {heads.DistributionHead.output: y["age_distribution"]}
    for rows in (3, 8):
        model = model_lib.build_model(spec, weights=None)
        task.compile_model(model, spec, cfg, 1e-3)
        batch = images[:rows], {k: v[:rows] for k, v in age.items()}
        if rows < 2 * 2:  # too few rows for 2 faces and their copies: refused when traced
            with pytest.raises(consistency.ConsistencyError, match="old_print_pairs"):
                model.train_on_batch(*batch)
        else:  # the last 2 rows copy no face: their labels differ from the 2 before
            with pytest.raises(tf.errors.InvalidArgumentError, match="old_print_pairs"):
                model.train_on_batch(*batch)


def test_a_tiny_run_logs_a_finite_term_and_exports_the_same_model(tiny_records, tmp_path,
                                                                    tiny_run_args):
    """Random weights answer every face alike (the term is then 0); with the shared
    ImageNet weights, when present, the answers differ and the term is positive."""
    job = tmp_path / "job"
    imagenet = (WEIGHTS_DIR / MNV2_035).is_file()
    weights = [f"--weights={WEIGHTS_DIR / MNV2_035}"] if imagenet else []
    task.run(trainer_flags.parse(tiny_run_args(
        tiny_records, job, "--predict_gender", "--old_print_probability=0.5",
        "--consistency_weight=1.0", "--fine_tune_epochs=1", "--fine_tune_at=120",
        "--seed=1", *weights)))
    history = json.loads((job / "history.json").read_text())
    assert len(history) == 2
    for epoch in history:
        assert np.isfinite(epoch[consistency.METRIC]) and epoch[consistency.METRIC] >= 0
        assert np.isfinite(epoch[consistency.GENDER_METRIC]) and np.isfinite(epoch["loss"])
        if imagenet:
            assert epoch[consistency.METRIC] > 0 and epoch[consistency.GENDER_METRIC] > 0
    assert "--consistency_weight=1.0\n" in (job / "flags.txt").read_text()
    model = keras.models.load_model(os.path.join(job, job_dir_lib.MODEL_FILE), compile=False)
    assert len(model.inputs) == 1 and type(model).__name__ == "Functional"
    out = model(np.zeros((2, 32, 32, 3), np.float32))
    assert set(out) == {heads.DistributionHead.output, heads.GENDER}


def test_the_flags():
    """Default: 0 and the augmentation exactly as without the flag; given, it needs old
    prints in every batch, augmentation, and a weight >= 0."""
    default = trainer_flags.parse([])
    assert default.consistency_weight == 0.0
    assert trainer_flags.augment_config(default) == input_pipeline.AugmentConfig()
    assert not trainer_flags.augment_config(trainer_flags.parse(PAIRS)).old_print_pairs
    given = trainer_flags.parse(PAIRS + ["--consistency_weight=0.3"])
    assert trainer_flags.augment_config(given).old_print_pairs
    for bad, match in [
            (["--consistency_weight=0.3"], "old_print_probability > 0"),
            (PAIRS + ["--consistency_weight=0.3", "--noaugment"], "--augment"),
            (["--old_print_probability=0.05", "--batch_size=8", "--consistency_weight=1"],
             "rounds to no old-printed face"),
            (PAIRS + ["--consistency_weight=-1"], "consistency_weight")]:
        with pytest.raises(absl_flags.IllegalFlagValueError, match=match):
            trainer_flags.parse(bad)
    assert trainer_flags.parse(["--old_print_probability=0.07", "--batch_size=8",
                                "--consistency_weight=1"]).consistency_weight == 1.0


def test_several_replicas_are_refused():
    consistency.check_strategy(types.SimpleNamespace(num_replicas_in_sync=1))
    with pytest.raises(consistency.ConsistencyError, match="2 replicas"):
        consistency.check_strategy(types.SimpleNamespace(num_replicas_in_sync=2))
    with pytest.raises(consistency.ConsistencyError, match="> 0"):
        consistency.install(None, model_spec.ModelSpec(), 0.0, 2)
    with pytest.raises(consistency.ConsistencyError, match="count > 0"):
        consistency.install(None, model_spec.ModelSpec(), 1.0, 0)
