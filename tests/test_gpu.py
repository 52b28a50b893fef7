"""The GPU path, parametrised over the devices present: every test runs on the CPU (in CI, so
none can rot unseen) and again on a GPU where there is one; the comparisons of a GPU with
the CPU need one. Before a long run on a new GPU machine: `python -m pytest -q
tests/test_gpu.py` (README, Running the VisA benchmark, step 4)."""
import warnings

import numpy as np
import pytest
import torch

import batches
import main
from checkpoints import checkpoint_path, load_checkpoint
from conftest import tiny_args
from layout import list_class
from metrics import image_metrics

GPU = torch.cuda.is_available()
DEVICES = ["cpu", "cuda"] if GPU else ["cpu"]
needs_gpu = pytest.mark.skipif(not GPU, reason="compares a GPU with the CPU: needs a CUDA GPU")


def trained_state(tmp_path, folder, **settings):
    rows = main.train_all(tiny_args(tmp_path, checkpoint_dir=str(tmp_path / folder), **settings))
    assert [r["status"] for r in rows] == ["ok"]
    return rows[0], load_checkpoint(checkpoint_path(tmp_path / folder, "toy", 0))


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_a_run_leaves_a_checkpoint_any_machine_loads(tmp_path, toy_class, device):
    row, state = trained_state(tmp_path, device, device=device, keep_optimizer=True)
    # a plain torch.load, no map_location: a machine without a GPU must be able to read it
    raw = torch.load(checkpoint_path(tmp_path / device, "toy", 0), weights_only=True)
    tensors = [t for part in ("flow", "backbone") for t in raw[part].values()]
    tensors += [t for s in raw["optimizer"]["state"].values() for t in s.values()]
    assert tensors and all(t.device.type == "cpu" for t in tensors)
    assert len(state["rng_cuda"]) == (torch.cuda.device_count() if GPU else 0)
    labels = list_class(str(tmp_path / "data"), "toy").labels
    assert row["auroc_last"] == pytest.approx(image_metrics(labels, state["test_scores"].numpy())
                                              ["auroc"], abs=1e-12)
    assert all(np.isfinite(state["loss_history"])) and np.isfinite(state["threshold"])


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_the_fast_options_run_end_to_end(tmp_path, toy_class, device):
    # bf16 backbone, TF32 flow, the cache in host memory (pinned staging on a GPU), maps
    row, state = trained_state(tmp_path, device, device=device, amp_bf16=True, tf32=True,
                               cache_device="cpu", grad_map_viz=True)
    assert state["config"]["amp_bf16"] and state["config"]["tf32"]
    assert row["pixel_images"] == 12 and row["pixel_auroc"] > 0.6  # a constant map: 0.5
    assert not torch.backends.cuda.matmul.allow_tf32  # the run left the global switch alone


@pytest.mark.slow
@pytest.mark.parametrize("device", DEVICES)
def test_tf32_reaches_the_flow_and_not_the_rotation(tmp_path, toy_class, device, monkeypatch):
    seen = {"rotation": set(), "flow": set()}
    real_grid = batches.rotation_grid

    def grid(*args):
        seen["rotation"].add(torch.backends.cuda.matmul.allow_tf32)
        return real_grid(*args)
    import model as model_module
    real_nll = model_module.nll_loss

    def loss(z, log_jac_det):
        seen["flow"].add(torch.backends.cuda.matmul.allow_tf32)
        return real_nll(z, log_jac_det)
    import train
    monkeypatch.setattr(batches, "rotation_grid", grid)
    monkeypatch.setattr(train, "nll_loss", loss)
    trained_state(tmp_path, device, device=device, tf32=True, meta_epochs=1)
    assert seen == {"rotation": {False}, "flow": {True}}


@pytest.mark.parametrize("device", DEVICES)
def test_only_the_intended_host_waits_on_the_device(tmp_path, device):
    """One wait per training epoch (its losses) and one per scoring pass (its scores)."""
    from model import Speed, load_alexnet_features
    from scoring import score_images
    from train import TrainStep, build_model, make_optimizer, train_one_epoch
    dev = torch.device(device)
    cfg = dict(n_scales=1, n_coupling_blocks=2, fc_internal=32, dropout=0.0, clamp_alpha=3.0)
    model = build_model(cfg, load_alexnet_features(False), Speed()).to(dev)
    optimizer = make_optimizer(model.flow, 2e-4, (0.8, 0.8), 1e-4, 1e-5)
    images = torch.randint(0, 256, (8, 3, 64, 64), dtype=torch.uint8).to(dev)
    angles = torch.zeros(8, 2)
    generator = torch.Generator().manual_seed(0)

    def epoch_and_score():
        train_one_epoch(model, optimizer, images, TrainStep(4, 2), dev, generator)
        score_images(model, images, angles, dev)
    epoch_and_score()  # first use: allocator, kernels, statistics built once per device
    if dev.type != "cuda":
        return  # the CPU has no stream to wait on; the same code ran once above
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            epoch_and_score()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [w for w in caught if "synchronizing" in str(w.message)]
    assert len(syncs) == 2, [str(w.message) for w in syncs]


@pytest.mark.parametrize("device", DEVICES)
def test_distinct_images_cross_once_from_pinned_memory_on_a_gpu(device, monkeypatch):
    # the count is the behaviour here: what crosses to the device, once per distinct image
    from data import ImageSet
    from model import Speed, load_alexnet_features
    from train import TrainStep, build_model, images_for, make_optimizer, train_one_epoch
    images = torch.randint(0, 256, (11, 3, 64, 64), dtype=torch.uint8)
    dev = torch.device(device)
    cache = images_for(ImageSet(images, np.zeros(11), [""] * 11, [None] * 11),
                       {"cache_device": "cpu"}, dev)
    crossings, real = [], batches.to_device

    def recording(images_uint8, target):
        crossings.append((len(images_uint8), images_uint8.is_pinned()))
        return real(images_uint8, target)
    monkeypatch.setattr(batches, "to_device", recording)
    cfg = dict(n_scales=1, n_coupling_blocks=2, fc_internal=32, dropout=0.0, clamp_alpha=3.0)
    model = build_model(cfg, load_alexnet_features(False), Speed()).to(dev)
    optimizer = make_optimizer(model.flow, 2e-4, (0.8, 0.8), 1e-4, 1e-5)
    train_one_epoch(model, optimizer, cache, TrainStep(4, 3), dev, torch.Generator().manual_seed(0))
    pinned = device == "cuda"
    assert crossings == [(4, pinned), (4, pinned), (3, pinned)]


@needs_gpu
def test_auto_cache_is_on_the_gpu():
    from data import ImageSet
    from train import images_for
    images = torch.randint(0, 256, (11, 3, 64, 64), dtype=torch.uint8)
    assert images_for(ImageSet(images, np.zeros(11), [""] * 11, [None] * 11),
                      {"cache_device": "auto"}, torch.device("cuda")).is_cuda


@needs_gpu
def test_a_gpu_run_equals_the_cpu_run_to_float32_rounding(tmp_path, toy_class, monkeypatch):
    # TF32 off everywhere (cuDNN's convolutions default to it): float32 on both devices
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    _, cpu = trained_state(tmp_path, "cpu", device="cpu", test_rotations="fixed")
    _, gpu = trained_state(tmp_path, "gpu", device="cuda", test_rotations="fixed")
    # same seed, same draws; only the order of floating-point sums differs between devices
    np.testing.assert_allclose(gpu["loss_history"], cpu["loss_history"], rtol=1e-4)
    np.testing.assert_allclose(gpu["test_scores"].numpy(), cpu["test_scores"].numpy(), rtol=1e-3)
    assert gpu["threshold"] == pytest.approx(cpu["threshold"], rel=1e-3)
    assert gpu["auroc_history"] == pytest.approx(cpu["auroc_history"], abs=1 / 36)  # 6 x 6 pairs
    for key in cpu["flow"]:
        np.testing.assert_allclose(gpu["flow"][key].numpy(), cpu["flow"][key].numpy(),
                                   rtol=1e-3, atol=1e-5)
