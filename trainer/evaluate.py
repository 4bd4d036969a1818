"""Alias kept for existing commands: `python -m trainer.evaluate` is `python -m
evaluation.evaluate`, with the same flags (evaluation is its own part, `evaluation/`)."""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

from evaluation.evaluate import main

if __name__ == "__main__":
    main()
