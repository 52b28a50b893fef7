"""Where a class's files are: the folder layout DifferNet reads, listed and checked once per
command (no image is opened here).

    CLASS/train/good/            defect-free training images
    CLASS/test/good/             defect-free test images
    CLASS/test/<defect>/         anomalous test images
    CLASS/ground_truth/<defect>/ optional masks, '<stem>.png' (VisA, anomalib) or
                                 '<stem>_mask.png' (MVTec AD)
"""
import os
from pathlib import Path
from typing import NamedTuple

import numpy as np

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
GOOD = "good"
LAYOUT_HELP = (
    "Expected layout per class:\n"
    "  CLASS/train/good/*.JPG        defect-free training images\n"
    "  CLASS/test/good/*.JPG         defect-free test images\n"
    "  CLASS/test/<defect>/*.JPG     anomalous test images (any folder name but 'good')\n"
    "  CLASS/ground_truth/<defect>/<stem>.png   optional masks\n"
    "For VisA run: python prepare_visa.py --visa_root PATH/TO/VisA --out data/visa")


def list_images(folder):
    """Image files in a folder, sorted; hidden files and non-image files are ignored."""
    return sorted(str(p) for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def _require_folder(path, what):
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} '{path}' not found.\n{LAYOUT_HELP}")


def find_mask(class_dir, defect, image_path):
    """The ground-truth mask of an anomalous image: VisA/anomalib '<stem>.png', MVTec '<stem>_mask.png'."""
    stem = Path(image_path).stem
    for name in (f"{stem}.png", f"{stem}_mask.png"):
        candidate = Path(class_dir) / "ground_truth" / defect / name
        if candidate.is_file():
            return str(candidate)
    return None


def find_class_files(dataset_path, class_name):
    """Paths, labels and masks of a class's train and test splits, checked against the layout."""
    _require_folder(dataset_path, "dataset_path")
    class_dir = os.path.join(dataset_path, class_name)
    _require_folder(class_dir, f"class folder of '{class_name}'")
    for split in ("train", "test"):
        _require_folder(os.path.join(class_dir, split, GOOD), f"'{split}/{GOOD}' of '{class_name}'")
    train = list_images(os.path.join(class_dir, "train", GOOD))
    if not train:
        raise FileNotFoundError(f"no images in '{os.path.join(class_dir, 'train', GOOD)}'.\n"
                                f"{LAYOUT_HELP}")
    test, labels, masks = [], [], []
    test_dir = os.path.join(class_dir, "test")
    for defect in sorted(os.listdir(test_dir)):
        if not os.path.isdir(os.path.join(test_dir, defect)) or defect.startswith("."):
            continue
        files = list_images(os.path.join(test_dir, defect))
        anomalous = defect != GOOD
        test += files
        labels += [int(anomalous)] * len(files)
        masks += [find_mask(class_dir, defect, f) if anomalous else None for f in files]
    if GOOD not in [Path(p).parent.name for p in test]:
        raise FileNotFoundError(f"no images in '{os.path.join(test_dir, GOOD)}'.\n{LAYOUT_HELP}")
    return train, (test, np.array(labels, dtype=np.int64), masks)


class ClassFiles(NamedTuple):
    """A class's files, listed once per command and handed to everything that needs them."""
    name: str
    class_dir: str
    train: list
    test: list
    labels: np.ndarray  # per test image: 0 normal, 1 anomalous
    masks: list         # per test image: mask path, or None
    skipped: tuple = ()  # test images left out for an unreadable mask (skip_bad_images)


def list_class(dataset_path, class_name):
    """ClassFiles of a class folder, checked against the layout (find_class_files)."""
    train, (test, labels, masks) = find_class_files(dataset_path, class_name)
    return ClassFiles(class_name, os.path.join(dataset_path, class_name), train, test, labels,
                      masks)
