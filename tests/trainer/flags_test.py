"""trainer.flags: Keras fit's progress is --keras_progress; the old --verbose still sets it."""
from trainer import flags as trainer_flags


def test_keras_progress_and_its_old_spelling(capsys):
    assert trainer_flags.parse([]).keras_progress is None  # task picks 1 or 2 by terminal
    assert trainer_flags.parse(["--keras_progress=0"]).keras_progress == 0
    assert capsys.readouterr().err == ""
    assert trainer_flags.parse(["--verbose=2"]).keras_progress == 2
    assert capsys.readouterr().err == (
        "warning: --verbose is deprecated, use --keras_progress (the same value)\n")
