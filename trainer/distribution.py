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
    """Returns a tf.distribute.Strategy for `--distribution`."""
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        if num_workers() > 1:
            name = "multi_worker"
        elif len(gpus) > 1:
            name = "mirrored"
        else:
            name = "one_device"
    if name == "tpu":
        resolver = tf.distribute.cluster_resolver.TPUClusterResolver(tpu=tpu or "")
        tf.config.experimental_connect_to_cluster(resolver)
        tf.tpu.experimental.initialize_tpu_system(resolver)
        strategy = tf.distribute.TPUStrategy(resolver)
    elif name == "multi_worker":
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    elif name == "mirrored":
        strategy = tf.distribute.MirroredStrategy()
    elif name == "one_device":
        strategy = tf.distribute.OneDeviceStrategy("/gpu:0" if gpus else "/cpu:0")
    else:
        raise ValueError(f"unknown distribution {name!r}")
    logging.info("Distribution: %s with %d replica(s)", type(strategy).__name__,
                 strategy.num_replicas_in_sync)
    return strategy


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
