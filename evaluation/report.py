"""The evaluation report: plots a person would rather look at than read, and one HTML page.

Input is the `metrics.json` dict written by `evaluation.evaluate` (plus the raw per-image
predictions for the scatter plot). Output: PNG figures and a self-contained
`report.html` (figures embedded as base64, no external files or scripts), optionally
side by side with a second model's metrics (`--compare`).
"""
import base64
import html
import io
import os

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from agegender import metrics as metrics_lib  # noqa: E402


def _label(m, default):
    return m.get("name") or default


def _save(fig, path):
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    with tf.io.gfile.GFile(path, "wb") as f:  # gs:// output dirs too
        f.write(buf.getvalue())
    plt.close(fig)
    return path


def plot_scatter(true_age, pred_age, path):
    fig, ax = plt.subplots(figsize=(5.5, 5))
    true_age = np.asarray(true_age, float)
    pred_age = np.asarray(pred_age, float)
    top = max(100.0, float(true_age.max(initial=0)), float(pred_age.max(initial=0))) + 2
    ax.scatter(true_age, pred_age, s=6, alpha=0.35, edgecolors="none")
    ax.plot([0, top], [0, top], color="black", lw=1, label="perfect")
    for k in (5, 10):
        ax.plot([0, top], [k, top + k], color="grey", lw=0.6, ls="--")
        ax.plot([0, top], [-k, top - k], color="grey", lw=0.6, ls="--")
    ax.set(xlim=(0, top), ylim=(0, top), xlabel="true age", ylabel="predicted age",
           title="Predicted vs true age (dashed: +-5, +-10 years)")
    return _save(fig, path)


def plot_mae_per_decade(reports, path):
    decades = [metrics_lib.decade_name(d) for d in range(11)]
    decades = [d for d in decades if any(d in r.get("per_decade", {}) for r, _ in reports)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / len(reports)
    x = np.arange(len(decades))
    for i, (report, name) in enumerate(reports):
        values = [report["per_decade"].get(d, {}).get("mae", np.nan) for d in decades]
        bars = ax.bar(x + (i - (len(reports) - 1) / 2) * width, values, width, label=name)
        ax.bar_label(bars, fmt="%.1f", fontsize=7)
    ax.set_xticks(x, decades)
    ax.set(xlabel="true age decade", ylabel="MAE (years)", title="MAE per age decade")
    ax.legend()
    return _save(fig, path)


def plot_cs_curve(reports, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    ks = list(metrics_lib.CS_THRESHOLDS)
    for report, name in reports:
        ax.plot(ks, [report.get(f"cs@{k}", np.nan) for k in ks], marker="o", label=name)
    ax.set(xlabel="k (years)", ylabel="share with |error| <= k", ylim=(0, 1),
           title="Cumulative score CS@k")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_race_gender(reports, path):
    cells = []
    for report, _ in reports:
        cells += [c for c in report.get("per_race_gender", {}) if c not in cells]
    fig, ax = plt.subplots(figsize=(8, 4))
    if not cells:
        ax.text(0.5, 0.5, "no images with known race and gender", ha="center", va="center")
        ax.set_axis_off()
        return _save(fig, path)
    width = 0.8 / len(reports)
    y = np.arange(len(cells))
    for i, (report, name) in enumerate(reports):
        values = [report["per_race_gender"].get(c, {}).get("mae", np.nan) for c in cells]
        ax.barh(y + (i - (len(reports) - 1) / 2) * width, values, width, label=name)
    counts = [reports[0][0].get("per_race_gender", {}).get(c, {}).get("count", 0) for c in cells]
    ax.set_yticks(y, [f"{c} (n={n})" for c, n in zip(cells, counts)])
    ax.invert_yaxis()
    ax.set(xlabel="MAE (years)", title="Age error by race x gender")
    ax.legend()
    return _save(fig, path)


def plot_gender_reliability(reports, path):
    """Confidence vs accuracy per bin of the gender probability (the diagonal is honest)."""
    fig, ax = plt.subplots(figsize=(5, 4.5))
    ax.plot([0.5, 1.0], [0.5, 1.0], color="black", lw=1, label="calibrated")
    for m, label in reports:
        cal = m.get("gender_calibration") or {}
        rows = cal.get("bins", [])
        if rows:
            ax.plot([r["confidence"] for r in rows], [r["accuracy"] for r in rows], "-o",
                    label=f"{label} (ECE {cal['ece']:.3f})")
    ax.set(xlabel="predicted probability of the predicted gender", ylabel="accuracy",
           title="Gender reliability", xlim=(0.5, 1.0), ylim=(0.0, 1.02))
    ax.legend()
    return _save(fig, path)


def write_plots(report, predictions, output_dir, compare=None):
    """Writes the PNGs; returns {plot name: path}."""
    reports = [(report, _label(report, "this model"))]
    if compare is not None:
        reports.append((compare, _label(compare, "compared")))
    paths = {
        "scatter": plot_scatter(predictions["true_age"], predictions["pred_age"],
                                os.path.join(output_dir, "scatter.png")),
        "mae_per_decade": plot_mae_per_decade(reports, os.path.join(output_dir,
                                                                    "mae_per_decade.png")),
        "cs_curve": plot_cs_curve(reports, os.path.join(output_dir, "cs_curve.png")),
        "race_gender": plot_race_gender(reports, os.path.join(output_dir, "race_gender.png")),
    }
    if report.get("gender_calibration"):
        paths["gender_reliability"] = plot_gender_reliability(
            reports, os.path.join(output_dir, "gender_reliability.png"))
    return paths


def _fmt(value, digits=3):
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return html.escape(str(value))


def _table(header, rows):
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{_fmt(v)}</td>" for v in row) + "</tr>"
                   for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


SUMMARY_KEYS = ("count", "mae", "rmse", "median_abs_error", "mean_signed_error", "cs@5",
                "gender_accuracy")


def summary_rows(report, compare=None):
    rows = []
    for key in SUMMARY_KEYS:
        row = [key, report.get(key)]
        if compare is not None:
            row.append(compare.get(key))
        rows.append(row)
    return rows


def _img(path, alt):
    with tf.io.gfile.GFile(path, "rb") as f:
        data = base64.b64encode(f.read()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _detection_section(report):
    """Photos (--photos): how many had a face found; the metrics are of their largest face."""
    d = report.get("detection")
    if not d:
        return []
    return ["<h2>Face detection (photos)</h2>",
            "<p>Each photo's label belongs to its largest face found; the metrics above are "
            "those faces'. Photos without a face are listed under skipped inputs "
            "(no_face).</p>",
            _table(["photos read", "with a face found", "without", "detection recall",
                    "faces found"],
                   [[d["photos"], d["with_face"], d["no_face"], d["recall"],
                     d["faces_found"]]])]


def _uncertainty_section(report, plot_paths):
    """Bias by predicted decade, and how honest the spread and the gender probability are."""
    parts = ["<h2>Per predicted decade</h2>",
             "<p>Faces grouped by the age the model gave: a bias here is what a user sees.</p>",
             _table(["predicted decade", "count", "MAE", "mean signed error (bias)",
                     "its standard error"],
                    [[d, c["count"], c["mae"], c["mean_signed_error"],
                      c.get("signed_error_standard_error")]
                     for d, c in report.get("per_predicted_decade", {}).items()])]
    u = report.get("uncertainty")
    if u:
        parts += ["<h2>Uncertainty</h2>",
                  _table(["interval", "nominal coverage", "observed coverage",
                          "mean width (years)"],
                         [[k, v["nominal"], v["coverage"], v["mean_width_years"]]
                          for k, v in u.items() if k.startswith("interval_")])]
        if "mae_most_confident" in u:
            parts.append(_table(["most confident share of faces", "MAE"],
                                list(u["mae_most_confident"].items())))
    if "gender_reliability" in plot_paths:
        parts.append(_img(plot_paths["gender_reliability"], "gender reliability"))
    return parts


def _age_band_section(report, compare, names):
    """Children in five-year bands, then wider ones (`metrics.AGE_BANDS`): where old
    photos and the thin teenage decade mislead most."""
    bands = report.get("per_age_band")
    if not bands:
        return []
    header = ["age band", "count", "MAE", "mean signed error (bias)", "its standard error"]
    if compare is not None:
        header.append(f"bias ({names[1]})")
    rows = []
    for band, c in bands.items():
        row = [band, c["count"], c["mae"], c["mean_signed_error"],
               c.get("signed_error_standard_error")]
        if compare is not None:
            row.append(compare.get("per_age_band", {}).get(band, {}).get("mean_signed_error"))
        rows.append(row)
    return ["<h2>Per age band</h2>", _table(header, rows)]


def write_html(report, plot_paths, output_dir, compare=None):
    """Writes the self-contained report.html; returns its path."""
    name = _label(report, "this model")
    names = [name] + ([_label(compare, "compared")] if compare is not None else [])
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>Age and gender evaluation: {html.escape(name)}</title>",
        "<style>body{font-family:sans-serif;max-width:1000px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;"
        "padding:3px 8px;text-align:right}th{background:#f3f3f3}img{max-width:100%}"
        "</style></head><body>",
        f"<h1>Age and gender evaluation</h1><p>Model: <b>{html.escape(str(report.get('model', name)))}</b>"
        f"<br>Data: {html.escape(str(report.get('data', '')))}</p>",
        "<h2>Summary</h2>", _table(["metric"] + names, summary_rows(report, compare)),
        _img(plot_paths["scatter"], "predicted vs true age"),
        "<h2>Per age decade</h2>",
        _img(plot_paths["mae_per_decade"], "MAE per decade"),
    ]
    decade_rows = []
    for decade, cell in report.get("per_decade", {}).items():
        row = [decade, cell["count"], cell["mae"], cell["mean_signed_error"],
               cell.get("signed_error_standard_error")]
        if compare is not None:
            row.append(compare.get("per_decade", {}).get(decade, {}).get("mae"))
        decade_rows.append(row)
    header = ["decade", "count", "MAE", "mean signed error (bias)", "its standard error"]
    if compare is not None:
        header.append(f"MAE ({names[1]})")
    parts += [_table(header, decade_rows)]
    parts += _age_band_section(report, compare, names)
    parts += ["<h2>Cumulative score</h2>",
              _img(plot_paths["cs_curve"], "CS@k curve"),
              _table(["k"] + names, [[f"cs@{k}", report.get(f"cs@{k}")]
                                     + ([compare.get(f"cs@{k}")] if compare else [])
                                     for k in metrics_lib.CS_THRESHOLDS]),
              "<h2>Race x gender</h2>", _img(plot_paths["race_gender"], "race x gender")]
    parts += _detection_section(report)
    parts += _uncertainty_section(report, plot_paths)
    rg_rows = [[cell_name, c["count"], c["mae"], c.get("gender_accuracy")]
               for cell_name, c in report.get("per_race_gender", {}).items()]
    parts.append(_table(["group", "count", "MAE", "gender accuracy"], rg_rows))
    skipped = report.get("skipped", {})
    parts.append(f"<h2>Skipped inputs ({sum(skipped.get('by_reason', {}).values())})</h2>")
    parts.append(_table(["reason", "count"], sorted(skipped.get("by_reason", {}).items())))
    examples = skipped.get("examples", [])[:50]
    if examples:
        parts.append(_table(["input", "reason", "detail"],
                            [[e["source"], e["reason"], e.get("detail", "")] for e in examples]))
    parts.append("</body></html>")
    path = os.path.join(output_dir, "report.html")
    with tf.io.gfile.GFile(path, "w") as f:
        f.write("\n".join(parts))
    return path


def format_summary(report, compare=None):
    """A short plain-text table for the terminal."""
    names = [_label(report, "this model")]
    if compare is not None:
        names.append(_label(compare, "compared"))
    lines = [f"{'metric':<20}" + "".join(f"{n[:18]:>20}" for n in names)]
    for row in summary_rows(report, compare):
        lines.append(f"{row[0]:<20}" + "".join(f"{_fmt(v):>20}" for v in row[1:]))
    return "\n".join(lines)
