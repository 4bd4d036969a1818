"""Training losses for the heads of `trainer.model`.

The age distribution (and the age ranges) use the squared Earth Mover's Distance of the
original project: for ordered classes the EMD between two distributions is the distance
between their CDFs, so a prediction one year off costs less than one forty years off,
which cross-entropy cannot tell apart.
"""
import keras
import tensorflow as tf

from agegender import model_spec


@keras.saving.register_keras_serializable(package="agegender")
def squared_emd(y_true, y_pred):
    """Mean over bins of the squared difference of the CDFs: [N, K] x [N, K] -> [N]."""
    y_true = tf.cast(y_true, tf.float32)
    y_pred = tf.cast(y_pred, tf.float32)
    cdf_true = tf.cumsum(y_true, axis=-1)
    cdf_pred = tf.cumsum(y_pred, axis=-1)
    return tf.reduce_mean(tf.square(cdf_true - cdf_pred), axis=-1)


def losses_for(spec, gender_loss_weight=1.0):
    """(loss dict, loss weights dict) keyed by the model's output names."""
    losses, weights = {}, {}
    if spec.range_mode or spec.type == "classification":
        losses[spec.age_output] = squared_emd
    else:
        # L1 on the scaled age: robust to UTKFace's noisy labels, and it is the metric.
        losses[spec.age_output] = keras.losses.MeanAbsoluteError(name="scaled_age_l1")
    weights[spec.age_output] = 1.0
    if spec.predict_gender:
        losses[model_spec.GENDER] = keras.losses.SparseCategoricalCrossentropy()
        weights[model_spec.GENDER] = gender_loss_weight
    return losses, weights
