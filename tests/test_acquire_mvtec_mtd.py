"""prepare_mvtec.py and prepare_mtd.py: download from a loopback server, verify, extract (MTD
checked file by file against a manifest), and do nothing the second time."""
import csv
import dataclasses
import hashlib
import io
import os
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

import prepare_mtd
import prepare_mvtec
from loopback import Loopback
from prepare import download
from prepare.archives import MTD, MVTEC
from test_prepare_mtd import make_raw_mtd

MVTEC_FILES = {
    "bottle/train/good/000.png": "img", "bottle/test/good/000.png": "img",
    "bottle/test/broken_large/000.png": "img",
    "bottle/ground_truth/broken_large/000_mask.png": "mask",
    "cable/train/good/000.png": "img", "cable/test/good/000.png": "img",
    "license.txt": "text"}


def png(kind):
    buf = io.BytesIO()
    value = 255 if kind == "mask" else np.random.default_rng(0).integers(0, 255, (8, 8, 3))
    Image.fromarray(np.full((8, 8), 255, np.uint8) if kind == "mask"
                    else value.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def mvtec_tar_xz():
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz") as tar:
        for name, kind in MVTEC_FILES.items():
            data = b"CC BY-NC-SA" if kind == "text" else png(kind)
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture(autouse=True)
def small_archives(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_S", 0)
    monkeypatch.setattr(prepare_mvtec, "MVTEC",
                        dataclasses.replace(MVTEC, size=None, unpacked_bytes=1_000_000))


def mvtec_main(server, sha, tmp_path, *extra):
    return prepare_mvtec.main(["--url", server.url("/m.tar.xz"), "--sha256", sha,
                               "--out", str(tmp_path / "mvtec"),
                               "--download_dir", str(tmp_path / "dl"), *extra])


def test_mvtec_download_extracts_the_layout_presets_read(tmp_path, capsys):
    from layout import find_class_files
    data = mvtec_tar_xz()
    sha = hashlib.sha256(data).hexdigest()
    with Loopback({"/m.tar.xz": data}) as server:
        assert mvtec_main(server, sha, tmp_path) == 0
        train, (test, labels, masks) = find_class_files(tmp_path / "mvtec", "bottle")
        assert len(train) == 1 and sorted(labels) == [0, 1]
        assert sum(m is not None for m in masks) == 1
        (tmp_path / "mvtec" / "bottle" / "checkpoint.pt").write_bytes(b"mine")
        before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
        assert mvtec_main(server, sha, tmp_path) == 0  # intact: nothing downloaded or written
        assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
        (tmp_path / "mvtec" / "cable" / "test" / "good" / "000.png").unlink()
        assert mvtec_main(server, sha, tmp_path) == 0  # re-extracted from the kept archive
    assert len(server.requests) == 1
    assert (tmp_path / "mvtec" / "cable" / "test" / "good" / "000.png").is_file()
    assert (tmp_path / "mvtec" / "bottle" / "checkpoint.pt").read_bytes() == b"mine"
    assert "lacks the MVTec AD categories capsule" in capsys.readouterr().out


def test_mvtec_extracted_tree_needs_no_preparation(tmp_path, capsys):
    root = tmp_path / "mine"
    (root / "bottle" / "train" / "good").mkdir(parents=True)
    assert prepare_mvtec.main(["--mvtec_root", str(root)]) == 0
    assert f"no preparation needed: python main.py presets/mvtec.py --dataset_path='{root}'" \
        in capsys.readouterr().out
    assert os.listdir(root / "bottle" / "train" / "good") == []
    assert prepare_mvtec.main(["--mvtec_root", str(tmp_path / "nothing")]) == 1
    assert "holds no class folder with train/good" in capsys.readouterr().err


def test_mvtec_categories_match_the_preset():
    import runpy
    from conftest import ROOT
    preset = runpy.run_path(os.path.join(ROOT, "presets", "mvtec.py"))
    assert list(prepare_mvtec.CATEGORIES) == preset["class_names"]


def mtd_zip_and_manifest(tmp_path):
    """GitHub's layout: one wrapping folder; the manifest lists every file of it."""
    root = tmp_path / "src" / "Magnetic-tile-defect-datasets.-cc4e"
    train_list = make_raw_mtd(root)
    (root / "README.md").write_text("MTD\n")
    manifest = tmp_path / "manifest.csv"
    with open(manifest, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "bytes", "sha256"])
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            writer.writerow([path.relative_to(root).as_posix(), path.stat().st_size,
                             hashlib.sha256(path.read_bytes()).hexdigest()])
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(root.rglob("*")):
            zf.write(path, path.relative_to(root.parent).as_posix())
    return buf.getvalue(), manifest, train_list, root


def mtd_main(server, tmp_path, train_list):
    return prepare_mtd.main(["--url", server.url("/mtd.zip"), "--out", str(tmp_path / "mtd"),
                             "--download_dir", str(tmp_path / "dl"),
                             "--train_list", str(train_list)])


@pytest.fixture
def mtd_served(tmp_path, monkeypatch):
    data, manifest, train_list, root = mtd_zip_and_manifest(tmp_path)
    monkeypatch.setattr(prepare_mtd, "MTD", dataclasses.replace(
        MTD, manifest=manifest, unpacked_bytes=1_000_000))
    return data, train_list, root


def test_mtd_download_checked_against_the_manifest_then_a_no_op(tmp_path, mtd_served, capsys):
    data, train_list, _ = mtd_served
    with Loopback({"/mtd.zip": data}) as server:
        assert mtd_main(server, tmp_path, train_list) == 0
        assert len(os.listdir(tmp_path / "mtd" / "mtd" / "train" / "good")) == 3
        before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
        assert mtd_main(server, tmp_path, train_list) == 0
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == before
    assert len(server.requests) == 1
    assert "mtd verified and skipped" in capsys.readouterr().out


@pytest.mark.parametrize("change", ["changed", "extra", "missing"])
def test_mtd_file_that_differs_from_the_manifest_is_named(tmp_path, mtd_served, change, capsys):
    _, train_list, root = mtd_served
    crack = root / "MT_Crack" / "Imgs" / "exp1_num_101.jpg"
    if change == "changed":
        crack.write_bytes(crack.read_bytes()[:-1] + b"\x00")
    elif change == "extra":
        (root / "MT_Crack" / "Imgs" / "extra.jpg").write_bytes(b"x")
    else:
        crack.unlink()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for path in sorted(root.rglob("*")):
            zf.write(path, path.relative_to(root.parent).as_posix())
    with Loopback({"/mtd.zip": buf.getvalue()}) as server:
        assert mtd_main(server, tmp_path, train_list) == 1
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    named = "MT_Crack/Imgs/extra.jpg" if change == "extra" else "MT_Crack/Imgs/exp1_num_101.jpg"
    assert len(errors) == 1 and f"'{named}'" in errors[0]
    assert "was removed" in errors[0] and os.listdir(tmp_path / "dl") == []  # not reused
    assert not (tmp_path / "mtd").exists()


def test_shipped_manifest_lists_the_2688_images_and_masks():
    from prepare.manifest import read_manifest
    entries = read_manifest(MTD.manifest)
    assert len(entries) == 2691
    assert sum(p.startswith("MT_") for p in entries) == 2688


def test_mtd_zip_is_kept_when_the_disk_fills_during_extraction(tmp_path, mtd_served, capsys,
                                                                monkeypatch):
    import errno
    import prepare.extract as extract_module
    data, train_list, _ = mtd_served

    class FullDisk(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")
    real_open = open
    monkeypatch.setattr(extract_module, "open", lambda path, mode="r", *a, **k: FullDisk()
                        if mode == "xb" else real_open(path, mode, *a, **k), raising=False)
    with Loopback({"/mtd.zip": data}) as server:
        assert mtd_main(server, tmp_path, train_list) == 1
    err = capsys.readouterr().err
    assert "no space left" in err and "kept" in err and "removed" not in err
    assert [p.name for p in (tmp_path / "dl").iterdir()] == [MTD.filename]


def test_a_damaged_archive_of_the_user_is_never_advised_for_deletion(tmp_path, mtd_served,
                                                                      capsys):
    data, train_list, _ = mtd_served
    mine = tmp_path / "mine.zip"
    mine.write_bytes(data[:len(data) // 2])
    assert prepare_mtd.main(["--archive", str(mine), "--out", str(tmp_path / "mtd"),
                             "--download_dir", str(tmp_path / "dl"),
                             "--train_list", str(train_list)]) == 1
    err = capsys.readouterr().err
    assert "damaged or incomplete: get a good copy and pass it with --archive" in err
    assert "delete" not in err and mine.is_file()
