"""The data fingerprint of a checkpoint sees the bytes of every image and mask: an image
replaced at the same size is a change, named; each file is hashed once per process."""
import hashlib

import pytest

import fingerprint
from fingerprint import check_same_data, data_fingerprint, legacy_digest
from layout import list_class
from prepare.demo import write_demo_class


@pytest.fixture
def files(tmp_path):
    write_demo_class(tmp_path / "data" / "toy", seed=0, size=32, n_train=4, n_test_good=2,
                     n_test_bad=2)
    return list_class(str(tmp_path / "data"), "toy")


def same_size_other_bytes(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def test_an_image_replaced_at_the_same_size_is_refused_and_named(files, tmp_path):
    state = {"data": data_fingerprint(files)}
    check_same_data(state, data_fingerprint(files), "toy", "ckpt.pt", files)  # unchanged: fine
    image = tmp_path / "data" / "toy" / "test" / "good" / "000.JPG"
    size = image.stat().st_size
    same_size_other_bytes(image)
    assert image.stat().st_size == size
    with pytest.raises(ValueError, match=r"the data of 'toy' changed since checkpoint 'ckpt.pt'.*"
                                         r"test/good/000.JPG has other content"):
        check_same_data(state, data_fingerprint(files), "toy", "ckpt.pt", files)


def test_a_mask_changed_in_place_is_seen(files, tmp_path):
    state = {"data": data_fingerprint(files)}
    mask = next(m for m in files.masks if m)
    same_size_other_bytes(__import__("pathlib").Path(mask))
    with pytest.raises(ValueError, match="has other content"):
        check_same_data(state, data_fingerprint(files), "toy", "ckpt.pt", files)


def test_the_digest_is_the_sha256_of_each_file(files):
    data = data_fingerprint(files)
    first = files.train[0]
    rel = __import__("os").path.relpath(first, files.class_dir)
    with open(first, "rb") as f:
        assert data["files"][rel] == hashlib.sha256(f.read()).hexdigest()[:16]


def test_each_file_is_hashed_once_per_process(files, monkeypatch):
    # The count is the behaviour: hashing VisA's 10,821 files takes a minute, and a second
    # seed or check that read them again would change nothing else a test can see.
    calls = []
    real = hashlib.file_digest
    monkeypatch.setattr(fingerprint, "_content_hashes", {})
    monkeypatch.setattr(hashlib, "file_digest", lambda f, name: calls.append(f.name) or real(f, name))
    n_files = len(files.train) + len(files.test) + sum(m is not None for m in files.masks)
    data_fingerprint(files)
    data_fingerprint(files)  # a second seed, a second check: no file read again
    assert len(calls) == n_files


def test_a_checkpoint_from_before_content_hashes_is_checked_by_size_with_a_warning(files,
                                                                                    tmp_path):
    data = data_fingerprint(files)
    old = {k: data[k] for k in fingerprint.DATA_COUNTS}
    state = {"data": dict(old, digest=legacy_digest(files))}
    with pytest.warns(UserWarning, match="written before image contents were hashed"):
        check_same_data(state, data, "toy", "ckpt.pt", files)
    (tmp_path / "data" / "toy" / "train" / "good" / "000.JPG").write_bytes(b"x" * 10)
    with pytest.raises(ValueError, match="same counts, but files were added, removed, renamed"):
        check_same_data(state, data_fingerprint(files), "toy", "ckpt.pt", files)
