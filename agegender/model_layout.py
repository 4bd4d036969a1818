"""TF Serving's model directory layout, the contract between export, serving and evaluation.

    <base_path>/<version>/saved_model.pb, variables/, assets.extra/tf_serving_warmup_requests
                                                      assets.extra/face_alignment.json

`version` is a positive integer directory name. The exporter writes versions (and must
never overwrite one), the local server serves the newest one that holds a SavedModel, and
`trainer.evaluate` resolves a base path to that same newest version: all three read the
directory through these functions, on any filesystem TensorFlow knows (local, gs://...).
"""
import posixpath
import re

import tensorflow as tf

SAVED_MODEL_FILE = "saved_model.pb"
WARMUP_DIR = "assets.extra"
WARMUP_FILE = "tf_serving_warmup_requests"
WARMUP_PATH = posixpath.join(WARMUP_DIR, WARMUP_FILE)
# How predict_photo finds and aligns faces (template points and sha256, detector settings),
# beside the graph that bakes them in as constants (TF Serving ignores the file).
FACE_ALIGNMENT_PATH = posixpath.join(WARMUP_DIR, "face_alignment.json")

_VERSION = re.compile(r"\d+")


def join(*parts):
    """os.path.join for local paths and URLs alike (gs://bucket/models/age/3)."""
    return posixpath.join(*parts)


def is_saved_model_dir(path):
    return tf.io.gfile.exists(join(path, SAVED_MODEL_FILE))


def serving_meta_graph(path):
    """The MetaGraphDef tagged "serve" (else the first) of the SavedModel in version
    directory `path`, parsed from its saved_model.pb (the public proto; nothing is loaded):
    its `signature_def` map is what a server answers GetModelMetadata with. Raises
    `tf.errors.NotFoundError` for a missing file, `google.protobuf.message.DecodeError`
    for one that is no SavedModel, ValueError for one without a graph."""
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with tf.io.gfile.GFile(join(path, SAVED_MODEL_FILE), "rb") as f:
        proto.ParseFromString(f.read())
    if not proto.meta_graphs:
        raise ValueError(f"{join(path, SAVED_MODEL_FILE)} holds no graph")
    return next((m for m in proto.meta_graphs if "serve" in m.meta_info_def.tags),
                proto.meta_graphs[0])


def versions(base_path, servable_only=True):
    """Sorted version numbers under `base_path` ([] if it does not exist).

    servable_only: only versions holding a saved_model.pb (what a server can load);
    False counts every numeric directory, which is what an exporter must never overwrite.
    Hidden temporary directories (`.tmp-*`, the exporter's) are never versions.
    """
    try:
        names = tf.io.gfile.listdir(base_path)
    except tf.errors.OpError:  # missing, not a directory, unreadable: no versions (yet)
        return []
    found = []
    for name in names:
        name = name.rstrip("/")
        if not _VERSION.fullmatch(name):
            continue
        path = join(base_path, name)
        if servable_only:
            if is_saved_model_dir(path):
                found.append(int(name))
        elif tf.io.gfile.isdir(path):
            found.append(int(name))
    return sorted(found)


def newest_version(base_path):
    """The newest servable version number under `base_path`, or None."""
    found = versions(base_path)
    return found[-1] if found else None


def version_dir(base_path, version):
    return join(base_path, str(version))
