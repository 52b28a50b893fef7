"""GPU path: the same pipeline on CUDA, with the fast options; skipped without a GPU."""
import numpy as np
import pytest
import torch

import main
from conftest import tiny_args
from train import checkpoint_path
from utils import load_checkpoint

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_gpu_run_matches_cpu_run(tmp_path, toy_class):
    main.run(tiny_args(tmp_path, checkpoint_dir=str(tmp_path / "cpu"), device="cpu"))
    main.run(tiny_args(tmp_path, checkpoint_dir=str(tmp_path / "gpu"), device="cuda"))
    cpu = load_checkpoint(checkpoint_path(tmp_path / "cpu", "toy"))
    gpu = load_checkpoint(checkpoint_path(tmp_path / "gpu", "toy"))
    # same seed, same draws; only floating-point order differs between the devices
    np.testing.assert_allclose(gpu["test_scores"].numpy(), cpu["test_scores"].numpy(), rtol=0.05)


def test_gpu_fast_options_run(tmp_path, toy_class):
    rows = main.run(tiny_args(tmp_path, device="cuda", amp_bf16=True, tf32=True,
                              cache_device="device", grad_map_viz=True))
    assert 0.0 <= rows[0]["auroc_last"] <= 1.0 and 0.0 <= rows[0]["pixel_auroc"] <= 1.0
    state = load_checkpoint(checkpoint_path(tmp_path / "ckpt", "toy"))
    assert len(state["rng_cuda"]) == torch.cuda.device_count()
