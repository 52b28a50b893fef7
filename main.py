"""Train DifferNet on every class of config.class_names, once per seed of config.seeds, and
rebuild the results table and report from every finished run in results_dir.

    python main.py [preset.py] [--name=value ...]
    python main.py [preset.py] --report_only=True   (rebuild the table and report, no training)
    torchrun --nproc_per_node=N main.py ...   (rank r trains every N-th (class, seed) run)
"""
import os
import signal
import sys
import traceback
import warnings
from datetime import timedelta
from pathlib import Path

import torch

from data import BadImageError
from harness.locks import RunLockedError, remove_stale_temps
from masks import checked_class_files
from model import WeightsUnavailableError, load_alexnet_features
from harness.fill_analysis import complete_finished_runs
from harness.tables import add_missing_records, check_results_folder, rebuild_results
from harness.runs import (check_checkpoints, lock_runs, release_locks, run_one, run_paths,
                          run_units)
from configurator import (check_outputs_outside_data, default_values, format_config,
                          resolve_config)
from files import check_writable
from utils import exit_with, lacks_bf16, resolve_device, return_freed_memory_to_os

# ranks wait for each other only at the end, after training all their runs: hours, not minutes
GATHER_TIMEOUT = timedelta(days=7)
SHARED_TEMP_AGE = 60.0  # s: an older temp file in results_dir itself is a dead write's


def shard(units, rank, world_size):
    """Runs of one rank under torchrun: every world_size-th, starting at rank."""
    return list(units)[rank::world_size]


LAUNCHER_VARIABLES = ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT")  # torchrun sets all


def check_launcher_environment(environ):
    """A half-set torchrun environment (a variable exported by hand, a launcher that sets only
    some) is one line naming what is missing, not a KeyError deep in torch."""
    present = [name for name in LAUNCHER_VARIABLES if environ.get(name)]
    ranks = [name for name in present if name in ("WORLD_SIZE", "RANK")]
    if not ranks or ranks == ["WORLD_SIZE"] and environ["WORLD_SIZE"] == "1":
        return  # one process (an exported MASTER_ADDR alone launches nothing)
    missing = [name for name in LAUNCHER_VARIABLES if name not in present]
    if missing:
        raise ValueError(f"incomplete launcher environment: {', '.join(present)} set but "
                         f"{', '.join(missing)} missing; launch several processes with torchrun "
                         f"--nproc_per_node=N main.py ..., or unset {', '.join(present)} for one")
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        if not environ.get(name, "0").isdigit():
            raise ValueError(f"launcher variable {name}={environ[name]!r} is not a number; "
                             f"launch with torchrun --nproc_per_node=N main.py ...")
    if not int(environ["RANK"]) < int(environ["WORLD_SIZE"]):
        raise ValueError(f"launcher variables RANK={environ['RANK']} and WORLD_SIZE="
                         f"{environ['WORLD_SIZE']} do not fit (RANK must be below WORLD_SIZE); "
                         f"launch with torchrun --nproc_per_node=N main.py ...")


def distributed_setup(cfg):
    """(rank, world_size, device): torchrun's environment, or a single process. The ranks
    exchange only small Python objects (checks, rows), so they talk over gloo on the CPU: a
    rank that finished early waits in a socket, not spinning a GPU and a core (as NCCL's
    collectives would) until the slowest rank arrives."""
    check_launcher_environment(os.environ)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return 0, 1, resolve_device(cfg["device"])
    import torch.distributed as dist
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device("cpu")
    if torch.cuda.is_available() and cfg["device"] != "cpu":
        check_gpu_per_process(local_rank, torch.cuda.device_count())
        device = torch.device(f"cuda:{local_rank}")
        torch.cuda.set_device(device)
    dist.init_process_group("gloo", timeout=GATHER_TIMEOUT)
    return rank, world_size, device


def check_gpu_per_process(local_rank, n_gpus):
    """torchrun with more processes on a machine than it has GPUs: one line, not a CUDA error
    in every extra rank."""
    if local_rank >= n_gpus:
        raise ValueError(f"torchrun started process LOCAL_RANK={local_rank} on a machine with "
                         f"{n_gpus} GPU(s): one process per GPU; use --nproc_per_node={n_gpus} "
                         f"(or --device=cpu)")


def check_device_supports(cfg, device):
    """Settings this device cannot run fail once, up front, not in every run."""
    if cfg["amp_bf16"] and lacks_bf16(device):
        raise ValueError(f"config 'amp_bf16'=True, but device {device} has "
                         f"no bfloat16 support; set --amp_bf16=False")


def close_process_group(world_size):
    """Tear torch.distributed down on every exit, errors included, so a refusal stays one line
    (no warning about a process group left behind)."""
    if world_size > 1:
        import torch.distributed as dist
        if dist.is_initialized():
            dist.destroy_process_group()


def gather_rows(rows, rank, world_size):
    """Rank 0 collects every rank's rows through torch.distributed (no shared filesystem
    needed, so it works across machines); the other ranks get []."""
    if world_size == 1:
        return rows
    import torch.distributed as dist
    parts = [None] * world_size if rank == 0 else None
    dist.gather_object(rows, parts, dst=0)
    return [row for part in parts for row in part] if rank == 0 else []


def class_files_after_checks(cfg):
    """Errors that would otherwise surface hours later: unwritable outputs, missing classes,
    unavailable AlexNet weights, unreadable masks (unless skip_bad_images leaves their images
    out, class by class). Returns the layout.ClassFiles of every class, listed and checked once
    here (the masks' warnings come here, before any training).
    Every rank checks every class, so all of them stop together."""
    files = {c: checked_class_files(cfg["dataset_path"], c, cfg["skip_bad_images"])
             for c in cfg["class_names"]}
    check_outputs_outside_data(cfg)
    # a missing or wrong weights file fails here, not when the first run builds its model
    load_alexnet_features(cfg["pretrained"], cfg["weights_path"])
    check_results_folder(cfg["results_dir"])  # the tables must not overwrite a user's own files
    # last, as they create the output folders: a run refused for its input leaves none behind
    if cfg["save_model"]:
        check_writable(cfg["checkpoint_dir"], "checkpoint_dir")
    check_writable(cfg["results_dir"], "results_dir")
    if cfg["cache_mmap"]:
        check_writable(cfg["cache_mmap"], "cache_mmap")
    return files


def write_tables(cfg, rows, world_size):
    """Rank 0: the results files, summary plot and index.html from every run record."""
    remove_stale_temps(cfg["results_dir"], recursive=False, min_age=SHARED_TEMP_AGE)
    if world_size > 1:  # ranks on other machines wrote their records there
        add_missing_records(cfg, rows, lambda row: run_paths(cfg, row["class"], row["seed"])[1])
    rebuild_results(cfg)


def report_only(cfg):
    """--report_only=True: the table and report from the records already in results_dir; runs
    finished before per_size.csv or the transforms curve existed get them from their checkpoint."""
    if not Path(cfg["results_dir"]).is_dir():
        raise FileNotFoundError(f"config 'results_dir': '{cfg['results_dir']}' does not exist, so "
                                f"there are no runs to report; pass the results_dir of the runs")
    check_results_folder(cfg["results_dir"], report_only=True)  # before anything is written
    remove_stale_temps(cfg["results_dir"], recursive=False, min_age=SHARED_TEMP_AGE)
    complete_finished_runs(cfg)
    rebuild_results(cfg)
    return []


def agree_to_start(error, world_size):
    """Under torchrun every rank reports whether its checks passed; all go on, or all stop with
    the first rank's reason (a rank that trained alone would be killed by torchrun later)."""
    if world_size == 1:
        return
    import torch.distributed as dist
    reasons = [None] * world_size
    dist.all_gather_object(reasons, None if error is None else str(error))
    failed = [(rank, r) for rank, r in enumerate(reasons) if r is not None]
    if failed and error is None:
        rank, reason = failed[0]
        raise StartRefusedError(f"{reason} (found by rank {rank}; no rank started training)")


class StartRefusedError(RuntimeError):
    """Another torchrun rank's checks failed before any training."""


def start_runs(cfg, units, files, world_size):
    """Locks and checkpoint checks before any training; returns the locks taken. Every rank
    checks every run's checkpoint (cheap: memory-mapped), then they agree to start or stop."""
    locks, error = [], None
    try:
        locks = lock_runs(cfg, units)
        check_checkpoints(cfg, run_units(cfg), files)
    except Exception as e:  # noqa: BLE001 - reported to the other ranks, then raised here
        error = e
    try:
        agree_to_start(error, world_size)
        if error is not None:
            raise error
    except BaseException:
        release_locks(locks)
        raise
    return locks


def train_all(argv):
    """Train every run of this process; rank 0 writes the table. Returns the run rows."""
    return_freed_memory_to_os()
    cfg = resolve_config(argv)
    if cfg["report_only"]:
        return report_only(cfg)
    rank, world_size, device = distributed_setup(cfg)
    try:
        return train_this_process(cfg, rank, world_size, device)
    finally:
        close_process_group(world_size)


def train_this_process(cfg, rank, world_size, device):
    """The runs of this rank; rank 0 gathers every rank's rows and writes the table."""
    check_device_supports(cfg, device)
    if cfg["make_demo_data"]:
        from prepare.demo import ensure_demo_data
        ensure_demo_data(cfg["dataset_path"], cfg["class_names"])
    files = class_files_after_checks(cfg)
    my_runs = shard(run_units(cfg), rank, world_size)
    locks = start_runs(cfg, my_runs, files, world_size)
    try:
        if rank == 0:
            print(f"config (device {device}, {world_size} process(es)):\n{format_config(cfg)}")
        rows = [run_one(cfg, files[class_name], seed, device) for class_name, seed in my_runs]
    finally:
        release_locks(locks)
    rows = gather_rows(rows, rank, world_size)
    if rank == 0:
        write_tables(cfg, rows, world_size)
    return rows


def report_failures(rows):
    """Exit code 1 and one line when any run failed; the table has the reasons."""
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        names = ", ".join(f"{r['class']} (seed {r['seed']})" for r in failed)
        print(f"error: {len(failed)} of {len(rows)} run(s) failed: {names}; see the status column "
              f"of results.md", file=sys.stderr)
        return 1
    return 0


def stop_on_sigterm(signum, frame):
    """A scheduler's SIGTERM ends the run like Ctrl-C: locks released, checkpoints complete."""
    raise KeyboardInterrupt


def one_line_warning(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def main(argv):
    """Entry point: expected failures end with one clear message and exit code 1."""
    signal.signal(signal.SIGTERM, stop_on_sigterm)
    warnings.formatwarning = one_line_warning  # users read the message, not our line numbers
    if any(a in ("-h", "--help") for a in argv):
        print(f"{__doc__}\nconfig names and defaults (config.py):\n{format_config(default_values())}")
        return 0
    try:
        return report_failures(train_all(argv))
    except BrokenPipeError:
        raise  # stdout's reader stopped reading (| head): exit_with ends quietly
    except (ValueError, TypeError, KeyError, FileNotFoundError, FileExistsError, BadImageError,
            WeightsUnavailableError, RunLockedError, StartRefusedError, OSError) as e:
        if os.environ.get("DIFFERNET_DEBUG"):
            traceback.print_exc()
        print(f"error: {e.args[0] if isinstance(e, KeyError) else e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ninterrupted: every checkpoint written so far is complete (temp file + rename); "
              "continue with --resume=True", file=sys.stderr)
        return 130


if __name__ == "__main__":
    exit_with(main, sys.argv[1:])
