"""Several files replaced together: all written, or every target left as it was."""
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
