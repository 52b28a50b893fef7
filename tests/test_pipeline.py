"""End to end: what `python main.py` leaves behind (the session's finished toy run), each number
of its table recomputed from its checkpoint, and the checkpoint scoring the same in a fresh
model. Resume and determinism: test_resume.py."""
import numpy as np
import torch

from helpers import read_csv
from localization import gradient_map
from localization import pixel_report
from metrics import image_metrics
from scoring import evaluation_generator, score_set
from train import build_model

PNG = b"\x89PNG\r\n\x1a\n"
CPU = torch.device("cpu")


def test_the_run_prints_each_epoch_and_writes_its_figures(finished_run):
    for epoch in (1, 2, 3):
        assert f"[toy] epoch {epoch}/3  loss " in finished_run.printed
    for name in ("auroc.png", "roc.png", "scores.png"):
        assert (finished_run.results / name).read_bytes()[:8] == PNG
    assert (finished_run.root / "results" / "summary.png").read_bytes()[:8] == PNG
    md = (finished_run.root / "results" / "results.md").read_text()
    assert "max AUROC (test-selected)" in md and "| toy |" in md


def test_the_table_holds_the_metrics_of_the_stored_scores(finished_run):
    state, test_set = finished_run.state, finished_run.test_set
    image = image_metrics(test_set.labels, state["test_scores"].numpy())
    row = finished_run.rows[0]
    assert row["auroc_last"] == image["auroc"] == state["auroc_history"][-1]
    assert row["auroc_max"] == max(state["auroc_history"])
    assert row["epoch_max"] == int(np.argmax(state["auroc_history"])) + 1  # counted from 1
    assert (row["aupr"], row["f1_max"]) == (image["aupr"], image["f1_max"])
    heat = [gradient_map(finished_run.model, img, finished_run.cfg["n_transforms_test"], CPU)
            for img in test_set.images]
    pixel = pixel_report(heat.__getitem__, test_set, finished_run.cfg)
    assert (row["pixel_auroc"], row["aupro"]) == (pixel["pixel_auroc"], pixel["aupro"])
    assert (row["train_images"], row["test_normal"], row["test_anomalous"]) == (24, 6, 12)
    table = read_csv(finished_run.root / "results" / "results.csv")
    assert [r["class"] for r in table] == ["toy", "mean"] and table[0]["status"] == "ok"
    for key in ("auroc_last", "auroc_max", "aupr", "f1_max", "pixel_auroc", "aupro"):
        assert float(table[0][key]) == float(table[1][key]) == row[key]  # one class: its own mean


def test_the_misses_are_the_lowest_anomalous_and_highest_normal_scores(finished_run):
    rows = read_csv(finished_run.results / "misses" / "misses.csv")
    n = finished_run.cfg["n_misses"]
    scores, labels = finished_run.state["test_scores"].numpy(), finished_run.test_set.labels
    lowest = np.sort(scores[labels == 1])[:n]
    highest = np.sort(scores[labels == 0])[::-1][:n]
    assert [float(r["score"]) for r in rows] == [*lowest.tolist(), *highest.tolist()]
    assert sorted(p.name for p in (finished_run.results / "misses").glob("*.png")) == \
        sorted(r["figure"] for r in rows)


def test_the_finished_checkpoint(finished_run):
    state = finished_run.state
    assert state["epoch"] == 3 and len(state["auroc_history"]) == 3
    assert state["config"]["fc_internal"] == 32 and state["class_name"] == "toy"
    assert "optimizer" not in state and state["optimizer_dropped"]  # keep_optimizer=False
    assert state["metrics"]["f1_max"] == finished_run.rows[0]["f1_max"]


def test_checkpoint_in_a_fresh_model_gives_identical_scores(finished_run):
    state = finished_run.state
    from torchvision.models import alexnet
    model = build_model(finished_run.cfg, alexnet(weights=None).features)  # other random weights
    model.flow.load_state_dict(state["flow"])
    model.features.backbone.load_state_dict(state["backbone"])
    scores = score_set(model, finished_run.test_set.images, finished_run.cfg, CPU,
                       evaluation_generator(0, 3))
    assert np.array_equal(scores, state["test_scores"].numpy())
