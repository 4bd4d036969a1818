"""Calibration after training: the temperatures that make the model's spread honest.

Fitted on the validation split, never the test split, and stored in the model's spec
(`ModelSpec.age_temperature`, `gender_temperature`), which the export and every predict
path apply through `agegender.heads`:

- age: the temperature whose 50% and 80% central intervals cover the true age of the
  validation faces closest to 50% and 80% (a grid search: the coverage is what users read);
- gender: the temperature with the lowest negative log-likelihood of the known genders.

The point estimates (`age`, the predicted gender) do not change.

Before them, `prior_corrected` sets the age prior correction (`agegender.age_prior`,
`--age_prior_correction`), which does move the age: it needs no fit, only the train split's
counts, and the temperature is then fitted on the corrected distribution.
"""
import dataclasses

import numpy as np
import tensorflow as tf

from agegender import age_prior, heads, schema

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


def prior_corrected(spec, decade_counts, power):
    """A copy of `spec` answering with the age prior correction of `power` (0: none), from
    the train split's {decade name: faces}. Raises ValueError for a regression head."""
    if not power:
        return dataclasses.replace(spec, age_prior_correction=0.0, age_prior_weights=None)
    head = heads.age_head(spec)
    if isinstance(head, heads.RegressionHead):
        raise ValueError("--age_prior_correction needs a head that predicts a distribution "
                         "(classification or range), not regression")
    weights = age_prior.class_weights(head.class_ages(), decade_counts, power)
    return dataclasses.replace(spec, age_prior_correction=float(power),
                               age_prior_weights=weights)


def calibrate(spec, outputs, labels):
    """A copy of `spec` with fitted temperatures, and what the fit found (for the logs).
    The age temperature is fitted on the distribution the answers read: after the spec's
    prior correction, if any."""
    head = heads.age_head(spec)
    age_output = np.asarray(heads.prior_corrected_outputs(outputs, spec)[head.output])
    age_t, coverage = fit_age_temperature(head, age_output, labels[schema.AGE])
    gender_t = 1.0
    gender = heads.gender_head(spec)
    if gender is not None:
        gender_t = fit_gender_temperature(outputs[gender.output], labels[schema.GENDER])
    fitted = dataclasses.replace(spec, age_temperature=age_t, gender_temperature=gender_t)
    return fitted, {"age_temperature": age_t, "validation_coverage": coverage,
                    "gender_temperature": gender_t}
