"""The table is the sum of the finished runs: run records written by one command are found by
the next, runs of other method settings are listed apart, the rebuild is locked, and
--report_only rebuilds without training."""
import json
import multiprocessing
import time

import numpy as np
import pytest

import main
from configurator import default_values, resolve_config
from conftest import tiny_args
from helpers import read_csv
from harness.records import (METHOD_KEYS, NOT_METHOD_KEYS, finish_run, read_records,
                             write_history, write_record)
from harness.tables import add_missing_records, rebuild_results, tables_lock


def config(tmp_path, **extra):
    return resolve_config(tiny_args(tmp_path, **extra))


def finished_row(class_name, seed, auroc, minutes=1.0):
    return {"class": class_name, "seed": seed, "auroc_last": auroc, "auroc_max": auroc,
            "epoch_max": 2, "aupr": auroc, "f1_max": auroc, "pixel_auroc": None, "aupro": None,
            "train_images": 16, "test_normal": 6, "test_anomalous": 6, "skipped_images": 0,
            "masks_missing": 0, "train_minutes": minutes, "status": "ok"}


def test_every_config_name_is_either_a_method_setting_or_not():
    names = set(default_values())
    assert set(METHOD_KEYS) | set(NOT_METHOD_KEYS) == names
    assert not set(METHOD_KEYS) & set(NOT_METHOD_KEYS)


def test_records_of_several_commands_add_up_and_other_settings_stay_apart(tmp_path):
    cfg = config(tmp_path, class_names=["alpha", "beta", "gamma"])
    results = tmp_path / "results"
    write_record(cfg, results / "alpha", finished_row("alpha", 0, 0.8))
    write_record(cfg, results / "beta" / "seed1", finished_row("beta", 1, 0.6))  # per-seed folder
    write_record(dict(cfg, img_size=96), results / "delta", finished_row("delta", 0, 0.99))
    (results / "epsilon").mkdir()
    (results / "epsilon" / "run.json").write_text("{half a rec")
    with pytest.warns(UserWarning) as caught:
        rows, mean = rebuild_results(cfg, echo=False)
    messages = " ".join(str(w.message) for w in caught)
    assert "epsilon" in messages and "not a readable run record" in messages
    assert "delta" in messages and "img_size=96 (now 64)" in messages
    table = read_csv(results / "results.csv")
    assert [r["class"] for r in table] == ["alpha", "beta", "gamma", "mean"]
    assert table[2]["status"] == "not run"
    assert float(table[3]["auroc_last"]) == pytest.approx(0.7)  # delta is not averaged in
    assert table[3]["classes_in_mean"] == "2 of 3"
    md = (results / "results.md").read_text()
    assert "| mean (2 of 3 classes) | 0.7000 |" in md
    assert "Runs with other method settings (not in this table):" in md
    assert "- delta seed 0 in" in md and "img_size=96 (now 64)" in md
    per_seed = read_csv(results / "results_per_seed.csv")
    assert [(r["class"], r["seed"]) for r in per_seed] == [("alpha", "0"), ("beta", "1")]


def test_the_newest_record_of_a_run_wins_when_it_lies_in_both_layouts(tmp_path):
    cfg = config(tmp_path)
    write_record(cfg, tmp_path / "results" / "toy", finished_row("toy", 0, 0.5))
    time.sleep(0.01)
    write_record(cfg, tmp_path / "results" / "toy" / "seed0", finished_row("toy", 0, 0.9))
    matching, other = read_records(tmp_path / "results", cfg)
    assert [r["row"]["auroc_last"] for r in matching] == [0.9] and other == []


def test_rank_zero_records_the_runs_of_ranks_on_other_machines(tmp_path):
    cfg = config(tmp_path)
    ours, theirs = finished_row("toy", 0, 0.9), finished_row("toy", 1, 0.1)
    write_record(cfg, tmp_path / "results" / "toy" / "seed0", ours)
    before = (tmp_path / "results" / "toy" / "seed0" / "run.json").read_text()
    add_missing_records(cfg, [ours, theirs],
                        lambda row: tmp_path / "results" / "toy" / f"seed{row['seed']}")
    assert (tmp_path / "results" / "toy" / "seed0" / "run.json").read_text() == before
    record = json.loads((tmp_path / "results" / "toy" / "seed1" / "run.json").read_text())
    assert record["row"]["auroc_last"] == 0.1 and record["method"]["img_size"] == 64
    assert len(record["fingerprint"]) == 12


def rebuild_in_child(args):
    rebuild_results(resolve_config(args), echo=False)


def test_a_rebuild_waits_for_the_one_in_progress(tmp_path):
    args = tiny_args(tmp_path, class_names=["toy"])
    cfg = resolve_config(args)
    write_record(cfg, tmp_path / "results" / "toy", finished_row("toy", 0, 0.75))
    child = multiprocessing.get_context("fork").Process(target=rebuild_in_child, args=(args,))
    with tables_lock(cfg["results_dir"]):
        child.start()
        time.sleep(1.5)
        assert not (tmp_path / "results" / "results.csv").exists()  # waiting for our lock
    child.join(60)
    assert child.exitcode == 0
    assert read_csv(tmp_path / "results" / "results.csv")[0]["auroc_last"] == "0.75"


def test_report_only_rebuilds_the_table_without_training(tmp_path, monkeypatch, capsys):
    cfg = config(tmp_path, class_names=["toy"])
    write_record(cfg, tmp_path / "results" / "toy", finished_row("toy", 0, 0.625))

    def no_training(*args, **kwargs):
        raise AssertionError("report_only must not train")
    monkeypatch.setattr(main, "run_one", no_training)
    monkeypatch.setattr(main, "class_files_after_checks", no_training)
    assert main.main(tiny_args(tmp_path, class_names=["toy", "other"], report_only=True)) == 0
    assert "| toy | 0.6250 |" in capsys.readouterr().out
    table = read_csv(tmp_path / "results" / "results.csv")
    assert [(r["class"], r["status"]) for r in table[:2]] == [("toy", "ok"), ("other", "not run")]
    assert (tmp_path / "results" / "index.html").is_file()


def test_report_only_without_results_names_the_setting(tmp_path, capsys):
    assert main.main(tiny_args(tmp_path, report_only=True)) == 1
    err = capsys.readouterr().err
    assert "config 'results_dir'" in err and "does not exist" in err
    assert not (tmp_path / "results").exists()


def test_minutes_have_a_std_column_wherever_the_table_shows_one(tmp_path):
    cfg = config(tmp_path, seeds=[0, 1])
    for seed, minutes in ((0, 1.0), (1, 3.0)):
        write_record(cfg, tmp_path / "results" / "toy" / f"seed{seed}",
                     finished_row("toy", seed, 0.5 + seed / 10, minutes))
    rebuild_results(cfg, echo=False)
    table = read_csv(tmp_path / "results" / "results.csv")
    assert float(table[0]["train_minutes"]) == 2.0
    assert float(table[0]["train_minutes_std"]) == pytest.approx(np.std([1.0, 3.0], ddof=1))
    assert "| 2.0000 ± 1.4142 |" in (tmp_path / "results" / "results.md").read_text()


def test_history_has_one_row_per_evaluation(tmp_path):
    # resumed from a checkpoint that kept no seconds for its first epoch
    state = {"loss_history": [1.5, 0.25, -0.5], "auroc_history": [0.5, float("nan"), 0.75],
             "epoch_seconds": [12.0, 13.5]}
    write_history(tmp_path, state, sub_epochs=8)
    rows = read_csv(tmp_path / "history.csv")
    assert [(r["meta_epoch"], r["epochs_done"]) for r in rows] == [("1", "8"), ("2", "16"),
                                                                  ("3", "24")]
    assert [float(r["train_loss"]) for r in rows] == [1.5, 0.25, -0.5]
    assert [r["test_auroc"] for r in rows] == ["0.5", "", "0.75"]
    assert [r["seconds"] for r in rows] == ["", "12.0", "13.5"]


def test_a_diverged_run_is_recorded_and_printed_as_diverged(tmp_path, capsys):
    cfg = config(tmp_path)
    row = dict(finished_row("toy", 0, 0.5), divergence="all 12 test scores are equal (7e+26)")
    row = finish_run(cfg, tmp_path / "results" / "toy", row, "toy")
    assert row["status"] == "diverged: all 12 test scores are equal (7e+26)"
    assert "WARNING [toy] training diverged: all 12 test scores" in capsys.readouterr().err
    record = json.loads((tmp_path / "results" / "toy" / "run.json").read_text())
    assert record["row"]["status"].startswith("diverged")
    rebuild_results(cfg, echo=False)
    table = read_csv(tmp_path / "results" / "results.csv")
    assert table[0]["status"].startswith("diverged") and table[0]["auroc_last"] == "n/a"
    assert table[1]["classes_in_mean"] == "0 of 1"


@pytest.mark.slow
def test_a_learning_rate_that_blows_up_the_flow_is_not_ok(tmp_path, toy_class, capsys):
    rows = main.train_all(tiny_args(tmp_path, lr_init=2.0, n_misses=0, pixel_auroc=False))
    # a finite blow-up: the training loss (~1e26), or z at the coupling clamp (+-1e6) so that
    # every test score is the same 1e12, whichever the rule sees first
    assert rows[0]["status"].startswith(("diverged: training loss ",
                                         "diverged: all 12 test scores are equal"))
    assert "training diverged" in capsys.readouterr().err
    table = read_csv(tmp_path / "results" / "results.csv")
    assert table[0]["status"] == rows[0]["status"] and table[1]["classes_in_mean"] == "0 of 1"


def test_a_record_says_which_speed_settings_computed_it(tmp_path):
    cfg = config(tmp_path, adam_kernel="fused", channels_last=True)
    write_record(cfg, tmp_path / "results" / "toy", finished_row("toy", 0, 0.5))
    record = json.loads((tmp_path / "results" / "toy" / "run.json").read_text())
    assert record["speed"] == {"channels_last": True, "backbone_batch": 64,
                               "adam_kernel": "fused", "cache_device": "auto"}
    assert "adam_kernel" not in record["method"]  # pooled across them, as across devices


def test_undefined_metrics_count_as_unchanged_on_read_back():
    from harness.runs import same_metrics
    nan = float("nan")
    assert same_metrics({"auroc": nan, "aupr": 0.5}, {"auroc": nan, "aupr": 0.5})
    assert not same_metrics({"auroc": nan, "aupr": 0.5}, {"auroc": 0.7, "aupr": 0.5})
    assert not same_metrics(None, {"auroc": nan}) and same_metrics(None, None)
