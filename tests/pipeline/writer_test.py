"""Shard planning and the report (pure parts of the writer)."""
from agegender.image_sources import Skip
from pipeline import writer

MB = 1024 * 1024


def test_shard_count_from_data_size():
    assert writer.num_shards(15000, 125 * MB, target_shard_bytes=32 * MB, min_shards=4) == 4
    assert writer.num_shards(10 ** 6, 8000 * MB, 32 * MB, 4) == 250
    assert writer.num_shards(3, 3000, 32 * MB, 4) == 3  # never more shards than images
    assert writer.num_shards(0, 0, 32 * MB, 4) == 1  # an empty split: one empty shard


def test_shard_markers_cover_every_planned_shard():
    keys = [k for k, _ in writer.shard_markers(("train", 3))]
    assert keys == [("train", 0, 3), ("train", 1, 3), ("train", 2, 3)]


def test_age_decades():
    assert [writer.age_decade(a) for a in (0, 9, 10, 99, 100, 116)] == [
        "0-9", "0-9", "10-19", "90-99", "100+", "100+"]


def test_report_counts_and_order():
    stats = {"age_decade": {"20-29": 2}, "gender": {"male": 1, "female": 1}, "race": {"White": 2}}
    shards = [
        {"split": "test", "shard": 0, "num_shards": 1, "examples": 2, "bytes": 10, "stats": stats},
        {"split": "train", "shard": 1, "num_shards": 2, "examples": 2, "bytes": 10, "stats": stats},
        {"split": "train", "shard": 0, "num_shards": 2, "examples": 2, "bytes": 10, "stats": stats},
    ]
    skips = [Skip("b", "duplicate", "x"), Skip("a", "bad_name", "y")]
    report = writer.make_report(metadata={"m": 1}, num_inputs=8, shards=shards, skips=skips)
    assert list(report["splits"]) == ["train", "test"]
    assert report["splits"]["train"]["shard_lengths"] == [2, 2]
    assert report["counts"]["inputs"] == 8 == report["counts"]["written"] + report["counts"]["skipped"]
    assert report["counts"]["gender"] == {"female": 3, "male": 3}
    assert report["counts"]["skipped_by_reason"] == {"bad_name": 1, "duplicate": 1}
    assert [s["source_id"] for s in report["skipped"]] == ["a", "b"]


def test_finalize_fails_loudly_when_an_input_is_unaccounted_for(tmp_path):
    import json

    import pytest

    shard = {"split": "train", "shard": 0, "num_shards": 1, "examples": 2, "bytes": 10,
             "stats": {"age_decade": {}, "gender": {}, "race": {}}}
    with pytest.raises(RuntimeError, match="1 input"):
        writer.finalize(None, [shard], [Skip("a", "bad_name", "x")], 4,
                        output_dir=str(tmp_path), metadata={})
    report = json.load(open(tmp_path / "report.json"))
    assert report["counts"]["unaccounted"] == 1
    assert not (tmp_path / "dataset_info.json").exists()
