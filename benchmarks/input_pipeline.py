"""Training input throughput: the trainer's tf.data pipeline vs the original per-sample loader.

    .venv/bin/python -m benchmarks.input_pipeline [--records_dir=records/utk_face] \
        [--img_dim=128] [--batch_size=64] [--batches=150] [--original_samples=150] \
        [--degrade_probability=0.3 --old_print_probability=0.1]

1. `trainer.input_pipeline` over the train split, exactly as training reads it (shuffled
   files, interleave, vectorized parse, decode + resize, shuffle, batched augmentation,
   targets, prefetch): images/s over `--batches` batches after a warm-up, first without a
   cache (every image decoded) and then from the in-memory cache (second pass), with the
   recipe's photo degradations and old prints when asked (`--degrade_probability`,
   `--old_print_probability`): from the cache, that is the augmentation's own cost.
2. The original project's loader reproduced per sample: read the file, decode (PIL, as cv2
   would), resize, the age label as a histogram of 1,000,000 np.random.normal samples,
   random horizontal flip and Gaussian blur. Single process, like the original generator.

Without --records_dir (or when it has no train shards) the records are written first to a
temporary directory with `agegender.schema.make_example` (160 px JPEGs, as the Beam job
writes them by default). The machine may be shared: quote the ratio, measured in one run.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import glob
import hashlib
import io
import os
import random
import sys
import tempfile
import time

import numpy as np

from agegender import console

DEFAULT_DATA = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data", "utkface",
                            "UTKFace")


def write_records(data_dir, out_dir, limit, size=160):
    """Writes train records from the UTKFace images (the Beam job's layout)."""
    import tensorflow as tf
    from PIL import Image

    from agegender import age_histogram, names, preprocessing, schema

    files = sorted(glob.glob(os.path.join(data_dir, "*")))[:limit]
    shards = 4
    writers = [tf.io.TFRecordWriter(f"{schema.shard_prefix(out_dir, 'train')}-{i:05d}-of-"
                                    f"{shards:05d}") for i in range(shards)]
    n = 0
    for path in files:
        try:
            labels = names.parse_name(path)
        except names.LabelError:
            continue
        raw = open(path, "rb").read()
        pixels = preprocessing.to_uint8(preprocessing.model_input(raw, size)).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="JPEG", quality=95)
        writers[n % shards].write(schema.make_example(
            encoded_jpeg=buf.getvalue(), height=size, width=size,
            source_id=os.path.basename(path), sha256=hashlib.sha256(pixels).hexdigest(),
            age=labels.age, histogram=age_histogram.age_histogram(labels.age, 5.0),
            gender=labels.gender, race=labels.race).SerializeToString())
        n += 1
    for w in writers:
        w.close()
    with open(os.path.join(out_dir, schema.REPORT_FILE), "w") as f:
        f.write('{"metadata": {"age_deviation": 5.0, "image_size": %d}}' % size)
    return n


def bench_tf_data(records_dir, img_dim, batch_size, batches, cache, degrade_probability=0.0,
                  old_print_probability=0.0):
    from agegender import model_spec, records
    from trainer import input_pipeline

    augment = input_pipeline.AugmentConfig(degrade_probability=degrade_probability,
                                           old_print_probability=old_print_probability)
    config = input_pipeline.InputConfig.from_records(
        records_dir, batch_size=batch_size, cache="memory" if cache else "", seed=1,
        augment=augment)
    spec = model_spec.ModelSpec(img_dim=img_dim, predict_gender=True,
                                age_deviation=config.records_age_deviation or 5.0)
    reader = input_pipeline.InputReader(config, "train",
                                        input_pipeline.Parser.for_config(spec, config))
    ds = reader.dataset(is_training=True).repeat()
    it = iter(ds)
    warmup = 10
    if cache:
        # Fill the cache with one full pass first; then time reads from it.
        steps = records.count(records_dir, "train") // batch_size
        for _ in range(steps + warmup):
            next(it)
    else:
        for _ in range(warmup):
            next(it)
    start = time.perf_counter()
    for _ in range(batches):
        images, _, _ = next(it)
    _ = images.numpy()
    elapsed = time.perf_counter() - start
    return batches * batch_size / elapsed


def original_sample(path, img_dim, deviation=5.0):
    """One sample as the original generator made it (PIL stands in for cv2)."""
    from PIL import Image, ImageFilter

    from agegender import names

    age = names.parse_name(path).age
    img = Image.open(path).convert("RGB").resize((img_dim, img_dim), Image.BILINEAR)
    samples = np.random.normal(age, deviation / 5.0, 1_000_000)
    hist, _ = np.histogram(samples, bins=101, range=(-0.5, 100.5))
    hist = hist / hist.sum()
    if random.random() < 0.5:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    if random.random() < 0.5:
        img = img.filter(ImageFilter.GaussianBlur(radius=random.uniform(0.5, 1.5)))
    return np.asarray(img, np.float32), hist


def bench_original(data_dir, img_dim, samples):
    files = sorted(glob.glob(os.path.join(data_dir, "*.jpg")))
    rng = random.Random(0)
    picked = [rng.choice(files) for _ in range(samples)]
    original_sample(picked[0], img_dim)  # warm-up
    start = time.perf_counter()
    for path in picked:
        original_sample(path, img_dim)
    return samples / (time.perf_counter() - start)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records_dir", default="records/utk_face")
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--img_dim", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--batches", type=int, default=150)
    p.add_argument("--original_samples", type=int, default=150)
    p.add_argument("--degrade_probability", type=float, default=0.0,
                   help="the recipe's photo degradations in the stream (0.3 in the recipe)")
    p.add_argument("--old_print_probability", type=float, default=0.0,
                   help="the recipe's old prints in the stream (0.1 in the recipe)")
    p.add_argument("--write_limit", type=int, default=6000,
                   help="images to write when the records must be made first")
    console.add_verbose_flag(p)
    args = p.parse_args(argv)

    from agegender import schema

    records_dir = args.records_dir
    tmp = None
    if not glob.glob(schema.shard_pattern(records_dir, "train")):
        tmp = tempfile.TemporaryDirectory()
        records_dir = tmp.name
        t = time.perf_counter()
        n = write_records(args.data, records_dir, args.write_limit)
        print(f"wrote {n} train records to {records_dir} in {time.perf_counter() - t:.0f} s")

    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}; degrade "
          f"{args.degrade_probability}, old print {args.old_print_probability}")
    augment = dict(degrade_probability=args.degrade_probability,
                   old_print_probability=args.old_print_probability)
    tf_rate = bench_tf_data(records_dir, args.img_dim, args.batch_size, args.batches, False,
                            **augment)
    print(f"tf.data, decode every image:   {tf_rate:8.0f} images/s")
    cached = bench_tf_data(records_dir, args.img_dim, args.batch_size, args.batches, True,
                           **augment)
    print(f"tf.data, from the memory cache: {cached:8.0f} images/s")
    orig = bench_original(args.data, args.img_dim, args.original_samples)
    print(f"original per-sample loader:    {orig:8.1f} images/s")
    print(f"ratio (decode every image / original): {tf_rate / orig:.0f}x; "
          f"(cached / original): {cached / orig:.0f}x")
    print(f"target >= 2000 images/s and >= 40x: "
          f"{'met' if tf_rate >= 2000 and tf_rate / orig >= 40 else 'NOT met'} without cache, "
          f"{'met' if cached >= 2000 and cached / orig >= 40 else 'NOT met'} with cache")
    if tmp:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
