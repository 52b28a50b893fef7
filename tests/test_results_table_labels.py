"""Honest labels: diverged runs, the mean row's reference, names that look like table syntax
or like the mean row, the F1 tie, and the MVTec AD reference table."""
import re

import pytest
import torch

import harness.figures as figures
from harness.health import DIVERGED_LOSS, divergence_reason
from harness.references import REFERENCES
from harness.results import mean_reference, write_results

VISA = REFERENCES["visa"]["auroc"]


def test_equal_test_scores_or_an_astronomic_loss_count_as_diverged():
    flat = {"test_scores": torch.full((12,), 7e26), "loss_history": [1.0, 7e26]}
    assert divergence_reason(flat) == "all 12 test scores are equal (7e+26)"
    blown = {"test_scores": torch.tensor([1.0, 2.0]), "loss_history": [0.5, DIVERGED_LOSS * 10]}
    assert divergence_reason(blown) == "training loss 1e+07 > 1e+06"
    healthy = {"test_scores": torch.tensor([1.0, 2.0]), "loss_history": [1.0, -0.7]}
    assert divergence_reason(healthy) is None


def rows_of(classes):
    return [{"class": c, "reference_auroc": VISA.get(c), "auroc_last": 0.5} for c in classes]


def test_mean_reference_is_the_mean_of_the_classes_in_the_table():
    value, note = mean_reference(rows_of(["candle", "pcb1"]), "visa")
    assert value == pytest.approx((VISA["candle"] + VISA["pcb1"]) / 2)
    assert "not the published mean" in note
    assert mean_reference(rows_of(["candle", "toy"]), "visa")[0] is None
    assert mean_reference(rows_of(["candle"]), "none") == (None, "n/a (reference = 'none')")
    assert mean_reference([], "visa") == (None, "n/a: no class has finished")


def test_mean_reference_is_the_published_mean_when_every_class_is_in_the_table():
    value, note = mean_reference(rows_of(list(VISA)), "visa")
    assert value == REFERENCES["visa"]["mean"] and "published mean" in note
    mvtec = REFERENCES["mvtec"]["auroc"]
    rows = [{"class": c, "reference_auroc": v} for c, v in mvtec.items()]
    assert mean_reference(rows, "mvtec")[0] == 0.949  # not the 0.9469 of the 15 copied values


def test_a_class_without_reference_gives_an_na_mean_reference_in_the_table(tmp_path):
    run = {"class": "toy", "seed": 0, "auroc_last": 0.9, "status": "ok"}
    _, mean = write_results([run], ["toy"], tmp_path, "visa")
    assert mean["reference_auroc"] is None
    last_row = [line for line in (tmp_path / "results.md").read_text().splitlines()
                if line.startswith("| mean (")][0]
    assert last_row.split(" | ")[8] == "n/a"


def test_table_cells_are_escaped_and_a_class_called_mean_is_plotted(tmp_path, monkeypatch):
    plotted = {}

    def keep_labels(fig, path, setting="results_dir"):
        plotted["names"] = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    monkeypatch.setattr(figures, "save_figure", keep_labels)
    runs = [{"class": name, "seed": 0, "auroc_last": 0.5 + i / 10, "status": "ok"}
            for i, name in enumerate(["a|b", "mean"])]
    write_results(runs, ["a|b", "mean"], tmp_path, "none")
    lines = (tmp_path / "results.md").read_text().splitlines()
    widths = {len(re.split(r"(?<!\\)\|", line)) for line in lines[:5]}
    assert len(widths) == 1  # every row has as many cells as the header and the separator
    assert lines[2].startswith("| a\\|b | 0.5000 |") and lines[3].startswith("| mean | 0.6000 |")
    assert plotted["names"] == ["a|b", "mean"]
