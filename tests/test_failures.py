"""Bad input and interruptions: a clear error naming the file or setting, nothing lost."""
import csv
import os
import pickle
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch

import main
import train
import checkpoints
from conftest import ROOT, loss_that_turns_nan_at, tiny_args
from checkpoints import checkpoint_path, load_checkpoint


def test_missing_class_folder_is_reported_before_training(tmp_path, toy_class, capsys):
    code = main.main(tiny_args(tmp_path, class_names=["toy", "candle"], make_demo_data=False))
    err = capsys.readouterr().err
    assert code == 1
    assert "class folder of 'candle'" in err and "prepare_visa.py" in err
    assert not os.path.exists(checkpoint_path(tmp_path / "ckpt", "toy", 0))  # nothing trained
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "results").exists()


def test_test_set_without_anomalies_gives_na_not_a_crash(tmp_path, toy_class):
    shutil.rmtree(toy_class / "test" / "anomaly")
    shutil.rmtree(toy_class / "ground_truth")
    with pytest.warns(UserWarning, match="AUROC is undefined"):
        rows = main.run(tiny_args(tmp_path))
    assert rows[0]["auroc_last"] != rows[0]["auroc_last"]  # NaN
    assert "| toy | n/a | n/a |" in (tmp_path / "results" / "results.md").read_text()


def test_corrupt_image_stops_or_is_skipped_and_counted(tmp_path, toy_class, capsys):
    (toy_class / "train" / "good" / "broken.JPG").write_bytes(b"\xff\xd8 not really a jpeg")
    assert main.main(tiny_args(tmp_path)) == 1
    assert "broken.JPG" in capsys.readouterr().err
    with pytest.warns(UserWarning, match="broken.JPG"):
        rows = main.run(tiny_args(tmp_path, skip_bad_images=True))
    assert rows[0]["skipped_images"] == 1 and rows[0]["train_images"] == 16


def test_non_finite_loss_fails_the_class_keeps_checkpoint_and_continues(tmp_path, toy_class,
                                                                       monkeypatch):
    from prepare.demo import write_demo_class
    write_demo_class(tmp_path / "data" / "toy2", 1, size=64, n_train=8, n_test_good=3, n_test_bad=3)
    monkeypatch.setattr(train, "nll_loss", loss_that_turns_nan_at(3, train.nll_loss))  # epoch 2
    rows = {r["class"]: r for r in main.run(tiny_args(tmp_path, class_names=["toy", "toy2"]))}
    assert rows["toy"]["status"] == "failed: non-finite loss"
    assert rows["toy2"]["status"] == "ok"
    assert load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 0))["epoch"] == 1
    assert "failed: non-finite loss" in (tmp_path / "results" / "results.csv").read_text()


def test_checkpoint_of_another_configuration_or_class_is_refused(tmp_path, toy_class):
    main.run(tiny_args(tmp_path, meta_epochs=1))
    with pytest.raises(ValueError, match="differing: n_coupling_blocks: checkpoint 2 vs config 3; "
                                         "fc_internal: checkpoint 32 vs config 16"):
        main.run(tiny_args(tmp_path, resume=True, fc_internal=16, n_coupling_blocks=3))
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


def test_unwritable_output_folder_is_reported_at_start(tmp_path, toy_class, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    code = main.main(tiny_args(tmp_path, checkpoint_dir=str(blocker / "ckpt")))
    assert code == 1
    assert "config 'checkpoint_dir': cannot write into" in capsys.readouterr().err


def test_disk_full_keeps_previous_checkpoint_and_results(tmp_path, toy_class, monkeypatch,
                                                         capsys):
    main.run(tiny_args(tmp_path, meta_epochs=1))
    ckpt = checkpoint_path(tmp_path / "ckpt", "toy", 0)
    before_ckpt = open(ckpt, "rb").read()

    def full_disk_save(obj, path):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError(28, "No space left on device")
    with monkeypatch.context() as m:
        m.setattr(checkpoints.torch, "save", full_disk_save)
        rows = main.run(tiny_args(tmp_path, meta_epochs=2, resume=True))
    # the class fails, naming the file and the setting; the previous checkpoint is intact
    assert rows[0]["status"].startswith(f"failed: cannot write '{ckpt}': No space left")
    assert "choose another checkpoint_dir" in capsys.readouterr().err
    assert open(ckpt, "rb").read() == before_ckpt
    assert sorted(os.listdir(os.path.dirname(ckpt))) == ["checkpoint.pt"]  # no temp, no lock
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
    main.run(args + ["--resume=True"])
    main.run(tiny_args(tmp_path, meta_epochs=6, checkpoint_dir=str(tmp_path / "whole")))
    resumed = load_checkpoint(ckpt)
    whole = load_checkpoint(checkpoint_path(tmp_path / "whole", "toy", 0))
    assert resumed["auroc_history"] == whole["auroc_history"]
    assert torch.equal(resumed["test_scores"], whole["test_scores"])


def test_resume_with_other_training_settings_warns(tmp_path, toy_class):
    main.run(tiny_args(tmp_path, meta_epochs=1))
    with pytest.warns(UserWarning, match="other than it was trained with: lr_init"):
        main.run(tiny_args(tmp_path, meta_epochs=2, resume=True, lr_init=1e-3))
