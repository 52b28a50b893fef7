"""Adam as the flow trains with it: torch's arithmetic whatever the kernel and stepping, a
state that resumes on any device with that device's kernel, and nothing left alive after a
run (the in-backward hooks once kept every run's flow and moments)."""
import gc
import weakref

import pytest
import torch

import main
import train
from adam import (AdamAfterBackward, AdamInBackward, kernel_flags, make_optimizer,
                  uses_fused_kernel)
from conftest import tiny_args
from model import build_flow, flow_parameters, nll_loss

ADAM = dict(lr=1e-2, betas=(0.8, 0.8), eps=1e-4, weight_decay=1e-5)


def steps(flow, optimizer, x, n):
    for _ in range(n):
        nll_loss(*flow(x)).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def twin_flows(n=3):
    torch.manual_seed(0)
    flows = [build_flow(8, 2, 16, 0.0, 3.0) for _ in range(n)]
    for flow in flows[1:]:
        flow.load_state_dict(flows[0].state_dict())
    return flows


@pytest.mark.parametrize("fused", [False, True])
@pytest.mark.parametrize("kind", [AdamInBackward, AdamAfterBackward])
def test_each_way_of_stepping_equals_one_torch_adam_and_resumes_exactly(fused, kind):
    flows, x = twin_flows(), torch.randn(6, 8)
    ours = kind(flow_parameters(flows[0]), **ADAM, **kernel_flags(fused))
    plain = torch.optim.Adam(flow_parameters(flows[1]), **ADAM, **kernel_flags(fused))
    steps(flows[0], ours, x, 2)
    steps(flows[1], plain, x, 2)
    saved = ours.state_dict()  # checkpoint half-way, resume with the other way of stepping
    other = AdamAfterBackward if kind is AdamInBackward else AdamInBackward
    resumed = other(flow_parameters(flows[2]), **ADAM, **kernel_flags(fused))
    flows[2].load_state_dict(flows[0].state_dict())
    resumed.load_state_dict(saved)
    steps(flows[2], resumed, x, 2)
    steps(flows[1], plain, x, 2)
    assert all(torch.equal(a, b) for a, b in zip(flows[2].parameters(), flows[1].parameters()))
    mine, ref = resumed.state_dict(), plain.state_dict()
    assert mine["param_groups"][0]["params"] == ref["param_groups"][0]["params"]
    for i in ref["state"]:
        for key in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.equal(mine["state"][i][key], ref["state"][i][key])
    if kind is AdamInBackward:  # its point: no gradient outlives its parameter's update
        assert all(p.grad is None for p in flows[0].parameters())


def test_fused_and_single_tensor_kernels_differ_in_rounding_only():
    flows, x = twin_flows(2), torch.randn(6, 8)
    fused = make_optimizer(flows[0], **ADAM, kernel="fused")
    single = make_optimizer(flows[1], **ADAM, kernel="single")
    steps(flows[0], fused, x, 5)
    steps(flows[1], single, x, 5)
    pairs = list(zip(flow_parameters(flows[0]), flow_parameters(flows[1])))
    assert any(not torch.equal(a, b) for a, b in pairs)  # else the option would be pointless
    assert max((a - b).abs().max().item() for a, b in pairs) < 1e-5


@pytest.mark.parametrize("saved_fused", [False, True])
def test_a_resumed_optimizer_keeps_the_kernel_of_its_own_process(saved_fused):
    flows, x = twin_flows(2), torch.randn(6, 8)
    saver = make_optimizer(flows[0], **ADAM, kernel="fused" if saved_fused else "single")
    steps(flows[0], saver, x, 1)
    loader = make_optimizer(flows[1], **ADAM, kernel="single" if saved_fused else "fused")
    loader.load_state_dict(saver.state_dict())
    assert all(opt.param_groups[0]["fused"] is (not saved_fused) for opt in loader.optimizers)
    steps(flows[1], loader, x, 1)  # the fused kernel wants its step count as a float tensor


def dropped_after_use(make):
    """Weak references to a flow's parameters and Adam moments once flow and optimizer are
    dropped after a training step."""
    flow = build_flow(8, 2, 16, 0.0, 3.0)
    optimizer = make(flow)
    steps(flow, optimizer, torch.randn(6, 8), 1)
    refs = [weakref.ref(p) for p in flow.parameters()]
    refs += [weakref.ref(t) for s in optimizer.state_dict()["state"].values()
             for t in (s["exp_avg"], s["exp_avg_sq"])]
    del flow, optimizer
    gc.collect()
    return [r for r in refs if r() is not None]


@pytest.mark.parametrize("kernel", ["single", "fused"])
def test_a_dropped_flow_and_its_optimizer_are_freed(kernel):
    assert dropped_after_use(lambda flow: make_optimizer(flow, **ADAM, kernel=kernel)) == []


def test_auto_takes_the_reference_loop_on_the_cpu_and_the_fused_kernel_on_a_gpu():
    flow = build_flow(8, 2, 16, 0.0, 3.0)
    assert all(not opt.param_groups[0]["fused"] for opt in make_optimizer(flow, **ADAM).optimizers)
    assert uses_fused_kernel("auto", on_gpu=True) and not uses_fused_kernel("auto", on_gpu=False)
    assert uses_fused_kernel("fused", on_gpu=False) and not uses_fused_kernel("single", on_gpu=True)


@pytest.mark.slow
def test_no_tensor_of_a_run_outlives_it(tmp_path, toy_class, monkeypatch):
    refs, real_setup = [], train.setup_model

    def watched_setup(cfg, device):
        model, optimizer, generator = real_setup(cfg, device)
        refs.extend(weakref.ref(p) for p in model.flow.parameters())
        refs.append(weakref.ref(optimizer))
        return model, optimizer, generator
    monkeypatch.setattr(train, "setup_model", watched_setup)
    rows = main.train_all(tiny_args(tmp_path, seeds=[0, 1]))
    assert [r["status"] for r in rows] == ["ok", "ok"]
    assert refs and [r for r in refs if r() is not None] == []
