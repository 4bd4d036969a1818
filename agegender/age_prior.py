"""How common each age is in the train split, and the weights derived from it.

The records' report.json counts the train split's faces per decade (0-9, ..., 90-99, 100+).
A model trained on those faces learns that prior along with the faces: on UTKFace the
20-somethings outnumber the 60-somethings 5 to 1, so a face the model is unsure of is
pulled toward the common ages, and the old are predicted years too young. Two ways to
push back, one owner for the counts and the weights:

- training, `--rare_age_weight_power` p: each face's age loss weighs (n / mean n) ** -p,
  where n is its decade's count (`decade_weights`), so rare ages pull harder, at most
  `--rare_age_weight_max` times the mean face;
- inference, `--age_prior_correction` t: the predicted age distribution is multiplied by
  (n / mean n) ** -t per decade and renormalised (`class_weights`; applied by
  `agegender.heads.serving_outputs` from the model's spec). This is the post-hoc form of the
  same idea ("logit adjustment"): t = 1 answers as if every decade were equally common,
  t = 0 leaves the model as trained. It needs no retraining, so a trained model can be
  given another t (docs/accuracy.md has the trade it makes: a little MAE for less bias per
  decade).
"""
import numpy as np

from agegender import decades, records

NUM_DECADES = decades.NUM_DECADES  # 0-9 ... 90-99, 100+


def train_decade_counts(records_dir):
    """{decade name: faces} of the records' train split (report.json); {} when unknown."""
    report = records.report(records_dir)
    return dict(report.get("splits", {}).get("train", {}).get("age_decade", {}))


decade_of = decades.index  # kept for callers: the index lives in agegender.decades


def decade_weights(counts, power, max_weight=None):
    """{decade name: faces} -> a weight per decade index, (n / mean n) ** -power for the
    decades present (1 for the others), normalised so that the mean weight over the counted
    faces is 1; None when nothing is counted.

    `max_weight` M (>= 1) caps every weight at M times the mean face's, the others scaled
    up to keep the mean at 1. Why: inverse frequency gives UTKFace's few centenarians tens
    of times a 20-something's weight, and a handful of faces then steer whole epochs; a
    cap keeps the push on the old decades and drops those outliers.
    """
    if max_weight is not None and max_weight < 1:
        raise ValueError(f"the rare-age weight cap must be >= 1 (the mean weight), "
                         f"not {max_weight}")
    n = np.array([counts.get(decades.name(d), 0) for d in range(NUM_DECADES)], float)
    present = n > 0
    if not present.any():
        return None
    raw = np.ones(NUM_DECADES)
    raw[present] = (n[present] / n[present].mean()) ** -power
    if max_weight is None:
        return tuple(float(w) for w in raw / ((raw * n).sum() / n.sum()))
    return tuple(float(w) for w in _capped(raw, n, present, max_weight))


def _capped(raw, n, present, max_weight):
    """`raw` weights scaled to a mean of 1 over the `n` faces, none above `max_weight`: the
    capped decades weigh `max_weight`, the others keep their ratios. The capped set only
    grows: each pass caps what the rescaling pushed over the cap."""
    capped = np.zeros(NUM_DECADES, bool)
    while True:
        free = present & ~capped
        scale = ((n.sum() - max_weight * n[capped].sum()) / (raw[free] * n[free]).sum()
                 if free.any() else 0.0)
        over = free & (raw * scale > max_weight)
        if not over.any():
            break
        capped |= over
    weights = np.where(capped, max_weight, raw * scale)
    weights[~present] = 1.0
    return weights


def class_weights(class_ages, counts, power):
    """The weight of each class of a distribution head whose classes stand for
    `class_ages` years (its decade's `decade_weights`): what the prior correction multiplies
    the predicted distribution by. Raises ValueError when no train face is counted."""
    weights = decade_weights(counts, power)
    if weights is None:
        raise ValueError("the records' report counts no train faces per decade: the age "
                         "prior correction has nothing to divide by")
    return [weights[d] for d in decade_of(class_ages)]
