"""Resuming and reading back: only a checkpoint of this class, architecture, data and schedule;
interrupted runs end as uninterrupted ones."""
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from conftest import ROOT, loss_that_turns_nan_at, tiny_args

import checkpoints
import main
import train
from checkpoints import checkpoint_path, load_checkpoint


def test_checkpoint_of_another_configuration_or_class_is_refused(tmp_path, toy_class):
    main.train_all(tiny_args(tmp_path, meta_epochs=1))
    with pytest.raises(ValueError, match="differing: n_coupling_blocks: checkpoint 2 vs config 3; "
                                         "fc_internal: checkpoint 32 vs config 16"):
        main.train_all(tiny_args(tmp_path, resume=True, fc_internal=16, n_coupling_blocks=3))
    other = tmp_path / "ckpt" / "toy2" / "checkpoint.pt"
    other.parent.mkdir()
    shutil.copy(checkpoint_path(tmp_path / "ckpt", "toy", 0), other)
    state = load_checkpoint(other)
    with pytest.raises(ValueError, match="class: checkpoint 'toy' vs 'toy2'"):
        checkpoints.check_checkpoint_matches(state, state["config"], "toy2", other)


class Payload:
    def __reduce__(self):
        return (os.system, ("echo unpickled > /dev/null",))


def test_non_checkpoint_files_are_refused_without_unpickling(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"flow": Payload()}, evil, pickle_module=pickle)
    with pytest.raises(ValueError, match="is not a DifferNet checkpoint"):
        load_checkpoint(evil)
    text = tmp_path / "notes.pt"
    text.write_text("hello")
    with pytest.raises(ValueError, match="notes.pt' is not a DifferNet checkpoint"):
        load_checkpoint(text)
    plain = tmp_path / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, plain)
    with pytest.raises(ValueError, match="keys flow, config, class_name missing"):
        load_checkpoint(plain)


def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, toy_class):
    args = tiny_args(tmp_path, meta_epochs=6, checkpoint_dir=str(tmp_path / "killed"))
    proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = checkpoint_path(tmp_path / "killed", "toy", 0)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if os.path.exists(ckpt) and load_checkpoint(ckpt)["epoch"] >= 2:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    stopped_at = load_checkpoint(ckpt)["epoch"]
    assert 2 <= stopped_at < 6, "the run should have been killed part-way"
    main.train_all(args + ["--resume=True"])
    main.train_all(tiny_args(tmp_path, meta_epochs=6, checkpoint_dir=str(tmp_path / "whole")))
    resumed = load_checkpoint(ckpt)
    whole = load_checkpoint(checkpoint_path(tmp_path / "whole", "toy", 0))
    assert resumed["auroc_history"] == whole["auroc_history"]
    assert torch.equal(resumed["test_scores"], whole["test_scores"])


def test_resume_with_other_training_settings_warns(tmp_path, toy_class):
    main.train_all(tiny_args(tmp_path, meta_epochs=1, keep_optimizer=True))
    with pytest.warns(UserWarning, match="other than it was trained with: lr_init"):
        main.train_all(tiny_args(tmp_path, meta_epochs=2, resume=True, lr_init=1e-3))


def test_resume_after_the_data_changed_is_refused_before_work(tmp_path, toy_class, capsys):
    main.train_all(tiny_args(tmp_path, meta_epochs=1, keep_optimizer=True))
    extra = toy_class / "train" / "good" / "extra.JPG"
    extra.write_bytes((toy_class / "train" / "good" / "000.JPG").read_bytes())
    assert main.main(tiny_args(tmp_path, meta_epochs=2, resume=True)) == 1
    err = capsys.readouterr().err
    assert "the data of 'toy' changed since checkpoint" in err
    assert "then train images 16, test normal 6" in err and "now train images 17" in err
    extra.unlink()
    (toy_class / "test" / "good" / "000.JPG").write_bytes(b"x" * 10)  # same count, other bytes
    assert main.main(tiny_args(tmp_path, meta_epochs=2, resume=True)) == 1
    assert "same counts, but files were added, removed, renamed or changed: test/good/000.JPG " \
        "has other content" in capsys.readouterr().err
    assert load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 0))["epoch"] == 1


def test_extended_checkpoint_never_keeps_a_stale_threshold(tmp_path, toy_class, monkeypatch):
    main.train_all(tiny_args(tmp_path, meta_epochs=1, keep_optimizer=True))
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    assert "threshold" in load_checkpoint(ckpt)
    # the resumed run's 2nd epoch (meta epoch 3) diverges: calls 1-2 are meta epoch 2
    monkeypatch.setattr(train, "nll_loss", loss_that_turns_nan_at(3, train.nll_loss))
    rows = main.train_all(tiny_args(tmp_path, meta_epochs=3, resume=True))
    state = load_checkpoint(ckpt)
    assert rows[0]["status"] == "failed: non-finite loss"
    assert state["epoch"] == 2 and "threshold" not in state and "metrics" not in state


def test_checkpoint_trained_further_than_asked_is_refused(tmp_path, toy_class, capsys):
    main.train_all(tiny_args(tmp_path, meta_epochs=2))
    assert main.main(tiny_args(tmp_path, meta_epochs=1, resume=True)) == 1
    assert "holds 2 meta epochs, more than meta_epochs=1" in capsys.readouterr().err


def test_a_finished_run_read_back_keeps_the_settings_it_was_trained_with(tmp_path, toy_class,
                                                                         capsys):
    main.train_all(tiny_args(tmp_path))
    with pytest.warns(UserWarning, match="reading back the finished run .* lr_init"):
        rows = main.train_all(tiny_args(tmp_path, resume=True, lr_init=1e-3))
    assert rows[0]["status"] == "ok"
    record = json.loads((tmp_path / "results" / "toy" / "seed0" / "run.json").read_text())
    assert record["method"]["lr_init"] == 2e-4  # the checkpoint's, not this command's
    main.train_all(tiny_args(tmp_path, report_only=True))
    assert "| toy |" in (tmp_path / "results" / "results.md").read_text()
