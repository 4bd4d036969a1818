"""How a trained model is called: the one forward pass every prediction path uses.

The export's signatures, the trainer's eval.json and predict mode, and the evaluation's
runners (the LiteRT one too: the .tflite file holds one plain pass, and its metadata's
`postprocessing` tells an app to do the same) get a model's raw outputs here, so a
test-time setting in the spec applies everywhere:

- `ModelSpec.test_time_flip`: the outputs (softmax distributions) are averaged over the
  face and its mirror image. A face's age and gender do not depend on its side, and the
  average of two views is a little more accurate, for twice the model's compute.
"""


def raw_outputs(model, pixels, spec):
    """{output name: float32 tensor} of the Keras model for pixels [N, S, S, 3] in 0..255."""
    import tensorflow as tf

    outputs = model(pixels, training=False)
    if not spec.test_time_flip:
        return {k: tf.cast(v, tf.float32) for k, v in outputs.items()}
    mirrored = model(tf.reverse(pixels, axis=[2]), training=False)
    return {k: (tf.cast(v, tf.float32) + tf.cast(mirrored[k], tf.float32)) / 2.0
            for k, v in outputs.items()}
