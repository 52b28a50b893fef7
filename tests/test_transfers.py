"""What the data path moves to the device: every uint8 image crosses through batches.to_device,
each distinct image at most once per training step or scoring batch. Counted on the CPU, where
the same code runs with the device being the CPU."""
import math

import numpy as np
import pytest
import torch

import batches
import localization
from batches import make_batch
from data import ImageSet
from model import Speed, anomaly_score, load_alexnet_features, nll_loss
from scoring import score_images
from train import (NonFiniteLossError, TrainStep, build_model, checked_epoch_loss, images_for,
                   make_optimizer, train_one_epoch)

CPU = torch.device("cpu")
ARCH = dict(n_scales=1, n_coupling_blocks=2, fc_internal=32, dropout=0.0, clamp_alpha=3.0)


def tiny_model(backbone_batch=64, seed=0):
    torch.manual_seed(seed)
    model = build_model(ARCH, load_alexnet_features(False), Speed(backbone_batch=backbone_batch))
    return model, make_optimizer(model.flow, 2e-4, (0.8, 0.8), 1e-4, 1e-5)


def random_images(n, size=64, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


@pytest.fixture
def moved(monkeypatch):
    """Number of images in each call of batches.to_device (and of its import in localization).
    The count is the behaviour: every image crossing to the GPU costs PCIe time, and a CPU run
    (where CI tests) shows no other trace of an extra crossing; bench.py reports the bytes."""
    counts = []
    real = batches.to_device

    def counting(images_uint8, device):
        counts.append(len(images_uint8))
        return real(images_uint8, device)
    monkeypatch.setattr(batches, "to_device", counting)
    monkeypatch.setattr(localization, "to_device", counting)
    return counts


def test_a_training_step_moves_each_of_its_images_once(moved):
    model, optimizer = tiny_model(backbone_batch=5)
    train_one_epoch(model, optimizer, random_images(11), TrainStep(batch_size=4, n_transforms=3),
                    CPU, torch.Generator().manual_seed(0))
    # 3 steps of 4, 4 and 3 distinct images; the 3 rotated copies of each are made on the device
    assert moved == [4, 4, 3]


def test_a_scoring_batch_moves_only_its_distinct_images(moved):
    model, _ = tiny_model(backbone_batch=6)
    angles = torch.empty(5, 4).uniform_(-180, 180, generator=torch.Generator().manual_seed(1))
    score_images(model, random_images(5), angles, CPU)
    # batches of 6 (image, rotation) pairs: images {0,1}, {1,2}, {3,4}, {4}
    assert moved == [2, 2, 2, 1]


def test_a_gradient_map_moves_its_image_once(moved):
    model, _ = tiny_model(backbone_batch=3)
    localization.gradient_map(model, random_images(1)[0], 8, CPU)
    assert moved == [1]


@torch.no_grad()
def reference_scores(model, images, angles, backbone_batch):
    """Scoring written the plain way: each batch's repeated copies gathered, then moved."""
    n, t = angles.shape
    image_index = torch.arange(n).repeat_interleave(t)
    flat_angles, scores = angles.reshape(-1), torch.empty(n * t)
    for start in range(0, n * t, backbone_batch):
        sel = slice(start, start + backbone_batch)
        z, _ = model(make_batch(images[image_index[sel]], flat_angles[sel], CPU))
        scores[sel] = anomaly_score(z).float()
    return scores.view(n, t).mean(dim=1).numpy()


def test_scores_equal_the_plain_batching_bit_for_bit():
    model, _ = tiny_model(backbone_batch=6)
    images = random_images(5)
    angles = torch.empty(5, 4).uniform_(-180, 180, generator=torch.Generator().manual_seed(1))
    new = score_images(model, images, angles, CPU)
    np.testing.assert_array_equal(new, reference_scores(model.eval(), images, angles, 6))


def reference_epoch(model, images, step, generator, chunk):
    """A training epoch written the plain way (all copies gathered before any move), with the
    generator draws in the same order; the optimizer steps during backward."""
    model.train()
    order = torch.randperm(len(images), generator=generator)
    losses = []
    for start in range(0, len(order), step.batch_size):
        batch = images[order[start:start + step.batch_size]].repeat_interleave(step.n_transforms,
                                                                               dim=0)
        angles = torch.empty(len(batch)).uniform_(-180.0, 180.0, generator=generator)
        feats = torch.cat([model.embed(make_batch(batch[i:i + chunk], angles[i:i + chunk], CPU,
                                                  step.jitter, generator))
                           for i in range(0, len(batch), chunk)])
        loss = nll_loss(*model.flow(feats))
        loss.backward()
        losses.append(loss.item())
    return float(np.mean(losses))


def test_training_equals_the_plain_batching_bit_for_bit():
    images, step = random_images(11), TrainStep(4, 3, jitter=(0.2, 0.1, 0.1))
    model, optimizer = tiny_model(backbone_batch=5)
    new = train_one_epoch(model, optimizer, images, step, CPU, torch.Generator().manual_seed(0))
    plain_model, _plain_optimizer = tiny_model(backbone_batch=5)
    plain = reference_epoch(plain_model, images, step, torch.Generator().manual_seed(0), 5)
    assert new == plain
    for a, b in zip(model.flow.parameters(), plain_model.flow.parameters()):
        assert torch.equal(a, b)


def test_a_non_finite_loss_is_found_when_the_epoch_is_read():
    assert checked_epoch_loss([1.0, 2.0]) == 1.5
    with pytest.raises(NonFiniteLossError, match="training loss is nan at step 2 of 3"):
        checked_epoch_loss([1.0, math.nan, 2.0])


def test_cache_stays_in_host_memory_on_the_cpu():
    images = random_images(3)
    assert images_for(ImageSet(images, np.zeros(3), [""] * 3, [None] * 3),
                      {"cache_device": "auto"}, CPU) is images


def test_auto_puts_the_cache_on_a_gpu_only_within_the_budget(monkeypatch):
    free = 8 * 2 ** 30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    gpu = torch.device("cuda")
    assert batches.cache_on_device("auto", gpu, int(free * batches.DEVICE_CACHE_SHARE))
    assert not batches.cache_on_device("auto", gpu, int(free * batches.DEVICE_CACHE_SHARE) + 1)
    assert not batches.cache_on_device("cpu", gpu, 1)
    assert batches.cache_on_device("device", gpu, 10 * free)
    assert not batches.cache_on_device("auto", CPU, 1)
