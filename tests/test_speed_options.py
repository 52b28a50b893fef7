"""The speed options leave the method alone: same scores, or within a stated tolerance."""
from dataclasses import replace

import numpy as np
import pytest
import torch

import main
from conftest import tiny_args, train_toy
from checkpoints import checkpoint_path, load_checkpoint
from scoring import evaluation_generator, score_set
from configurator import resolve_config

BF16_TOLERANCE = 0.05  # relative difference of bf16-autocast scores from fp32 ones, at most


@pytest.mark.slow
def test_channels_last_gives_the_plain_scores(tmp_path, toy_class):
    cfg = resolve_config(tiny_args(tmp_path, meta_epochs=1, channels_last=False, save_model=False))
    run = train_toy(cfg)
    run.model.speed = replace(run.model.speed, channels_last=True)
    run.model.features.to(memory_format=torch.channels_last)
    scores = score_set(run.model, run.test_set.images, cfg, torch.device("cpu"),
                       evaluation_generator(0, 0))
    np.testing.assert_allclose(scores, run.state["test_scores"].numpy(), rtol=1e-4)


@pytest.mark.slow
def test_bf16_backbone_scores_within_tolerance(tmp_path, toy_class):
    cfg = resolve_config(tiny_args(tmp_path, meta_epochs=1, save_model=False))
    run = train_toy(cfg)
    run.model.speed = replace(run.model.speed, amp_bf16=True)
    scores = score_set(run.model, run.test_set.images, cfg, torch.device("cpu"),
                       evaluation_generator(0, 0))
    plain = run.state["test_scores"].numpy()
    assert np.max(np.abs(scores - plain) / plain) < BF16_TOLERANCE
    assert not np.array_equal(scores, plain)  # bf16 really ran


@pytest.mark.slow
def test_cache_on_device_and_memory_mapped_cache_give_identical_runs(tmp_path, toy_class):
    main.train_all(tiny_args(tmp_path, checkpoint_dir=str(tmp_path / "plain")))
    main.train_all(tiny_args(tmp_path, checkpoint_dir=str(tmp_path / "fast"), cache_device="device",
                       cache_mmap=str(tmp_path / "mmap")))
    plain = load_checkpoint(checkpoint_path(tmp_path / "plain", "toy", 0))
    fast = load_checkpoint(checkpoint_path(tmp_path / "fast", "toy", 0))
    assert torch.equal(plain["test_scores"], fast["test_scores"])
    names = sorted(p.name for p in (tmp_path / "mmap").iterdir() if p.suffix == ".npy")
    assert len(names) == 2 and names[0].startswith("toy_test_64px_")
    assert names[1].startswith("toy_train_64px_")
