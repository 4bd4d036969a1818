"""An age's decade: 0-9, 10-19, ..., 90-99, and 100+ pooled (UTKFace's ages reach 116).

One owner for the decade index and its name, read by the records writer (report.json's
counts per decade), the metrics (per true and per predicted decade), the rare-age weights
(`agegender.age_prior`) and the trainer's in-graph loss weights (TensorFlow ops: pass
`xp=tf`). TF-free."""
import numpy as np

NUM_DECADES = 11
LAST = NUM_DECADES - 1  # 100+


def index(ages, xp=np):
    """Decade index (0 for 0-9, ..., 10 for 100+) of each age in years: NumPy arrays and
    Python numbers (-> int64), or TF tensors with `xp=tf` (same dtype as `ages`). Negative
    ages (a regression head's answer can be) fall in decade 0."""
    if xp is np:
        ages = np.floor_divide(np.asarray(ages, np.float64), 10)
        return np.maximum(np.minimum(ages, LAST), 0).astype(np.int64)
    return xp.maximum(xp.minimum(ages // 10, LAST), 0)


def name(decade):
    """"0-9", ..., "90-99", "100+" for a decade index."""
    return "100+" if decade >= LAST else f"{decade * 10}-{decade * 10 + 9}"


def name_of_age(age):
    """The decade name of one age in years."""
    return name(int(index(age)))
