"""Refactoring guard: a tiny configuration trained end to end must give exactly the pinned
checkpoint tensors, test scores, threshold and metrics (tests/data/pinned_tiny.json).

Floating-point results depend on the CPU's kernels, so the pin holds for the machine kind it was
made on (recorded in the file); elsewhere the test is skipped. Regenerate it with
`python tests/test_pinned.py` only after a change that is meant to alter numbers, and say why in
the commit.
"""
import hashlib
import json
import os
import platform
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIN = os.path.join(ROOT, "tests", "data", "pinned_tiny.json")


def machine():
    return {"torch": torch.__version__, "machine": platform.machine(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability()}


def tensor_digest(tree):
    """SHA-256 over every tensor of a nested dict/list, in key order, with names and shapes."""
    digest = hashlib.sha256()

    def walk(prefix, obj):
        if isinstance(obj, torch.Tensor):
            t = obj.detach().cpu().contiguous().reshape(-1)
            digest.update(f"{prefix}{tuple(t.shape)}{t.dtype}".encode())
            digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
        elif isinstance(obj, dict):
            for k in sorted(obj, key=str):
                walk(f"{prefix}/{k}", obj[k])
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(f"{prefix}/{i}", v)
    walk("", tree)
    return digest.hexdigest()


def pinned_values(tmp_path):
    """Train the tiny configuration and return what the pin compares."""
    sys.path.insert(0, ROOT)
    import main
    from conftest import tiny_args
    from prepare.demo import write_demo_class
    write_demo_class(tmp_path / "data" / "toy", seed=0, size=64, n_train=16, n_test_good=6,
                     n_test_bad=6)
    rows = main.train_all(tiny_args(tmp_path, meta_epochs=2, keep_optimizer=True))  # the pin has the moments
    ckpt = next((tmp_path / "ckpt").rglob("checkpoint.pt"))
    state = torch.load(ckpt, weights_only=True)
    metric_keys = ("auroc_last", "auroc_max", "aupr", "f1_max", "pixel_auroc", "aupro")
    return {"flow": tensor_digest(state["flow"]), "optimizer": tensor_digest(state["optimizer"]),
            "test_scores": [repr(float(s)) for s in state["test_scores"]],
            "threshold": repr(float(state["threshold"])),
            "metrics": {k: repr(float(rows[0][k])) for k in metric_keys}}


@pytest.mark.slow
def test_tiny_configuration_matches_the_pin(tmp_path):
    with open(PIN) as f:
        pin = json.load(f)
    if pin["machine"] != machine():
        pytest.skip(f"pin made on {pin['machine']}, this is {machine()}")
    got = pinned_values(tmp_path)
    for key in ("flow", "optimizer", "test_scores", "threshold", "metrics"):
        assert got[key] == pin["values"][key], key


if __name__ == "__main__":
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        values = pinned_values(Path(tmp))
    with open(PIN, "w") as f:
        json.dump({"machine": machine(), "values": values}, f, indent=1)
    print(f"wrote {PIN}")
