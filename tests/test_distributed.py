"""torchrun: each rank trains its share of the (class, seed) runs, all ranks check all runs
before any training and stop together, and rank 0 writes the merged table."""
import os
import subprocess
import sys

import pytest

from checkpoints import checkpoint_path, load_checkpoint
from conftest import ROOT, tiny_args
from harness.locks import LOCK_NAME
from helpers import lock_held_by_another_process, read_csv
from main import shard
from prepare.demo import write_demo_class


def test_shard_gives_every_nth_run():
    names = ["a", "b", "c", "d", "e"]
    assert shard(names, 0, 2) == ["a", "c", "e"] and shard(names, 1, 2) == ["b", "d"]
    assert sorted(shard(names, 0, 3) + shard(names, 1, 3) + shard(names, 2, 3)) == names


def torchrun(args):
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           "--nproc_per_node=2", "main.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})


@pytest.mark.slow
def test_torchrun_checks_every_run_up_front_then_trains_each_pair_once(tmp_path):
    classes = ["toy_a", "toy_b"]
    for k, name in enumerate(classes):
        write_demo_class(tmp_path / "data" / name, k, size=64, n_train=8, n_test_good=3,
                         n_test_bad=3)
    args = tiny_args(tmp_path, class_names=classes, seeds=[0, 1], meta_epochs=1)
    # another live run holds the folder of rank 1's last pair: rank 0 stops too, with its reason
    lock = tmp_path / "results" / "toy_b" / "seed1" / LOCK_NAME
    with lock_held_by_another_process(lock.parent):
        refused = torchrun(args)
    assert refused.returncode != 0 and " epoch " not in refused.stdout
    assert "(found by rank 1; no rank started training)" in refused.stderr
    assert "interrupted" not in refused.stderr
    lock.unlink()
    # rank 1's last pair has a checkpoint and resume is off: every rank stops before training
    blocker = checkpoint_path(tmp_path / "ckpt", "toy_b", 1)
    os.makedirs(os.path.dirname(blocker))
    open(blocker, "wb").close()
    refused = torchrun(args)
    assert refused.returncode != 0 and " epoch " not in refused.stdout
    # each rank found it itself, since every rank checks every run
    assert refused.stderr.count(f"checkpoint '{blocker}' exists already") == 2
    assert "interrupted" not in refused.stderr
    os.remove(blocker)
    out = torchrun(args)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in classes:
        for seed in (0, 1):
            assert out.stdout.count(f"[{name} seed {seed}] epoch 1/1") == 1
            state = load_checkpoint(checkpoint_path(tmp_path / "ckpt", name, seed))
            assert state["epoch"] == 1 and state["config"]["seed"] == seed
    per_seed = read_csv(tmp_path / "results" / "results_per_seed.csv")
    assert sorted((r["class"], r["seed"]) for r in per_seed) == [
        ("toy_a", "0"), ("toy_a", "1"), ("toy_b", "0"), ("toy_b", "1")]
    assert [r["class"] for r in read_csv(tmp_path / "results" / "results.csv")] == classes + ["mean"]
    assert out.stdout.count("| class | image AUROC") == 1  # the table is printed once, by rank 0
