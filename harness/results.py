"""The results table: one row per run (class, seed), aggregated per class over seeds.

results_per_seed.csv keeps every run's row; results.csv and results.md hold one row per
class (with several seeds: the mean and, beside it, the sample standard deviation over the
seeds that finished) and a mean row over the classes that finished. The runs come from the
records of every finished run in results_dir (harness/records.py), not only this command's.
"""
import math
from pathlib import Path

import numpy as np

from harness.figures import summary_plot
from harness.groups import group_rows
from harness.references import REFERENCES
from files import atomic_write, write_csv
from utils import fmt

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
MEAN_KEYS = ("auroc_last", "auroc_max", "aupr", "f1_max", "pixel_auroc", "aupro")
NOT_RUN = "not run"  # status of a class of class_names without a finished run


def run_columns(reference_header):
    """Columns of results_per_seed.csv: one row per (class, seed) run."""
    return ([("class", "class"), ("seed", "seed")] + METRIC_COLUMNS
            + [("reference_auroc", reference_header)] + COUNT_COLUMNS + TIME_COLUMNS
            + [("status", "status")])


def class_columns(reference_header, n_seeds):
    """Columns of results.csv / results.md; with several seeds each metric has a *_std twin."""
    metrics, times = METRIC_COLUMNS, TIME_COLUMNS
    if n_seeds > 1:
        metrics, times = with_std(METRIC_COLUMNS), with_std(TIME_COLUMNS)
    seeds = [("seeds_ok", "seeds finished")] if n_seeds > 1 else []
    return ([("class", "class")] + metrics + [("reference_auroc", reference_header)]
            + COUNT_COLUMNS + times + seeds + [("status", "status"),
                                               ("classes_in_mean", "classes in mean")])


def with_std(columns):
    """Each (key, header) as a mean column and its *_std twin."""
    return [c for key, head in columns
            for c in ((key, f"{head} mean"), (f"{key}_std", f"{head} std"))]


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


def aggregate(runs, class_names, references):
    """Class rows in the order of class_names, from run rows in any order; a class without
    a run gets a `not run` row. references: {class: reference AUROC}."""
    rows = []
    for class_name in class_names:
        own = [r for r in runs if r["class"] == class_name]
        row = aggregate_class(class_name, own) if own else {"class": class_name, "status": NOT_RUN}
        rows.append(dict(row, reference_auroc=references.get(class_name)))
    return rows


def mean_row(rows, reference):
    """Mean over the classes that have a value, for the metric columns; its reference and
    classes_in_mean follow mean_reference."""
    mean = {"class": "mean"}
    for key in MEAN_KEYS:
        values = _values(rows, key)
        mean[key] = float(np.mean(values)) if values else None
    averaged = [r for r in rows if _values([r], "auroc_last")]
    mean["classes_in_mean"] = f"{len(averaged)} of {len(rows)}"
    mean["reference_auroc"], mean["reference_note"] = mean_reference(averaged, reference)
    return mean


def mean_reference(averaged, reference):
    """(value, how it was found) of the mean row's reference: the published mean when the
    averaged classes are exactly the reference's classes, the mean of their own reference
    values when they are fewer, n/a when one of them has none."""
    if reference == "none":
        return None, "n/a (reference = 'none')"
    if not averaged:
        return None, "n/a: no class has finished"
    table = REFERENCES[reference]
    values = [r.get("reference_auroc") for r in averaged]
    if any(v is None for v in values):
        return None, "n/a: a class in the mean has no reference value"
    if {r["class"] for r in averaged} == set(table["auroc"]):
        return table["mean"], "the published mean (every class of the reference is in the table)"
    return float(np.mean(values)), (f"the mean of the reference values of the {len(values)} "
                                    f"classes in the mean, not the published mean")


DIGITS = {"epoch_max": 1}  # an epoch number: its mean over seeds needs no four decimals


def cell(row, key, n_seeds):
    """A table cell; with several seeds a metric reads 'mean ± std'."""
    digits = DIGITS.get(key, 4)
    if n_seeds > 1 and row.get(f"{key}_std") is not None:
        return f"{fmt(row.get(key), digits)} ± {fmt(row[f'{key}_std'], digits)}"
    if isinstance(row.get(key), float) and key in DIGITS:
        return fmt(row[key], digits)
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


def markdown_cell(text):
    """A table cell that cannot break its row: `|` escaped, line breaks made spaces."""
    return " ".join(str(text).replace("\\", "\\\\").replace("|", "\\|").splitlines())


def markdown_table(rows, columns, n_seeds, mean):
    """Lines of a Markdown table; with several seeds the *_std columns fold into 'mean ± std'
    cells. The mean row (an object, not a name: a class may be called 'mean') says over how
    many classes it is."""
    shown = [(k, h[:-5] if h.endswith(" mean") else h) for k, h in columns
             if not (n_seeds > 1 and k.endswith("_std")) and k != "classes_in_mean"]
    lines = ["| " + " | ".join(markdown_cell(h) for _, h in shown) + " |",
             "|" + "---|" * len(shown)]
    for row in rows:
        if row is mean or row.get("group"):
            label = "mean" if row is mean else row["class"]
            row = dict(row, **{"class": f"{label} ({row['classes_in_mean']} classes)"})
        cells = [markdown_cell(cell(row, k, n_seeds)) for k, _ in shown]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def write_markdown(path, lines):
    atomic_write(path, lambda tmp: Path(tmp).write_text("\n".join(lines) + "\n"),
                 setting="results_dir")


def reference_header(name):
    """Header of the reference column: whose numbers they are, so nobody takes them for a run."""
    return "reference AUROC" if name == "none" else f"reference AUROC: {REFERENCES[name]['label']}"


def notes(mean, reference, other_lines, groups=()):
    """Lines under the Markdown table: the reference's source, how the mean row's reference
    was found, and the runs left out for their other method settings."""
    lines = [""]
    if reference != "none":
        lines.append(f"Reference: {REFERENCES[reference]['source']}.")
    lines.append(f"Mean row: over {mean['classes_in_mean']} classes; its reference is "
                 f"{mean['reference_note']}.")
    if groups:
        lines.append("Group rows (mean: dataset kind): the mean over the classes of one kind of object "
                     "that finished, out of the kind's classes; their reference is the mean of "
                     "the reference's values of the same classes.")
    if other_lines:
        lines += ["", "Runs with other method settings (not in this table):"]
        lines += [f"- {markdown_cell(line)}" for line in other_lines]
    return lines


def write_results(runs, class_names, results_dir, reference, other_lines=()):
    """results_per_seed.csv, results.csv, results.md and summary.png from run rows (any order);
    other_lines name runs left out. Returns (class rows, mean row)."""
    # the reference of the current command: runs recorded under another are shown against it
    references = REFERENCES.get(reference, {"auroc": {}})["auroc"]
    runs = [dict(r, reference_auroc=references.get(r["class"])) for r in runs]
    rows = aggregate(runs, class_names, references)
    mean = mean_row(rows, reference)
    groups = group_rows(rows, MEAN_KEYS, reference)
    n_seeds = max([sum(r["class"] == c for r in runs) for c in class_names] + [1])
    header = reference_header(reference)
    columns = class_columns(header, n_seeds)
    folder = Path(results_dir)
    write_table_csv(folder / "results_per_seed.csv", runs, run_columns(header))
    write_table_csv(folder / "results.csv", rows + groups + [mean], columns)
    write_markdown(folder / "results.md",
                   markdown_table(rows + groups + [mean], columns, n_seeds, mean)
                   + notes(mean, reference, other_lines, groups))
    summary_plot(rows, folder, header)
    return rows, mean
