"""Training throughput from the real input vs from the same tensors held in memory.

    .venv/bin/python -m benchmarks.train_step [--records_dir=records/utk_face] \
        [--base_model=MobileNetV2 --alpha=1.0 --img_dim=128 --batch_size=64] \
        [--phase=head|fine_tune] [--steps=30] \
        [--degrade_probability=0.3 --old_print_probability=0.1]

The same compiled model trains `--steps` steps (after a warm-up that also traces the step)
twice: fed by `trainer.input_pipeline` from the records (decode, augment, prefetch), and
fed by `--steps` batches taken from that same pipeline beforehand and held in memory.
ratio = real / in-memory images/s; >= 0.95 means the input pipeline keeps up with the
model (prefetch overlaps it with the step). `--degrade_probability` and
`--old_print_probability` add the recipe's photo degradations and old prints
(configs/cpu_mobilenetv2.flags) to the real input. Weights: ImageNet from --weights_dir when the
file is there, random otherwise (the cost of a step does not depend on the values).
"""
if __name__ == "__main__":  # before TensorFlow's start-up lines (agegender.console)
    from agegender import console
    console.quiet()

import argparse
import os
import sys
import time

from agegender import console

DEFAULT_WEIGHTS = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "weights")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--records_dir", default="records/utk_face")
    p.add_argument("--base_model", default="MobileNetV2")
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--img_dim", type=int, default=128)
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--phase", choices=("head", "fine_tune"), default="head")
    p.add_argument("--fine_tune_at", type=int, default=100)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--weights_dir", default=DEFAULT_WEIGHTS)
    p.add_argument("--degrade_probability", type=float, default=0.0)
    p.add_argument("--old_print_probability", type=float, default=0.0)
    console.add_verbose_flag(p)
    args = p.parse_args(argv)

    import tensorflow as tf

    from agegender import model_spec, records
    from trainer import flags as trainer_flags
    from trainer import input_pipeline, task
    from trainer import model as model_lib

    meta = records.metadata(args.records_dir)
    spec = model_spec.ModelSpec(img_dim=args.img_dim, predict_gender=True,
                                base_model=args.base_model, alpha=args.alpha,
                                age_deviation=meta.get("age_deviation", 5.0))
    try:
        weights = model_lib.resolve_weights(spec.base_model, spec.alpha, "imagenet",
                                            args.weights_dir)
    except model_lib.WeightsNotFoundError:
        weights = None
    model = model_lib.build_model(spec, weights)
    if args.phase == "fine_tune":
        model_lib.set_fine_tune(model, args.fine_tune_at)
    cfg = trainer_flags.parse([])
    task.compile_model(model, spec, cfg, 1e-4)

    augment = input_pipeline.AugmentConfig(degrade_probability=args.degrade_probability,
                                           old_print_probability=args.old_print_probability)
    config = input_pipeline.InputConfig.from_records(args.records_dir,
                                                     batch_size=args.batch_size, seed=1,
                                                     augment=augment)
    reader = input_pipeline.InputReader(config, "train",
                                        input_pipeline.Parser.for_config(spec, config))
    real = reader.dataset(is_training=True).repeat()
    held = list(real.take(args.steps))
    in_memory = tf.data.Dataset.from_tensor_slices(
        tf.nest.map_structure(lambda *xs: tf.stack(xs), *held)).repeat().prefetch(2)

    def timed(ds):
        model.fit(ds, epochs=1, steps_per_epoch=3, verbose=0)  # trace + warm-up
        start = time.perf_counter()
        model.fit(ds, epochs=1, steps_per_epoch=args.steps, verbose=0)
        return args.steps * args.batch_size / (time.perf_counter() - start)

    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.2f}; "
          f"{spec.base_model} alpha {spec.alpha} at {spec.img_dim} px, batch "
          f"{args.batch_size}, phase {args.phase}, weights {'imagenet' if weights else 'random'}; "
          f"degrade {args.degrade_probability}, old print {args.old_print_probability}")
    mem_rate = timed(in_memory)
    real_rate = timed(real)
    mem_rate2 = timed(in_memory)  # again: the machine may be shared, bracket the real run
    mem = (mem_rate + mem_rate2) / 2
    print(f"in-memory tensors: {mem:7.1f} images/s ({mem_rate:.1f}, {mem_rate2:.1f})")
    print(f"real input:        {real_rate:7.1f} images/s")
    print(f"ratio real / in-memory: {real_rate / mem:.3f} (target >= 0.95)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
