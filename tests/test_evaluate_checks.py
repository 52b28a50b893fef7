"""evaluate.py: partial, incompatible or foreign checkpoints, its output folder, metrics with
labels, the checkpoint's numerics."""
import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_args

import evaluate
import main
from checkpoints import checkpoint_path, load_checkpoint
from layout import list_class
from metrics import image_metrics
from model import Speed


def test_evaluate_names_partial_incompatible_or_foreign_checkpoints(tmp_path, finished_run,
                                                                     capsys):
    test_folder = str(finished_run.class_dir / "test")
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in finished_run.state.items() if k != "backbone"}, partial)
    other = tmp_path / "other.pt"
    torch.save({**finished_run.state, "config": {**finished_run.state["config"],
                                                 "fc_internal": 16}}, other)
    text = tmp_path / "x.pt"
    text.write_text("nope")
    for start in (f"checkpoint '{partial}' is incomplete (no backbone)",
                  f"checkpoint '{other}' does not fit this version's model",
                  f"'{text}' is not a DifferNet checkpoint"):
        checkpoint = start.split("'")[1]
        assert evaluate.main([checkpoint, test_folder, "--out", str(tmp_path / "e")]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: {start}")
        assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()  # a refused run creates no output folder


def test_evaluate_checks_its_output_before_work_and_reports_metrics(tmp_path, finished_run,
                                                                    capsys):
    ckpt, test_folder = str(finished_run.checkpoint), str(finished_run.class_dir / "test")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert evaluate.main([ckpt, test_folder, "--out", str(blocker / "out")]) == 1
    printed = capsys.readouterr()
    assert "cannot write into" in printed.err and "--out=PATH" in printed.err
    assert printed.out == ""  # refused before any image was scored (each prints a line)
    assert evaluate.main([ckpt, test_folder, "--out", str(tmp_path / "e")]) == 0
    assert "labels from the folder layout" in capsys.readouterr().out
    with open(tmp_path / "e" / "metrics.csv") as f:
        metrics = {k: float(v) for k, v in next(csv.DictReader(f)).items()}
    assert list(metrics) == ["auroc", "aupr", "f1_max", "f1_threshold"]
    # the training run scored its test set with the same fixed rotations: the same AUROC
    assert metrics["auroc"] == finished_run.state["auroc_history"][-1]
    scores = finished_run.state["test_scores"].numpy()
    expected = image_metrics(finished_run.test_set.labels, scores)
    assert metrics == pytest.approx({k: float(v) for k, v in expected.items()}, rel=1e-5)


@pytest.mark.slow
def test_evaluate_scores_with_the_numerics_the_checkpoint_was_trained_with(tmp_path, toy_class):
    # bf16 backbone and channels-last layout: scores differ from plain fp32 by ~1e-3 relative
    main.train_all(tiny_args(tmp_path, meta_epochs=1, amp_bf16=True, channels_last=True,
                             test_rotations="fixed", pixel_auroc=False, n_misses=0))
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    stored = load_checkpoint(ckpt)["test_scores"].numpy()
    model, cfg, _ = evaluate.load_trained_model(ckpt, torch.device("cpu"))
    assert model.speed == Speed(channels_last=True, amp_bf16=True, backbone_batch=64, tf32=False)
    files = list_class(str(tmp_path / "data"), "toy")
    paths, scores, errors = evaluate.score_files(model, cfg, [Path(p) for p in files.test],
                                                 torch.device("cpu"))
    assert errors == [] and [str(p) for p in paths] == list(files.test)
    np.testing.assert_allclose(scores, stored, rtol=1e-5)  # the same rotations, the same numerics
