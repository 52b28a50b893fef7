"""Why a class is hard, over all runs: the per-size AUROCs (harness/per_size.py) and the
transforms curves (harness/transforms_curve.py) of each run, averaged per class over its seeds
like the results table's columns, as results_per_size.csv, results_transforms.csv, sections of
results.md, and the tables and figures of index.html."""
import csv
import math
from pathlib import Path

import numpy as np

from harness.per_size import AREA_BINS, AREA_FIGURE, NO_MASK, PER_SIZE_NAME
from harness.transforms_curve import CURVE_FIGURE, CURVE_NAME
from files import atomic_write, write_csv
from utils import fmt

SIZE_LABELS = [label for label, _, _ in AREA_BINS] + [NO_MASK]


def _rows(path):
    if not Path(path).is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _number(text):
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(value) else value


def mean_std(values):
    """(mean, sample std) of the values that exist; std only with two or more."""
    values = [v for v in values if v is not None]
    if not values:
        return None, None
    return float(np.mean(values)), (float(np.std(values, ddof=1)) if len(values) > 1 else None)


def by_class(records, classes):
    """[(class, [run folder, ...])] in table order, runs ordered by seed."""
    out = []
    for name in classes:
        folders = [Path(r["folder"]) for r in sorted(records, key=lambda r: r["seed"])
                   if r["class"] == name and r["row"].get("status") == "ok"]
        if folders:
            out.append((name, folders))
    return out


def size_summary(records, classes):
    """Per class with a per_size.csv: {class, seeds, <bin>: (mean, std, images)}."""
    summary = []
    for name, folders in by_class(records, classes):
        tables = [{r["area_bin"]: r for r in _rows(f / PER_SIZE_NAME)} for f in folders]
        tables = [t for t in tables if t]
        if not tables:
            continue
        row = {"class": name, "seeds": len(tables)}
        for label in SIZE_LABELS:
            found = [t[label] for t in tables if label in t]
            if found:
                mean, std = mean_std([_number(r["auroc"]) for r in found])
                row[label] = (mean, std, int(found[0]["images"]))
        summary.append(row)
    return summary


def curve_summary(records, classes):
    """Per class with a transforms curve: {class, seeds, counts, <count>: (auroc mean, std,
    ms per image mean)} over the counts every seed's curve holds."""
    summary = []
    for name, folders in by_class(records, classes):
        curves = [{int(r["rotations"]): r for r in _rows(f / CURVE_NAME)} for f in folders]
        curves = [c for c in curves if c]
        if not curves:
            continue
        counts = sorted(set.intersection(*(set(c) for c in curves)))
        row = {"class": name, "seeds": len(curves), "counts": counts}
        for n in counts:
            mean, std = mean_std([_number(c[n]["auroc"]) for c in curves])
            ms, _ = mean_std([_number(c[n]["ms_per_image"]) for c in curves])
            row[n] = (mean, std, ms)
        summary.append(row)
    return summary


def auroc_text(mean, std):
    return fmt(mean) if std is None else f"{fmt(mean)} ± {fmt(std)}"


def size_table(summary):
    """(header, rows of cells): AUROC mean ± std over seeds and the image count per bin."""
    labels = [lab for lab in SIZE_LABELS if any(lab in row for row in summary)]
    header = ["class", "seeds"] + [f"defect area {lab}" for lab in labels]
    body = [[row["class"], str(row["seeds"])]
            + [f"{auroc_text(*row[lab][:2])} ({row[lab][2]} images)" if lab in row else "n/a"
               for lab in labels] for row in summary]
    return header, body


def curve_table(summary):
    """(header, rows of cells): AUROC mean ± std and ms per image at each rotation count."""
    counts = sorted({n for row in summary for n in row["counts"]})
    header = ["class", "seeds"] + [f"{n} rotation{'s' * (n > 1)}" for n in counts]
    body = [[row["class"], str(row["seeds"])]
            + [f"{auroc_text(*row[n][:2])} ({fmt(row[n][2], 1)} ms)" if n in row else "n/a"
               for n in counts] for row in summary]
    return header, body


def size_csv_rows(summary):
    return [[row["class"], row["seeds"], label, *(repr(v) if v is not None else "n/a"
                                                  for v in row[label])]
            for row in summary for label in SIZE_LABELS if label in row]


def curve_csv_rows(summary):
    return [[row["class"], row["seeds"], n, *(repr(v) if v is not None else "n/a"
                                              for v in row[n])]
            for row in summary for n in row["counts"]]


def markdown_lines(size, curve, md_cell):
    """The two sections of results.md (none when no run has the files)."""
    lines = []
    size_note = ("Each bin's anomalous images against all normal test images; area = share of "
                 "the image the ground-truth mask covers; mean ± std over seeds; per run: "
                 "per_size.csv, defect_areas.csv, score_vs_area.png")
    curve_note = ("Image AUROC (mean ± std over seeds) and scoring time per test image with n "
                  "evenly spaced rotations, from the finished model; per run: "
                  "transforms_curve.csv, transforms_curve.png")
    for title, note, table in (
            ("Image AUROC by defect area", size_note, size_table(size) if size else None),
            ("Test-time rotations", curve_note, curve_table(curve) if curve else None)):
        if table is None:
            continue
        header, body = table
        lines += ["", f"## {title}", "", f"{note}.", "",
                  "| " + " | ".join(md_cell(h) for h in header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(md_cell(c) for c in cells) + " |" for cells in body]
    return lines


def write_analysis(results_dir, records, classes, md_cell):
    """results_per_size.csv and results_transforms.csv, and their sections appended to the
    results.md just written (under the tables lock, by temp file + rename)."""
    folder = Path(results_dir)
    size, curve = size_summary(records, classes), curve_summary(records, classes)
    write_csv(folder / "results_per_size.csv",
              ["class", "seeds", "area_bin", "auroc", "auroc_std", "images"], size_csv_rows(size))
    write_csv(folder / "results_transforms.csv",
              ["class", "seeds", "rotations", "auroc", "auroc_std", "ms_per_image"],
              curve_csv_rows(curve))
    extra = markdown_lines(size, curve, md_cell)
    if extra:
        text = (folder / "results.md").read_text() + "\n".join(extra) + "\n"
        atomic_write(folder / "results.md", lambda tmp: Path(tmp).write_text(text),
                     setting="results_dir")
    return size, curve


def html_table(header, body, esc):
    lines = ["<table><tr>" + "".join(f"<th>{esc(h)}</th>" for h in header) + "</tr>"]
    lines += ["<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>" for cells in body]
    return lines + ["</table>"]


def html_summary(size, curve, esc):
    """The two summary tables for the top of index.html."""
    out = []
    if size:
        out += ["<h2>Why a class is hard: image AUROC by defect area</h2>",
                '<p class="note">Each bin\'s anomalous images against all normal test images; '
                "area = share of the image the ground-truth mask covers; mean ± std over "
                "seeds.</p>"] + html_table(*size_table(size), esc)
    if curve:
        out += ["<h2>Why a class is hard: test-time rotations</h2>",
                '<p class="note">Image AUROC and scoring time per test image with n evenly '
                "spaced rotations, from the finished model; mean over seeds.</p>"]
        out += html_table(*curve_table(curve), esc)
    return out


def run_figures(folder):
    """(file name, caption) of a run's analysis figures that exist."""
    return [(name, caption) for name, caption in (
        (AREA_FIGURE, "anomalous images' score against defect area, with the threshold"),
        (CURVE_FIGURE, "test AUROC and scoring time against rotations per image"))
        if (Path(folder) / name).is_file()]
