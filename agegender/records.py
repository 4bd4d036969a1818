"""Reading a records directory (written by `pipeline.build_records`): the one reader.

The trainer, the evaluation, the benchmarks and the demo all find shards, counts, records
and the writer's metadata here, with the same clear errors:

- `split_files(records_dir, split)`: the shard files (`RecordsNotFoundError` if none);
- `count(records_dir, split)`: records in a split, reading every shard once, which checks
  each record's CRCs (`RecordsCorruptError` names a bad shard);
- `metadata(records_dir)`: report.json's "metadata" (age deviation, image size, options);
  `report(records_dir)`: the whole report.json (counts per split, skipped inputs);
- `examples(records_dir, split)`: parsed records as a deterministic tf.data pipeline;
  `iter_examples(records_dir, split)`: the same as Python dicts.

The layout itself (shard names, feature keys) is `agegender.schema`'s.
"""
import json

import numpy as np
import tensorflow as tf

from agegender import schema

PARSE_BATCH = 256  # records per vectorized parse_example call


class RecordsNotFoundError(FileNotFoundError):
    """No shards (or no report.json) where a records directory was expected."""


class RecordsCorruptError(ValueError):
    """A shard that is not a readable TFRecord file of `schema.FEATURE_SPEC` records."""


def has_split(records_dir, split):
    return bool(tf.io.gfile.glob(schema.shard_pattern(records_dir, split)))


def split_files(records_dir, split):
    """The shard files of one split, sorted; a clear error when there are none."""
    pattern = schema.shard_pattern(records_dir, split)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise RecordsNotFoundError(
            f"no {split!r} records in {str(records_dir)!r} (looked for {pattern}): build them "
            f"with `python -m pipeline.build_records --output_dir={records_dir}`")
    return files


def _corrupt(path, records_dir, error):
    reason = (error.message or "").strip().splitlines()[0] if error.message else "unreadable"
    return RecordsCorruptError(
        f"{path} is not a valid records shard ({reason}); rebuild {str(records_dir)!r} with "
        f"`python -m pipeline.build_records`")


def count(records_dir, split):
    """Number of records in a split. Reads every shard once (no parsing), which also checks
    each record's CRCs, so a corrupt or truncated shard is named here instead of failing
    later as a bare DataLossError in the middle of training."""
    total = 0
    for path in split_files(records_dir, split):
        ds = tf.data.TFRecordDataset(path, buffer_size=1 << 20)
        try:
            total += int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())
        except tf.errors.DataLossError as e:
            raise _corrupt(path, records_dir, e) from None
    return total


def report(records_dir):
    """The writer's report.json as a dict; a clear error when it is missing."""
    path = f"{str(records_dir).rstrip('/')}/{schema.REPORT_FILE}"
    if not tf.io.gfile.exists(path):
        raise RecordsNotFoundError(
            f"{path} not found: is {str(records_dir)!r} a records directory written by "
            f"`python -m pipeline.build_records`?")
    with tf.io.gfile.GFile(path) as f:
        return json.load(f)


def metadata(records_dir):
    """report.json's "metadata" (schema.META_* keys: age deviation, image size...)."""
    return report(records_dir).get("metadata", {})


def expected_count(records_dir, split):
    """The split's size as the writer reported it, or None (progress bars only)."""
    try:
        return report(records_dir)["splits"][split]["examples"]
    except (RecordsNotFoundError, KeyError, TypeError, ValueError):
        return None


def examples(records_dir, split, batch_size=PARSE_BATCH):
    """Batches of parsed records ({feature: tensor}), shards in order, deterministic."""
    files = split_files(records_dir, split)
    return (tf.data.TFRecordDataset(files, buffer_size=1 << 20)
            .batch(batch_size).map(schema.parse_examples))


def iter_examples(records_dir, split):
    """Parsed records of a split as dicts of NumPy values, in order. A shard that is not a
    valid records file raises `RecordsCorruptError` naming it."""
    for path in split_files(records_dir, split):
        dataset = tf.data.TFRecordDataset(path).batch(PARSE_BATCH).map(schema.parse_examples)
        try:
            for batch in dataset.as_numpy_iterator():
                for i in range(len(batch[schema.AGE])):
                    yield {k: v[i] for k, v in batch.items()}
        except (tf.errors.DataLossError, tf.errors.InvalidArgumentError) as e:
            raise _corrupt(path, records_dir, e) from None
