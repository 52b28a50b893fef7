"""What is written about a finished run: its figures, image and pixel metrics, results per
defect type and the worst misses. Every file is written by temp file + rename."""
import csv
import warnings
from pathlib import Path

import numpy as np

from layout import IMAGE_EXTENSIONS
from harness.health import divergence_reason
from harness.records import HISTORY_NAME, write_history
from harness.figures import plot_auroc_history, plot_roc, plot_score_histogram, save_map_figure
from harness.per_size import AREA_FIGURE, AREAS_NAME, PER_SIZE_NAME, write_per_size
from harness.transforms_curve import (CURVE_FIGURE, CURVE_NAME, remove_curve, run_facts,
                                      write_transforms_curve)
from localization import MapSource, pixel_report
from metrics import image_metrics
from spreadsheet import csv_cell_text
from files import bounded_name, write_csv

DEFECTS_CSV = "defects.csv"  # per class folder: columns image (file stem), defect
PER_DEFECT_COLUMNS = ["defect", "images", "auroc", "mean_score", "below_threshold"]
MISSES_COLUMNS = ["kind", "rank", "image", "defect", "score", "threshold", "vs_threshold", "figure"]
# the anomalous images with the lowest scores and the normal ones with the highest: the ones
# nearest to being missed or false alarms, whichever side of the threshold they fall on
LOWEST_ANOMALOUS, HIGHEST_NORMAL = "lowest_scored_anomalous", "highest_scored_normal"
MISSES_FOLDER, MAPS_FOLDER = "misses", "maps"


def read_defects_csv(path):
    """{image stem: defect type} from a class's defects.csv; {} when there is none."""
    if not Path(path).is_file():
        return {}
    with open(path, newline="", encoding="utf-8-sig") as f:  # spreadsheets write a BOM
        reader = csv.DictReader(f)
        if not {"image", "defect"} <= set(reader.fieldnames or ()):
            warnings.warn(f"'{path}' lacks the columns image,defect (image = file stem), found "
                          f"{reader.fieldnames}; defect types are taken from the test folders")
            return {}
        table = {}
        for row in reader:  # prepare_visa.py writes labels spreadsheet-safe: the text back
            image, defect = csv_cell_text(row["image"]), csv_cell_text(row["defect"])
            name = Path(image)
            table[name.stem if name.suffix.lower() in IMAGE_EXTENSIONS else image] = defect
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
    return ([(LOWEST_ANOMALOUS, r + 1, int(i)) for r, i in enumerate(low)]
            + [(HIGHEST_NORMAL, r + 1, int(i)) for r, i in enumerate(high)])


def side_of_threshold(score, threshold):
    """'above' (verdict anomalous), 'below' (at or below: verdict normal), '' without one."""
    if threshold is None:
        return ""
    return "above" if score > threshold else "below"


def write_misses(out, misses, test_set, scores, types, threshold, heat_of):
    """misses/<kind>_<rank>_<folder>_<stem>.png figures and misses/misses.csv."""
    rows = []
    for kind, rank, i in misses:
        path = Path(test_set.paths[i])
        score = float(scores[i])
        side = side_of_threshold(score, threshold)
        figure = bounded_name(f"{kind}_{rank:02d}_{path.parent.name}_{path.stem}", ".png")
        save_map_figure(out / figure, path, heat_of(i), test_set.mask_paths[i], score, threshold,
                        label=f"({types[i]}, {kind.replace('_', ' ')} #{rank})")
        rows.append([kind, rank, str(path), types[i], repr(score),
                     "" if threshold is None else repr(float(threshold)), side, figure])
    write_csv(out / "misses.csv", MISSES_COLUMNS, rows)


def clear_outputs(folder):
    """Remove what an earlier run wrote into a misses/ or maps/ folder (its figures and
    misses.csv), so no figure of another model stays beside this run's. Files of other kinds
    are not ours and stay; the folder goes when nothing else is left."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for path in folder.iterdir():
        if path.is_file() and (path.suffix == ".png" or path.name == "misses.csv"):
            path.unlink()
    if not any(folder.iterdir()):
        folder.rmdir()


RUN_FILES = ("auroc.png", "roc.png", "scores.png", "per_defect.csv", HISTORY_NAME,
             PER_SIZE_NAME, AREAS_NAME, AREA_FIGURE, CURVE_NAME, CURVE_FIGURE)


def remove_reports_before(out, started):
    """After a failed run: the figures and files of ours in its folder written before it
    started belong to an earlier run and would be shown beside this run's record; they go.
    What this run wrote itself, and every file of another name, stays. One second of slack
    for filesystems that keep whole seconds."""
    out = Path(out)
    older = [out / name for name in RUN_FILES]
    for sub in (MISSES_FOLDER, MAPS_FOLDER):
        if (out / sub).is_dir():
            older += [p for p in (out / sub).iterdir()
                      if p.suffix == ".png" or p.name == "misses.csv"]
    for path in older:
        if path.is_file() and path.stat().st_mtime < started - 1:
            path.unlink()
    for sub in (MISSES_FOLDER, MAPS_FOLDER):
        if (out / sub).is_dir() and not any((out / sub).iterdir()):
            (out / sub).rmdir()


def map_figures(out, indices, test_set, scores, threshold, heat_of):
    """maps/<folder>_<stem>.png of the grad_map_viz images."""
    for i in indices:
        path = Path(test_set.paths[i])
        save_map_figure(out / bounded_name(f"{path.parent.name}_{path.stem}", ".png"), path, heat_of(i),
                        test_set.mask_paths[i], float(scores[i]), threshold)


# what the metrics say on their own about a one-kind test set; the user was told once already
INTERNAL_ONE_KIND = ("image_metrics: labels hold a single class", "PixelMetrics: need both")


def transforms_curve(trained, cfg, device, out):
    """The test AUROC and scoring time at cfg's transforms_curve rotation counts; with none,
    the curve of an earlier model in this folder goes (a read-back keeps its own)."""
    if cfg["transforms_curve"]:
        write_transforms_curve(out, trained.model, trained.test_set.images,
                               trained.test_set.labels, cfg["transforms_curve"], device,
                               run_facts(cfg, trained.state), cfg["n_transforms_test"])
    elif not trained.finished_before:
        remove_curve(out)


def class_reports(trained, cfg, device, out_dir):
    """_class_reports without the metrics' internal warnings when the test set holds one kind
    of image only: loading the class said so once, in the user's words."""
    with warnings.catch_warnings():
        if np.unique(trained.test_set.labels).size < 2:
            for start in INTERNAL_ONE_KIND:
                warnings.filterwarnings("ignore", message=start)
        return _class_reports(trained, cfg, device, out_dir)


def _class_reports(trained, cfg, device, out_dir):
    """Write the figures and analysis files of a finished run (train.Trained) into out_dir and
    return its metrics: aupr, f1_max, f1_threshold, pixel_auroc, aupro, pixel_images,
    masks_missing, divergence (None, or why the run counts as diverged)."""
    model, state, test_set = trained.model, trained.state, trained.test_set
    class_name, out = state["class_name"], Path(out_dir)
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
    write_per_size(out, test_set, scores, threshold)
    misses = worst_misses(labels, scores, cfg["n_misses"])
    shown = [i for i in range(len(test_set)) if cfg["grad_map_viz"]
             and (labels[i] == 1 or cfg["grad_map_all"])]
    heat_of = MapSource(model, test_set, cfg, device, [i for _, _, i in misses] + shown)
    metrics.update(pixel_report(heat_of, test_set, cfg))
    clear_outputs(out / MISSES_FOLDER)
    if misses:
        write_misses(out / MISSES_FOLDER, misses, test_set, scores, types, threshold, heat_of)
    clear_outputs(out / MAPS_FOLDER)
    map_figures(out / MAPS_FOLDER, shown, test_set, scores, threshold, heat_of)
    transforms_curve(trained, cfg, device, out)
    metrics["divergence"] = divergence_reason(state)
    write_history(out, state, cfg["sub_epochs"])
    return metrics
