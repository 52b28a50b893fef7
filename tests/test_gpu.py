"""GPU path: the same pipeline on CUDA, with the fast options; skipped without a GPU."""
import numpy as np
import pytest
import torch

import main
from conftest import tiny_args
from checkpoints import checkpoint_path, load_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_gpu_run_matches_cpu_run(tmp_path, toy_class):
    main.train_all(tiny_args(tmp_path, checkpoint_dir=str(tmp_path / "cpu"), device="cpu"))
    main.train_all(tiny_args(tmp_path, checkpoint_dir=str(tmp_path / "gpu"), device="cuda"))  # cache: auto
    cpu = load_checkpoint(checkpoint_path(tmp_path / "cpu", "toy", 0))
    gpu = load_checkpoint(checkpoint_path(tmp_path / "gpu", "toy", 0))
    # same seed, same draws; only floating-point order differs between the devices
    np.testing.assert_allclose(gpu["test_scores"].numpy(), cpu["test_scores"].numpy(), rtol=0.05)


def test_gpu_fast_options_run(tmp_path, toy_class):
    # the cache in host memory: batches staged in pinned memory, copied without blocking
    rows = main.train_all(tiny_args(tmp_path, device="cuda", amp_bf16=True, tf32=True,
                              cache_device="cpu", grad_map_viz=True))
    assert 0.0 <= rows[0]["auroc_last"] <= 1.0 and 0.0 <= rows[0]["pixel_auroc"] <= 1.0
    state = load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy", 0))
    assert len(state["rng_cuda"]) == torch.cuda.device_count()


def test_auto_cache_is_on_the_gpu_and_a_host_cache_crosses_from_pinned_memory(monkeypatch):
    import data
    from data import ImageSet
    from model import load_alexnet_features
    from train import TrainStep, build_model, images_for, make_optimizer, train_one_epoch
    images = torch.randint(0, 256, (11, 3, 64, 64), dtype=torch.uint8)
    cuda = torch.device("cuda")
    assert images_for(ImageSet(images, np.zeros(11), [""] * 11, [None] * 11),
                      {"cache_device": "auto"}, cuda).is_cuda
    crossings, real = [], data.to_device

    def recording(images_uint8, device):
        crossings.append((len(images_uint8), images_uint8.is_pinned()))
        return real(images_uint8, device)
    monkeypatch.setattr(data, "to_device", recording)
    model = build_model(dict(n_scales=1, n_coupling_blocks=2, fc_internal=32, dropout=0.0,
                             clamp_alpha=3.0), load_alexnet_features(False)).to(cuda)
    optimizer = make_optimizer(model.flow, 2e-4, (0.8, 0.8), 1e-4, 1e-5)
    train_one_epoch(model, optimizer, images, TrainStep(4, 3), cuda, torch.Generator().manual_seed(0))
    assert crossings == [(4, True), (4, True), (3, True)]
