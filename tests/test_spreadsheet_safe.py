"""Names and labels that a spreadsheet would run as formulas reach every CSV we write as text
(a leading quote), and read back as they were for the Markdown, HTML and per-defect tables."""
import csv

import numpy as np

from conftest import tiny_args
from configurator import resolve_config
from harness.html_report import per_defect_table, read_csv_rows
from harness.records import write_record
from harness.reports import per_defect_rows, read_defects_csv
from harness.tables import rebuild_results
from prepare_visa import write_defects
from spreadsheet import csv_cell_text, spreadsheet_safe
from test_results_records import finished_row
from files import write_csv

# what Excel and LibreOffice execute: each starts with = + - @, a tab or a carriage return
HOSTILE = ['=HYPERLINK("http://x","y")', "+cmd|' /C calc'!A0", "-2+3+cmd|' /C calc'!A0",
           "@SUM(1+1)*cmd|' /C calc'!A0", "\t=1+1", "\r=1+1"]
LIVE = ("=", "+", "-", "@", "\t", "\r")
NAMES = ['=HYPERLINK("evil","y")', "+cmd|' -C calc'!A0", "-2+3", "@SUM(1+1)"]  # folder names


def raw_cells(path):
    with open(path, newline="") as f:
        return [c for row in csv.reader(f) for c in row]


def test_the_leading_quote_rule_and_its_inverse():
    for text in HOSTILE + ["'=already quoted", "''+twice", "plain", "'plain", "", "-"]:
        safe = spreadsheet_safe(text)
        assert not safe.startswith(LIVE)
        assert csv_cell_text(safe) == text
    assert spreadsheet_safe("-0.5") == "-0.5" and spreadsheet_safe("-1e-05") == "-1e-05"
    assert spreadsheet_safe("=1") == "'=1" and spreadsheet_safe(" -1") == " -1"
    assert spreadsheet_safe("\t1") == "'\t1"


def test_write_csv_neutralises_every_cell(tmp_path):
    write_csv(tmp_path / "x.csv", ["image", "=score"], [[h, -0.25] for h in HOSTILE])
    cells = raw_cells(tmp_path / "x.csv")
    assert not [c for c in cells if c.startswith(LIVE) and c != "-0.25"]
    assert [r["image"] for r in read_csv_rows(tmp_path / "x.csv")] == HOSTILE
    assert float(read_csv_rows(tmp_path / "x.csv")[0]["=score"]) == -0.25


def test_class_names_reach_the_results_tables_as_text(tmp_path):
    cfg = resolve_config(tiny_args(tmp_path, class_names=NAMES))
    for name in NAMES:
        write_record(cfg, tmp_path / "results" / f"c{NAMES.index(name)}" / "seed0",
                     finished_row(name, 0, 0.75))
    rebuild_results(cfg, echo=False)
    for table in ("results.csv", "results_per_seed.csv"):
        cells = raw_cells(tmp_path / "results" / table)
        assert {"'" + n for n in NAMES} <= set(cells)
        assert not [c for c in cells if c.startswith(LIVE) and not c.lstrip("-")[:1].isdigit()]
    md = (tmp_path / "results" / "results.md").read_text()
    assert "| =HYPERLINK" in md and "'=HYPERLINK" not in md  # Markdown shows the name
    page = (tmp_path / "results" / "index.html").read_text()
    assert "=HYPERLINK(&quot;evil&quot;,&quot;y&quot;)" in page and "&#x27;=HYPERLINK" not in page


def test_defect_labels_round_trip_from_prepare_to_per_defect_and_html(tmp_path):
    rows = [{"image": "Anomaly/000.JPG", "label": "anomaly"},
            {"image": "Anomaly/001.JPG", "label": "anomaly"}]
    labels = {"Anomaly/000.JPG": "=1+1", "Anomaly/001.JPG": "@SUM(A1)"}
    import prepare_visa
    keys = {prepare_visa.image_key(r["image"]): labels[r["image"]] for r in rows}
    write_defects(rows, keys, tmp_path / "defects.csv")
    assert not [c for c in raw_cells(tmp_path / "defects.csv") if c.startswith(LIVE)]
    table = read_defects_csv(tmp_path / "defects.csv")
    assert table == {"000": "=1+1", "001": "@SUM(A1)"}
    types = ["good", "good", table["000"], table["001"]]
    per_defect = per_defect_rows(np.array([0, 0, 1, 1]), np.array([0.1, 0.2, 0.3, 0.05]),
                                 types, 0.25)
    from harness.reports import PER_DEFECT_COLUMNS
    write_csv(tmp_path / "per_defect.csv", PER_DEFECT_COLUMNS, per_defect)
    assert [c for c in raw_cells(tmp_path / "per_defect.csv") if c.startswith("'")] == \
        ["'=1+1", "'@SUM(A1)"]
    html = "".join(per_defect_table(tmp_path / "per_defect.csv"))
    assert "<td>=1+1</td>" in html and "<td>@SUM(A1)</td>" in html
