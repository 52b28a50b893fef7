"""Image files to the uint8 cache of a split (ImageSet).

Each image is decoded and resized once per run, in worker processes, into a uint8 cache held
in memory or in a memory-mapped file (image_cache.py); an unreadable file stops the run, or is
left out with a warning (skip_bad_images). Batches are cut from the cache by batches.py.
"""
import os
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import image_cache

SKIP_HINT = ", or set skip_bad_images=True to leave it out with a warning"  # main.py's remedy
READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)  # what PIL raises on bad files


class BadImageError(ValueError):
    """An image file that cannot be decoded: `problem` says what is wrong, `remedy` (part of the
    message) what main.py's user can do, which another caller may leave out."""

    def __init__(self, problem, remedy=""):
        super().__init__(problem + remedy)
        self.problem = problem


@dataclass
class ImageSet:
    """Decoded, resized images of one split of a class, and what is known about each."""
    images: torch.Tensor                     # (N, 3, S, S) uint8
    labels: np.ndarray                       # (N,) 0 = defect-free, 1 = anomalous
    paths: list
    mask_paths: list                         # ground-truth mask file or None, per image
    skipped: list = field(default_factory=list)  # unreadable files left out (skip_bad_images)

    def __len__(self):
        return len(self.paths)


def read_rgb(path):
    """Any image file as an RGB PIL image: grayscale, RGBA, palette, 16-bit and CMYK included."""
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode in ("I;16", "I;16B", "I;16L", "I"):
                # 16-bit and 32-bit integer images: rescale to 8 bits rather than clip at 255
                arr = np.asarray(img, dtype=np.float64)
                scale = 65535.0 if arr.max() > 255 else 255.0
                img = Image.fromarray((arr / scale * 255).round().astype(np.uint8))
            return img.convert("RGB")
    except Image.DecompressionBombError as e:
        raise BadImageError(f"image '{path}' is too large to decode safely ({e}). Shrink or "
                            f"remove it", SKIP_HINT) from None
    except READ_ERRORS as e:
        raise BadImageError(f"cannot read image '{path}': {e}. Remove or replace the "
                            f"file", SKIP_HINT) from None


EXIF_ORIENTATION = 0x0112  # the EXIF tag a camera sets when the picture is to be shown rotated


def exif_orientation(path):
    """An image file's EXIF orientation (1 = as stored), read from its header only; 1 when it
    has none or cannot be read (the decoder names unreadable files)."""
    try:
        with Image.open(path) as img:
            return int(img.getexif().get(EXIF_ORIENTATION, 1))
    except (Image.DecompressionBombError, *READ_ERRORS, TypeError):
        return 1


def load_resized(path, size):
    """Decode and resize once (bilinear, aspect ratio not kept) to a (3, S, S) uint8 tensor."""
    img = read_rgb(path).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1).contiguous()


class _DecodeDataset(Dataset):
    def __init__(self, paths, size):
        self.paths, self.size = paths, size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, i):
        try:
            return i, load_resized(self.paths[i], self.size), None
        except BadImageError as e:
            return i, None, e.problem  # the remedy depends on skip_bad: added by the caller


def _collate(items):
    return items


def decode_all(paths, size, num_workers, skip_bad, out, progress=False):
    """Fill `out` (N, 3, S, S) uint8 with the resized images; returns {index: error} of the
    files that could not be decoded (skip_bad; without it the first one raises)."""
    loader = DataLoader(_DecodeDataset(paths, size), batch_size=16, num_workers=num_workers,
                        collate_fn=_collate)
    bad = {}
    for batch in tqdm(loader, desc="decoding", disable=not progress, leave=False):
        for i, img, error in batch:
            if error is None:
                out[i] = img
            elif skip_bad:
                warnings.warn(f"skipping: {error}")  # skip_bad_images is set: no advice to set it
                bad[i] = error
            else:
                raise BadImageError(error, SKIP_HINT)
    return bad


def decode_cached(paths, size, num_workers, skip_bad, mmap_file, progress=False):
    """decode_all into the memory-mapped cache file mmap_file (named by image_cache.cache_file):
    a complete one is reused read-only, else it is written under a temp name and renamed."""
    shape = (len(paths), 3, size, size)
    done = image_cache.open_complete(mmap_file, shape)
    if done is not None:
        cache, bad = done
        for error in bad.values():
            if not skip_bad:
                raise BadImageError(error, SKIP_HINT)
            warnings.warn(f"skipping: {error}")
        return cache, bad
    tmp, array = image_cache.new_cache(mmap_file, shape)
    try:
        bad = decode_all(paths, size, num_workers, skip_bad, torch.from_numpy(array), progress)
        return image_cache.publish(tmp, mmap_file, array, bad), bad
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def build_image_set(paths, labels, mask_paths, size, num_workers=0, skip_bad=False,
                    mmap_file="", progress=False):
    """Decode a split into an ImageSet (in memory, or in the memory-mapped file mmap_file);
    unreadable files raise, or are dropped when skip_bad."""
    if mmap_file:
        cache, bad = decode_cached(paths, size, num_workers, skip_bad, mmap_file, progress)
    else:
        cache = torch.empty((len(paths), 3, size, size), dtype=torch.uint8)
        bad = decode_all(paths, size, num_workers, skip_bad, cache, progress)
    keep = [i for i in range(len(paths)) if i not in bad]
    if bad:
        cache = cache[keep]
    return ImageSet(images=cache, labels=np.asarray(labels)[keep], paths=[paths[i] for i in keep],
                    mask_paths=[mask_paths[i] for i in keep],
                    skipped=[paths[i] for i in sorted(bad)])
