"""Alias kept for existing commands: `python -m trainer.evaluate` is `python -m
evaluation.evaluate`, with the same flags (evaluation is its own part, `evaluation/`)."""
from evaluation.evaluate import main

if __name__ == "__main__":
    main()
