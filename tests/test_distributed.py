"""torchrun: each rank trains its share of class_names; rank 0 writes the merged table."""
import csv
import subprocess
import sys

from conftest import ROOT, tiny_args
from prepare.demo import write_demo_class
from main import shard
from checkpoints import checkpoint_path, load_checkpoint


def test_shard_gives_every_nth_class():
    names = ["a", "b", "c", "d", "e"]
    assert shard(names, 0, 2) == ["a", "c", "e"] and shard(names, 1, 2) == ["b", "d"]
    assert sorted(shard(names, 0, 3) + shard(names, 1, 3) + shard(names, 2, 3)) == names


def test_two_gloo_processes_train_all_classes_and_merge(tmp_path):
    classes = ["toy_a", "toy_b", "toy_c"]
    for k, name in enumerate(classes):
        write_demo_class(tmp_path / "data" / name, k, size=64, n_train=8, n_test_good=3, n_test_bad=3)
    args = tiny_args(tmp_path, class_names=classes, meta_epochs=1, device="cpu")
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                          "--nproc_per_node=2", "main.py", *args], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    with open(tmp_path / "results" / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["class"] for r in rows] == classes + ["mean"]
    assert all(r["status"] == "ok" for r in rows[:3])
    for name in classes:
        assert load_checkpoint(checkpoint_path(tmp_path / "ckpt", name, 0))["class_name"] == name
    assert out.stdout.count("| toy_a |") == 1  # the table is printed once, by rank 0
