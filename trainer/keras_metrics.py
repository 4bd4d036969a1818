"""Keras metrics reported during training: age MAE and CS@5 in years, gender accuracy.

Whatever the age head, the metrics compare ages in years (the head reads the true age back
from its training target and the predicted age from its output, `agegender.heads`), so runs
with different heads are comparable in TensorBoard. `eval.json` (agegender.metrics) uses
the records' exact ages instead.
"""
import keras
import tensorflow as tf

from agegender import heads, model_spec

AGE_MAE = "age_mae"
AGE_CS5 = "age_cs5"
GENDER_ACCURACY = "accuracy"


def age_abs_error(y_true, y_pred, spec):
    """|predicted - true| age in years, [N], from the age output's target and prediction."""
    head = heads.age_head(spec)
    return tf.abs(head.ages(y_pred) - head.true_age(y_true))


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


def compile_args(spec, gender_loss_weight=1.0, age_mean_loss_weight=0.0):
    """loss, loss_weights, metrics and weighted_metrics for `model.compile`, per head.

    Gender accuracy is a weighted metric: records of unknown gender carry sample weight 0.
    """
    spec_json = spec.to_json()
    age, gender = heads.age_head(spec), heads.gender_head(spec)
    args = {"loss": {age.output: age.loss(age_mean_loss_weight)},
            "loss_weights": {age.output: 1.0},
            "metrics": {age.output: [AgeError(spec_json, name=AGE_MAE),
                                     AgeError(spec_json, within=5.0, name=AGE_CS5)]},
            "weighted_metrics": {}}
    if gender is not None:
        args["loss"][gender.output] = gender.loss()
        args["loss_weights"][gender.output] = gender_loss_weight
        args["metrics"][gender.output] = []
        args["weighted_metrics"][gender.output] = [
            keras.metrics.SparseCategoricalAccuracy(name=GENDER_ACCURACY)]
    return args


def monitor_key(spec, metric=AGE_MAE, validation=True):
    """The key Keras logs `metric` of the age output under.

    Keras prefixes metric names with the output name only when the model has several
    outputs, i.e. here when it has a gender head.
    """
    prefix = f"{spec.age_output}_" if spec.predict_gender else ""
    return f"{'val_' if validation else ''}{prefix}{metric}"
