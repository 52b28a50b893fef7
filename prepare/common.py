"""Machinery shared by the dataset preparation scripts (prepare_visa.py, prepare_mtd.py,
prepare_mvtec.py).

A class is built in CLASS.partial and renamed when complete. Its marker file
(.prepared.json) records the settings it was built with and the relative path,
size and BLAKE2b hash of every file it wrote, so a re-run detects a missing,
damaged or replaced file (same size included) and rebuilds that class. A file
the marker does not list is someone else's (a checkpoint, notes): it is named
and kept, never deleted, also across a rebuild.

The raw download is only ever read: images are copied by default. With
link='hardlink' they share bytes with the download; then nothing here writes
to, chmods or truncates them either (a chmod on a hard link would change the
raw file's mode); they are only read and, on a rebuild, unlinked.
"""
import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, UnidentifiedImageError

MARKER = ".prepared.json"
LINK_MODES = ("copy", "hardlink")
HASH_CHUNK = 1 << 20


class PrepareError(Exception):
    """A problem with the download, the split or the output folder; the message says what to do."""


def file_digest(path):
    """BLAKE2b hex digest of a file's content (catches replacements of the same size)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, lambda: hashlib.blake2b(digest_size=20)).hexdigest()


def text_digest(text):
    """Short hash of a text, e.g. a class's split rows: a changed split means a rebuild."""
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def visible_files(folder):
    """Relative posix paths of the files under folder; hidden ones (.DS_Store, the marker) are
    left out, as the data loader ignores them too."""
    folder = Path(folder)
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        found += [Path(dirpath, n).relative_to(folder).as_posix() for n in filenames
                  if not n.startswith(".")]
    return sorted(found)


def all_files(folder):
    """Relative posix paths of every file under folder, hidden ones included."""
    folder = Path(folder)
    return sorted(Path(dirpath, n).relative_to(folder).as_posix()
                  for dirpath, _, filenames in os.walk(folder) for n in filenames)


def replace_tree(old, new, ours):
    """Put new in old's place, moving every file of old not in ours (relative paths we wrote)
    to the same place in new first (renamed NAME.kept where new has a file of that name), so
    that nothing another tool or the user wrote is lost. Returns the kept files' new names."""
    old, new = Path(old), Path(new)
    kept = []
    for rel in all_files(old):
        if rel in ours:
            continue
        dst = new / rel
        if dst.exists():
            dst = dst.with_name(dst.name + ".kept")
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(old / rel, dst)
        kept.append(dst.relative_to(new).as_posix())
    shutil.rmtree(old)  # now only what we wrote
    os.replace(new, old)
    return kept


def inside_root(root, rel, where):
    """root/rel for a path read from a file (split row, list, manifest), refused with where
    named when it is absolute or climbs out of root: such a file is never read or copied."""
    text = rel.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":") or \
            ".." in PurePosixPath(text).parts:
        raise PrepareError(f"{where}: the path '{rel}' leaves the dataset folder (absolute or "
                           f"'..'); only paths inside it are read. Fix or remove that row")
    return Path(root) / text


def inventory(folder):
    """{relative path: {size, blake2b}} of every visible file under folder."""
    return {rel: {"size": os.path.getsize(Path(folder, rel)),
                  "blake2b": file_digest(Path(folder, rel))}
            for rel in visible_files(folder)}


def write_marker(folder, settings):
    """Record the settings a class was built with and the hash of each of its files."""
    record = {"settings": settings, "files": inventory(folder)}
    (Path(folder) / MARKER).write_text(json.dumps(record, indent=1, sort_keys=True))


def read_marker(folder):
    """The marker's record, or None when it is missing or unreadable (the class is then redone)."""
    try:
        record = json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and "files" in record else None


def damage(folder, settings):
    """Why a finished class no longer matches its marker, or None when every file is intact."""
    record = read_marker(folder)
    if record is None:
        return "no readable marker"
    if record.get("settings") != settings:
        return "built with other settings or another split"
    recorded, present = record["files"], set(visible_files(folder))
    missing = sorted(set(recorded) - present)
    if missing:
        return f"missing {missing[0]}"
    for rel, meta in sorted(recorded.items()):  # sizes first: cheap, catches most damage
        if os.path.getsize(Path(folder, rel)) != meta["size"]:
            return f"{rel} changed size"
    for rel, meta in sorted(recorded.items()):
        if file_digest(Path(folder, rel)) != meta["blake2b"]:
            return f"{rel} changed content"
    return None


def foreign_files(folder):
    """Files in a prepared class that its marker does not list: not ours, so never touched."""
    record = read_marker(folder) or {"files": {}}
    return [rel for rel in all_files(folder) if rel not in record["files"] and rel != MARKER]


def note_foreign(name, files, script):
    if files:
        print(f"note: {name}: {len(files)} file(s) not written by {script} found and left in "
              f"place: {', '.join(files[:5])}{' ...' if len(files) > 5 else ''}")


def warn_if_download_changed(name, old, new):
    """A rebuild from the download that still differs from the recorded hashes means the download
    itself changed (with hard links, an edit of a prepared image is an edit of the download)."""
    if old is None or old.get("settings") != new["settings"]:
        return
    changed = sorted(rel for rel, meta in new["files"].items()
                     if rel in old["files"] and old["files"][rel]["blake2b"] != meta["blake2b"])
    if changed:
        print(f"warning: {name}: {len(changed)} file(s) rebuilt from the download differ from the "
              f"previous preparation (e.g. {changed[0]}): the download itself has changed; "
              f"re-extract it unless that was intended")


def place_file(src, dst, link):
    """Copy (default: the download is never shared) or hard-link an image, bytes unchanged."""
    try:
        if link == "hardlink":
            try:
                os.link(src, dst)
                return
            except OSError:
                pass  # another filesystem, or links not allowed: a copy is always safe
        shutil.copyfile(src, dst)
    except OSError as e:
        raise PrepareError(f"cannot read '{src}': {e.strerror or e}") from None


def binarise_mask(src, dst):
    """Any non-zero mask value (VisA: defect-class ids) is anomalous -> 255, else 0."""
    src = Path(src)
    if src.is_file() and src.stat().st_size == 0:
        raise PrepareError(f"mask file '{src}' is empty (0 bytes); re-extract the download")
    try:
        with Image.open(src) as m:
            arr = np.asarray(m.convert("L")) > 0
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as e:
        raise PrepareError(f"cannot read mask file '{src}': {e}") from None
    Image.fromarray((arr * 255).astype(np.uint8), mode="L").save(dst)


def check_out_writable(out):
    """Create --out if needed and prove it takes a file, before any work is done."""
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as e:
        raise PrepareError(f"--out '{out}' is not a writable folder: {e.strerror or e}") from None
    return out


def build_class(out, name, settings, build, script):
    """Verify-and-skip a finished class, or build it aside in NAME.partial and rename it.

    build(work_dir) writes the class's files; returns 'skipped' or 'written'."""
    final, work = Path(out) / name, Path(out) / f"{name}.partial"
    if final.exists() and not (final / MARKER).is_file():
        raise PrepareError(f"'{final}' exists but was not written by {script}; move it away "
                           f"or choose another --out")
    if final.exists():
        note_foreign(name, foreign_files(final), script)
        reason = damage(final, settings)
        if reason is None:
            if work.exists():
                shutil.rmtree(work)  # a leftover of an interrupted re-run
            return "skipped"
        print(f"{name}: rebuilding ({reason})")
    if work.exists():
        shutil.rmtree(work)  # left by an interrupted run
    work.mkdir(parents=True)
    try:
        build(work)
        write_marker(work, settings)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)  # half a class is of no use to anyone
        raise
    warn_if_download_changed(name, read_marker(final) if final.exists() else None,
                             read_marker(work))
    if final.exists():  # ours but damaged or stale; unlinking never touches the raw files
        old = read_marker(final) or {"files": {}}
        kept = replace_tree(final, work, set(old["files"]) | {MARKER})
        renamed = [k for k in kept if k.endswith(".kept")]
        if renamed:
            print(f"note: {name}: the rebuild writes files of the same name as yours; yours are "
                  f"kept as {', '.join(renamed)}")
    else:
        os.replace(work, final)
    return "written"


def add_link_option(parser):
    parser.add_argument("--link", choices=LINK_MODES, default="copy",
                        help="copy the images (default; the download is never shared) or hard-link "
                             "them (no extra space; the prepared images then ARE the raw files)")


def check_apart(out, source, source_option):
    """--out and the source must not contain each other: a re-run would read its own output as
    the download, or write into the download."""
    out_r, src_r = Path(out).resolve(), Path(source).resolve()
    if out_r == src_r or src_r in out_r.parents or out_r in src_r.parents:
        raise PrepareError(f"--out '{out}' and {source_option} '{source}' overlap (one is, or is "
                           f"inside, the other); choose an --out outside the source folder")


def read_lines(path, what):
    """Non-blank, stripped lines of a text file; a UTF-8 byte-order mark and Windows line endings
    (as editors and spreadsheets write them) are accepted."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise PrepareError(f"cannot read {what} '{path}': {e}") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


def run_script(prepare_call):
    """Call prepare_call(); an expected failure is one 'error: ...' line and exit code 1, Ctrl-C
    one line and exit code 130 (what was half-built is removed; a .part download is kept)."""
    try:
        prepare_call()
    except PrepareError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except OSError as e:  # a folder option naming a file, a full disk, no permission
        print(f"error: {e}; check the folder options (--out, --download_dir)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted; run the same command again to continue", file=sys.stderr)
        return 130
    return 0
