"""Bytes of a finished checkpoint and the time evaluate.py takes to load it, with Adam's moments
(keep_optimizer=True, what every finished checkpoint held before) and without (the default).

    python bench_checkpoint.py [--fc_internal 2048] [--img_size 256] [--repeats 3] [--json F]

Trains one meta epoch of one sub-epoch on a small synthetic class (written into a temp folder)
at the default flow (8 coupling blocks, 3 scales; the flow's size does not depend on img_size)
twice, once per setting; the same seed gives the same flow both times. Load times (wall and
this process's CPU time) are the median of --repeats loads with evaluate.load_trained_model,
alternating the two files (both in the page cache: they were just written).
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import evaluate
import main
from checkpoints import checkpoint_path
from prepare.demo import write_demo_class


def train_finished(root, keep, args):
    """A finished run's checkpoint path, trained with keep_optimizer=keep."""
    tag = "kept" if keep else "default"
    settings = dict(dataset_path=str(root / "data"), class_names=["bench"], pretrained=False,
                    device="cpu", img_size=args.img_size, fc_internal=args.fc_internal,
                    meta_epochs=1, sub_epochs=1, n_transforms_test=4, pixel_auroc=False,
                    n_misses=0, transforms_curve=[], num_workers=0, verbose=False,
                    keep_optimizer=keep, checkpoint_dir=str(root / f"ckpt_{tag}"),
                    results_dir=str(root / f"results_{tag}"))
    rows = main.train_all([f"--{k}={v!r}" for k, v in settings.items()])
    if rows[0]["status"] != "ok":
        raise RuntimeError(f"the bench run failed: {rows[0]['status']}")
    return checkpoint_path(settings["checkpoint_dir"], "bench", 0)


def load_seconds(path):
    """(wall, CPU) seconds of evaluate.py's load; the CPU time of this process is the figure
    that other work on a shared machine disturbs least."""
    wall, cpu = time.perf_counter(), time.process_time()
    evaluate.load_trained_model(path, torch.device("cpu"))
    return time.perf_counter() - wall, time.process_time() - cpu


def main_bench(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fc_internal", type=int, default=2048)
    parser.add_argument("--img_size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default="")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_demo_class(root / "data" / "bench", 0, size=args.img_size, n_train=24,
                         n_test_good=4, n_test_bad=4)
        paths = {"keep_optimizer=True (before)": train_finished(root, True, args),
                 "keep_optimizer=False (default, after)": train_finished(root, False, args)}
        times = {name: [] for name in paths}
        for _ in range(args.repeats):
            for name, path in paths.items():
                times[name].append(load_seconds(path))
        result = {name: {"bytes": os.path.getsize(path),
                         "load_s_median": statistics.median(w for w, _ in times[name]),
                         "load_cpu_s_median": statistics.median(c for _, c in times[name]),
                         "load_s_all": times[name]} for name, path in paths.items()}
    text = json.dumps({"fc_internal": args.fc_internal, "img_size": args.img_size,
                       "results": result}, indent=1)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main_bench())
