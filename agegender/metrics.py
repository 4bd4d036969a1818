"""Evaluation metrics over arrays of labels and predictions (NumPy; no TF needed).

Used by the trainer's `eval.json` and by `trainer.evaluate`, so both report the same
numbers the same way. Unknown gender/race (-1) are left out of the groups that need them.
"""
import numpy as np

from agegender import schema

CS_THRESHOLDS = tuple(range(1, 11))


def decade_name(decade):
    return "100+" if decade >= 10 else f"{decade * 10}-{decade * 10 + 9}"


def age_metrics(true_age, pred_age):
    """MAE, RMSE, median absolute error, mean signed error and CS@1..10 (share |err| <= k)."""
    true_age = np.asarray(true_age, np.float64)
    pred_age = np.asarray(pred_age, np.float64)
    if true_age.shape != pred_age.shape:
        raise ValueError(f"shape mismatch: {true_age.shape} vs {pred_age.shape}")
    if true_age.size == 0:
        return {"count": 0}
    err = pred_age - true_age
    abs_err = np.abs(err)
    out = {
        "count": int(true_age.size),
        "mae": float(abs_err.mean()),
        "rmse": float(np.sqrt((err ** 2).mean())),
        "median_abs_error": float(np.median(abs_err)),
        "mean_signed_error": float(err.mean()),
    }
    for k in CS_THRESHOLDS:
        out[f"cs@{k}"] = float((abs_err <= k).mean())
    return out


def per_decade(true_age, pred_age):
    """{decade name: {count, mae, mean_signed_error}} for each decade present (100+ pooled)."""
    true_age = np.asarray(true_age, np.float64)
    pred_age = np.asarray(pred_age, np.float64)
    decades = np.minimum(true_age // 10, 10).astype(int)
    out = {}
    for d in sorted(set(decades.tolist())):
        m = decades == d
        err = pred_age[m] - true_age[m]
        out[decade_name(d)] = {"count": int(m.sum()), "mae": float(np.abs(err).mean()),
                               "mean_signed_error": float(err.mean())}
    return out


def gender_accuracy(true_gender, pred_gender):
    """Accuracy over the images whose gender is known; None when there are none."""
    true_gender = np.asarray(true_gender)
    pred_gender = np.asarray(pred_gender)
    known = true_gender >= 0
    if not known.any():
        return None
    return float((true_gender[known] == pred_gender[known]).mean())


def per_race_gender(true_age, pred_age, race, true_gender, pred_gender=None):
    """{"<race> x <gender>": {count, mae, gender_accuracy}} over images with both known."""
    true_age = np.asarray(true_age, np.float64)
    pred_age = np.asarray(pred_age, np.float64)
    race = np.asarray(race)
    true_gender = np.asarray(true_gender)
    out = {}
    for r, race_name in enumerate(schema.RACES):
        for g, gender_name in enumerate(schema.GENDERS):
            m = (race == r) & (true_gender == g)
            if not m.any():
                continue
            cell = {"count": int(m.sum()),
                    "mae": float(np.abs(pred_age[m] - true_age[m]).mean())}
            if pred_gender is not None:
                cell["gender_accuracy"] = float((np.asarray(pred_gender)[m] == g).mean())
            out[f"{race_name} x {gender_name}"] = cell
    return out


def full_report(true_age, pred_age, race=None, true_gender=None, pred_gender=None):
    """Everything above in one JSON-ready dict."""
    n = len(true_age)
    race = np.full(n, schema.UNKNOWN) if race is None else np.asarray(race)
    true_gender = np.full(n, schema.UNKNOWN) if true_gender is None else np.asarray(true_gender)
    report = age_metrics(true_age, pred_age)
    report["per_decade"] = per_decade(true_age, pred_age)
    report["gender_accuracy"] = (None if pred_gender is None
                                 else gender_accuracy(true_gender, pred_gender))
    report["per_race_gender"] = per_race_gender(true_age, pred_age, race, true_gender,
                                                pred_gender)
    return report
