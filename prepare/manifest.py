"""Check an extracted tree file by file against a manifest (path, bytes, sha256), for archives
whose bytes are not stable (GitHub's generated ZIPs) but whose files are."""
import csv
import hashlib
import os
from pathlib import Path

from prepare.common import PrepareError, inside_root, visible_files

COLUMNS = ["path", "bytes", "sha256"]


def read_manifest(path):
    """{relative path: (bytes, sha256)}; every row's path must stay inside the tree."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames != COLUMNS:
                raise PrepareError(f"manifest '{path}' has columns {reader.fieldnames}; expected "
                                   f"{COLUMNS}")
            entries = {}
            for row in reader:
                where = f"manifest '{path}', line {reader.line_num}"
                inside_root(".", row["path"] or "", where)
                if not row["path"] or not (row["bytes"] or "").isdigit() or \
                        len(row["sha256"] or "") != 64:
                    raise PrepareError(f"{where}: expected path,bytes,sha256")
                entries[row["path"]] = (int(row["bytes"]), row["sha256"].lower())
            return entries
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise PrepareError(f"cannot read manifest '{path}': {e}") from None


def sha256_file(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def check_against_manifest(root, manifest_path, watched):
    """Every manifest file present with its size and hash, and no extra file in the watched
    top-level folders (the ones preparation reads); the first difference is named."""
    root, entries = Path(root), read_manifest(manifest_path)
    for rel, (size, sha256) in sorted(entries.items()):
        path = root / rel
        if not path.is_file():
            raise PrepareError(f"'{rel}' listed in '{manifest_path}' is missing from the "
                               f"extracted archive")
        if os.path.getsize(path) != size or sha256_file(path) != sha256:
            raise PrepareError(f"'{rel}' differs from '{manifest_path}' ({os.path.getsize(path)} "
                               f"bytes, SHA-256 {sha256_file(path)}; expected {size} bytes, "
                               f"SHA-256 {sha256}): not the archive the manifest describes")
    extra = [rel for folder in watched if (root / folder).is_dir()
             for rel in (f"{folder}/{r}" for r in visible_files(root / folder))
             if rel not in entries]
    if extra:
        raise PrepareError(f"'{extra[0]}' is in the extracted archive but not in "
                           f"'{manifest_path}' ({len(extra)} such file(s)): not the archive the "
                           f"manifest describes")
