"""Image AUROC by defect size. DifferNet pools each feature map to one value per channel, so a
defect covering a tiny part of the image is where a global method should fail; these tables
show whether it does, per run: per_size.csv (one row per defect-area bin, each bin's anomalous
images against all normal test images), defect_areas.csv (area and score per anomalous image)
and score_vs_area.png."""
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from harness.figures import plt, save_figure
from masks import read_mask
from files import write_csv

PER_SIZE_NAME, AREAS_NAME, AREA_FIGURE = "per_size.csv", "defect_areas.csv", "score_vs_area.png"
# (label, from, to) of the fraction of the image a defect's mask covers: from <= area < to
AREA_BINS = [("< 0.1 %", 0.0, 0.001), ("0.1-1 %", 0.001, 0.01), ("1-10 %", 0.01, 0.1),
             ("> 10 %", 0.1, float("inf"))]
NO_MASK = "no mask"  # anomalous images without a ground-truth mask: counted apart
PER_SIZE_COLUMNS = ["area_bin", "area_from", "area_to", "images", "auroc", "mean_score",
                    "below_threshold"]
AREAS_COLUMNS = ["image", "defect_area", "score", "vs_threshold"]


def mask_area(mask_path):
    """Fraction of the image the mask's defect pixels (> 0) cover, at the mask's own size."""
    return float((np.asarray(read_mask(mask_path)) > 0).mean())


def area_bin(area):
    """The label of the AREA_BINS bin holding an area; NO_MASK for None."""
    if area is None:
        return NO_MASK
    return next(label for label, low, high in AREA_BINS if low <= area < high)


def bin_auroc(normal, own):
    """AUROC of a group of anomalous scores against all normal ones; None when either is empty."""
    if len(normal) == 0 or len(own) == 0:
        return None
    labels = np.concatenate([np.zeros(len(normal)), np.ones(len(own))])
    return float(roc_auc_score(labels, np.concatenate([normal, own])))


def per_size_rows(labels, scores, areas, threshold):
    """One row per area bin (every bin listed, empty ones with 0 images) and a NO_MASK row when
    an anomalous image has no mask. areas: per test image, None for normal images and for
    anomalous ones without a mask."""
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    normal = scores[labels == 0]
    bins = [area_bin(a) if label == 1 else None for a, label in zip(areas, labels)]
    groups = [(label, low, high) for label, low, high in AREA_BINS]
    if NO_MASK in bins:
        groups.append((NO_MASK, None, None))
    rows = []
    for name, low, high in groups:
        own = scores[[b == name for b in bins]]
        auroc = bin_auroc(normal, own)
        below = "" if threshold is None or not len(own) else int((own <= threshold).sum())
        rows.append([name, "" if low is None else repr(low), "" if high is None else repr(high),
                     len(own), "" if auroc is None else repr(auroc),
                     repr(float(own.mean())) if len(own) else "", below])
    return rows


def test_areas(test_set):
    """Defect area per test image: None for normal images and anomalous ones without a mask."""
    return [mask_area(m) if label == 1 and m is not None else None
            for label, m in zip(test_set.labels, test_set.mask_paths)]


def plot_score_vs_area(path, labels, scores, areas, threshold):
    """Anomalous images' scores against their defect area (log scale), the normal images' score
    range as a band, the threshold as a line and the bin edges dotted."""
    labels, scores = np.asarray(labels), np.asarray(scores)
    shown = [i for i, a in enumerate(areas) if labels[i] == 1 and a is not None]
    fig, ax = plt.subplots(figsize=(6, 4))
    normal = scores[labels == 0]
    if len(normal):
        ax.axhspan(normal.min(), normal.max(), color="tab:blue", alpha=0.15,
                   label=f"normal test images' scores ({len(normal)})")
    x = np.array([max(areas[i], 1e-4) * 100 for i in shown])  # an empty mask sits at 0.01 %
    ax.scatter(x, scores[shown], s=14, color="tab:red", label=f"anomalous images ({len(shown)})")
    if threshold is not None:
        ax.axhline(threshold, color="k", ls="--", label="threshold")
    for _, low, _ in AREA_BINS[1:]:
        ax.axvline(low * 100, color="grey", ls=":", lw=0.8)
    ax.set_xlim(0.01, 100)  # every bin in view, however few its images
    missing = sum(1 for a, label in zip(areas, labels) if label == 1 and a is None)
    ax.set_xscale("log")
    ax.set_xlabel("defect area, % of the image (bins dotted)")
    ax.set_ylabel("anomaly score")
    if missing:
        ax.set_title(f"{missing} anomalous image(s) without a mask not shown", fontsize="small")
    ax.legend(fontsize="small", loc="best")
    fig.tight_layout()
    save_figure(fig, path)


def write_per_size(out, test_set, scores, threshold):
    """per_size.csv, defect_areas.csv and score_vs_area.png of a run in folder out (written only
    when the class has masks; an earlier run's files are removed otherwise)."""
    out, labels = Path(out), test_set.labels
    if all(m is None for m in test_set.mask_paths):
        for name in (PER_SIZE_NAME, AREAS_NAME, AREA_FIGURE):
            (out / name).unlink(missing_ok=True)
        return
    areas = test_areas(test_set)
    write_csv(out / PER_SIZE_NAME, PER_SIZE_COLUMNS,
              per_size_rows(labels, scores, areas, threshold))
    rows = [[str(test_set.paths[i]), "" if areas[i] is None else repr(areas[i]),
             repr(float(scores[i])),
             "" if threshold is None else ("above" if scores[i] > threshold else "below")]
            for i in np.flatnonzero(labels == 1)]
    write_csv(out / AREAS_NAME, AREAS_COLUMNS, rows)
    plot_score_vs_area(out / AREA_FIGURE, labels, scores, areas, threshold)
