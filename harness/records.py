"""What a finished run leaves for the table: run.json (its row, the method settings it ran
with, when it finished) and history.csv (one row per evaluation).

The results table is rebuilt from these records by every command, so runs of different
commands (one job per class on a cluster, a class today and another tomorrow) add up.
"""
import hashlib
import json
import math
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from harness.health import label_divergence
from files import atomic_write, write_csv

RECORD_NAME = "run.json"
HISTORY_NAME = "history.csv"
HISTORY_COLUMNS = ["meta_epoch", "epochs_done", "train_loss", "test_auroc", "seconds"]
RECORD_FORMAT = 1

# Settings that change a run's numbers: runs that differ in any of them are never averaged
# together. Every other config name is listed in NOT_METHOD_KEYS (a test checks that each
# config name is in exactly one of the two, so a new setting must be placed).
METHOD_KEYS = ("img_size", "n_transforms", "n_transforms_test", "test_rotations",
               "transf_rotations", "transf_brightness", "transf_contrast", "transf_saturation",
               "pretrained", "n_scales", "n_coupling_blocks", "fc_internal", "dropout",
               "clamp_alpha", "lr_init", "adam_betas", "adam_eps", "weight_decay", "batch_size",
               "meta_epochs", "sub_epochs", "threshold_percentile", "amp_bf16", "tf32")
# where data and outputs live, what is drawn or printed, and speed settings that change at most
# the rounding (channels_last, backbone_batch, adam_kernel: as another CPU or a GPU does)
NOT_METHOD_KEYS = ("dataset_path", "class_names", "num_workers", "skip_bad_images",
                   "make_demo_data", "weights_path", "seeds", "grad_map_viz", "grad_map_all",
                   "pixel_auroc", "n_misses", "transforms_curve", "cache_device", "cache_mmap",
                   "channels_last", "backbone_batch", "adam_kernel", "device", "save_model",
                   "keep_optimizer", "resume", "checkpoint_dir",
                   "results_dir", "reference", "verbose", "report_only")


def method_settings(cfg):
    """The METHOD_KEYS of a config as JSON gives them back (tuples become lists)."""
    return json.loads(json.dumps({k: cfg[k] for k in METHOD_KEYS}))


def fingerprint(method):
    """A short digest of method settings: equal digests, equal settings (for people comparing
    run.json files; the table compares the settings themselves, to name what differs)."""
    return hashlib.sha1(json.dumps(method, sort_keys=True).encode()).hexdigest()[:12]


def _plain(value):
    """A row value JSON can hold: NaN (undefined metric) becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


# speed settings that change rounding only: not method settings (runs are pooled across them,
# as across devices), but recorded, so a record says how its numbers were computed
SPEED_KEYS = ("channels_last", "backbone_batch", "adam_kernel", "cache_device")


def write_record(cfg, folder, row):
    """results/<class>/[seed<k>/]run.json, by temp file + rename."""
    method = method_settings(cfg)
    record = {"format": RECORD_FORMAT, "class": row["class"], "seed": row["seed"],
              "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "finished_epoch_s": time.time(), "fingerprint": fingerprint(method),
              "method": method, "speed": {k: cfg.get(k) for k in SPEED_KEYS},
              "row": {k: _plain(v) for k, v in row.items()}}
    path = Path(folder) / RECORD_NAME
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(record, indent=1) + "\n"),
                 setting="results_dir")


def finish_run(cfg, folder, row, tag):
    """A run's last step, finished or failed: its status says whether it diverged, and its
    record is written for the table. Returns the row. A record that cannot be written is
    said, not raised: the run itself is over and its checkpoint is complete."""
    row = label_divergence(row, tag)
    try:
        write_record(cfg, folder, row)
    except OSError as e:
        print(f"ERROR [{tag}] {e}; this run will be missing from the results table until "
              f"it is read back with --resume=True", file=sys.stderr)
    return row


def epoch_sub_epochs(state, sub_epochs):
    """The sub_epochs each meta epoch of a run trained with; epochs of a checkpoint written
    before they were kept count as `sub_epochs` (the setting the run is reported under)."""
    kept = list(state.get("epoch_sub_epochs", []))
    return [sub_epochs] * (len(state["loss_history"]) - len(kept)) + kept


def trained_sub_epochs(state, sub_epochs):
    """sub_epochs for the run's record: the one value its epochs trained with, or, for a run
    resumed with another value, a label that equals no setting, so that it is never averaged
    with runs of either (e.g. '8 (meta epochs 1-2), 4 (3-4)')."""
    per_epoch = epoch_sub_epochs(state, sub_epochs)
    if len(set(per_epoch)) <= 1:
        return per_epoch[0] if per_epoch else sub_epochs
    spans, start = [], 1
    for epoch in range(1, len(per_epoch) + 1):
        if epoch == len(per_epoch) or per_epoch[epoch] != per_epoch[epoch - 1]:
            span = f"{start}" if start == epoch else f"{start}-{epoch}"
            spans.append(f"{per_epoch[epoch - 1]} ({'meta epochs ' if not spans else ''}{span})")
            start = epoch + 1
    return ", ".join(spans)


def write_history(folder, state, sub_epochs):
    """history.csv: per meta epoch the epochs done (as they were trained: a run resumed with
    another sub_epochs keeps each epoch's own), mean training loss, test AUROC and seconds.
    A run resumed from a checkpoint written before seconds were kept has them blank."""
    losses, aurocs = state["loss_history"], state["auroc_history"]
    seconds = state.get("epoch_seconds", [])
    seconds = [None] * (len(losses) - len(seconds)) + list(seconds)
    done = [int(n) for n in np.cumsum(epoch_sub_epochs(state, sub_epochs))]
    rows = [[epoch, epochs_done, repr(float(loss)), _csv_number(auroc), _csv_number(sec)]
            for epoch, (epochs_done, loss, auroc, sec) in
            enumerate(zip(done, losses, aurocs, seconds), 1)]
    write_csv(Path(folder) / HISTORY_NAME, HISTORY_COLUMNS, rows)


def _csv_number(value):
    return "" if value is None or math.isnan(value) else repr(float(value))


def record_paths(results_dir):
    """run.json of every run below results_dir: results/<class>/ and results/<class>/seed<k>/."""
    root = Path(results_dir)
    return sorted(set(root.glob(f"*/{RECORD_NAME}")) | set(root.glob(f"*/seed*/{RECORD_NAME}")))


def read_record(path):
    """A record, or None (with a warning naming the file) when it cannot be read."""
    try:
        record = json.loads(Path(path).read_text())
        if not all(k in record for k in ("class", "seed", "method", "row")):
            raise ValueError("keys class, seed, method or row missing")
    except (OSError, ValueError) as e:
        warnings.warn(f"'{path}' is not a readable run record ({e}); its run is left out of the "
                      f"table. Delete it, or rerun that class with --resume=True")
        return None
    record["folder"] = str(Path(path).parent)
    return record


def differing_settings(record, cfg):
    """Names of the method settings whose value in the record differs from cfg's."""
    current = method_settings(cfg)
    return [k for k in METHOD_KEYS if record["method"].get(k) != current[k]]


def read_records(results_dir, cfg):
    """(matching, other): records of runs with cfg's method settings, the newest per (class,
    seed) — a run may have been written in results/<class>/ and later results/<class>/seed<k>/
    — and the records of other settings, each with its "differs" list."""
    matching, other = {}, []
    for path in record_paths(results_dir):
        record = read_record(path)
        if record is None:
            continue
        differs = differing_settings(record, cfg)
        if differs:
            other.append(dict(record, differs=differs))
            continue
        key = (record["class"], record["seed"])
        if key not in matching or _finished(record) > _finished(matching[key]):
            matching[key] = record
    return list(matching.values()), other


def _finished(record):
    return record.get("finished_epoch_s", 0.0)


def describe_other(record, cfg):
    """One line about a record left out of the table: which settings differ, and how."""
    current = method_settings(cfg)
    changes = ", ".join(f"{k}={record['method'].get(k)!r} (now {current[k]!r})"
                        for k in record["differs"])
    return f"{record['class']} seed {record['seed']} in {record['folder']}: {changes}"
