"""Deprecated alias: `python -m trainer.evaluate` is `python -m evaluation.evaluate`, with the
same flags (evaluation is its own part, `evaluation/`). Kept for users' scripts; it says so."""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import sys

from evaluation.evaluate import main

if __name__ == "__main__":
    print("warning: python -m trainer.evaluate is deprecated, use python -m evaluation.evaluate "
          "(the same flags)", file=sys.stderr)
    main()
