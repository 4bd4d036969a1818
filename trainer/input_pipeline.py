"""tf.data input from the records: decoder, parser and reader, in the style of TF Model Garden.

- `Decoder` turns a batch of serialized records into feature tensors with one vectorized
  `tf.io.parse_example` call (parsing record by record costs one op dispatch per record).
- `Parser` owns what a model sees: `parse_fn(is_training)` dispatches to `parse_train`
  (uint8 at the training frame, so the cache and shuffle buffers are 4x smaller) or
  `parse_eval` (pixels from `agegender.preprocessing.model_input`, the function the export
  serves with: no train/serve skew); `augment_batch` applies the training augmentation
  (`AugmentConfig`) to a whole batch at once; `targets_fn` asks the model's heads
  (`agegender.heads`) for the targets and sample weights.
- `InputReader`, configured by one `InputConfig` (`trainer.input_config`), owns the files:
  shuffled file order, parallel interleave, optional cache, shuffle, batching and prefetch, AUTOTUNE throughout; non-deterministic order for
  training (faster: no waiting for a slow element), deterministic for evaluation.
"""
import math

import tensorflow as tf

from agegender import (age_histogram, decades, degradations, heads, old_print, preprocessing,
                       records, schema)
# The configuration objects have their own module (`trainer.input_config`);
# the reader's callers name them here too.
from trainer.input_config import AugmentConfig, InputConfig  # noqa: F401

AUTOTUNE = tf.data.AUTOTUNE
# With `AugmentConfig.old_print_pairs`: the batch key of the old-printed faces as they
# were before the print (`targets_fn` appends them to the images).
OLD_PRINT_CLEAN = "old_print_clean"
# The photo degradations `--degrade_probability` draws from, equally likely: each a
# function of images and their drawn parameters (Parser._degrade), and whether it runs on
# the whole batch before its images are taken. Why: faded and side light, elementwise,
# round a last bit differently on a batch of another size, and run on the whole batch they
# give each image exactly what the recipe's runs so far gave it; the others give the
# same bits on any subset, and the costly ones (JPEG, low resolution) run on theirs only.
_DEGRADATIONS = (
    (lambda x, p: degradations.grayscale(x), False),
    (lambda x, p: degradations.sepia(x), False),
    (lambda x, p: degradations.faded(x, p["amount"]), True),
    (lambda x, p: degradations.jpeg(x, p["quality"]), False),
    (lambda x, p: degradations.low_resolution(x, p["side"]), False),
    (lambda x, p: degradations.uneven_light(x, p["strength"], p["angle"]), True),
)
JPEG_KIND = 3  # its index above


class Decoder:
    """Serialized records (a batch) -> dict of feature tensors ([N] or [N, bins])."""

    def decode(self, serialized):
        return schema.parse_examples(serialized)


class Parser:
    """Decoded features -> model inputs and targets (see the module docstring).

    `parse_fn(is_training)` hands out `parse_train` or `parse_eval`; `augment_batch` and
    `targets_fn` work on batches.
    """

    def __init__(self, spec, records_age_deviation=None, augment=AugmentConfig(),
                 records_image_size=None, decade_weights=None):
        self.spec = spec
        self.decade_weights = decade_weights
        # Relabel in-graph only when the wanted deviation differs from the records'.
        self.relabel = (records_age_deviation is None
                        or abs(float(records_age_deviation) - float(spec.age_deviation)) > 1e-9)
        self.augment = augment
        # Training keeps a frame larger than the input so that random crops take real
        # pixels: the records' own size when it is between img_dim and img_dim *
        # source_margin (160 px records for 128 px input: no resize at all), else the cap.
        source_dim = int(round(spec.img_dim * augment.source_margin))
        if records_image_size:
            source_dim = min(max(int(records_image_size), spec.img_dim), source_dim)
        self.source_dim = source_dim if augment.enabled else spec.img_dim

    @classmethod
    def for_config(cls, spec, config):
        return cls(spec, config.records_age_deviation, config.augment,
                   config.records_image_size, config.decade_weights)

    # -- per image ---------------------------------------------------------------------
    def parse_fn(self, is_training):
        return self.parse_train if is_training else self.parse_eval

    @staticmethod
    def _labels(features):
        return {k: features[k] for k in (schema.AGE, schema.AGE_HISTOGRAM, schema.GENDER,
                                         schema.RACE)}

    @staticmethod
    def _decode_fast(image_bytes):
        """Training decode: JPEG (what the records hold) with the fast integer IDCT, faster
        than the accurate one (docs/training.md); its pixels differ by a level or two, noise
        next to the augmentation. Other formats go through the shared decoder."""
        return tf.cond(
            tf.io.is_jpeg(image_bytes),
            lambda: tf.io.decode_jpeg(image_bytes, channels=3, dct_method="INTEGER_FAST"),
            lambda: preprocessing.decode_rgb(image_bytes))

    def parse_train(self, features):
        """uint8 at the source size: a quarter of the memory of float32 in the cache and the
        shuffle buffer. No resize when the records already have that size."""
        source_dim = self.source_dim
        image = self._decode_fast(features[schema.IMAGE_ENCODED])
        shape = tf.shape(image)
        image = tf.cond(
            tf.logical_and(shape[0] == source_dim, shape[1] == source_dim),
            lambda: tf.ensure_shape(image, [source_dim, source_dim, 3]),
            lambda: preprocessing.to_uint8(preprocessing.resize_square(image, source_dim)))
        if not self.augment.enabled:
            image = tf.ensure_shape(image, [self.spec.img_dim] * 2 + [3])
        return dict(self._labels(features), image=image)

    def parse_eval(self, features):
        """Exactly what the export serves with (`preprocessing.model_input`): no skew."""
        image = preprocessing.model_input(features[schema.IMAGE_ENCODED], self.spec.img_dim)
        return dict(self._labels(features), image=image)

    # -- per batch ---------------------------------------------------------------------
    def augment_batch(self, batch, seed=None):
        """Crop/shift with flip, brightness/contrast and blur, per image, in batched ops.

        `seed`: int64 [2] for the stateless random ops, so the augmentation of a batch
        depends only on it (the reader gives each batch one from a seeded stream; parallel
        map calls cannot change which batch gets which numbers); None draws one.

        Input: uint8 images at `source_dim`; output float32 at `img_dim` in 0..255. Every op
        works on the whole batch (a per-image op costs one dispatch per image on CPU), and
        each is chosen for its CPU cost (measured alternatives in docs/training.md):
        crop_and_resize for geometry and flip, a down-and-up resize of a slice for the blur.
        """
        img_dim = self.spec.img_dim
        aug = self.augment
        images = batch["image"]
        n = tf.shape(images)[0]
        if seed is None:
            seed = tf.random.uniform([2], maxval=tf.int64.max, dtype=tf.int64)
        seeds = iter(tf.unstack(tf.random.experimental.stateless_split(seed, num=16)))

        def uniform(shape, low=0.0, high=1.0):
            return tf.random.stateless_uniform(shape, next(seeds), low, high)

        # Random crop (scale and shift), resized to the input: faces in the records are
        # aligned and centred, so the jitter is small; it teaches tolerance to the face
        # detector's imprecision. The centre crop of the full frame is what eval sees.
        frac = uniform([n], *aug.crop_fraction)
        slack = 1.0 - frac
        y0 = tf.clip_by_value(slack / 2 + uniform([n], -1, 1) * aug.max_shift, 0.0, slack)
        x0 = tf.clip_by_value(slack / 2 + uniform([n], -1, 1) * aug.max_shift, 0.0, slack)
        # Horizontal flip for free: a box whose x1 > x2 samples the mirrored crop. A face's
        # age and gender do not depend on its side.
        flip = uniform([n]) < 0.5
        left, right = tf.where(flip, x0 + frac, x0), tf.where(flip, x0, x0 + frac)
        boxes = tf.stack([y0, left, y0 + frac, right], axis=1)
        images = tf.image.crop_and_resize(images, boxes, tf.range(n), [img_dim, img_dim])

        # Brightness and contrast (photos come from every camera and light), folded into
        # one multiply-add per pixel: (x - mean) * c + mean + d = x * c + (mean (1 - c) + d).
        mean = tf.reduce_mean(images, axis=[1, 2, 3], keepdims=True)
        factor = uniform([n, 1, 1, 1], *aug.contrast)
        delta = uniform([n, 1, 1, 1], -aug.brightness, aug.brightness)
        images = images * factor + (mean * (1.0 - factor) + delta)

        # Blur a share of the images (the original's low-resolution jitter): down- and
        # up-sampling removes the same high frequencies as a small Gaussian. The batch is
        # shuffled, so blurring its first k images blurs random ones, without computing the
        # blur for the whole batch and selecting.
        if aug.blur_probability > 0:
            k = tf.cast(tf.round(tf.cast(n, tf.float32) * aug.blur_probability), tf.int32)
            small = tf.cast(tf.round(img_dim * uniform([], *aug.blur_scale)), tf.int32)
            blurred = tf.image.resize(tf.image.resize(images[:k], [small, small],
                                                      antialias=True), [img_dim, img_dim])
            images = tf.concat([blurred, images[k:]], axis=0)

        if aug.degrade_probability > 0:
            images = self._degrade(tf.clip_by_value(images, 0.0, 255.0), uniform, n)

        clean = None
        if aug.old_print_probability > 0:
            images = tf.clip_by_value(images, 0.0, 255.0)
            if aug.old_print_pairs:  # the faces the composite is about to degrade, clean
                clean = images[n - self._old_print_count(n):]
            images = self._old_print(images, seed, n)

        batch = dict(batch)
        if clean is not None:
            batch[OLD_PRINT_CLEAN] = clean
        batch["image"] = tf.clip_by_value(images, 0.0, 255.0)
        return batch

    def _degrade(self, images, uniform, n):
        """One photo degradation for a `degrade_probability` share of the images, each kind
        equally likely, each with a random strength. The images of each kind (about a
        twentieth of the batch each at the recipe's 0.3) are scattered back in one update;
        the costly kinds are computed for their images only. Computing every kind for the
        whole batch and selecting each image's with `tf.where` made this the 2-core
        training's costliest augmentation. Each image gets exactly the bits it got that
        way, so seeded runs are unchanged (tests/trainer/input_pipeline_test.py)."""
        kind = tf.cast(tf.floor(uniform([n]) * len(_DEGRADATIONS)), tf.int32)
        kind = tf.where(uniform([n]) < self.augment.degrade_probability, kind, -1)
        low, high = self.augment.low_res_scale
        scale = tf.exp(uniform([], math.log(low), math.log(high)))
        side = tf.cast(tf.round(scale * tf.cast(tf.shape(images)[1], tf.float32)), tf.int32)
        quality = tf.cast(tf.round(uniform([], 10.0, 40.0)), tf.int32)
        # Drawn for every image, in this order, whether used or not: the draws stay the same.
        amount = uniform([n], 0.3, 0.9)
        strength, angle = uniform([n], 0.2, 0.7), uniform([n], 0.0, 6.2832)
        params = {"amount": amount, "strength": strength, "angle": angle, "side": side,
                  "quality": quality}
        indices, updates = [], []
        for k, (degrade, whole_batch) in enumerate(_DEGRADATIONS):
            chosen = tf.where(kind == k)  # [m, 1]
            at = chosen[:, 0]
            indices.append(chosen)
            if whole_batch:
                updates.append(tf.gather(degrade(images, params), at))
            else:
                updates.append(degrade(tf.gather(images, at), {
                    name: (tf.gather(v, at) if v.shape.rank else v)
                    for name, v in params.items()}))
        return tf.tensor_scatter_nd_update(images, tf.concat(indices, 0), tf.concat(updates, 0))

    def _old_print(self, images, seed, n):
        """The old-print composite on the batch's last `old_print_probability` share (the
        batch is shuffled, and the blur takes its first images). Its seed is folded from
        the batch's, not drawn from the stream above, so runs without it keep their
        augmentation exactly."""
        aug = self.augment
        k = self._old_print_count(n)
        seed = tf.random.experimental.stateless_fold_in(seed, 27)
        severity_seed, print_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
        severity = tf.random.stateless_uniform([k], severity_seed, *aug.old_print_severity)
        printed = old_print.old_print(images[n - k:], severity, print_seed)
        return tf.concat([images[:n - k], printed], axis=0)

    def _old_print_count(self, n):
        """How many of a batch of `n` the old-print composite degrades (its last ones)."""
        return tf.cast(tf.round(tf.cast(n, tf.float32) * self.augment.old_print_probability),
                       tf.int32)

    def targets_fn(self, batch):
        """Batch dict -> (images, y, sample_weight), dicts keyed by the model's outputs.
        With old-print pairs (`_with_pairs`), n + k rows: the batch's n, then the clean copies
        of its last k with those faces' own targets and weights."""
        if OLD_PRINT_CLEAN in batch:
            return self._with_pairs(batch)
        spec = self.spec
        images = tf.cast(batch["image"], tf.float32)
        age = batch[schema.AGE]
        if self.relabel:
            hist = age_histogram.age_histograms_tf(age, spec.age_deviation)
        else:
            hist = batch[schema.AGE_HISTOGRAM]
        head = heads.age_head(spec)
        y = {head.output: head.target(age, hist)}
        if self.decade_weights is None:
            weight = tf.ones([tf.shape(age)[0]], tf.float32)
        else:
            decade = decades.index(age, xp=tf)
            weight = tf.gather(tf.constant(self.decade_weights, tf.float32), decade)
        sw = {head.output: weight}
        gender = heads.gender_head(spec)
        if gender is not None:
            y[gender.output], sw[gender.output] = gender.target(batch[schema.GENDER])
        return images, y, sw

    def _with_pairs(self, batch):
        """`targets_fn` of a batch with old-print pairs: the clean copies appended as rows of
        their own, labelled as the faces they copy, so every part of the element has n + k
        rows (Keras builds its metrics from one element). `trainer.consistency` splits them
        off again: they enter no supervised loss or metric."""
        batch = dict(batch)
        clean = tf.cast(batch.pop(OLD_PRINT_CLEAN), tf.float32)
        images, y, sw = self.targets_fn(batch)
        n, k = tf.shape(images)[0], tf.shape(clean)[0]
        again = lambda t: tf.concat([t, t[n - k:]], axis=0)  # noqa: E731
        return (tf.concat([images, clean], axis=0), tf.nest.map_structure(again, y),
                tf.nest.map_structure(again, sw))


class InputReader:
    """Files -> batches of (images, y, sample_weight) or, for evaluation, raw features."""

    def __init__(self, config, split, parser):
        self.config = config
        self.files = records.split_files(config.records_dir, split)
        self.parser = parser
        self.decoder = Decoder()

    def _records(self, is_training, seed=None):
        """Serialized records, interleaved from the files; training shuffles the files."""
        files = tf.data.Dataset.from_tensor_slices(self.files)
        if is_training:
            files = self._shuffle(files, len(self.files), seed)
        return files.interleave(
            lambda f: tf.data.TFRecordDataset(f, buffer_size=1 << 20),
            cycle_length=min(len(self.files), 16), block_length=16,
            num_parallel_calls=AUTOTUNE, deterministic=self._deterministic(is_training))

    def _shuffle(self, ds, buffer_size, seed=None):
        """With `seed` (one pass of the seeded stream): shuffled by that seed alone.
        Without: reshuffled by tf.data at each iteration (a new order for each pass)."""
        if seed is None:
            return ds.shuffle(buffer_size, seed=self.config.seed, reshuffle_each_iteration=True)
        return ds.shuffle(buffer_size, seed=seed, reshuffle_each_iteration=False)

    def _deterministic(self, is_training):
        """Evaluation always keeps the order; training only when asked (with a seed): not
        waiting for a slow element is faster."""
        return not is_training or self.config.deterministic

    def _stream(self, one_pass, start):
        """Endless passes over the split from its `start`-th record, before decoding (or
        after the cache): skipped records are read, not decoded or augmented.
        `one_pass(files_seed, seed)` is one pass shuffled by those seeds (None: by tf.data).

        Seeded, pass p is shuffled by seeds derived from the seed and p alone: tf.data's
        reshuffle_each_iteration also counts the dataset's iterations, and Keras `fit`
        iterates it twice (one batch to build the model, then from the start again)."""
        if not self.config.deterministic:  # nothing to reproduce: tf.data reshuffles
            return one_pass(None, None).repeat()
        key = tf.constant([self.config.seed or 0, 0], tf.int64)

        def seeded_pass(p):
            # shuffle() passes its seed through TF's get_seed, which compares (graph seed,
            # op seed) with (0, 0) in Python: under a global seed of 0 (`--seed=0`) a tensor
            # op seed makes that a symbolic bool and fails. This function's graph gets a fixed
            # non-zero seed (1, the recipe's); the pass's order comes from the op seeds.
            tf.compat.v1.get_default_graph().seed = 1
            # Two seeds drawn from (seed, p): the file order and the record order of the pass
            # both depend on the run's seed and on the pass. (stateless_fold_in alone returns
            # [f(seed), p]: its second half is the pass number, the same for every seed.)
            seeds = tf.random.stateless_uniform(
                [2], seed=tf.random.experimental.stateless_fold_in(key, p), minval=None,
                maxval=None, dtype=tf.int64)
            return one_pass(seeds[0], seeds[1])
        ds = tf.data.Dataset.counter().flat_map(seeded_pass)
        if start:
            ds = ds.skip(start)
        return ds

    def decoded(self, is_training, stream_start=None):
        """Per-image dicts (image + labels), decoded, before caching and batching.
        `stream_start` (training without a cache): endless passes from that record on."""
        if is_training and not self.config.cache:
            # Shuffle the serialized records: far smaller than decoded images.
            def one_pass(files_seed=None, seed=None):
                return self._shuffle(self._records(True, files_seed),
                                     self.config.shuffle_buffer, seed)
            ds = one_pass() if stream_start is None else self._stream(one_pass, stream_start)
        else:  # a seeded run caches one file order, however often the cache is filled
            seeded = is_training and self.config.deterministic
            ds = self._records(is_training, self.config.seed if seeded else None)
        ds = ds.batch(records.PARSE_BATCH).map(self.decoder.decode, num_parallel_calls=AUTOTUNE)
        ds = ds.unbatch()
        ds = ds.map(self.parser.parse_fn(is_training), num_parallel_calls=AUTOTUNE,
                    deterministic=self._deterministic(is_training))
        return ds

    def training_stream(self, start_batch=0):
        """The training batches as one endless stream: pass after pass over the train split,
        each pass shuffled anew, batches running on across passes, from batch
        `start_batch` on. A run resumed after epoch k starts at k * steps_per_epoch and,
        seeded, is given exactly the batches (records, order and augmentation) the
        uninterrupted run was given; so is each phase of transfer learning. Unseeded, the
        order is drawn anew at each start and nothing is skipped."""
        return self.dataset(is_training=True, stream_start=start_batch)

    def dataset(self, is_training, targets=True, stream_start=None):
        """One pass over the split (evaluation; training without `stream_start`), or the
        endless training stream from batch `stream_start` (see `training_stream`)."""
        start = None
        if is_training and stream_start is not None:
            # Skipping reproduces the uninterrupted run only when the order is seeded.
            start = stream_start if self.config.deterministic else 0
        ds = self.decoded(is_training,
                          None if start is None else start * self.config.batch_size)
        # The cache holds the training frames only. Evaluation reads its records anew each
        # time (a validation split decodes in seconds): a memory cache shared by Keras'
        # successive validation iterators was seen to hand back a truncated split (20 of 24
        # records, then the same 20 every epoch) in one seeded run of four.
        if self.config.cache and is_training:
            cached = ds.cache("" if self.config.cache == "memory" else
                              f"{self.config.cache}-train")

            def one_pass(files_seed=None, seed=None):
                return self._shuffle(cached, self.config.shuffle_buffer, seed)
            ds = (one_pass() if start is None
                  else self._stream(one_pass, start * self.config.batch_size))
        # Fixed batch shapes in training (XLA, TPU, and no tiny last batch in BatchNorm).
        deterministic = self._deterministic(is_training)
        ds = ds.batch(self.config.batch_size, drop_remainder=is_training,
                      num_parallel_calls=AUTOTUNE, deterministic=deterministic)
        if is_training and self.parser.augment.enabled:
            if self.config.deterministic:
                # One seed per batch from a seeded stream (see augment_batch), so parallel
                # map calls cannot change which batch gets which random numbers.
                seeds = tf.data.Dataset.random(seed=self.config.seed).batch(2)
                if start:
                    seeds = seeds.skip(start)
                ds = tf.data.Dataset.zip(ds, seeds)
            ds = ds.map(self.parser.augment_batch, num_parallel_calls=AUTOTUNE,
                        deterministic=deterministic)
        if targets:
            ds = ds.map(self.parser.targets_fn, num_parallel_calls=AUTOTUNE,
                        deterministic=deterministic)
        options = tf.data.Options()
        options.deterministic = deterministic
        options.experimental_optimization.map_parallelization = True
        options.experimental_distribute.auto_shard_policy = self._shard_policy()
        return ds.with_options(options).prefetch(AUTOTUNE)

    def _shard_policy(self):
        """How a distribution strategy splits this dataset between workers.

        One worker (no cluster, or a cluster of one): nothing to split, so OFF. Any other
        policy still has the strategy rewrite the dataset's graph each time it makes an
        iterator: ~2.6 CPU-s per iterator on the 2-core CPU (a run makes several),
        for a shard of one. Multi-worker: each worker reads its own files when there are
        enough of them, otherwise every worker reads all records and keeps its share. A
        seeded run zips in a random stream, which file sharding cannot walk through: there
        too, every worker reads all records and keeps its share."""
        policy = tf.data.experimental.AutoShardPolicy
        if self.config.num_workers <= 1:
            return policy.OFF
        by_file = len(self.files) >= self.config.num_workers and not self.config.deterministic
        return policy.FILE if by_file else policy.DATA
