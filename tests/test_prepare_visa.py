"""prepare_visa.py on a small raw VisA tree that the test writes itself."""
import csv
import os

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from data import find_class_files
from prepare_visa import OFFICIAL_COUNTS, PrepareError, main, prepare, read_split, split_counts

OFFICIAL_CSV = os.path.join(os.path.dirname(ROOT), "shared", "visa", "split_csv", "1cls.csv")
COUNTS = {"candle": (4, 2, 3), "pcb1": (3, 1, 2)}


def make_raw_visa(root):
    """VisA/<class>/Data/Images/{Normal,Anomaly}/*.JPG, Masks/Anomaly/*.png, split_csv/1cls.csv."""
    rng = np.random.default_rng(0)
    rows = []
    for name, (n_train, n_test, n_bad) in COUNTS.items():
        normal = root / name / "Data" / "Images" / "Normal"
        anomaly = root / name / "Data" / "Images" / "Anomaly"
        masks = root / name / "Data" / "Masks" / "Anomaly"
        for d in (normal, anomaly, masks):
            d.mkdir(parents=True)
        for i in range(n_train + n_test):
            Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(normal / f"{i:04d}.JPG")
            rows.append([name, "train" if i < n_train else "test", "normal",
                         f"{name}/Data/Images/Normal/{i:04d}.JPG", ""])
        for i in range(n_bad):
            Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(anomaly / f"{i:03d}.JPG")
            mask = np.zeros((12, 16), np.uint8)
            mask[2:5, 3:7] = i + 1  # defect-class ids 1..K
            Image.fromarray(mask).save(masks / f"{i:03d}.png")
            rows.append([name, "test", "anomaly", f"{name}/Data/Images/Anomaly/{i:03d}.JPG",
                         f"{name}/Data/Masks/Anomaly/{i:03d}.png"])
        (root / name / "image_anno.csv").write_text("image,label,mask\n")
    (root / "split_csv").mkdir()
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        csv.writer(f).writerows([["object", "split", "label", "image", "mask"]] + rows)
    return root


@pytest.fixture
def raw(tmp_path):
    return make_raw_visa(tmp_path / "VisA")


def test_layout_masks_links_and_counts(raw, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert prepare(raw, out) == {"candle": "written", "pcb1": "written"}
    printed = capsys.readouterr().out
    assert "candle      train normal    4  test normal    2  test anomaly    3" in printed
    for name, (n_train, n_test, n_bad) in COUNTS.items():
        train, (test, labels, masks) = find_class_files(out, name)
        assert len(train) == n_train and int((labels == 0).sum()) == n_test
        assert int(labels.sum()) == n_bad and all(m is not None for m, lab in zip(masks, labels) if lab)
    gt = np.asarray(Image.open(out / "candle" / "ground_truth" / "anomaly" / "002.png"))
    assert gt.dtype == np.uint8 and set(np.unique(gt)) == {0, 255} and (gt == 255).sum() == 12
    src, dst = raw / "candle/Data/Images/Anomaly/001.JPG", out / "candle/test/anomaly/001.JPG"
    assert dst.read_bytes() == src.read_bytes() and os.stat(dst).st_ino == os.stat(src).st_ino


def test_rerun_skips_finished_and_redoes_half_written(raw, tmp_path):
    out = tmp_path / "prepared"
    prepare(raw, out)
    before = os.stat(out / "candle" / "train" / "good" / "0000.JPG").st_mtime_ns
    assert prepare(raw, out) == {"candle": "skipped", "pcb1": "skipped"}
    (out / "pcb1" / "test" / "good" / "0003.JPG").unlink()  # damaged class
    (out / "candle.partial" / "train").mkdir(parents=True)    # interrupted run
    assert prepare(raw, out) == {"candle": "skipped", "pcb1": "written"}
    assert (out / "pcb1" / "test" / "good" / "0003.JPG").exists()
    assert not (out / "candle.partial").exists()
    assert os.stat(out / "candle" / "train" / "good" / "0000.JPG").st_mtime_ns == before


def test_partial_dir_is_replaced_when_class_is_missing(raw, tmp_path):
    out = tmp_path / "prepared"
    (out / "pcb1.partial" / "train" / "good").mkdir(parents=True)
    (out / "pcb1.partial" / "train" / "good" / "stale.JPG").write_bytes(b"x")
    prepare(raw, out, ["pcb1"])
    assert not (out / "pcb1.partial").exists()
    assert not (out / "pcb1" / "train" / "good" / "stale.JPG").exists()


@pytest.mark.parametrize("case, message", [
    ("tar", "extract it first"),
    ("class_folder", "is one class folder; pass its parent"),
    ("prepared", "already a prepared tree"),
    ("no_csv", "split_csv/1cls.csv"),
    ("unknown_class", "unknown class name\\(s\\) \\['bottle'\\]"),
    ("missing_image", "missing image file .*pcb1/Data/Images/Normal/0001.JPG"),
    ("missing_mask", "missing mask file .*candle/Data/Masks/Anomaly/001.png"),
    ("foreign_out", "was not written by prepare_visa.py"),
])
def test_usual_mistakes_are_explained(raw, tmp_path, case, message):
    root, out, classes = raw, tmp_path / "prepared", None
    if case == "tar":
        root = tmp_path / "VisA_20220922.tar"
        root.write_bytes(b"tar")
    elif case == "class_folder":
        root = raw / "candle"
    elif case == "prepared":
        prepare(raw, out)
        root = out
    elif case == "no_csv":
        (raw / "split_csv" / "1cls.csv").unlink()
    elif case == "unknown_class":
        classes = ["candle", "bottle"]
    elif case == "missing_image":
        (raw / "pcb1/Data/Images/Normal/0001.JPG").unlink()
    elif case == "missing_mask":
        (raw / "candle/Data/Masks/Anomaly/001.png").unlink()
    elif case == "foreign_out":
        (out / "candle").mkdir(parents=True)
    with pytest.raises(PrepareError, match=message):
        prepare(root, out, classes)


def test_command_line_reports_error_and_exit_code(raw, tmp_path, capsys):
    assert main(["--visa_root", str(raw / "candle"), "--out", str(tmp_path / "o")]) == 1
    assert "error: --visa_root" in capsys.readouterr().err
    assert main(["--visa_root", str(raw), "--out", str(tmp_path / "o"), "--classes", "pcb1"]) == 0
    assert sorted(os.listdir(tmp_path / "o")) == ["pcb1"]


def test_official_split_has_the_official_counts():
    split = read_split(OFFICIAL_CSV)
    assert sum(len(rows) for rows in split.values()) == 10821
    assert {name: split_counts(rows) for name, rows in split.items()} == OFFICIAL_COUNTS
