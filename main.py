"""Train DifferNet on every class of config.class_names and write the results table.

    python main.py [preset.py] [--name=value ...]
    torchrun --nproc_per_node=N main.py ...   (rank r trains every N-th class)
"""
import json
import os
import sys
import traceback
from pathlib import Path

import torch

from data import BadImageError, find_class_files
from model import WeightsUnavailableError
from reports import class_reports, summary_plot
from train import NonFiniteLossError, best_auroc, train_class
from utils import (atomic_write, check_writable, default_values, format_config, resolve_config,
                   resolve_device, return_freed_memory_to_os, write_results)

# VisA image AUROC of the seed implementation (max over epochs), from SPEC.md
SEED_AUROC = {"candle": 0.8825, "capsules": 0.7145, "cashew": 0.9701, "chewinggum": 0.9685,
              "fryum": 0.9501, "pipe_fryum": 0.9637, "pcb1": 0.9004, "pcb2": 0.9825,
              "pcb3": 0.8567, "pcb4": 0.9897, "macaroni1": 0.8205, "macaroni2": 0.7748}
RESULT_COLUMNS = [
    ("class", "class"),
    ("auroc_last", "image AUROC (last epoch)"),
    ("auroc_max", "max AUROC (test-selected)"),
    ("epoch_max", "epoch of max"),
    ("pixel_auroc", "pixel AUROC"),
    ("seed_auroc", "seed max AUROC"),
    ("train_images", "train images"),
    ("test_normal", "test normal"),
    ("test_anomalous", "test anomalous"),
    ("skipped_images", "skipped images"),
    ("train_minutes", "train+eval minutes"),
    ("status", "status"),
]


def class_row(class_name, state, train_set, test_set):
    """One results row from a finished class."""
    best, best_epoch = best_auroc(state["auroc_history"])
    return {"class": class_name, "auroc_last": state["auroc_history"][-1], "auroc_max": best,
            "epoch_max": best_epoch, "pixel_auroc": state.get("pixel_auroc"),
            "seed_auroc": SEED_AUROC.get(class_name), "train_images": len(train_set),
            "test_normal": int((test_set.labels == 0).sum()),
            "test_anomalous": int((test_set.labels == 1).sum()),
            "skipped_images": len(train_set.skipped) + len(test_set.skipped),
            "train_minutes": state["train_seconds"] / 60.0, "status": "ok"}


def failed_row(class_name, reason):
    return {"class": class_name, "seed_auroc": SEED_AUROC.get(class_name), "status": f"failed: {reason}"}


def run_class(cfg, class_name, device):
    """Train one class and run its reports; a diverging class is recorded as failed."""
    try:
        model, state, train_set, test_set = train_class(cfg, class_name, device)
    except NonFiniteLossError as e:
        print(f"ERROR {e}", file=sys.stderr)
        return failed_row(class_name, "non-finite loss")
    class_reports(model, state, train_set, test_set, cfg, class_name, device,
                  Path(cfg["results_dir"]) / class_name)
    return class_row(class_name, state, train_set, test_set)


def shard(class_names, rank, world_size):
    """Classes of one rank under torchrun: every world_size-th, starting at rank."""
    return list(class_names)[rank::world_size]


def distributed_setup(cfg):
    """(rank, world_size, device): torchrun's environment, or a single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, resolve_device(cfg["device"])
    import torch.distributed as dist
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and cfg["device"] != "cpu"
    if use_cuda:
        torch.cuda.set_device(local_rank)  # NCCL's barrier runs on the current device
    dist.init_process_group("nccl" if use_cuda else "gloo")
    device = torch.device(f"cuda:{local_rank}") if use_cuda else torch.device("cpu")
    return rank, world_size, device


def merge_parts(results_dir, world_size, class_names):
    """Rank 0: the rows every rank wrote, in the order of class_names."""
    rows = []
    for r in range(world_size):
        rows += json.loads((Path(results_dir) / ".parts" / f"rank{r}.json").read_text())
    order = {c: i for i, c in enumerate(class_names)}
    return sorted(rows, key=lambda row: order[row["class"]])


def write_part(results_dir, rank, rows):
    atomic_write(Path(results_dir) / ".parts" / f"rank{rank}.json",
                 lambda tmp: Path(tmp).write_text(json.dumps(rows)))


def check_outputs_and_data(cfg, class_names):
    """Errors that would otherwise surface hours later: unwritable outputs, missing classes."""
    if cfg["save_model"]:
        check_writable(cfg["checkpoint_dir"], "checkpoint_dir")
    check_writable(cfg["results_dir"], "results_dir")
    for class_name in class_names:
        find_class_files(cfg["dataset_path"], class_name)


def configure_torch(cfg):
    """TF32 for the flow's matmuls only when asked for; convolutions keep PyTorch's default."""
    torch.backends.cuda.matmul.allow_tf32 = cfg["tf32"]


def run(argv):
    return_freed_memory_to_os()
    cfg = resolve_config(argv)
    rank, world_size, device = distributed_setup(cfg)
    configure_torch(cfg)
    my_classes = shard(cfg["class_names"], rank, world_size)
    if cfg["make_demo_data"]:
        from demo_data import ensure_demo_data
        ensure_demo_data(cfg["dataset_path"], my_classes, cfg["seed"])
    check_outputs_and_data(cfg, my_classes)
    if rank == 0:
        print(f"config (device {device}, {world_size} process(es)):\n{format_config(cfg)}")
    rows = [run_class(cfg, c, device) for c in my_classes]
    if world_size > 1:
        import torch.distributed as dist
        write_part(cfg["results_dir"], rank, rows)
        dist.barrier()
        if rank == 0:
            rows = merge_parts(cfg["results_dir"], world_size, cfg["class_names"])
        dist.destroy_process_group()
    if rank == 0:
        rows = write_results(rows, cfg["results_dir"], RESULT_COLUMNS)
        summary_plot(rows, SEED_AUROC, cfg["results_dir"])
        print(Path(cfg["results_dir"], "results.md").read_text())
    return rows


def main(argv):
    """Entry point: expected failures end with one clear message and exit code 1."""
    if any(a in ("-h", "--help") for a in argv):
        print(f"{__doc__}\nconfig names and defaults (config.py):\n{format_config(default_values())}")
        return 0
    try:
        run(argv)
    except (ValueError, TypeError, KeyError, FileNotFoundError, BadImageError,
            WeightsUnavailableError, OSError) as e:
        if os.environ.get("DIFFERNET_DEBUG"):
            traceback.print_exc()
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: the last checkpoint of each class is complete; continue with "
              "--resume=True", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
