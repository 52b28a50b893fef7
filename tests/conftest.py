"""Shared helpers: tiny configs, synthetic data written by the tests themselves, and one
finished toy run that every test which only reads a trained model shares."""
import contextlib
import hashlib
import io
import os
import sys
from pathlib import Path
from typing import NamedTuple

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


def write_toy_class(class_dir):
    """The synthetic class of the tests (the demo generator at 64 px), the same bytes each time."""
    from prepare.demo import write_demo_class
    write_demo_class(class_dir, seed=0, size=64, n_train=16, n_test_good=6, n_test_bad=6)
    return class_dir


@pytest.fixture
def toy_class(tmp_path):
    """The toy class under tmp_path/data/toy, where tiny_args(tmp_path) looks for it."""
    return write_toy_class(tmp_path / "data" / "toy")


UNINTERRUPTED_EPOCHS = 4


@pytest.fixture(scope="session")
def uninterrupted_run(tmp_path_factory):
    """The finished checkpoint of the toy class trained by tiny_args for UNINTERRUPTED_EPOCHS
    meta epochs without a break: what every interrupted and resumed run must end as, bit for
    bit. Shared by the session; the tests read it only."""
    import main
    from checkpoints import checkpoint_path, load_checkpoint
    root = tmp_path_factory.mktemp("uninterrupted")
    write_toy_class(root / "data" / "toy")
    main.train_all(tiny_args(root, meta_epochs=UNINTERRUPTED_EPOCHS))
    return load_checkpoint(checkpoint_path(root / "ckpt", "toy", 0))


def assert_same_training(resumed, whole):
    """Two finished checkpoints hold the same history, test scores and flow weights, bit for bit."""
    assert resumed["auroc_history"] == whole["auroc_history"]
    assert resumed["loss_history"] == whole["loss_history"]
    assert torch.equal(resumed["test_scores"], whole["test_scores"])
    assert resumed["flow"].keys() == whole["flow"].keys()
    for key in whole["flow"]:
        assert torch.equal(resumed["flow"][key], whole["flow"][key]), key


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


class FinishedRun(NamedTuple):
    """What `python main.py` leaves behind for the toy class, and the model read back from its
    checkpoint. Shared by the whole session: read it, never change it (copy what you edit)."""
    root: Path          # dataset_path is root/data, outputs under root/ckpt and root/results
    args: list          # the command line it was trained with
    cfg: dict           # its resolved config
    rows: list          # main.train_all's run rows
    printed: str        # what the run printed
    class_dir: Path
    checkpoint: Path
    results: Path       # root/results/toy/seed0
    state: dict         # the checkpoint, loaded
    model: object       # the flow and backbone read back from the checkpoint (eval mode)
    test_set: object    # the test images as main.py loads them


FINISHED_RUN_SETTINGS = dict(
    meta_epochs=3, sub_epochs=2, make_demo_data=False, grad_map_viz=True,
    # fixed test rotations: evaluate.py scores with them too, so its numbers equal training's
    test_rotations="fixed")


def tree_digest(folder):
    """SHA-256 over every file's relative path and bytes below folder."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(folder).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory):
    """One toy class (24 training images, 6 good and 12 anomalous test images with masks at
    64 px) trained by main.train_all for 3 meta epochs of 2 sub epochs. At the end of the
    session it must be as it was: a test that edited it would have misled the others."""
    import evaluate
    import main
    from checkpoints import checkpoint_path, load_checkpoint
    from configurator import resolve_config
    from layout import list_class
    from prepare.demo import write_demo_class
    from train import load_class_data
    root = tmp_path_factory.mktemp("finished_run")
    class_dir = root / "data" / "toy"
    write_demo_class(class_dir, seed=0, size=64, n_train=24, n_test_good=6, n_test_bad=12)
    args = tiny_args(root, **FINISHED_RUN_SETTINGS)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        rows = main.train_all(args)
    cfg = resolve_config(args)
    checkpoint = checkpoint_path(root / "ckpt", "toy", 0)
    model, _, _ = evaluate.load_trained_model(checkpoint, torch.device("cpu"))
    _, test_set = load_class_data(cfg, list_class(cfg["dataset_path"], "toy"))
    before = tree_digest(root)
    yield FinishedRun(root, args, cfg, rows, printed.getvalue(), class_dir, checkpoint,
                      root / "results" / "toy" / "seed0", load_checkpoint(checkpoint), model,
                      test_set)
    assert tree_digest(root) == before, f"a test changed the shared finished run in '{root}'"


TRAINING_FIXTURES = {"finished_run", "uninterrupted_run"}  # they train, once per session


def pytest_collection_modifyitems(items):
    """Mark every test that needs the session's trained model as slow (the others that train
    or start processes carry @pytest.mark.slow), so `-m "not slow"` runs the fast tier."""
    for item in items:
        if TRAINING_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


class TrainingInTheFastTier(AssertionError):
    pass


@pytest.fixture(autouse=True)
def fast_tier_neither_trains_nor_starts_processes(request, monkeypatch):
    """A test without the slow mark that trains or starts a process fails, saying so: the
    fast tier stays fast without anyone timing it. Checked again at the test's end, since a
    run catches its own failure and goes on."""
    if request.node.get_closest_marker("slow"):
        yield
        return
    import subprocess
    import train
    refused = []

    def refuse(what):
        def refused_call(*args, **kwargs):
            refused.append(what)
            raise TrainingInTheFastTier(f"this test {what}: mark it @pytest.mark.slow")
        return refused_call
    monkeypatch.setattr(train, "train_meta_epoch", refuse("trains a model"))
    monkeypatch.setattr(subprocess, "Popen", refuse("starts a process"))
    yield
    if refused:
        raise TrainingInTheFastTier(f"this test {refused[0]}: mark it @pytest.mark.slow")
