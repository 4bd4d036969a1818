"""Keras metrics reported during training: age MAE and CS@5 in years, gender accuracy.

Whatever the age head, the metrics compare ages in years, so runs with different heads
are comparable in TensorBoard. The true age is read back from the training target:
classification: the histogram's mode (the integer age; ages above 100 read as 100);
range mode: the midpoint of the labelled range (so MAE there is against range midpoints);
regression: the scaled target times the scale. `eval.json` (agegender.metrics) uses the
records' exact ages instead.
"""
import keras
import tensorflow as tf

from agegender import model_spec

AGE_MAE = "age_mae"
AGE_CS5 = "age_cs5"
GENDER_ACCURACY = "accuracy"


def true_age_from_target(y_true, spec):
    y_true = tf.cast(y_true, tf.float32)
    if spec.range_mode:
        idx = tf.argmax(y_true, axis=-1)
        return tf.gather(tf.constant(model_spec.range_midpoints(), tf.float32), idx)
    if spec.type == "classification":
        return tf.cast(tf.argmax(y_true, axis=-1), tf.float32)
    return tf.reshape(y_true, [-1]) * model_spec.REGRESSION_SCALE


def age_abs_error(y_true, y_pred, spec):
    """|predicted - true| age in years, [N], from the age output's target and prediction."""
    pred = model_spec.ages_from_outputs({spec.age_output: y_pred}, spec)
    return tf.abs(pred - true_age_from_target(y_true, spec))


@keras.saving.register_keras_serializable(package="agegender")
class AgeError(keras.metrics.Mean):
    """Mean absolute age error in years, or with `within` the share with |error| <= within."""

    def __init__(self, spec_json, within=None, name=AGE_MAE, dtype=None):
        super().__init__(name=name, dtype=dtype)
        self.spec_json = spec_json
        self.spec = model_spec.ModelSpec.from_json(spec_json)
        self.within = within

    def update_state(self, y_true, y_pred, sample_weight=None):
        err = age_abs_error(y_true, y_pred, self.spec)
        if self.within is not None:
            err = tf.cast(err <= self.within, tf.float32)
        return super().update_state(err, sample_weight=sample_weight)

    def get_config(self):
        return {"spec_json": self.spec_json, "within": self.within, "name": self.name,
                "dtype": self.dtype}


def metrics_for(spec):
    """(metrics, weighted_metrics) dicts keyed by output name, for `model.compile`.

    Gender accuracy is a weighted metric: records of unknown gender carry sample weight 0.
    """
    spec_json = spec.to_json()
    metrics = {spec.age_output: [AgeError(spec_json, name=AGE_MAE),
                                 AgeError(spec_json, within=5.0, name=AGE_CS5)]}
    weighted = {}
    if spec.predict_gender:
        metrics[model_spec.GENDER] = []
        weighted[model_spec.GENDER] = [
            keras.metrics.SparseCategoricalAccuracy(name=GENDER_ACCURACY)]
    return metrics, weighted


def monitor_key(spec, metric=AGE_MAE, validation=True):
    """The key Keras logs `metric` of the age output under.

    Keras prefixes metric names with the output name only when the model has several
    outputs, i.e. here when it has a gender head.
    """
    prefix = f"{spec.age_output}_" if spec.predict_gender else ""
    return f"{'val_' if validation else ''}{prefix}{metric}"
