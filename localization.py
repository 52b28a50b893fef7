"""Where the model sees defects: gradient maps of single images, and the pixel metrics they
give against the ground-truth masks."""
import math

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2.functional import gaussian_blur

from data import rotate, rotation_angles, to_device
from masks import read_mask
from metrics import PixelMetrics
from model import nll_loss
from train import transformed

GRAD_SIGMA = 3.0  # px, the blur of the reference localisation
BLUR_KERNEL = 2 * math.ceil(3 * GRAD_SIGMA) + 1  # covers +-3 sigma


def gradient_map(model, image_uint8, n_rotations, device):
    """(S, S) map of one image: the loss of its evenly spaced rotations back-propagated to the
    pixels, each gradient rotated back, blurred (sigma 3 px), mean |.| over rotations and
    channels, squared."""
    model.eval()
    angles = rotation_angles(1, n_rotations, "fixed", None)[0]
    total = torch.zeros(image_uint8.shape[-2:], device=device)
    image = to_device(image_uint8.unsqueeze(0), device)  # once, not once per chunk
    for part, x in transformed(model, image.expand(n_rotations, -1, -1, -1), angles):
        x.requires_grad_(True)
        z, log_jac_det = model(x)
        # the batch mean would scale every chunk by 1/len(part); the sum keeps chunks comparable
        n = len(angles[part])
        grad, = torch.autograd.grad(nll_loss(z, log_jac_det) * n, x)
        back = rotate(grad, -angles[part])
        blurred = gaussian_blur(back, [BLUR_KERNEL, BLUR_KERNEL], [GRAD_SIGMA, GRAD_SIGMA])
        total += blurred.abs().mean(dim=1).sum(dim=0)
    return ((total / n_rotations) ** 2).detach().cpu()


def mask_at(mask_path, size):
    """Ground truth as a (size, size) bool array, resized with nearest neighbour; None if no mask."""
    if mask_path is None:
        return None
    return np.asarray(read_mask(mask_path).resize((size, size), Image.NEAREST)) > 0


class MapSource:
    """Gradient maps of test images, each computed once when asked for; those in `keep` are
    held for later figures, the others are dropped after use (bounded memory)."""

    def __init__(self, model, test_set, cfg, device, keep):
        self.model, self.test_set, self.cfg, self.device = model, test_set, cfg, device
        self.keep, self.held = set(keep), {}

    def __call__(self, i):
        if i in self.held:
            return self.held[i]
        heat = gradient_map(self.model, self.test_set.images[i], self.cfg["n_transforms_test"],
                            self.device)
        if i in self.keep:
            self.held[i] = heat
        return heat


def pixel_report(heat_of, test_set, cfg):
    """Exact pixel AUROC and AUPRO at img_size x img_size over the normal test images (all
    pixels normal) and the anomalous ones with a mask; anomalous images without a mask are
    left out and counted. None when pixel_auroc is off or the class has no masks."""
    labels, masks = test_set.labels, test_set.mask_paths
    missing = sum(1 for label, m in zip(labels, masks) if label == 1 and m is None)
    report = {"pixel_auroc": None, "aupro": None, "pixel_images": 0, "masks_missing": missing}
    if not cfg["pixel_auroc"] or all(m is None for m in masks):
        return report
    size, acc = cfg["img_size"], PixelMetrics()
    covered = [i for i in range(len(test_set)) if labels[i] == 0 or masks[i] is not None]
    for i in covered:
        truth = mask_at(masks[i], size) if labels[i] == 1 else np.zeros((size, size), bool)
        acc.add(np.asarray(heat_of(i), dtype=np.float32), truth)
    report.update(acc.compute(), pixel_images=len(covered))
    return report
