"""The results table: one row per run (class, seed), aggregated per class over seeds.

results_per_seed.csv keeps every run's row; results.csv and results.md hold one row per
class (with several seeds: the mean and, beside it, the sample standard deviation over the
seeds that finished) and a mean row over the classes.
"""
import math
from pathlib import Path

import numpy as np

from harness.figures import summary_plot
from harness.references import REFERENCES
from utils import atomic_write, fmt, write_csv

# (key, header); the metric columns are averaged over seeds and classes
METRIC_COLUMNS = [
    ("auroc_last", "image AUROC (last epoch)"),
    ("auroc_max", "max AUROC (test-selected)"),
    ("epoch_max", "epoch of max"),
    ("aupr", "AUPR"),
    ("f1_max", "F1-max"),
    ("pixel_auroc", "pixel AUROC"),
    ("aupro", "AUPRO (FPR ≤ 0.3)"),
]
TIME_COLUMNS = [("train_minutes", "train+eval minutes")]  # per run; mean over seeds
COUNT_COLUMNS = [
    ("train_images", "train images"),
    ("test_normal", "test normal"),
    ("test_anomalous", "test anomalous"),
    ("skipped_images", "skipped images"),
    ("masks_missing", "anomalous without mask"),
]
MEAN_KEYS = ("auroc_last", "auroc_max", "aupr", "f1_max", "pixel_auroc", "aupro",
             "reference_auroc")


def run_columns(reference_header):
    """Columns of results_per_seed.csv: one row per (class, seed) run."""
    return ([("class", "class"), ("seed", "seed")] + METRIC_COLUMNS
            + [("reference_auroc", reference_header)] + COUNT_COLUMNS + TIME_COLUMNS
            + [("status", "status")])


def class_columns(reference_header, n_seeds):
    """Columns of results.csv / results.md; with several seeds each metric has a *_std twin."""
    metrics = METRIC_COLUMNS
    if n_seeds > 1:
        metrics = [c for key, head in METRIC_COLUMNS
                   for c in ((key, f"{head} mean"), (f"{key}_std", f"{head} std"))]
    seeds = [("seeds_ok", "seeds finished")] if n_seeds > 1 else []
    return ([("class", "class")] + metrics + [("reference_auroc", reference_header)]
            + COUNT_COLUMNS + TIME_COLUMNS + seeds + [("status", "status")])


def _values(rows, key):
    return [r[key] for r in rows if isinstance(r.get(key), (int, float))
            and not isinstance(r.get(key), bool) and not math.isnan(r[key])]


def aggregate_class(class_name, runs):
    """One class's row from its runs: metrics as mean and sample std (ddof=1) over the runs
    that finished, counts from the first run, status ok only when every run is."""
    ok = [r for r in runs if r.get("status") == "ok"]
    row = {"class": class_name, "reference_auroc": runs[0].get("reference_auroc"),
           "seeds_ok": f"{len(ok)}/{len(runs)}"}
    for key, _ in METRIC_COLUMNS + TIME_COLUMNS:
        values = _values(ok, key)
        row[key] = (values[0] if len(values) == 1 else float(np.mean(values))) if values else None
        row[f"{key}_std"] = float(np.std(values, ddof=1)) if len(values) > 1 else None
    source = ok[0] if ok else runs[0]
    for key, _ in COUNT_COLUMNS:
        row[key] = source.get(key)
    failed = [f"seed {r['seed']}: {r['status']}" if len(runs) > 1 else r["status"]
              for r in runs if r.get("status") != "ok"]
    row["status"] = "; ".join(failed) if failed else "ok"
    return row


def aggregate(runs, class_names):
    """Class rows in the order of class_names, from run rows in any order."""
    return [aggregate_class(c, [r for r in runs if r["class"] == c]) for c in class_names
            if any(r["class"] == c for r in runs)]


def mean_row(rows):
    """Mean over the classes that have a value, for the metric and reference columns."""
    mean = {"class": "mean"}
    for key in MEAN_KEYS:
        values = _values(rows, key)
        mean[key] = float(np.mean(values)) if values else None
    return mean


def cell(row, key, n_seeds):
    """A table cell; with several seeds a metric reads 'mean ± std'."""
    if n_seeds > 1 and row.get(f"{key}_std") is not None:
        return f"{fmt(row.get(key))} ± {fmt(row[f'{key}_std'])}"
    return fmt(row.get(key))


def csv_value(value):
    """Full precision in the CSV files (means can be recomputed from them); 'n/a' when missing."""
    if isinstance(value, float) and not math.isnan(value):
        return repr(value)
    return fmt(value)


def write_table_csv(path, rows, columns):
    """rows (dicts) as a CSV of the given (key, header) columns, keyed by the keys."""
    write_csv(path, [c for c, _ in columns], [[csv_value(row.get(c)) for c, _ in columns]
                                               for row in rows])


def write_markdown(path, rows, columns, n_seeds):
    """Markdown table; with several seeds the *_std columns fold into 'mean ± std' cells."""
    shown = [(k, h[:-5] if h.endswith(" mean") else h) for k, h in columns
             if not (n_seeds > 1 and k.endswith("_std"))]
    lines = ["| " + " | ".join(h for _, h in shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(cell(row, k, n_seeds) for k, _ in shown) + " |" for row in rows]
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"),
                 setting="results_dir")


def reference_header(name):
    """Header of the reference column: whose numbers they are, so nobody takes them for a run."""
    return "reference AUROC" if name == "none" else f"reference AUROC: {REFERENCES[name]['label']}"


def write_results(runs, class_names, n_seeds, results_dir, reference):
    """results_per_seed.csv, results.csv, results.md and summary.png; returns the class rows + mean row."""
    rows = aggregate(runs, class_names)
    mean = mean_row(rows)
    # the published mean, not a mean over the classes whose number could be confirmed
    mean["reference_auroc"] = None if reference == "none" else REFERENCES[reference].get("mean")
    rows.append(mean)
    header = reference_header(reference)
    columns = class_columns(header, n_seeds)
    folder = Path(results_dir)
    write_table_csv(folder / "results_per_seed.csv", runs, run_columns(header))
    write_table_csv(folder / "results.csv", rows, columns)
    write_markdown(folder / "results.md", rows, columns, n_seeds)
    summary_plot(rows, folder, header)
    return rows
