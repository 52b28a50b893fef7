"""The three ways to a raw dataset tree: a folder the user extracted (--*_root, used as is), an
archive the user has (--archive, verified), or the official download (verified). The last two
are extracted into DOWNLOAD_DIR/<name>, recorded, and found intact by the next run without
touching the archive again."""
import argparse
import os
from pathlib import Path

from prepare.common import PrepareError, check_apart, file_digest
from prepare.download import check_free_space, check_identity, check_url, fetch
from prepare.extract import (DamagedArchiveError, NoSpaceError, extraction_damage, extract,
                             read_extracted)

DOWNLOAD_DIR = "data/downloads"


def parse_bool(text):
    if text in ("True", "true", "1"):
        return True
    if text in ("False", "false", "0"):
        return False
    raise ValueError(text)


parse_bool.__name__ = "True/False"  # argparse names the expected kind in its error

HEX = set("0123456789abcdef")


def parse_sha256(text):
    """A SHA-256 as 64 hexadecimal digits, in either case (stored in lower case, as hashlib
    writes it), checked before anything is downloaded: a typo must not cost a download."""
    value = text.strip().lower()
    if len(value) != 64 or not set(value) <= HEX:
        raise ValueError(text)
    return value


parse_sha256.__name__ = "SHA-256 (64 hexadecimal digits)"


def add_source_options(parser, archive):
    parser.add_argument("--download_dir", default=DOWNLOAD_DIR,
                        help=f"where the archive is downloaded and extracted (default "
                             f"{DOWNLOAD_DIR})")
    parser.add_argument("--archive", help=f"use this copy of {archive.filename} instead of "
                                          f"downloading it (verified the same way)")
    parser.add_argument("--url", default=archive.url, help="download from this mirror")
    parser.add_argument("--sha256", default=archive.sha256, type=parse_sha256,
                        help="expected SHA-256 of the archive (for a mirror's own copy; 64 "
                             "hexadecimal digits, either case)")
    parser.add_argument("--keep_archive", type=parse_bool, default=True,
                        help="False: delete the downloaded archive after a verified extraction")


def dataset_parser(doc, root_option, root_help, out_default,
                   out_help="prepared tree (config.dataset_path)"):
    """The parser every prepare_*.py script starts from: described by the first paragraph of
    its docstring, with the extracted folder (root_option, used as it is) and --out; the
    script adds its own options, then add_source_options."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument(root_option, help=root_help)
    parser.add_argument("--out", default=out_default, help=out_help)
    return parser


def source_tree(args, root_option, archive, folder, is_top, check=None, prepared_bytes=0):
    """The raw tree a script prepares from: the folder given with root_option, used as it is,
    else the verified extraction in --download_dir/folder (obtain)."""
    check_one_source(args, root_option)
    return getattr(args, root_option.lstrip("-")) or obtain(
        archive, args, Path(args.download_dir) / folder, args.out, is_top, check, prepared_bytes)


def check_one_source(args, root_option):
    """A folder given with --*_root is used as it is; an --archive beside it would be ignored."""
    if getattr(args, root_option.lstrip("-")) and args.archive:
        raise PrepareError(f"give either {root_option} (an extracted folder) or --archive (the "
                           f"archive file), not both")


def identity_of(archive, sha256):
    """What an extraction is recorded as coming from: the archive's hash, or the manifest's."""
    return f"sha256:{sha256}" if sha256 else f"manifest:{file_digest(archive.manifest)}"


def expected_size(archive, sha256):
    """The published size goes with the published hash only (a mirror's copy may differ)."""
    return archive.size if sha256 == archive.sha256 else None


def same_disk(a, b):
    def device(path):
        return next(p for p in (Path(path).resolve(), *Path(path).resolve().parents)
                    if p.exists()).stat().st_dev
    return device(a) == device(b)


UNKNOWN_SIZE_FACTOR = 2  # a download of unknown size may be at most this times its estimate


def archive_estimate(archive):
    """The archive's size, or (MTD: GitHub's ZIP has no fixed size) the size of its files."""
    return archive.size or archive.unpacked_bytes


def check_space(archive, download_dir, out, archive_missing, prepared_bytes):
    """Free space for what is still to come. A kept partial download (.part, resumed next)
    already holds part of the archive: that part is not asked for again, and it is named."""
    part = Path(download_dir) / (archive.filename + ".part")
    held = part.stat().st_size if archive_missing and part.is_file() else 0
    note = (f" (the partial download '{part}', {held / 2**30:.2f} GiB, is kept there and "
            f"resumed; delete it to start over)" if held else "")
    needs = [("rest of the archive" if held else "archive",
              max(0, archive_estimate(archive) - held))] if archive_missing else []
    needs.append(("extraction", archive.unpacked_bytes))
    if prepared_bytes and same_disk(download_dir, out):
        needs.append(("prepared copy", prepared_bytes))
    elif prepared_bytes:
        check_free_space(out, [("prepared copy", prepared_bytes)])
    check_free_space(download_dir, needs, note)


def user_archive(path, sha256, size):
    path = Path(path)
    if not path.is_file():
        raise PrepareError(f"--archive '{path}' is not a file")
    if sha256:
        check_identity(path, sha256, size, f"--archive '{path}'")
    return path


def downloaded_archive(archive, args, out, prepared_bytes):
    """The verified archive in --download_dir: found there, or fetched."""
    check_url(args.url)
    path = Path(args.download_dir) / archive.filename
    if path.is_file() and args.sha256:
        try:
            check_identity(path, args.sha256, expected_size(archive, args.sha256),
                           f"'{path}'")
            check_space(archive, args.download_dir, out, False, prepared_bytes)
            return path
        except PrepareError as e:
            print(f"{e}; downloading it again")
            path.unlink()
    check_space(archive, args.download_dir, out, True, prepared_bytes)
    print(f"downloading {archive.name} ({archive.licence}) from {args.url} into {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    return fetch(args.url, path, args.sha256, expected_size(archive, args.sha256),
                 max_bytes=UNKNOWN_SIZE_FACTOR * archive_estimate(archive))


def obtain(archive, args, target, out, is_top, check=None, prepared_bytes=0):
    """The extracted, verified tree at target: intact from an earlier run, else extracted from
    --archive or from the (downloaded) archive. check(folder) vets the extracted content."""
    target = Path(target)
    if args.archive and args.url != archive.url:
        raise PrepareError(f"--url and --archive both given: --archive '{args.archive}' is used "
                           f"as it is and nothing is downloaded, so --url '{args.url}' would be "
                           f"ignored; give only one of them")
    if Path(out).resolve() != target.resolve():
        check_apart(out, target, "the extraction folder")  # before anything is downloaded
    key = identity_of(archive, args.sha256)
    if target.exists() and extraction_damage(target, key) is None:
        print(f"{archive.name}: the extracted archive in {target} is intact; nothing to download")
        return target
    if target.exists() and read_extracted(target) is None and any(target.iterdir()):
        raise PrepareError(f"'{target}' exists but was not extracted by this script; move it "
                           f"away or choose another --download_dir")
    if target.exists():
        print(f"{target}: extracting again ({extraction_damage(target, key)})")
    if args.archive:
        source = user_archive(args.archive, args.sha256, expected_size(archive, args.sha256))
        check_space(archive, args.download_dir, out, False, prepared_bytes)
    else:
        source = downloaded_archive(archive, args, out, prepared_bytes)
    print(f"extracting {source} into {target}")
    try:
        kept = extract(source, target, archive.unpacked_bytes, is_top, key, check)
    except DamagedArchiveError as e:
        if args.archive:  # the user's own file: never advise deleting it
            raise PrepareError(f"{e}: get a good copy and pass it with --archive") from None
        if args.sha256:
            raise PrepareError(f"{e}: delete it and run again to download it anew") from None
        source.unlink()  # verified only by its content, which failed: a later run must not reuse it
        raise PrepareError(f"{e}; the downloaded {source.name} was removed") from None
    except PrepareError as e:
        if args.archive or args.sha256 or isinstance(e, NoSpaceError):
            raise  # a full disk says nothing against the archive
        source.unlink()  # verified only by its content, which failed: a later run must not reuse it
        raise PrepareError(f"{e}; the downloaded {source.name} was removed") from None
    if kept:
        print(f"note: kept {len(kept)} file(s) in {target} that the last extraction did not "
              f"write: {', '.join(kept[:5])}")
    if not args.archive and not args.keep_archive:
        os.remove(source)
        print(f"removed {source} (--keep_archive=False)")
    return target
