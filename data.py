"""Images on disk to batches on the device.

Each image is decoded and resized once per run into a uint8 cache; the random
rotations and the normalisation of the paper (section 3.2) are then applied to
whole batches of tensors on the training device. uint8 images reach the device
only through to_device, each distinct image of a batch once; the copies for its
transforms are made there.
"""
import functools
import math
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import image_cache

SKIP_HINT = ", or set skip_bad_images=True to leave it out with a warning"  # main.py's remedy
READ_ERRORS = (UnidentifiedImageError, OSError, SyntaxError, ValueError)  # what PIL raises on bad files
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# at most this share of the GPU's free memory holds the uint8 cache (cache_device='auto'); the
# rest is left to the flow, Adam's moments and the batches' float copies
DEVICE_CACHE_SHARE = 0.5
GOOD = "good"
LAYOUT_HELP = (
    "Expected layout per class:\n"
    "  CLASS/train/good/*.JPG        defect-free training images\n"
    "  CLASS/test/good/*.JPG         defect-free test images\n"
    "  CLASS/test/<defect>/*.JPG     anomalous test images (any folder name but 'good')\n"
    "  CLASS/ground_truth/<defect>/<stem>.png   optional masks\n"
    "For VisA run: python prepare_visa.py --visa_root PATH/TO/VisA --out data/visa")


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


def list_images(folder):
    """Image files in a folder, sorted; hidden files and non-image files are ignored."""
    return sorted(str(p) for p in Path(folder).iterdir()
                  if p.is_file() and not p.name.startswith(".")
                  and p.suffix.lower() in IMAGE_EXTENSIONS)


def _require_folder(path, what):
    if not os.path.isdir(path):
        raise FileNotFoundError(f"{what} '{path}' not found.\n{LAYOUT_HELP}")


def find_mask(class_dir, defect, image_path):
    """The ground-truth mask of an anomalous image: VisA/anomalib '<stem>.png', MVTec '<stem>_mask.png'."""
    stem = Path(image_path).stem
    for name in (f"{stem}.png", f"{stem}_mask.png"):
        candidate = Path(class_dir) / "ground_truth" / defect / name
        if candidate.is_file():
            return str(candidate)
    return None


def find_class_files(dataset_path, class_name):
    """Paths, labels and masks of a class's train and test splits, checked against the layout."""
    _require_folder(dataset_path, "dataset_path")
    class_dir = os.path.join(dataset_path, class_name)
    _require_folder(class_dir, f"class folder of '{class_name}'")
    for split in ("train", "test"):
        _require_folder(os.path.join(class_dir, split, GOOD), f"'{split}/{GOOD}' of '{class_name}'")
    train = list_images(os.path.join(class_dir, "train", GOOD))
    if not train:
        raise FileNotFoundError(f"no images in '{os.path.join(class_dir, 'train', GOOD)}'.\n"
                                f"{LAYOUT_HELP}")
    test, labels, masks = [], [], []
    test_dir = os.path.join(class_dir, "test")
    for defect in sorted(os.listdir(test_dir)):
        if not os.path.isdir(os.path.join(test_dir, defect)) or defect.startswith("."):
            continue
        files = list_images(os.path.join(test_dir, defect))
        anomalous = defect != GOOD
        test += files
        labels += [int(anomalous)] * len(files)
        masks += [find_mask(class_dir, defect, f) if anomalous else None for f in files]
    if GOOD not in [Path(p).parent.name for p in test]:
        raise FileNotFoundError(f"no images in '{os.path.join(test_dir, GOOD)}'.\n{LAYOUT_HELP}")
    return train, (test, np.array(labels, dtype=np.int64), masks)


class ClassFiles(NamedTuple):
    """A class's files, listed once per command and handed to everything that needs them."""
    name: str
    class_dir: str
    train: list
    test: list
    labels: np.ndarray  # per test image: 0 normal, 1 anomalous
    masks: list         # per test image: mask path, or None
    skipped: tuple = ()  # test images left out for an unreadable mask (skip_bad_images)


def list_class(dataset_path, class_name):
    """ClassFiles of a class folder, checked against the layout (find_class_files)."""
    train, (test, labels, masks) = find_class_files(dataset_path, class_name)
    return ClassFiles(class_name, os.path.join(dataset_path, class_name), train, test, labels,
                      masks)


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


def rotation_grid(angles_deg, height, width):
    """Sampling grid that rotates images counter-clockwise about their centre (as PIL does)."""
    rad = angles_deg.to(torch.float32) * (math.pi / 180.0)
    cos, sin = torch.cos(rad), torch.sin(rad)
    # output pixel -> input pixel is the inverse rotation; the aspect terms keep it a true
    # rotation in pixels although affine_grid works in [-1, 1] coordinates on both axes
    theta = torch.stack([torch.stack([cos, -sin * height / width, torch.zeros_like(cos)], 1),
                         torch.stack([sin * width / height, cos, torch.zeros_like(cos)], 1)], 1)
    return F.affine_grid(theta, [len(angles_deg), 1, height, width], align_corners=False)


def rotate(images, angles_deg):
    """Rotate each float image by its angle: nearest neighbour, black fill, same size."""
    # non-blocking: a pageable copy of a few angles needs no wait for the GPU's queue
    grid = rotation_grid(angles_deg.to(images.device, non_blocking=True), images.shape[-2],
                         images.shape[-1])
    return F.grid_sample(images, grid.to(images.dtype), mode="nearest", padding_mode="zeros",
                         align_corners=False)


@functools.lru_cache(maxsize=None)
def imagenet_statistics(device, dtype):
    """(mean, std) as (1, 3, 1, 1) tensors on a device, built once per device: a tensor made
    from Python numbers on a GPU is a blocking copy, which would make the host wait for the
    GPU's queue at every batch."""
    def as_tensor(values):
        return torch.tensor(values, dtype=dtype).view(1, 3, 1, 1).to(device)
    return as_tensor(IMAGENET_MEAN), as_tensor(IMAGENET_STD)


def normalize_(images):
    """[0, 1] floats to ImageNet-normalised floats, in place (one batch-sized buffer less)."""
    mean, std = imagenet_statistics(images.device, images.dtype)
    return images.sub_(mean).div_(std)


def color_jitter(images, brightness, contrast, saturation, generator):
    """Per-image colour jitter in [0, 1] space with torchvision's adjustments and factor ranges,
    applied in the fixed order brightness, contrast, saturation (ColorJitter draws a random
    order; docs/method.md, Deviations); a no-op when all are 0."""
    from torchvision.transforms.v2 import functional as TF
    out = []
    for img in images:
        for strength, adjust in ((brightness, TF.adjust_brightness), (contrast, TF.adjust_contrast),
                                 (saturation, TF.adjust_saturation)):
            if strength > 0:
                factor = float(torch.empty(1).uniform_(max(0.0, 1 - strength), 1 + strength,
                                                       generator=generator))
                img = adjust(img, factor)
        out.append(img)
    return torch.stack(out)


def to_device(images_uint8, device):
    """The one way uint8 images cross to the training device (tests/test_transfers.py counts
    what passes here). Non-blocking: from pinned memory the copy overlaps the GPU's work."""
    return images_uint8.to(device, non_blocking=True)


def gather_pinned(images_uint8, index):
    """images_uint8[index] written straight into page-locked host memory, which the GPU can
    copy from asynchronously (from pageable memory the driver stages and waits)."""
    out = torch.empty((len(index), *images_uint8.shape[1:]), dtype=torch.uint8, pin_memory=True)
    return torch.index_select(images_uint8, 0, index, out=out)


def take(images_uint8, index, device):
    """images_uint8[index] on `device`, each selected image crossing once: gathered where the
    cache lives (in pinned memory when a host cache feeds a GPU), then moved by to_device.
    Callers expand the result to its transforms on the device, never before the move."""
    if images_uint8.device.type == "cpu" and torch.device(device).type == "cuda":
        return to_device(gather_pinned(images_uint8, index), device)
    return to_device(images_uint8[index.to(images_uint8.device, non_blocking=True)], device)


def cache_fits_on_gpu(nbytes, device):
    """Whether a cache of nbytes stays within DEVICE_CACHE_SHARE of the GPU's free memory."""
    free, _total = torch.cuda.mem_get_info(device)
    return nbytes <= DEVICE_CACHE_SHARE * free


def cache_on_device(cache_device, device, nbytes):
    """Where a uint8 cache of nbytes lives: True = on the training device. 'auto' puts it on a
    GPU when it fits the budget; on the CPU there is nothing to move."""
    if cache_device == "device":
        return True
    return (cache_device == "auto" and torch.device(device).type == "cuda"
            and cache_fits_on_gpu(nbytes, device))


def make_batch(images_uint8, angles_deg, device, jitter=(0.0, 0.0, 0.0), generator=None,
               channels_last=False):
    """uint8 images already on `device` (moved once by to_device or take) -> rotated, jittered,
    normalised float batch there."""
    if images_uint8.dtype != torch.uint8:  # the in-place steps below would alter a float input
        raise TypeError(f"make_batch takes the uint8 image cache, got {images_uint8.dtype}")
    if images_uint8.device.type != torch.device(device).type:  # no hidden per-batch copy here
        raise ValueError(f"make_batch got images on {images_uint8.device} for device {device}: "
                         f"move the distinct images once with data.take or data.to_device")
    x = images_uint8.float().div_(255.0)
    if angles_deg is not None:
        x = rotate(x, angles_deg)
    if any(s > 0 for s in jitter):
        x = color_jitter(x, *jitter, generator=generator)
    x = normalize_(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def rotation_angles(n_images, n_transforms, mode, generator):
    """(n_images, n_transforms) angles: seeded uniform in [-180, 180] or evenly spaced i*360/n."""
    if mode == "fixed":
        return (torch.arange(n_transforms, dtype=torch.float32) * 360.0 / n_transforms).repeat(
            n_images, 1)
    return torch.empty(n_images, n_transforms).uniform_(-180.0, 180.0, generator=generator)
