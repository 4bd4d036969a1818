"""Evaluation of an exported model on labelled faces: metrics, plots and an HTML report.

- `evaluate`: the CLI (`python -m evaluation.evaluate`; `python -m trainer.evaluate` is an
  alias), the run over the images and the report's numbers (`agegender.metrics`).
- `runners`: calling a model (the SavedModel's own `serving_default` signature).
- `report`: the plots and the self-contained `report.html`.
"""
