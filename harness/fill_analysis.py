"""--report_only=True for runs that finished before per_size.csv and the transforms curve
existed (or whose curve has other rotation counts than transforms_curve asks for): their files
are made from the finished checkpoint and the class's test set, without training, before the
table is rebuilt. A run whose checkpoint or data cannot serve is named in a warning and keeps
what it has; the table is rebuilt all the same."""
import warnings
from pathlib import Path

from checkpoints import check_same_data, checkpoint_path, data_fingerprint, load_checkpoint
from data import BadImageError, build_image_set
from harness.locks import RunLockedError, acquire_lock, release_lock
from harness.per_size import PER_SIZE_NAME, write_per_size
from harness.records import read_records
from harness.transforms_curve import (CURVE_NAME, curve_counts_of, run_facts,
                                      write_transforms_curve)
from masks import checked_class_files
from utils import resolve_device


def missing_parts(cfg, record):
    """Which of 'per_size' and 'curve' a finished run's folder lacks."""
    folder = Path(record["folder"])
    parts = []
    if not (folder / PER_SIZE_NAME).is_file():
        parts.append("per_size")
    counts = cfg["transforms_curve"]
    if counts and curve_counts_of(folder / CURVE_NAME) != list(counts):
        parts.append("curve")
    return parts


def finished_state(cfg, record):
    """(checkpoint path, its state) of a finished run; a clear error when it cannot serve."""
    path = checkpoint_path(cfg["checkpoint_dir"], record["class"], record["seed"])
    state = load_checkpoint(path)
    if "threshold" not in state or "test_scores" not in state:
        raise ValueError(f"checkpoint '{path}' is not a finished run's")
    return path, state


def test_set_of(cfg, record, path, state, parts):
    """The run's test set as it was scored (its img_size and skip_bad_images), checked against
    the checkpoint's data and its stored scores; None when only per_size is wanted and the
    class has no masks (nothing to make, nothing to decode)."""
    run_cfg = state["config"]
    skip_bad = run_cfg.get("skip_bad_images", False)
    files = checked_class_files(cfg["dataset_path"], record["class"], skip_bad)
    check_same_data(state, data_fingerprint(files), record["class"], path, files)
    if parts == ["per_size"] and all(m is None for m in files.masks):
        return None
    test_set = build_image_set(files.test, files.labels, files.masks, run_cfg["img_size"],
                               num_workers=cfg["num_workers"], skip_bad=skip_bad)
    if len(test_set) != len(state["test_scores"]):
        raise ValueError(f"{len(test_set)} readable test images, but checkpoint '{path}' holds "
                         f"{len(state['test_scores'])} scores")
    return test_set


def run_model(state, device):
    """The finished model with the run's own speed settings (channels_last changes the last
    bits of a score), so that its scores at the run's rotations equal the run's own."""
    from torchvision.models import alexnet

    from train import build_model
    model = build_model(state["config"], alexnet(weights=None).features)
    model.flow.load_state_dict(state["flow"])
    model.features.backbone.load_state_dict(state["backbone"])
    return model.to(device).eval()


def complete_run(cfg, record, parts, device):
    """Write the missing parts of one finished run into its results folder."""
    path, state = finished_state(cfg, record)
    test_set = test_set_of(cfg, record, path, state, parts)
    if test_set is None:
        return
    folder, run_cfg = Path(record["folder"]), state["config"]
    if "per_size" in parts:
        write_per_size(folder, test_set, state["test_scores"].numpy(), state.get("threshold"))
    if "curve" in parts:
        model = run_model(state, device)
        write_transforms_curve(folder, model, test_set.images, test_set.labels,
                               cfg["transforms_curve"], device, run_facts(run_cfg, state),
                               run_cfg["n_transforms_test"])


def complete_finished_runs(cfg):
    """report_only's first step: the missing analysis files of every finished run in
    results_dir with cfg's method settings. Returns the (class, seed) of the runs completed."""
    matching, _ = read_records(cfg["results_dir"], cfg)
    todo = [(r, missing_parts(cfg, r)) for r in matching if r["row"].get("status") == "ok"]
    todo = [(r, parts) for r, parts in todo if parts]
    without = [r for r, _ in todo if not Path(checkpoint_path(
        cfg["checkpoint_dir"], r["class"], r["seed"])).is_file()]
    if without:  # save_model=False, or checkpoints moved away to save space: nothing to make
        print(f"{len(without)} finished run(s) without per_size.csv or the transforms curve have "
              f"no checkpoint in checkpoint_dir '{cfg['checkpoint_dir']}' to make them from: "
              + ", ".join(f"{r['class']} seed {r['seed']}" for r in without))
    todo = [(r, parts) for r, parts in todo if r not in without]
    done, device = [], resolve_device(cfg["device"]) if todo else None
    for record, parts in sorted(todo, key=lambda t: (t[0]["class"], t[0]["seed"])):
        tag = f"{record['class']} seed {record['seed']}"
        print(f"[{tag}] making {' and '.join(parts)} from its finished checkpoint")
        try:
            lock = acquire_lock(record["folder"], "results_dir")
        except RunLockedError as e:
            warnings.warn(f"{tag}: {e}; its {', '.join(parts)} files were not made")
            continue
        try:
            complete_run(cfg, record, parts, device)
            done.append((record["class"], record["seed"]))
        except (ValueError, FileNotFoundError, OSError, BadImageError) as e:
            warnings.warn(f"{tag}: its {', '.join(parts)} files were not made: {e}")
        finally:
            release_lock(lock)
    return done
