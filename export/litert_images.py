"""The images a LiteRT export calibrates int8 on (the train split) and checks the converted
file on (the validation split, never test; synthetic images when there are no records), as
model input: each through `agegender.preprocessing.model_input`, the evaluation's function.
"""
import itertools

import numpy as np
import tensorflow as tf

from agegender import preprocessing, records, schema
from export.errors import ExportError
from export.warmup import synthetic_jpeg


def records_pixels(records_dir, split, spec, count):
    """The first `count` images of one records split as model input, float32 [n, S, S, 3].

    The one place the LiteRT export reads records: `agegender.records` in its deterministic
    order, each image through `preprocessing.model_input` (what the evaluation and serving
    use).
    """
    pixels = tf.function(lambda data: preprocessing.model_input(data, spec.img_dim))
    try:
        images = [pixels(tf.constant(e[schema.IMAGE_ENCODED])).numpy() for e in
                  itertools.islice(records.iter_examples(records_dir, split), count)]
    except (records.RecordsNotFoundError, records.RecordsCorruptError) as e:
        raise ExportError(str(e)) from None
    except tf.errors.InvalidArgumentError as e:
        first = (e.message or type(e).__name__).strip().splitlines()[0]
        raise ExportError(f"cannot read the {split!r} records of {records_dir!r} ({first}); "
                          f"rebuild them with `python -m pipeline.build_records`") from None
    if not images:
        raise ExportError(f"the {split!r} split of {records_dir!r} holds no image")
    return np.stack(images).astype(np.float32)


def synthetic_pixels(spec, count):
    """Model input from deterministic synthetic images, when no records are given."""
    return np.stack([preprocessing.model_input(synthetic_jpeg(size=spec.img_dim + 17, seed=i),
                                               spec.img_dim).numpy() for i in range(count)])
