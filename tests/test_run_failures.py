"""A failure inside a run is that run's: its row says why, its last good checkpoint stays, the
others go on; outputs that cannot be written are named with their setting."""
import csv
import os

import pytest
import torch
from conftest import loss_that_turns_nan_at, tiny_args

import checkpoints
import harness.reports as reports
import main
import scoring
import train
from checkpoints import checkpoint_path, load_checkpoint
from prepare.demo import write_demo_class


@pytest.mark.slow
def test_non_finite_loss_fails_the_class_keeps_checkpoint_and_continues(tmp_path, toy_class,
                                                                       monkeypatch):
    from prepare.demo import write_demo_class
    write_demo_class(tmp_path / "data" / "toy2", 1, size=64, n_train=8, n_test_good=3, n_test_bad=3)
    monkeypatch.setattr(train, "nll_loss", loss_that_turns_nan_at(3, train.nll_loss))  # epoch 2
    rows = {r["class"]: r for r in main.train_all(tiny_args(tmp_path, class_names=["toy", "toy2"]))}
    assert rows["toy"]["status"] == "failed: non-finite loss"
    assert rows["toy2"]["status"] == "ok"
    assert load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 0))["epoch"] == 1
    assert "failed: non-finite loss" in (tmp_path / "results" / "results.csv").read_text()


@pytest.mark.slow
def test_non_finite_scores_fail_the_class_without_claiming_a_checkpoint(tmp_path, toy_class,
                                                                       monkeypatch, capsys):
    monkeypatch.setattr(scoring, "anomaly_score", lambda z: torch.full(z.shape[:1], float("inf")))
    rows = main.train_all(tiny_args(tmp_path))
    err = capsys.readouterr().err
    assert rows[0]["status"] == "failed: non-finite test scores"
    assert "in meta epoch 1; no checkpoint was written" in err
    assert not os.path.exists(checkpoint_path(tmp_path / "ckpt", "toy", 0))


@pytest.mark.slow
def test_failure_in_the_reports_fails_that_class_only(tmp_path, toy_class, monkeypatch, capsys):
    write_demo_class(tmp_path / "data" / "toy2", 1, size=64, n_train=8, n_test_good=3, n_test_bad=3)
    real = reports.class_reports

    def reports_that_break_for_toy(trained, cfg, device, out):
        if trained.state["class_name"] == "toy":
            raise RuntimeError("Input contains NaN")
        return real(trained, cfg, device, out)
    monkeypatch.setattr("harness.runs.class_reports", reports_that_break_for_toy)
    code = main.main(tiny_args(tmp_path, class_names=["toy", "toy2"], meta_epochs=1))
    err = capsys.readouterr().err
    assert code == 1
    assert "ERROR [toy] RuntimeError: Input contains NaN" in err
    assert "error: 1 of 2 run(s) failed: toy (seed 0)" in err
    table = (tmp_path / "results" / "results.csv").read_text()
    assert "failed: Input contains NaN" in table and table.count(",ok") == 1
    assert load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 0))["epoch"] == 1  # kept


@pytest.mark.slow
def test_disk_full_keeps_previous_checkpoint_and_results(tmp_path, toy_class, monkeypatch,
                                                         capsys):
    main.train_all(tiny_args(tmp_path, meta_epochs=1, keep_optimizer=True))
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    before_ckpt = open(ckpt, "rb").read()

    def full_disk_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")
    with monkeypatch.context() as m:
        m.setattr(checkpoints.torch, "save", full_disk_save)
        rows = main.train_all(tiny_args(tmp_path, meta_epochs=2, resume=True))
    # the class fails, naming the file and the setting; the previous checkpoint is intact
    assert rows[0]["status"].startswith(f"failed: cannot write '{ckpt}': No space left")
    assert "choose another checkpoint_dir" in capsys.readouterr().err
    assert open(ckpt, "rb").read() == before_ckpt
    assert sorted(os.listdir(os.path.dirname(ckpt))) == ["checkpoint.pt"]  # no temp, no lock

    def zip_writer_full(obj, path):  # how torch's zip writer reports a full disk
        with open(path, "wb") as f:
            f.write(b"PK\x03\x04partial")
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 64 vs 12")
    with monkeypatch.context() as m:
        m.setattr(checkpoints.torch, "save", zip_writer_full)
        rows = main.train_all(tiny_args(tmp_path, meta_epochs=2, resume=True))
    assert rows[0]["status"].startswith(f"failed: cannot write '{ckpt}'")
    assert "the disk may be full" in rows[0]["status"]
    assert open(ckpt, "rb").read() == before_ckpt
    before_csv = (tmp_path / "results" / "results.csv").read_text()

    class FullDiskWriter:
        def __init__(self, f):
            pass

        def writerow(self, row):
            raise OSError(28, "No space left on device")
    monkeypatch.setattr(csv, "writer", FullDiskWriter)
    assert main.main(tiny_args(tmp_path, meta_epochs=2, resume=True)) == 1
    err = capsys.readouterr().err
    assert "error: cannot write '" in err and "results_per_seed.csv': No space left" in err
    assert "choose another results_dir" in err
    assert (tmp_path / "results" / "results.csv").read_text() == before_csv
    assert not [p for p in os.listdir(tmp_path / "results") if p.endswith(".tmp")]


def test_unwritable_output_folder_is_reported_at_start(tmp_path, toy_class, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = main.main(tiny_args(tmp_path, checkpoint_dir=str(blocker / "ckpt")))
    assert code == 1
    assert "config 'checkpoint_dir': cannot write into" in capsys.readouterr().err


@pytest.mark.slow
def test_outputs_get_ordinary_file_permissions(tmp_path, toy_class):
    main.train_all(tiny_args(tmp_path, meta_epochs=1))
    mask = os.umask(0)
    os.umask(mask)
    for path in (checkpoint_path(tmp_path / "ckpt", "toy", 0), tmp_path / "results" / "results.csv",
                 tmp_path / "results" / "toy" / "seed0" / "auroc.png"):
        assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask


def test_unavailable_weights_stop_before_any_class(tmp_path, toy_class, capsys):
    assert main.main(tiny_args(tmp_path, weights_path=str(tmp_path / "none.pth"))) == 1
    assert "none.pth' not found" in capsys.readouterr().err
    assert not (tmp_path / "ckpt" / "toy").exists()
