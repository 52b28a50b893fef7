"""Turn the Magnetic Tile Defects download into one class 'mtd' in the per-class layout.

    python prepare_mtd.py [--out data/mtd] [--link copy|hardlink] [--train_list FILE]
                          [--mtd_root PATH/TO/Magnetic-tile-defect-datasets. | --archive ZIP |
                           --download_dir data/downloads --url URL]

Without --mtd_root or --archive it downloads GitHub's ZIP of the dataset's last commit into
--download_dir, extracts it there and checks every file against splits/mtd_manifest.csv
(path, size, SHA-256) before preparing; a second run finds it all intact and does nothing.

The DifferNet paper's split: the 761 defect-free images listed in
splits/mtd_train_filenames.txt go to mtd/train/good, every other MT_Free image
to mtd/test/good, each defect folder's images to mtd/test/<defect> and their
masks, binarised to 0/255, to mtd/ground_truth/<defect>/<stem>.png. Built in
mtd.partial and renamed when complete; a re-run verifies every file's hash and
skips, or rebuilds a damaged class. The download is only read.
"""
import sys
from collections import Counter
from pathlib import Path

from prepare.acquire import add_source_options, dataset_parser, source_tree
from prepare.archives import MTD
from prepare.common import (PrepareError, add_link_option, binarise_mask, build_class, check_apart,
                            check_out_writable, file_digest, place_file, read_lines, run_script)
from prepare.manifest import check_against_manifest

CLASS_NAME = "mtd"
FREE = "MT_Free"
DEFECTS = {"MT_Blowhole": "blowhole", "MT_Break": "break", "MT_Crack": "crack",
           "MT_Fray": "fray", "MT_Uneven": "uneven"}
TRAIN_LIST = Path(__file__).resolve().parent / "splits" / "mtd_train_filenames.txt"
IMAGE_SUFFIX = ".jpg"


def check_root(mtd_root):
    """Catch the usual wrong --mtd_root before reading anything."""
    root = Path(mtd_root)
    if root.is_file():
        raise PrepareError(f"--mtd_root '{root}' is a file, not the MTD folder; if it is the "
                           f"archive, extract it first and pass the folder holding MT_Free etc.")
    if not root.is_dir():
        raise PrepareError(f"--mtd_root '{root}' does not exist")
    if root.name in (FREE, *DEFECTS) or (root / "Imgs").is_dir():
        raise PrepareError(f"--mtd_root '{root}' is one MT_* folder; pass its parent, the folder "
                           f"that holds {FREE} and the five defect folders")
    if (root / CLASS_NAME / "train" / "good").is_dir() or (root / "train" / "good").is_dir():
        raise PrepareError(f"--mtd_root '{root}' is already a prepared tree; use it as "
                           f"dataset_path instead")
    missing = [d for d in (FREE, *DEFECTS) if not (root / d / "Imgs").is_dir()]
    if missing:
        raise PrepareError(f"--mtd_root '{root}' lacks {', '.join(f'{d}/Imgs' for d in missing)}; "
                           f"pass the extracted Magnetic Tile Defects folder")


def read_train_list(path):
    """The defect-free training images' file names: unique, one per line."""
    names = read_lines(path, "train list")
    for line, name in enumerate(names, 1):
        if "/" in name or "\\" in name or name in (".", ".."):
            raise PrepareError(f"train list '{path}': '{name}' is not a plain file name (entry "
                               f"{line}); it names images of MT_Free/Imgs only")
    repeated = sorted(n for n, count in Counter(names).items() if count > 1)
    if repeated:
        raise PrepareError(f"train list '{path}' repeats {repeated[0]}")
    if not names:
        raise PrepareError(f"train list '{path}' is empty")
    return names


def images_of(folder):
    """The .jpg images of an MT_* folder's Imgs/, sorted (the .png beside them are masks)."""
    return sorted(p for p in (Path(folder) / "Imgs").iterdir()
                  if p.is_file() and p.suffix.lower() == IMAGE_SUFFIX)


def split_free(root, train_names, train_list):
    """MT_Free images as (train, test); every listed name must exist."""
    free = {p.name: p for p in images_of(Path(root) / FREE)}
    missing = [n for n in train_names if n not in free]
    if missing:
        first = Path(root) / FREE / "Imgs" / missing[0]
        raise PrepareError(f"'{first}' is listed in '{train_list}' "
                           f"but missing ({len(missing)} of {len(train_names)} listed names are); "
                           f"re-extract MTD")
    listed = set(train_names)
    return ([free[n] for n in train_names],
            [p for name, p in sorted(free.items()) if name not in listed])


def defect_images(root):
    """{defect name: [(image, mask)]}; every defective image needs its same-stem .png mask."""
    found = {}
    for folder, defect in DEFECTS.items():
        pairs = []
        for image in images_of(Path(root) / folder):
            mask = image.with_suffix(".png")
            if not mask.is_file():
                raise PrepareError(f"missing mask file '{mask}' of '{image}'; re-extract MTD")
            pairs.append((image, mask))
        found[defect] = pairs
    return found


def write_mtd(train, test_good, defects, link, work):
    """Fill the class folder: images byte for byte, masks binarised."""
    for sub, images in (("train/good", train), ("test/good", test_good)):
        (work / sub).mkdir(parents=True)
        for image in images:
            place_file(image, work / sub / image.name, link)
    for defect, pairs in defects.items():
        (work / "test" / defect).mkdir(parents=True)
        (work / "ground_truth" / defect).mkdir(parents=True)
        for image, mask in pairs:
            place_file(image, work / "test" / defect / image.name, link)
            binarise_mask(mask, work / "ground_truth" / defect / f"{image.stem}.png")


def check_written(work, train, test_good, defects):
    """Every source image arrived once (catches two images with one name)."""
    expected = {"train/good": len(train), "test/good": len(test_good),
                **{f"test/{d}": len(p) for d, p in defects.items()},
                **{f"ground_truth/{d}": len(p) for d, p in defects.items()}}
    for sub, n in expected.items():
        written = sum(1 for p in (work / sub).iterdir() if not p.name.startswith("."))
        if written != n:
            raise PrepareError(f"'{work / sub}' holds {written} files but {n} were expected")


def report_counts(train, test_good, defects):
    bad = ", ".join(f"{d} {len(p)}" for d, p in defects.items())
    print(f"{CLASS_NAME}: train good {len(train)}  test good {len(test_good)}  "
          f"test defective {sum(len(p) for p in defects.values())} ({bad})")


def is_mtd_top(folder):
    return (Path(folder) / FREE).is_dir()


def check_download(folder):
    """The extracted GitHub archive, file by file against the shipped manifest."""
    check_against_manifest(folder, MTD.manifest, (FREE, *DEFECTS))


def prepare(mtd_root, out, link="copy", train_list=None):
    check_root(mtd_root)
    check_apart(out, mtd_root, "--mtd_root")
    out = check_out_writable(out)
    train_list = Path(train_list or TRAIN_LIST)
    train, test_good = split_free(mtd_root, read_train_list(train_list), train_list)
    defects = defect_images(mtd_root)
    settings = {"script": "prepare_mtd.py", "class": CLASS_NAME, "link": link,
                "train_list": file_digest(train_list)}

    def build(work):
        write_mtd(train, test_good, defects, link, work)
        check_written(work, train, test_good, defects)

    status = build_class(out, CLASS_NAME, settings, build, "prepare_mtd.py")
    report_counts(train, test_good, defects)
    print(f"{CLASS_NAME} {'verified and skipped' if status == 'skipped' else 'written'}, in {out}")
    return status


def main(argv=None):
    parser = dataset_parser(__doc__, "--mtd_root", "extracted MTD folder (holds MT_Free, "
                            "MT_Blowhole, ...), used as is; default: download (or --archive)",
                            "data/mtd")
    parser.add_argument("--train_list", help="defect-free training file names "
                                             "(default: splits/mtd_train_filenames.txt)")
    add_link_option(parser)
    add_source_options(parser, MTD)
    args = parser.parse_args(argv)

    def call():
        root = source_tree(args, "--mtd_root", MTD, "MTD", is_mtd_top, check_download,
                           MTD.unpacked_bytes)
        prepare(root, args.out, args.link, args.train_list)
    return run_script(call)


if __name__ == "__main__":
    sys.exit(main())
