"""prepare/extract.py: nothing in an archive can write outside its target, or fill the disk."""
import io
import json
import os
import stat
import tarfile
import zipfile

import pytest

from prepare.common import PrepareError
from prepare.extract import EXTRACTED, extract, extraction_damage


def is_top(folder):
    return (folder / "data").is_dir()


def add(tar, name, data=b"", **fields):
    info = tarfile.TarInfo(name)
    info.size = len(data)
    for key, value in fields.items():
        setattr(info, key, value)
    tar.addfile(info, io.BytesIO(data) if data else None)


def make_tar(path, members, mode="w"):
    with tarfile.open(path, mode) as tar:
        add(tar, "data/a.txt", b"inside")
        for name, fields in members:
            add(tar, name, **fields)
    return path


def outside_is_untouched(tmp_path):
    return sorted(p.name for p in tmp_path.iterdir()) == ["evil.tar", "place"]


MALICIOUS = {
    "dot-dot": ("data/../../x", {"data": b"escaped"}),
    "absolute": ("/tmp/differnet-absolute-x", {"data": b"escaped"}),
    "symlink to /etc": ("data/etc", {"type": tarfile.SYMTYPE, "linkname": "/etc"}),
    "symlink climbing out": ("data/up", {"type": tarfile.SYMTYPE, "linkname": "../../x"}),
    "hard link outside": ("data/hard", {"type": tarfile.LNKTYPE, "linkname": "../x"}),
    "device node": ("data/dev", {"type": tarfile.CHRTYPE, "devmajor": 1, "devminor": 3}),
    "fifo": ("data/fifo", {"type": tarfile.FIFOTYPE}),
}


@pytest.mark.parametrize("case", MALICIOUS)
def test_malicious_member_is_refused_and_nothing_is_written(tmp_path, case):
    archive = make_tar(tmp_path / "evil.tar", [MALICIOUS[case]])
    target = tmp_path / "place" / "raw"
    with pytest.raises(PrepareError, match=f"refused member '{MALICIOUS[case][0]}'"):
        extract(archive, target, 10_000, is_top, "id")
    assert list((tmp_path / "place").iterdir()) == []  # no target, no .partial
    assert outside_is_untouched(tmp_path) and not os.path.exists("/tmp/differnet-absolute-x")


def test_links_that_stay_inside_are_extracted(tmp_path):
    # a link to its own folder, then a file written through it: both stay inside
    archive = make_tar(tmp_path / "evil.tar", [
        ("data/in", {"type": tarfile.SYMTYPE, "linkname": "."}),
        ("data/in/b.txt", {"data": b"fine"})])
    target = tmp_path / "place" / "raw"
    extract(archive, target, 10_000, is_top, "id")
    assert (target / "data" / "b.txt").read_bytes() == b"fine"


def test_permissions_from_the_archive_are_not_trusted(tmp_path):
    archive = make_tar(tmp_path / "a.tar", [("data/run", {"data": b"#!", "mode": 0o6777})])
    target = tmp_path / "raw"
    extract(archive, target, 10_000, is_top, "id")
    mode = (target / "data" / "run").stat().st_mode
    assert not mode & (stat.S_ISUID | stat.S_ISGID | stat.S_IWOTH | stat.S_IWGRP)


def test_permissions_are_cleaned_where_tarfile_has_no_data_filter(tmp_path, monkeypatch):
    monkeypatch.delattr(tarfile, "data_filter")
    archive = make_tar(tmp_path / "a.tar", [("data/run", {"data": b"#!", "mode": 0o4777})])
    target = tmp_path / "raw"
    extract(archive, target, 10_000, is_top, "id")
    assert (target / "data" / "run").stat().st_mode & 0o7777 == 0o755


def test_tar_bomb_stops_before_writing_it_all(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(6):
            add(tar, f"data/zeros{i}", bytes(1 << 20))
    assert archive.stat().st_size < 100_000
    with pytest.raises(PrepareError, match="unpacks to more than 2000000 bytes"):
        extract(archive, tmp_path / "raw", 1_000_000, is_top, "id")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.tar.gz"]


def test_zip_bomb_counts_bytes_written_not_headers(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("data/zeros", bytes(3 << 20))
    with pytest.raises(PrepareError, match="unpacks to more than"):
        extract(archive, tmp_path / "raw", 1_000_000, is_top, "id")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bomb.zip"]


@pytest.mark.parametrize("name", ["../x", "/abs", "data/../../x", "..\\x"])  # last: Windows-made
def test_zip_member_leaving_the_target_is_refused(tmp_path, name):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("data/a.txt", b"inside")
        zf.writestr(zipfile.ZipInfo(name), b"escaped")
    with pytest.raises(PrepareError, match="refused member"):
        extract(archive, tmp_path / "place" / "raw", 10_000, is_top, "id")
    assert list((tmp_path / "place").iterdir()) == [] and not (tmp_path / "x").exists()


def test_zip_symlink_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo("data/link")
        info.external_attr = (stat.S_IFLNK | 0o777) << 16
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(PrepareError, match="refused member 'data/link': a symbolic link"):
        extract(archive, tmp_path / "raw", 10_000, is_top, "id")


@pytest.mark.parametrize("suffix,mode", [(".tar", "w"), (".tar.xz", "w:xz"), (".zip", None)])
def test_truncated_archive_is_named_and_leaves_nothing(tmp_path, suffix, mode):
    whole = tmp_path / f"whole{suffix}"
    if mode:
        with tarfile.open(whole, mode) as tar:
            for i in range(4):
                add(tar, f"data/f{i}", os.urandom(40_000))
    else:
        with zipfile.ZipFile(whole, "w") as zf:
            for i in range(4):
                zf.writestr(f"data/f{i}", os.urandom(40_000))
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    with pytest.raises(PrepareError, match=f"cannot extract '{cut}'.*damaged or incomplete"):
        extract(cut, tmp_path / "raw", 10_000_000, is_top, "id")
    assert not (tmp_path / "raw").exists() and not (tmp_path / "raw.partial").exists()


def test_one_wrapping_folder_is_lifted_and_the_extraction_recorded(tmp_path):
    archive = tmp_path / "wrapped.tar"
    with tarfile.open(archive, "w") as tar:
        add(tar, "VisA_20220922/data/a.txt", b"inside")
    target = tmp_path / "raw"
    assert extract(archive, target, 10_000, is_top, "sha256:abc") == []
    assert (target / "data" / "a.txt").read_bytes() == b"inside"
    record = json.loads((target / EXTRACTED).read_text())
    assert record == {"identity": "sha256:abc", "files": {"data/a.txt": 6}}
    assert extraction_damage(target, "sha256:abc") is None
    assert extraction_damage(target, "sha256:other") == "extracted from another archive"
    (target / "data" / "a.txt").write_bytes(b"cut")
    assert extraction_damage(target, "sha256:abc") == "data/a.txt missing or changed"


def test_re_extraction_keeps_files_it_did_not_write(tmp_path):
    archive = make_tar(tmp_path / "a.tar", [])
    target = tmp_path / "raw"
    extract(archive, target, 10_000, is_top, "id")
    (target / "data" / "a.txt").unlink()
    (target / "data" / "checkpoint.pt").write_bytes(b"mine")
    assert extract(archive, target, 10_000, is_top, "id") == ["data/checkpoint.pt"]
    assert (target / "data" / "a.txt").read_bytes() == b"inside"
    assert (target / "data" / "checkpoint.pt").read_bytes() == b"mine"


def zip_with(path, members):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members:
            zf.writestr(name, data)
    return path


def test_a_duplicate_zip_member_is_refused_by_name_not_called_damaged(tmp_path):
    import warnings
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        archive = zip_with(tmp_path / "a.zip", [("data/a.txt", b"1"), ("data/a.txt", b"2")])
    with pytest.raises(PrepareError) as caught:
        extract(archive, tmp_path / "out", 1000, is_top, "x")
    assert "refused member 'data/a.txt': the archive holds it twice" in str(caught.value)
    assert "damaged" not in str(caught.value)
    assert not (tmp_path / "out").exists() and not (tmp_path / "out.partial").exists()


def test_a_member_name_too_long_for_the_filesystem_is_refused_by_name(tmp_path):
    archive = zip_with(tmp_path / "a.zip", [("data/" + "x" * 300, b"1")])
    with pytest.raises(PrepareError, match=r"refused member 'data/x+\.\.\.': its name is too "
                                           r"long for this filesystem"):
        extract(archive, tmp_path / "out", 1000, is_top, "x")


def test_a_full_disk_keeps_the_archive_and_names_the_space_needed(tmp_path, monkeypatch):
    import errno
    import prepare.extract as extract_module
    from prepare.extract import NoSpaceError
    archive = zip_with(tmp_path / "a.zip", [("data/a.txt", b"123")])

    class FullDisk(io.BytesIO):
        def write(self, data):
            raise OSError(errno.ENOSPC, "No space left on device")
    real_open = open
    monkeypatch.setattr(extract_module, "open", lambda path, mode="r", *a, **k: FullDisk()
                        if mode == "xb" else real_open(path, mode, *a, **k), raising=False)
    with pytest.raises(NoSpaceError) as caught:
        extract(archive, tmp_path / "out", 3 * 2**30, is_top, "x")
    message = str(caught.value)
    assert "no space left on the disk of" in message and "about 3.00 GiB" in message
    assert "The archive is fine and kept" in message and "damaged" not in message
    assert archive.is_file() and not (tmp_path / "out.partial").exists()
