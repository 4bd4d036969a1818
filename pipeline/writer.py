"""The output directory: shard planning, shard files, TFDS metadata and `report.json`.

Layout (agegender.schema): `{dataset}-{split}.tfrecord-{i:05d}-of-{n:05d}` shards, TFDS's
`dataset_info.json` / `features.json` (written with `tfds.folder_dataset.write_metadata`, so
`tfds.builder_from_directory(output_dir)` reads every split with typed features), and
`report.json` (options, counts, every skipped input with its reason).

Why shards are written here and not with `beam.io.WriteToTFRecord`: Beam's file sinks
guarantee neither which shard an element lands in nor its order inside the file, so two runs
would give different bytes. Here the shard is a hash of the image's pixels, each shard's
records are sorted (see transforms.DedupShard), and one DoFn call writes one whole shard to a
temporary name and renames it into place: a retried bundle rewrites the same bytes.
"""
import collections
import json
import math
import posixpath
import re
import uuid

import apache_beam as beam

from agegender import console, decades, schema
from pipeline.worker_progress import ProgressDoFn

NAMESPACE = "build_records"
TMP_DIR = ".tmp-build_records"
DEFAULT_TARGET_SHARD_MB = 32
DEFAULT_MIN_SHARDS = 4

# TFDS's default template; it spells the same names as schema.shard_prefix.
FILENAME_TEMPLATE = "{DATASET}-{SPLIT}.{FILEFORMAT}-{SHARD_X_OF_Y}"


# Files of a records directory besides the shards (TFDS's write_metadata writes three), in
# the order `publish` moves them where it cannot switch directories: what readers check
# (dataset_info.json for TFDS, report.json for the trainer) last.
METADATA_FILES = ("features.json", "metadata.json", "dataset_info.json", schema.REPORT_FILE)
_SHARD_NAME = re.compile(re.escape(schema.DATASET_NAME) + r"-[\w.-]+" + re.escape(schema.SHARD_SUFFIX)
                         + r"-\d{5}-of-\d{5}")


def owns(name):
    """Whether a file name in a records directory is one this job writes (see publish)."""
    return name in METADATA_FILES or name == TMP_DIR or bool(_SHARD_NAME.fullmatch(name))


def shard_path(output_dir, split, shard, num_shards):
    return f"{schema.shard_prefix(output_dir, split)}-{shard:05d}-of-{num_shards:05d}"


def num_shards(count, nbytes, target_shard_bytes, min_shards):
    """How many shards a split of `count` images and `nbytes` bytes of records is written to.

    About `target_shard_bytes` per shard, at least `min_shards` (so a parallel interleave has
    several files to read) but never more shards than images, and one (empty) shard for an
    empty split so every split exists in the output.
    """
    wanted = max(min_shards, math.ceil(nbytes / target_shard_bytes))
    return max(1, min(wanted, count))


def shard_markers(split_shards):
    """`(split, num_shards)` -> one `((split, shard, num_shards), None)` per shard, so even an
    empty shard gets a file."""
    split, n = split_shards
    for shard in range(n):
        yield (split, shard, n), None


age_decade = decades.name_of_age  # report.json's counts per decade


def _gender_name(gender):
    return schema.GENDERS[gender] if 0 <= gender < len(schema.GENDERS) else "unknown"


def _race_name(race):
    return schema.RACES[race] if 0 <= race < len(schema.RACES) else "unknown"


class WriteShard(ProgressDoFn):
    """`((split, shard, num_shards), sorted faces)` -> one shard file, and a dict describing it."""

    def __init__(self, output_dir, progress_seconds=console.PROGRESS_SECONDS):
        super().__init__("records job", "records written", progress_seconds)
        self._output_dir = str(output_dir).rstrip("/")

    def process(self, element):
        import tensorflow as tf

        (split, shard, num_shards), faces = element
        final = shard_path(self._output_dir, split, shard, num_shards)
        tmp_dir = f"{self._output_dir}/{TMP_DIR}"
        tf.io.gfile.makedirs(tmp_dir)
        # A unique temporary name: two attempts at the same shard never write one file.
        tmp = f"{tmp_dir}/{posixpath.basename(final)}.{uuid.uuid4().hex}"
        stats = {"age_decade": collections.Counter(), "gender": collections.Counter(),
                 "race": collections.Counter()}
        with tf.io.TFRecordWriter(tmp) as out:
            for face in faces:
                out.write(face.example)
                stats["age_decade"][age_decade(face.age)] += 1
                stats["gender"][_gender_name(face.gender)] += 1
                stats["race"][_race_name(face.race)] += 1
        tf.io.gfile.rename(tmp, final, overwrite=True)
        beam.metrics.Metrics.counter(NAMESPACE, "written").inc(len(faces))
        self._progress.add(len(faces))
        yield {"split": split, "shard": shard, "num_shards": num_shards,
               "examples": len(faces), "bytes": tf.io.gfile.stat(final).length,
               "stats": {k: dict(v) for k, v in stats.items()}}


def count_skip(skip):
    """One Beam counter per skip reason (visible in the runner's UI/metrics, where it has
    them: the DaskRunner has none; report.json has the counts on every runner)."""
    beam.metrics.Metrics.counter(NAMESPACE, f"skipped_{skip.reason}").inc()
    return skip


def _merge_counts(dicts):
    total = collections.Counter()
    for d in dicts:
        total.update(d)
    return dict(sorted(total.items()))


def make_report(*, metadata, num_inputs, shards, skips):
    """The report dict (pure: no I/O, deterministic for the same inputs)."""
    splits = {}
    for split in sorted({s["split"] for s in shards}, key=_split_order):
        mine = sorted((s for s in shards if s["split"] == split), key=lambda s: s["shard"])
        splits[split] = {
            "examples": sum(s["examples"] for s in mine),
            "shards": len(mine),
            "bytes": sum(s["bytes"] for s in mine),
            "shard_lengths": [s["examples"] for s in mine],
            **{k: _merge_counts(s["stats"][k] for s in mine)
               for k in ("age_decade", "gender", "race")},
        }
    written = sum(v["examples"] for v in splits.values())
    skips = sorted(skips, key=lambda s: (s.source_id, s.reason, s.detail))
    return {
        "metadata": metadata,
        "counts": {
            "inputs": num_inputs,
            "written": written,
            "skipped": len(skips),
            "skipped_by_reason": dict(sorted(collections.Counter(s.reason for s in skips).items())),
            **{k: _merge_counts(v[k] for v in splits.values())
               for k in ("age_decade", "gender", "race")},
        },
        "splits": splits,
        "skipped": [s._asdict() for s in skips],
    }


def _split_order(split):
    return schema.SPLITS.index(split) if split in schema.SPLITS else len(schema.SPLITS)


def write_tfds_metadata(output_dir, report):
    """TFDS's dataset_info.json/features.json for shards TFDS did not write itself."""
    import tensorflow_datasets as tfds

    template = tfds.core.ShardedFileTemplate(
        data_dir=output_dir, template=FILENAME_TEMPLATE, dataset_name=schema.DATASET_NAME,
        filetype_suffix=schema.SHARD_SUFFIX.lstrip("."))
    split_infos = [
        tfds.core.SplitInfo(name=split, shard_lengths=info["shard_lengths"],
                            num_bytes=info["bytes"], filename_template=template.replace(split=split))
        for split, info in report["splits"].items()]
    # The counts are known exactly from the writers, so compute_split_info (which re-reads
    # every shard) is not needed; check_data is done by the tests instead of on every run.
    tfds.folder_dataset.write_metadata(
        data_dir=output_dir, features=schema.tfds_features(), split_infos=split_infos,
        filename_template=template, check_data=False,
        description="Faces with age, gender and race labels, written by pipeline.build_records.",
        metadata=tfds.core.MetadataDict(report["metadata"]))


def _remove_stale_shards(output_dir, report):
    """Shards of an earlier run into the same directory (other shard counts) would be read too."""
    import tensorflow as tf

    current = {shard_path(output_dir, split, i, info["shards"])
               for split, info in report["splits"].items() for i in range(info["shards"])}
    for split in schema.SPLITS:
        for path in tf.io.gfile.glob(schema.shard_pattern(output_dir, split)):
            if path not in current:
                tf.io.gfile.remove(path)
    tmp_dir = f"{output_dir}/{TMP_DIR}"
    if tf.io.gfile.exists(tmp_dir):
        tf.io.gfile.rmtree(tmp_dir)


def finalize(_, shards, skips, num_inputs, *, output_dir, metadata):
    """After every shard is written: report.json and the TFDS metadata. Returns the report.

    Checks the invariant inputs = written + skipped first, and fails the job when it breaks.
    """
    output_dir = str(output_dir).rstrip("/")
    report = make_report(metadata=metadata, num_inputs=num_inputs, shards=shards, skips=skips)
    counts = report["counts"]
    lost = counts["inputs"] - counts["written"] - counts["skipped"]
    if lost:
        # Every DoFn either emits or skips each element, so this is a runner fault. Fail
        # loudly and leave no TFDS metadata: a silently incomplete dataset is the worst case.
        counts["unaccounted"] = lost
        _write_report(output_dir, report)
        raise RuntimeError(
            f"{lost} input(s) neither written nor skipped (inputs {counts['inputs']}, written "
            f"{counts['written']}, skipped {counts['skipped']}); see {output_dir}/{schema.REPORT_FILE}")
    _remove_stale_shards(output_dir, report)
    write_tfds_metadata(output_dir, report)
    _write_report(output_dir, report)
    return report


def _write_report(output_dir, report):
    import tensorflow as tf

    with tf.io.gfile.GFile(f"{output_dir}/{schema.REPORT_FILE}", "w") as f:
        f.write(json.dumps(report, indent=1, sort_keys=False) + "\n")
