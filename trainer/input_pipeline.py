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


class RecordsCorruptError(ValueError):
    """A shard that is not a readable TFRecord file (bad length or CRC, truncated)."""


def count_records(records_dir, split):
    """Number of records in a split. Reads every shard once (no parsing), which also checks
    each record's CRCs, so a corrupt or truncated shard is named here instead of failing
    later as a bare DataLossError in the middle of training."""
    total = 0
    for path in split_files(records_dir, split):
        ds = tf.data.TFRecordDataset(path, buffer_size=1 << 20)
        try:
            total += int(ds.reduce(np.int64(0), lambda n, _: n + 1).numpy())
        except tf.errors.DataLossError as e:
            reason = (e.message or "").strip().splitlines()[0] if e.message else "unreadable"
            raise RecordsCorruptError(
                f"{path} is not a valid TFRecord file ({reason}); rebuild {records_dir!r} with "
                f"`python -m pipeline.build_records`") from None
    return total


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
                 crop_fraction=(0.85, 1.0), max_shift=0.05, brightness=20.0,
                 contrast=(0.8, 1.2), blur_scale=(0.35, 0.7), source_margin=1.25,
                 records_image_size=None, seed=None):
        self.spec = spec
        # Relabel in-graph only when the wanted deviation differs from the records'.
        self.relabel = (records_age_deviation is None
                        or abs(float(records_age_deviation) - float(spec.age_deviation)) > 1e-9)
        self.augment = augment
        self.blur_probability = blur_probability
        self.crop_fraction = crop_fraction
        self.max_shift = max_shift
        self.brightness = brightness
        self.contrast = contrast
        self.blur_scale = blur_scale
        # Training keeps a frame larger than the input so that random crops take real
        # pixels: the records' own size when it is between img_dim and img_dim *
        # source_margin (160 px records for 128 px input: no resize at all), else the cap.
        source_dim = int(round(spec.img_dim * source_margin))
        if records_image_size:
            source_dim = min(max(int(records_image_size), spec.img_dim), source_dim)
        self.source_dim = source_dim if augment else spec.img_dim
        self.seed = seed

    # -- per image ---------------------------------------------------------------------
    @staticmethod
    def _decode_fast(image_bytes):
        """Training decode: JPEG (what the records hold) with the fast integer IDCT, 1.4x
        faster than the accurate one; its pixels differ by a level or two, noise next to
        the augmentation. Other formats go through the shared decoder."""
        return tf.cond(
            tf.io.is_jpeg(image_bytes),
            lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_FAST"),
            lambda: preprocessing.decode_rgb(image_bytes))

    def parse_fn(self, is_training):
        img_dim = self.spec.img_dim
        source_dim = self.source_dim

        def parse(features):
            if is_training:
                # uint8 at the source size: a quarter of the memory of float32 in the cache
                # and the shuffle buffer. No resize when the records already have that size.
                image = self._decode_fast(features[schema.IMAGE_ENCODED])
                shape = tf.shape(image)
                image = tf.cond(
                    tf.logical_and(shape[0] == source_dim, shape[1] == source_dim),
                    lambda: tf.ensure_shape(image, [source_dim, source_dim, 3]),
                    lambda: preprocessing.to_uint8(
                        preprocessing.resize_square(image, source_dim)))
                if not self.augment:
                    image = tf.ensure_shape(image, [img_dim, img_dim, 3])
            else:
                # Exactly what the export serves with: no train/serve skew.
                image = preprocessing.model_input(features[schema.IMAGE_ENCODED], img_dim)
            out = {k: features[k] for k in (schema.AGE, schema.AGE_HISTOGRAM, schema.GENDER,
                                            schema.RACE)}
            out["image"] = image
            return out
        return parse

    # -- per batch ---------------------------------------------------------------------
    def augment_batch(self, batch):
        """Crop/shift with flip, brightness/contrast and blur, per image, in batched ops.

        Input: uint8 images at `source_dim`; output float32 at `img_dim` in 0..255. Every op
        works on the whole batch (a per-image op costs one dispatch per image on CPU), and
        each is chosen for its CPU cost: crop_and_resize for geometry and flip (a projective
        transform was 8x slower, a tf.where flip as slow as the crop), a down-and-up resize
        of a slice for the blur (a depthwise conv cost more than everything else together).
        """
        img_dim = self.spec.img_dim
        images = batch["image"]
        n = tf.shape(images)[0]

        # Random crop (scale and shift), resized to the input: faces in the records are
        # aligned and centred, so the jitter is small; it teaches tolerance to the face
        # detector's imprecision. The centre crop of the full frame is what eval sees.
        frac = tf.random.uniform([n], *self.crop_fraction)
        slack = 1.0 - frac
        y0 = tf.clip_by_value(slack / 2 + tf.random.uniform([n], -1, 1) * self.max_shift,
                              0.0, slack)
        x0 = tf.clip_by_value(slack / 2 + tf.random.uniform([n], -1, 1) * self.max_shift,
                              0.0, slack)
        # Horizontal flip for free: a box whose x1 > x2 samples the mirrored crop. A face's
        # age and gender do not depend on its side.
        flip = tf.random.uniform([n]) < 0.5
        left, right = tf.where(flip, x0 + frac, x0), tf.where(flip, x0, x0 + frac)
        boxes = tf.stack([y0, left, y0 + frac, right], axis=1)
        images = tf.image.crop_and_resize(images, boxes, tf.range(n), [img_dim, img_dim])

        # Brightness and contrast (photos come from every camera and light), folded into
        # one multiply-add per pixel: (x - mean) * c + mean + d = x * c + (mean (1 - c) + d).
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        factor = tf.random.uniform([n, 1, 1, 1], *self.contrast)
        delta = tf.random.uniform([n, 1, 1, 1], -self.brightness, self.brightness)
        images = images * factor + (mean * (1.0 - factor) + delta)

        # Blur a share of the images (the original's low-resolution jitter): down- and
        # up-sampling removes the same high frequencies as a small Gaussian. The batch is
        # shuffled, so blurring its first k images blurs random ones, without computing the
        # blur for the whole batch and selecting.
        if self.blur_probability > 0:
            k = tf.cast(tf.round(tf.cast(n, tf.float32) * self.blur_probability), tf.int32)
            small = tf.cast(tf.round(img_dim * tf.random.uniform([], *self.blur_scale)),
                            tf.int32)
            blurred = tf.image.resize(tf.image.resize(images[:k], [small, small],
                                                      antialias=True), [img_dim, img_dim])
            images = tf.concat([blurred, images[k:]], axis=0)

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
