"""prepare_mtd.py on a small MTD-shaped tree that the test writes itself."""
import os
import re

import numpy as np
import pytest
from PIL import Image

from conftest import ROOT
from layout import find_class_files
from prepare_mtd import DEFECTS, main, prepare, read_train_list

SHIPPED_LIST = os.path.join(ROOT, "splits", "mtd_train_filenames.txt")
N_FREE, N_TRAIN, N_PER_DEFECT = 5, 3, 2


def write_tile(folder, stem, rng, defect):
    """A grayscale tile image and its mask (0/255 with a few anti-aliased grey values)."""
    Image.fromarray(rng.integers(0, 255, (10, 14), dtype=np.uint8)).save(folder / f"{stem}.jpg")
    mask = np.zeros((10, 14), np.uint8)
    if defect:
        mask[2:4, 3:6] = 255
        mask[4, 3] = 7
    Image.fromarray(mask).save(folder / f"{stem}.png")


def make_raw_mtd(root):
    """ROOT/MT_*/Imgs/*.jpg + same-stem .png masks; returns the train list file."""
    rng = np.random.default_rng(0)
    for folder in ("MT_Free", *DEFECTS):
        imgs = root / folder / "Imgs"
        imgs.mkdir(parents=True)
        n = N_FREE if folder == "MT_Free" else N_PER_DEFECT
        for i in range(n):
            write_tile(imgs, f"exp{i}_num_{100 + i}", rng, folder != "MT_Free")
    train_list = root.parent / "train.txt"
    train_list.write_text("".join(f"exp{i}_num_{100 + i}.jpg\n" for i in range(N_TRAIN)))
    return train_list


@pytest.fixture
def raw(tmp_path):
    train_list = make_raw_mtd(tmp_path / "MTD")
    return tmp_path / "MTD", train_list


def mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


def test_layout_split_and_masks(raw, tmp_path, capsys):
    root, train_list = raw
    out = tmp_path / "data" / "mtd"
    assert prepare(root, out, train_list=train_list) == "written"
    cls = out / "mtd"
    train_names = [f"exp{i}_num_{100 + i}.jpg" for i in range(3)]
    assert sorted(os.listdir(cls / "train" / "good")) == train_names
    assert sorted(os.listdir(cls / "test" / "good")) == ["exp3_num_103.jpg", "exp4_num_104.jpg"]
    assert sorted(os.listdir(cls / "test")) == sorted(["good", *DEFECTS.values()])
    src = root / "MT_Crack" / "Imgs" / "exp1_num_101.jpg"
    dst = cls / "test" / "crack" / "exp1_num_101.jpg"
    assert dst.read_bytes() == src.read_bytes() and os.stat(dst).st_ino != os.stat(src).st_ino
    gt = np.asarray(Image.open(cls / "ground_truth" / "crack" / "exp1_num_101.png"))
    assert set(np.unique(gt)) == {0, 255} and (gt == 255).sum() == 7
    train, (test, labels, masks) = find_class_files(out, "mtd")
    assert len(train) == 3 and len(test) == 2 + 5 * N_PER_DEFECT and int(labels.sum()) == 10
    assert all(m is not None for m, lab in zip(masks, labels) if lab)
    assert "test defective 10" in capsys.readouterr().out


def test_rerun_is_a_no_op_and_damage_is_rebuilt(raw, tmp_path):
    root, train_list = raw
    out = tmp_path / "prepared"
    prepare(root, out, train_list=train_list)
    before = mtimes(out / "mtd")
    assert prepare(root, out, train_list=train_list) == "skipped"
    assert mtimes(out / "mtd") == before
    target = out / "mtd" / "ground_truth" / "fray" / "exp0_num_100.png"
    data = bytearray(target.read_bytes())
    data[-5] ^= 0x01  # same size, other content
    target.write_bytes(bytes(data))
    assert prepare(root, out, train_list=train_list) == "written"
    assert prepare(root, out, train_list=train_list) == "skipped"


def test_interrupted_run_is_redone(raw, tmp_path):
    root, train_list = raw
    out = tmp_path / "prepared"
    (out / "mtd.partial" / "train" / "good").mkdir(parents=True)
    (out / "mtd.partial" / "train" / "good" / "stale.jpg").write_bytes(b"x")
    assert prepare(root, out, train_list=train_list) == "written"
    assert not (out / "mtd.partial").exists()
    assert not (out / "mtd" / "train" / "good" / "stale.jpg").exists()


@pytest.mark.parametrize("case, message", [
    ("no_mt_folders", "lacks MT_Free/Imgs, MT_Blowhole/Imgs"),
    ("mt_folder", "is one MT_\\* folder; pass its parent"),
    ("archive", "is a file, not the MTD folder; if it is the archive, extract it first"),
    ("missing_train_image", "MT_Free/Imgs/exp1_num_101.jpg' is listed in .*train.txt' but missing"),
    ("missing_mask", "missing mask file '.*MT_Break/Imgs/exp0_num_100.png'"),
    ("empty_mask", "mask file '.*MT_Uneven/Imgs/exp1_num_101.png' is empty"),
    ("repeated_name", "repeats exp0_num_100.jpg"),
    ("out_unwritable", "--out '.*a_file/o' is not a writable folder"),
])
def test_wrong_input_is_one_error_line(raw, tmp_path, capsys, case, message):
    root, train_list = raw
    out = tmp_path / "o"
    if case == "no_mt_folders":
        root = tmp_path / "empty"
        root.mkdir()
    elif case == "mt_folder":
        root = root / "MT_Crack"
    elif case == "archive":
        root = tmp_path / "Magnetic-tile-defect-datasets.-master.zip"
        root.write_bytes(b"PK")
    elif case == "missing_train_image":
        (root / "MT_Free" / "Imgs" / "exp1_num_101.jpg").unlink()
    elif case == "missing_mask":
        (root / "MT_Break" / "Imgs" / "exp0_num_100.png").unlink()
    elif case == "empty_mask":
        (root / "MT_Uneven" / "Imgs" / "exp1_num_101.png").write_bytes(b"")
    elif case == "repeated_name":
        train_list.write_text(train_list.read_text() + "exp0_num_100.jpg\n")
    elif case == "out_unwritable":
        (tmp_path / "a_file").write_text("x")
        out = tmp_path / "a_file" / "o"
    code = main(["--mtd_root", str(root), "--out", str(out), "--train_list", str(train_list)])
    err = capsys.readouterr().err
    assert code == 1 and err.startswith("error: ") and err.count("\n") == 1
    assert re.search(message, err), err


def test_shipped_train_list_has_761_unique_names():
    names = read_train_list(SHIPPED_LIST)
    assert len(names) == len(set(names)) == 761
    assert all(n.endswith(".jpg") and n.startswith("exp") for n in names)
