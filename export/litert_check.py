"""The check a converted LiteRT file must pass before it is written: its answers against the
Keras model's on the same images, with per-mode thresholds (`TOLERANCES`).

Refused: NaN or infinite outputs, ages that collapsed to (nearly) one value, ages that moved
further than the mode allows, and gender answers that agree too rarely. Accuracy itself is
the benchmark's and the evaluation's; this only proves the file answers like its model.
"""
import dataclasses

import numpy as np

from agegender import heads


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """How far a converted model may answer from the Keras model on the check images."""
    mean_age: float  # mean |age difference|, years
    max_age: float  # largest |age difference| on one image, years
    gender_agreement: float  # share of images with the same gender answer


# About twice the differences measured on two trained MobileNetV2s (docs/litert.md): float32
# differs by summation order only, float16 and dynamic-range by their rounding, int8 by its
# 8-bit activations. Wide enough for an honest quantization, far below what a collapsed or
# broken file gives (tens of years); accuracy itself is the benchmark's and evaluation's.
TOLERANCES = {
    "none": Tolerance(mean_age=0.01, max_age=0.05, gender_agreement=0.99),
    "float16": Tolerance(mean_age=0.25, max_age=2.0, gender_agreement=0.98),
    "dynamic": Tolerance(mean_age=2.0, max_age=16.0, gender_agreement=0.95),
    "int8": Tolerance(mean_age=2.0, max_age=20.0, gender_agreement=0.9),
}
# Collapse: ages whose spread over the check images shrank below this share of the Keras
# model's (counted only when the Keras ages spread at least MIN_SPREAD years).
COLLAPSE_SPREAD_RATIO = 0.5
MIN_SPREAD = 0.5


def keras_outputs(model, pixels, batch_size=32):
    """The Keras model's raw outputs as NumPy, batch by batch."""
    parts = [model(pixels[i:i + batch_size], training=False)
             for i in range(0, len(pixels), batch_size)]
    return {name: np.concatenate([np.asarray(p[name]) for p in parts]).astype(np.float32)
            for name in parts[0]}


def compare(reference, converted, spec, tolerance):
    """(figures, problems): how the converted model's answers differ from the reference's
    (raw output dicts on the same images); `problems` lists what exceeds `tolerance`."""
    problems = []
    for name, values in sorted(reference.items()):
        if not np.all(np.isfinite(values)):
            problems.append(f"the Keras model itself outputs NaN or infinite {name}")
    for name, values in sorted(converted.items()):
        if not np.all(np.isfinite(values)):
            problems.append(f"output {name} has NaN or infinite values")
    if problems:
        return {"images": int(len(next(iter(reference.values()))))}, problems
    ages_ref = heads.ages_from_outputs(reference, spec).numpy().astype(np.float64)
    ages = heads.ages_from_outputs(converted, spec).numpy().astype(np.float64)
    diff = np.abs(ages - ages_ref)
    figures = {"images": int(len(ages)),
               "mean_abs_age_difference": float(diff.mean()),
               "max_abs_age_difference": float(diff.max()),
               "age_spread": float(ages.std()), "keras_age_spread": float(ages_ref.std())}
    if figures["keras_age_spread"] >= MIN_SPREAD and (
            figures["age_spread"] < COLLAPSE_SPREAD_RATIO * figures["keras_age_spread"]):
        problems.append(f"the ages collapsed: they spread {figures['age_spread']:.3f} years "
                        f"over the check images, the Keras model's "
                        f"{figures['keras_age_spread']:.3f}")
    if figures["mean_abs_age_difference"] > tolerance.mean_age:
        problems.append(f"ages differ from the Keras model's by "
                        f"{figures['mean_abs_age_difference']:.3f} years on average "
                        f"(at most {tolerance.mean_age} allowed)")
    if figures["max_abs_age_difference"] > tolerance.max_age:
        problems.append(f"an age differs from the Keras model's by "
                        f"{figures['max_abs_age_difference']:.3f} years "
                        f"(at most {tolerance.max_age} allowed)")
    gender = heads.gender_head(spec)
    if gender is not None:
        same = np.mean(reference[gender.output].argmax(-1) == converted[gender.output].argmax(-1))
        figures["gender_agreement"] = float(same)
        if same < tolerance.gender_agreement:
            problems.append(f"the gender answer agrees with the Keras model's on {same:.1%} of "
                            f"the images (at least {tolerance.gender_agreement:.0%} required)")
    return figures, problems
