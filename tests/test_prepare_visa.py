"""prepare_visa.py on a small raw VisA tree that the test writes itself."""
import csv
import os
import re

import numpy as np
import pytest
from PIL import Image

import prepare_visa
from conftest import ROOT
from layout import find_class_files
from prepare.common import MARKER, PrepareError
from prepare_visa import OFFICIAL_COUNTS, main, prepare, read_split, split_counts

BUNDLED_CSV = os.path.join(ROOT, "splits", "visa_1cls.csv")
COUNTS = {"candle": (4, 2, 3), "pcb1": (3, 1, 2)}
CANDLE_DEFECTS = ["chunk of wax missing", "damaged corner of packaging,different colour spot"]


def write_image(path, rng):
    Image.fromarray(rng.integers(0, 255, (12, 16, 3), dtype=np.uint8)).save(path)


def write_class(root, name, n_train, n_test, n_bad, rng):
    """One raw class; returns its split rows."""
    normal, anomaly, masks = (root / name / "Data" / sub for sub in
                              ("Images/Normal", "Images/Anomaly", "Masks/Anomaly"))
    for d in (normal, anomaly, masks):
        d.mkdir(parents=True)
    rows = []
    for i in range(n_train + n_test):
        write_image(normal / f"{i:04d}.JPG", rng)
        rows.append([name, "train" if i < n_train else "test", "normal",
                     f"{name}/Data/Images/Normal/{i:04d}.JPG", ""])
    for i in range(n_bad):
        write_image(anomaly / f"{i:03d}.JPG", rng)
        mask = np.zeros((12, 16), np.uint8)
        mask[2:5, 3:7] = i + 1  # defect-class ids 1..K
        Image.fromarray(mask).save(masks / f"{i:03d}.png")
        rows.append([name, "test", "anomaly", f"{name}/Data/Images/Anomaly/{i:03d}.JPG",
                     f"{name}/Data/Masks/Anomaly/{i:03d}.png"])
    return rows


def write_candle_anno(root):
    """image_anno.csv with one and several defect labels; anomaly 002 has no row."""
    with open(root / "candle" / "image_anno.csv", "w", newline="") as f:
        csv.writer(f).writerows([
            ["image", "label", "mask"],
            ["candle/Data/Images/Normal/0000.JPG", "normal", ""],
            *([f"candle/Data/Images/Anomaly/00{i}.JPG", CANDLE_DEFECTS[i],
               f"candle/Data/Masks/Anomaly/00{i}.png"] for i in (0, 1))])


def make_raw_visa(root):
    """VisA/<class>/Data/Images/{Normal,Anomaly}/*.JPG, Masks/Anomaly/*.png, split_csv/1cls.csv;
    candle has an image_anno.csv, pcb1 none."""
    rng = np.random.default_rng(0)
    rows = []
    for name, counts in COUNTS.items():
        rows += write_class(root, name, *counts, rng)
    write_candle_anno(root)
    (root / "split_csv").mkdir()
    with open(root / "split_csv" / "1cls.csv", "w", newline="") as f:
        csv.writer(f).writerows([["object", "split", "label", "image", "mask"]] + rows)
    return root


def mtimes(folder):
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*")}


@pytest.fixture
def raw(tmp_path):
    return make_raw_visa(tmp_path / "VisA")


def test_layout_masks_copies_and_counts(raw, tmp_path, capsys):
    out = tmp_path / "prepared"
    assert prepare(raw, out) == {"candle": "written", "pcb1": "written"}
    printed = capsys.readouterr().out
    assert "candle      train normal    4  test normal    2  test anomaly    3" in printed
    assert f"split: {raw / 'split_csv' / '1cls.csv'}" in printed
    for name, (n_train, n_test, n_bad) in COUNTS.items():
        train, (test, labels, masks) = find_class_files(out, name)
        assert len(train) == n_train and int((labels == 0).sum()) == n_test
        assert int(labels.sum()) == n_bad and all(m is not None for m, lab in zip(masks, labels) if lab)
    gt = np.asarray(Image.open(out / "candle" / "ground_truth" / "anomaly" / "002.png"))
    assert gt.dtype == np.uint8 and set(np.unique(gt)) == {0, 255} and (gt == 255).sum() == 12
    src, dst = raw / "candle/Data/Images/Anomaly/001.JPG", out / "candle/test/anomaly/001.JPG"
    assert dst.read_bytes() == src.read_bytes() and os.stat(dst).st_ino != os.stat(src).st_ino


def test_writing_into_the_prepared_tree_leaves_the_download_alone(raw, tmp_path):
    out = tmp_path / "prepared"
    before = {p: (p.read_bytes(), p.stat().st_mode) for p in raw.rglob("*") if p.is_file()}
    prepare(raw, out)
    (out / "candle/train/good/0000.JPG").write_bytes(b"overwritten")
    prepare(raw, out)  # the rebuild unlinks and re-copies
    assert {p: (p.read_bytes(), p.stat().st_mode) for p in raw.rglob("*") if p.is_file()} == before


def test_hardlink_mode_shares_bytes_without_touching_the_raw_files(raw, tmp_path, capsys):
    out = tmp_path / "prepared"
    src = raw / "pcb1/Data/Images/Normal/0000.JPG"
    mode = src.stat().st_mode
    prepare(raw, out, link="hardlink")
    assert os.stat(out / "pcb1/train/good/0000.JPG").st_ino == src.stat().st_ino
    assert src.stat().st_mode == mode
    assert prepare(raw, out, link="hardlink") == {"candle": "skipped", "pcb1": "skipped"}
    with open(out / "pcb1/train/good/0001.JPG", "r+b") as f:  # an outside tool edits in place
        f.write(b"\x00")
    assert prepare(raw, out, link="hardlink")["pcb1"] == "written"
    assert "the download itself has changed" in capsys.readouterr().out
    assert prepare(raw, out) == {"candle": "written", "pcb1": "written"}  # asked for copies now
    assert os.stat(out / "pcb1/train/good/0000.JPG").st_ino != src.stat().st_ino


def test_defect_labels_are_written_per_anomalous_image(raw, tmp_path, capsys):
    out = tmp_path / "prepared"
    prepare(raw, out)
    with open(out / "candle" / "defects.csv", newline="") as f:
        assert list(csv.reader(f)) == [["image", "defect"], ["000", CANDLE_DEFECTS[0]],
                                       ["001", CANDLE_DEFECTS[1]], ["002", "anomaly"]]
    assert not (out / "pcb1" / "defects.csv").exists()
    assert "note: pcb1 has no image_anno.csv" in capsys.readouterr().out
    assert "defects.csv" in (out / "candle" / MARKER).read_text()


@pytest.mark.parametrize("damage", ["missing", "extra", "same_size", "hidden"])
def test_rerun_skips_intact_classes_and_rebuilds_damaged_ones(raw, tmp_path, capsys, damage):
    out = tmp_path / "prepared"
    prepare(raw, out)
    candle = mtimes(out / "candle")
    assert prepare(raw, out) == {"candle": "skipped", "pcb1": "skipped"}
    target = out / "pcb1" / "test" / "good" / "0003.JPG"
    if damage == "missing":
        target.unlink()
    elif damage == "extra":
        (target.parent / "stray.JPG").write_bytes(target.read_bytes())
    elif damage == "same_size":
        data = bytearray(target.read_bytes())
        data[-3] ^= 0xFF
        target.write_bytes(bytes(data))
    else:
        (target.parent / ".DS_Store").write_bytes(b"finder")  # ignored, as by the loader
    (out / "candle.partial" / "train").mkdir(parents=True)  # interrupted run
    pcb1 = "skipped" if damage in ("hidden", "extra") else "written"  # a stray file is not damage
    assert prepare(raw, out) == {"candle": "skipped", "pcb1": pcb1}
    assert target.read_bytes() == (raw / "pcb1/Data/Images/Normal/0003.JPG").read_bytes()
    assert not (out / "candle.partial").exists()
    assert (target.parent / "stray.JPG").exists() == (damage == "extra")  # kept, never deleted
    assert mtimes(out / "candle") == candle
    printed = capsys.readouterr().out
    assert "warning" not in printed  # the download itself is unchanged
    assert ("found and left in place: test/good/stray.JPG" in printed) == (damage == "extra")


def test_partial_dir_is_replaced_when_class_is_missing(raw, tmp_path):
    out = tmp_path / "prepared"
    (out / "pcb1.partial" / "train" / "good").mkdir(parents=True)
    (out / "pcb1.partial" / "train" / "good" / "stale.JPG").write_bytes(b"x")
    prepare(raw, out, ["pcb1"])
    assert not (out / "pcb1.partial").exists()
    assert not (out / "pcb1" / "train" / "good" / "stale.JPG").exists()


def test_falls_back_to_the_shipped_split(raw, tmp_path, monkeypatch, capsys):
    shipped = tmp_path / "shipped.csv"
    os.replace(raw / "split_csv" / "1cls.csv", shipped)
    monkeypatch.setattr(prepare_visa, "BUNDLED_SPLIT", shipped)
    assert prepare(raw, tmp_path / "prepared")["candle"] == "written"
    assert f"split: {shipped}  (the copy shipped with this repository" in capsys.readouterr().out


def edit_split(raw, line, replace):
    """Apply replace(text) to one line (1-based) of the raw split CSV."""
    path = raw / "split_csv" / "1cls.csv"
    lines = path.read_text().splitlines()
    lines[line - 1] = replace(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def break_input(case, raw, tmp_path):
    """Damage the raw tree (or choose a bad --out) for one expected failure; returns --out."""
    out = tmp_path / "prepared"
    split = raw / "split_csv" / "1cls.csv"
    if case == "header":
        edit_split(raw, 1, lambda s: s.replace("label", "kind"))
    elif case == "short_row":
        edit_split(raw, 4, lambda s: s.rsplit(",", 2)[0])
    elif case == "split_value":
        edit_split(raw, 5, lambda s: s.replace(",train,", ",val,"))
    elif case == "label_value":
        edit_split(raw, 9, lambda s: s.replace(",anomaly,", ",bad,"))
    elif case == "binary_split":
        split.write_bytes(b"\xff\xfe\x00binary")
    elif case == "empty_mask":
        (raw / "candle/Data/Masks/Anomaly/001.png").write_bytes(b"")
    elif case == "garbage_mask":
        (raw / "pcb1/Data/Masks/Anomaly/000.png").write_bytes(b"not a png at all")
    elif case == "missing_image":
        (raw / "pcb1/Data/Images/Normal/0001.JPG").unlink()
    elif case == "missing_mask":
        (raw / "candle/Data/Masks/Anomaly/001.png").unlink()
    elif case == "out_unwritable":
        (tmp_path / "a_file").write_text("x")
        out = tmp_path / "a_file" / "prepared"
    elif case == "foreign_out":
        (out / "candle").mkdir(parents=True)
    return out


@pytest.mark.parametrize("case, message", [
    ("header", r"split file '.*1cls.csv' has columns \['object', 'split', 'kind'"),
    ("short_row", r"split file '.*1cls.csv', line 4: expected the 5 columns"),
    ("split_value", r"line 5: split='val', label='normal'; expected train/normal"),
    ("label_value", r"line 9: split='test', label='bad'"),
    ("binary_split", r"cannot read split file '.*1cls.csv'"),
    ("empty_mask", r"mask file '.*candle/Data/Masks/Anomaly/001.png' is empty \(0 bytes\)"),
    ("garbage_mask", r"cannot read mask file '.*pcb1/Data/Masks/Anomaly/000.png'"),
    ("missing_image", r"missing image file .*pcb1/Data/Images/Normal/0001.JPG"),
    ("missing_mask", r"missing mask file .*candle/Data/Masks/Anomaly/001.png"),
    ("out_unwritable", r"--out '.*a_file/prepared' is not a writable folder"),
    ("foreign_out", r"was not written by prepare_visa.py"),
])
def test_expected_failures_are_one_error_line(raw, tmp_path, capsys, case, message):
    out = break_input(case, raw, tmp_path)
    assert main(["--visa_root", str(raw), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert re.search(message, err), err


def test_unwritable_out_is_found_before_any_work(raw, tmp_path, capsys):
    (tmp_path / "a_file").write_text("x")
    before = mtimes(tmp_path)
    with pytest.raises(PrepareError, match="--out"):
        prepare(raw, tmp_path / "a_file" / "prepared")
    assert capsys.readouterr().out == ""  # no class prepared (each prints its counts)
    assert mtimes(tmp_path) == before  # nothing written, nothing touched


def test_a_folder_without_the_class_folders_is_named_and_nothing_is_created(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(PrepareError, match="holds none of the split's class folders"):
        prepare(empty, tmp_path / "out")  # falls back to the shipped split
    assert not (tmp_path / "out").exists()


def test_a_failing_class_leaves_no_partial_folder(raw, tmp_path):
    (raw / "candle" / "Data" / "Masks" / "Anomaly" / "001.png").write_bytes(b"")
    with pytest.raises(PrepareError, match="001.png"):
        prepare(raw, tmp_path / "out", classes=["candle"])
    assert sorted(os.listdir(tmp_path / "out")) == []


@pytest.mark.parametrize("case, message", [
    ("tar", "extract it first"),
    ("class_folder", "is one class folder; pass its parent"),
    ("prepared", "already a prepared tree"),
    ("unknown_class", "unknown class name\\(s\\) \\['bottle'\\]"),
    ("no_split_file", "split file .*nowhere.csv' not found"),
])
def test_usual_mistakes_are_explained(raw, tmp_path, case, message):
    root, out, classes, split_csv = raw, tmp_path / "prepared", None, None
    if case == "tar":
        root = tmp_path / "VisA_20220922.tar"
        root.write_bytes(b"tar")
    elif case == "class_folder":
        root = raw / "candle"
    elif case == "prepared":
        prepare(raw, out)
        root = out
    elif case == "unknown_class":
        classes = ["candle", "bottle"]
    elif case == "no_split_file":
        split_csv = tmp_path / "nowhere.csv"
    with pytest.raises(PrepareError, match=message):
        prepare(root, out, classes, split_csv)


def test_command_line_selects_classes(raw, tmp_path):
    assert main(["--visa_root", str(raw), "--out", str(tmp_path / "o"), "--classes", "pcb1"]) == 0
    assert sorted(os.listdir(tmp_path / "o")) == ["pcb1"]


def test_shipped_split_has_the_official_counts():
    split = read_split(BUNDLED_CSV)
    assert sum(len(rows) for rows in split.values()) == 10821
    assert {name: split_counts(rows) for name, rows in split.items()} == OFFICIAL_COUNTS
