"""One run = one class trained with one seed: its folders, its lock, its row of the table.

A failure inside a run (training, scoring, reports) is that run's failure: it is printed with
its message, recorded as `failed: <reason>` in its row, and the next run goes on.
"""
import os
import sys
import time
import traceback
from pathlib import Path

from checkpoints import (CheckpointWriter, check_resumable, checkpoint_path,
                         legacy_checkpoint_path, snapshot, without_optimizer)
from harness.locks import acquire_lock, release_lock, remove_stale_temps
from harness.references import REFERENCES
from harness.records import METHOD_KEYS, finish_run, trained_sub_epochs
from harness.reports import class_reports, remove_reports_before
from train import DivergedError, best_auroc, train_class
from utils import release_memory

REASON_LENGTH = 160  # characters of an error message kept in the status column


def run_units(cfg):
    """(class, seed) pairs in table order: every class once per seed."""
    return [(c, s) for c in cfg["class_names"] for s in cfg["seeds"]]


def run_tag(cfg, class_name, seed):
    """How printed lines name a run: the class, and the seed when there are several."""
    return f"{class_name} seed {seed}" if len(cfg["seeds"]) > 1 else class_name


def run_paths(cfg, class_name, seed):
    """(checkpoint file, results folder) of a run: <class>/seed<k>/ under checkpoint_dir and
    results_dir, whatever the number of seeds, so a finished run is found by every command."""
    return (checkpoint_path(cfg["checkpoint_dir"], class_name, seed),
            Path(cfg["results_dir"], class_name, f"seed{seed}"))


def lock_folders(cfg, class_name, seed):
    """The folders a run writes, each with the setting that chose it."""
    ckpt, out = run_paths(cfg, class_name, seed)
    folders = [(out, "results_dir")]
    return folders + [(Path(ckpt).parent, "checkpoint_dir")] if cfg["save_model"] else folders


def lock_runs(cfg, units):
    """Claim every run's folders before any work; on refusal give back what was taken."""
    locks = []
    try:
        for class_name, seed in units:
            for folder, setting in lock_folders(cfg, class_name, seed):
                locks.append(acquire_lock(folder, setting))
                remove_stale_temps(folder)  # ours now: a temp file there is a dead write's
    except BaseException:
        release_locks(locks)
        raise
    return locks


def check_legacy_layout(cfg, class_name):
    """Earlier versions kept a one-seed run's checkpoint in <class>/ itself; its seed is
    stored inside, so say where it belongs rather than guess."""
    old = legacy_checkpoint_path(cfg["checkpoint_dir"], class_name)
    if os.path.isfile(old):
        raise FileExistsError(
            f"checkpoint '{old}' is in the layout of an earlier version; move it to "
            f"{os.path.join(os.path.dirname(old), 'seed<k>', 'checkpoint.pt')} with k its seed "
            f"(config['seed'] inside it; 0 unless you set another), then run again")


def check_checkpoints(cfg, units, files):
    """Before the first run trains: with resume, every existing checkpoint must fit this run's
    class, seed, architecture, data and meta_epochs; without resume, none may be overwritten.
    files: layout.ClassFiles per class name."""
    for class_name, seed in units:
        check_legacy_layout(cfg, class_name)
        ckpt, _ = run_paths(cfg, class_name, seed)
        if not os.path.isfile(ckpt):
            continue
        if not cfg["resume"] and cfg["save_model"]:
            raise FileExistsError(
                f"checkpoint '{ckpt}' exists already; continue it with --resume=True (a finished "
                f"run is read back, not retrained), or move it away, or choose another "
                f"checkpoint_dir. Nothing was overwritten")
        if cfg["resume"]:
            check_resumable(ckpt, dict(cfg, seed=seed), files[class_name])


def release_locks(locks):
    for path in locks:
        release_lock(path)


def run_row(base, trained, metrics):
    """The row of a run that finished."""
    state, train_set, test_set = trained.state, trained.train_set, trained.test_set
    best, best_epoch = best_auroc(state["auroc_history"])
    return {**base, **metrics, "auroc_last": state["auroc_history"][-1], "auroc_max": best,
            "epoch_max": best_epoch, "train_images": len(train_set),
            "test_normal": int((test_set.labels == 0).sum()),
            "test_anomalous": int((test_set.labels == 1).sum()),
            "skipped_images": len(train_set.skipped) + len(test_set.skipped),
            "train_minutes": state["train_seconds"] / 60.0, "status": "ok"}


# numerics a finished run's stored scores and threshold were computed with: a read-back keeps
# them in its checkpoint, so evaluate.py goes on scoring the way the threshold was made
STORED_NUMERICS = ("channels_last", "backbone_batch", "adam_kernel")


def settings_of(run_cfg, trained):
    """The settings a run's results belong to: a finished run read back keeps those it was
    trained with (stored in its checkpoint), whatever this command says."""
    if trained.finished_before:
        stored = trained.state["config"]
        kept = (*METHOD_KEYS, *STORED_NUMERICS)
        return {**run_cfg, **{k: stored[k] for k in kept if k in stored}}
    return run_cfg


def same_metrics(stored, new):
    """Equal metric dicts, an undefined metric (NaN) equal to itself: else the read-back of a
    run whose test set holds one kind of image would rewrite its checkpoint every time."""
    if stored is None or new is None or stored.keys() != new.keys():
        return stored == new
    return all(a == b or (a != a and b != b) for a, b in ((stored[k], new[k]) for k in new))


def write_final_checkpoint(writer, run_cfg, trained, metrics):
    """The last epoch's checkpoint, with the metrics when the reports got that far; written
    once (a finished run read back is rewritten only when its stored metrics differ). Adam's
    moments stay with keep_optimizer=True, and in a finished run read back that still has them
    (a read-back never drops what an earlier command chose to keep)."""
    if trained.finished_before and same_metrics(trained.state.get("metrics"), metrics):
        return
    state = dict(trained.state, **({"metrics": metrics} if metrics is not None else {}))
    final = snapshot(trained.model, trained.optimizer, trained.generator, run_cfg, state)
    keep = run_cfg.get("keep_optimizer") or trained.finished_before
    if not keep or state.get("optimizer_dropped"):
        final = without_optimizer(final)
    writer.write_now(final, state["epoch"])


def train_and_report(cfg, files, seed, device, base):
    """Train (or resume) a run, write its reports, then its final checkpoint with the metrics.
    Returns the run's row and the settings its results belong to (settings_of)."""
    ckpt, out = run_paths(cfg, files.name, seed)
    writer = CheckpointWriter(ckpt) if cfg["save_model"] else None
    trained = train_class(dict(cfg, seed=seed), files, device, writer,
                          tag=run_tag(cfg, files.name, seed))
    run_cfg = settings_of(dict(cfg, seed=seed), trained)
    metrics = None
    try:
        metrics = class_reports(trained, run_cfg, device, out)
    finally:
        if writer:  # also when the reports failed: the trained model is not lost
            write_final_checkpoint(writer, run_cfg, trained, metrics)
        trained.optimizer.close()
    written = writer.summary() if writer else {}
    return ({**run_row(base, trained, metrics), **written},
            record_settings(run_cfg, trained.state))


def record_settings(run_cfg, state):
    """The settings a run's record is filed under: a run trained under two sub_epochs values
    (resumed with another) is labelled so, and pooled with runs of neither."""
    return dict(run_cfg, sub_epochs=trained_sub_epochs(state, run_cfg["sub_epochs"]))


def failure_reason(error):
    """Short text for the status column; the whole message is printed."""
    if isinstance(error, DivergedError):
        return error.reason
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return first if len(first) <= REASON_LENGTH else first[:REASON_LENGTH - 3] + "..."


def run_one(cfg, files, seed, device):
    """One run; whatever fails inside it is recorded in its row, and the caller goes on."""
    table = REFERENCES.get(cfg["reference"], {"auroc": {}})  # 'none': no reference column
    base = {"class": files.name, "seed": seed,
            "reference_auroc": table["auroc"].get(files.name)}
    started = time.time()
    try:
        row, record_cfg = train_and_report(cfg, files, seed, device, base)
    except Exception as e:  # noqa: BLE001 - a run's failure must not end the other runs
        if os.environ.get("DIFFERNET_DEBUG"):
            traceback.print_exc()
        print(f"ERROR [{run_tag(cfg, files.name, seed)}] {type(e).__name__}: {e}",
              file=sys.stderr)
        row, record_cfg = {**base, "status": f"failed: {failure_reason(e)}"}, cfg
        # the failed run's record must not be shown with an earlier run's figures
        remove_reports_before(run_paths(cfg, files.name, seed)[1], started)
    finally:
        release_memory(device)  # the next run starts with what the first one had
    return finish_run(record_cfg, run_paths(cfg, files.name, seed)[1], row,
                      run_tag(cfg, files.name, seed))
