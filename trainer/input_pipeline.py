"""tf.data input from the records: decoder, parser and reader, in the style of TF Model Garden.

- `Decoder` turns a batch of serialized records into feature tensors with one vectorized
  `tf.io.parse_example` call (parsing record by record costs one op dispatch per record).
- `Parser` owns what a model sees: `parse_fn(is_training)` decodes one image (training keeps
  uint8 so the cache and shuffle buffers are 4x smaller), `augment_batch` applies the
  training augmentation to a whole batch at once, and `targets_fn` builds the label dicts
  and sample weights. Evaluation pixels come from `agegender.preprocessing.model_input`,
  the function the export serves with, so there is no train/serve skew.
- `InputReader` owns the files: shuffled file order, parallel interleave, optional cache,
  shuffle, batching and prefetch, AUTOTUNE throughout; non-deterministic order for
  training (faster: no waiting for a slow element), deterministic for evaluation.
"""
import math

import numpy as np
import tensorflow as tf

from agegender import age_histogram, model_spec, preprocessing, schema

AUTOTUNE = tf.data.AUTOTUNE
PARSE_BATCH = 256  # records per vectorized parse_example call


class RecordsNotFoundError(FileNotFoundError):
    pass


def split_files(records_dir, split):
    """The shard files of one split, sorted; a clear error when there are none."""
    pattern = schema.shard_pattern(records_dir, split)
    files = sorted(tf.io.gfile.glob(pattern))
    if not files:
        raise RecordsNotFoundError(
            f"no {split!r} records in {records_dir!r} (looked for {pattern}): build them "
            f"with `python -m pipeline.build_records --output_dir={records_dir}`")
    return files


def count_records(records_dir, split):
    """Number of records in a split (reads the shards once, no parsing)."""
    ds = tf.data.TFRecordDataset(split_files(records_dir, split), num_parallel_reads=AUTOTUNE)
    return int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())


class Decoder:
    """Serialized records (a batch) -> dict of feature tensors ([N] or [N, bins])."""

    def decode(self, serialized):
        return schema.parse_examples(serialized)


def _range_matrix():
    """[NUM_AGE_BINS, NUM_AGE_RANGES] 0/1 matrix summing one-year bins into 5-year ranges."""
    ranges = model_spec.age_to_range(np.arange(schema.NUM_AGE_BINS))
    return np.eye(model_spec.NUM_AGE_RANGES, dtype=np.float32)[ranges]


class Parser:
    """Decoded features -> model inputs and targets (see the module docstring)."""

    def __init__(self, spec, records_age_deviation=None, augment=True, blur_probability=0.2,
                 max_shift=0.08, zoom=(0.92, 1.1), max_rotation_degrees=8.0,
                 brightness=20.0, contrast=(0.8, 1.2), seed=None):
        self.spec = spec
        # Relabel in-graph only when the wanted deviation differs from the records'.
        self.relabel = (records_age_deviation is None
                        or abs(float(records_age_deviation) - float(spec.age_deviation)) > 1e-9)
        self.augment = augment
        self.blur_probability = blur_probability
        self.max_shift = max_shift
        self.zoom = zoom
        self.max_rotation = math.radians(max_rotation_degrees)
        self.brightness = brightness
        self.contrast = contrast
        self.seed = seed

    # -- per image ---------------------------------------------------------------------
    def parse_fn(self, is_training):
        img_dim = self.spec.img_dim

        def parse(features):
            image = preprocessing.model_input(features[schema.IMAGE_ENCODED], img_dim)
            if is_training:
                # uint8 halves nothing in quality (resize output rounded) but quarters the
                # memory of the cache and the shuffle buffer.
                image = preprocessing.to_uint8(image)
            out = {k: features[k] for k in (schema.AGE, schema.AGE_HISTOGRAM, schema.GENDER,
                                            schema.RACE)}
            out["image"] = image
            return out
        return parse

    # -- per batch ---------------------------------------------------------------------
    def augment_batch(self, batch):
        """Flip, shift/zoom/rotate, brightness/contrast and blur, per image, batched ops.

        Faces in the records are aligned and centred: the geometric jitter is small so the
        model learns to tolerate the detector's imprecision rather than new framings.
        """
        images = tf.cast(batch["image"], tf.float32)
        n = tf.shape(images)[0]
        size = tf.cast(tf.shape(images)[1], tf.float32)

        # Horizontal flip: a face's age and gender do not depend on its side.
        flip = tf.random.uniform([n]) < 0.5
        images = tf.where(flip[:, None, None, None], tf.reverse(images, axis=[2]), images)

        # One projective transform per image (output pixel -> input pixel).
        z = tf.random.uniform([n], *self.zoom)
        theta = tf.random.uniform([n], -self.max_rotation, self.max_rotation)
        tx = tf.random.uniform([n], -self.max_shift, self.max_shift) * size
        ty = tf.random.uniform([n], -self.max_shift, self.max_shift) * size
        c = (size - 1.0) / 2.0
        a0, a1 = tf.cos(theta) / z, tf.sin(theta) / z
        b0, b1 = -tf.sin(theta) / z, tf.cos(theta) / z
        a2 = c - (a0 + a1) * c - tx
        b2 = c - (b0 + b1) * c - ty
        zeros = tf.zeros([n])
        transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
        images = tf.raw_ops.ImageProjectiveTransformV3(
            images=images, transforms=transforms, output_shape=tf.shape(images)[1:3],
            fill_value=0.0, interpolation="BILINEAR", fill_mode="REFLECT")

        # Brightness and contrast: photos of faces come from every camera and light.
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        factor = tf.random.uniform([n, 1, 1, 1], *self.contrast)
        delta = tf.random.uniform([n, 1, 1, 1], -self.brightness, self.brightness)
        images = (images - mean) * factor + mean + delta

        # Gaussian blur on a share of the images (the original's low-resolution jitter).
        if self.blur_probability > 0:
            sigma = tf.random.uniform([], 0.5, 1.5)
            x = tf.range(-2.0, 3.0)
            k = tf.exp(-0.5 * tf.square(x / sigma))
            k = k / tf.reduce_sum(k)
            kh = tf.tile(tf.reshape(k, [1, 5, 1, 1]), [1, 1, 3, 1])
            kv = tf.tile(tf.reshape(k, [5, 1, 1, 1]), [1, 1, 3, 1])
            blurred = tf.nn.depthwise_conv2d(images, kh, [1, 1, 1, 1], "SAME")
            blurred = tf.nn.depthwise_conv2d(blurred, kv, [1, 1, 1, 1], "SAME")
            blur = tf.random.uniform([n]) < self.blur_probability
            images = tf.where(blur[:, None, None, None], blurred, images)

        batch = dict(batch)
        batch["image"] = tf.clip_by_value(images, 0.0, 255.0)
        return batch

    def targets_fn(self, batch):
        """Batch dict -> (images, y, sample_weight), dicts keyed by the model's outputs."""
        spec = self.spec
        images = tf.cast(batch["image"], tf.float32)
        age = batch[schema.AGE]
        if self.relabel:
            hist = age_histogram.age_histograms_tf(age, spec.age_deviation)
        else:
            hist = batch[schema.AGE_HISTOGRAM]
        n = tf.shape(age)[0]
        ones = tf.ones([n], tf.float32)
        y, sw = {}, {}
        if spec.range_mode:
            y[model_spec.AGE_RANGE] = tf.matmul(hist, tf.constant(_range_matrix()))
        elif spec.type == "classification":
            y[model_spec.AGE_DISTRIBUTION] = hist
        else:
            y[model_spec.AGE_REGRESSION] = tf.reshape(
                tf.cast(age, tf.float32) / model_spec.REGRESSION_SCALE, [-1, 1])
        sw[spec.age_output] = ones
        if spec.predict_gender:
            gender = batch[schema.GENDER]
            # Unknown gender (-1): any valid class index, with weight 0 (no gradient, and
            # left out of the weighted gender accuracy).
            y[model_spec.GENDER] = tf.maximum(gender, 0)
            sw[model_spec.GENDER] = tf.cast(gender >= 0, tf.float32)
        return images, y, sw


class InputReader:
    """Files -> batches of (images, y, sample_weight) or, for evaluation, raw features."""

    def __init__(self, records_dir, split, parser, batch_size, cache="",
                 shuffle_buffer=4096, seed=None, num_workers=1):
        self.files = split_files(records_dir, split)
        self.parser = parser
        self.decoder = Decoder()
        self.batch_size = batch_size
        self.cache = cache
        self.shuffle_buffer = shuffle_buffer
        self.seed = seed
        self.num_workers = num_workers

    def _records(self, is_training):
        files = tf.data.Dataset.from_tensor_slices(self.files)
        if is_training:
            files = files.shuffle(len(self.files), seed=self.seed,
                                  reshuffle_each_iteration=True)
        return files.interleave(
            lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20),
            cycle_length=min(len(self.files), 16), block_length=16,
            num_parallel_calls=AUTOTUNE, deterministic=not is_training)

    def decoded(self, is_training):
        """Per-image dicts (image + labels), decoded, before caching and batching."""
        ds = self._records(is_training)
        if is_training and not self.cache:
            # Shuffle the serialized records: ~10 KB each, 20x smaller than decoded images.
            ds = ds.shuffle(self.shuffle_buffer, seed=self.seed, reshuffle_each_iteration=True)
        ds = ds.batch(PARSE_BATCH).map(self.decoder.decode, num_parallel_calls=AUTOTUNE)
        ds = ds.unbatch()
        ds = ds.map(self.parser.parse_fn(is_training), num_parallel_calls=AUTOTUNE,
                    deterministic=not is_training)
        return ds

    def dataset(self, is_training, targets=True):
        ds = self.decoded(is_training)
        if self.cache:
            ds = ds.cache("" if self.cache == "memory" else
                          f"{self.cache}-{'train' if is_training else 'eval'}")
            if is_training:
                ds = ds.shuffle(self.shuffle_buffer, seed=self.seed,
                                reshuffle_each_iteration=True)
        # Fixed batch shapes in training (XLA, TPU, and no tiny last batch in BatchNorm).
        ds = ds.batch(self.batch_size, drop_remainder=is_training,
                      num_parallel_calls=AUTOTUNE, deterministic=not is_training)
        if is_training and self.parser.augment:
            ds = ds.map(self.parser.augment_batch, num_parallel_calls=AUTOTUNE,
                        deterministic=False)
        if targets:
            ds = ds.map(self.parser.targets_fn, num_parallel_calls=AUTOTUNE,
                        deterministic=not is_training)
        options = tf.data.Options()
        options.deterministic = not is_training
        options.experimental_optimization.map_parallelization = True
        # Multi-worker: each worker reads its own files when there are enough of them,
        # otherwise every worker reads all records and keeps its share of them.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.FILE if len(self.files) >= self.num_workers
            else tf.data.experimental.AutoShardPolicy.DATA)
        return ds.with_options(options).prefetch(AUTOTUNE)
