"""Hardware set-up: the tf.distribute strategy and the Keras dtype policy.

Both are chosen once, before any model is built. `auto` picks what the machine has:
a TPU strategy only when asked for, MultiWorkerMirroredStrategy when TF_CONFIG names more
than one worker, MirroredStrategy on several GPUs, one device otherwise; mixed_float16 on
GPUs whose compute capability is at least 7.0 (tensor cores), float32 elsewhere.
"""
import json
import os

from absl import logging
import keras
import tensorflow as tf


def tf_config():
    """The parsed TF_CONFIG environment variable ({} when unset)."""
    return json.loads(os.environ.get("TF_CONFIG", "") or "{}")


def num_workers():
    cluster = tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def task_info():
    """(task type, task index) of this process; ('worker', 0) when not in a cluster."""
    task = tf_config().get("task", {})
    return task.get("type", "worker"), int(task.get("index", 0))


def is_chief():
    """Whether this process writes the job's outputs (the chief, or worker 0 without one)."""
    task_type, task_id = task_info()
    has_chief = bool(tf_config().get("cluster", {}).get("chief"))
    return task_type == "chief" or (not has_chief and task_type == "worker" and task_id == 0)


def make_strategy(name="auto", tpu=None):
    """Returns a tf.distribute.Strategy for `--distribution`.

    MultiWorkerMirroredStrategy is created before anything initialises the TF runtime
    (listing devices does), as collective ops must be configured at start-up.
    """
    if name == "auto" and num_workers() > 1:
        name = "multi_worker"
    if name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    else:
        gpus = tf.config.list_logical_devices("GPU")
        if name == "auto":
            name = "mirrored" if len(gpus) > 1 else "one_device"
        if name == "mirrored":
            strategy = tf.distribute.MirroredStrategy()
        elif name == "one_device":
            strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
        else:
            raise ValueError(f"unknown distribution {name!r}")
    logging.info("Distribution: %s with %d replica(s)", type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    return strategy


# What work_around_keras_multi_worker uses of Keras's private API (Keras 3.15's
# Trainer / TensorFlowTrainer): a model method building metrics, loss and optimizer state
# from a data batch, and the one fit/evaluate call before the first step (replaced here
# by a no-op). It also relies on fit/evaluate calling the instance's train_step/test_step.
KERAS_PRIVATE_API = ("_symbolic_build", "_maybe_symbolic_build")


def missing_keras_private_api():
    """The names of KERAS_PRIVATE_API this Keras lacks (tests/trainer/distribution_test.py)."""
    return [name for name in KERAS_PRIVATE_API if not callable(getattr(keras.Model, name, None))]


def work_around_keras_multi_worker(model, strategy, train_ds):
    """Lets Keras 3 `fit` run under MultiWorkerMirroredStrategy (a compiled model).

    Two upstream incompatibilities (reported as tensorflow/tensorflow#72388, closed there
    unfixed and sent to Keras; keras-team/keras#20585 is open), both in how Keras merges
    per-worker values, neither in the training math:
    - fit builds metrics from `strategy.reduce("MEAN", <distributed batch>)`, which raises
      "Attempt to convert a value (PerReplica...)": build them from a local batch instead
      (only shapes are needed);
    - logs are merged with `strategy.reduce("MEAN", v, axis=0)`, which fails on scalars:
      give each log value a leading axis of 1, so that reduce averages the workers' values.
    No-op under any other strategy.
    """
    if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        return
    missing = missing_keras_private_api()
    if missing:
        raise RuntimeError(
            f"Keras {keras.__version__} has no keras.Model.{', '.join(missing)}, which the "
            "multi-worker workaround (tensorflow/tensorflow#72388, keras-team/keras#20585) "
            "uses: check whether this Keras runs fit under MultiWorkerMirroredStrategy "
            "without it, or pin keras<3.16")
    batch = next(iter(train_ds.take(1)))
    with strategy.scope():
        model._symbolic_build(data_batch=batch)
    model._maybe_symbolic_build = lambda *args, **kwargs: None

    def with_axis(step):
        def wrapped(data):
            return {k: tf.reshape(v, [1]) for k, v in step(data).items()}
        return wrapped

    cls = type(model)
    model.train_step = with_axis(lambda data: cls.train_step(model, data))
    model.test_step = with_axis(lambda data: cls.test_step(model, data))


def _gpu_compute_capabilities():
    out = []
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        out.append(tuple(details.get("compute_capability", (0, 0))))
    return out


def resolve_precision(name="auto", strategy=None, gpu_capabilities=None):
    """The dtype policy name for `--mixed_precision` (auto: see the module docstring)."""
    if name != "auto":
        return name
    if strategy is not None and isinstance(strategy, tf.distribute.TPUStrategy):
        return "mixed_bfloat16"
    caps = _gpu_compute_capabilities() if gpu_capabilities is None else gpu_capabilities
    if caps and all(cap >= (7, 0) for cap in caps):
        return "mixed_float16"
    return "float32"


def set_precision(name):
    """Sets the global Keras dtype policy; returns its name."""
    keras.mixed_precision.set_global_policy(name)
    logging.info("Dtype policy: %s", name)
    return name
