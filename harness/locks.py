"""One run per output folder: exclusive locks, and the clean-up of what a killed run left.

Two runs writing the same class's checkpoints would silently replace each other's files; the
lock makes the second one refuse, naming the first. A lock whose process is gone (kill -9,
power loss) is recognised on the same host and taken over.
"""
import json
import os
import socket
import sys
import time
import warnings
from pathlib import Path

LOCK_NAME = "run.lock"


class RunLockedError(RuntimeError):
    """Another live run writes into the same output folder."""


def _lock_owner(path):
    """The JSON a lock holds; {} when unreadable (a run killed while writing it)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def _is_running(owner):
    """Whether the process that took a lock still runs (only knowable on this host)."""
    if owner.get("host") != socket.gethostname():
        return True  # cannot look into another machine: assume it runs
    try:
        os.kill(int(owner["pid"]), 0)
    except (ProcessLookupError, KeyError, ValueError, TypeError):
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _describe(owner):
    return (f"pid {owner.get('pid', '?')} on {owner.get('host', '?')}, started "
            f"{owner.get('started', '?')}: {owner.get('command', '?')}")


def acquire_lock(folder, setting):
    """Claim an output folder for this process (file `run.lock` created exclusively). A lock
    whose process no longer runs on this host is stale and taken over with a warning."""
    path = Path(folder) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "host": socket.gethostname(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(sys.argv)}
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _lock_owner(path)
            if owner.get("pid") == os.getpid() and owner.get("host") == me["host"]:
                return path  # this process holds it already
            if owner and _is_running(owner):
                raise RunLockedError(
                    f"'{folder}' is in use by another run ({_describe(owner)}). Wait for it to "
                    f"finish or give this run another {setting}; if that run is gone (another "
                    f"machine), delete '{path}'") from None
            if owner or time.time() - path.stat().st_mtime > 10:
                warnings.warn(f"removing the stale lock '{path}' of a run that no longer runs "
                              f"({_describe(owner)})")
                path.unlink(missing_ok=True)
            else:
                time.sleep(0.5)  # another run is writing its lock this very moment
            continue
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return path
    raise RunLockedError(f"cannot take the lock '{path}'; delete it if no run uses '{folder}'")


def release_lock(path):
    """Give a folder back, if this process still holds it, and remove the folder (and its
    parent, the class folder) when the run left nothing in it. A failure here is a warning:
    it must not hide the error that ended the run."""
    owner = _lock_owner(path)
    if owner.get("pid") != os.getpid() or owner.get("host") != socket.gethostname():
        return
    try:
        Path(path).unlink(missing_ok=True)
    except OSError as e:
        warnings.warn(f"could not remove the lock '{path}' ({e.strerror or e}); delete it "
                      f"before the next run in that folder")
        return
    for folder in (Path(path).parent, Path(path).parent.parent):
        try:
            folder.rmdir()  # only succeeds when empty
        except OSError:
            break


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
