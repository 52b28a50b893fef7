"""Checkpoints: where they live, what they hold, how they are written, and the checks before
one is resumed.

A checkpoint is a dict of state_dicts, RNG states and plain data (torch.load with
weights_only=True), written by temp file + rename after every meta epoch, in a background
thread (CheckpointWriter) so that training goes on while the disk works.
"""
import os
import threading
import time
import warnings
import zipfile

import torch

from fingerprint import check_same_data, data_fingerprint  # noqa: F401 - train.py imports it here
from files import atomic_write

ARCHITECTURE_KEYS = ("img_size", "n_scales", "n_coupling_blocks", "fc_internal", "clamp_alpha")
# settings a finished run's stored scores and threshold were computed with
EVALUATION_KEYS = ("n_transforms_test", "test_rotations", "threshold_percentile")


ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format is a zip archive


def checkpoint_path(checkpoint_dir, class_name, seed):
    """checkpoint_dir/<class>/seed<k>/checkpoint.pt: a run's place depends on its class and seed
    only, never on how many seeds a command names."""
    return os.path.join(checkpoint_dir, class_name, f"seed{seed}", "checkpoint.pt")


def legacy_checkpoint_path(checkpoint_dir, class_name):
    """Where one-seed runs of earlier versions of this code kept their checkpoint."""
    return os.path.join(checkpoint_dir, class_name, "checkpoint.pt")


def _torch_save(state, tmp):
    """torch.save, whose zip writer reports a full disk as a RuntimeError: made an OSError, so
    atomic_write names the file and the setting."""
    try:
        torch.save(state, tmp)
    except RuntimeError as e:
        raise OSError(f"the disk may be full (torch's writer stopped: "
                      f"{str(e).splitlines()[0][:100]})") from e


def save_checkpoint(path, state):
    """state: a dict of state_dicts, tensors and plain data (loadable with weights_only=True)."""
    atomic_write(path, lambda tmp: _torch_save(state, tmp), setting="checkpoint_dir")


def host_copy(tree):
    """A copy of every tensor of a nested dict/list in host memory (page-locked when a GPU is
    there, so the copy does not wait on pageable memory): the snapshot a background write may
    read while training changes the originals."""
    if isinstance(tree, torch.Tensor):
        if tree.is_cuda:  # one copy, straight into page-locked memory
            return torch.empty_like(tree, device="cpu", pin_memory=True).copy_(tree.detach())
        return tree.detach().clone()
    if isinstance(tree, dict):
        return {k: host_copy(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(host_copy(v) for v in tree)
    return tree


class CheckpointWriter:
    """Writes one run's checkpoints in a background thread, at most one write in flight, so
    host memory holds at most one snapshot. A snapshot submitted while the previous write is
    still in flight is skipped (its epoch goes to `skipped`): the next one will be newer, and
    waiting would stall training for a checkpoint that is stale before it is on disk (a slow
    disk, several ranks writing at once). Each write goes through a temp file renamed when
    complete, so the file on disk is always the last complete checkpoint. An error of the
    writer is raised in the training loop at the next submit or wait. `writes` records
    (bytes, write seconds, seconds the caller was blocked) of each write."""

    def __init__(self, path):
        self.path = path
        self.on_disk_epoch = None
        self.writes, self.skipped = [], []
        self._thread, self._error = None, None

    def busy(self):
        return self._thread is not None and self._thread.is_alive()

    def submit(self, make_state, epoch, skip_if_busy=True):
        """Write make_state()'s checkpoint of meta epoch `epoch` in the background, unless a
        write is in flight and skip_if_busy. make_state runs after the previous write is done
        and must return a snapshot the caller will not change (checkpoints.snapshot(...,
        copy=True) while training goes on)."""
        if skip_if_busy and self.busy():
            self.skipped.append(epoch)
            return
        started = time.perf_counter()
        self.wait()
        state = make_state()
        blocked = time.perf_counter() - started
        self._thread = threading.Thread(target=self._write, args=(state, epoch, blocked),
                                        name="checkpoint-writer")
        self._thread.start()

    def summary(self):
        """The run's checkpoint figures for its record: bytes of the last write, seconds
        written and seconds the loop was blocked (sums), epochs skipped."""
        return {"checkpoint_bytes": self.writes[-1]["bytes"] if self.writes else None,
                "checkpoint_write_s": sum(w["write_s"] for w in self.writes),
                "checkpoint_blocked_s": sum(w["blocked_s"] for w in self.writes),
                "checkpoint_skipped": len(self.skipped)}

    def _write(self, state, epoch, blocked):
        began = time.perf_counter()
        try:
            save_checkpoint(self.path, state)
        except BaseException as e:  # re-raised in the training loop by wait()
            self._error = e
            return
        self.on_disk_epoch = epoch
        self.writes.append({"bytes": os.path.getsize(self.path),
                            "write_s": time.perf_counter() - began, "blocked_s": blocked})

    def wait(self):
        """Until the write in flight is on disk; its error, if any, is raised here."""
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def write_now(self, state, epoch):
        """Write and wait (the final checkpoint: nothing left to overlap with, never skipped)."""
        self.submit(lambda: state, epoch, skip_if_busy=False)
        self.wait()

    def on_disk_text(self):
        """What remains on disk, said truthfully (for failure messages)."""
        try:
            self.wait()
        except Exception:  # noqa: BLE001 - the caller is reporting another failure already
            pass
        if os.path.isfile(self.path):
            return f"the last good checkpoint ({self.path}) is kept"
        return "no checkpoint was written"

    def finish_after_interrupt(self):
        """Ctrl-C / SIGTERM: let a write in flight complete, then say which epoch is on disk."""
        text = self.on_disk_text()
        if self.on_disk_epoch is not None:
            text += f", after meta epoch {self.on_disk_epoch}"
        return text


def load_checkpoint(path, map_location="cpu", mmap=False):
    """Load a checkpoint without unpickling code; a foreign file is refused with its name.
    mmap=True reads tensors lazily: cheap when only the plain data are wanted."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint '{path}' not found")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        raise ValueError(_unreadable_text(path, e)) from None
    missing = [k for k in ("flow", "config", "class_name") if not isinstance(state, dict)
               or k not in state]
    if missing:
        raise ValueError(f"'{path}' is not a DifferNet checkpoint (keys {', '.join(missing)} "
                         f"missing); pass a checkpoint.pt written by main.py")
    return state


def _unreadable_text(path, error):
    """A damaged file of ours (a torch zip cut short by a full disk or a partial copy) is named
    as damaged; anything else as not a checkpoint."""
    with open(path, "rb") as f:
        starts_like_ours = f.read(len(ZIP_MAGIC)) == ZIP_MAGIC
    if starts_like_ours and not zipfile.is_zipfile(path):  # the zip's directory at its end is gone
        return (f"checkpoint '{path}' is damaged or incomplete ({type(error).__name__}), e.g. cut "
                f"short by a full disk or a partial copy; copy it again, or delete it (or move it "
                f"away) to train this run from scratch")
    return (f"'{path}' is not a DifferNet checkpoint (it cannot be read as plain tensors and "
            f"data: {type(error).__name__}); pass a checkpoint.pt written by main.py")


def changed_training_settings(state, cfg):
    """Names whose value differs from the checkpoint's, other than the architecture and the
    run's own bookkeeping: a resumed run then no longer equals an uninterrupted one."""
    ignored = set(ARCHITECTURE_KEYS) | {
        "resume", "meta_epochs", "verbose", "device", "num_workers", "checkpoint_dir",
        "results_dir", "class_names", "dataset_path", "make_demo_data", "save_model", "keep_optimizer",
        "cache_device", "cache_mmap", "grad_map_viz", "grad_map_all", "pixel_auroc",
        "threshold_percentile", "seeds", "n_misses", "reference", "transforms_curve"}
    return sorted(k for k in cfg if k not in ignored and state["config"].get(k) != cfg[k])


def check_checkpoint_matches(state, cfg, class_name, path):
    """Refuse a checkpoint of another class or architecture, listing what differs."""
    diffs = [f"{k}: checkpoint {state['config'].get(k)!r} vs config {cfg[k]!r}"
             for k in ARCHITECTURE_KEYS if state["config"].get(k) != cfg[k]]
    if state["class_name"] != class_name:
        diffs.insert(0, f"class: checkpoint {state['class_name']!r} vs {class_name!r}")
    if diffs:
        raise ValueError(f"checkpoint '{path}' does not match this run; differing: "
                         + "; ".join(diffs) + ". Move it away, or choose another checkpoint_dir")


def new_state(class_name, data):
    """Training state of a class that starts from scratch."""
    return {"epoch": 0, "auroc_history": [], "loss_history": [], "class_name": class_name,
            "train_seconds": 0.0, "data": data}


def restore(model, optimizer, generator, cfg, files, path):
    """The state of a checkpoint of the same class, seed, architecture and data, loaded into
    model, optimizer and generator. Training that goes on drops what was computed at the old
    last epoch (threshold, metrics)."""
    state = load_checkpoint(path)
    check_fits(state, path, cfg, files)
    if state["epoch"] < cfg["meta_epochs"]:
        state = {k: v for k, v in state.items() if k not in ("threshold", "metrics")}
    changed = changed_training_settings(state, cfg)
    if changed and state["epoch"] == cfg["meta_epochs"]:
        warnings.warn(f"reading back the finished run '{path}', trained with other settings than "
                      f"this command's: {', '.join(changed)}; its results and record keep the "
                      f"settings it was trained with")
    elif changed:
        warnings.warn(f"resuming '{path}' with settings other than it was trained with: "
                      f"{', '.join(changed)}; the result will differ from an uninterrupted run")
    model.flow.load_state_dict(state["flow"])
    model.features.backbone.load_state_dict(state["backbone"])
    if "optimizer" in state:  # a finished run read back needs no moments (check_optimizer_kept)
        optimizer.load_state_dict(state["optimizer"])
    generator.set_state(state["rng_train"])
    torch.set_rng_state(state["rng_torch"])
    if state.get("rng_cuda") and torch.cuda.device_count() == len(state["rng_cuda"]):
        torch.cuda.set_rng_state_all(state["rng_cuda"])  # dropout draws on the GPU
    return {k: v for k, v in state.items() if k not in TENSOR_KEYS}


TENSOR_KEYS = ("flow", "backbone", "optimizer", "rng_train", "rng_torch", "rng_cuda")


def on_host(tree):
    """Every tensor of a nested dict/list in host memory, copied only when it is on a GPU: a
    checkpoint must load with a plain torch.load on a machine without one."""
    if isinstance(tree, torch.Tensor):
        return tree.detach().cpu()
    if isinstance(tree, dict):
        return {k: on_host(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(on_host(v) for v in tree)
    return tree


def snapshot(model, optimizer, generator, cfg, state, copy=False):
    """The checkpoint dict: state_dicts, RNG states and plain data only, tensors in host
    memory. copy=True copies CPU tensors too, safe to write while training changes the model
    (CheckpointWriter); copy=False shares them (the final checkpoint: nothing trains on)."""
    tensors = {"flow": model.flow.state_dict(), "backbone": model.features.backbone.state_dict(),
               "optimizer": optimizer.state_dict()}
    return {**on_host(state), **(host_copy(tensors) if copy else on_host(tensors)),
            "rng_train": generator.get_state(), "rng_torch": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "config": dict(cfg)}


def check_epochs(state, meta_epochs, path):
    """A checkpoint trained further than asked cannot be turned back."""
    if state["epoch"] > meta_epochs:
        raise ValueError(f"checkpoint '{path}' holds {state['epoch']} meta epochs, more than "
                         f"meta_epochs={meta_epochs}; set meta_epochs >= {state['epoch']}, or "
                         f"move it away (or choose another checkpoint_dir) to retrain")


def check_same_seed(state, seed, path):
    """A run continues or reads back its own seed's checkpoint only."""
    stored = state["config"].get("seed")
    if stored != seed:
        own = os.path.join(os.path.dirname(os.path.dirname(path)), f"seed{stored}",
                           os.path.basename(path))
        raise ValueError(f"checkpoint '{path}' was trained with seed {stored}, this run is seed "
                         f"{seed}; move it to '{own}', where its own seed's runs look for it "
                         f"(if no checkpoint is there yet), or choose another checkpoint_dir "
                         f"for this run. The checkpoint was left as it is")


def check_same_evaluation(state, cfg, path):
    """A finished run is read back with the settings it was evaluated with: its scores and
    threshold would otherwise mix with figures and metrics computed under the new ones."""
    if state["epoch"] != cfg["meta_epochs"]:
        return
    diffs = [f"{k}: checkpoint {state['config'].get(k)!r} vs config {cfg[k]!r}"
             for k in EVALUATION_KEYS if state["config"].get(k) != cfg[k]]
    if diffs:
        raise ValueError(f"finished checkpoint '{path}' was evaluated with other settings ("
                         f"{'; '.join(diffs)}); read it back with its settings, score images "
                         f"with evaluate.py, or move it away (or choose another checkpoint_dir) to retrain")


def check_optimizer_kept(state, meta_epochs, path):
    """Training on needs Adam's moments; a finished checkpoint holds them only when it was
    written with keep_optimizer=True (without them the run would go on unlike an uninterrupted
    one). Reading a finished run back needs none."""
    if "optimizer" in state or state["epoch"] >= meta_epochs:
        return
    raise ValueError(f"checkpoint '{path}' finished after {state['epoch']} meta epochs without "
                     f"Adam's moments (keep_optimizer=False when it was written), so it cannot "
                     f"be trained on to meta_epochs={meta_epochs}; read it back with "
                     f"meta_epochs={state['epoch']}, or retrain it with --keep_optimizer=True "
                     f"to be able to train on later (move it away or choose another checkpoint_dir)")


def without_optimizer(state):
    """The finished checkpoint's dict without Adam's moments (2/3 of its bytes at any flow size),
    marked so that a read-back never writes an empty optimizer in their place."""
    return {**{k: v for k, v in state.items() if k != "optimizer"}, "optimizer_dropped": True}


def check_fits(state, path, cfg, files):
    """A loaded checkpoint must fit this run's class, seed, architecture, data and meta_epochs."""
    check_checkpoint_matches(state, cfg, files.name, path)
    check_same_seed(state, cfg["seed"], path)
    check_same_data(state, data_fingerprint(files), files.name, path, files)
    check_epochs(state, cfg["meta_epochs"], path)
    check_optimizer_kept(state, cfg["meta_epochs"], path)
    check_same_evaluation(state, cfg, path)


def check_resumable(path, cfg, files):
    """Everything about a checkpoint to resume that can be checked before any training; the
    tensors are memory-mapped, not read."""
    check_fits(load_checkpoint(path, mmap=True), path, cfg, files)
