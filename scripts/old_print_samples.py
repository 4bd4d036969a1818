"""A picture of the old-print model (`agegender.old_print`) on test-split faces, for a person
to judge whether they look like old scanned prints.

    .venv/bin/python -m scripts.old_print_samples --records_dir=records/utk_face \
        --output=docs/old_print_samples.png [--faces=8] [--seed=0]

One column per face (ages spread over the split), one row per severity: clean, then
`old_print.SEVERITIES` (low, mid, high), each print's parameters drawn with `--seed`.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import sys

import numpy as np
import tensorflow as tf

from agegender import console, old_print, records, schema


def pick_faces(records_dir, split, count):
    """`count` faces of distinct ages spread from the youngest to the oldest band: the
    first face met of each of `count` evenly spaced target ages (0..80)."""
    targets = list(np.linspace(2, 80, count).round().astype(int))
    chosen = {}
    for example in records.iter_examples(records_dir, split):
        age = int(example[schema.AGE])
        best = min(targets, key=lambda t: abs(t - age))
        if abs(best - age) <= 3 and best not in chosen:
            chosen[best] = example[schema.IMAGE_ENCODED]
            if len(chosen) == count:
                break
    return [chosen[t] for t in sorted(chosen)]


def sample_grid(jpegs, seed, side=128):
    faces = tf.stack([tf.image.resize(tf.cast(tf.io.decode_jpeg(j, channels=3), tf.float32),
                                      [side, side], antialias=True) for j in jpegs])
    rows = [faces]
    for i, severity in enumerate(old_print.SEVERITIES.values()):
        rows.append(old_print.old_print(faces, severity, [seed, i]))
    grid = tf.concat([tf.concat(tf.unstack(r), axis=1) for r in rows], axis=0)
    return tf.cast(tf.round(tf.clip_by_value(grid, 0, 255)), tf.uint8)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records_dir", required=True)
    p.add_argument("--split", default="test")
    p.add_argument("--output", required=True, help="the PNG to write")
    p.add_argument("--faces", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    console.add_verbose_flag(p)
    args = p.parse_args(argv)
    jpegs = pick_faces(args.records_dir, args.split, args.faces)
    png = tf.io.encode_png(sample_grid(jpegs, args.seed))
    tf.io.write_file(args.output, png)
    print(f"{args.output}: {len(jpegs)} faces x clean, "
          f"{', '.join(old_print.SEVERITIES)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
