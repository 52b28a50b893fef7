"""results/index.html: every src and href resolves to a file of the results folder (so the
folder can be moved), names are escaped, and the misses gallery says score, threshold, side."""
import csv
import json
import os
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from urllib.parse import unquote

import pytest

from configurator import resolve_config
from conftest import ROOT, tiny_args
from harness.records import write_record
from harness.reports import MISSES_COLUMNS
from harness.tables import rebuild_results

PNG = b"\x89PNG\r\n\x1a\n"
ODD = 'a<b> & "c" |d'


class Links(HTMLParser):
    """Every src/href of a page and its visible text."""

    def __init__(self):
        super().__init__()
        self.links, self.text, self.ids = [], [], set()

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.links += [attrs[k] for k in ("src", "href") if k in attrs]
        if "id" in attrs:
            self.ids.add(attrs["id"])

    def handle_data(self, data):
        self.text.append(data)


def parse(page):
    parser = Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def assert_links_resolve(page):
    """Relative links only, each to an existing file (or an anchor of the page)."""
    parser = parse(page)
    assert parser.links
    for target in parser.links:
        if target.startswith("#"):
            assert target[1:] in parser.ids
            continue
        assert "://" not in target and not target.startswith("/"), target
        assert (page.parent / unquote(target)).is_file(), target
    return parser


def fake_run(cfg, folder, class_name):
    """What a finished run leaves: figures, history, per-defect table, misses, record."""
    folder.mkdir(parents=True)
    for name in ("auroc.png", "roc.png", "scores.png"):
        (folder / name).write_bytes(PNG)
    (folder / "history.csv").write_text("meta_epoch\n1\n")
    (folder / "per_defect.csv").write_text("defect,images\nhole,3\n")
    (folder / "misses").mkdir()
    figure = "lowest_scored_anomalous_01_anomaly_x #1.png"
    (folder / "misses" / figure).write_bytes(PNG)
    with open(folder / "misses" / "misses.csv", "w", newline="") as f:
        csv.writer(f).writerows([MISSES_COLUMNS, ["lowest_scored_anomalous", 1, "/d/x #1.png",
                                                  "<hole>", "0.25", "0.5", "below", figure]])
    write_record(cfg, folder, {"class": class_name, "seed": 0, "auroc_last": 0.5,
                               "status": "ok"})


def test_report_links_resolve_and_names_are_escaped(tmp_path):
    cfg = resolve_config(tiny_args(tmp_path, class_names=[ODD, "toy"]))
    fake_run(cfg, tmp_path / "results" / ODD, ODD)
    rebuild_results(cfg, echo=False)
    page = tmp_path / "results" / "index.html"
    source = page.read_text(encoding="utf-8")
    assert "<b>" not in source and "&lt;b&gt;" in source and "&lt;hole&gt;" in source
    parser = assert_links_resolve(page)
    text = " ".join(parser.text)
    assert ODD in text and "mean (1 of 2 classes)" in text
    assert "score 0.2500, threshold 0.5000 (below)" in text and "defect <hole>" in text
    assert any(link.endswith("summary.png") for link in parser.links)
    assert f"{ODD}/misses/lowest_scored_anomalous_01_anomaly_x #1.png" in map(unquote, parser.links)
    moved = tmp_path / "moved"  # relative links: the copied folder works as well
    shutil.copytree(tmp_path / "results", moved)
    shutil.rmtree(tmp_path / "results")
    assert_links_resolve(moved / "index.html")


@pytest.mark.slow
def test_two_commands_at_once_on_two_classes_leave_one_table_and_report(tmp_path):
    from prepare.demo import write_demo_class
    for seed, name in enumerate(("one", "two")):
        write_demo_class(tmp_path / "data" / name, seed, size=64, n_train=8, n_test_good=3,
                         n_test_bad=3)
    jobs = [subprocess.Popen([sys.executable, "main.py", *tiny_args(
        tmp_path, class_names=[name], meta_epochs=2, n_misses=1)], cwd=ROOT,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"}) for name in ("one", "two")]
    for job in jobs:
        assert job.wait(timeout=600) == 0, job.stderr.read()[-2000:]
    with open(tmp_path / "results" / "results.csv", newline="") as f:
        table = {r["class"]: r for r in csv.DictReader(f)}
    assert set(table) == {"one", "two", "mean"}  # mean's classes_in_mean tells it apart
    runs = {name: json.loads((tmp_path / "results" / name / "seed0" / "run.json").read_text())["row"]
            for name in ("one", "two")}
    mean = (runs["one"]["auroc_last"] + runs["two"]["auroc_last"]) / 2
    assert float(table["mean"]["auroc_last"]) == pytest.approx(mean)
    assert table["mean"]["classes_in_mean"] == "2 of 2"
    for name in ("one", "two"):
        history = (tmp_path / "results" / name / "seed0" / "history.csv").read_text().splitlines()
        assert len(history) == 1 + 2  # header and one row per meta epoch
    parser = assert_links_resolve(tmp_path / "results" / "index.html")
    shown = [unquote(link) for link in parser.links if link.endswith(".png")]
    assert "one/seed0/roc.png" in shown and "two/seed0/auroc.png" in shown
    # n_misses=1: one anomalous and one normal figure per class, each an img and a link
    assert sum("/misses/" in link for link in shown) == 2 * 2 * 2


def test_a_200_character_class_name_wraps_in_the_table_and_is_cut_on_the_plot():
    from harness.figures import LABEL_CHARS, axis_labels
    from harness.html_report import STYLE
    long = "very_long_class_name_" * 10
    labels = axis_labels([long[:200], "candle", long[:199] + "x"])
    assert labels[1] == "candle" and all(len(label) <= LABEL_CHARS + 4 for label in labels)
    assert labels[0] != labels[2] and labels[0].startswith("very_long_class_name_")
    # the class column wraps anywhere instead of pushing the metrics off screen
    assert "td:first-child{max-width:16em;overflow-wrap:anywhere}" in STYLE
