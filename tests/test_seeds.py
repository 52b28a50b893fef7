"""Several seeds: one run per (class, seed), per-seed outputs, mean ± std, resume, torchrun."""
import os
import re

import numpy as np
import pytest
import torch

import main
from checkpoints import checkpoint_path, load_checkpoint
from conftest import ROOT, tiny_args
from helpers import read_csv

METRICS = ("auroc_last", "auroc_max", "aupr", "f1_max", "pixel_auroc", "aupro")


def file_state(path):
    """A file's inode, modification time and bytes: equal only if nothing rewrote it."""
    stat = os.stat(path)
    with open(path, "rb") as f:
        return stat.st_ino, stat.st_mtime_ns, f.read()


def epochs_trained(printed, tag):
    """The meta epochs a run printed as trained in this command."""
    return [int(m) for m in re.findall(rf"^\[{re.escape(tag)}\] epoch (\d+)/", printed, re.M)]


@pytest.mark.slow
def test_two_seeds_give_two_checkpoints_and_a_lost_one_is_retrained_alone(tmp_path, toy_class,
                                                                         capsys):
    main.train_all(tiny_args(tmp_path, seeds=[0, 1]))
    paths = [checkpoint_path(tmp_path / "ckpt", "toy", s) for s in (0, 1)]
    states = [load_checkpoint(path) for path in paths]
    assert [s["config"]["seed"] for s in states] == [0, 1]
    assert states[0]["test_scores"].tolist() != states[1]["test_scores"].tolist()
    for s in (0, 1):
        assert (tmp_path / "results" / "toy" / f"seed{s}" / "auroc.png").is_file()
        assert (tmp_path / "results" / "toy" / f"seed{s}" / "per_defect.csv").is_file()
    per_seed = read_csv(tmp_path / "results" / "results_per_seed.csv")
    assert [(r["class"], r["seed"]) for r in per_seed] == [("toy", "0"), ("toy", "1")]
    table = read_csv(tmp_path / "results" / "results.csv")
    assert [r["class"] for r in table] == ["toy", "mean"] and table[0]["seeds_ok"] == "2/2"
    md = (tmp_path / "results" / "results.md").read_text()
    for key in METRICS:
        values = [float(r[key]) for r in per_seed]
        mean, std = np.mean(values), np.std(values, ddof=1)
        assert float(table[0][key]) == pytest.approx(mean, rel=1e-12)
        assert float(table[0][f"{key}_std"]) == pytest.approx(std, rel=1e-12)
        assert f"{mean:.4f} ± {std:.4f}" in md

    kept = file_state(paths[0])
    os.remove(paths[1])  # as if seed 1 was lost
    capsys.readouterr()
    rows = main.train_all(tiny_args(tmp_path, seeds=[0, 1], resume=True))
    printed = capsys.readouterr().out
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert file_state(paths[0]) == kept and epochs_trained(printed, "toy seed 0") == []
    assert epochs_trained(printed, "toy seed 1") == [1, 2]  # trained again, to the same result
    assert torch.equal(load_checkpoint(paths[1])["test_scores"], states[1]["test_scores"])


@pytest.mark.slow
def test_one_seed_lives_in_its_seed_folder_and_a_run_continues_only_its_own_seed(
        tmp_path, toy_class, capsys):
    main.train_all(tiny_args(tmp_path, seeds=[3]))
    seed3 = checkpoint_path(tmp_path / "ckpt", "toy", 3)
    assert load_checkpoint(seed3)["config"]["seed"] == 3
    header = read_csv(tmp_path / "results" / "results.csv")[0].keys()
    assert "auroc_last_std" not in header and "seeds_ok" not in header
    assert (tmp_path / "results" / "toy" / "seed3" / "auroc.png").is_file()
    kept = file_state(seed3)
    capsys.readouterr()
    rows = main.train_all(tiny_args(tmp_path, seeds=[1], resume=True))
    assert epochs_trained(capsys.readouterr().out, "toy") == [1, 2]  # not read from seed 3
    assert rows[0]["seed"] == 1 and load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 1))[
        "config"]["seed"] == 1
    seed1 = file_state(checkpoint_path(tmp_path / "ckpt", "toy", 1))
    rows = main.train_all(tiny_args(tmp_path, seeds=[3, 1], resume=True))
    printed = capsys.readouterr().out
    assert [r["status"] for r in rows] == ["ok", "ok"]  # both read back, neither rewritten
    assert epochs_trained(printed, "toy seed 3") == epochs_trained(printed, "toy seed 1") == []
    assert file_state(seed3) == kept and file_state(checkpoint_path(tmp_path / "ckpt", "toy", 1)) \
        == seed1


@pytest.mark.slow
def test_reference_column_follows_the_preset(tmp_path, toy_class):
    main.train_all(tiny_args(tmp_path, class_names=["toy"], meta_epochs=1))
    md = (tmp_path / "results" / "results.md").read_text()
    assert "reference AUROC: published VisA adaptation (max over epochs)" in md
    mean_line = [line for line in md.splitlines() if line.startswith("| mean (")][0]
    assert mean_line.split(" | ")[8] == "n/a"  # toy has no reference: no mean reference either
    (tmp_path / "data" / "mtd").symlink_to(tmp_path / "data" / "toy")
    main.train_all([os.path.join(ROOT, "presets", "mtd.py")]
             + tiny_args(tmp_path, class_names=["mtd"], meta_epochs=1))
    md = (tmp_path / "results" / "results.md").read_text()
    assert "reference AUROC: DifferNet paper, Magnetic Tile Defects" in md
    assert "| mtd |" in md and " 0.9770 " in md


def test_epoch_of_max_over_seeds_reads_as_an_epoch_not_a_metric(tmp_path):
    from configurator import resolve_config
    from harness.records import write_record
    from harness.tables import rebuild_results
    from test_results_records import finished_row
    cfg = resolve_config(tiny_args(tmp_path, seeds=[0, 1]))
    for seed, epoch in ((0, 2), (1, 3)):
        write_record(cfg, tmp_path / "results" / "toy" / f"seed{seed}",
                     dict(finished_row("toy", seed, 0.5), epoch_max=epoch))
    rebuild_results(cfg, echo=False)
    md = (tmp_path / "results" / "results.md").read_text()
    assert "| 2.5 ± 0.7 |" in md and "2.5000 ± 0.7071" not in md
