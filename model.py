"""DifferNet: frozen multi-scale AlexNet features and a normalizing flow (paper section 3).

Pure torch: no optimizer, device choice, printing or file output here.
"""
import os
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from FrEIA.framework import SequenceINN
from FrEIA.modules import GLOWCouplingBlock, PermuteRandom
from torchvision.models import AlexNet_Weights, alexnet

FEATURES_PER_SCALE = 256  # channels of AlexNet's last convolution
ATAN_SCALE = 0.636        # ~2/pi: maps atan's range to about [-1, 1] (paper eq. 2)
OUTPUT_CLAMP = 1e6        # the reference's coupling blocks clamp their outputs to +-1e6


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were requested but cannot be had."""


def _weights_help(detail):
    return (f"cannot load ImageNet AlexNet weights: {detail}\n"
            f"Either put torchvision's file alexnet-owt-7be5be79.pth into "
            f"{os.path.join(torch.hub.get_dir(), 'checkpoints')} (or any AlexNet state_dict and "
            f"pass --weights_path=FILE), or run with --pretrained=False: random features, a "
            f"pipeline check only, whose AUROC says nothing about DifferNet")


def _features_state(state):
    """Accept a full AlexNet state_dict or only its `features` part."""
    if any(k.startswith("features.") for k in state):
        return {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
    return state


def load_alexnet_features(pretrained, weights_path=""):
    """AlexNet's convolutional part with ImageNet weights (torchvision or a file), or random."""
    features = alexnet(weights=None).features
    if weights_path:
        if not os.path.isfile(weights_path):
            raise WeightsUnavailableError(_weights_help(f"weights_path '{weights_path}' not found"))
        try:
            state = torch.load(weights_path, map_location="cpu", weights_only=True)
            features.load_state_dict(_features_state(state))
        except Exception as e:
            raise WeightsUnavailableError(_weights_help(
                f"'{weights_path}' is not an AlexNet state_dict ({type(e).__name__}: {e})")) from None
    elif pretrained:
        try:
            features = alexnet(weights=AlexNet_Weights.IMAGENET1K_V1).features
        except Exception as e:
            raise WeightsUnavailableError(_weights_help(
                f"download failed or no network ({type(e).__name__})")) from None
    return freeze(features)


def freeze(module):
    """No gradients, no optimizer state, eval mode: the backbone is never trained."""
    module.requires_grad_(False)
    return module.eval()


class MultiScaleFeatures(nn.Module):
    """Mean-pooled AlexNet features of the image at n_scales sizes, concatenated (section 3.1)."""

    def __init__(self, backbone, n_scales):
        super().__init__()
        self.backbone = backbone
        self.n_scales = n_scales

    def train(self, mode=True):
        super().train(mode)
        self.backbone.eval()  # frozen: stays in eval mode whatever the caller asks
        return self

    def forward(self, images):
        side = images.shape[-1]
        feats = []
        for s in range(self.n_scales):
            x = images if s == 0 else F.interpolate(images, size=(side // 2 ** s,) * 2,
                                                    mode="nearest")
            feats.append(self.backbone(x).mean(dim=(2, 3)))
        return torch.cat(feats, dim=1)


def soft_clamp(alpha):
    """The paper's eq. 2 without FrEIA's outer factor: FrEIA multiplies by `clamp` = alpha itself,
    so s = alpha * 0.636 * atan(a / alpha)."""
    def activation(a):
        return ATAN_SCALE * torch.atan(a / alpha)
    return activation


def subnet_constructor(fc_internal, dropout):
    """Three hidden layers of fc_internal units with ReLU; outputs s and t together."""
    def build(c_in, c_out):
        return nn.Sequential(nn.Linear(c_in, fc_internal), nn.ReLU(), nn.Dropout(dropout),
                             nn.Linear(fc_internal, fc_internal), nn.ReLU(), nn.Dropout(dropout),
                             nn.Linear(fc_internal, fc_internal), nn.ReLU(), nn.Dropout(dropout),
                             nn.Linear(fc_internal, c_out))
    return build


class ClampedGLOWCouplingBlock(GLOWCouplingBlock):
    """FrEIA's GLOW coupling with its output clamped to +-OUTPUT_CLAMP, as the reference's
    blocks do (FrEIA's do not). Identity, gradient included, below 1e6 in magnitude, i.e. for
    any flow short of divergence; beyond, z stays finite as in the reference."""

    def forward(self, x, c=None, rev=False, jac=True):
        (y,), log_jac_det = super().forward(x, c or [], rev, jac)
        return (torch.clamp(y, -OUTPUT_CLAMP, OUTPUT_CLAMP),), log_jac_det


def build_flow(n_feat, n_coupling_blocks, fc_internal, dropout, clamp_alpha):
    """Fixed permutation (seed k for block k) + GLOW affine coupling, n_coupling_blocks times
    (paper section 3.3). With x split into halves x1, x2, a block computes
    y1 = x1 * exp(s2(x2)) + t2(x2) and y2 = x2 * exp(s1(y1)) + t1(y1); its log|det J| is the sum
    of the clamped log-scales s (eq. 2, soft_clamp); its output is clamped to +-1e6 as in the
    reference code (ClampedGLOWCouplingBlock)."""
    flow = SequenceINN(n_feat)
    for k in range(n_coupling_blocks):
        flow.append(PermuteRandom, seed=k)
        flow.append(ClampedGLOWCouplingBlock,
                    subnet_constructor=subnet_constructor(fc_internal, dropout),
                    clamp=clamp_alpha, clamp_activation=soft_clamp(clamp_alpha))
    return flow


def flow_parameters(flow):
    """Trainable parameters (PermuteRandom stores its permutation as a frozen Parameter)."""
    return [p for p in flow.parameters() if p.requires_grad]


@dataclass(frozen=True)
class Speed:
    """How the backbone runs. The defaults compute the plain float32 layout. The others change
    rounding, not the method (measured in docs/method.md, Speed options): channels_last and
    another backbone_batch move features by 1e-7 to 2e-6 of their scale, amp_bf16 (bfloat16
    autocast of the backbone) changes scores by up to a few per cent."""
    channels_last: bool = False  # channels-last convolutions and inputs
    amp_bf16: bool = False
    backbone_batch: int = 64     # transformed images per backbone pass (memory; rounding)
    tf32: bool = False           # TF32 for the flow's matmuls on CUDA (changes scores slightly)


@contextmanager
def matmul_tf32(enabled):
    """TF32 for CUDA matmuls inside the block only. The global switch would also reach the
    rotation grid (affine_grid is a matmul), and the nearest-neighbour rotation would then no
    longer hit the exact pixels."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


class DifferNet(nn.Module):
    """images -> (z, log|det J|). The backbone is frozen; only `flow` is trained."""

    def __init__(self, backbone, n_scales, n_coupling_blocks, fc_internal, dropout, clamp_alpha,
                 speed=Speed()):
        super().__init__()
        self.speed = speed
        self.features = MultiScaleFeatures(backbone, n_scales)
        if speed.channels_last:
            self.features.to(memory_format=torch.channels_last)
        self.flow = build_flow(FEATURES_PER_SCALE * n_scales, n_coupling_blocks, fc_internal,
                               dropout, clamp_alpha)

    def embed(self, images):
        """Features of a batch. Without input gradients (training, scoring) the backbone runs in
        inference mode, so no graph is kept for weights that never change."""
        if images.requires_grad:  # localisation: gradients must reach the pixels
            return self.features(images)
        with torch.inference_mode(), torch.autocast(images.device.type, dtype=torch.bfloat16,
                                                    enabled=self.speed.amp_bf16):
            feats = self.features(images)
        return feats.float().clone()  # a normal tensor the flow may record for backward

    def flow_numerics(self):
        """The numerics of the flow's forward and backward passes (speed.tf32)."""
        return matmul_tf32(self.speed.tf32)

    def forward(self, images):
        feats = self.embed(images)
        with self.flow_numerics():
            z, log_jac_det = self.flow(feats)
        return z, log_jac_det


def nll_loss(z, log_jac_det):
    """Paper eq. 4: mean over the batch of 0.5 ||z||^2 - log|det J|, per feature dimension."""
    return torch.mean(0.5 * torch.sum(z ** 2, dim=1) - log_jac_det) / z.shape[1]


def anomaly_score(z):
    """Per-sample score: mean of z^2 over the feature dimensions (section 3.4)."""
    return torch.mean(z ** 2, dim=1)
