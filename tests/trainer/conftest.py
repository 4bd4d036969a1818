"""Shared fixtures of the trainer tests: tiny records directories and tiny-run flags.

Records are written with `agegender.schema.make_example` exactly as the Beam job lays them
out (TFDS shard names, report.json metadata): real UTKFace faces from ../shared, resized
small, when available, plus synthetic faces so the tests also run without it.
"""
import collections
import hashlib
import io
import json
import os
import pathlib

import numpy as np
import pytest

from agegender import age_histogram, metrics, names, schema

REPO = pathlib.Path(__file__).resolve().parents[2]
UTK_DIR = REPO.parent / "shared" / "data" / "utkface" / "UTKFace"
WEIGHTS_DIR = REPO.parent / "shared" / "weights"
RECORD_SIZE = 48
SPLIT_SIZES = {"train": 96, "validation": 24, "test": 24}
TRAIN_SHARDS = 2


def _jpeg(pixels):
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def _faces(count, seed):
    """(pixels uint8 [S, S, 3], age, gender, race, name) of real faces, then synthetic ones."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    out = []
    if UTK_DIR.is_dir():
        files = sorted(os.listdir(UTK_DIR))
        for name in rng.choice(files, size=min(count, len(files)), replace=False):
            try:
                labels = names.parse_name(name)
            except names.LabelError:
                continue
            img = Image.open(UTK_DIR / name).convert("RGB").resize((RECORD_SIZE, RECORD_SIZE))
            out.append((np.asarray(img), labels.age, labels.gender, labels.race, name))
    while len(out) < count:
        age = int(rng.integers(1, 90))
        pixels = rng.integers(0, 255, (RECORD_SIZE, RECORD_SIZE, 3)).astype(np.uint8)
        pixels[..., 0] = np.uint8(age * 2)  # something age-related to fit
        out.append((pixels, age, int(rng.integers(0, 2)), int(rng.integers(0, 5)),
                    f"{age}_x_synthetic_{len(out)}.jpg"))
    return out[:count]


def write_records(root, deviation=5.0, seed=0, unknown_gender_every=7):
    """Writes a tiny records directory; returns its path."""
    import tensorflow as tf

    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    faces = _faces(sum(SPLIT_SIZES.values()), seed)
    start = 0
    splits = {}
    for split, size in SPLIT_SIZES.items():
        rows = faces[start:start + size]
        start += size
        # As the records job reports them: faces per decade of each split.
        splits[split] = {"examples": size, "age_decade": dict(collections.Counter(
            metrics.decade_name(min(age // 10, 10)) for _, age, _, _, _ in rows))}
        shards = TRAIN_SHARDS if split == "train" else 1
        for s in range(shards):
            path = f"{schema.shard_prefix(root, split)}-{s:05d}-of-{shards:05d}"
            with tf.io.TFRecordWriter(path) as w:
                for i, (pixels, age, gender, race, name) in enumerate(rows[s::shards]):
                    if unknown_gender_every and i % unknown_gender_every == 3:
                        gender = schema.UNKNOWN
                    w.write(schema.make_example(
                        encoded_jpeg=_jpeg(pixels), height=RECORD_SIZE, width=RECORD_SIZE,
                        source_id=name, sha256=hashlib.sha256(pixels.tobytes()).hexdigest(),
                        age=age, histogram=age_histogram.age_histogram(age, deviation),
                        gender=gender, race=race).SerializeToString())
    (root / schema.REPORT_FILE).write_text(json.dumps({"metadata": {
        schema.META_AGE_DEVIATION: deviation, schema.META_IMAGE_SIZE: RECORD_SIZE},
        "splits": splits}))
    return root


@pytest.fixture(scope="session")
def tiny_records(tmp_path_factory):
    return write_records(tmp_path_factory.mktemp("records") / "utk_face")


def tiny_args(records_dir, job_dir, *extra):
    """Flags of a tiny, fast run: MobileNetV2 0.35 at 32 px, random weights, 2 steps."""
    return [f"--records_dir={records_dir}", f"--job_dir={job_dir}", "--weights=none",
            "--alpha=0.35", "--img_dim=32", "--batch_size=8", "--epochs=1",
            "--steps_per_epoch=2", "--eval_limit=16", "--verbose=0",
            "--shuffle_buffer=64", "--mixed_precision=float32", "--distribution=one_device",
            *extra]


@pytest.fixture(scope="session")
def tiny_run_args():
    return tiny_args


@pytest.fixture(autouse=True)
def _reset_keras():
    """Tests that train in this process leave Keras as they found it: the float32 policy
    (a mixed-precision run sets a global one) and a fresh session."""
    yield
    import keras

    keras.mixed_precision.set_global_policy("float32")
    keras.backend.clear_session()
