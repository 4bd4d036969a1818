"""Files replaced atomically: several together (all written, or every target left as it
was), or one JSON document. Through `tf.io.gfile`, so a target may be local or on a bucket.
The one owner of atomic writes of the LiteRT export (`export.litert_file`,
`export.export_litert_faces`) and of the trainer's resume state (`trainer.checkpoints`)."""
import json
import os
import uuid

import tensorflow as tf


def write_atomically(pairs):
    """Each (path, bytes) of `pairs` through a temp file; the renames happen only after every
    temp file is written, in the given order (a failure while writing them leaves every
    target as it was)."""
    temps = []
    try:
        for path, data in pairs:
            tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            temps.append(tmp)
            with tf.io.gfile.GFile(tmp, "wb") as f:
                f.write(data)
        for (path, _), tmp in zip(pairs, temps):
            tf.io.gfile.rename(tmp, path, overwrite=True)
    finally:
        for tmp in temps:
            if tf.io.gfile.exists(tmp):
                tf.io.gfile.remove(tmp)


def write_json_atomically(path, obj):
    """`obj` as indented, key-sorted JSON at `path`: a reader sees the old or the new
    document, never half of one."""
    write_atomically([(path, json.dumps(obj, indent=1, sort_keys=True).encode())])
