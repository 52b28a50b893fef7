"""cache_mmap: a cache file is named by what it holds, never written while another run may
read it, reused when complete, and a full disk is an ordinary error naming it."""
import errno
import os

import numpy as np
import pytest
import torch
from PIL import Image

import main
from configurator import resolve_config
from conftest import tiny_args
from data import BadImageError, build_image_set
from image_cache import cache_file
from layout import list_class
from train import load_class_data


def current_umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def config(tmp_path, **extra):
    return resolve_config(tiny_args(tmp_path, **{"cache_mmap": str(tmp_path / "mmap"), **extra}))


def toy_files(tmp_path):
    return list_class(str(tmp_path / "data"), "toy")


def cache_files(tmp_path):
    return sorted(os.listdir(tmp_path / "mmap"))


def test_runs_of_two_sizes_sharing_the_folder_keep_their_own_images(tmp_path, toy_class):
    small, _ = load_class_data(config(tmp_path), toy_files(tmp_path))
    expected = small.images.clone()
    large, _ = load_class_data(config(tmp_path, img_size=128), toy_files(tmp_path))
    assert large.images.shape[-1] == 128
    assert torch.equal(small.images, expected)  # the other run did not write into this one
    caches = [f for f in cache_files(tmp_path) if f.endswith(".npy")]
    assert len(caches) == 4
    assert os.stat(tmp_path / "mmap" / caches[0]).st_mode & 0o777 == 0o666 & ~current_umask()


def test_a_complete_cache_is_reused_without_being_written(tmp_path, toy_class):
    first, _ = load_class_data(config(tmp_path), toy_files(tmp_path))
    files = {f: os.stat(tmp_path / "mmap" / f).st_mtime_ns for f in cache_files(tmp_path)}
    first.images[0].zero_()  # copy-on-write: reaches neither the file nor a later run
    again, _ = load_class_data(config(tmp_path), toy_files(tmp_path))
    plain, _ = load_class_data(config(tmp_path, cache_mmap=""), toy_files(tmp_path))
    assert torch.equal(again.images, plain.images)
    assert {f: os.stat(tmp_path / "mmap" / f).st_mtime_ns for f in cache_files(tmp_path)} == files


def test_the_name_follows_the_data(tmp_path, toy_class):
    paths = sorted(str(p) for p in (toy_class / "train" / "good").iterdir())
    name = cache_file("c", "toy", "train", paths, 64)
    assert os.path.basename(name).startswith("toy_train_64px_")
    assert cache_file("c", "toy", "train", paths, 64) == name
    assert cache_file("c", "toy", "test", paths, 64) != name
    assert cache_file("c", "toy", "train", paths, 96) != name
    assert cache_file("c", "toy", "train", paths[1:], 64) != name
    Image.new("RGB", (64, 64)).save(paths[0], format="JPEG")
    assert cache_file("c", "toy", "train", paths, 64) != name


def test_a_full_disk_is_an_error_naming_the_file_and_the_setting(tmp_path, toy_class,
                                                                 monkeypatch, capsys):
    def no_space(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(os, "posix_fallocate", no_space)
    rows = main.train_all(tiny_args(tmp_path, cache_mmap=str(tmp_path / "mmap")))
    assert rows[0]["status"].startswith(
        f"failed: cannot write the image cache '{tmp_path / 'mmap' / 'toy_train_64px_'}")
    err = capsys.readouterr().err
    assert "MB): No space left on device. Free disk space, choose another cache_mmap" in err
    assert cache_files(tmp_path) == []  # no temp file left behind


def test_a_reused_cache_keeps_its_bad_files(tmp_path):
    paths = []
    for i in range(3):
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(tmp_path / f"{i}.png")
        paths.append(str(tmp_path / f"{i}.png"))
    (tmp_path / "1.png").write_bytes(b"not an image")
    target = str(tmp_path / "c.npy")
    with pytest.warns(UserWarning, match="1.png"):
        built = build_image_set(paths, [0] * 3, [None] * 3, 8, skip_bad=True, mmap_file=target)
    with pytest.warns(UserWarning, match="1.png"):
        reused = build_image_set(paths, [0] * 3, [None] * 3, 8, skip_bad=True, mmap_file=target)
    assert reused.skipped == built.skipped == [paths[1]]
    assert torch.equal(reused.images, built.images) and len(reused) == 2
    with pytest.raises(BadImageError, match="1.png"):
        build_image_set(paths, [0] * 3, [None] * 3, 8, mmap_file=target)


def test_an_image_replaced_with_its_old_size_and_time_gets_another_cache(tmp_path):
    Image.new("RGB", (16, 16), (10, 20, 30)).save(tmp_path / "a.png")
    path = str(tmp_path / "a.png")
    name = cache_file("c", "toy", "train", [path], 64)
    info = os.stat(path)
    data = bytearray((tmp_path / "a.png").read_bytes())
    data[-20] ^= 0xFF  # same size, other bytes
    (tmp_path / "a.png").write_bytes(bytes(data))
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))  # as cp -p or rsync -t leave it
    assert os.stat(path).st_size == info.st_size
    assert cache_file("c", "toy", "train", [path], 64) != name
