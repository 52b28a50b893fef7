"""Output files written whole: through a temp file and a rename (a reader never sees half a
file, a failed write leaves the previous one), in folders checked up front, under names of
bounded length, CSV cells spreadsheet-safe."""
import csv
import hashlib
import os
import tempfile
from pathlib import Path

from spreadsheet import spreadsheet_safe


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file under this process's umask


def atomic_write(path, write_fn, setting=None):
    """Write through a temp file in the same folder, then rename: a reader never sees half a
    file, and a failed write leaves the previous file as it was. With `setting` (the config
    name or option that chose the folder), an OSError becomes one message naming both."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise _write_error(path, e, setting) from e
    os.close(fd)
    try:
        write_fn(tmp)
        os.chmod(tmp, FILE_MODE)  # mkstemp makes files owner-only; outputs are ordinary files
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and setting:
            raise _write_error(path, e, setting) from e
        raise


def _write_error(path, error, setting):
    if not setting:
        return error
    return OSError(f"cannot write '{path}': {error.strerror or error}. The previous file, if any, "
                   f"is unchanged; free disk space or choose another {setting}")


def check_writable(folder, name, kind="config"):
    """Fail at start, not after hours of training, when an output folder cannot be written.
    kind: what `name` is to the user (a config name, or a command-line option)."""
    try:
        Path(folder).mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-test-"):
            pass
    except OSError as e:
        raise OSError(f"{kind} '{name}': cannot write into '{folder}' ({e.strerror or e}); "
                      f"choose a writable folder with --{name}=PATH") from None


MAX_NAME_BYTES = 200  # file names we make from user names: 255 is the usual limit, minus room
                      # for the temp-file prefix and suffix of atomic_write and companion files


def bounded_name(stem, suffix=""):
    """stem + suffix as a file name of at most MAX_NAME_BYTES bytes (UTF-8): a longer stem (a
    240-character defect folder name) is cut and given a stable hash of the whole stem, so
    two long names that share their start still get two files."""
    name = stem + suffix
    if len(name.encode()) <= MAX_NAME_BYTES:
        return name
    tag = hashlib.sha1(stem.encode()).hexdigest()[:10]
    room = MAX_NAME_BYTES - len(suffix.encode()) - len(tag) - 1
    return f"{stem.encode()[:room].decode(errors='ignore')}~{tag}{suffix}"


def write_csv(path, header, rows, setting="results_dir"):
    """A CSV file (header, then rows) written by temp file + rename, every cell spreadsheet-safe
    (names and labels come from folders and files users made); an OSError names the file and
    the setting that chose its folder."""
    def write(tmp):
        with open(tmp, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow([spreadsheet_safe(c) for c in header])
            writer.writerows([spreadsheet_safe(c) for c in row] for row in rows)
    atomic_write(path, write, setting=setting)
