"""Each constant of the paper's protocol, checked where it is used, fast and on any CPU: the
range and spread of the training and test rotations, the evenly spaced angles of evaluate.py,
the threshold and the maps, the number of rotations and scales, the 768-feature layout and the
averaging of the score, the clamp of the coupling outputs. (The gradient-map blur and back-rotation: tests/test_gradient_maps.py.)"""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from FrEIA.modules import GLOWCouplingBlock
from PIL import Image

import batches
import evaluate
import localization
import scoring
from configurator import resolve_config
from batches import make_batch, rotation_angles
from model import (ClampedGLOWCouplingBlock, DifferNet, Speed, anomaly_score, build_flow,
                   load_alexnet_features, soft_clamp, subnet_constructor)
from scoring import evaluation_generator, score_images, score_set, training_threshold
from train import TrainStep, build_model, make_optimizer, train_one_epoch

CPU = torch.device("cpu")
UNIFORM_STD = 360 / math.sqrt(12)  # standard deviation of the uniform law on [-180, 180]
TINY = dict(n_scales=1, n_coupling_blocks=2, fc_internal=32, dropout=0.0, clamp_alpha=3.0)


def defaults():
    return resolve_config([])


def images(n, size=64, seed=0):
    return torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8,
                         generator=torch.Generator().manual_seed(seed))


def tiny_model(backbone_batch=64):
    torch.manual_seed(0)
    return build_model(TINY, load_alexnet_features(False), Speed(backbone_batch=backbone_batch))


def assert_uniform_over_the_circle(angles):
    """Drawn angles fill [-180, 180] evenly: both ends reached, centred on 0, the uniform spread."""
    a = np.asarray(angles, dtype=np.float64).ravel()
    assert a.min() >= -180 and a.max() <= 180
    assert a.min() < -170 and a.max() > 170
    assert abs(a.mean()) < 0.1 * UNIFORM_STD
    assert a.std() == pytest.approx(UNIFORM_STD, rel=0.1)
    assert 0.4 < np.mean(a < 0) < 0.6


def evenly_spaced(n):
    return [i * 360.0 / n for i in range(n)]


@pytest.fixture
def batches_made(monkeypatch):
    """(uint8 images, angles) of every make_batch call of batches.transformed."""
    seen = []

    def recording(images_uint8, angles_deg, *args, **kwargs):
        seen.append((images_uint8.clone(), None if angles_deg is None else angles_deg.clone()))
        return make_batch(images_uint8, angles_deg, *args, **kwargs)
    monkeypatch.setattr(batches, "make_batch", recording)
    return seen


def test_training_step_defaults():
    step = TrainStep.from_config(defaults())
    assert step == TrainStep(batch_size=24, n_transforms=4, rotations=True, jitter=(0.0, 0.0, 0.0))


def test_training_rotations_are_uniform_in_minus_180_180_four_per_image(batches_made):
    model = tiny_model(backbone_batch=96)
    train_one_epoch(model, make_optimizer(model.flow, 2e-4, (0.8, 0.8), 1e-4, 1e-5), images(48),
                    TrainStep(batch_size=24, n_transforms=4), CPU,
                    torch.Generator().manual_seed(0))
    assert len(batches_made) == 2  # 48 images in steps of 24, one backbone chunk each
    for batch, angles in batches_made:
        assert len(batch) == len(angles) == 96
        # each image 4 times in a row, each copy with its own angle
        groups = batch.view(24, 4, -1)
        assert torch.equal(groups, groups[:, :1].expand_as(groups))
        assert all(len(set(a)) == 4 for a in angles.view(24, 4).tolist())
    assert_uniform_over_the_circle(torch.cat([a for _, a in batches_made]))


@pytest.fixture
def scored_angles(monkeypatch):
    """The angles each score_images call of scoring and evaluate gets (scores are zeros)."""
    seen = []

    def recording(model, imgs, angles, device, progress=False):
        seen.append(angles.clone())
        return np.zeros(len(imgs))
    monkeypatch.setattr(scoring, "score_images", recording)
    monkeypatch.setattr(evaluate, "score_images", recording)
    return seen


def test_test_rotations_are_64_seeded_uniform_angles_per_image(scored_angles):
    cfg = defaults()
    assert cfg["test_rotations"] == "random" and cfg["n_transforms_test"] == 64
    score_set(None, images(30), cfg, CPU, evaluation_generator(0, 1))
    score_set(None, images(30), cfg, CPU, evaluation_generator(0, 1))
    first, again = scored_angles
    assert first.shape == (30, 64) and torch.equal(first, again)  # seeded: repeatable
    assert_uniform_over_the_circle(first)
    assert len(set(first.ravel().tolist())) == 30 * 64  # every image its own angles


def test_fixed_test_rotations_are_evenly_spaced(scored_angles):
    score_set(None, images(3), dict(defaults(), test_rotations="fixed"), CPU, None)
    assert scored_angles[0].tolist() == [evenly_spaced(64)] * 3
    assert rotation_angles(2, 8, "fixed", None).tolist() == [[0, 45, 90, 135, 180, 225, 270, 315]] * 2


def test_threshold_uses_the_evenly_spaced_rotations(scored_angles):
    training_threshold(None, images(5), defaults(), CPU)
    assert scored_angles[0].tolist() == [evenly_spaced(64)] * 5


def test_evaluate_scores_each_image_with_the_evenly_spaced_rotations(scored_angles, tmp_path):
    paths = []
    for i in range(2):
        paths.append(tmp_path / f"{i}.png")
        Image.fromarray(np.full((20, 20, 3), 40 * i, np.uint8)).save(paths[-1])
    evaluate.score_files(None, dict(defaults(), img_size=64), paths, CPU)
    assert [a.tolist() for a in scored_angles] == [[evenly_spaced(64)]] * 2


def test_maps_use_n_transforms_test_rotations(monkeypatch):
    asked = []
    monkeypatch.setattr(localization, "gradient_map",
                        lambda model, image, n, device: asked.append(n) or torch.zeros(2, 2))
    source = localization.MapSource(None, SimpleNamespace(images=images(1)), defaults(), CPU, [])
    source(0)
    assert asked == [64]


def test_three_scales_of_256_mean_pooled_features_make_768():
    cfg = defaults()
    model = DifferNet(load_alexnet_features(False), cfg["n_scales"], 1, 8, 0.0, 3.0)
    sides = []
    model.features.backbone.register_forward_pre_hook(lambda m, args: sides.append(args[0].shape[-1]))
    x = torch.randn(2, 3, 448, 448, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        feats = model.embed(x)
    assert sides == [448, 224, 112] and feats.shape == (2, 768) == (2, cfg["n_feat"])
    backbone = model.features.backbone
    with torch.no_grad():
        for s, side in enumerate((448, 224, 112)):
            expected = backbone(F.interpolate(x, size=(side, side), mode="nearest")).mean(dim=(2, 3))
            torch.testing.assert_close(feats[:, 256 * s:256 * (s + 1)], expected)


def test_score_of_z_is_the_mean_of_its_squares():
    z = torch.tensor([[1.0, 2.0, 3.0, 4.0], [0.0, 0.0, 0.0, 2.0]])
    assert anomaly_score(z).tolist() == [7.5, 1.0]


def test_image_score_is_the_mean_over_its_rotations():
    model, imgs = tiny_model(backbone_batch=5).eval(), images(3)
    angles = torch.tensor([[0.0, 90.0, -45.0], [10.0, 20.0, 30.0], [-170.0, 0.0, 170.0]])
    expected = []
    with torch.no_grad():
        for image, row in zip(imgs, angles):
            per_rotation = [anomaly_score(model(make_batch(image[None], a[None], CPU))[0])
                            for a in row]
            expected.append(float(torch.cat(per_rotation).mean()))
    np.testing.assert_allclose(score_images(model, imgs, angles, CPU), expected, rtol=1e-5)


def test_coupling_outputs_are_clamped_to_a_million_as_in_the_reference():
    torch.manual_seed(0)
    clamped = ClampedGLOWCouplingBlock([(8,)], subnet_constructor=subnet_constructor(16, 0.0),
                                       clamp=3.0, clamp_activation=soft_clamp(3.0))
    plain = GLOWCouplingBlock([(8,)], subnet_constructor=subnet_constructor(16, 0.0), clamp=3.0,
                              clamp_activation=soft_clamp(3.0))
    plain.load_state_dict(clamped.state_dict())
    x = torch.randn(5, 8)
    (y,), jac = clamped([x])
    (y_plain,), jac_plain = plain([x])
    assert torch.equal(y, y_plain) and torch.equal(jac, jac_plain)  # a no-op below 1e6
    (big,), _ = clamped([x * 1e8])
    (big_plain,), _ = plain([x * 1e8])
    assert big.abs().max() == 1e6 and big_plain.abs().max() > 1e6
    flow = build_flow(8, 2, 16, 0.0, 3.0)
    assert [type(m) for m in flow.module_list][1::2] == [ClampedGLOWCouplingBlock] * 2
