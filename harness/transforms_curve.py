"""What each added test rotation buys, and what it costs: a finished model scores its class's
own test set with 1, 2, 4, ... evenly spaced rotations (config transforms_curve), through the
scoring path of training's evaluation (scoring.score_images, angles i*360/n as evaluate.py uses),
giving the image AUROC and the scoring time per count: transforms_curve.csv and .png.

With test_rotations='fixed', the count n_transforms_test scores exactly as the run's own last
evaluation did; the CSV says so in its run_auroc column, and a difference is warned about."""
import csv
import time
import warnings
from pathlib import Path

import numpy as np
import torch

from batches import rotation_angles
from harness.figures import plt, save_figure
from metrics import image_metrics
from scoring import score_images
from files import write_csv

CURVE_NAME, CURVE_FIGURE = "transforms_curve.csv", "transforms_curve.png"
CURVE_COLUMNS = ["rotations", "auroc", "seconds", "ms_per_image", "run_auroc"]


def timed_scores(model, images, n_rotations, device):
    """(scores, seconds) of every image with n evenly spaced rotations; the time ends when the
    scores are on the host (score_images reads them back), so it is the device's time too."""
    angles = rotation_angles(len(images), n_rotations, "fixed", None)
    started = time.perf_counter()
    scores = score_images(model, images, angles, device)
    return scores, time.perf_counter() - started


def run_match(run, n_rotations, scores):
    """The run's own AUROC where this count is the one its evaluation used with fixed angles
    (then the scores must be the run's, bit for bit); None elsewhere."""
    if run is None or run["test_rotations"] != "fixed" or n_rotations != run["n_transforms_test"]:
        return None
    if not np.array_equal(scores, run["test_scores"]):
        warnings.warn(f"the transforms curve's scores at {n_rotations} rotations differ from the "
                      f"run's own last evaluation (largest difference "
                      f"{np.abs(scores - run['test_scores']).max():.3g}); its AUROC there is not "
                      f"the run's")
    return run["auroc"]


def curve_rows(model, images, labels, counts, device, run=None):
    """[rotations, auroc, seconds, ms_per_image, run_auroc] per count. run: None, or a dict of
    the run's test_rotations, n_transforms_test, test_scores and auroc."""
    labels = np.asarray(labels)
    score_images(model, images[:1], rotation_angles(1, 1, "fixed", None), device)  # warm-up
    rows = []
    for n in counts:
        scores, seconds = timed_scores(model, images, n, device)
        auroc = (image_metrics(labels, scores)["auroc"] if np.unique(labels).size == 2
                 else float("nan"))
        matched = run_match(run, n, scores)
        rows.append([n, repr(float(auroc)), repr(seconds), repr(1000 * seconds / len(images)),
                     "" if matched is None else repr(float(matched))])
    return rows


def plot_curve(path, rows, run_rotations):
    """AUROC (left axis) and scoring time per image (right axis) against the rotation count."""
    counts = [r[0] for r in rows]
    aurocs = [float(r[1]) for r in rows]
    ms = [float(r[3]) for r in rows]
    fig, ax = plt.subplots(figsize=(6, 3.8))
    ax.plot(counts, aurocs, marker="o", color="tab:blue", label="image AUROC")
    ax.set_xscale("log", base=2)
    ax.set_xticks(counts, [str(n) for n in counts])
    ax.set_xlabel("evenly spaced rotations per test image")
    ax.set_ylabel("image AUROC", color="tab:blue")
    finite = [a for a in aurocs if np.isfinite(a)]
    if finite:
        ax.set_ylim(max(0.0, min(finite) - 0.05), 1.005)
    if run_rotations in counts:
        ax.axvline(run_rotations, color="grey", ls=":",
                   label=f"the run's n_transforms_test ({run_rotations})")
    time_ax = ax.twinx()
    time_ax.plot(counts, ms, marker="s", color="tab:orange", label="scoring time")
    time_ax.set_ylabel("ms per test image", color="tab:orange")
    time_ax.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = time_ax.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize="small", loc="lower right")
    fig.tight_layout()
    save_figure(fig, path)


def write_transforms_curve(out, model, images, labels, counts, device, run=None,
                           run_rotations=None):
    """transforms_curve.csv and transforms_curve.png in folder out; returns the rows."""
    with torch.no_grad():
        rows = curve_rows(model, images, labels, counts, device, run)
    write_csv(Path(out) / CURVE_NAME, CURVE_COLUMNS, rows)
    plot_curve(Path(out) / CURVE_FIGURE, rows, run_rotations)
    return rows


def remove_curve(out):
    """An earlier model's curve does not stay beside this run's results."""
    for name in (CURVE_NAME, CURVE_FIGURE):
        (Path(out) / name).unlink(missing_ok=True)


def run_facts(cfg, state):
    """What run_match compares against: the run's evaluation settings, last scores and AUROC."""
    return {"test_rotations": cfg["test_rotations"], "n_transforms_test": cfg["n_transforms_test"],
            "test_scores": state["test_scores"].numpy(), "auroc": state["auroc_history"][-1]}


def curve_counts_of(path):
    """The rotation counts a transforms_curve.csv holds; None when there is none."""
    if not Path(path).is_file():
        return None
    with open(path, newline="", encoding="utf-8") as f:
        return [int(r["rotations"]) for r in csv.DictReader(f)]
