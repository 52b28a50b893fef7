"""Helpers that only tests need: one-shot pixel metrics over whole lists, CSV rows, a few test
images copied from a class, and another live process holding a run lock."""
import csv
import shutil
import subprocess
import sys
from contextlib import contextmanager

from conftest import ROOT
from metrics import PixelMetrics

# ---------------------------------------------------------------- pixel metrics in one call


def pixel_metrics(maps, masks, fpr_limit=0.3):
    """PixelMetrics over sequences (or NxHxW arrays) of maps and masks, in one call."""
    accumulator = PixelMetrics(fpr_limit)
    for heat_map, mask in zip(maps, masks, strict=True):
        accumulator.add(heat_map, mask)
    return accumulator.compute()


def aupro(maps, masks, fpr_limit=0.3):
    return pixel_metrics(maps, masks, fpr_limit)["aupro"]


def pixel_auroc(maps, masks):
    return pixel_metrics(maps, masks)["pixel_auroc"]


# ---------------------------------------------------------------- files


def read_csv(path):
    """A CSV file's rows as dicts."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def some_test_images(class_dir, folder, per_kind=2):
    """A copy of the first per_kind good and anomalous test images of a class, in folder."""
    for kind in ("good", "anomaly"):
        (folder / kind).mkdir(parents=True)
        for image in sorted((class_dir / "test" / kind).iterdir())[:per_kind]:
            shutil.copy(image, folder / kind / image.name)
    return folder


# ---------------------------------------------------------------- another run's lock

HOLDER = """
import sys
root, folder, *command = sys.argv[1:]
sys.path.insert(0, root)
sys.argv = command  # the command the lock file names
from harness.locks import acquire_lock
acquire_lock(folder, "checkpoint_dir")
print("holding", flush=True)
sys.stdin.read()  # until the test ends it
"""


def start_lock_holder(folder, command=("main.py",)):
    """A live process holding folder's run lock, as another run would; returns once it holds
    it. The caller kills it (or closes its stdin to let it release the lock and exit)."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, ROOT, str(folder), *command],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if holder.stdout.readline() != "holding\n":
        holder.kill()
        raise RuntimeError(f"the lock holder could not take the lock of '{folder}'")
    return holder


@contextmanager
def lock_held_by_another_process(folder, command=("main.py",)):
    """start_lock_holder for a with-block; killed at its end (kill -9, like a crash)."""
    holder = start_lock_holder(folder, command)
    try:
        yield holder
    finally:
        holder.kill()
        holder.wait()
        holder.stdin.close()
        holder.stdout.close()
