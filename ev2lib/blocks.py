"""The building blocks of EfficientNetV2 (paper §3.2, Figure 2): MBConv and Fused-MBConv.

Module and attribute order reproduce torchvision's ``efficientnet.py`` exactly, so torchvision's state dicts
load into ev2lib unchanged (``features.{stage}.{block}.block.{layer}.{0=conv,1=bn}``, SE at ``block.2.fc1/fc2``).
"""
from __future__ import annotations

import math
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import SqueezeExcitation, StochasticDepth


class Conv2dSame(nn.Conv2d):
    """A convolution with TensorFlow's ``padding="same"`` (output ceil(in / stride)): for stride 2 on an even input TF
    pads 0 pixels top/left and 1 bottom/right where PyTorch's ``k//2`` pads both sides. The official and timm ``tf_``
    weights are exact only with TF's rule. The padding depends on the input size, so ``forward`` computes it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s, d in zip(x.shape[:-3:-1], self.kernel_size[::-1], self.stride[::-1], self.dilation[::-1]):
            total = max((math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size, 0)
            pads += [total // 2, total - total // 2]  # (left, right), then (top, bottom)
        return F.conv2d(F.pad(x, pads), self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def conv2d(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, padding: str = "symmetric") -> nn.Conv2d:
    """A bias-free k x k convolution with symmetric (PyTorch) or TF "same" padding."""
    if padding == "same" and stride > 1:
        return Conv2dSame(cin, cout, kernel, stride, padding=0, groups=groups, bias=False)
    # For stride 1 and an odd kernel, "same" is symmetric: k // 2 on every side.
    return nn.Conv2d(cin, cout, kernel, stride, padding=kernel // 2, groups=groups, bias=False)


class ConvBNAct(nn.Sequential):
    """conv -> BatchNorm -> SiLU (``act=False``: no activation, as after a projection)."""

    def __init__(self, cin, cout, kernel, stride=1, groups=1, act=True, bn_eps=1e-3, bn_momentum=0.1, padding="symmetric"):
        layers = [conv2d(cin, cout, kernel, stride, groups, padding), nn.BatchNorm2d(cout, eps=bn_eps, momentum=bn_momentum)]
        if act:
            layers.append(nn.SiLU(inplace=True))
        super().__init__(*layers)


def squeeze_excitation(channels: int, block_in: int, se_ratio: float) -> SqueezeExcitation:
    """Squeeze-and-excitation (Hu et al. 2018) with SiLU, torchvision's module (``fc1``/``fc2``, as torchvision's
    EfficientNet). The width is ``max(1, int(block_in * se_ratio))``, relative to the block's *input* channels as in
    the official code, not to the expanded channels it gates."""
    return SqueezeExcitation(channels, max(1, int(block_in * se_ratio)), activation=partial(nn.SiLU, inplace=True))


class _Residual(nn.Module):
    """Shared forward of both blocks: ``x + drop_path(block(x))`` when stride 1 and in == out, else ``block(x)``."""

    def _finish(self, cin: int, cout: int, stride: int, drop_path: float):
        self.use_residual = stride == 1 and cin == cout
        # Stochastic depth (Huang et al. 2016): drop the whole residual branch per sample with probability p.
        self.stochastic_depth = StochasticDepth(drop_path if self.use_residual else 0.0, "row")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        if self.use_residual:
            out = self.stochastic_depth(out) + x
        return out


class MBConv(_Residual):
    """Mobile inverted bottleneck (Figure 2, left): (B, cin, H, W) -> 1x1 expand (B, cin*e, H, W) -> k x k depthwise
    (B, cin*e, H/s, W/s) -> SE -> 1x1 project (B, cout, H/s, W/s), no activation (a linear bottleneck); expansion 1
    omits the expand conv."""

    def __init__(self, cin, cout, kernel, stride, expansion, se_ratio=0.25, drop_path=0.0, bn_eps=1e-3,
                 bn_momentum=0.1, padding="symmetric"):
        super().__init__()
        mid = cin * expansion
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, padding=padding)
        layers = []
        if mid != cin:
            layers.append(ConvBNAct(cin, mid, 1, **bn))  # expand
        layers.append(ConvBNAct(mid, mid, kernel, stride, groups=mid, **bn))  # depthwise
        if se_ratio:
            layers.append(squeeze_excitation(mid, cin, se_ratio))
        layers.append(ConvBNAct(mid, cout, 1, act=False, **bn))  # project
        self.block = nn.Sequential(*layers)
        self._finish(cin, cout, stride, drop_path)


class FusedMBConv(_Residual):
    """Fused-MBConv (Figure 2, right): the 1x1 expand and the k x k depthwise conv fused into one k x k conv
    (B, cin*e, H/s, W/s) -> [SE] -> 1x1 project; with expansion 1 a single k x k conv with BN and SiLU (the official
    "add act if no expansion"). No official V2 config puts SE in a fused block; ``se_ratio`` is for ablations."""

    def __init__(self, cin, cout, kernel, stride, expansion, se_ratio=0.0, drop_path=0.0, bn_eps=1e-3,
                 bn_momentum=0.1, padding="symmetric"):
        super().__init__()
        mid = cin * expansion
        bn = dict(bn_eps=bn_eps, bn_momentum=bn_momentum, padding=padding)
        if mid != cin:
            layers = [ConvBNAct(cin, mid, kernel, stride, **bn)]  # fused expand
            if se_ratio:
                layers.append(squeeze_excitation(mid, cin, se_ratio))
            layers.append(ConvBNAct(mid, cout, 1, act=False, **bn))  # project
        else:
            layers = [ConvBNAct(cin, cout, kernel, stride, **bn)]
            if se_ratio:
                layers.append(squeeze_excitation(cout, cin, se_ratio))
        self.block = nn.Sequential(*layers)
        self._finish(cin, cout, stride, drop_path)


BLOCKS = {"mbconv": MBConv, "fused": FusedMBConv}
