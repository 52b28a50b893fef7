"""The uint8 image cache to the model's input batches on the training device.

uint8 images reach the device only through to_device, each distinct image of a batch once; the
copies for its transforms are made there. The random rotations and the normalisation of the
paper (section 3.2) are then applied to whole batches of tensors on the training device.
"""
import functools
import math

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# at most this share of the GPU's free memory holds the uint8 cache (cache_device='auto'); the
# rest is left to the flow, Adam's moments and the batches' float copies
DEVICE_CACHE_SHARE = 0.5


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
                         f"move the distinct images once with batches.take or batches.to_device")
    x = images_uint8.float().div_(255.0)
    if angles_deg is not None:
        x = rotate(x, angles_deg)
    if any(s > 0 for s in jitter):
        x = color_jitter(x, *jitter, generator=generator)
    x = normalize_(x)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


def transformed(model, images, angles, jitter=(0.0, 0.0, 0.0), generator=None):
    """(part, inputs) chunks of the model's backbone_batch: uint8 images already on the model's
    device, rotated by their angles (None: not rotated), jittered, normalised. The one path from
    the image cache to the model for training, scoring and gradient maps; chunks keep the float
    copies of 448 px images from existing for a whole batch at once."""
    chunk, device = model.speed.backbone_batch, images.device
    for start in range(0, len(images), chunk):
        part = slice(start, start + chunk)
        yield part, make_batch(images[part], None if angles is None else angles[part], device,
                               jitter, generator, model.speed.channels_last)


def rotation_angles(n_images, n_transforms, mode, generator):
    """(n_images, n_transforms) angles: seeded uniform in [-180, 180] or evenly spaced i*360/n."""
    if mode == "fixed":
        return (torch.arange(n_transforms, dtype=torch.float32) * 360.0 / n_transforms).repeat(
            n_images, 1)
    return torch.empty(n_images, n_transforms).uniform_(-180.0, 180.0, generator=generator)
