"""Evaluation metrics over arrays of labels and predictions (NumPy; no TF needed).

Used by the trainer's `eval.json` and by `trainer.evaluate`, so both report the same
numbers the same way. Unknown gender/race (-1) are left out of the groups that need them.
"""
import numpy as np

from agegender import decades, schema

CS_THRESHOLDS = tuple(range(1, 11))


decade_name = decades.name  # kept for callers: the name lives in agegender.decades


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


def _by_decade(decades, true_age, pred_age):
    out = {}
    for d in sorted(set(decades.tolist())):
        m = decades == d
        err = pred_age[m] - true_age[m]
        out[decade_name(d)] = {"count": int(m.sum()), "mae": float(np.abs(err).mean()),
                               "mean_signed_error": float(err.mean()),
                               "signed_error_standard_error": _standard_error(err)}
    return out


def _standard_error(values):
    """The standard error of the mean of `values` (sample sd / sqrt(n)); None under 2 values.
    Why it is reported: the bias of a decade of ~100 faces changes from one sample of faces
    to another by an amount a bare mean hides (docs/evaluation.md)."""
    if values.size < 2:
        return None
    return float(values.std(ddof=1) / np.sqrt(values.size))


def per_decade(true_age, pred_age):
    """{decade name: {count, mae, mean_signed_error, signed_error_standard_error}} for each
    decade present (100+ pooled)."""
    true_age = np.asarray(true_age, np.float64)
    pred_age = np.asarray(pred_age, np.float64)
    return _by_decade(decades.index(true_age), true_age, pred_age)


# Age bands for children and the photos families keep (issue 27): the first two decades in
# five-year steps, where the shared subset is thin and old prints mislead most, then wider.
AGE_BANDS = (0, 5, 10, 15, 20, 40, 60, 70)


def band_name(edges, index):
    low = edges[index]
    return f"{low}+" if index == len(edges) - 1 else f"{low}-{edges[index + 1] - 1}"


def per_age_band(true_age, pred_age, edges=AGE_BANDS):
    """Like `per_decade`, over the bands starting at `edges` (the last open-ended):
    {"0-4": {count, mae, mean_signed_error, signed_error_standard_error}, ...}."""
    true_age = np.asarray(true_age, np.float64)
    pred_age = np.asarray(pred_age, np.float64)
    which = np.searchsorted(np.asarray(edges), true_age, side="right") - 1
    out = {}
    for i in sorted(set(which.tolist())):
        if i < 0:
            continue
        err = pred_age[which == i] - true_age[which == i]
        out[band_name(edges, i)] = {"count": int(err.size), "mae": float(np.abs(err).mean()),
                                    "mean_signed_error": float(err.mean()),
                                    "signed_error_standard_error": _standard_error(err)}
    return out


def pooled(groups):
    """One group's statistics pooled over several samples of it (e.g. the 60-69 decade of
    the validation and the test split): the entries of `per_decade` / `per_age_band`
    ({count, mae, mean_signed_error, signed_error_standard_error}) -> the same fields over
    all their faces, exactly (each sample's sd is its standard error x sqrt(n))."""
    groups = [g for g in groups if g and g.get("count")]
    n = np.array([g["count"] for g in groups], np.float64)
    if not n.size:
        return {"count": 0}
    total = n.sum()
    mean = float((n * [g["mean_signed_error"] for g in groups]).sum() / total)
    out = {"count": int(total),
           "mae": float((n * [g["mae"] for g in groups]).sum() / total),
           "mean_signed_error": mean, "signed_error_standard_error": None}
    if total >= 2 and all(g.get("signed_error_standard_error") is not None or g["count"] == 1
                          for g in groups):
        sd = np.array([(g.get("signed_error_standard_error") or 0.0) * np.sqrt(g["count"])
                       for g in groups])
        means = np.array([g["mean_signed_error"] for g in groups])
        ss = ((n - 1) * sd ** 2).sum() + (n * (means - mean) ** 2).sum()
        out["signed_error_standard_error"] = float(np.sqrt(ss / (total - 1) / total))
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


def per_predicted_decade(true_age, pred_age):
    """Like `per_decade`, grouped by the decade of the *predicted* age: what a user sees
    (a model that answers "70" for everyone over 60 looks fine per true decade)."""
    true_age = np.asarray(true_age, np.float64)
    pred_age = np.asarray(pred_age, np.float64)
    return _by_decade(decades.index(pred_age), true_age, pred_age)


CONFIDENT_FRACTIONS = (0.5, 0.8, 1.0)


def uncertainty(true_age, pred_age, age_std=None, intervals=None):
    """How honest the spread is: the share of true ages inside each interval
    ({nominal coverage: (low [N], high [N])}) and its mean width, and the MAE on the most
    confident 50/80/100% of the faces (smallest std first: abstaining on hard faces)."""
    true_age = np.asarray(true_age, np.float64)
    pred_age = np.asarray(pred_age, np.float64)
    out = {}
    for nominal, (low, high) in sorted((intervals or {}).items()):
        low, high = np.asarray(low, np.float64), np.asarray(high, np.float64)
        out[f"interval_{round(nominal * 100)}"] = {
            "nominal": nominal, "coverage": float(((low <= true_age) & (true_age <= high)).mean()),
            "mean_width_years": float((high - low + 1).mean())}
    if age_std is not None:
        order = np.argsort(np.asarray(age_std, np.float64), kind="stable")
        err = np.abs(pred_age - true_age)[order]
        out["mae_most_confident"] = {
            f"{round(f * 100)}%": float(err[:max(1, int(round(f * len(err))))].mean())
            for f in CONFIDENT_FRACTIONS}
        out["mean_age_std"] = float(np.mean(age_std))
    return out


def gender_calibration(true_gender, gender_probability, bins=10):
    """Reliability of the gender probability over faces of known gender: per confidence bin
    the mean confidence and the accuracy, and the expected calibration error (ECE)."""
    true_gender = np.asarray(true_gender)
    probs = np.asarray(gender_probability, np.float64)
    known = true_gender >= 0
    if not known.any():
        return None
    confidence = probs[known].max(-1)
    correct = probs[known].argmax(-1) == true_gender[known]
    edges = np.linspace(0.5, 1.0, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="right") - 1, 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        m = which == b
        if not m.any():
            continue
        conf, acc = float(confidence[m].mean()), float(correct[m].mean())
        ece += m.mean() * abs(conf - acc)
        rows.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": int(m.sum()),
                     "confidence": conf, "accuracy": acc})
    return {"ece": float(ece), "bins": rows}


def full_report(true_age, pred_age, race=None, true_gender=None, pred_gender=None,
                age_std=None, age_intervals=None, gender_probability=None):
    """Everything above in one JSON-ready dict (the uncertainty parts when given)."""
    n = len(true_age)
    race = np.full(n, schema.UNKNOWN) if race is None else np.asarray(race)
    true_gender = np.full(n, schema.UNKNOWN) if true_gender is None else np.asarray(true_gender)
    report = age_metrics(true_age, pred_age)
    report["per_decade"] = per_decade(true_age, pred_age)
    report["per_predicted_decade"] = per_predicted_decade(true_age, pred_age)
    report["per_age_band"] = per_age_band(true_age, pred_age)
    report["gender_accuracy"] = (None if pred_gender is None
                                 else gender_accuracy(true_gender, pred_gender))
    report["per_race_gender"] = per_race_gender(true_age, pred_age, race, true_gender,
                                                pred_gender)
    if age_std is not None or age_intervals:
        report["uncertainty"] = uncertainty(true_age, pred_age, age_std, age_intervals)
    if gender_probability is not None:
        report["gender_calibration"] = gender_calibration(true_gender, gender_probability)
    return report
