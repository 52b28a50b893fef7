"""Resuming and reading back: only a checkpoint of this class, architecture, data and schedule;
interrupted runs end as uninterrupted ones."""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings

import pytest
from conftest import (ROOT, UNINTERRUPTED_EPOCHS, assert_same_training, loss_that_turns_nan_at,
                      tiny_args)

import checkpoints
import main
import train
from checkpoints import checkpoint_path, load_checkpoint


@pytest.mark.slow
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


@pytest.mark.slow
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, toy_class, uninterrupted_run):
    args = tiny_args(tmp_path, meta_epochs=UNINTERRUPTED_EPOCHS)
    proc = subprocess.Popen([sys.executable, "main.py", *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None and not os.path.exists(ckpt):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)  # within 20 ms of the first checkpoint; an epoch takes longer
    proc.wait()
    stopped_at = load_checkpoint(ckpt)["epoch"]
    assert 1 <= stopped_at < UNINTERRUPTED_EPOCHS, "the run should have been killed part-way"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        main.train_all(args + ["--resume=True"])
    assert not any("trained with" in str(w.message) for w in caught)  # same settings: no warning
    assert_same_training(load_checkpoint(ckpt), uninterrupted_run)


@pytest.mark.slow
def test_resume_with_other_training_settings_warns(tmp_path, toy_class):
    main.train_all(tiny_args(tmp_path, meta_epochs=1, keep_optimizer=True))
    with pytest.warns(UserWarning, match="other than it was trained with: lr_init"):
        main.train_all(tiny_args(tmp_path, meta_epochs=2, resume=True, lr_init=1e-3))


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
def test_checkpoint_trained_further_than_asked_is_refused(tmp_path, toy_class, capsys):
    main.train_all(tiny_args(tmp_path, meta_epochs=2))
    assert main.main(tiny_args(tmp_path, meta_epochs=1, resume=True)) == 1
    assert "holds 2 meta epochs, more than meta_epochs=1" in capsys.readouterr().err


@pytest.mark.slow
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
