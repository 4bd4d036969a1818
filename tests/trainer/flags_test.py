"""trainer.flags: Keras fit's progress is --keras_progress; the old --verbose still sets it."""
from trainer import flags as trainer_flags


def test_keras_progress_and_its_old_spelling(capsys):
    assert trainer_flags.parse([]).keras_progress is None  # task picks 1 or 2 by terminal
    assert trainer_flags.parse(["--keras_progress=0"]).keras_progress == 0
    assert capsys.readouterr().err == ""
    assert trainer_flags.parse(["--verbose=2"]).keras_progress == 2
    assert capsys.readouterr().err == (
        "warning: --verbose is deprecated, use --keras_progress (the same value)\n")


def test_the_resolved_flags_replay_the_run(tmp_path):
    """flags.txt holds every trainer flag's value: parsed back, it gives the same
    configuration, flags left at their defaults and flags given through a flagfile included."""
    recipe = tmp_path / "recipe.flags"
    recipe.write_text("--img_dim=96\n--old_print_severity=0.25,1.0\n--predict_gender\n")
    given = trainer_flags.parse([f"--flagfile={recipe}", "--job_dir=/jobs/a",
                                 "--records_dir=/records", "--seed=7", "--nocalibrate"])
    resolved = tmp_path / "flags.txt"
    resolved.write_text(trainer_flags.resolved_flags(given))
    text = resolved.read_text()
    assert "--img_dim=96\n" in text and "--seed=7\n" in text and "--nocalibrate\n" in text
    assert "flagfile" not in text.replace("--flagfile=<this file>", "")
    replayed = trainer_flags.parse([f"--flagfile={resolved}"])
    names = trainer_flags.define_flags(trainer_flags.flags.FlagValues())
    differ = {n: (given[n].value, replayed[n].value) for n in names
              if given[n].value != replayed[n].value}
    assert differ == {}
    # A value changed after the fact is a different configuration (the check can fail).
    other = trainer_flags.parse([f"--flagfile={resolved}", "--img_dim=64"])
    assert other.img_dim == 64 != replayed.img_dim


def test_the_test_split_is_evaluated_only_when_named():
    """--eval_split: validation unless the test split is asked for by name; nothing else."""
    import pytest
    from absl import flags

    assert trainer_flags.parse([]).eval_split == "validation"
    assert trainer_flags.parse(["--eval_split=test"]).eval_split == "test"
    with pytest.raises(flags.IllegalFlagValueError, match="validation|test"):
        trainer_flags.parse(["--eval_split=train"])


def test_the_consistency_term_is_off_by_default_and_changes_nothing():
    """--consistency_weight defaults to 0: the augmentation config is exactly the one built
    without the flag (no old-print pairs in the input) and compiling installs no step of its
    own (Keras's train step, as before the flag); given, the config asks for the pairs."""
    import keras

    from agegender import model_spec
    from trainer import input_pipeline, task

    default = trainer_flags.parse([])
    assert default.consistency_weight == 0.0
    assert trainer_flags.augment_config(default) == input_pipeline.AugmentConfig()
    with_prints = trainer_flags.parse(["--old_print_probability=0.25"])
    assert not trainer_flags.augment_config(with_prints).old_print_pairs
    assert trainer_flags.augment_config(trainer_flags.parse(
        ["--old_print_probability=0.25", "--consistency_weight=0.1"])).old_print_pairs
    spec = model_spec.ModelSpec(img_dim=32)
    inputs = keras.Input((32, 32, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    for cfg, installed in ((with_prints, False), (trainer_flags.parse(
            ["--old_print_probability=0.25", "--consistency_weight=0.1"]), True)):
        model = keras.Model(inputs, {"age_distribution": keras.layers.Dense(101)(pooled)})
        task.compile_model(model, spec, cfg, 1e-3)
        assert ("train_step" in vars(model)) is installed
        assert ("reset_metrics" in vars(model)) is installed
