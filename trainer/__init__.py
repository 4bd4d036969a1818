"""Trainer: tf.data input, Keras model, training, evaluation."""
