"""Rebuild the results table and the HTML report from every run record in results_dir.

Called by every command after its runs (and alone by --report_only=True). Two commands that
finish at the same moment take turns through a short lock on results_dir/tables.lock; each
wrote its own records before, so whichever rebuilds last sees both.
"""
import fcntl
import sys
import warnings
from contextlib import contextmanager
from pathlib import Path

from harness.analysis_report import html_summary, write_analysis
from harness.html_report import esc, write_html_report
from harness.records import RECORD_NAME, describe_other, read_records, write_record
from harness.results import markdown_cell, write_results

TABLES_LOCK = "tables.lock"


@contextmanager
def tables_lock(results_dir):
    """Hold results_dir/tables.lock (an OS lock, gone with the process if it dies)."""
    path = Path(results_dir) / TABLES_LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # waits for a rebuild in progress: seconds
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def add_missing_records(cfg, rows, folder_of):
    """Records of rows gathered from other ranks whose run.json is not in this results_dir
    (their machines have their own disks); folder_of(row) is the run's results folder."""
    for row in rows:
        folder = Path(folder_of(row))
        if not (folder / RECORD_NAME).is_file():
            write_record(cfg, folder, row)


def table_classes(class_names, runs):
    """The command's classes in its order, then the classes other commands finished."""
    extra = sorted({r["class"] for r in runs} - set(class_names))
    return list(class_names) + extra


def rebuild_results(cfg, echo=True):
    """results.csv, results_per_seed.csv, results.md, summary.png and index.html from the
    records of the runs with cfg's method settings; returns (class rows, mean row)."""
    results_dir = cfg["results_dir"]
    with tables_lock(results_dir):
        matching, other = read_records(results_dir, cfg)
        other_lines = [describe_other(record, cfg) for record in other]
        if other_lines:
            warnings.warn(f"{len(other_lines)} run(s) in '{results_dir}' ran with other method "
                          f"settings and are not in the table (listed under it): "
                          + "; ".join(other_lines))
        runs = sorted((r["row"] for r in matching), key=lambda row: (row["class"], row["seed"]))
        classes = table_classes(cfg["class_names"], runs)
        rows, mean = write_results(runs, classes, results_dir, cfg["reference"], other_lines)
        size, curve = write_analysis(results_dir, matching, classes, markdown_cell)
        write_html_report(results_dir, rows, mean, matching, cfg["reference"], other_lines,
                          analysis=html_summary(size, curve, esc))
    if echo:
        sys.stdout.write(Path(results_dir, "results.md").read_text())
    return rows, mean
