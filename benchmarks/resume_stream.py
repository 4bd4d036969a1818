"""What a seeded resume costs the input: the wait for the first batch of the training stream
at a later epoch (the records before it skipped) against the wait at epoch 0.

    .venv/bin/python -m benchmarks.resume_stream --records_dir=records/utk_face \
        [--epochs=0,2,29] [--cache=memory|''] [--batch_size=64] [--img_dim=128] [--batches=20]

The reader is configured as the CPU recipe (`configs/cpu_mobilenetv2.flags`: seed, cache,
degradations); one epoch is one pass over the train split. For each start epoch it prints
the seconds to the first batch and the seconds for the next `--batches` batches (the
steady rate, for comparison). Nothing is trained.
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import time

from agegender import console


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records_dir", default="records/utk_face")
    p.add_argument("--epochs", default="0,2,29", help="start epochs, comma-separated")
    p.add_argument("--cache", default="memory")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--img_dim", type=int, default=128)
    p.add_argument("--batches", type=int, default=20)
    console.add_verbose_flag(p)
    args = p.parse_args(argv)

    import keras

    from agegender import model_spec, records
    from trainer import input_pipeline

    keras.utils.set_random_seed(1)
    spec = model_spec.ModelSpec(img_dim=args.img_dim, predict_gender=True)
    config = input_pipeline.InputConfig.from_records(
        args.records_dir, batch_size=args.batch_size, cache=args.cache, seed=1,
        deterministic=True, augment=input_pipeline.AugmentConfig(degrade_probability=0.3))
    steps = records.count(args.records_dir, "train") // args.batch_size
    print(f"{steps} batches of {args.batch_size} per epoch, cache={args.cache or 'off'}")
    for epoch in (int(e) for e in args.epochs.split(",")):
        reader = input_pipeline.InputReader(config, "train",
                                            input_pipeline.Parser.for_config(spec, config))
        it = iter(reader.training_stream(epoch * steps))
        start = time.perf_counter()
        next(it)
        first = time.perf_counter() - start
        start = time.perf_counter()
        for _ in range(args.batches):
            next(it)
        steady = time.perf_counter() - start
        print(f"start epoch {epoch:>3}: first batch {first:7.1f} s, next {args.batches} "
              f"batches {steady:5.1f} s")


if __name__ == "__main__":
    main()
