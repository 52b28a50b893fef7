"""Several seeds: one run per (class, seed), per-seed outputs, mean ± std, resume, torchrun."""
import csv
import os

import numpy as np
import pytest

import main
import train
from checkpoints import checkpoint_path, load_checkpoint
from conftest import ROOT, tiny_args

METRICS = ("auroc_last", "auroc_max", "aupr", "f1_max", "pixel_auroc", "aupro")


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_two_seeds_give_two_checkpoints_and_mean_std_of_the_seed_rows(tmp_path, toy_class):
    main.train_all(tiny_args(tmp_path, seeds=[0, 1]))
    states = [load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", s)) for s in (0, 1)]
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


def seeds_trained(monkeypatch):
    """The seed of every meta epoch trained from now on (a list that fills as runs train)."""
    trained, real = [], train.train_meta_epoch

    def counting(model, optimizer, generator, images, cfg, *args):
        trained.append(cfg["seed"])
        return real(model, optimizer, generator, images, cfg, *args)
    monkeypatch.setattr(train, "train_meta_epoch", counting)
    return trained


@pytest.mark.slow
def test_resume_of_one_pair_does_not_retrain_the_others(tmp_path, toy_class, monkeypatch):
    main.train_all(tiny_args(tmp_path, seeds=[0, 1]))
    os.remove(checkpoint_path(tmp_path / "ckpt", "toy", 1))  # as if seed 1 was lost
    trained = seeds_trained(monkeypatch)
    rows = main.train_all(tiny_args(tmp_path, seeds=[0, 1], resume=True))
    assert trained == [1, 1]  # seed 0 was read back, seed 1 trained for its 2 meta epochs
    assert [r["status"] for r in rows] == ["ok", "ok"]


@pytest.mark.slow
def test_one_seed_lives_in_its_seed_folder_and_its_table_has_no_std(tmp_path, toy_class):
    main.train_all(tiny_args(tmp_path, seeds=[3]))
    assert load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 3))["config"]["seed"] == 3
    header = read_csv(tmp_path / "results" / "results.csv")[0].keys()
    assert "auroc_last_std" not in header and "seeds_ok" not in header
    assert (tmp_path / "results" / "toy" / "seed3" / "auroc.png").is_file()


@pytest.mark.slow
def test_a_run_continues_only_its_own_seed_wherever_the_command_names_it(tmp_path, toy_class,
                                                                        monkeypatch):
    main.train_all(tiny_args(tmp_path))  # seeds = [0]
    trained = seeds_trained(monkeypatch)
    rows = main.train_all(tiny_args(tmp_path, seeds=[1], resume=True))
    assert trained == [1, 1] and rows[0]["seed"] == 1  # seed 1 trained, not read from seed 0
    trained.clear()
    rows = main.train_all(tiny_args(tmp_path, seeds=[0, 1], resume=True))
    assert trained == [] and [r["status"] for r in rows] == ["ok", "ok"]  # both read back


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
