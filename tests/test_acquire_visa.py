"""python prepare_visa.py with no --visa_root: download from a loopback server, verify, extract,
prepare; a second run does nothing; bad archives prepare nothing."""
import dataclasses
import hashlib
import os
import tarfile

import pytest

import prepare_visa
from loopback import Loopback, refused_url
from prepare import acquire, download
from prepare.archives import VISA
from test_prepare_visa import make_raw_visa

# the test archives' hashes are not the official one; a small expected size keeps the
# tar-bomb limit tight and the free-space check within any test machine's disk
SMALL_VISA = dataclasses.replace(VISA, size=None, unpacked_bytes=2_000_000)


def build_tar(src, path, wrap=None):
    """src's content as a tar, at its top or inside one folder named wrap."""
    with tarfile.open(path, "w") as tar:
        for entry in sorted(src.iterdir()):
            tar.add(entry, arcname=f"{wrap}/{entry.name}" if wrap else entry.name)
    return path.read_bytes()


@pytest.fixture
def served(tmp_path, monkeypatch):
    """A fake VisA tar (class folders and split_csv/ at the top) and its hash; no back-off."""
    monkeypatch.setattr(download, "BACKOFF_S", 0)
    monkeypatch.setattr(prepare_visa, "VISA", SMALL_VISA)
    data = build_tar(make_raw_visa(tmp_path / "src" / "VisA"), tmp_path / "src" / "visa.tar")
    return data, hashlib.sha256(data).hexdigest()


def prepare_from(server, sha, tmp_path, *extra):
    return prepare_visa.main(["--url", server.url("/VisA_20220922.tar"), "--sha256", sha,
                              "--out", str(tmp_path / "data" / "visa"),
                              "--download_dir", str(tmp_path / "data" / "downloads"), *extra])


def snapshot(folder):
    return {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in folder.rglob("*")}


def test_download_verify_extract_prepare_then_a_second_run_does_nothing(served, tmp_path, capsys):
    data, sha = served
    with Loopback({"/VisA_20220922.tar": data}) as server:
        assert prepare_from(server, sha, tmp_path) == 0
        out = tmp_path / "data" / "visa"
        assert sorted(os.listdir(out / "candle" / "test")) == ["anomaly", "good"]
        assert (tmp_path / "data/downloads/VisA_20220922.tar").read_bytes() == data
        assert (tmp_path / "data/downloads/VisA/candle/Data/Images/Normal/0000.JPG").is_file()
        before = snapshot(tmp_path / "data")
        assert prepare_from(server, sha, tmp_path) == 0
    assert len(server.requests) == 1  # the second run downloaded nothing
    assert snapshot(tmp_path / "data") == before  # ... and wrote nothing
    assert "2 verified and skipped" in capsys.readouterr().out


def test_damaged_class_is_rebuilt_without_downloading_again(served, tmp_path):
    data, sha = served
    with Loopback({"/VisA_20220922.tar": data}) as server:
        prepare_from(server, sha, tmp_path)
        image = tmp_path / "data/visa/pcb1/train/good/0000.JPG"
        image.unlink()
        raw = tmp_path / "data/downloads/VisA/pcb1/Data/Images/Normal/0001.JPG"
        raw.unlink()  # the extracted tree too: it is extracted again from the kept archive
        assert prepare_from(server, sha, tmp_path) == 0
    assert image.is_file() and raw.is_file() and len(server.requests) == 1


def test_wrapped_archive_and_keep_archive_false(tmp_path, monkeypatch):
    monkeypatch.setattr(prepare_visa, "VISA", SMALL_VISA)
    data = build_tar(make_raw_visa(tmp_path / "src" / "VisA"), tmp_path / "src" / "v.tar",
                     wrap="VisA_20220922")
    with Loopback({"/VisA_20220922.tar": data}) as server:
        sha = hashlib.sha256(data).hexdigest()
        assert prepare_from(server, sha, tmp_path, "--keep_archive=False") == 0
    assert not (tmp_path / "data/downloads/VisA_20220922.tar").exists()
    assert (tmp_path / "data/downloads/VisA/split_csv/1cls.csv").is_file()
    assert (tmp_path / "data/visa/candle/train/good").is_dir()


def test_wrong_hash_prepares_nothing_and_names_both_hashes(served, tmp_path, capsys):
    data, sha = served
    wrong = "f" * 64
    with Loopback({"/VisA_20220922.tar": data}) as server:
        assert prepare_from(server, wrong, tmp_path) == 1
    err = capsys.readouterr().err
    assert f"SHA-256 {sha}" in err and f"expected SHA-256 {wrong}" in err
    assert os.listdir(tmp_path / "data" / "downloads") == []
    assert not (tmp_path / "data" / "visa").exists()


def test_archive_option_with_a_wrong_file_is_refused(served, tmp_path, capsys):
    _, sha = served
    wrong = tmp_path / "VisA_20220922.tar"
    wrong.write_bytes(b"not the archive")
    code = prepare_visa.main(["--archive", str(wrong), "--sha256", sha,
                              "--out", str(tmp_path / "visa"),
                              "--download_dir", str(tmp_path / "downloads")])
    err = capsys.readouterr().err
    assert code == 1 and f"--archive '{wrong}' is not the expected archive" in err
    assert f"expected SHA-256 {sha}" in err and wrong.read_bytes() == b"not the archive"
    assert not (tmp_path / "visa").exists() and not (tmp_path / "downloads" / "VisA").exists()


def test_archive_option_with_the_right_file_prepares(served, tmp_path):
    data, sha = served
    archive = tmp_path / "mine.tar"
    archive.write_bytes(data)
    assert prepare_visa.main(["--archive", str(archive), "--sha256", sha,
                              "--out", str(tmp_path / "visa"),
                              "--download_dir", str(tmp_path / "dl"), "--keep_archive=False"]) == 0
    assert (tmp_path / "visa/pcb1/test/anomaly").is_dir() and archive.is_file()  # not ours


def test_malicious_archive_writes_nothing_outside(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(prepare_visa, "VISA", SMALL_VISA)
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as tar:
        (tmp_path / "split_csv").mkdir()
        tar.add(tmp_path / "split_csv", arcname="split_csv")
        info = tarfile.TarInfo("../escaped.txt")
        tar.addfile(info)
    data = path.read_bytes()
    with Loopback({"/VisA_20220922.tar": data}) as server:
        assert prepare_from(server, hashlib.sha256(data).hexdigest(), tmp_path) == 1
    assert "refused member '../escaped.txt'" in capsys.readouterr().err
    assert not list(tmp_path.rglob("escaped.txt"))
    assert sorted(os.listdir(tmp_path / "data" / "downloads")) == ["VisA_20220922.tar"]


def test_offline_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(download, "BACKOFF_S", 0)
    monkeypatch.setattr(download, "RETRIES", 2)
    url = refused_url("/VisA_20220922.tar")
    assert prepare_visa.main(["--url", url, "--out", str(tmp_path / "visa"),
                              "--download_dir", str(tmp_path / "dl")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: cannot reach {url}")
    assert "--archive FILE" in err


def test_ctrl_c_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(acquire, "obtain", interrupted)
    assert prepare_visa.main(["--out", str(tmp_path / "visa")]) == 130
    assert capsys.readouterr().err == "interrupted; run the same command again to continue\n"


def test_out_holding_the_download_folder_is_refused_before_downloading(served, tmp_path, capsys):
    data, sha = served
    with Loopback({"/VisA_20220922.tar": data}) as server:
        code = prepare_visa.main(["--url", server.url("/VisA_20220922.tar"), "--sha256", sha,
                                  "--out", str(tmp_path / "data"),
                                  "--download_dir", str(tmp_path / "data" / "downloads")])
    assert code == 1 and server.requests == []
    assert "overlap" in capsys.readouterr().err and not (tmp_path / "data").exists()


def test_the_right_hash_in_upper_case_keeps_the_verified_download(served, tmp_path):
    data, sha = served
    with Loopback({"/VisA_20220922.tar": data}) as server:
        assert prepare_from(server, sha, tmp_path) == 0
        archive = tmp_path / "data/downloads/VisA_20220922.tar"
        import shutil
        shutil.rmtree(tmp_path / "data/downloads/VisA")  # the archive must be checked again
        assert prepare_from(server, sha.upper(), tmp_path) == 0
    assert len(server.requests) == 1 and archive.read_bytes() == data  # kept, not fetched again


def test_a_malformed_sha256_is_refused_before_anything(tmp_path, capsys):
    for bad in ("abc", "g" * 64, "0" * 63):
        with pytest.raises(SystemExit) as stop:
            prepare_visa.main(["--url", refused_url(), "--sha256", bad,
                               "--out", str(tmp_path / "data" / "visa"),
                               "--download_dir", str(tmp_path / "data" / "downloads")])
        assert stop.value.code == 2
        assert f"argument --sha256: invalid SHA-256 (64 hexadecimal digits) value: '{bad}'" in \
            capsys.readouterr().err
    assert not (tmp_path / "data").exists()


def test_url_beside_archive_is_refused_as_ignored(served, tmp_path, capsys):
    data, sha = served
    archive = tmp_path / "mine.tar"
    archive.write_bytes(data)
    code = prepare_visa.main(["--archive", str(archive), "--url", "http://127.0.0.1:9/x.tar",
                              "--out", str(tmp_path / "visa"), "--download_dir", str(tmp_path / "dl")])
    err = capsys.readouterr().err
    assert code == 1 and "--url and --archive both given" in err and "give only one" in err
    assert not (tmp_path / "visa").exists() and not (tmp_path / "dl").exists()
