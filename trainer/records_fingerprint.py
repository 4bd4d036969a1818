"""Which records a job dir was trained on, so that a rerun on other records is refused.

A job dir keeps `records_fingerprint.json` (written when a run starts): a SHA-256 over what
the records job reports about its output, and, to explain a refusal, the image size and
the images per split. Rerunning a job dir (to resume it, or to refit the calibration and
rewrite eval.json after training) on records with another fingerprint would mix data sets
silently: 48 px records under a model trained on 160 px ones, a test split that overlaps
the first run's training faces. That is refused unless `--allow_other_records` says it is
meant; then the fingerprint of the new records replaces the old one, so the job dir always
names the records its latest outputs come from.

What the digest covers: report.json's `metadata` (image size, label deviation, split
fractions, the job's options, the face template) without the input's path, which names
where the images were and not what they are, and its `splits` (images, shards, bytes and
images per shard, per decade, per gender and per race of each split), plus features.json
when present. The same images and options give the same digest wherever the records are
(copied, moved, rebuilt byte for byte: the records job is deterministic); any other
records differ in at least one of those counts or sizes. The shards themselves are not
hashed: that would read every byte on every start, and the trainer already reads every
shard once to count it and check its CRCs.
"""
import copy
import hashlib
import json

from absl import logging
import tensorflow as tf

from agegender import job_dir as job_dir_lib
from agegender import records, schema

VERSION = 1
FEATURES_FILE = "features.json"  # TFDS's feature description, beside report.json


class OtherRecordsError(ValueError):
    """The job dir was trained on other records and no flag allows going on with these."""


def fingerprint(records_dir):
    """{'sha256', 'image_size', 'examples': {split: n}, 'records_dir', 'version'}."""
    report = records.report(records_dir)
    metadata = copy.deepcopy(report.get("metadata", {}))
    metadata.get("options", {}).pop("input", None)
    content = {"metadata": metadata, "splits": report.get("splits", {})}
    features = f"{str(records_dir).rstrip('/')}/{FEATURES_FILE}"
    if tf.io.gfile.exists(features):
        with tf.io.gfile.GFile(features, "rb") as f:
            content["features_sha256"] = hashlib.sha256(f.read()).hexdigest()
    digest = hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
    return {"version": VERSION, "sha256": digest,
            "image_size": metadata.get(schema.META_IMAGE_SIZE),
            "examples": {split: info.get("examples")
                         for split, info in content["splits"].items()
                         if isinstance(info, dict)},
            "records_dir": str(records_dir)}


def describe(print_):
    """'160 px; train 15176, validation 1897, test 1897 images; records/utk_face'."""
    examples = print_.get("examples") or {}
    counts = ", ".join(f"{split} {examples[split]}" for split in
                       sorted(examples, key=lambda s: (s not in schema.SPLITS, s in schema.SPLITS
                                                       and schema.SPLITS.index(s), s)))
    return (f"{print_.get('image_size') or '?'} px; {counts or 'no split counts'} images; "
            f"{print_.get('records_dir')}")


def stored(job_dir):
    """The fingerprint the job dir keeps, or None (none yet, or unreadable)."""
    path = job_dir_lib.path(job_dir, job_dir_lib.RECORDS_FINGERPRINT_FILE)
    if not tf.io.gfile.exists(path):
        return None
    try:
        with tf.io.gfile.GFile(path) as f:
            value = json.load(f)
    except ValueError:
        return None
    return value if isinstance(value, dict) and "sha256" in value else None


def check(job_dir, records_dir, allow_other_records=False):
    """The records' fingerprint, after checking it against the one `job_dir` keeps.

    Raises `OtherRecordsError` (one line) when they differ and `allow_other_records` is
    False. A job dir that holds outputs but no fingerprint (written before fingerprints
    existed) cannot be checked: a warning, and these records are recorded from now on.
    """
    current = fingerprint(records_dir)
    previous = stored(job_dir)
    if previous is None:
        state = job_dir_lib.path(job_dir, job_dir_lib.STATE_FILE)
        if tf.io.gfile.exists(state):
            logging.warning("%s records no fingerprint of the records it was trained on: "
                            "cannot check that %s are the same; recording them now", job_dir,
                            records_dir)
        return current
    if previous["sha256"] == current["sha256"]:
        return current
    if not allow_other_records:
        raise OtherRecordsError(
            f"{job_dir} was trained on other records ({describe(previous)}) than "
            f"{records_dir} ({describe(current)}): resuming it or refitting its calibration "
            f"and eval.json on them would mix data sets. Use another --job_dir, or pass "
            f"--allow_other_records if that is meant")
    logging.warning("--allow_other_records: %s goes on with %s (%s); it was trained on %s",
                    job_dir, records_dir, describe(current), describe(previous))
    return current


def record(job_dir, print_):
    """Writes the fingerprint into the job dir (through a temp file: never half written)."""
    path = job_dir_lib.path(job_dir, job_dir_lib.RECORDS_FINGERPRINT_FILE)
    tmp = f"{path}.tmp"
    with tf.io.gfile.GFile(tmp, "w") as f:
        f.write(json.dumps(print_, indent=1, sort_keys=True))
    tf.io.gfile.rename(tmp, path, overwrite=True)
