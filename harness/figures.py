"""Figures of a run and of the table, each written by temp file + rename (never half a PNG)."""
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen before pyplot loads)
import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from data import read_rgb
from localization import mask_at
from files import atomic_write

DPI = 80


def save_figure(fig, path, setting="results_dir"):
    """Save and close a figure through a temp file in the same folder: never half a PNG."""
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format=path.suffix[1:] or "png"),
                     setting=setting)
    finally:
        plt.close(fig)


def save_map_figure(path, image_path, heat, mask_path, score, threshold, label="",
                    setting="results_dir"):
    """Image | heat overlay | ground truth (when there is a mask), titled with score and threshold."""
    size = heat.shape[-1]
    image = np.asarray(read_rgb(image_path).resize((size, size)))
    truth = mask_at(mask_path, size)
    panels = 2 if truth is None else 3
    fig, axes = plt.subplots(1, panels, figsize=(4 * panels, 4.3))
    axes[0].imshow(image)
    axes[0].set_title(f"{Path(image_path).name} {label}".strip())
    axes[1].imshow(image)
    axes[1].imshow(np.asarray(heat), cmap="jet", alpha=0.5)
    if threshold is None:
        axes[1].set_title(f"score {score:.4f}")
    else:
        verdict = "anomalous" if score > threshold else "normal"
        axes[1].set_title(f"score {score:.4f}, threshold {threshold:.4f}: {verdict}")
    if truth is not None:
        axes[2].imshow(truth, cmap="gray")
        axes[2].set_title("ground truth")
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    save_figure(fig, path, setting)


def plot_auroc_history(path, history):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.plot(range(1, len(history) + 1), history, marker="o")
    ax.set_xlabel("meta epoch")
    ax.set_ylabel("image AUROC")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    save_figure(fig, path)


def plot_roc(path, labels, scores):
    fig, ax = plt.subplots(figsize=(4, 4))
    if len(set(labels.tolist())) == 2:
        fpr, tpr, _ = roc_curve(labels, scores)
        ax.plot(fpr, tpr, label=f"AUROC {roc_auc_score(labels, scores):.4f}")
        ax.legend(loc="lower right")
    ax.plot([0, 1], [0, 1], "k--", lw=0.8)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    fig.tight_layout()
    save_figure(fig, path)


def plot_score_histogram(path, labels, scores, threshold):
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(scores.min(), scores.max(), 30)
    ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="normal")
    ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="anomalous")
    if threshold is not None:
        ax.axvline(threshold, color="k", ls="--", label="threshold")
    ax.set_xlabel("anomaly score")
    ax.legend()
    fig.tight_layout()
    save_figure(fig, path)


LABEL_CHARS = 32  # a longer class name is cut on the plot's axis (the table keeps it whole)


def axis_labels(names):
    """Class names short enough for an axis: a long one is cut with '…' (and numbered when two
    cut names would read the same), so no label is clipped and the bars keep their room."""
    labels = [n if len(n) <= LABEL_CHARS else n[:LABEL_CHARS - 1] + "…" for n in names]
    return [f"{label} ({i + 1})" if labels.count(label) > 1 else label
            for i, label in enumerate(labels)]


def summary_plot(rows, results_dir, reference_label):
    """Every class's final AUROC (the mean over seeds) beside its reference number; rows are
    the class rows only (the mean row is not passed: a class may be called 'mean')."""
    names = axis_labels([r["class"] for r in rows])

    def values(key):
        return [np.nan if r.get(key) is None else r[key] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(6, 0.8 * len(names) + 2), 4.5))
    ax.bar(x - 0.2, values("auroc_last"), 0.4, label="these runs (last epoch, mean over seeds)")
    ax.bar(x + 0.2, values("reference_auroc"), 0.4, label=reference_label)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("image AUROC")
    # above the axes: inside, it would hide the bars it explains
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), fontsize="small")
    fig.tight_layout()
    save_figure(fig, Path(results_dir) / "summary.png")
