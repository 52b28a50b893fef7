"""Unpack an archive so that nothing in it can land outside its target folder.

Into TARGET.partial, renamed to TARGET when complete. Every member is checked before it is
written: no absolute path, no '..', no link leading outside, no device or FIFO; tar members go
through tarfile's 'data' filter as well (which also drops setuid bits and group/other write
permission), zip members are written as plain files with the umask's permissions. The running
total of bytes is capped, so an archive that unpacks to far more than expected (a bomb) stops
before the disk fills.
"""
import errno
import lzma
import json
import os
import posixpath
import shutil
import stat
import tarfile
import zipfile
import zlib
from contextlib import contextmanager
from pathlib import Path, PurePosixPath

from prepare.common import PrepareError, all_files, replace_tree

class RefusedMemberError(PrepareError):
    """A member that must not be written (unsafe path, link, special file, duplicate, a name
    the filesystem cannot hold): the archive is not what it should be, named by the member."""


class DamagedArchiveError(PrepareError):
    """The archive cannot be read to its end; what to do depends on whose it is (acquire.py)."""


class NoSpaceError(PrepareError):
    """The disk filled while extracting: the archive is fine and kept."""


NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
BOMB_FACTOR = 2  # an archive may unpack to at most this many times its expected size
EXTRACTED = ".extracted.json"  # in an extracted tree: the archive it came from, each file's size


def unsafe_reason(name, link=None):
    """Why a member name (and a link's target) could write outside the target, or None."""
    if name.startswith(("/", "\\")) or PurePosixPath(name).is_absolute() or \
            (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "'..' in its path"
    if link is not None:
        if link.startswith("/") or (len(link) > 1 and link[1] == ":"):
            return f"link to the absolute path {link}"
        resolved = posixpath.normpath(posixpath.join(posixpath.dirname(name), link))
        if resolved == ".." or resolved.startswith("../"):
            return f"link to {link}, outside the archive's folder"
    return None


def check_tar_member(member):
    if member.isdev() or member.isfifo() or not (member.isfile() or member.isdir() or
                                                  member.issym() or member.islnk()):
        raise RefusedMemberError(f"refused member '{member.name}': a device, FIFO or other "
                                 f"special file")
    # a hard link's target is named from the archive's top, a symlink's from its own folder
    link = None if not (member.issym() or member.islnk()) else member.linkname
    where = "x" if member.islnk() else member.name
    reason = unsafe_reason(member.name) or (None if link is None else unsafe_reason(where, link))
    if reason:
        raise RefusedMemberError(f"refused member '{member.name}': {reason}")


def drop_unsafe_modes(folder):
    """What the 'data' filter does to permissions, for Pythons that lack it: no setuid/setgid/
    sticky bits, no group/other write."""
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            if not os.path.islink(path):
                os.chmod(path, stat.S_IMODE(os.lstat(path).st_mode) & 0o755 | stat.S_IRUSR |
                         stat.S_IWUSR)


def extract_tar(archive, work, limit):
    written = 0
    has_filter = hasattr(tarfile, "data_filter")
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:  # streamed: a bomb is stopped before its later members are read
            check_tar_member(member)
            written += member.size
            check_limit(written, limit, archive)
            with member_writes(archive, member.name, work, limit):
                if has_filter:
                    tar.extract(member, work, filter="data")
                else:
                    tar.extract(member, work, set_attrs=not member.isdir())
    if not has_filter:
        drop_unsafe_modes(work)


def extract_zip(archive, work, limit):
    written = 0
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            reason = unsafe_reason(info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                reason = "a symbolic link"
            if reason:
                raise RefusedMemberError(f"refused member '{info.filename}': {reason}")
            target = work / info.filename
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            with member_writes(archive, info.filename, work, limit):
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(info) as src, open(target, "xb") as dst:
                    # counted as written, not as the header claims: headers can lie
                    for chunk in iter(lambda: src.read(1 << 20), b""):
                        written += len(chunk)
                        check_limit(written, limit, archive)
                        dst.write(chunk)


@contextmanager
def member_writes(archive, name, work, limit):
    """Writing one member: a full disk, a duplicate name and a name too long for the filesystem
    are said as such, not as a damaged archive."""
    try:
        yield
    except FileExistsError:
        raise RefusedMemberError(f"refused member '{name}': the archive holds it twice (a "
                                 f"duplicate name); '{archive}' is not the expected archive") \
            from None
    except OSError as e:
        if e.errno in NO_SPACE:
            free = shutil.disk_usage(work).free
            raise NoSpaceError(f"no space left on the disk of '{work}' while extracting "
                               f"'{archive}' (member '{name}'): the extraction needs about "
                               f"{limit / BOMB_FACTOR / 2**30:.2f} GiB, {free / 2**30:.2f} GiB "
                               f"are free. The archive is fine and kept; free some space or "
                               f"choose another --download_dir, then run again") from None
        if e.errno == errno.ENAMETOOLONG:
            raise RefusedMemberError(f"refused member '{name[:120]}...': its name is too long "
                                     f"for this filesystem; '{archive}' is not the expected "
                                     f"archive") from None
        raise


def check_limit(written, limit, archive):
    if written > limit:
        raise PrepareError(f"'{archive}' unpacks to more than {limit} bytes, far beyond the "
                           f"expected size; refused (a damaged or malicious archive)")


def unwrap(work, is_top):
    """The content's top: the archive's own top, or its one wrapping folder."""
    entries = list(work.iterdir())
    if not is_top(work) and len(entries) == 1 and entries[0].is_dir():
        return entries[0]
    return work


def read_extracted(target):
    try:
        record = json.loads((Path(target) / EXTRACTED).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) and isinstance(record.get("files"), dict) else None


def extraction_damage(target, identity):
    """Why an extracted tree is not what extracting this archive wrote, or None when intact
    (every recorded file there with its size: cheap, and enough to notice deletions and
    truncations; the prepared copies are hashed by their own markers)."""
    record = read_extracted(target)
    if record is None:
        return "no extraction record"
    if record.get("identity") != identity:
        return "extracted from another archive"
    for rel, size in sorted(record["files"].items()):
        path = Path(target, rel)
        if not path.is_file() or path.stat().st_size != size:
            return f"{rel} missing or changed"
    return None


def record_extraction(work, identity):
    files = {rel: (work / rel).stat().st_size for rel in all_files(work)}
    (work / EXTRACTED).write_text(json.dumps({"identity": identity, "files": files}, indent=1))


def is_zip(archive):
    """By its first bytes, so that a truncated ZIP (no central directory) is still called one."""
    with open(archive, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def unpack(archive, work, expected_bytes):
    limit = BOMB_FACTOR * expected_bytes
    try:
        if is_zip(archive):
            extract_zip(archive, work, limit)
        else:
            extract_tar(archive, work, limit)
    except tarfile.FilterError as e:
        raise RefusedMemberError(f"refused a member of '{archive}': {e}") from None
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, OSError, lzma.LZMAError,
            zlib.error) as e:
        reason = (str(e).splitlines() or [repr(e)])[0].rstrip(":")
        raise DamagedArchiveError(f"cannot extract '{archive}': {reason}; the archive is "
                                  f"damaged or incomplete") from None


def extract(archive, target, expected_bytes, is_top, identity, check=None):
    """Unpack archive into target (built in target.partial, renamed when complete) and record
    what it wrote. is_top(folder) says whether a folder holds the content itself (else its one
    wrapping folder is taken); check(folder), if given, vets the content before it is used
    (raising PrepareError). Files in an old target that the last extraction did not write
    are kept. Nothing is left behind on failure; returns the names of kept files."""
    archive, target = Path(archive), Path(target)
    work = target.with_name(target.name + ".partial")
    if work.exists():
        shutil.rmtree(work)  # left by an interrupted extraction
    work.mkdir(parents=True)
    try:
        unpack(archive, work, expected_bytes)
        top = unwrap(work, is_top)
        if top != work:  # lift the wrapping folder's content to the top
            lifted = top.rename(work.with_name(work.name + ".top"))
            work.rmdir()
            lifted.rename(work)
        if check:
            check(work)
        record_extraction(work, identity)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    if not target.exists():
        os.replace(work, target)
        return []
    old = read_extracted(target)
    ours = set(old["files"]) | {EXTRACTED} if old else {EXTRACTED}
    return replace_tree(target, work, ours)
