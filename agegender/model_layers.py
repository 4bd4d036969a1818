"""The custom Keras layers a trained model may hold, registered for `load_model`.

Owned here, not by the trainer, because everything that loads a `model.keras` (export,
predict mode, evaluation) must have them registered: `agegender.job_dir.load` imports this
module. Registered names (`agegender>BackbonePreprocess`) are what saved files refer to.
"""
import keras


@keras.saving.register_keras_serializable(package="agegender")
class BackbonePreprocess(keras.layers.Layer):
    """Pixels in 0..255 -> the backbone's expected input.

    mode 'tf': x / 127.5 - 1 (MobileNet); 'caffe': RGB->BGR minus the ImageNet mean
    (ResNet50); 'none': unchanged (backbones that normalise inside, e.g. EfficientNet).
    The model owns its normalisation, so export and serving need nothing backbone-specific.
    """

    MODES = ("tf", "caffe", "none")
    CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)

    def __init__(self, mode="tf", **kwargs):
        super().__init__(**kwargs)
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        self.mode = mode

    def call(self, x):
        x = keras.ops.cast(x, self.compute_dtype)
        if self.mode == "tf":
            return x / 127.5 - 1.0
        if self.mode == "caffe":
            x = x[..., ::-1]
            return x - keras.ops.convert_to_tensor(self.CAFFE_MEAN_BGR, self.compute_dtype)
        return x

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
