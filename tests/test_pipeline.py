"""End to end on a tiny synthetic class: results, checkpoints, resume, determinism."""
import csv
import warnings

import numpy as np
import pytest
import torch

import main
from conftest import tiny_args
from checkpoints import checkpoint_path, load_checkpoint
from layout import list_class
from scoring import evaluation_generator, score_set
from train import build_model, load_class_data
from configurator import resolve_config


def run_main(tmp_path, **extra):
    rows = main.train_all(tiny_args(tmp_path, **extra))
    return {r["class"]: r for r in rows}


def test_end_to_end_writes_results_and_checkpoint(tmp_path, toy_class, capsys):
    rows = run_main(tmp_path)
    out = capsys.readouterr().out
    assert "[toy] epoch 1/2  loss " in out and "[toy] epoch 2/2" in out
    assert 0.0 <= rows["toy"]["auroc_last"] <= 1.0 and 0.0 <= rows["toy"]["pixel_auroc"] <= 1.0
    assert rows["toy"]["train_images"] == 16 and rows["toy"]["test_anomalous"] == 6
    with open(tmp_path / "results" / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert [r["class"] for r in table] == ["toy", "mean"]
    assert float(table[0]["auroc_last"]) == pytest.approx(rows["toy"]["auroc_last"], abs=1e-4)
    assert table[0]["status"] == "ok"
    for key in ("auroc_last", "auroc_max", "aupr", "f1_max", "pixel_auroc", "aupro"):
        assert 0.0 <= float(table[0][key]) <= 1.0 and 0.0 <= float(table[1][key]) <= 1.0
    misses = tmp_path / "results" / "toy" / "seed0" / "misses"
    assert len(list(misses.glob("*.png"))) == 2 * 6 and (misses / "misses.csv").is_file()
    md = (tmp_path / "results" / "results.md").read_text()
    assert "max AUROC (test-selected)" in md and "| toy |" in md
    state = torch.load(checkpoint_path(tmp_path / "ckpt", "toy", 0), weights_only=True)
    assert state["epoch"] == 2 and len(state["auroc_history"]) == 2
    assert state["config"]["fc_internal"] == 32
    assert "optimizer" not in state and state["optimizer_dropped"]  # keep_optimizer=False
    for name in ("auroc.png", "roc.png", "scores.png"):
        assert (tmp_path / "results" / "toy" / "seed0" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "results" / "summary.png").read_bytes()[:4] == b"\x89PNG"


def test_checkpoint_in_a_fresh_model_gives_identical_scores(tmp_path, toy_class):
    run_main(tmp_path)
    state = load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 0))
    cfg = resolve_config(tiny_args(tmp_path))
    from torchvision.models import alexnet
    model = build_model(cfg, alexnet(weights=None).features)  # other random backbone weights
    model.flow.load_state_dict(state["flow"])
    model.features.backbone.load_state_dict(state["backbone"])
    _, test_set = load_class_data(cfg, list_class(cfg["dataset_path"], "toy"))
    scores = score_set(model, test_set.images, cfg, torch.device("cpu"), evaluation_generator(0, 1))
    assert np.array_equal(scores, state["test_scores"].numpy())


def test_resumed_run_equals_uninterrupted_run(tmp_path, toy_class):
    full = run_main(tmp_path, meta_epochs=3, checkpoint_dir=str(tmp_path / "a"))
    run_main(tmp_path, meta_epochs=1, checkpoint_dir=str(tmp_path / "b"), keep_optimizer=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        resumed = run_main(tmp_path, meta_epochs=3, checkpoint_dir=str(tmp_path / "b"),
                           resume=True)
    assert not any("trained with" in str(w.message) for w in caught)  # same settings: no warning
    a = load_checkpoint(checkpoint_path(tmp_path / "a", "toy", 0))
    b = load_checkpoint(checkpoint_path(tmp_path / "b", "toy", 0))
    assert a["auroc_history"] == b["auroc_history"]
    assert torch.equal(a["test_scores"], b["test_scores"])
    assert all(torch.equal(a["flow"][k], b["flow"][k]) for k in a["flow"])
    assert full["toy"]["auroc_last"] == resumed["toy"]["auroc_last"]


def test_same_seed_same_auroc_twice(tmp_path, toy_class):
    first = run_main(tmp_path, checkpoint_dir=str(tmp_path / "a"))
    second = run_main(tmp_path, checkpoint_dir=str(tmp_path / "b"))
    a = load_checkpoint(checkpoint_path(tmp_path / "a", "toy", 0))
    b = load_checkpoint(checkpoint_path(tmp_path / "b", "toy", 0))
    assert first["toy"]["auroc_last"] == second["toy"]["auroc_last"]
    assert torch.equal(a["test_scores"], b["test_scores"])
