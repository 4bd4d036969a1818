"""What the multi-worker workaround needs from Keras, pinned so that an upgrade breaking it
fails here, by name, instead of in a multi-worker `fit` (trainer.distribution)."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from trainer import distribution

WHY = ("trainer/distribution.py: work_around_keras_multi_worker relies on it "
       "(tensorflow/tensorflow#72388, keras-team/keras#20585); see docs/training.md")


def _tiny_model():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(1)(inputs))
    model.compile(optimizer="sgd", loss="mse", metrics=["mae"])
    return model


def _data():
    x = np.arange(12, dtype="float32").reshape(4, 3)
    return tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(2)


def test_keras_has_the_private_methods_the_workaround_calls():
    missing = distribution.missing_keras_private_api()
    assert not missing, (f"Keras {keras.__version__} has no keras.Model."
                         f"{', keras.Model.'.join(missing)}; {WHY}")


def test_symbolic_build_builds_the_compiled_state_from_a_batch():
    model = _tiny_model()
    batch = next(iter(_data()))
    try:
        model._symbolic_build(data_batch=batch)
    except TypeError as e:  # the keyword was renamed or removed
        pytest.fail(f"Keras {keras.__version__}: keras.Model._symbolic_build(data_batch=...) "
                    f"fails ({e}); {WHY}")
    unbuilt = [name for name, obj in (("compiled metrics", model._compile_metrics),
                                      ("compiled loss", model._compile_loss))
               if not obj.built]
    assert not unbuilt, (f"Keras {keras.__version__}: keras.Model._symbolic_build(data_batch=...) "
                         f"no longer builds the {', '.join(unbuilt)}; {WHY}")


def test_fit_and_evaluate_go_through_what_the_workaround_replaces():
    """The workaround replaces `_maybe_symbolic_build`, `train_step` and `test_step` on the
    model instance; that only works while fit/evaluate look them up there."""
    model = _tiny_model()
    calls = {"_maybe_symbolic_build": 0, "train_step": 0, "test_step": 0}
    real_build = model._maybe_symbolic_build
    cls = type(model)

    def build(*args, **kwargs):
        calls["_maybe_symbolic_build"] += 1
        return real_build(*args, **kwargs)

    def step(name):
        def wrapped(data):
            calls[name] += 1
            logs = getattr(cls, name)(model, data)
            assert isinstance(logs, dict), (
                f"Keras {keras.__version__}: Model.{name} returns {type(logs).__name__}, not a "
                f"dict of logs; {WHY}")
            return {k: tf.reshape(v, [1]) for k, v in logs.items()}  # what the workaround does
        return wrapped

    model._maybe_symbolic_build = build
    model.train_step = step("train_step")
    model.test_step = step("test_step")
    history = model.fit(_data(), epochs=1, verbose=0)
    model.evaluate(_data(), verbose=0)
    for name, count in calls.items():
        assert count > 0, (f"Keras {keras.__version__}: fit/evaluate no longer call the model "
                           f"instance's {name}, so replacing it does nothing; {WHY}")
    # The logs' leading axis of 1 (for strategy.reduce(..., axis=0)) still gives scalars.
    assert set(history.history) == {"loss", "mae"}
    assert all(np.ndim(v[0]) == 0 for v in history.history.values())


def test_the_workaround_refuses_a_keras_without_them(monkeypatch):
    monkeypatch.setattr(keras.Model, "_maybe_symbolic_build", None)  # as if removed
    assert distribution.missing_keras_private_api() == ["_maybe_symbolic_build"]
    strategy = tf.distribute.MultiWorkerMirroredStrategy.__new__(
        tf.distribute.MultiWorkerMirroredStrategy)  # the type check only; no cluster needed
    with pytest.raises(RuntimeError, match=rf"Keras {keras.__version__} has no "
                                           r"keras.Model._maybe_symbolic_build"):
        distribution.work_around_keras_multi_worker(_tiny_model(), strategy, _data())
