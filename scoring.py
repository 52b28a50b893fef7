"""The anomaly score of images (paper section 3.4): the mean over test-time rotations of each
rotated copy's mean z^2, for the test set after each meta epoch, the verdict threshold of the
training images, evaluate.py's new images and the rotation curve."""
import numpy as np
import torch
from tqdm import tqdm

from batches import rotation_angles, take, transformed
from model import anomaly_score


@torch.no_grad()
def score_images(model, images, angles, device, progress=False):
    """Anomaly score of each image: mean over its rotations (angles: N x T) of mean(z^2).
    A batch holds backbone_batch consecutive (image, rotation) pairs; only its distinct images
    cross to the device, and are repeated for their rotations there."""
    model.eval()
    n, t = angles.shape
    image_index = torch.arange(n).repeat_interleave(t)
    flat_angles = angles.reshape(-1)
    scores = torch.empty(n * t, device=device)  # read back once, not per batch
    chunk = model.speed.backbone_batch
    for start in tqdm(range(0, n * t, chunk), desc="score", leave=False, disable=not progress):
        sel = slice(start, start + chunk)
        first, last = int(image_index[sel][0]), int(image_index[sel][-1])
        distinct = take(images, torch.arange(first, last + 1), device)
        batch = distinct[(image_index[sel] - first).to(device, non_blocking=True)]
        (_, x), = transformed(model, batch, flat_angles[sel])
        z, _ = model(x)
        scores[sel] = anomaly_score(z).float()
    return scores.cpu().view(n, t).mean(dim=1).numpy()


def evaluation_generator(seed, epoch, stream=0):
    """A generator for one evaluation's random angles (stream 0: the test set's per epoch),
    independent of the training stream, so a resumed run draws the same angles."""
    state = np.random.SeedSequence([seed, stream, epoch]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(state))


def score_set(model, images, cfg, device, generator, progress=False):
    """Scores of uint8 images (N, 3, S, S) with the configured test rotations."""
    angles = rotation_angles(len(images), cfg["n_transforms_test"], cfg["test_rotations"], generator)
    return score_images(model, images, angles, device, progress)


def training_threshold(model, train_images, cfg, device, progress=False):
    """Verdict threshold: the threshold_percentile-th percentile of the training images' scores,
    each from the evenly spaced rotations evaluate.py scores new images with, so that a new
    image's score and the threshold are comparable whatever test_rotations says."""
    angles = rotation_angles(len(train_images), cfg["n_transforms_test"], "fixed", None)
    scores = score_images(model, train_images, angles, device, progress)
    return float(np.percentile(scores, cfg["threshold_percentile"]))
