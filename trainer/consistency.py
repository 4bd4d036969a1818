"""The old-print consistency term (`--consistency_weight`): the same face clean and made an
old scanned print should get the same answer.

With weight w > 0 (it needs `--old_print_probability` > 0 and the augmentation), the input
pipeline appends to each training batch of n faces the last k of them, the ones the
old-print composite degraded, as they were just before it (`AugmentConfig.old_print_pairs`:
the same crop, flip and colour jitter, so a pair differs by the print and scan only), with
their own targets: n + k rows. The step `install` puts on the model splits the copies off
(k is fixed by the flags: drop_remainder batches) and minimises

    the supervised loss (unchanged, on the batch as it is)
    + w * mean over the pairs of [D_age(p_clean || p_degraded)
                                  + gender_loss_weight * D_gender(...)]

where D is each head's `divergence` (`agegender.heads`: the squared EMD of the age
distribution, L1 for the regression head, KL for gender). p_clean is the model's answer
for the clean face in inference mode (no dropout: what it would serve) under
stop_gradient, so only the degraded prediction is pulled toward the clean one, never the
reverse. It is computed outside the gradient tape: the clean copies cost a forward pass
of k of the batch's n images and no backward pass, and they enter neither the supervised
losses nor the metrics (each face is counted once, as without the term). The degraded
faces are predicted in training mode, with --dropout: with dropout > 0 the term is not 0
even for a perfectly invariant backbone, a small pull toward dropout-robust heads too.

The model stays the functional model of `trainer.model` (one input, the same outputs,
checkpoints and model.keras): only this process's `train_step` and `reset_metrics` are
replaced on the instance, as `trainer.distribution` does for multi-worker runs. Weight 0
installs nothing: the default run's step, graph and input are exactly Keras's.

Logged per epoch: `consistency` (the mean D_age over the pairs, unweighted) and, with a
gender head, `gender_consistency`. The pairs are the last k rows of the global batch,
which a multi-replica strategy would split across replicas apart from their clean copies:
such runs are refused (`check_strategy`), and so is a multi-worker strategy of one worker
(its Keras workaround in `trainer.distribution` replaces the train step).
"""
import keras
import tensorflow as tf

from agegender import heads

METRIC = "consistency"
GENDER_METRIC = "gender_consistency"
NO_PAIRS = ("the consistency step needs batches with old-print pairs (the faces, then clean "
            "copies of the old-printed ones, labelled alike: input_pipeline.AugmentConfig("
            "old_print_pairs=True))")


class ConsistencyError(ValueError):
    """A configuration the consistency term cannot train with."""


def check_strategy(strategy):
    """Refuses a strategy of several replicas: it would split each batch's degraded rows
    and their clean copies differently, pairing faces with other faces."""
    replicas = strategy.num_replicas_in_sync
    if replicas > 1 or isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise ConsistencyError(
            f"--consistency_weight pairs each batch's old-printed faces with their clean "
            f"copies on one device; this strategy has {replicas} replicas "
            f"(use --distribution=one_device, or --consistency_weight=0)")


def pair_divergences(spec, reference, degraded):
    """{output name: D(reference || degraded) per pair, [k]} for the age head and, when the
    spec has one, the gender head. reference, degraded: output dicts of the same k faces."""
    return {head.output: head.divergence(reference[head.output], degraded[head.output])
            for head in heads.for_spec(spec)}


def install(model, spec, weight, pairs, gender_weight=1.0):
    """Replaces `model.train_step` (and `reset_metrics`, for the new metrics) with the
    consistency step; call after each `compile` (which resets the train function), in the
    strategy's scope. The training data must come with old-print pairs
    (`AugmentConfig.old_print_pairs`), `pairs` of them in every batch (a batch of n faces
    is n + pairs rows; `trainer.flags.old_print_count`)."""
    if not weight > 0:
        raise ConsistencyError(f"consistency weight must be > 0, got {weight}")
    if not (isinstance(pairs, int) and pairs > 0):
        raise ConsistencyError(f"the pairs per batch must be a count > 0, got {pairs!r}")
    age, gender = heads.age_head(spec), heads.gender_head(spec)
    trackers = {METRIC: keras.metrics.Mean(name=METRIC)}
    if gender is not None:
        trackers[GENDER_METRIC] = keras.metrics.Mean(name=GENDER_METRIC)
    cls = type(model)

    def train_step(data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        # n faces, then the clean copies of the last k, labelled alike (`targets_fn`).
        k = pairs
        if x.shape[0] is not None and x.shape[0] < 2 * k:  # known when traced
            raise ConsistencyError(f"a batch of {x.shape[0]} rows cannot hold {k} faces "
                                   f"and their clean copies; {NO_PAIRS}")
        n = tf.shape(x)[0] - k
        # A batch without pairs would pair faces with others: their labels tell.
        same = [tf.reduce_all(tf.equal(t[n - k:n], t[n:])) for t in tf.nest.flatten(y)]
        with tf.control_dependencies([tf.debugging.Assert(tf.reduce_all(same), [NO_PAIRS])]):
            images, clean = tf.identity(x[:n]), tf.identity(x[n:])
        y = tf.nest.map_structure(lambda t: t[:n], y)
        if sample_weight is not None:
            sample_weight = tf.nest.map_structure(lambda t: t[:n], sample_weight)
        # The target: the clean faces' answer in inference mode, outside the tape.
        reference = tf.nest.map_structure(tf.stop_gradient, model(clean, training=False))
        with tf.GradientTape() as tape:
            y_pred = model(images, training=True)
            loss = model.compute_loss(x=images, y=y, y_pred=y_pred,
                                      sample_weight=sample_weight, training=True)
            degraded = {name: out[n - k:] for name, out in y_pred.items()}
            divergences = pair_divergences(spec, reference, degraded)
            means = {METRIC: tf.reduce_mean(divergences[age.output])}
            term = means[METRIC]
            if gender is not None:
                means[GENDER_METRIC] = tf.reduce_mean(divergences[gender.output])
                term = term + gender_weight * means[GENDER_METRIC]
            # One replica (check_strategy): no per-replica scaling of the losses to mirror.
            loss = loss + weight * term
            # Keras's own step logs `loss` through this tracker (the total, as here).
            model._loss_tracker.update_state(loss, sample_weight=n)
            if model.optimizer is not None:
                loss = model.optimizer.scale_loss(loss)
        trainable = model.trainable_weights
        gradients = tape.gradient(loss, trainable)
        model.optimizer.apply_gradients(zip(gradients, trainable))
        for name, value in means.items():
            trackers[name].update_state(value)
        logs = model.compute_metrics(images, y, y_pred, sample_weight=sample_weight)
        return {**logs, **{name: t.result() for name, t in trackers.items()}}

    def reset_metrics():
        cls.reset_metrics(model)
        for tracker in trackers.values():
            tracker.reset_state()

    model.train_step = train_step
    model.reset_metrics = reset_metrics
    return model
