"""The records reader: shards, counts, metadata and records, with clear errors."""
import json

import numpy as np
import pytest
import tensorflow as tf

from agegender import records, schema


@pytest.fixture(scope="module")
def records_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    jpeg = tf.io.encode_jpeg(tf.zeros([8, 8, 3], tf.uint8)).numpy()
    for shard in range(2):
        path = f"{schema.shard_prefix(root, 'test')}-{shard:05d}-of-00002"
        with tf.io.TFRecordWriter(path) as w:
            for i in range(3):
                w.write(schema.make_example(
                    encoded_jpeg=jpeg, height=8, width=8, source_id=f"{shard}-{i}.jpg",
                    sha256="0" * 64, age=10 * shard + i, histogram=np.eye(101)[i],
                    gender=i % 2).SerializeToString())
    (root / schema.REPORT_FILE).write_text(json.dumps({
        "metadata": {schema.META_IMAGE_SIZE: 8}, "splits": {"test": {"examples": 6}}}))
    return root


def test_reads_shards_counts_metadata_and_records(records_dir):
    assert len(records.split_files(records_dir, "test")) == 2
    assert records.has_split(records_dir, "test") and not records.has_split(records_dir, "train")
    assert records.count(records_dir, "test") == 6
    assert records.metadata(records_dir) == {schema.META_IMAGE_SIZE: 8}
    assert records.expected_count(records_dir, "test") == 6
    assert records.expected_count(records_dir, "train") is None
    got = list(records.iter_examples(records_dir, "test"))
    assert [e[schema.IMAGE_SOURCE_ID].decode() for e in got] == [
        "0-0.jpg", "0-1.jpg", "0-2.jpg", "1-0.jpg", "1-1.jpg", "1-2.jpg"]
    assert [int(e[schema.AGE]) for e in got] == [0, 1, 2, 10, 11, 12]
    batch = next(iter(records.examples(records_dir, "test", batch_size=4)))
    assert batch[schema.AGE].shape == (4,)


def test_clear_errors(records_dir, tmp_path):
    with pytest.raises(records.RecordsNotFoundError, match="no 'train' records in"):
        records.split_files(records_dir, "train")
    with pytest.raises(records.RecordsNotFoundError, match="report.json not found"):
        records.metadata(tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    shard = f"{schema.shard_prefix(bad, 'test')}-00000-of-00001"
    with open(shard, "wb") as f:
        f.write(np.random.default_rng(0).bytes(2000))
    with pytest.raises(records.RecordsCorruptError, match="00000-of-00001 is not a valid"):
        records.count(bad, "test")
    with pytest.raises(records.RecordsCorruptError, match="00000-of-00001 is not a valid"):
        list(records.iter_examples(bad, "test"))
