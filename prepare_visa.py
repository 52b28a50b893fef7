"""Turn the official VisA download into the per-class layout DifferNet reads, by the 1cls split.

    python prepare_visa.py [--out data/visa] [--classes candle pcb1] [--link copy|hardlink]
                           [--split_csv FILE]
                           [--visa_root PATH/TO/VisA | --archive VisA_20220922.tar |
                            --download_dir data/downloads --url URL --sha256 HASH]

Without --visa_root or --archive it downloads VisA_20220922.tar (1.9 GB) into
--download_dir, checks its SHA-256, extracts it there (safely: see prepare/extract.py)
and prepares from that; a second run finds it all intact and does nothing.

Writes CLASS/train/good, CLASS/test/good, CLASS/test/anomaly,
CLASS/ground_truth/anomaly/<stem>.png (masks binarised to 0/255) and
CLASS/defects.csv (image stem, defect label from VisA's image_anno.csv).
Images are copied byte for byte (never re-encoded; --link=hardlink shares them
with the download instead). Each class is built in CLASS.partial and renamed
when complete; its marker records every file's hash, so a re-run skips intact
classes and rebuilds damaged ones. The download is only read.
"""
import csv
import os
import sys
from collections import Counter, defaultdict
from pathlib import Path

from prepare.acquire import add_source_options, dataset_parser, source_tree
from prepare.archives import VISA
from spreadsheet import spreadsheet_safe
from prepare.common import (PrepareError, add_link_option, binarise_mask, build_class, check_apart,
                            check_out_writable, file_digest, inside_root, place_file, run_script,
                            text_digest)

SPLIT_CSV = os.path.join("split_csv", "1cls.csv")
BUNDLED_SPLIT = Path(__file__).resolve().parent / "splits" / "visa_1cls.csv"
CSV_COLUMNS = ["object", "split", "label", "image", "mask"]
ROW_KINDS = {("train", "normal"): "train/good", ("test", "normal"): "test/good",
             ("test", "anomaly"): "test/anomaly"}
ANNO_CSV = "image_anno.csv"
# (train normal, test normal, test anomaly) of the official 1cls split
OFFICIAL_COUNTS = {
    "candle": (900, 100, 100), "capsules": (542, 60, 100), "cashew": (450, 50, 100),
    "chewinggum": (453, 50, 100), "fryum": (450, 50, 100), "macaroni1": (900, 100, 100),
    "macaroni2": (900, 100, 100), "pcb1": (904, 100, 100), "pcb2": (901, 100, 100),
    "pcb3": (905, 101, 100), "pcb4": (904, 101, 100), "pipe_fryum": (450, 50, 100)}


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


def check_class_folders(visa_root, names):
    """The class folders of the split must be in --visa_root; say so before any file is read."""
    missing = [n for n in names if not (Path(visa_root) / n).is_dir()]
    if len(missing) == len(names):
        raise PrepareError(f"--visa_root '{visa_root}' holds none of the split's class folders "
                           f"({', '.join(names[:4])}, ...); pass the extracted VisA folder, the "
                           f"one that holds them")
    if missing:
        raise PrepareError(f"--visa_root '{visa_root}' lacks the class folder(s) "
                           f"{', '.join(missing)}; re-extract the VisA archive, or leave them out "
                           f"with --classes")


def split_source(visa_root, split_csv=None):
    """The split file: --split_csv, else the download's, else the copy shipped in splits/."""
    if split_csv:
        return Path(split_csv)
    downloaded = Path(visa_root) / SPLIT_CSV
    return downloaded if downloaded.is_file() else BUNDLED_SPLIT


def check_split_row(row, where):
    """One parsed row of the split CSV: all five columns, a known split and label."""
    if None in row or None in row.values():
        raise PrepareError(f"{where}: expected the {len(CSV_COLUMNS)} columns {CSV_COLUMNS}, "
                           f"found {len([v for v in row.values() if v is not None])}")
    if (row["split"], row["label"]) not in ROW_KINDS:
        raise PrepareError(f"{where}: split={row['split']!r}, label={row['label']!r}; expected "
                           f"train/normal, test/normal or test/anomaly")
    if not row["object"] or not row["image"]:
        raise PrepareError(f"{where}: empty object or image column")
    for key in ("image", "mask"):
        if row[key]:
            inside_root(".", row[key], where)


def parse_split(f, csv_path):
    reader = csv.DictReader(f)
    if reader.fieldnames != CSV_COLUMNS:
        raise PrepareError(f"split file '{csv_path}' has columns {reader.fieldnames}; expected "
                           f"{CSV_COLUMNS} (VisA's split_csv/1cls.csv)")
    rows = defaultdict(list)
    for row in reader:
        check_split_row(row, f"split file '{csv_path}', line {reader.line_num}")
        rows[row["object"]].append(row)
    return dict(rows)


def read_split(csv_path):
    """Rows of the split CSV grouped by class, every row checked."""
    if not os.path.isfile(csv_path):
        raise PrepareError(f"split file '{csv_path}' not found; it ships with VisA as "
                           f"{SPLIT_CSV} and with this repository as splits/visa_1cls.csv")
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:  # -sig: spreadsheet exports
            return parse_split(f, csv_path)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PrepareError(f"cannot read split file '{csv_path}': {e}") from None


def split_counts(rows):
    """(train normal, test normal, test anomaly) of a class's rows."""
    c = Counter((r["split"], r["label"]) for r in rows)
    return c[("train", "normal")], c[("test", "normal")], c[("test", "anomaly")]


def check_files_exist(visa_root, rows):
    """Every image, and every anomalous image's mask, named by the split must be there."""
    for row in rows:
        for key in ("image", "mask") if row["label"] == "anomaly" else ("image",):
            if not row[key]:
                raise PrepareError(f"split row for {row['image']} has no {key} path")
            if not (Path(visa_root) / row[key]).is_file():
                raise PrepareError(f"missing {key} file '{Path(visa_root) / row[key]}' named by the "
                                   f"split; re-extract the VisA archive")


def image_key(path):
    """'Anomaly/000.JPG': the same image in the split and in image_anno.csv, whatever the prefix."""
    return "/".join(Path(path.replace("\\", "/")).parts[-2:])


def read_defect_labels(anno_path):
    """{image key: defect label(s)} from a class's image_anno.csv (labels kept verbatim)."""
    try:
        with open(anno_path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if not {"image", "label"} <= set(reader.fieldnames or []):
                raise PrepareError(f"'{anno_path}' has columns {reader.fieldnames}; expected "
                                   f"image,label,mask (VisA's {ANNO_CSV})")
            labels = {}
            for row in reader:
                if not row.get("image") or row.get("label") is None:
                    raise PrepareError(f"'{anno_path}', line {reader.line_num}: missing image or "
                                       f"label")
                labels[image_key(row["image"])] = row["label"]
            return labels
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PrepareError(f"cannot read '{anno_path}': {e}") from None


def write_defects(rows, labels, path):
    """defects.csv: each anomalous test image's stem and its VisA defect label(s)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "defect"])
        for row in rows:
            if row["label"] == "anomaly":
                label = labels.get(image_key(row["image"]), "")
                writer.writerow([spreadsheet_safe(Path(row["image"]).stem), spreadsheet_safe(
                    label if label and label != "normal" else "anomaly")])


def write_class(visa_root, rows, labels, link, work_dir):
    """Build one class in work_dir from its split rows."""
    for sub in (*ROW_KINDS.values(), "ground_truth/anomaly"):
        (work_dir / sub).mkdir(parents=True, exist_ok=True)
    for row in rows:
        src = Path(visa_root) / row["image"]
        dst = work_dir / ROW_KINDS[(row["split"], row["label"])] / src.name
        if dst.exists():
            raise PrepareError(f"two split rows map to '{dst}'; the split CSV repeats {src.name}")
        place_file(src, dst, link)
        if row["label"] == "anomaly":
            binarise_mask(Path(visa_root) / row["mask"],
                          work_dir / "ground_truth" / "anomaly" / f"{src.stem}.png")
    if labels is not None:
        write_defects(rows, labels, work_dir / "defects.csv")


def counts_on_disk(class_dir):
    """Files in train/good, test/good, test/anomaly, ground_truth/anomaly."""
    return tuple(sum(1 for p in (class_dir / sub).iterdir() if not p.name.startswith("."))
                 for sub in (*ROW_KINDS.values(), "ground_truth/anomaly"))


def class_settings(name, rows, anno_path, link):
    """What a finished class must have been built from; any change means a rebuild."""
    rows_text = "\n".join(",".join(r[c] for c in CSV_COLUMNS) for r in rows)
    return {"script": "prepare_visa.py", "class": name, "link": link,
            "split": text_digest(rows_text), "counts": list(split_counts(rows)),
            "image_anno": file_digest(anno_path) if anno_path.is_file() else None}


def prepare_class(visa_root, name, rows, out, link="copy"):
    """Verify-and-skip, or (re)build one class aside; returns 'skipped' or 'written'."""
    expected = split_counts(rows)
    anno_path = Path(visa_root) / name / ANNO_CSV

    def build(work):
        check_files_exist(visa_root, rows)
        if not anno_path.is_file():
            print(f"note: {name} has no {ANNO_CSV}; no defects.csv written for it")
        labels = read_defect_labels(anno_path) if anno_path.is_file() else None
        write_class(visa_root, rows, labels, link, work)
        written = counts_on_disk(work)
        if written != (*expected, expected[2]):
            raise PrepareError(f"class '{name}': wrote {written[:3]} images (train normal, test "
                               f"normal, test anomaly) but the split lists {expected}")

    return build_class(out, name, class_settings(name, rows, anno_path, link), build,
                       "prepare_visa.py")


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


def is_visa_top(folder):
    """The folder holding VisA's split_csv/ and class folders (the archive's top, or one level
    down)."""
    return (Path(folder) / "split_csv").is_dir()


def prepare(visa_root, out, classes=None, split_csv=None, link="copy"):
    check_root(visa_root)
    check_apart(out, visa_root, "--visa_root")
    csv_path = split_source(visa_root, split_csv)
    split = read_split(csv_path)
    names = select_classes(split, classes)
    check_class_folders(visa_root, names)
    out = check_out_writable(out)  # after every check of the input: nothing created in vain
    print(f"split: {csv_path}" + ("  (the copy shipped with this repository: the download has "
                                  f"no {SPLIT_CSV})" if csv_path == BUNDLED_SPLIT else ""))
    status = {}
    for name in names:
        status[name] = prepare_class(visa_root, name, split[name], out, link)
        report_counts(name, split_counts(split[name]))
    print(f"{sum(s == 'written' for s in status.values())} class(es) written, "
          f"{sum(s == 'skipped' for s in status.values())} verified and skipped, into {out}")
    return status


def main(argv=None):
    parser = dataset_parser(__doc__, "--visa_root", "extracted VisA folder (holds split_csv/), "
                            "used as is; default: download (or --archive) and extract", "data/visa")
    parser.add_argument("--classes", nargs="*", help="only these classes (default: all in the split)")
    parser.add_argument("--split_csv", help="split file (default: VISA_ROOT/split_csv/1cls.csv, "
                                            "else splits/visa_1cls.csv of this repository)")
    add_link_option(parser)
    add_source_options(parser, VISA)
    args = parser.parse_args(argv)

    def call():
        root = source_tree(args, "--visa_root", VISA, "VisA", is_visa_top,
                           prepared_bytes=VISA.unpacked_bytes)
        prepare(root, args.out, args.classes, args.split_csv, args.link)
    return run_script(call)


if __name__ == "__main__":
    sys.exit(main())
