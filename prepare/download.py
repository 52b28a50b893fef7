"""Fetch an archive over http(s): streamed to NAME.part, resumed with Range, hashed on the way.

Only a file whose SHA-256 (and size, where known) matched is ever renamed to NAME; a mismatch
removes the .part, so nothing unverified is left to be used later.
"""
import hashlib
import http.client
import os
import shutil
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urljoin, urlsplit

from tqdm import tqdm

from prepare.common import HASH_CHUNK, PrepareError

TIMEOUT_S = 30  # seconds without data before an attempt counts as failed
RETRIES = 5
BACKOFF_S = 2.0  # waits 2, 4, 8, ... seconds between attempts (read at call time)


class Interrupted(Exception):
    """The connection broke off; the .part holds what arrived and the next attempt resumes."""


def check_url(url):
    if urlsplit(url).scheme not in ("http", "https"):
        raise PrepareError(f"--url '{url}' is not an http(s) URL; only http and https are fetched "
                           f"(for a local file use --archive)")


class HttpOnlyRedirects(urllib.request.HTTPRedirectHandler):
    """Follows a redirect only to http(s): urllib alone would follow one to ftp:// too."""

    def http_error_302(self, req, fp, code, msg, headers):
        target = headers.get("location") or headers.get("uri")
        if target is not None:
            new = urljoin(req.full_url, target)
            if urlsplit(new).scheme not in ("http", "https"):
                fp.close()
                raise PrepareError(f"{req.full_url} redirects to '{new}', which is not an http(s) "
                                   f"URL; only http and https are fetched. Download the archive "
                                   f"another way and pass --archive FILE")
        return super().http_error_302(req, fp, code, msg, headers)

    http_error_301 = http_error_303 = http_error_307 = http_error_308 = http_error_302


OPENER = urllib.request.build_opener(HttpOnlyRedirects)
REDIRECT_CODES = (301, 302, 303, 307, 308)
OPENER_MAX_REDIRECTS = HttpOnlyRedirects.max_redirections


def gib(n):
    return f"{n / 2**30:.2f} GiB"


def check_free_space(folder, needs, note=""):
    """needs: [(what, bytes)]; refuses before anything is written when the disk cannot hold it.
    note: said in the refusal (e.g. a kept partial download that takes space there)."""
    folder = Path(folder)
    probe = next(p for p in (folder, *folder.parents) if p.exists())
    free, total = shutil.disk_usage(probe).free, sum(n for _, n in needs)
    if free < total:
        parts = " + ".join(f"{what} {gib(n)}" for what, n in needs)
        raise PrepareError(f"not enough free space under '{probe}': {parts} = {gib(total)} "
                           f"needed, {gib(free)} free{note}; free some space or choose another "
                           f"--download_dir / --out")


def sha256_of(path):
    """The SHA-256 hash object of a file's content (a resumed download goes on updating it)."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256")


def check_identity(path, sha256, size, what):
    """Raise naming expected and actual hash and size unless the file is the archive."""
    actual_size = os.path.getsize(path)
    actual = sha256_of(path).hexdigest()
    if actual != sha256.lower():  # the hash decides: a file that has it is the archive
        raise PrepareError(f"{what} is not the expected archive: SHA-256 {actual}, {actual_size} "
                           f"bytes; expected SHA-256 {sha256}"
                           + (f", {size} bytes" if size is not None else ""))


def open_range(url, offset, timeout):
    """The response for bytes offset.. (HTTP 206), or the whole file when Range is ignored."""
    headers = {"User-Agent": "differnet-prepare"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    return OPENER.open(urllib.request.Request(url, headers=headers), timeout=timeout)


class TooLargeError(PrepareError):
    """The server sent more than the archive can be: the .part is removed."""


def stream(response, part, offset, digest, bar, max_bytes=None):
    """Append the response body to part; returns the number of bytes now in part. A body that
    would make part larger than max_bytes stops the download (a server of unknown size must
    not fill the disk)."""
    expected = response.headers.get("Content-Length")
    received = 0
    with open(part, "ab" if offset else "wb") as f:
        while True:
            try:
                chunk = response.read(HASH_CHUNK)
            except (OSError, http.client.HTTPException) as e:  # the peer went away
                raise Interrupted(str(e) or repr(e)) from None
            if not chunk:
                break
            if max_bytes is not None and offset + received + len(chunk) > max_bytes:
                raise TooLargeError(f"the server sent more than {max_bytes:,} bytes "
                                    f"({gib(max_bytes)}) for "
                                    f"{part.name[:-5]}, more than the archive can be; stopped "
                                    f"and removed the partial file. Check --url")
            try:
                f.write(chunk)
            except OSError as e:
                raise PrepareError(f"cannot write '{part}': {e.strerror or e}") from None
            digest.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    if expected is not None and received < int(expected):
        raise Interrupted(f"connection closed after {received} of {expected} bytes")
    return offset + received


def attempt(url, part, bars, name, timeout, max_bytes=None):
    """One request: resume from part's size when the server honours Range, else start over.
    The progress bar appears with the first answer (offline, there is only the error line)."""
    offset = part.stat().st_size if part.exists() else 0
    response = open_range(url, offset, timeout)
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored Range: the body is the whole file
        digest = sha256_of(part) if offset else hashlib.sha256()
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length else None
        if bars:
            bars[0].reset(total=total)
            bars[0].update(offset)
        else:
            bars.append(tqdm(total=total, initial=offset, unit="B", unit_scale=True,
                             unit_divisor=1024, desc=name))
        return (stream(response, part, offset, digest, bars[0], max_bytes),
                digest.hexdigest())


def download_with_retries(url, part, name, max_bytes=None):
    """(bytes, sha256) of the complete part file; retried with back-off, resuming each time."""
    reason, bars = None, []
    try:
        for n in range(RETRIES):
            if n:
                time.sleep(BACKOFF_S * 2 ** (n - 1))
            try:
                return attempt(url, part, bars, name, TIMEOUT_S, max_bytes)
            except TooLargeError:
                part.unlink(missing_ok=True)
                raise
            except urllib.error.HTTPError as e:
                if e.code in REDIRECT_CODES:  # urllib's loop and too-many-redirects errors
                    raise PrepareError(f"cannot download {url}: its redirects do not end (a "
                                       f"loop, or more than {OPENER_MAX_REDIRECTS}); download "
                                       f"{name} another way and pass --archive FILE") from None
                if e.code != 416:
                    reason = " ".join(str(e.reason).split())  # one line, whatever the server sent
                    raise PrepareError(f"cannot download {url}: HTTP {e.code} {reason}; "
                                       f"download {name} another way and pass --archive FILE"
                                       ) from None
                part.unlink(missing_ok=True)  # asked for bytes past the end: not a prefix
                reason = "HTTP 416"
            except (Interrupted, urllib.error.URLError, OSError) as e:
                reason = getattr(e, "reason", None) or e
    finally:
        for bar in bars:
            bar.close()
    raise PrepareError(f"cannot reach {url} ({reason}) after {RETRIES} attempts; download "
                       f"{name} another way and pass --archive FILE")


def fetch(url, dest, sha256, size=None, max_bytes=None):
    """Download url to dest via dest.part and verify it; returns dest. A mismatch removes the
    part file: nothing unverified stays where a later run would find it. At most size bytes
    when it is known, else max_bytes (None: no cap) are accepted."""
    check_url(url)
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    got, actual = download_with_retries(url, part, dest.name, size if size else max_bytes)
    matches = sha256 is not None and actual == sha256.lower()  # such a file is never deleted
    if not matches and (sha256 is not None or (size is not None and got != size)):
        part.unlink()
        raise PrepareError(f"downloaded {dest.name} does not match: SHA-256 {actual}, {got} bytes; "
                           f"expected SHA-256 {sha256 or '(any)'}"
                           + (f", {size} bytes" if size is not None else "")
                           + "; the bad file was removed. Try again, or check --url/--sha256")
    os.replace(part, dest)
    return dest
