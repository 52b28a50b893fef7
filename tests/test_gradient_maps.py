"""The default gradient maps are the reference localisation's computation: each gradient rotated
back with scipy.ndimage.rotate (cubic spline, zeros outside, same canvas), blurred with
scipy.ndimage.gaussian_filter (sigma 3, kernel to 4 sigma, 'reflect' border), mean |.| over
rotations and channels, squared. The reference is written here in its own layout (height, width,
channels for the rotation; one (T, C, H, W) array for the blur) on fixed gradients."""
import numpy as np
import pytest
import torch
from scipy import ndimage

import localization
from batches import make_batch, rotate
from localization import gradient_map, summed_back_rotated_gradients
from model import Speed, load_alexnet_features, nll_loss
from train import build_model

CPU = torch.device("cpu")
MAP_RTOL = 1e-5  # measured 1.8e-6 at most (64 rotations, 448 px): float32 rounding, another order


def reference_map(grads_tchw, angles_deg):
    """The reference code's steps, on (T, C, H, W) gradients of rotations by angles_deg."""
    back = np.stack([np.transpose(ndimage.rotate(np.transpose(g, (1, 2, 0)), -a, reshape=False),
                                  (2, 0, 1)) for g, a in zip(grads_tchw, angles_deg)])
    blurred = ndimage.gaussian_filter(back, (0, 0, 3, 3))
    return np.mean(np.abs(blurred), axis=(0, 1)) ** 2


def our_map(grads, angles):
    return (summed_back_rotated_gradients(grads, angles) / len(angles)) ** 2


def fixed_gradients(t=8, size=40, seed=0):
    return np.random.default_rng(seed).standard_normal((t, 3, size, size)).astype(np.float32)


def evenly_spaced(t):
    return [i * 360.0 / t for i in range(t)]


def test_map_of_fixed_gradients_equals_the_reference_computation():
    grads, angles = fixed_gradients(), evenly_spaced(8)
    expected = reference_map(grads, angles)
    np.testing.assert_allclose(our_map(grads, angles), expected, rtol=MAP_RTOL)


def test_map_on_a_non_square_angle_grid_and_odd_size():
    grads, angles = fixed_gradients(t=5, size=33, seed=1), [-170.0, -33.3, 0.0, 12.5, 179.0]
    np.testing.assert_allclose(our_map(grads, angles), reference_map(grads, angles), rtol=MAP_RTOL)


def test_back_rotation_undoes_the_input_rotation():
    """A gradient that follows the rotated image (a blob at one place of the image, moved by
    batches.rotate) must come back to that place: the sign of the back-rotation is right."""
    # angles with no symmetry: back-rotated the wrong way, no two copies would meet
    size, angles = 48, [30.0, 100.0, 250.0]
    blob = torch.zeros(1, 3, size, size)
    blob[..., 10:14, 30:34] = 1.0
    grads = rotate(blob.expand(3, -1, -1, -1), torch.tensor(angles)).numpy()
    heat = our_map(grads, angles)
    y, x = np.unravel_index(heat.argmax(), heat.shape)
    assert 10 <= y < 14 and 30 <= x < 34


def test_blur_is_a_gaussian_of_sigma_3_reaching_4_sigma():
    """One unit gradient at the centre, no rotation: the map is the squared Gaussian kernel,
    exp(-d^2 / (2 sigma^2)) normalised, non-zero up to 12 px (4 sigma), nothing beyond."""
    size, centre = 41, 20
    grads = np.zeros((1, 3, size, size), np.float32)
    grads[0, :, centre, centre] = 1.0
    profile = np.sqrt(our_map(grads, [0.0])[centre])
    d = np.arange(-12, 13)
    kernel = np.exp(-d ** 2 / (2 * 3.0 ** 2))
    kernel /= kernel.sum()
    np.testing.assert_allclose(profile[centre - 12:centre + 13], kernel[12] * kernel, rtol=1e-5)
    # beyond 4 sigma only the spline's rounding noise of the 0-degree rotation remains
    assert profile[centre - 13] < 1e-12 and profile[centre + 13] < 1e-12


def test_blur_border_is_half_sample_symmetric():
    """scipy's 'reflect' mirrors about the edge (d c b a | a b c d): a unit gradient on the
    first column gets the weight of offsets 0 and -1 on that column."""
    grads = np.zeros((1, 1, 41, 41), np.float32)
    grads[0, 0, 20, 0] = 1.0
    heat = our_map(grads, [0.0])
    d = np.arange(-12, 13)
    kernel = np.exp(-d ** 2 / 18.0)
    kernel /= kernel.sum()
    assert np.sqrt(heat[20, 0]) == pytest.approx(kernel[12] * (kernel[12] + kernel[11]), rel=1e-5)


def tiny_model():
    torch.manual_seed(0)
    arch = dict(n_scales=1, n_coupling_blocks=2, fc_internal=32, dropout=0.0, clamp_alpha=3.0)
    return build_model(arch, load_alexnet_features(False), Speed(backbone_batch=3)).eval()


def test_gradient_map_is_the_reference_map_of_the_mean_loss_of_its_rotations():
    """End to end: the gradients of the mean loss over the image's 8 evenly spaced rotations,
    computed here one rotation at a time, through the reference steps; gradient_map computes
    them in chunks of 3 (backbone_batch)."""
    model, t = tiny_model(), 8
    image = torch.randint(0, 256, (3, 64, 64), dtype=torch.uint8,
                          generator=torch.Generator().manual_seed(0))
    angles = evenly_spaced(t)
    grads = []
    for angle in angles:
        x = make_batch(image.unsqueeze(0), torch.tensor([angle]), CPU).requires_grad_(True)
        g, = torch.autograd.grad(nll_loss(*model(x)) / t, x)
        grads.append(g[0].numpy())
    expected = reference_map(np.stack(grads), angles)
    heat = gradient_map(model, image, t, CPU)
    assert heat.shape == (64, 64) and heat.dtype == torch.float32
    # measured: 1.2e-6 relative at most (chunks of 3 against single rotations)
    np.testing.assert_allclose(heat.numpy(), expected, rtol=1e-4, atol=1e-7 * expected.max())


def test_gradient_map_rotates_by_the_evenly_spaced_angles(monkeypatch):
    seen = []
    real = localization.summed_back_rotated_gradients

    def recording(grads, angles):
        seen.extend(angles)
        return real(grads, angles)
    monkeypatch.setattr(localization, "summed_back_rotated_gradients", recording)
    gradient_map(tiny_model(), torch.zeros(3, 64, 64, dtype=torch.uint8), 8, CPU)
    assert seen == evenly_spaced(8)
