"""A run resumed with another sub_epochs keeps what each epoch really did in history.csv, and
its record is labelled as trained under two settings, pooled with runs of neither."""
import csv
import json

import pytest

import main
from conftest import tiny_args
from configurator import resolve_config
from harness.records import read_records, trained_sub_epochs, write_history, write_record
from test_results_records import finished_row


def history(folder):
    with open(folder / "history.csv", newline="") as f:
        return [(int(r["meta_epoch"]), int(r["epochs_done"])) for r in csv.DictReader(f)]


def test_history_counts_each_epoch_with_its_own_sub_epochs(tmp_path):
    state = {"loss_history": [1.0, 0.5, 0.25, 0.1], "auroc_history": [0.5] * 4,
             "epoch_sub_epochs": [8, 8, 2, 2]}
    write_history(tmp_path, state, sub_epochs=2)
    assert history(tmp_path) == [(1, 8), (2, 16), (3, 18), (4, 20)]


def test_a_checkpoint_from_before_the_list_counts_its_epochs_with_the_setting(tmp_path):
    state = {"loss_history": [1.0, 0.5, 0.25], "auroc_history": [0.5] * 3,
             "epoch_sub_epochs": [2]}  # resumed once, after two epochs of an older version
    write_history(tmp_path, state, sub_epochs=8)
    assert history(tmp_path) == [(1, 8), (2, 16), (3, 18)]


def test_the_label_of_a_run_trained_under_two_settings():
    assert trained_sub_epochs({"loss_history": [0] * 3, "epoch_sub_epochs": [4] * 3}, 4) == 4
    mixed = {"loss_history": [0] * 5, "epoch_sub_epochs": [8, 8, 2, 2, 8]}
    assert trained_sub_epochs(mixed, 8) == "8 (meta epochs 1-2), 2 (3-4), 8 (5)"


def test_a_mixed_run_is_pooled_with_neither_setting(tmp_path):
    cfg = resolve_config(tiny_args(tmp_path, sub_epochs=2))
    results = tmp_path / "results"
    write_record(cfg, results / "toy" / "seed0", finished_row("toy", 0, 0.9))
    write_record(dict(cfg, sub_epochs="1 (meta epochs 1), 2 (2)"), results / "toy" / "seed1",
                 finished_row("toy", 1, 0.5))
    for sub_epochs in (1, 2):
        matching, other = read_records(results, dict(cfg, sub_epochs=sub_epochs))
        assert [r["seed"] for r in other] == ([0, 1] if sub_epochs == 1 else [1])


@pytest.mark.slow
def test_a_resume_with_another_sub_epochs_keeps_the_history_and_labels_the_run(tmp_path,
                                                                               toy_class):
    # the moments are kept: training on from a finished run needs them
    main.train_all(tiny_args(tmp_path, meta_epochs=1, sub_epochs=1, n_misses=0,
                             keep_optimizer=True))
    with pytest.warns(UserWarning, match="sub_epochs"):
        main.train_all(tiny_args(tmp_path, meta_epochs=2, sub_epochs=2, n_misses=0,
                                 resume=True, keep_optimizer=True))
    folder = tmp_path / "results" / "toy" / "seed0"
    assert history(folder) == [(1, 1), (2, 3)]
    record = json.loads((folder / "run.json").read_text())
    assert record["method"]["sub_epochs"] == "1 (meta epochs 1), 2 (2)"
