"""What is written about a finished class: figures, image and pixel metrics, results per
defect type and the worst misses. Every file is written by temp file + rename."""
import csv
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from data import IMAGE_EXTENSIONS, read_rgb  # noqa: E402
from localization import gradient_map  # noqa: E402
from metrics import PixelMetrics, image_metrics  # noqa: E402
from utils import atomic_write  # noqa: E402

DPI = 80
DEFECTS_CSV = "defects.csv"  # per class folder: columns image (file stem), defect
PER_DEFECT_COLUMNS = ["defect", "images", "auroc", "mean_score", "below_threshold"]
MISSES_COLUMNS = ["kind", "rank", "image", "defect", "score", "threshold"]


def save_figure(fig, path, setting="results_dir"):
    """Save and close a figure through a temp file in the same folder: never half a PNG."""
    path = Path(path)
    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=DPI, format=path.suffix[1:] or "png"),
                     setting=setting)
    finally:
        plt.close(fig)


def write_csv(path, header, rows, setting="results_dir"):
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows)
    atomic_write(path, write, setting=setting)


def mask_at(mask_path, size):
    """Ground truth as a (size, size) bool array, resized with nearest neighbour; None if no mask."""
    if mask_path is None:
        return None
    with Image.open(mask_path) as m:
        return np.asarray(m.convert("L").resize((size, size), Image.NEAREST)) > 0


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


def summary_plot(rows, results_dir, reference_label):
    """Every class's final AUROC (the mean over seeds) beside its reference number."""
    rows = [r for r in rows if r.get("class") != "mean"]
    names = [r["class"] for r in rows]

    def values(key):
        return [np.nan if r.get(key) is None else r[key] for r in rows]
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(max(5, 0.8 * len(names) + 2), 4))
    ax.bar(x - 0.2, values("auroc_last"), 0.4, label="this run (last epoch)")
    ax.bar(x + 0.2, values("reference_auroc"), 0.4, label=reference_label)
    ax.set_xticks(x, names, rotation=45, ha="right")
    ax.set_ylim(0, 1)
    ax.set_ylabel("image AUROC")
    ax.legend(loc="lower right", fontsize="small")
    fig.tight_layout()
    save_figure(fig, Path(results_dir) / "summary.png")


def read_defects_csv(path):
    """{image stem: defect type} from a class's defects.csv; {} when there is none."""
    if not Path(path).is_file():
        return {}
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"image", "defect"} <= set(reader.fieldnames or ()):
            warnings.warn(f"'{path}' lacks the columns image,defect (image = file stem), found "
                          f"{reader.fieldnames}; defect types are taken from the test folders")
            return {}
        table = {}
        for row in reader:
            name = Path(row["image"])
            table[name.stem if name.suffix.lower() in IMAGE_EXTENSIONS else row["image"]] = \
                row["defect"]
    return table


def defect_types(test_set, class_dir):
    """Type of each test image: from defects.csv for anomalous images listed there, else the
    test sub-folder ('good' for normal images; MVTec test/<defect>, VisA test/anomaly)."""
    table = read_defects_csv(Path(class_dir) / DEFECTS_CSV)
    return [(table.get(Path(p).stem) if label == 1 else None) or Path(p).parent.name
            for p, label in zip(test_set.paths, test_set.labels)]


def per_defect_rows(labels, scores, types, threshold):
    """Per anomalous type: images, AUROC against all normal test images, mean score, and how
    many score at or below the threshold (missed)."""
    normal = scores[labels == 0]
    rows = []
    for name in sorted({t for t, label in zip(types, labels) if label == 1}):
        own = scores[[label == 1 and t == name for t, label in zip(types, labels)]]
        both = np.concatenate([np.zeros(len(normal)), np.ones(len(own))])
        auroc = image_metrics(both, np.concatenate([normal, own]))["auroc"]
        below = "" if threshold is None else int((own <= threshold).sum())
        rows.append([name, len(own), repr(float(auroc)), repr(float(own.mean())), below])
    return rows


def worst_misses(labels, scores, k):
    """[(kind, rank, index)]: the k anomalous images with the lowest scores, then the k normal
    ones with the highest."""
    anomalous, normal = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    low = anomalous[np.argsort(scores[anomalous], kind="stable")][:k]
    high = normal[np.argsort(-scores[normal], kind="stable")][:k]
    return ([("missed_anomaly", r + 1, int(i)) for r, i in enumerate(low)]
            + [("false_alarm", r + 1, int(i)) for r, i in enumerate(high)])


def write_misses(out, misses, test_set, scores, types, threshold, heat_of):
    """misses/<kind>_<rank>_<folder>_<stem>.png figures and misses/misses.csv."""
    rows = []
    for kind, rank, i in misses:
        path = Path(test_set.paths[i])
        score = float(scores[i])
        save_map_figure(out / f"{kind}_{rank:02d}_{path.parent.name}_{path.stem}.png", path,
                        heat_of(i), test_set.mask_paths[i], score, threshold,
                        label=f"({types[i]}, {kind.replace('_', ' ')} #{rank})")
        rows.append([kind, rank, str(path), types[i], repr(score),
                     "" if threshold is None else repr(float(threshold))])
    write_csv(out / "misses.csv", MISSES_COLUMNS, rows)


class MapSource:
    """Gradient maps of test images, each computed once when asked for; those in `keep` are
    held for later figures, the others are dropped after use (bounded memory)."""

    def __init__(self, model, test_set, cfg, device, keep):
        self.model, self.test_set, self.cfg, self.device = model, test_set, cfg, device
        self.keep, self.held = set(keep), {}

    def __call__(self, i):
        if i in self.held:
            return self.held[i]
        heat = gradient_map(self.model, self.test_set.images[i], self.cfg["n_transforms_test"],
                            self.device, self.cfg["backbone_batch"])
        if i in self.keep:
            self.held[i] = heat
        return heat


def pixel_report(heat_of, test_set, cfg):
    """Exact pixel AUROC and AUPRO at img_size x img_size over the normal test images (all
    pixels normal) and the anomalous ones with a mask; anomalous images without a mask are
    left out and counted. None when pixel_auroc is off or the class has no masks."""
    labels, masks = test_set.labels, test_set.mask_paths
    missing = sum(1 for label, m in zip(labels, masks) if label == 1 and m is None)
    report = {"pixel_auroc": None, "aupro": None, "pixel_images": 0, "masks_missing": missing}
    if not cfg["pixel_auroc"] or all(m is None for m in masks):
        return report
    size, acc = cfg["img_size"], PixelMetrics()
    covered = [i for i in range(len(test_set)) if labels[i] == 0 or masks[i] is not None]
    for i in covered:
        truth = mask_at(masks[i], size) if labels[i] == 1 else np.zeros((size, size), bool)
        acc.add(np.asarray(heat_of(i), dtype=np.float32), truth)
    report.update(acc.compute(), pixel_images=len(covered))
    return report


def map_figures(out, indices, test_set, scores, threshold, heat_of):
    """maps/<folder>_<stem>.png of the grad_map_viz images."""
    for i in indices:
        path = Path(test_set.paths[i])
        save_map_figure(out / f"{path.parent.name}_{path.stem}.png", path, heat_of(i),
                        test_set.mask_paths[i], float(scores[i]), threshold)


def class_reports(model, state, train_set, test_set, cfg, class_name, device, out_dir):
    """Write the figures and analysis files of a finished class into out_dir and return its
    metrics (also stored in state["metrics"]): aupr, f1_max, f1_threshold, pixel_auroc, aupro,
    pixel_images, masks_missing."""
    out = Path(out_dir)
    labels, scores = test_set.labels, state["test_scores"].numpy()
    threshold = state.get("threshold")
    plot_auroc_history(out / "auroc.png", state["auroc_history"])
    plot_roc(out / "roc.png", labels, scores)
    plot_score_histogram(out / "scores.png", labels, scores, threshold)
    image = image_metrics(labels, scores)
    metrics = {k: image[k] for k in ("aupr", "f1_max", "f1_threshold")}
    types = defect_types(test_set, Path(cfg["dataset_path"]) / class_name)
    write_csv(out / "per_defect.csv", PER_DEFECT_COLUMNS,
              per_defect_rows(labels, scores, types, threshold))
    misses = worst_misses(labels, scores, cfg["n_misses"])
    shown = [i for i in range(len(test_set)) if cfg["grad_map_viz"]
             and (labels[i] == 1 or cfg["grad_map_all"])]
    heat_of = MapSource(model, test_set, cfg, device, [i for _, _, i in misses] + shown)
    metrics.update(pixel_report(heat_of, test_set, cfg))
    if misses:
        write_misses(out / "misses", misses, test_set, scores, types, threshold, heat_of)
    map_figures(out / "maps", shown, test_set, scores, threshold, heat_of)
    state["metrics"] = metrics
    return metrics
