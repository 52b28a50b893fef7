"""Where the model sees defects: gradient maps of single images (reports.py turns them into
figures and pixel metrics)."""
import math

import torch
from torchvision.transforms.v2.functional import gaussian_blur

from data import make_batch, rotate, rotation_angles, to_device
from model import nll_loss

GRAD_SIGMA = 3.0  # px, the blur of the reference localisation
BLUR_KERNEL = 2 * math.ceil(3 * GRAD_SIGMA) + 1  # covers +-3 sigma


def gradient_map(model, image_uint8, n_rotations, device, chunk=64):
    """(S, S) map of one image: the loss of its evenly spaced rotations back-propagated to the
    pixels, each gradient rotated back, blurred (sigma 3 px), mean |.| over rotations and
    channels, squared."""
    model.eval()
    angles = rotation_angles(1, n_rotations, "fixed", None)[0]
    total = torch.zeros(image_uint8.shape[-2:], device=device)
    image = to_device(image_uint8.unsqueeze(0), device)  # once, not once per chunk
    for part in torch.split(angles, chunk):
        x = make_batch(image.expand(len(part), -1, -1, -1), part, device)
        x.requires_grad_(True)
        z, log_jac_det = model(x)
        # the batch mean would scale every chunk by 1/len(part); the sum keeps chunks comparable
        grad, = torch.autograd.grad(nll_loss(z, log_jac_det) * len(part), x)
        back = rotate(grad, -part)
        blurred = gaussian_blur(back, [BLUR_KERNEL, BLUR_KERNEL], [GRAD_SIGMA, GRAD_SIGMA])
        total += blurred.abs().mean(dim=1).sum(dim=0)
    return ((total / n_rotations) ** 2).detach().cpu()
