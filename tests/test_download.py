"""prepare/download.py against a loopback server: verified, resumed, restarted, refused."""
import hashlib
import os
from collections import namedtuple

import pytest

from loopback import Loopback, refused_url
from prepare import download
from prepare.common import PrepareError
from prepare.download import check_free_space, fetch

DATA = os.urandom(3 << 20)  # several chunks, so a cut lands mid-stream
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture(autouse=True)
def no_waiting(monkeypatch):
    monkeypatch.setattr(download, "BACKOFF_S", 0)
    monkeypatch.setattr(download, "TIMEOUT_S", 5)


def test_download_is_verified_and_renamed(tmp_path):
    with Loopback({"/a.tar": DATA}) as server:
        path = fetch(server.url("/a.tar"), tmp_path / "a.tar", SHA, len(DATA))
    assert path.read_bytes() == DATA and not (tmp_path / "a.tar.part").exists()


def test_resumes_with_range_after_the_server_hangs_up(tmp_path):
    with Loopback({"/a.tar": DATA}, drop_after=1_000_000) as server:
        fetch(server.url("/a.tar"), tmp_path / "a.tar", SHA)
    assert (tmp_path / "a.tar").read_bytes() == DATA
    assert [r for _, r in server.requests] == [None, "bytes=1000000-"]


def test_resumes_an_earlier_part_file(tmp_path):
    (tmp_path / "a.tar.part").write_bytes(DATA[:12345])
    with Loopback({"/a.tar": DATA}) as server:
        fetch(server.url("/a.tar"), tmp_path / "a.tar", SHA)
    assert (tmp_path / "a.tar").read_bytes() == DATA
    assert server.requests == [("/a.tar", "bytes=12345-")]


def test_starts_over_when_the_server_ignores_range(tmp_path):
    (tmp_path / "a.tar.part").write_bytes(b"junk that is not a prefix")
    with Loopback({"/a.tar": DATA}, honour_range=False) as server:
        fetch(server.url("/a.tar"), tmp_path / "a.tar", SHA)
    assert (tmp_path / "a.tar").read_bytes() == DATA


def test_a_part_longer_than_the_file_starts_over(tmp_path):
    (tmp_path / "a.tar.part").write_bytes(DATA + b"more")
    with Loopback({"/a.tar": DATA}) as server:
        fetch(server.url("/a.tar"), tmp_path / "a.tar", SHA)
    assert (tmp_path / "a.tar").read_bytes() == DATA


def test_wrong_hash_keeps_nothing_and_names_both_hashes(tmp_path):
    wrong = "0" * 64
    with Loopback({"/a.tar": DATA}) as server:
        with pytest.raises(PrepareError) as e:
            fetch(server.url("/a.tar"), tmp_path / "a.tar", wrong)
    assert f"SHA-256 {SHA}, {len(DATA)} bytes; expected SHA-256 {wrong}" in str(e.value)
    assert list(tmp_path.iterdir()) == []


def test_wrong_size_is_refused(tmp_path):
    with Loopback({"/a.tar": DATA}) as server:
        with pytest.raises(PrepareError, match=r"the server sent more than 5 bytes \(0.00 GiB\) "
                                               r"for a.tar, more than the archive can be"):
            fetch(server.url("/a.tar"), tmp_path / "a.tar", SHA, size=5)
    assert list(tmp_path.iterdir()) == []


def test_a_download_of_another_size_is_refused_without_a_hash(tmp_path):
    with Loopback({"/a.tar": DATA}) as server:
        with pytest.raises(PrepareError, match=f"does not match: SHA-256 {SHA}, {len(DATA)} "
                                               f"bytes; expected SHA-256 \\(any\\), "
                                               f"{len(DATA) + 1} bytes"):
            fetch(server.url("/a.tar"), tmp_path / "a.tar", None, size=len(DATA) + 1)
    assert list(tmp_path.iterdir()) == []


def test_offline_is_one_line_naming_the_url_and_the_archive_way(tmp_path, monkeypatch):
    monkeypatch.setattr(download, "RETRIES", 2)
    url = refused_url("/VisA_20220922.tar")
    with pytest.raises(PrepareError) as e:
        fetch(url, tmp_path / "VisA_20220922.tar", SHA)
    message = str(e.value)
    assert message.startswith(f"cannot reach {url} (") and "after 2 attempts" in message
    assert "pass --archive FILE" in message and "\n" not in message


def test_http_error_names_the_status(tmp_path):
    with Loopback({}) as server:
        with pytest.raises(PrepareError, match="HTTP 404"):
            fetch(server.url("/missing.tar"), tmp_path / "m.tar", SHA)


@pytest.mark.parametrize("url", ["file:///etc/hostname", "ftp://example.org/a.tar", "a.tar"])
def test_only_http_urls(tmp_path, url):
    with pytest.raises(PrepareError, match="only http and https"):
        fetch(url, tmp_path / "a.tar", SHA)


def test_free_space_is_checked_with_figures(tmp_path, monkeypatch):
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: usage(0, 0, 2 << 30))
    with pytest.raises(PrepareError) as e:
        check_free_space(tmp_path / "new", [("archive", 2 << 30), ("extraction", 1 << 30)])
    assert "archive 2.00 GiB + extraction 1.00 GiB = 3.00 GiB needed, 2.00 GiB free" in str(e.value)
    assert not (tmp_path / "new").exists()


def test_a_redirect_to_another_scheme_is_refused_at_once(tmp_path):
    with Loopback({}, redirects={"/a.tar": "ftp://127.0.0.1/a.tar"}) as server:
        with pytest.raises(PrepareError) as caught:
            fetch(server.url("/a.tar"), tmp_path / "a.tar", SHA)
    message = str(caught.value)
    assert "redirects to 'ftp://127.0.0.1/a.tar', which is not an http(s) URL" in message
    assert "\n" not in message
    assert len(server.requests) == 1  # not retried: asked once, nothing fetched from ftp
    assert not (tmp_path / "a.tar").exists() and not (tmp_path / "a.tar.part").exists()


def test_a_redirect_to_http_is_followed_at_every_hop(tmp_path):
    with Loopback({"/b.tar": DATA}) as target:
        hops = {"/a.tar": "/hop", "/hop": target.url("/b.tar")}
        with Loopback({}, redirects=hops) as server:
            fetch(server.url("/a.tar"), tmp_path / "a.tar", SHA)
    assert (tmp_path / "a.tar").read_bytes() == DATA
    with Loopback({}, redirects={"/a.tar": "/hop", "/hop": "file:///etc/hostname"}) as server:
        with pytest.raises(PrepareError, match="redirects to 'file:///etc/hostname'"):
            fetch(server.url("/a.tar"), tmp_path / "c.tar", SHA)


def test_a_redirect_loop_is_one_line(tmp_path):
    with Loopback({}, redirects={"/a.tar": "/b.tar", "/b.tar": "/a.tar"}) as server:
        with pytest.raises(PrepareError) as caught:
            fetch(server.url("/a.tar"), tmp_path / "a.tar", SHA)
    assert "its redirects do not end" in str(caught.value) and "\n" not in str(caught.value)


def test_a_download_larger_than_the_cap_stops_and_leaves_no_part(tmp_path):
    with Loopback({"/a.tar": DATA}) as server:
        with pytest.raises(PrepareError, match=r"the server sent more than 1,048,576 bytes "
                                               r"\(0.00 GiB\) for a.tar, more than the archive "
                                               r"can be; stopped"):
            fetch(server.url("/a.tar"), tmp_path / "a.tar", None, max_bytes=1 << 20)
    assert len(server.requests) == 1 and list(tmp_path.iterdir()) == []


def test_a_kept_part_file_is_credited_and_named_in_the_space_check(tmp_path, monkeypatch):
    import dataclasses
    from prepare import acquire
    from prepare.archives import MTD
    archive = dataclasses.replace(MTD, unpacked_bytes=3 << 30)
    part = tmp_path / (MTD.filename + ".part")
    part.write_bytes(b"")
    os.truncate(part, 2 << 30)  # sparse: 2 GiB of the 3 GiB archive arrived
    Usage = namedtuple("Usage", "total used free")
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: Usage(0, 0, 4 << 30))
    acquire.check_space(archive, tmp_path, tmp_path / "out", True, 0)  # 1 + 3 GiB: it fits
    monkeypatch.setattr(download.shutil, "disk_usage", lambda p: Usage(0, 0, 1 << 30))
    with pytest.raises(PrepareError) as caught:
        acquire.check_space(archive, tmp_path, tmp_path / "out", True, 0)
    message = str(caught.value)
    assert "rest of the archive 1.00 GiB + extraction 3.00 GiB = 4.00 GiB needed, 1.00 GiB " \
           "free" in message
    assert f"the partial download '{part}', 2.00 GiB, is kept there and resumed; delete it" \
        in message
