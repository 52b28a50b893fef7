"""The memory-mapped image cache of config cache_mmap: one .npy file per split of a class,
named by what it holds, written once under a temp name and renamed into place, then only
read. Runs that share the folder share a cache only when it holds the same images at the
same size, and never write into a file another run may be reading."""
import errno
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from fingerprint import content_hash
from files import FILE_MODE, atomic_write, bounded_name

SETTING = "cache_mmap"
KEY_LENGTH = 16  # hex digits of the key in the file name
# filesystems on which posix_fallocate cannot reserve space; free space is compared instead
NO_FALLOCATE = (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS)


def cache_file(cache_dir, class_name, split, paths, size):
    """cache_dir/<class>_<split>_<size>px_<key>.npy, the key a hash of each image's path and
    content (SHA-256, hashed once per process and shared with the checkpoint's data
    fingerprint): other data, an edited file (also one copied with its old time, same size)
    or another size get another file."""
    digest = hashlib.sha256(f"{split}\n{size}\n".encode())
    for path in paths:
        digest.update(f"{os.path.abspath(path)}\0{content_hash(path)}\n".encode())
    name = bounded_name(f"{class_name}_{split}_{size}px_{digest.hexdigest()[:KEY_LENGTH]}", ".npy")
    return os.path.join(cache_dir, name)


def errors_file(path):
    """The list of undecodable images beside a cache; written before the cache is renamed
    into place, so a cache file with it is complete."""
    return path + ".errors.json"


def open_complete(path, shape):
    """(uint8 tensor, {index: error}) of a finished cache of this shape, or None. Opened
    copy-on-write: nothing this run does reaches the file."""
    if not (os.path.isfile(path) and os.path.isfile(errors_file(path))):
        return None
    try:
        errors = json.loads(Path(errors_file(path)).read_text())
        array = np.load(path, mmap_mode="c")
    except (OSError, ValueError):
        return None  # damaged: built anew under a temp name and renamed over it
    if array.shape != shape or array.dtype != np.uint8:
        return None
    return torch.from_numpy(array), {int(i): message for i, message in errors.items()}


def _space_error(path, nbytes, error):
    size = f"{nbytes / 1e9:.1f} GB" if nbytes >= 1e9 else f"{nbytes / 1e6:.1f} MB"
    return OSError(f"cannot write the image cache '{path}' ({size}): "
                   f"{error.strerror or error}. Free disk space, choose another {SETTING} "
                   f"folder, or set {SETTING}='' to keep the images in memory")


def reserve(path, nbytes):
    """Allocate the file's blocks now. Without this, a full disk shows only when a write into
    the memory map finds no block, and that ends the process with SIGBUS, not an error."""
    try:
        with open(path, "r+b") as f:
            os.posix_fallocate(f.fileno(), 0, os.path.getsize(path))
        return
    except AttributeError:  # no posix_fallocate on this platform
        pass
    except OSError as e:
        if e.errno not in NO_FALLOCATE:
            raise
    if shutil.disk_usage(os.path.dirname(path) or ".").free < nbytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def new_cache(path, shape):
    """(temp file beside path, writable uint8 array of `shape` in it), its space reserved."""
    nbytes = int(np.prod(shape))
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".",
                                   prefix=f".{os.path.basename(path)}.", suffix=".tmp")
        os.close(fd)
    except OSError as e:
        raise _space_error(path, nbytes, e) from None
    try:
        array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        reserve(tmp, nbytes)
    except OSError as e:
        os.remove(tmp)
        raise _space_error(path, nbytes, e) from None
    return tmp, array


def publish(tmp, path, array, errors):
    """Flush the filled temp cache and rename it to its final name, its error list first.
    Returns the published cache opened copy-on-write."""
    array.flush()
    os.chmod(tmp, FILE_MODE)  # mkstemp makes it owner-only; runs of other users may share it
    atomic_write(errors_file(path), lambda t: Path(t).write_text(
        json.dumps({str(i): message for i, message in errors.items()})), setting=SETTING)
    os.replace(tmp, path)
    return torch.from_numpy(np.load(path, mmap_mode="c"))
