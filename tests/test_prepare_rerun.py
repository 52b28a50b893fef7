"""A preparation re-run never deletes a file it did not write; --out and the source never
overlap; Ctrl-C is one line and exit code 130; demo folders get the usual permissions."""
import os

import pytest

import prepare_mtd
import prepare_mvtec
import prepare_visa
from prepare.demo import ensure_demo_data
from test_prepare_mtd import make_raw_mtd
from test_prepare_visa import make_raw_visa


def test_mtd_rebuild_keeps_the_users_checkpoint(tmp_path, capsys):
    train_list = make_raw_mtd(tmp_path / "MTD")
    out = tmp_path / "data"
    prepare_mtd.prepare(tmp_path / "MTD", out, train_list=train_list)
    checkpoint = out / "mtd" / "checkpoint.pt"  # --checkpoint_dir equal to the data folder
    checkpoint.write_bytes(b"trained for hours")
    assert prepare_mtd.prepare(tmp_path / "MTD", out, train_list=train_list) == "skipped"
    assert "not written by prepare_mtd.py found and left in place: checkpoint.pt" \
        in capsys.readouterr().out
    (out / "mtd" / "train" / "good" / "exp0_num_100.jpg").unlink()  # real damage: a rebuild
    assert prepare_mtd.prepare(tmp_path / "MTD", out, train_list=train_list) == "written"
    assert checkpoint.read_bytes() == b"trained for hours"
    assert (out / "mtd" / "train" / "good" / "exp0_num_100.jpg").is_file()
    assert "checkpoint.pt" not in (out / "mtd" / ".prepared.json").read_text()


def test_visa_rebuild_keeps_foreign_files_and_renames_a_clash(tmp_path, capsys):
    raw = make_raw_visa(tmp_path / "VisA")
    out = tmp_path / "prepared"
    prepare_visa.prepare(raw, out)
    notes = out / "pcb1" / "notes" / "todo.txt"
    notes.parent.mkdir()
    notes.write_text("mine")
    (out / "pcb1" / "defects.csv").write_text("the user's own labels")  # pcb1 had none
    (raw / "pcb1" / "image_anno.csv").write_text("image,label,mask\n")  # a rebuild writes one
    assert prepare_visa.prepare(raw, out)["pcb1"] == "written"
    assert notes.read_text() == "mine"
    assert (out / "pcb1" / "defects.csv.kept").read_text() == "the user's own labels"
    assert (out / "pcb1" / "defects.csv").read_text().startswith("image,defect")
    assert "found and left in place: defects.csv, notes/todo.txt" in capsys.readouterr().out


@pytest.mark.parametrize("where", ["same", "out inside source", "source inside out"])
def test_out_overlapping_the_source_is_refused(tmp_path, capsys, where):
    train_list = make_raw_mtd(tmp_path / "data" / "MTD")
    root = tmp_path / "data" / "MTD"
    out = {"same": root, "out inside source": root / "prepared",
           "source inside out": tmp_path / "data"}[where]
    assert prepare_mtd.main(["--mtd_root", str(root), "--out", str(out),
                             "--train_list", str(train_list)]) == 1
    assert "overlap (one is, or is inside, the other)" in capsys.readouterr().err
    assert not (root / "mtd").exists() and not (root / "prepared").exists()


def test_visa_out_inside_source_is_refused(tmp_path, capsys):
    raw = make_raw_visa(tmp_path / "VisA")
    assert prepare_visa.main(["--visa_root", str(raw), "--out", str(raw / "out")]) == 1
    assert "overlap" in capsys.readouterr().err and not (raw / "out").exists()


@pytest.mark.parametrize("script, at", [(prepare_mtd, "prepare"), (prepare_mvtec, "prepare"),
                                        (prepare_visa, "prepare")])
def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys, script, at):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(script, at, interrupted)
    root = {"prepare_mtd": "--mtd_root", "prepare_mvtec": "--mvtec_root",
            "prepare_visa": "--visa_root"}[script.__name__]
    assert script.main([root, str(tmp_path)]) == 130
    assert capsys.readouterr().err == "interrupted; run the same command again to continue\n"


def test_ctrl_c_while_building_leaves_no_partial_class(tmp_path, monkeypatch):
    train_list = make_raw_mtd(tmp_path / "MTD")

    def interrupted(*args):
        raise KeyboardInterrupt
    monkeypatch.setattr(prepare_mtd, "binarise_mask", interrupted)
    out = tmp_path / "out"
    assert prepare_mtd.main(["--mtd_root", str(tmp_path / "MTD"), "--out", str(out),
                             "--train_list", str(train_list)]) == 130
    assert os.listdir(out) == []


def test_demo_class_folder_has_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        ensure_demo_data(tmp_path / "data", ["toy"])
    finally:
        os.umask(mask)
    assert (tmp_path / "data" / "toy").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize("script, root", [(prepare_mtd, "--mtd_root"),
                                          (prepare_mvtec, "--mvtec_root"),
                                          (prepare_visa, "--visa_root")])
def test_a_folder_and_an_archive_together_are_refused(tmp_path, capsys, script, root):
    assert script.main([root, str(tmp_path), "--archive", str(tmp_path / "a.tar"),
                        "--out", str(tmp_path / "out")]) == 1
    assert f"give either {root}" in capsys.readouterr().err and not (tmp_path / "out").exists()
