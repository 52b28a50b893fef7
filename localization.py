"""Where the model sees defects: gradient maps of single images, and the pixel metrics they
give against the ground-truth masks."""
import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from PIL import Image
from scipy import ndimage

from batches import rotation_angles, to_device, transformed
from masks import read_mask
from metrics import PixelMetrics
from model import nll_loss

GRAD_SIGMA = 3.0        # px, the Gaussian blur of the reference localisation
BLUR_TRUNCATE = 4.0     # the blur kernel reaches 4 sigma (scipy's default, the reference's)
BACK_ROTATION_ORDER = 3  # cubic spline back-rotation (scipy.ndimage.rotate's default)


def gradient_map(model, image_uint8, n_rotations, device):
    """(S, S) map of one image, as the reference localisation computes it: the mean loss of its
    n_rotations evenly spaced rotations back-propagated to the pixels, each gradient rotated
    back (cubic spline, zeros outside) and blurred (sigma 3 px), mean |.| over rotations and
    channels, squared (back_rotated_blurred)."""
    model.eval()
    angles = rotation_angles(1, n_rotations, "fixed", None)[0]
    total = np.zeros(image_uint8.shape[-2:], dtype=np.float64)
    image = to_device(image_uint8.unsqueeze(0), device)  # once, not once per chunk
    for part, x in transformed(model, image.expand(n_rotations, -1, -1, -1), angles):
        x.requires_grad_(True)
        z, log_jac_det = model(x)
        # nll_loss is the chunk's mean; scaled to its share of the mean over all n_rotations,
        # the loss of the reference's one batch of rotations
        share = len(angles[part]) / n_rotations
        grad, = torch.autograd.grad(nll_loss(z, log_jac_det) * share, x)
        grad = grad.detach().float().contiguous().cpu().numpy()  # plain layout for scipy
        total += summed_back_rotated_gradients(grad, angles[part].tolist())
    return torch.from_numpy(((total / n_rotations) ** 2).astype(np.float32))


def back_rotated_blurred(grad_chw, angle_deg):
    """|blur(rotate(grad, -angle))| averaged over channels: one rotation's share of the map.
    scipy rotates counter-clockwise for a positive angle, as batches.rotate does, so -angle undoes
    the input's rotation; per channel plane, cubic spline, zeros outside, same canvas. The blur
    is scipy's Gaussian (sigma 3 px, kernel to 4 sigma, 'reflect' = half-sample symmetric
    border) over height and width only."""
    back = ndimage.rotate(grad_chw, -angle_deg, axes=(1, 2), reshape=False,
                          order=BACK_ROTATION_ORDER, mode="constant", cval=0.0)
    blurred = ndimage.gaussian_filter(back, (0, GRAD_SIGMA, GRAD_SIGMA), truncate=BLUR_TRUNCATE,
                                      mode="reflect")
    return np.abs(blurred).mean(axis=0, dtype=np.float64)


def summed_back_rotated_gradients(grads, angles_deg):
    """Sum over rotations of back_rotated_blurred, (T, C, S, S) gradients in; the rotations run
    in threads, one per core (scipy.ndimage does much of its work without the GIL)."""
    workers = max(1, min(len(angles_deg), os.cpu_count() or 1))
    with ThreadPoolExecutor(workers) as pool:
        return sum(pool.map(back_rotated_blurred, grads, angles_deg))


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
