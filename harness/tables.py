"""Rebuild the results table and the HTML report from every run record in results_dir.

Called by every command after its runs (and alone by --report_only=True). Two commands that
finish at the same moment take turns through a short lock on results_dir/tables.lock; each
wrote its own records before, so whichever rebuilds last sees both.
"""
import sys
import warnings
from pathlib import Path

from harness.analysis_report import html_summary, write_analysis
from harness.html_report import esc, write_html_report
from harness.locks import held_lock
from harness.records import (RECORD_NAME, describe_other, read_records, record_paths,
                             write_record)
from harness.results import markdown_cell, write_results

TABLES_LOCK = "tables.lock"


def tables_lock(results_dir):
    """Hold results_dir/tables.lock (the run locks' design); waits for a rebuild in progress,
    which takes seconds."""
    return held_lock(Path(results_dir) / TABLES_LOCK)


def add_missing_records(cfg, rows, folder_of):
    """Records of rows gathered from other ranks whose run.json is not in this results_dir
    (their machines have their own disks); folder_of(row) is the run's results folder."""
    for row in rows:
        folder = Path(folder_of(row))
        if not (folder / RECORD_NAME).is_file():
            write_record(cfg, folder, row)


# what each table file of ours starts with: a file of such a name that does not is the user's
TABLE_FILES = {"results.csv": b"class,", "results_per_seed.csv": b"class,",
               "results.md": b"| class |", "summary.png": b"\x89PNG",
               "index.html": b"<!DOCTYPE html>", "results_per_size.csv": b"class,",
               "results_transforms.csv": b"class,"}
REPORT_HEADING = b"<h1>DifferNet results</h1>"


def foreign_table_files(folder):
    """Files in folder with the name of one of our table files but not our content."""
    foreign = []
    for name, start in TABLE_FILES.items():
        path = Path(folder) / name
        if not path.exists():
            continue
        head = b""
        if path.is_file():
            try:
                with open(path, "rb") as f:
                    head = f.read(65536)
            except OSError:
                pass
        ours = head.startswith(start) and (name != "index.html" or REPORT_HEADING in head)
        if not ours:
            foreign.append(name)
    return foreign


def check_results_folder(results_dir, report_only=False):
    """Refuse a folder that is not a results folder of this project before anything is written.
    report_only needs run records to report on; training needs that no file the tables would
    replace is someone else's (a website's index.html, a spreadsheet's results.csv). A missing
    or empty folder is fine for training."""
    folder = Path(results_dir)
    if not folder.is_dir() or record_paths(folder):
        return
    foreign = foreign_table_files(folder)
    if report_only:
        found = (f"; it holds {', '.join(foreign)}, not written by this project"
                 if foreign else "")
        raise ValueError(f"config 'results_dir': '{folder}' holds no run records "
                         f"(<class>/seed<k>/{RECORD_NAME}), so it is not a results folder of this "
                         f"project{found}; nothing was written. Pass the results_dir of the runs "
                         f"(a folder of runs from before run records existed: rerun its classes "
                         f"with --resume=True)")
    if foreign:
        raise ValueError(f"config 'results_dir': '{folder}' holds {', '.join(foreign)}, not "
                         f"written by this project, which the results table would overwrite; "
                         f"choose another results_dir or move them away")


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
