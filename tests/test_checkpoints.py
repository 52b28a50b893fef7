"""Checkpoints: written in the background and once at the end, never read back during a run,
complete after an interrupt, and checked (seed, damage, evaluation settings, old layout)."""
import os
import pickle
import time

import pytest
import torch

import checkpoints
import main
import train
from checkpoints import checkpoint_path, legacy_checkpoint_path, load_checkpoint
from conftest import UNINTERRUPTED_EPOCHS, assert_same_training, tiny_args


def ckpt_of(tmp_path, folder="ckpt", seed=0):
    return checkpoint_path(tmp_path / folder, "toy", seed)


@pytest.mark.slow
def test_a_run_writes_each_epoch_once_and_reads_nothing_back(tmp_path, toy_class, monkeypatch):
    # The counts are the behaviour here: at the paper's size each write or read of a checkpoint
    # moves 0.7-2 GB, and on a CPU run nothing else shows an extra one.
    saved, loaded = [], []
    real_save, real_load = checkpoints.torch.save, checkpoints.torch.load
    monkeypatch.setattr(checkpoints.torch, "save",
                        lambda obj, f: (saved.append(obj["epoch"]), real_save(obj, f)))
    monkeypatch.setattr(checkpoints.torch, "load",
                        lambda *a, **k: (loaded.append(a), real_load(*a, **k))[1])
    main.train_all(tiny_args(tmp_path, meta_epochs=3))
    assert saved == [1, 2, 3] and loaded == []  # the last one carries the metrics already
    state = load_checkpoint(ckpt_of(tmp_path))
    assert state["epoch"] == 3 and {"pixel_auroc", "aupro", "f1_max"} <= set(state["metrics"])
    before = os.stat(ckpt_of(tmp_path))
    loaded.clear()
    main.train_all(tiny_args(tmp_path, meta_epochs=3, resume=True))  # read back: nothing to rewrite
    after = os.stat(ckpt_of(tmp_path))
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert len(loaded) == 2  # the check up front (memory-mapped) and the resume


@pytest.mark.slow
def test_an_interrupt_during_a_write_resumes_to_the_uninterrupted_result(
        tmp_path, toy_class, uninterrupted_run, monkeypatch, capsys):
    real_save, real_evaluate = checkpoints.torch.save, train.evaluate_epoch

    def slow_save(obj, f):
        time.sleep(1.5)  # the write of epoch 1 is still in flight when epoch 2 is interrupted
        real_save(obj, f)

    def interrupt_in_epoch_2(model, images, labels, cfg, epoch, progress):
        if epoch == 1:
            raise KeyboardInterrupt
        return real_evaluate(model, images, labels, cfg, epoch, progress)
    args = tiny_args(tmp_path, meta_epochs=UNINTERRUPTED_EPOCHS)
    with monkeypatch.context() as m:
        m.setattr(checkpoints.torch, "save", slow_save)
        m.setattr(train, "evaluate_epoch", interrupt_in_epoch_2)
        with pytest.raises(KeyboardInterrupt):
            main.train_all(args)
    assert "the last good checkpoint" in capsys.readouterr().out
    assert load_checkpoint(ckpt_of(tmp_path))["epoch"] == 1  # complete, not torn
    assert [p for p in os.listdir(os.path.dirname(ckpt_of(tmp_path)))] == ["checkpoint.pt"]
    main.train_all(args + ["--resume=True"])
    assert_same_training(load_checkpoint(ckpt_of(tmp_path)), uninterrupted_run)


def test_the_writer_snapshot_is_a_copy_and_its_error_reaches_the_caller(tmp_path):
    weights = {"w": torch.zeros(3)}
    writer = checkpoints.CheckpointWriter(str(tmp_path / "c.pt"))
    writer.submit(lambda: checkpoints.host_copy({"epoch": 1, **weights}), 1)
    weights["w"] += 1  # training goes on while the write is in flight
    writer.wait()
    assert torch.equal(torch.load(tmp_path / "c.pt")["w"], torch.zeros(3))
    assert writer.on_disk_epoch == 1 and writer.writes[0]["bytes"] > 0
    blocked = checkpoints.CheckpointWriter(str(tmp_path / "missing" / "\0bad" / "c.pt"))
    blocked.submit(lambda: {"epoch": 2}, 2)
    with pytest.raises((OSError, ValueError)):
        blocked.wait()


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


def test_a_truncated_checkpoint_is_called_damaged(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.save({"flow": {"w": torch.zeros(1000)}, "config": {}, "class_name": "toy"}, path)
    path.write_bytes(path.read_bytes()[:300])
    with pytest.raises(ValueError, match="damaged or incomplete.*delete it"):
        load_checkpoint(path)


@pytest.mark.slow
def test_a_finished_run_is_not_read_back_with_other_evaluation_settings(tmp_path, toy_class,
                                                                         capsys):
    main.train_all(tiny_args(tmp_path))
    for setting in ("--threshold_percentile=10", "--n_transforms_test=8"):
        assert main.main(tiny_args(tmp_path, resume=True) + [setting]) == 1
        err = capsys.readouterr().err
        assert "was evaluated with other settings" in err and setting[2:].split("=")[0] in err


def test_a_checkpoint_of_the_old_flat_layout_is_named_with_where_it_belongs(tmp_path, toy_class,
                                                                           capsys):
    old = legacy_checkpoint_path(str(tmp_path / "ckpt"), "toy")
    os.makedirs(os.path.dirname(old))
    torch.save({"flow": {}, "config": {"seed": 0}, "class_name": "toy"}, old)
    assert main.main(tiny_args(tmp_path, resume=True)) == 1
    err = capsys.readouterr().err
    assert "layout of an earlier version" in err and "seed<k>" in err


def test_a_checkpoint_of_another_seed_is_refused_naming_its_own_seed_folder(tmp_path):
    with pytest.raises(ValueError) as refused:
        checkpoints.check_same_seed({"config": {"seed": 0}}, 1, ckpt_of(tmp_path, seed=1))
    message = str(refused.value)
    assert "trained with seed 0, this run is seed 1" in message
    assert f"move it to '{ckpt_of(tmp_path, seed=0)}'" in message
    assert "another checkpoint_dir" in message and "delete" not in message


def test_a_snapshot_is_skipped_not_waited_for_while_a_write_is_in_flight(tmp_path, monkeypatch):
    real_save = checkpoints.torch.save

    def slow_save(obj, f):
        time.sleep(1.0)
        real_save(obj, f)
    monkeypatch.setattr(checkpoints.torch, "save", slow_save)
    writer = checkpoints.CheckpointWriter(str(tmp_path / "c.pt"))
    writer.submit(lambda: {"epoch": 1}, 1)
    writer.submit(lambda: pytest.fail("a skipped snapshot is not even taken"), 2)
    assert writer.busy() and writer.skipped == [2]  # returned while epoch 1 is still written
    writer.write_now({"epoch": 3}, 3)  # the last one is never skipped: it waits its turn
    assert load_checkpoint_epoch(tmp_path / "c.pt") == 3 and writer.on_disk_epoch == 3
    summary = writer.summary()
    assert summary["checkpoint_skipped"] == 1 and summary["checkpoint_bytes"] > 0
    assert summary["checkpoint_blocked_s"] >= 0.5  # the final write waited for epoch 1's


def load_checkpoint_epoch(path):
    return torch.load(path, weights_only=True)["epoch"]


@pytest.mark.slow
def test_a_finished_checkpoint_drops_adams_moments_unless_kept(tmp_path, toy_class, capsys):
    import evaluate
    main.train_all(tiny_args(tmp_path, meta_epochs=1))
    main.train_all(tiny_args(tmp_path, meta_epochs=1, keep_optimizer=True,
                             checkpoint_dir=str(tmp_path / "kept"),
                             results_dir=str(tmp_path / "kept_results")))
    dropped, kept = load_checkpoint(ckpt_of(tmp_path)), load_checkpoint(ckpt_of(tmp_path, "kept"))
    assert "optimizer" not in dropped and dropped["optimizer_dropped"] is True
    assert "optimizer" in kept and "optimizer_dropped" not in kept
    moments = sum(t.numel() for s in kept["optimizer"]["state"].values()
                  for k, t in s.items() if k in ("exp_avg", "exp_avg_sq"))
    model, _, _ = evaluate.load_trained_model(ckpt_of(tmp_path), torch.device("cpu"))
    assert moments == 2 * sum(p.numel() for p in model.flow.parameters() if p.requires_grad)
    for key in kept["flow"]:
        assert torch.equal(dropped["flow"][key], kept["flow"][key])
    # evaluate.py reads both alike: the same scores, bit for bit
    images = sorted((toy_class / "test").rglob("*.JPG"))[:3]
    scores = []
    for path in (ckpt_of(tmp_path), ckpt_of(tmp_path, "kept")):
        model, cfg, _ = evaluate.load_trained_model(path, torch.device("cpu"))
        scores.append(evaluate.score_files(model, cfg, images, torch.device("cpu"))[1])
    assert scores[0] == scores[1]
    # read back: works as before, and does not write an empty optimizer in the moments' place
    rows = main.train_all(tiny_args(tmp_path, meta_epochs=1, resume=True, keep_optimizer=True))
    assert rows[0]["status"] == "ok" and "optimizer" not in load_checkpoint(ckpt_of(tmp_path))
    # training on needs the moments: refused, naming the setting; with them it trains on
    before = open(ckpt_of(tmp_path), "rb").read()
    assert main.main(tiny_args(tmp_path, meta_epochs=2, resume=True)) == 1
    err = capsys.readouterr().err
    assert "without Adam's moments (keep_optimizer=False when it was written)" in err
    assert "--keep_optimizer=True" in err and "meta_epochs=1" in err
    assert open(ckpt_of(tmp_path), "rb").read() == before
    rows = main.train_all(tiny_args(tmp_path, meta_epochs=2, resume=True, keep_optimizer=True,
                                    checkpoint_dir=str(tmp_path / "kept"),
                                    results_dir=str(tmp_path / "kept_results")))
    assert rows[0]["status"] == "ok"
    assert load_checkpoint(ckpt_of(tmp_path, "kept"))["epoch"] == 2
