"""The Apache Beam job that turns face images into sharded, leak-free TFRecords.

- `build_records`: the command line and `build_pipeline(p, ...)`, the whole job as one graph.
- `sources`: what an `--input` names (directory, glob, .tar/.tar.gz/.tgz/.zip) and reading it.
- `transforms`: per-image work (label, decode, hash, resize, encode) and the split/dedup rules.
- `writer`: shard planning, deterministic shard files, TFDS metadata and `report.json`.
"""
