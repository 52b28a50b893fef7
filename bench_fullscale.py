"""The real job at the paper's model size: N classes x M seeds in one process, as `python
main.py` runs them, on small synthetic classes, with one line per run.

    python bench_fullscale.py [--classes 4] [--seeds 1] [--json F] [--name=value ...]

Per run: peak resident memory of the process during that run and after it (host; and the
GPU's peak allocation on a GPU), seconds per meta epoch, and the checkpoint figures of its
record (bytes, seconds written, seconds the training loop was blocked, snapshots skipped).
The model is the default flow (8 coupling blocks of width 2048: 0.69 GB of weights, 1.38 GB
of Adam moments, from 768 features at 3 scales); images are small (img_size 256 unless
overridden: the least 3 scales allow) since memory and checkpoints hardly depend on them. `--name=value` arguments are main.py settings
(--device=cuda, --meta_epochs=3, --save_model=False, ...).
"""
import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch

import main
from files import atomic_write

# the paper's model (3 scales: 768 features; 8 blocks of width 2048) on small images: 256 px is
# the least that keeps AlexNet's 63 px at the third scale
SMALL_RUN = dict(img_size=256, n_transforms_test=4, meta_epochs=2, sub_epochs=1,
                 pretrained=False, num_workers=0, verbose=False, n_misses=0)


def current_rss_gb():
    """Resident memory of this process now (GB), from /proc (Linux)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 ** 3


class PeakRSS:
    """Highest resident memory between reset() and peak(), sampled every 20 ms in a thread:
    ru_maxrss is the process's lifetime peak and cannot show one run apart from another."""

    def __init__(self, interval=0.02):
        self.interval, self._peak, self._stop = interval, 0.0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()

    def _sample(self):
        while not self._stop.wait(self.interval):
            self._peak = max(self._peak, current_rss_gb())

    def reset(self):
        self._peak = current_rss_gb()

    def peak(self):
        return max(self._peak, current_rss_gb())

    def stop(self):
        self._stop.set()
        self._thread.join()


def write_classes(dataset_path, n_classes, size):
    """Small demo-like classes c0, c1, ... (16 training, 4 + 4 test images)."""
    from prepare.demo import write_demo_class
    names = [f"c{i}" for i in range(n_classes)]
    for i, name in enumerate(names):
        write_demo_class(Path(dataset_path) / name, seed=i, size=size, n_train=16,
                         n_test_good=4, n_test_bad=4)
    return names


def measured_runs(args_list, device_hint="cpu"):
    """main.train_all over args_list with a per-run memory record: each run's row, plus its
    peak RSS during the run and RSS after it (GB), and the GPU's peak allocation."""
    sampler, per_run, real_run_one = PeakRSS(), [], main.run_one

    def measured(cfg, files, seed, device):
        sampler.reset()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        row = real_run_one(cfg, files, seed, device)
        per_run.append({"class": files.name, "seed": seed, "status": row["status"],
                        "peak_rss_gb": sampler.peak(), "rss_after_gb": current_rss_gb(),
                        "peak_gpu_gb": (torch.cuda.max_memory_allocated(device) / 1024 ** 3
                                        if device.type == "cuda" else None),
                        **{k: row.get(k) for k in ("checkpoint_bytes", "checkpoint_write_s",
                                                   "checkpoint_blocked_s", "checkpoint_skipped",
                                                   "train_minutes")}})
        return row
    main.run_one = measured
    try:
        main.train_all(args_list)
    finally:
        main.run_one = real_run_one
        sampler.stop()
    return per_run


def run_line(run, meta_epochs):
    gpu = f", GPU peak {run['peak_gpu_gb']:.2f} GB" if run["peak_gpu_gb"] is not None else ""
    ckpt = (f"; checkpoint {run['checkpoint_bytes'] / 1e9:.2f} GB, written "
            f"{run['checkpoint_write_s']:.1f} s, loop blocked {run['checkpoint_blocked_s']:.2f} s, "
            f"{run['checkpoint_skipped']} skipped" if run.get("checkpoint_bytes") else "")
    per_epoch = (run["train_minutes"] * 60 / meta_epochs if run.get("train_minutes") else
                 float("nan"))
    return (f"{run['class']} seed {run['seed']}: {run['status']}; RSS peak "
            f"{run['peak_rss_gb']:.2f} GB, after {run['rss_after_gb']:.2f} GB{gpu}; "
            f"{per_epoch:.1f} s per meta epoch{ckpt}")


def main_args(folder, names, seeds, overrides):
    values = dict(SMALL_RUN, dataset_path=str(Path(folder) / "data"), class_names=names,
                  seeds=list(range(seeds)), checkpoint_dir=str(Path(folder) / "ckpt"),
                  results_dir=str(Path(folder) / "results"))
    return [f"--{k}={v!r}" for k, v in values.items()] + list(overrides)


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=4, help="classes, one model each")
    parser.add_argument("--seeds", type=int, default=1, help="seeds per class")
    parser.add_argument("--json", help="also write the per-run figures to this JSON file")
    args, overrides = parser.parse_known_args(argv)
    size = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("--img_size=")),
                SMALL_RUN["img_size"])
    with tempfile.TemporaryDirectory() as folder:
        names = write_classes(Path(folder) / "data", args.classes, size)
        started = time.perf_counter()
        runs = measured_runs(main_args(folder, names, args.seeds, overrides))
    meta = next((int(o.split("=", 1)[1]) for o in overrides if o.startswith("--meta_epochs=")),
                SMALL_RUN["meta_epochs"])
    print("\n".join(run_line(r, meta) for r in runs))
    peaks = [r["peak_rss_gb"] for r in runs]
    print(f"{len(runs)} runs in {time.perf_counter() - started:.0f} s; RSS peak of the last run "
          f"minus the first: {peaks[-1] - peaks[0]:+.2f} GB")
    if args.json:
        atomic_write(args.json, lambda tmp: Path(tmp).write_text(json.dumps(runs, indent=1)),
                     setting="--json")
    return runs


if __name__ == "__main__":
    cli(sys.argv[1:])
