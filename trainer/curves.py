"""Plots the trainer writes: learning curves (history.json) and the learning-rate finder.

matplotlib with the Agg backend: files only, no display needed on servers and CI.
"""
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _series(history, key):
    xs = [h["epoch"] for h in history if key in h]
    ys = [h[key] for h in history if key in h]
    return xs, ys


def plot_learning_curves(history, mae_key, path):
    """Loss, age MAE (years) and, when present, gender accuracy per epoch, both phases.

    `mae_key`: the history key of the training age MAE (trainer.keras_metrics.monitor_key).
    """
    panels = [("loss", "loss"), (mae_key, "age MAE (years)")]
    if any("gender_accuracy" in h for h in history):
        panels.append(("gender_accuracy", "gender accuracy"))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4))
    boundary = [h["epoch"] for h in history if h["phase"] == "fine_tune"]
    for ax, (key, title) in zip(np.atleast_1d(axes), panels):
        for prefix, style in (("", "-o"), ("val_", "--s")):
            xs, ys = _series(history, prefix + key)
            if xs:
                ax.plot(xs, ys, style, ms=3, label=("validation" if prefix else "train"))
        if boundary:
            ax.axvline(min(boundary) - 0.5, color="grey", lw=0.8, ls=":")
            ax.text(min(boundary) - 0.4, ax.get_ylim()[1], "fine-tune", va="top",
                    fontsize=8, color="grey")
        ax.set(title=title, xlabel="epoch")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_lr_find(lrs, losses, suggestion, path):
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    if suggestion:
        ax.axvline(suggestion, color="red", ls="--", lw=0.8, label=f"steepest: {suggestion:.2g}")
        ax.legend()
    ax.set(xlabel="learning rate", ylabel="smoothed training loss", title="Learning-rate finder")
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
