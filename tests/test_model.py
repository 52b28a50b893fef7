"""The flow, the loss and the backbone against the paper's formulas (docs/method.md)."""
import numpy as np
import pytest
import torch
from torchvision.models import alexnet

from model import (DifferNet, MultiScaleFeatures, WeightsUnavailableError, anomaly_score,
                   build_flow, flow_parameters, freeze, load_alexnet_features, nll_loss, soft_clamp)
from adam import make_optimizer


def small_flow(n_feat=8, blocks=3, width=16, alpha=3.0):
    torch.manual_seed(0)
    flow = build_flow(n_feat, blocks, width, 0.0, alpha)
    with torch.no_grad():  # larger weights than the init, so the clamp and exp really act
        for p in flow_parameters(flow):
            p.normal_(0, 0.3)
    return flow.double()


def test_flow_is_invertible():
    flow = small_flow()
    x = torch.randn(5, 8, dtype=torch.float64)
    z, _ = flow(x)
    x_back, _ = flow(z, rev=True)
    assert torch.allclose(x, x_back, atol=1e-9)


def test_log_det_equals_autograd_jacobian():
    flow = small_flow()
    x = torch.randn(3, 8, dtype=torch.float64)
    _, log_det = flow(x)
    for i in range(3):
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], x[i])
        assert torch.allclose(log_det[i], torch.slogdet(jac)[1], atol=1e-8)


def paper_block(x, perm, subnet1, subnet2, alpha):
    """docs/method.md: permute, then y1 = x1 exp(s2(x2)) + t2(x2), y2 = x2 exp(s1(y1)) + t1(y1), with
    s = alpha * 0.636 * atan(a / alpha); log-det = sum of the clamped s."""
    x = x[:, perm]
    half = x.shape[1] // 2
    x1, x2 = x[:, :half], x[:, half:]
    a2 = subnet2(x2)
    s2 = alpha * 0.636 * torch.atan(a2[:, :half] / alpha)
    y1 = x1 * torch.exp(s2) + a2[:, half:]
    a1 = subnet1(y1)
    s1 = alpha * 0.636 * torch.atan(a1[:, :half] / alpha)
    y2 = x2 * torch.exp(s1) + a1[:, half:]
    return torch.cat([y1, y2], 1), s1.sum(1) + s2.sum(1)


def test_flow_equals_paper_formulas():
    alpha = 3.0
    flow = small_flow(alpha=alpha)
    x = torch.randn(4, 8, dtype=torch.float64)
    y, log_det = x, torch.zeros(4, dtype=torch.float64)
    modules = list(flow.module_list)
    for k in range(0, len(modules), 2):
        perm = np.random.RandomState(k // 2).permutation(8)  # PermuteRandom(seed=k), as in docs/method.md
        coupling = modules[k + 1]
        y, ld = paper_block(y, perm, coupling.subnet1, coupling.subnet2, alpha)
        log_det = log_det + ld
    z, flow_log_det = flow(x)
    assert torch.allclose(z, y, atol=1e-10)
    assert torch.allclose(flow_log_det, log_det, atol=1e-10)


def test_soft_clamp_is_the_papers_not_freias_atan():
    a = torch.tensor([-50.0, -3.0, 0.0, 1.0, 100.0])
    alpha = 3.0
    s = alpha * soft_clamp(alpha)(a)  # FrEIA multiplies the activation by clamp=alpha
    assert torch.allclose(s, alpha * 0.636 * torch.atan(a / alpha))
    assert not torch.allclose(s, alpha * 0.636 * torch.atan(a))


def test_subnet_shape_follows_spec():
    flow = build_flow(768, 1, 2048, 0.0, 3.0)
    layers = [m for m in flow.module_list[1].subnet1 if isinstance(m, torch.nn.Linear)]
    assert [(layer.in_features, layer.out_features) for layer in layers] == [
        (384, 2048), (2048, 2048), (2048, 2048), (2048, 768)]


def test_loss_and_score_formulas():
    z = torch.tensor([[1.0, 2.0], [0.0, -1.0]])
    log_det = torch.tensor([0.5, -0.25])
    expected = ((0.5 * 5 - 0.5) + (0.5 * 1 + 0.25)) / 2 / 2
    assert nll_loss(z, log_det).item() == pytest.approx(expected)
    assert torch.allclose(anomaly_score(z), torch.tensor([2.5, 0.5]))


def test_multiscale_features_are_mean_pooled_and_concatenated():
    backbone = freeze(alexnet(weights=None).features)
    extractor = MultiScaleFeatures(backbone, 2)
    x = torch.randn(2, 3, 128, 128)
    feats = extractor(x)
    small = torch.nn.functional.interpolate(x, size=(64, 64), mode="nearest")
    expected = torch.cat([backbone(x).mean((2, 3)), backbone(small).mean((2, 3))], 1)
    assert feats.shape == (2, 512)
    assert torch.allclose(feats, expected, atol=1e-5)


def test_backbone_frozen_and_unchanged_by_a_training_step():
    model = DifferNet(freeze(alexnet(weights=None).features), 1, 2, 16, 0.0, 3.0)
    before = {k: v.clone() for k, v in model.features.state_dict().items()}
    optimizer = make_optimizer(model.flow, 1e-2, (0.8, 0.8), 1e-4, 1e-5)
    trained = {id(p) for p in optimizer.params}
    assert not any(id(p) in trained for p in model.features.parameters())
    assert all(not p.requires_grad for p in model.features.parameters())
    model.train()
    assert not model.features.backbone.training
    z, log_det = model(torch.randn(4, 3, 64, 64))
    nll_loss(z, log_det).backward()
    optimizer.step()
    assert all(torch.equal(before[k], v) for k, v in model.features.state_dict().items())
    assert all(p.grad is None for p in model.features.parameters())


def test_weights_file_full_or_features_only(tmp_path):
    net = alexnet(weights=None)
    full, feats = tmp_path / "full.pth", tmp_path / "features.pth"
    torch.save(net.state_dict(), full)
    torch.save(net.features.state_dict(), feats)
    for path in (full, feats):
        loaded = load_alexnet_features(True, str(path))
        assert torch.equal(loaded[0].weight, net.features[0].weight)


def test_torchvision_cache_is_used(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    net = alexnet(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(net.state_dict(), tmp_path / "hub" / "checkpoints" / "alexnet-owt-7be5be79.pth")
    loaded = load_alexnet_features(True)
    assert torch.equal(loaded[0].weight, net.features[0].weight)


def test_missing_or_wrong_weights_say_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(WeightsUnavailableError, match="(?s)not found.*--pretrained=False"):
        load_alexnet_features(True, str(tmp_path / "nope.pth"))
    bad = tmp_path / "bad.pth"
    torch.save({"something": torch.zeros(1)}, bad)
    with pytest.raises(WeightsUnavailableError, match="not an AlexNet state_dict"):
        load_alexnet_features(True, str(bad))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))

    def offline(*args, **kwargs):
        raise OSError("network unreachable")
    import torchvision.models._api as weights_api  # where torchvision's weights download happens
    monkeypatch.setattr(weights_api, "load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError, match="alexnet-owt-7be5be79.pth"):
        load_alexnet_features(True)
