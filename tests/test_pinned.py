"""Refactoring guard: a tiny configuration trained end to end must give the pinned test scores,
threshold and metrics (tests/data/pinned_tiny.json) on every CPU, within a tolerance that covers
another CPU's kernels; on the machine kind the pin was made on (recorded in the file) the
checkpoint tensors, scores, threshold and metrics must match bit for bit.

Regenerate the pin, after a change that is meant to alter numbers (and say why in the commit):

    python tests/test_pinned.py

The direct guards of the protocol's constants are tests/test_protocol.py and
tests/test_gradient_maps.py (fast tier); this pin catches what they do not name.
"""
import hashlib
import json
import math
import os
import platform
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PIN = os.path.join(ROOT, "tests", "data", "pinned_tiny.json")
# Other kernels (this AVX2 machine run with ATEN_CPU_CAPABILITY=default ONEDNN_MAX_CPU_ISA=SSE41
# MKL_ENABLE_INSTRUCTIONS=SSE4_2, as a CPU without AVX would) moved the scores and threshold by
# 1.4e-7 relative at most and the pixel metrics by 1.5e-7; the tolerances leave 70x room.
SCORES_RTOL = 1e-5
METRICS_ATOL = 1e-3  # the image metrics of 12 images move only when a near tie flips
EXACT_KEYS = ("flow", "optimizer", "test_scores", "threshold", "metrics")


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


def load_pin():
    with open(PIN) as f:
        return json.load(f)


@pytest.fixture(scope="module")
def trained_tiny(tmp_path_factory):
    return pinned_values(tmp_path_factory.mktemp("pinned"))


def relative_differences(got, pinned):
    return [abs(float(g) - float(p)) / abs(float(p)) for g, p in zip(got, pinned)]


@pytest.mark.slow
def test_tiny_configuration_matches_the_pin_within_tolerance_on_any_cpu(trained_tiny):
    pin = load_pin()["values"]
    assert len(trained_tiny["test_scores"]) == len(pin["test_scores"])
    worst = max(relative_differences(trained_tiny["test_scores"] + [trained_tiny["threshold"]],
                                     pin["test_scores"] + [pin["threshold"]]))
    assert worst <= SCORES_RTOL, f"scores moved by {worst:.2e} relative"
    for key, value in pin["metrics"].items():
        got, want = float(trained_tiny["metrics"][key]), float(value)
        assert math.isclose(got, want, abs_tol=METRICS_ATOL), f"{key}: {got} vs pinned {want}"


@pytest.mark.slow
def test_tiny_configuration_matches_the_pin_bit_for_bit_on_its_machine_kind(trained_tiny):
    pin = load_pin()
    if pin["machine"] != machine():
        pytest.skip(f"exact pin made on {pin['machine']}, this is {machine()}")
    for key in EXACT_KEYS:
        assert trained_tiny[key] == pin["values"][key], key


if __name__ == "__main__":
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as tmp:
        values = pinned_values(Path(tmp))
    with open(PIN, "w") as f:
        json.dump({"machine": machine(), "values": values}, f, indent=1)
    print(f"wrote {PIN}")
