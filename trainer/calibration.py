"""Calibration after training: the temperatures that make the model's spread honest.

Fitted on the validation split, never the test split, and stored in the model's spec
(`ModelSpec.age_temperature`, `gender_temperature`), which the export and every predict
path apply through `agegender.heads`:

- age: the temperature whose 50% and 80% central intervals cover the true age of the
  validation faces closest to 50% and 80% (a grid search: the coverage is what users read);
- gender: the temperature with the lowest negative log-likelihood of the known genders.

The point estimates (`age`, the predicted gender) do not change.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from agegender import heads, schema

TEMPERATURES = np.geomspace(0.1, 10.0, 81)


def age_coverage(head, output, true_age, temperature):
    """{nominal coverage: observed coverage} of the head's intervals at a temperature."""
    spread = head.spread_outputs(tf.constant(output), temperature)
    true_age = np.asarray(true_age, np.float64)
    out = {}
    for nominal in heads.INTERVALS:
        interval = spread[heads.interval_output(nominal)].numpy()
        out[nominal] = float(((interval[:, 0] <= true_age) & (true_age <= interval[:, 1])).mean())
    return out


def fit_age_temperature(head, output, true_age):
    """(temperature, coverage at it); (1.0, None) for a head without a distribution."""
    if isinstance(head, heads.RegressionHead):
        return 1.0, None
    best = None
    for t in TEMPERATURES:
        coverage = age_coverage(head, output, true_age, float(t))
        error = sum(abs(coverage[n] - n) for n in heads.INTERVALS)
        if best is None or error < best[0] - 1e-9:
            best = (error, float(t), coverage)
    return best[1], best[2]


def fit_gender_temperature(probs, true_gender):
    """The temperature minimising the NLL of the known genders (1.0 when none is known)."""
    true_gender = np.asarray(true_gender)
    known = true_gender >= 0
    if not known.any():
        return 1.0
    probs = tf.constant(np.asarray(probs)[known], tf.float32)
    idx = tf.constant(true_gender[known], tf.int32)

    def nll(t):
        p = heads.apply_temperature(probs, float(t))
        return float(-tf.reduce_mean(tf.math.log(tf.gather(p, idx, batch_dims=1) + 1e-12)))
    return float(min(TEMPERATURES, key=nll))


def calibrate(spec, outputs, labels):
    """A copy of `spec` with fitted temperatures, and what the fit found (for the logs)."""
    head = heads.age_head(spec)
    age_t, coverage = fit_age_temperature(head, outputs[head.output], labels[schema.AGE])
    gender_t = 1.0
    gender = heads.gender_head(spec)
    if gender is not None:
        gender_t = fit_gender_temperature(outputs[gender.output], labels[schema.GENDER])
    fitted = dataclasses.replace(spec, age_temperature=age_t, gender_temperature=gender_t)
    return fitted, {"age_temperature": age_t, "validation_coverage": coverage,
                    "gender_temperature": gender_t}
