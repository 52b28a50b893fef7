"""Locks on files: one run per output folder, one rebuild of the tables at a time.

Every lock here is an OS lock (fcntl.flock) on a small file. The kernel gives it back when
its process ends, however it ends (kill -9, a crash), so a dead run never blocks a folder and
two processes can never both hold one lock, even when both find a file left by a dead run at
the same moment. Once it holds the lock, the holder writes its host, pid, start time and
command into the file: whoever is refused or waits is told who holds it, and a file left by a
run that died is named when the next claim takes it over. Linux, local file systems.

Two runs writing the same class's checkpoints would silently replace each other's files; the
run lock (`run.lock` in each folder a run writes) makes the second one refuse, naming the
first. The lock file is removed on release, while still held, so it is present only while a
run (or a rebuild) holds it, or when its process was killed.
"""
import fcntl
import json
import os
import socket
import sys
import time
import warnings
from contextlib import contextmanager
from pathlib import Path

LOCK_NAME = "run.lock"
OWNER_WAIT_S = 2.0  # a holder writes its name just after taking the lock; give it this long

# absolute lock path -> (pid, open descriptor) of every lock taken in this process. A child
# made by fork inherits the dict (and the descriptors) but not the locks' ownership: the pid
# tells them apart.
_held = {}


class RunLockedError(RuntimeError):
    """Another live run writes into the same output folder."""


def _key(path):
    return os.path.abspath(path)


def _holds(path):
    """Whether this very process took the lock at path (not a parent it was forked from)."""
    pid, _ = _held.get(_key(path), (None, None))
    return pid == os.getpid()


def _this_process():
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}


def _parse_owner(text):
    """The owner JSON of a lock file's text; {} for text that names none."""
    try:
        owner = json.loads(text)
    except ValueError:
        return {}
    return owner if isinstance(owner, dict) else {}


def read_owner(path):
    """The owner a lock file names; {} when it names none (missing, empty, half-written)."""
    try:
        return _parse_owner(Path(path).read_text(errors="replace"))
    except OSError:
        return {}


def _holder_of(path):
    """The owner of a lock another process holds, given a moment to write its name."""
    deadline = time.monotonic() + OWNER_WAIT_S
    owner = read_owner(path)
    while not owner and time.monotonic() < deadline:
        time.sleep(0.05)
        owner = read_owner(path)
    return owner


def describe(owner):
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started "
            f"{owner.get('started', '?')}: {owner.get('command', '?')}")


def _is_current(fd, path):
    """Whether descriptor fd is still the file at path: a holder removes the file before it
    lets go, so a lock obtained on a removed file guards nothing."""
    try:
        now = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (now.st_dev, now.st_ino)


def _open_locked(path, wait):
    """A descriptor of the file at path holding its exclusive lock; None when another process
    holds it and wait is False. With wait, says whom it waits for and waits."""
    while True:
        Path(path).parent.mkdir(parents=True, exist_ok=True)  # again after a release's rmdir
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except FileNotFoundError:
            continue  # the folder was removed by a run releasing it just now
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    os.close(fd)
                    return None
                print(f"waiting for the lock '{path}' held by {describe(_holder_of(path))}",
                      file=sys.stderr, flush=True)
                fcntl.flock(fd, fcntl.LOCK_EX)
        except BaseException:
            os.close(fd)
            raise
        if _is_current(fd, path):
            return fd
        os.close(fd)  # its holder removed it as we got it: lock the file there now


def _sign(fd, path):
    """Write this process into the lock file it holds; return the owner the file named
    before (a process that ended without removing it), or None for an empty file."""
    left = os.pread(fd, 1 << 16, 0).decode(errors="replace")
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(_this_process()).encode(), 0)
    _held[_key(path)] = (os.getpid(), fd)
    return _parse_owner(left) if left.strip() else None


def _let_go(path):
    """Remove the lock file of a lock this process holds, then release the lock. Returns
    whether the file is gone; failing to remove it is a warning, since it must not hide the
    error that ended the run (the lock is released all the same)."""
    if not _holds(path):
        return False
    _, fd = _held.pop(_key(path))
    try:
        Path(path).unlink(missing_ok=True)
        return True
    except OSError as e:
        warnings.warn(f"could not remove the lock '{path}' ({e.strerror or e}); it is released, "
                      f"and the next run there takes the file over")
        return False
    finally:
        # unlock explicitly: a child forked meanwhile shares the descriptor, and closing ours
        # alone would leave the lock held for as long as the child lives
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)


def acquire_lock(folder, setting):
    """Claim an output folder for this process (its `run.lock`). Refused, naming the holder,
    while another process holds it; a file left by a run that died is taken over with a
    warning naming that run."""
    path = Path(folder) / LOCK_NAME
    if _holds(path):
        return path  # this process holds it already
    fd = _open_locked(path, wait=False)
    if fd is None:
        raise RunLockedError(
            f"'{folder}' is in use by another run ({describe(_holder_of(path))}). Wait for it to "
            f"finish or give this run another {setting}")
    left = _sign(fd, path)
    if left is not None:
        warnings.warn(f"taking over the stale lock '{path}' of a run that ended without "
                      f"removing it ({describe(left)})")
    return path


def release_lock(path):
    """Give a folder back, if this process holds it, and remove the folder (and its parent,
    the class folder) when the run left nothing in it."""
    if not _let_go(path):
        return
    for folder in (Path(path).parent, Path(path).parent.parent):
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            break


@contextmanager
def held_lock(path):
    """Hold the lock file at path for a with-block, waiting while another process holds it
    (the wait is said on stderr, naming the holder). Nested use in one process holds it once."""
    if _holds(path):
        yield
        return
    _sign(_open_locked(path, wait=True), path)
    try:
        yield
    finally:
        _let_go(path)


def remove_stale_temps(folder, recursive=True, min_age=0.0):
    """Delete the temp files that a killed atomic_write left below a folder. Inside a folder
    this run holds (locked) every one is stale; in a shared folder min_age spares the temp
    file of another run's write in progress (such a write takes seconds)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    for tmp in (folder.rglob if recursive else folder.glob)(".*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime >= min_age:
                tmp.unlink()
        except FileNotFoundError:
            pass  # removed meanwhile by its writer
