"""TensorFlow's two thread pools for a command that runs a model in its own process (the
server, `video.annotate`): the flags (TF Serving's names), their default and the setter.

Measured on 2 cores with MobileNetV2 at 128 px (docs/serving.md, docs/video.md): one thread
per op, with one op per core, beats TensorFlow's default of every op on every core both in
latency (an op split over 2 threads spends more on synchronisation than it saves) and in
throughput (concurrent requests, batches or frames each get a core instead of fighting).
"""
from agegender import arg_types

INTRA_OP = 1
INTER_OP = 0  # TensorFlow picks: one per core

INTRA_OP_FLAG = "--tensorflow_intra_op_parallelism"
INTER_OP_FLAG = "--tensorflow_inter_op_parallelism"
INTRA_OP_HELP = ("threads one op may use (default %(default)s; 0: TensorFlow picks, one per "
                 "core, as tensorflow_model_server does)")
INTER_OP_HELP = "ops run at once (default 0: TensorFlow picks, one per core)"

thread_count = arg_types.at_least(0, "a thread count")


def add_flags(parser):
    """Both flags on an argparse parser (dests `tensorflow_intra_op_parallelism`, ...)."""
    parser.add_argument(INTRA_OP_FLAG, type=thread_count, default=INTRA_OP, help=INTRA_OP_HELP)
    parser.add_argument(INTER_OP_FLAG, type=thread_count, default=INTER_OP, help=INTER_OP_HELP)


def set_threads(intra_op, inter_op):
    """Process-wide, so set once, before the first model loads (TensorFlow fixes its thread
    pools at first use)."""
    import tensorflow as tf

    if intra_op < 0 or inter_op < 0:
        raise ValueError(f"thread counts must be >= 0, got {intra_op}, {inter_op}")
    tf.config.threading.set_intra_op_parallelism_threads(intra_op)
    tf.config.threading.set_inter_op_parallelism_threads(inter_op)


def set_from_args(args):
    """`set_threads` with the values of `add_flags`' flags."""
    set_threads(args.tensorflow_intra_op_parallelism, args.tensorflow_inter_op_parallelism)
