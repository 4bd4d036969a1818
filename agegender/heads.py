"""The model's heads: one object per kind, and the only module that tells the kinds apart.

An age head owns everything that depends on how the model states an age:

  output          the Keras output's name (and the serving signature's raw output)
  output_layer()  the Dense layer that produces it (float32 whatever the precision policy)
  target()        the training target, from a batch's age and age histogram
  loss()          the training loss
  divergence()    how far one output is from another, per face (the consistency term of
                  `trainer.consistency`: a degraded face against the same face clean)
  true_age()      the age in years read back from a target (training metrics)
  ages()          the age in years from the model's output (every prediction path)
  serving_outputs()  what the export adds to `age`: the distribution or the ranges, and
                  the spread of the answer (`age_std`, 50% and 80% intervals) for heads
                  that predict a distribution, after the model's calibration temperature
  describe()      the output and how to read an age from it, as JSON for other runtimes
                  (the LiteRT file's metadata: an app computes the age itself)

Kinds: `DistributionHead` (softmax over one-year bins, squared Earth Mover's Distance, the
expected value), `RangeHead` (the same over 5-year ranges), `RegressionHead` (one scaled
value, L1). `GenderHead` is the optional second head. `for_spec(spec)` builds the heads
of a `ModelSpec`; a new kind is one class here plus its name in `age_head`.

TensorFlow and Keras are imported inside the methods: the Beam job's workers import
`agegender` and must not pay for Keras.
"""
import numpy as np

from agegender import schema
from agegender import serving_contract as contract

# The signatures' output names are the serving contract's (clients rely on them).
AGE = contract.AGE  # years, float32 [N]: what every signature returns whatever the head
GENDER = contract.GENDER
AGE_STD = contract.AGE_STD
INTERVALS = contract.AGE_INTERVALS
interval_output = contract.interval_output


def apply_temperature(probs, temperature):
    """softmax(log(p) / T): T > 1 widens a distribution, T < 1 sharpens it (calibration)."""
    tf = _tf()
    probs = tf.cast(probs, tf.float32)
    if temperature == 1.0:
        return probs
    return tf.nn.softmax(tf.math.log(probs + 1e-12) / temperature, axis=-1)

def apply_prior_weights(probs, weights):
    """p * w / sum(p * w): the distribution with the train split's prior divided out to the
    spec's power (`agegender.age_prior`)."""
    tf = _tf()
    weighted = tf.cast(probs, tf.float32) * tf.constant(weights, tf.float32)
    return weighted / tf.maximum(tf.reduce_sum(weighted, axis=-1, keepdims=True), 1e-30)


REGRESSION_SCALE = 100.0
AGE_RANGE_WIDTH = 5
# Ranges 0-4, 5-9, ..., 95-99 and a last one for 100 and above.
NUM_AGE_RANGES = schema.MAX_AGE_BIN // AGE_RANGE_WIDTH + 1


def _keras():
    import keras

    return keras


def _tf():
    import tensorflow as tf

    return tf


def squared_emd(y_true, y_pred):
    """Mean over bins of the squared difference of the CDFs: [N, K] x [N, K] -> [N].

    For ordered classes the Earth Mover's Distance is the distance between the CDFs, so a
    prediction one year off costs less than one forty years off; cross-entropy cannot
    tell them apart.
    """
    tf = _tf()
    cdf_true = tf.cumsum(tf.cast(y_true, tf.float32), axis=-1)
    cdf_pred = tf.cumsum(tf.cast(y_pred, tf.float32), axis=-1)
    return tf.reduce_mean(tf.square(cdf_true - cdf_pred), axis=-1)


class AgeHead:
    kind = None
    output = None
    units = None
    activation = "softmax"

    def output_layer(self, name=None):
        return _keras().layers.Dense(self.units, activation=self.activation, dtype="float32",
                                     name=name or self.output, **self._layer_options())

    def _layer_options(self):
        return {}

    def target(self, age, histogram):
        raise NotImplementedError

    def loss(self, mean_weight=0.0):
        """Squared EMD; with `mean_weight`, plus that weight times the L1 distance between
        the distributions' means in units of REGRESSION_SCALE years (a DLDL-v2 style
        expectation term: the mean is what `ages()` answers)."""
        if not mean_weight:
            return _keras_loss(squared_emd)
        tf = _tf()
        values = tf.constant(self.class_ages(), tf.float32)

        def squared_emd_and_mean_l1(y_true, y_pred):
            y_true, y_pred = tf.cast(y_true, tf.float32), tf.cast(y_pred, tf.float32)
            gap = tf.abs(tf.linalg.matvec(y_pred, values) - tf.linalg.matvec(y_true, values))
            return squared_emd(y_true, y_pred) + mean_weight * gap / REGRESSION_SCALE
        return squared_emd_and_mean_l1

    def divergence(self, reference, output):
        """D(reference || output) per face, [N]: 0 when equal. Distribution heads: the
        squared EMD of the loss, not KL: it knows the bins are ordered (a face read three
        years older costs less than one read thirty years older), it stays bounded where
        `output` has almost no mass (KL's log does not), and it is the supervised loss's own
        scale, so a consistency weight reads as relative to it."""
        return squared_emd(reference, output)

    def true_age(self, target):
        raise NotImplementedError

    def ages(self, output):
        raise NotImplementedError

    def serving_outputs(self, output, temperature=1.0):
        """{name: float32 tensor} the signatures return besides `age`: the raw output and
        its spread (`spread_outputs`)."""
        return {self.output: _tf().cast(output, _tf().float32),
                **self.spread_outputs(output, temperature)}

    # Distribution heads: the years each class stands for, and the first/last year it holds.
    def class_ages(self):
        raise NotImplementedError

    def class_bounds(self):
        raise NotImplementedError

    def spread_outputs(self, output, temperature=1.0):
        """`age_std` and the central intervals of the distribution after the calibration
        temperature. The point estimate `age` stays the raw distribution's mean."""
        tf = _tf()
        probs = apply_temperature(output, temperature)
        values = tf.constant(self.class_ages(), tf.float32)
        mean = tf.linalg.matvec(probs, values)
        var = tf.linalg.matvec(probs, tf.square(values)) - tf.square(mean)
        out = {AGE_STD: tf.sqrt(tf.maximum(var, 0.0))}
        cdf = tf.cumsum(probs, axis=-1)
        cdf = cdf / cdf[:, -1:]
        first, last = (tf.constant(b, tf.float32) for b in self.class_bounds())
        for coverage in INTERVALS:
            # First class whose CDF reaches each tail's level (tiny slack for rounding).
            low = tf.argmax(cdf >= (1.0 - coverage) / 2 - 1e-6, axis=-1)
            high = tf.argmax(cdf >= (1.0 + coverage) / 2 - 1e-6, axis=-1)
            out[interval_output(coverage)] = tf.stack(
                [tf.gather(first, low), tf.gather(last, high)], axis=-1)
        return out

    def describe(self):
        """JSON-able: this output's shape and meaning, and how `ages()` reads an age from it,
        for code outside Python (a phone app reading a LiteRT model's raw outputs)."""
        raise NotImplementedError


class DistributionHead(AgeHead):
    """Softmax over `schema.NUM_AGE_BINS` one-year bins (the last is 100+)."""
    kind = "classification"
    output = "age_distribution"
    units = schema.NUM_AGE_BINS

    def target(self, age, histogram):
        return histogram

    def true_age(self, target):
        # The label histogram peaks at the true age (ages above 100 read as 100).
        tf = _tf()
        return tf.cast(tf.argmax(target, axis=-1), tf.float32)

    def ages(self, output):
        tf = _tf()
        probs = tf.cast(output, tf.float32)
        return tf.linalg.matvec(probs, tf.range(probs.shape[-1], dtype=tf.float32))

    def class_ages(self):
        return np.arange(self.units, dtype=np.float32)

    def class_bounds(self):
        return self.class_ages(), self.class_ages()

    def describe(self):
        return {"output": self.output, "shape": [self.units], "kind": self.kind,
                "meaning": f"softmax probabilities of the ages 0..{schema.MAX_AGE_BIN} in "
                           f"one-year bins; the last bin holds {schema.MAX_AGE_BIN} and above",
                "age": "sum(p[i] * bin_ages[i])", "bin_ages": list(range(self.units))}


def age_to_range(age):
    """Age in years -> range class index (NumPy or Python ints)."""
    return np.minimum(np.asarray(age) // AGE_RANGE_WIDTH, NUM_AGE_RANGES - 1)


def range_midpoints():
    """The age each range class stands for (its centre; the last, open range: 102)."""
    starts = np.arange(NUM_AGE_RANGES, dtype=np.float64) * AGE_RANGE_WIDTH
    return starts + (AGE_RANGE_WIDTH - 1) / 2.0


class RangeHead(AgeHead):
    """Softmax over 5-year ranges; trained on the label histogram summed per range."""
    kind = "range"
    output = "age_range"
    units = NUM_AGE_RANGES

    @staticmethod
    def _bins_to_ranges():
        """[NUM_AGE_BINS, NUM_AGE_RANGES] 0/1 matrix summing one-year bins into ranges."""
        return np.eye(NUM_AGE_RANGES, dtype=np.float32)[age_to_range(np.arange(
            schema.NUM_AGE_BINS))]

    def target(self, age, histogram):
        tf = _tf()
        return tf.matmul(tf.cast(histogram, tf.float32), tf.constant(self._bins_to_ranges()))

    def true_age(self, target):
        # The midpoint of the labelled range: MAE in range mode is against midpoints.
        tf = _tf()
        return tf.gather(tf.constant(range_midpoints(), tf.float32), tf.argmax(target, axis=-1))

    def ages(self, output):
        tf = _tf()
        return tf.linalg.matvec(tf.cast(output, tf.float32),
                                tf.constant(range_midpoints(), tf.float32))

    def class_ages(self):
        return range_midpoints().astype(np.float32)

    def class_bounds(self):
        starts = np.arange(self.units, dtype=np.float32) * AGE_RANGE_WIDTH
        return starts, starts + AGE_RANGE_WIDTH - 1

    def describe(self):
        return {"output": self.output, "shape": [self.units], "kind": self.kind,
                "meaning": f"softmax probabilities of {AGE_RANGE_WIDTH}-year age ranges "
                           f"0-{AGE_RANGE_WIDTH - 1}, {AGE_RANGE_WIDTH}-{2 * AGE_RANGE_WIDTH - 1}"
                           f", ...; the last holds {schema.MAX_AGE_BIN} and above",
                "age": "sum(p[i] * bin_ages[i]) (bin_ages: each range's centre)",
                "bin_ages": range_midpoints().tolist()}


class RegressionHead(AgeHead):
    """One value, age / REGRESSION_SCALE, shape [N, 1]; L1 loss."""
    kind = "regression"
    output = "age_scaled"
    units = 1
    activation = None

    def _layer_options(self):
        # The bias starts at a typical age so the first steps are not spent walking there.
        return {"bias_initializer": _keras().initializers.Constant(30.0 / REGRESSION_SCALE)}

    def target(self, age, histogram):
        tf = _tf()
        return tf.reshape(tf.cast(age, tf.float32) / REGRESSION_SCALE, [-1, 1])

    def loss(self, mean_weight=0.0):
        # L1 on the scaled age: robust to UTKFace's noisy labels, and it is the metric (the
        # output is its own mean: no extra term).
        return _keras().losses.MeanAbsoluteError(name="scaled_age_l1")

    def divergence(self, reference, output):
        """|reference - output| on the scaled age, [N]: the head's own L1."""
        tf = _tf()
        return tf.abs(tf.reshape(tf.cast(reference, tf.float32) - tf.cast(output, tf.float32),
                                 [-1]))

    def true_age(self, target):
        tf = _tf()
        return tf.reshape(tf.cast(target, tf.float32), [-1]) * REGRESSION_SCALE

    def ages(self, output):
        tf = _tf()
        return tf.reshape(tf.cast(output, tf.float32), [-1]) * REGRESSION_SCALE

    def serving_outputs(self, output, temperature=1.0):
        # One value and no distribution: no spread to export (docs/training.md, uncertainty).
        return {}

    def describe(self):
        return {"output": self.output, "shape": [self.units], "kind": self.kind,
                "meaning": f"age in years divided by {REGRESSION_SCALE:g}",
                "age": "age_scaled[0] * scale", "scale": REGRESSION_SCALE}


class GenderHead:
    """Softmax over `schema.GENDERS` (0 male, 1 female)."""
    output = GENDER
    probability_output = contract.GENDER_PROBABILITY
    units = len(schema.GENDERS)

    def output_layer(self, name=None):
        return _keras().layers.Dense(self.units, activation="softmax",
                                     dtype="float32", name=name or self.output)

    def target(self, gender):
        """(class index, sample weight): unknown gender (-1) gets any valid index and weight
        0, so it gives no gradient and stays out of the weighted accuracy."""
        tf = _tf()
        return tf.maximum(gender, 0), tf.cast(gender >= 0, tf.float32)

    def loss(self):
        return _keras().losses.SparseCategoricalCrossentropy()

    def divergence(self, reference, output):
        """KL(reference || output) per face, [N]: the cross-entropy the head trains with,
        against a distribution instead of a class, less the reference's own entropy (0 when
        equal). Two classes: no ordered bins, no far tail."""
        tf = _tf()
        reference = tf.cast(reference, tf.float32)
        output = tf.cast(output, tf.float32)
        return tf.reduce_sum(reference * (tf.math.log(reference + 1e-7)
                                          - tf.math.log(output + 1e-7)), axis=-1)

    def predictions(self, output):
        """(class index [N], probability of that class [N]) as NumPy."""
        probs = np.asarray(output)
        return probs.argmax(-1), probs.max(-1)

    def describe(self):
        return {"output": self.output, "shape": [len(schema.GENDERS)],
                "meaning": "softmax probabilities of the genders, in the order of classes",
                "classes": list(schema.GENDERS), "letters": list(schema.GENDER_LETTERS)}

    def serving_outputs(self, output, temperature=1.0):
        tf = _tf()
        probs = apply_temperature(output, temperature)
        return {self.probability_output: probs,
                self.output: tf.gather(tf.constant(schema.GENDER_LETTERS),
                                       tf.argmax(probs, axis=-1))}


_AGE_HEADS = {cls.kind: cls for cls in (DistributionHead, RangeHead, RegressionHead)}


def age_head(spec):
    """The age head of a `ModelSpec` (its `type`, and `range_mode` for the range head)."""
    kind = "range" if spec.range_mode else spec.type
    if kind not in _AGE_HEADS:
        raise ValueError(f"unknown age head {kind!r}; one of {sorted(_AGE_HEADS)}")
    return _AGE_HEADS[kind]()


def gender_head(spec):
    """The gender head, or None when the model has none."""
    return GenderHead() if spec.predict_gender else None


def for_spec(spec):
    """Every head of the model, the age head first."""
    return [h for h in (age_head(spec), gender_head(spec)) if h is not None]


def ages_from_outputs(outputs, spec):
    """Age in years [N] (float32 tensor) from a model's output dict."""
    head = age_head(spec)
    return head.ages(outputs[head.output])


def prior_corrected_outputs(outputs, spec):
    """The raw output dict with the age distribution corrected by the spec's
    `age_prior_weights` (unchanged without them)."""
    if not spec.age_prior_weights:
        return outputs
    head = age_head(spec)
    return {**outputs, head.output: apply_prior_weights(outputs[head.output],
                                                        spec.age_prior_weights)}


def empty_raw_outputs(spec):
    """The model's raw output dict for a batch of 0 images (each head's output, 0 rows):
    `serving_outputs` of it has every signature output, empty (a photo without a face)."""
    tf = _tf()
    return {head.output: tf.zeros([0, head.units], tf.float32) for head in for_spec(spec)}


def serving_outputs(outputs, spec):
    """The signatures' outputs from a model's raw output dict: `age` in years, then each
    head's own (distribution or ranges with the spread, gender letter and probabilities),
    calibrated with the spec's temperatures. With the spec's age prior correction, the age
    distribution is corrected first (`apply_prior_weights`), and everything (the age, the
    exported distribution, its spread) is read from the corrected one."""
    outputs = prior_corrected_outputs(outputs, spec)
    result = {AGE: ages_from_outputs(outputs, spec)}
    temperatures = {GENDER: spec.gender_temperature}
    for head in for_spec(spec):
        temperature = temperatures.get(head.output, spec.age_temperature)
        result.update(head.serving_outputs(outputs[head.output], temperature))
    return result


def _keras_loss(fn):
    """`fn` registered as a Keras serializable, so a compiled model.keras names its loss."""
    keras = _keras()
    name = f"agegender>{fn.__name__}"
    if keras.saving.get_registered_object(name) is None:
        keras.saving.register_keras_serializable(package="agegender")(fn)
    return fn
