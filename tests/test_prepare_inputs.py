"""Inputs from outside the repository, as users' tools write them: paths named by a file stay
inside their root; a UTF-8 byte-order mark, Windows line endings and trailing blank lines are
read correctly (split CSV, image_anno.csv, the MTD train list, the manifest)."""
import csv
import re

import pytest

import prepare_mtd
import prepare_visa
from prepare.common import PrepareError
from prepare.manifest import read_manifest
from test_prepare_mtd import make_raw_mtd
from test_prepare_visa import make_raw_visa


def rewrite(path, transform):
    path.write_bytes(transform(path.read_bytes()))


def as_exported(data):
    """What a spreadsheet or Windows editor writes: BOM, CRLF, blank lines at the end."""
    return b"\xef\xbb\xbf" + data.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n") + b"\r\n\r\n"


@pytest.mark.parametrize("path", ["/etc/hostname", "../../outside.JPG",
                                  "candle/../../outside.JPG", "C:\\Windows\\win.ini"])
def test_split_row_leaving_the_root_is_refused_with_the_row(tmp_path, capsys, path):
    raw = make_raw_visa(tmp_path / "VisA")
    (tmp_path / "outside.JPG").write_bytes(b"secret")
    split = raw / "split_csv" / "1cls.csv"
    with open(split, "a", newline="") as f:
        csv.writer(f).writerow(["candle", "train", "normal", path, ""])
    line = len(split.read_text().splitlines())
    out = tmp_path / "prepared"
    assert prepare_visa.main(["--visa_root", str(raw), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert re.search(rf"split file '.*1cls.csv', line {line}: the path '.*' leaves the dataset "
                     rf"folder", err), err
    assert not out.exists()  # nothing read, nothing copied


def test_anomalous_row_with_a_mask_outside_is_refused(tmp_path):
    raw = make_raw_visa(tmp_path / "VisA")
    split = raw / "split_csv" / "1cls.csv"
    rewrite(split, lambda b: b.replace(b"candle/Data/Masks/Anomaly/000.png", b"/etc/passwd"))
    with pytest.raises(PrepareError, match="the path '/etc/passwd' leaves the dataset folder"):
        prepare_visa.prepare(raw, tmp_path / "prepared")


def test_split_and_image_anno_as_spreadsheets_export_them(tmp_path):
    raw = make_raw_visa(tmp_path / "VisA")
    rewrite(raw / "split_csv" / "1cls.csv", as_exported)
    rewrite(raw / "candle" / "image_anno.csv", as_exported)
    out = tmp_path / "prepared"
    assert prepare_visa.prepare(raw, out) == {"candle": "written", "pcb1": "written"}
    defects = (out / "candle" / "defects.csv").read_text().splitlines()
    assert defects[1] == "000,chunk of wax missing"  # the BOM did not hide the 'image' column
    assert prepare_visa.split_counts(prepare_visa.read_split(raw / "split_csv" / "1cls.csv")
                                     ["candle"]) == (4, 2, 3)


def test_mtd_train_list_with_bom_and_crlf(tmp_path):
    train_list = make_raw_mtd(tmp_path / "MTD")
    rewrite(train_list, as_exported)
    assert prepare_mtd.read_train_list(train_list)[0] == "exp0_num_100.jpg"
    assert prepare_mtd.prepare(tmp_path / "MTD", tmp_path / "out", train_list=train_list) \
        == "written"


@pytest.mark.parametrize("name", ["../../outside.jpg", "/etc/hostname", "sub/x.jpg"])
def test_mtd_train_list_names_only_plain_file_names(tmp_path, name):
    train_list = make_raw_mtd(tmp_path / "MTD")
    train_list.write_text(f"exp0_num_100.jpg\n{name}\n")
    with pytest.raises(PrepareError, match=f"'{re.escape(name)}' is not a plain file name"):
        prepare_mtd.read_train_list(train_list)


@pytest.mark.parametrize("path", ["../x.jpg", "/etc/passwd", "MT_Free/../../x.jpg"])
def test_manifest_row_leaving_the_root_is_refused(tmp_path, path):
    manifest = tmp_path / "m.csv"
    manifest.write_text(f"path,bytes,sha256\nMT_Free/a.jpg,1,{'a' * 64}\n{path},1,{'b' * 64}\n")
    with pytest.raises(PrepareError, match=r"manifest '.*m.csv', line 3: the path"):
        read_manifest(manifest)


def test_manifest_with_bom_and_crlf(tmp_path):
    manifest = tmp_path / "m.csv"
    manifest.write_bytes(as_exported(f"path,bytes,sha256\nMT_Free/a.jpg,1,{'A' * 64}\n".encode()))
    assert read_manifest(manifest) == {"MT_Free/a.jpg": (1, "a" * 64)}


def test_an_os_error_of_a_preparation_is_one_line(capsys):
    from prepare.common import run_script

    def download_dir_is_a_file():
        raise NotADirectoryError(20, "Not a directory", "pp/outfile/VisA.partial")
    assert run_script(download_dir_is_a_file) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: [Errno 20] Not a directory: 'pp/outfile/VisA.partial'")
    assert "Traceback" not in err and len(err.splitlines()) == 1
