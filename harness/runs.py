"""One run = one class trained with one seed: its folders, its lock, its row of the table.

A failure inside a run (training, scoring, reports) is that run's failure: it is printed with
its message, recorded as `failed: <reason>` in its row, and the next run goes on.
"""
import os
import sys
import traceback
from pathlib import Path

from checkpoints import add_to_checkpoint, check_resumable, checkpoint_path, data_fingerprint
from harness.locks import acquire_lock, release_lock, remove_stale_temps
from harness.records import finish_run
from harness.references import REFERENCES
from harness.reports import class_reports
from train import NonFiniteLossError, best_auroc, train_class

REASON_LENGTH = 160  # characters of an error message kept in the status column


def run_units(cfg):
    """(class, seed) pairs in table order: every class once per seed."""
    return [(c, s) for c in cfg["class_names"] for s in cfg["seeds"]]


def run_tag(cfg, class_name, seed):
    """How printed lines name a run: the class, and the seed when there are several."""
    return f"{class_name} seed {seed}" if len(cfg["seeds"]) > 1 else class_name


def run_paths(cfg, class_name, seed):
    """(checkpoint file, results folder) of a run. With several seeds each has its sub-folder
    seed<k>; a one-seed run keeps checkpoints/<class>/checkpoint.pt and results/<class>/,
    unless only the seed<k> checkpoint of an earlier several-seed run exists: that one is used."""
    per_seed = (checkpoint_path(cfg["checkpoint_dir"], class_name, seed),
                Path(cfg["results_dir"], class_name, f"seed{seed}"))
    flat = (checkpoint_path(cfg["checkpoint_dir"], class_name), Path(cfg["results_dir"], class_name))
    if len(cfg["seeds"]) > 1 or (os.path.isfile(per_seed[0]) and not os.path.isfile(flat[0])):
        return per_seed
    return flat


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


def check_checkpoints(cfg, units):
    """Before the first run trains: with resume, every existing checkpoint must fit this run's
    class, architecture, data and meta_epochs; without resume, none may be overwritten."""
    for class_name, seed in units:
        ckpt, _ = run_paths(cfg, class_name, seed)
        if not os.path.isfile(ckpt):
            continue
        if not cfg["resume"] and cfg["save_model"]:
            raise FileExistsError(
                f"checkpoint '{ckpt}' exists already; continue it with --resume=True (a finished "
                f"run is read back, not retrained), or move it away, or choose another "
                f"checkpoint_dir. Nothing was overwritten")
        if cfg["resume"]:
            check_resumable(ckpt, dict(cfg, seed=seed), class_name,
                            data_fingerprint(cfg["dataset_path"], class_name))


def release_locks(locks):
    for path in locks:
        release_lock(path)


def run_row(base, state, train_set, test_set, metrics):
    """The row of a run that finished."""
    best, best_epoch = best_auroc(state["auroc_history"])
    return {**base, **metrics, "auroc_last": state["auroc_history"][-1], "auroc_max": best,
            "epoch_max": best_epoch, "train_images": len(train_set),
            "test_normal": int((test_set.labels == 0).sum()),
            "test_anomalous": int((test_set.labels == 1).sum()),
            "skipped_images": len(train_set.skipped) + len(test_set.skipped),
            "train_minutes": state["train_seconds"] / 60.0, "status": "ok"}


def train_and_report(cfg, class_name, seed, device, base):
    """Train (or resume) a run, write its reports, store its metrics in its checkpoint."""
    run_cfg = dict(cfg, seed=seed)
    ckpt, out = run_paths(cfg, class_name, seed)
    model, state, train_set, test_set = train_class(run_cfg, class_name, device, ckpt,
                                                    tag=run_tag(cfg, class_name, seed))
    metrics = class_reports(model, state, train_set, test_set, run_cfg, class_name, device, out)
    if cfg["save_model"]:
        add_to_checkpoint(ckpt, metrics=metrics)
    return run_row(base, state, train_set, test_set, metrics)


def failure_reason(error):
    """Short text for the status column; the whole message is printed."""
    if isinstance(error, NonFiniteLossError):
        return error.reason
    first = str(error).splitlines()[0] if str(error) else type(error).__name__
    return first if len(first) <= REASON_LENGTH else first[:REASON_LENGTH - 3] + "..."


def run_one(cfg, class_name, seed, device):
    """One run; whatever fails inside it is recorded in its row, and the caller goes on."""
    table = REFERENCES.get(cfg["reference"], {"auroc": {}})  # 'none': no reference column
    base = {"class": class_name, "seed": seed, "reference_auroc": table["auroc"].get(class_name)}
    try:
        row = train_and_report(cfg, class_name, seed, device, base)
    except Exception as e:  # noqa: BLE001 - a run's failure must not end the other runs
        if os.environ.get("DIFFERNET_DEBUG"):
            traceback.print_exc()
        print(f"ERROR [{run_tag(cfg, class_name, seed)}] {type(e).__name__}: {e}", file=sys.stderr)
        row = {**base, "status": f"failed: {failure_reason(e)}"}
    return finish_run(cfg, run_paths(cfg, class_name, seed)[1], row, run_tag(cfg, class_name, seed))
