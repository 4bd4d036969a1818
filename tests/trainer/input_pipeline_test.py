"""The tf.data input: shapes, determinism, augmentation, caching, clear errors."""
import numpy as np
import pytest
import tensorflow as tf

from agegender import model_spec, preprocessing, schema
from trainer import input_pipeline


def _reader(records, split="train", augment=True, cache="", batch_size=8, **spec_kw):
    spec = model_spec.ModelSpec(img_dim=32, **spec_kw)
    parser = input_pipeline.Parser(spec, records_age_deviation=5.0, augment=augment)
    return input_pipeline.InputReader(records, split, parser, batch_size, cache=cache,
                                      shuffle_buffer=64, seed=3)


def test_training_batches(tiny_records):
    ds = _reader(tiny_records, predict_gender=True).dataset(is_training=True)
    images, y, sw = next(iter(ds))
    assert images.shape == (8, 32, 32, 3) and images.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(images)) and float(tf.reduce_max(images)) <= 255.0
    assert y[model_spec.AGE_DISTRIBUTION].shape == (8, 101)
    assert set(sw) == {model_spec.AGE_DISTRIBUTION, model_spec.GENDER}
    # drop_remainder: every training batch is full; 96 records -> 12 batches.
    assert sum(1 for _ in ds) == 12
    assert input_pipeline.count_records(tiny_records, "train") == 96


def test_evaluation_is_deterministic_and_uses_model_input(tiny_records):
    reader = _reader(tiny_records, split="test")
    a = [b["image"].numpy() for b in reader.dataset(is_training=False, targets=False)]
    b = [b["image"].numpy() for b in reader.dataset(is_training=False, targets=False)]
    assert sum(len(x) for x in a) == 24
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    # Same pixels as the export's preprocessing of the same record bytes.
    raw = next(iter(tf.data.TFRecordDataset(input_pipeline.split_files(tiny_records, "test"))))
    first = schema.parse_examples(raw[None])[schema.IMAGE_ENCODED][0]
    np.testing.assert_allclose(a[0][0], preprocessing.model_input(first, 32).numpy(),
                               atol=1e-4)


def test_augmentation_changes_images_but_not_labels(tiny_records):
    reader = _reader(tiny_records, augment=True)
    batch = next(iter(reader.dataset(is_training=True, targets=False).unbatch().batch(8)))
    out = reader.parser.augment_batch(batch)
    assert out["image"].shape == batch["image"].shape
    assert not np.allclose(out["image"].numpy(), tf.cast(batch["image"], tf.float32).numpy())
    np.testing.assert_array_equal(out[schema.AGE], batch[schema.AGE])
    # With everything switched off the transform is the identity.
    parser = input_pipeline.Parser(model_spec.ModelSpec(img_dim=32), blur_probability=0.0,
                                   max_shift=0.0, zoom=(1.0, 1.0), max_rotation_degrees=0.0,
                                   brightness=0.0, contrast=(1.0, 1.0))
    flipped_or_not = parser.augment_batch(batch)["image"].numpy()
    original = tf.cast(batch["image"], tf.float32).numpy()
    for got, want in zip(flipped_or_not, original):
        assert np.allclose(got, want, atol=1e-3) or np.allclose(got, want[:, ::-1], atol=1e-3)


def test_memory_cache_gives_the_same_records(tiny_records):
    reader = _reader(tiny_records, cache="memory", augment=False)
    ds = reader.dataset(is_training=True, targets=False)
    ages = [sorted(np.concatenate([b[schema.AGE].numpy() for b in ds]).tolist())
            for _ in range(2)]
    assert ages[0] == ages[1] and len(ages[0]) == 96


def test_empty_records_dir_clear_error(tmp_path):
    with pytest.raises(input_pipeline.RecordsNotFoundError,
                       match=r"no 'train' records in .*pipeline.build_records"):
        input_pipeline.split_files(tmp_path, "train")
