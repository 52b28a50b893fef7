"""evaluate.py: partial or incompatible checkpoints, its output folder, metrics with labels,
the checkpoint's numerics."""
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import tiny_args

import evaluate
import main
from checkpoints import checkpoint_path, load_checkpoint
from layout import list_class
from model import Speed


def test_evaluate_names_partial_or_incompatible_checkpoints(tmp_path, toy_class, capsys):
    import evaluate
    main.train_all(tiny_args(tmp_path, meta_epochs=1))
    state = load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 0))
    partial = tmp_path / "partial.pt"
    torch.save({k: v for k, v in state.items() if k != "backbone"}, partial)
    assert evaluate.main([str(partial), str(toy_class / "test"), "--out", str(tmp_path / "e")]) == 1
    assert f"error: checkpoint '{partial}' is incomplete (no backbone)" in capsys.readouterr().err
    other = tmp_path / "other.pt"
    torch.save({**state, "config": {**state["config"], "fc_internal": 16}}, other)
    assert evaluate.main([str(other), str(toy_class / "test"), "--out", str(tmp_path / "e")]) == 1
    err = capsys.readouterr().err
    assert f"error: checkpoint '{other}' does not fit this version's model" in err
    assert len(err.strip().splitlines()) == 1
    assert not (tmp_path / "e").exists()  # a refused run creates no output folder


def test_evaluate_checks_its_output_before_work_and_reports_metrics(tmp_path, toy_class, capsys):
    import evaluate
    main.train_all(tiny_args(tmp_path, meta_epochs=1))
    capsys.readouterr()  # training's own lines are not evaluate.py's
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert evaluate.main([ckpt, str(toy_class / "test"), "--out", str(blocker / "out")]) == 1
    err = capsys.readouterr()
    assert "cannot write into" in err.err and "--out=PATH" in err.err and "score" not in err.out
    assert evaluate.main([ckpt, str(toy_class / "test"), "--out", str(tmp_path / "e")]) == 0
    assert "labels from the folder layout" in capsys.readouterr().out
    lines = (tmp_path / "e" / "metrics.csv").read_text().splitlines()
    assert lines[0] == "auroc,aupr,f1_max,f1_threshold"
    values = [float(v) for v in lines[1].split(",")]
    assert all(0 <= v <= 1 for v in values[:3])
    assert values[0] == pytest.approx(load_checkpoint(ckpt)["auroc_history"][-1], abs=0.2)


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
