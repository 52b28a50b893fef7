"""The data fingerprint a checkpoint keeps of its class: the counts of its images and masks
and the SHA-256 of every file, so that a run resumed or read back later sees the very bytes
it was trained and scored on (an image replaced at the same size included), or is refused
naming the file that changed. Each file is hashed once per process.
"""
import hashlib
import os
import warnings

DATA_COUNTS = ("train_images", "test_normal", "test_anomalous", "masks")
DATA_FORMAT = "sha256"  # data["content"]: the digest covers each file's bytes, not its size only
_content_hashes = {}  # (path, size, mtime, ctime, inode) -> sha256: each file hashed once a process


def content_hash(path):
    """SHA-256 of a file's bytes, computed once per process while the file keeps its size,
    times and inode (every seed of a class and every check reuse it). The change time is in
    the key: a write resets it even when the modification time is put back."""
    info = os.stat(path)
    key = (os.path.realpath(path), info.st_size, info.st_mtime_ns, info.st_ctime_ns,
           info.st_ino)
    if key not in _content_hashes:
        with open(path, "rb") as f:
            _content_hashes[key] = hashlib.file_digest(f, "sha256").hexdigest()
    return _content_hashes[key]


def _data_files(files):
    return [*files.train, *files.test, *(m for m in files.masks if m)]


def data_fingerprint(files):
    """Counts, each file's content hash by relative path, and one digest over them of a class's
    image and mask files (layout.ClassFiles): a resumed or read-back run must see the very bytes
    its checkpoint was trained and scored on (an image replaced at the same size included)."""
    hashes = {os.path.relpath(p, files.class_dir): content_hash(p) for p in _data_files(files)}
    digest = hashlib.sha1("".join(f"{rel}\0{h}\n" for rel, h in hashes.items()).encode())
    return {"train_images": len(files.train), "test_normal": int((files.labels == 0).sum()),
            "test_anomalous": int((files.labels == 1).sum()),
            "masks": sum(m is not None for m in files.masks), "digest": digest.hexdigest(),
            "content": DATA_FORMAT, "files": {rel: h[:16] for rel, h in hashes.items()}}


def legacy_digest(files):
    """The digest of checkpoints written before contents were hashed: paths and sizes only."""
    digest = hashlib.sha1()
    for path in _data_files(files):
        digest.update(f"{os.path.relpath(path, files.class_dir)}\0{os.path.getsize(path)}\n"
                      .encode())
    return digest.hexdigest()


def _counts_text(data):
    return ", ".join(f"{k.replace('_', ' ')} {data.get(k, '?')}" for k in DATA_COUNTS)


def _what_changed(old, data):
    """The first file whose content, presence or name differs, in words."""
    before, now = old.get("files", {}), data["files"]
    for rel in sorted(set(before) | set(now)):
        if rel not in now:
            return f"{rel} is gone"
        if rel not in before:
            return f"{rel} is new"
        if before[rel] != now[rel]:
            return f"{rel} has other content"
    return "the same files"  # not reached: equal hashes and names give an equal digest


def check_same_data(state, data, class_name, path, files=None):
    """Refuse to resume (or read back) a checkpoint whose class data have changed since. A
    checkpoint from before content hashes is checked by names and sizes (files: the ClassFiles),
    with a warning that contents could not be compared."""
    old = state.get("data")
    if old is None or old == data:
        return
    same_counts = all(old.get(k) == data[k] for k in DATA_COUNTS)
    if old.get("content") is None and same_counts and files is not None \
            and old.get("digest") == legacy_digest(files):
        warnings.warn(f"checkpoint '{path}' was written before image contents were hashed: "
                      f"the data of '{class_name}' have the same names and sizes, but an image "
                      f"replaced at the same size cannot be told apart. Retrain to be sure")
        return
    if not same_counts:
        what = f"then {_counts_text(old)}; now {_counts_text(data)}"
    elif old.get("content") is None:
        what = "the same counts, but files were added, removed, renamed or changed"
    else:
        what = (f"the same counts, but files were added, removed, renamed or changed: "
                f"{_what_changed(old, data)}")
    raise ValueError(f"the data of '{class_name}' changed since checkpoint '{path}' was written "
                     f"({what}); its model and AUROCs do not describe these images. Restore the "
                     f"data, or move the checkpoint away (or choose another checkpoint_dir) to retrain")
