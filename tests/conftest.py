"""Shared helpers: tiny configs and synthetic data written by the tests themselves."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

torch.set_num_threads(2)


def tiny_args(tmp_path, **extra):
    """--name=value arguments for a run that takes seconds on a CPU."""
    values = dict(dataset_path=str(tmp_path / "data"), class_names=["toy"], make_demo_data=True,
                  pretrained=False, device="cpu", img_size=64, n_scales=1, n_coupling_blocks=2,
                  fc_internal=32, n_transforms=2, n_transforms_test=4, batch_size=8,
                  meta_epochs=2, sub_epochs=1, num_workers=0, verbose=False,
                  checkpoint_dir=str(tmp_path / "ckpt"), results_dir=str(tmp_path / "results"),
                  transforms_curve=[1, 2, 4],  # the default's 127 rotations per image: seconds
                  )
    values.update(extra)
    return [f"--{k}={v!r}" for k, v in values.items()]


@pytest.fixture
def toy_class(tmp_path):
    """A small synthetic class on disk (the demo generator at 64 px)."""
    from prepare.demo import write_demo_class
    class_dir = tmp_path / "data" / "toy"
    write_demo_class(class_dir, seed=0, size=64, n_train=16, n_test_good=6, n_test_bad=6)
    return class_dir


def loss_that_turns_nan_at(call, real_loss):
    """nll_loss that returns NaN at its call-th call (the toy class takes 2 steps per epoch)."""
    calls = {"n": 0}

    def loss(z, log_det):
        calls["n"] += 1
        value = real_loss(z, log_det)
        return value * float("nan") if calls["n"] == call else value
    return loss


def train_toy(cfg, name="toy", **kwargs):
    """train.train_class on a class folder under cfg's dataset_path (listed like main.py does)."""
    from layout import list_class
    from train import train_class
    return train_class(cfg, list_class(cfg["dataset_path"], name), torch.device("cpu"), **kwargs)


TRAINING_FIXTURES = {"toy_class", "trained"}  # a test that takes one of these trains a model


def pytest_collection_modifyitems(items):
    """Mark every test that trains (it asks for a toy class or a trained model) as slow, so
    `-m "not slow"` runs the fast tier without a list to keep up to date."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)
