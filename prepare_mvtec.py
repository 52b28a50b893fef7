"""Download, verify and extract MVTec AD into the layout presets/mvtec.py reads.

    python prepare_mvtec.py [--out data/mvtec]
                            [--mvtec_root DIR | --archive mvtec_anomaly_detection.tar.xz |
                             --download_dir data/downloads --url URL --sha256 HASH]
                            [--keep_archive True|False]

MVTec AD's own layout (CLASS/train/good, CLASS/test/<defect>,
CLASS/ground_truth/<defect>/<stem>_mask.png) is read as is, so there is nothing to
convert: without --mvtec_root this downloads mvtec_anomaly_detection.tar.xz (5.3 GB) into
--download_dir, checks its SHA-256 and extracts it into --out; a second run finds the tree
intact and does nothing. An extracted tree (--mvtec_root) needs no preparation: it is only
checked, and the dataset_path to use is printed.
"""
import sys
from pathlib import Path

from prepare.acquire import add_source_options, check_one_source, dataset_parser, obtain
from prepare.archives import MVTEC
from prepare.common import PrepareError, run_script
from prepare.extract import read_extracted

CATEGORIES = ("bottle", "cable", "capsule", "carpet", "grid", "hazelnut", "leather", "metal_nut",
              "pill", "screw", "tile", "toothbrush", "transistor", "wood", "zipper")


def categories_in(folder):
    """The class folders (those with train/good) of an MVTec-like tree."""
    folder = Path(folder)
    return sorted(p.name for p in folder.iterdir() if (p / "train" / "good").is_dir()) \
        if folder.is_dir() else []


def is_mvtec_top(folder):
    return bool(categories_in(folder))


def check_tree(root, option):
    """An MVTec AD tree: class folders with train/good; missing official categories are named."""
    found = categories_in(root)
    if not found:
        raise PrepareError(f"{option} '{root}' holds no class folder with train/good; pass the "
                           f"folder that holds bottle/, cable/, ... (the extracted archive)")
    missing = [c for c in CATEGORIES if c not in found]
    if missing:
        print(f"note: {root} lacks the MVTec AD categories {', '.join(missing)}; presets/mvtec.py "
              f"asks for all 15")
    print(f"MVTec AD in {root}: {len(found)} categories ({', '.join(found)})")
    return found


def prepare(args):
    check_one_source(args, "--mvtec_root")
    if args.mvtec_root:
        check_tree(args.mvtec_root, "--mvtec_root")
        print(f"no preparation needed: python main.py presets/mvtec.py "
              f"--dataset_path='{args.mvtec_root}'")
        return
    out = Path(args.out)
    if out.is_dir() and read_extracted(out) is None and is_mvtec_top(out):
        check_tree(out, "--out")  # extracted by hand: used as it is
        print("already extracted; nothing to do")
        return
    obtain(MVTEC, args, out, out, is_mvtec_top, lambda work: check_tree(work, "the archive"))
    print(f"ready: python main.py presets/mvtec.py (dataset_path '{out}')")


def main(argv=None):
    parser = dataset_parser(__doc__, "--mvtec_root", "an extracted MVTec AD folder: only checked",
                            "data/mvtec", "where the archive is extracted (config.dataset_path)")
    add_source_options(parser, MVTEC)
    args = parser.parse_args(argv)
    return run_script(lambda: prepare(args))


if __name__ == "__main__":
    sys.exit(main())
