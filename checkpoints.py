"""Checkpoints: where they live, what they hold, and the checks before one is resumed.

A checkpoint is a dict of state_dicts, RNG states and plain data (torch.load with
weights_only=True), written by temp file + rename after every meta epoch.
"""
import hashlib
import os
import warnings

import torch

from data import find_class_files
from utils import atomic_write

ARCHITECTURE_KEYS = ("img_size", "n_scales", "n_coupling_blocks", "fc_internal", "clamp_alpha")
DATA_COUNTS = ("train_images", "test_normal", "test_anomalous", "masks")


def checkpoint_path(checkpoint_dir, class_name, seed=None):
    """checkpoint_dir/<class>/checkpoint.pt; with several seeds .../<class>/seed<k>/checkpoint.pt."""
    parts = [checkpoint_dir, class_name] + ([] if seed is None else [f"seed{seed}"])
    return os.path.join(*parts, "checkpoint.pt")


def save_checkpoint(path, state):
    """state: a dict of state_dicts, tensors and plain data (loadable with weights_only=True)."""
    atomic_write(path, lambda tmp: torch.save(state, tmp), setting="checkpoint_dir")


def load_checkpoint(path, map_location="cpu", mmap=False):
    """Load a checkpoint without unpickling code; a foreign file is refused with its name.
    mmap=True reads tensors lazily: cheap when only the plain data are wanted."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        raise ValueError(f"'{path}' is not a DifferNet checkpoint (it cannot be read as plain "
                         f"tensors and data: {type(e).__name__}); pass a checkpoint.pt written by "
                         f"main.py") from None
    missing = [k for k in ("flow", "config", "class_name") if not isinstance(state, dict)
               or k not in state]
    if missing:
        raise ValueError(f"'{path}' is not a DifferNet checkpoint (keys {', '.join(missing)} "
                         f"missing); pass a checkpoint.pt written by main.py")
    return state


def changed_training_settings(state, cfg):
    """Names whose value differs from the checkpoint's, other than the architecture and the
    run's own bookkeeping: a resumed run then no longer equals an uninterrupted one."""
    ignored = set(ARCHITECTURE_KEYS) | {
        "resume", "meta_epochs", "verbose", "device", "num_workers", "checkpoint_dir",
        "results_dir", "class_names", "dataset_path", "make_demo_data", "save_model",
        "cache_device", "cache_mmap", "grad_map_viz", "grad_map_all", "pixel_auroc",
        "threshold_percentile", "seeds", "n_misses", "reference"}
    return sorted(k for k in cfg if k not in ignored and state["config"].get(k) != cfg[k])


def check_checkpoint_matches(state, cfg, class_name, path):
    """Refuse a checkpoint of another class or architecture, listing what differs."""
    diffs = [f"{k}: checkpoint {state['config'].get(k)!r} vs config {cfg[k]!r}"
             for k in ARCHITECTURE_KEYS if state["config"].get(k) != cfg[k]]
    if state["class_name"] != class_name:
        diffs.insert(0, f"class: checkpoint {state['class_name']!r} vs {class_name!r}")
    if diffs:
        raise ValueError(f"checkpoint '{path}' does not match this run; differing: "
                         + "; ".join(diffs) + ". Delete it, or set resume=False or checkpoint_dir")


def new_state(class_name, data):
    """Training state of a class that starts from scratch."""
    return {"epoch": 0, "auroc_history": [], "loss_history": [], "class_name": class_name,
            "train_seconds": 0.0, "data": data}


def restore(model, optimizer, generator, cfg, class_name, path, data):
    """Continue from a checkpoint of the same class, architecture and data."""
    state = load_checkpoint(path)
    check_fits(state, path, cfg, class_name, data)
    if state["epoch"] < cfg["meta_epochs"]:
        # training goes on: what was computed at the old last epoch no longer holds
        for stale in ("threshold", "metrics"):
            state.pop(stale, None)
    changed = changed_training_settings(state, cfg)
    if changed:
        warnings.warn(f"resuming '{path}' with settings other than it was trained with: "
                      f"{', '.join(changed)}; the result will differ from an uninterrupted run")
    model.flow.load_state_dict(state["flow"])
    model.features.backbone.load_state_dict(state["backbone"])
    optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng_train"])
    torch.set_rng_state(state["rng_torch"])
    if state.get("rng_cuda") and torch.cuda.device_count() == len(state["rng_cuda"]):
        torch.cuda.set_rng_state_all(state["rng_cuda"])  # dropout draws on the GPU
    return state


def snapshot(model, optimizer, generator, cfg, state):
    """The checkpoint dict: state_dicts, RNG states and plain data only."""
    return {**state, "flow": model.flow.state_dict(),
            "backbone": model.features.backbone.state_dict(),
            "optimizer": optimizer.state_dict(), "rng_train": generator.get_state(),
            "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "config": dict(cfg)}


def data_fingerprint(dataset_path, class_name):
    """Counts and a digest of the relative paths and sizes of a class's image and mask files:
    a resumed run must see the data its checkpoint was trained and scored on."""
    class_dir = os.path.join(dataset_path, class_name)
    train, (test, labels, masks) = find_class_files(dataset_path, class_name)
    digest = hashlib.sha1()
    for path in [*train, *test, *(m for m in masks if m)]:
        digest.update(f"{os.path.relpath(path, class_dir)}\0{os.path.getsize(path)}\n".encode())
    return {"train_images": len(train), "test_normal": int((labels == 0).sum()),
            "test_anomalous": int((labels == 1).sum()),
            "masks": sum(m is not None for m in masks), "digest": digest.hexdigest()}


def _counts_text(data):
    return ", ".join(f"{k.replace('_', ' ')} {data.get(k, '?')}" for k in DATA_COUNTS)


def check_same_data(state, data, class_name, path):
    """Refuse to resume (or read back) a checkpoint whose class data have changed since."""
    old = state.get("data")
    if old is None or old == data:
        return
    what = ("the same counts, but files were added, removed, renamed or resized"
            if all(old.get(k) == data[k] for k in DATA_COUNTS) else
            f"then {_counts_text(old)}; now {_counts_text(data)}")
    raise ValueError(f"the data of '{class_name}' changed since checkpoint '{path}' was written "
                     f"({what}); its model and AUROCs do not describe these images. Restore the "
                     f"data, or retrain with resume=False (or another checkpoint_dir)")


def check_epochs(state, meta_epochs, path):
    """A checkpoint trained further than asked cannot be turned back."""
    if state["epoch"] > meta_epochs:
        raise ValueError(f"checkpoint '{path}' holds {state['epoch']} meta epochs, more than "
                         f"meta_epochs={meta_epochs}; set meta_epochs >= {state['epoch']}, or "
                         f"resume=False to retrain")


def check_fits(state, path, cfg, class_name, data):
    """A loaded checkpoint must fit this run's class, architecture, data and meta_epochs."""
    check_checkpoint_matches(state, cfg, class_name, path)
    check_same_data(state, data, class_name, path)
    check_epochs(state, cfg["meta_epochs"], path)


def check_resumable(path, cfg, class_name, data):
    """Everything about a checkpoint to resume that can be checked before any training; the
    tensors are memory-mapped, not read."""
    check_fits(load_checkpoint(path, mmap=True), path, cfg, class_name, data)


def add_to_checkpoint(path, **entries):
    """Store results computed after training (e.g. pixel metrics) in the final checkpoint."""
    state = load_checkpoint(path)
    state.update(entries)
    save_checkpoint(path, state)
