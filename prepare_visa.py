"""Turn the official VisA download into the per-class layout DifferNet reads, by the 1cls split.

    python prepare_visa.py --visa_root PATH/TO/VisA [--out data/visa] [--classes candle pcb1]

Writes CLASS/train/good, CLASS/test/good, CLASS/test/anomaly and
CLASS/ground_truth/anomaly/<stem>.png (masks binarised to 0/255). Images are
hard-linked where possible, copied otherwise, never re-encoded. Each class is
built in CLASS.partial and renamed when complete, so an interrupted run is
redone and a finished class is verified and skipped.
"""
import argparse
import csv
import json
import os
import shutil
import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
from PIL import Image

SPLIT_CSV = os.path.join("split_csv", "1cls.csv")
CSV_COLUMNS = ["object", "split", "label", "image", "mask"]
MARKER = ".prepared.json"
# (train normal, test normal, test anomaly) of the official 1cls split
OFFICIAL_COUNTS = {
    "candle": (900, 100, 100), "capsules": (542, 60, 100), "cashew": (450, 50, 100),
    "chewinggum": (453, 50, 100), "fryum": (450, 50, 100), "macaroni1": (900, 100, 100),
    "macaroni2": (900, 100, 100), "pcb1": (904, 100, 100), "pcb2": (901, 100, 100),
    "pcb3": (905, 101, 100), "pcb4": (904, 101, 100), "pipe_fryum": (450, 50, 100)}


class PrepareError(Exception):
    """A problem with the download, the split or the output folder; the message says what to do."""


def check_root(visa_root):
    """Catch the usual wrong --visa_root before reading anything."""
    root = Path(visa_root)
    if root.is_file():
        hint = (" It looks like the archive: extract it first (tar -xf VisA_20220922.tar -C DIR) "
                "and pass the extracted folder." if root.suffix in (".tar", ".gz", ".zip") else "")
        raise PrepareError(f"--visa_root '{root}' is a file, not the VisA folder.{hint}")
    if not root.is_dir():
        raise PrepareError(f"--visa_root '{root}' does not exist")
    if (root / "Data" / "Images").is_dir():
        raise PrepareError(f"--visa_root '{root}' is one class folder; pass its parent, the folder "
                           f"that holds split_csv/ and the 12 class folders")
    if any((c / "train" / "good").is_dir() for c in root.iterdir() if c.is_dir()):
        raise PrepareError(f"--visa_root '{root}' is already a prepared tree (CLASS/train/good); "
                           f"use it directly as dataset_path (--dataset_path='{root}')")


def read_split(csv_path):
    """Rows of the split CSV grouped by class, after checking its header."""
    if not os.path.isfile(csv_path):
        raise PrepareError(f"split file '{csv_path}' not found; it ships with VisA as "
                           f"{SPLIT_CSV} (or pass --split_csv PATH)")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames != CSV_COLUMNS:
            raise PrepareError(f"'{csv_path}' has columns {reader.fieldnames}; expected "
                               f"{CSV_COLUMNS} (VisA's split_csv/1cls.csv)")
        rows = defaultdict(list)
        for row in reader:
            rows[row["object"]].append(row)
    return dict(rows)


def split_counts(rows):
    """(train normal, test normal, test anomaly) of a class's rows."""
    c = Counter((r["split"], r["label"]) for r in rows)
    return c[("train", "normal")], c[("test", "normal")], c[("test", "anomaly")]


def destination(row):
    """Sub-folder of a row in the prepared layout."""
    if row["split"] == "train" and row["label"] == "normal":
        return "train/good"
    if row["split"] == "test":
        return "test/good" if row["label"] == "normal" else "test/anomaly"
    raise PrepareError(f"row {row} has split={row['split']!r}, label={row['label']!r}; "
                       f"expected train/normal, test/normal or test/anomaly")


def check_files_exist(visa_root, rows):
    """Every image, and every anomalous image's mask, named by the split must be there."""
    for row in rows:
        for key in ("image", "mask") if row["label"] == "anomaly" else ("image",):
            if not row[key]:
                raise PrepareError(f"split row for {row['image']} has no {key} path")
            if not (Path(visa_root) / row[key]).is_file():
                raise PrepareError(f"missing {key} file '{Path(visa_root) / row[key]}' named by the "
                                   f"split; re-extract the VisA archive")


def link_or_copy(src, dst):
    """Hard link (no extra space, bytes unchanged); copy where linking is not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)


def binarise_mask(src, dst):
    """VisA masks hold defect-class ids; anything non-zero is anomalous -> 255."""
    with Image.open(src) as m:
        arr = np.asarray(m.convert("L")) > 0
    Image.fromarray((arr * 255).astype(np.uint8), mode="L").save(dst)


def write_class(visa_root, rows, work_dir):
    """Build one class in work_dir from its split rows."""
    for sub in ("train/good", "test/good", "test/anomaly", "ground_truth/anomaly"):
        (work_dir / sub).mkdir(parents=True, exist_ok=True)
    for row in rows:
        src = Path(visa_root) / row["image"]
        dst = work_dir / destination(row) / src.name
        if dst.exists():
            raise PrepareError(f"two split rows map to '{dst}'; the split CSV repeats {src.name}")
        link_or_copy(src, dst)
        if row["label"] == "anomaly":
            binarise_mask(Path(visa_root) / row["mask"], work_dir / "ground_truth" / "anomaly"
                          / f"{src.stem}.png")


def counts_on_disk(class_dir):
    """Files in train/good, test/good, test/anomaly, ground_truth/anomaly (-1: no folder)."""
    def count(sub):
        folder = class_dir / sub
        if not folder.is_dir():
            return -1
        return sum(1 for p in folder.iterdir() if not p.name.startswith("."))
    return (count("train/good"), count("test/good"), count("test/anomaly"),
            count("ground_truth/anomaly"))


def verify_class(class_dir, expected):
    """True when a prepared class holds exactly the split's files (masks: one per anomaly)."""
    marker = class_dir / MARKER
    if not marker.is_file():
        return False
    recorded = json.loads(marker.read_text())
    return (tuple(recorded["counts"]) == tuple(expected)
            and counts_on_disk(class_dir) == (*expected, expected[2]))


def prepare_class(visa_root, name, rows, out):
    """Verify-and-skip, or (re)build one class atomically; returns 'skipped' or 'written'."""
    expected = split_counts(rows)
    final, work = out / name, out / f"{name}.partial"
    if final.exists() and verify_class(final, expected):
        if work.exists():
            shutil.rmtree(work)  # a leftover of an interrupted re-run
        return "skipped"
    if final.exists() and not (final / MARKER).is_file():
        raise PrepareError(f"'{final}' exists but was not written by prepare_visa.py; move it away "
                           f"or choose another --out")
    check_files_exist(visa_root, rows)
    if work.exists():
        shutil.rmtree(work)  # left by an interrupted run
    write_class(visa_root, rows, work)
    written = counts_on_disk(work)
    if written != (*expected, expected[2]):
        raise PrepareError(f"class '{name}': wrote {written[:3]} images (train normal, test normal, "
                           f"test anomaly) but the split lists {expected}")
    (work / MARKER).write_text(json.dumps({"counts": expected}))
    if final.exists():
        shutil.rmtree(final)  # ours, but no longer matching the split
    os.replace(work, final)
    return "written"


def select_classes(split, requested):
    if not requested:
        return sorted(split)
    unknown = [c for c in requested if c not in split]
    if unknown:
        raise PrepareError(f"unknown class name(s) {unknown}; the split lists {sorted(split)}")
    return requested


def report_counts(name, counts):
    """Print a class's counts, flagging a difference from the official 1cls split."""
    official = OFFICIAL_COUNTS.get(name)
    note = "" if official == counts else f"  WARNING: official 1cls split has {official}"
    print(f"{name:<11} train normal {counts[0]:>4}  test normal {counts[1]:>4}  "
          f"test anomaly {counts[2]:>4}{note}")


def prepare(visa_root, out, classes=None, split_csv=None):
    check_root(visa_root)
    split = read_split(split_csv or os.path.join(visa_root, SPLIT_CSV))
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    status = {}
    for name in select_classes(split, classes):
        status[name] = prepare_class(visa_root, name, split[name], out)
        report_counts(name, split_counts(split[name]))
    print(f"{sum(s == 'written' for s in status.values())} class(es) written, "
          f"{sum(s == 'skipped' for s in status.values())} verified and skipped, into {out}")
    return status


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--visa_root", required=True, help="extracted VisA folder (holds split_csv/)")
    parser.add_argument("--out", default="data/visa", help="prepared tree (config.dataset_path)")
    parser.add_argument("--classes", nargs="*", help="only these classes (default: all in the split)")
    parser.add_argument("--split_csv", help="split file (default: VISA_ROOT/split_csv/1cls.csv)")
    args = parser.parse_args(argv)
    try:
        prepare(args.visa_root, args.out, args.classes, args.split_csv)
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
