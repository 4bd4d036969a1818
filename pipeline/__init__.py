"""The Apache Beam jobs: face images -> sharded, leak-free TFRecords, and photos -> answers.

- `build_records`: the records job's command line.
- `records_graph`: `build_pipeline(p, ...)`, the records job as one graph, and `BuildOptions`.
- `shard_plan`: each split's shard count and each face's shard, as part of that graph.
- `runner_setup`: Beam options from the flags, the local DirectRunner and the DaskRunner.
- `transforms`: per-image work (label, decode, hash, resize, encode) and the dedup rule.
- `writer`: shard counts and files (deterministic), TFDS metadata and `report.json`.
- `publish`: the staging directory switched into place, under a lock.
- `portable`: the constructs every runner runs the same way.
- `annotate`: photos -> faces with age and gender (JSON lines, Parquet, crops).
"""
