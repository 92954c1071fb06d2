"""Stage tables for EfficientNetV2 (paper Table 4, official ``effnetv2_configs.py``) and EfficientNet V1: a
:class:`ModelConfig` is a stem, :class:`Stage` rows in Table 4's columns (operator, kernel, stride, expansion,
channels, #layers, SE ratio) and a head; :mod:`ev2lib.model` builds any of them, so the variants, Table 3's swaps and
NAS samples share one code path. Stage 0 is the stem, 1..K the block stages, K+1 the head.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from .errors import ConfigError
from .scaling import V1_COEFFICIENTS, V2_B_COEFFICIENTS, scale

BLOCK_TYPES = ("mbconv", "fused")


@dataclass(frozen=True)
class Stage:
    """One row of Table 4: ``repeats`` blocks of one operator; the first block has the stride and in -> out."""

    block: str  # "mbconv" (MBConv, Figure 2 left) or "fused" (Fused-MBConv, Figure 2 right)
    kernel: int  # k x k depthwise (MBConv) or regular (Fused-MBConv) convolution
    stride: int  # stride of the first block of the stage
    expansion: int  # "MBConv4" = expansion 4
    in_channels: int
    out_channels: int
    repeats: int  # "#Layers"
    se_ratio: float = 0.0  # squeeze-excitation width relative to the block's *input* channels; 0 = no SE

    @property
    def operator(self) -> str:
        """The operator name as Table 4 writes it, e.g. ``MBConv6, k3x3, SE0.25``."""
        name = ("Fused-MBConv" if self.block == "fused" else "MBConv") + f"{self.expansion}, k{self.kernel}x{self.kernel}"
        return name + (f", SE{self.se_ratio:g}" if self.se_ratio else "")


@dataclass(frozen=True)
class ModelConfig:
    """A whole network: stem conv (stage 0), block stages, 1x1 head conv, pooling, dropout, FC."""

    name: str
    stages: tuple[Stage, ...]
    head_channels: int
    stem_stride: int = 2
    dropout: float = 0.2  # before the final FC layer
    drop_path_rate: float = 0.2  # stochastic depth: block i of N is dropped with probability rate * i / N (paper: survival 0.8)
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1  # PyTorch convention (TF's 0.9 in the official V2 code)
    train_size: int = 224  # (maximum) training image size of the official recipe
    eval_size: int = 224
    family: str = "v2"  # "v2", "v1" or "custom"
    source: str = ""  # where the table comes from
    notes: str = ""

    @property
    def stem_channels(self) -> int:
        return self.stages[0].in_channels

    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    @property
    def total_stride(self) -> int:
        return self.stem_stride * math.prod(s.stride for s in self.stages)

    def replace(self, **changes) -> "ModelConfig":
        cfg = dataclasses.replace(self, **changes)
        validate(cfg)
        return cfg


def validate(cfg: ModelConfig) -> ModelConfig:
    """Check that a stage table describes a buildable network; raise one clear :class:`ConfigError` if not."""
    where = cfg.name or "model config"
    if not cfg.stages:
        raise ConfigError(f"{where}: the stage table is empty")
    prev_out = None
    for i, s in enumerate(cfg.stages, start=1):
        if not isinstance(s, Stage):
            raise ConfigError(f"{where}: stage {i} is {type(s).__name__}, expected ev2lib.configs.Stage")
        bad = None
        if s.block not in BLOCK_TYPES:
            bad = f"block {s.block!r} is not one of {BLOCK_TYPES}"
        elif s.kernel < 1 or s.kernel % 2 == 0:
            bad = f"kernel {s.kernel} must be a positive odd number"
        elif s.stride not in (1, 2):
            bad = f"stride {s.stride} must be 1 or 2"
        elif s.expansion < 1:
            bad = f"expansion {s.expansion} must be >= 1"
        elif s.repeats < 1:
            bad = f"repeats {s.repeats} must be >= 1"
        elif s.in_channels < 1 or s.out_channels < 1:
            bad = f"channels {s.in_channels}->{s.out_channels} must be positive"
        elif not 0.0 <= s.se_ratio <= 1.0:
            bad = f"se_ratio {s.se_ratio} must be in [0, 1]"
        elif prev_out is not None and s.in_channels != prev_out:
            bad = f"in_channels {s.in_channels} does not match the previous stage's out_channels {prev_out}"
        if bad:
            raise ConfigError(f"{where}: stage {i} ({s.operator if s.block in BLOCK_TYPES else s.block}): {bad}")
        prev_out = s.out_channels
    if cfg.head_channels < 1:
        raise ConfigError(f"{where}: head_channels {cfg.head_channels} must be positive")
    if cfg.stem_stride not in (1, 2):
        raise ConfigError(f"{where}: stem_stride {cfg.stem_stride} must be 1 or 2")
    if not 0.0 <= cfg.dropout < 1.0 or not 0.0 <= cfg.drop_path_rate < 1.0:
        raise ConfigError(f"{where}: dropout and drop_path_rate must be in [0, 1)")
    return cfg


def _table(rows) -> tuple[Stage, ...]:
    return tuple(Stage(*row) for row in rows)


# --- EfficientNetV2 (official effnetv2_configs.py; identical to torchvision's and timm's tables) ------------------
#        block    k  s  e   in  out  layers  SE

V2_S = _table([
    ("fused", 3, 1, 1, 24, 24, 2),
    ("fused", 3, 2, 4, 24, 48, 4),
    ("fused", 3, 2, 4, 48, 64, 4),
    ("mbconv", 3, 2, 4, 64, 128, 6, 0.25),
    ("mbconv", 3, 1, 6, 128, 160, 9, 0.25),
    ("mbconv", 3, 2, 6, 160, 256, 15, 0.25),
])
V2_M = _table([
    ("fused", 3, 1, 1, 24, 24, 3),
    ("fused", 3, 2, 4, 24, 48, 5),
    ("fused", 3, 2, 4, 48, 80, 5),
    ("mbconv", 3, 2, 4, 80, 160, 7, 0.25),
    ("mbconv", 3, 1, 6, 160, 176, 14, 0.25),
    ("mbconv", 3, 2, 6, 176, 304, 18, 0.25),
    ("mbconv", 3, 1, 6, 304, 512, 5, 0.25),
])
V2_L = _table([
    ("fused", 3, 1, 1, 32, 32, 4),
    ("fused", 3, 2, 4, 32, 64, 7),
    ("fused", 3, 2, 4, 64, 96, 7),
    ("mbconv", 3, 2, 4, 96, 192, 10, 0.25),
    ("mbconv", 3, 1, 6, 192, 224, 19, 0.25),
    ("mbconv", 3, 2, 6, 224, 384, 25, 0.25),
    ("mbconv", 3, 1, 6, 384, 640, 7, 0.25),
])
V2_XL = _table([
    ("fused", 3, 1, 1, 32, 32, 4),
    ("fused", 3, 2, 4, 32, 64, 8),
    ("fused", 3, 2, 4, 64, 96, 8),
    ("mbconv", 3, 2, 4, 96, 192, 16, 0.25),
    ("mbconv", 3, 1, 6, 192, 256, 24, 0.25),
    ("mbconv", 3, 2, 6, 256, 512, 32, 0.25),
    ("mbconv", 3, 1, 6, 512, 640, 8, 0.25),
])
# v2_base_block: the baseline the B0-B3 models (and, per the code's comments, S/M/L) were scaled from.
V2_BASE = _table([
    ("fused", 3, 1, 1, 32, 16, 1),
    ("fused", 3, 2, 4, 16, 32, 2),
    ("fused", 3, 2, 4, 32, 48, 2),
    ("mbconv", 3, 2, 4, 48, 96, 3, 0.25),
    ("mbconv", 3, 1, 6, 96, 112, 5, 0.25),
    ("mbconv", 3, 2, 6, 112, 192, 8, 0.25),
])
# EfficientNet V1 B0 (Tan & Le 2019, Table 1); B1..B7 are compound-scaled from it.
V1_B0 = _table([
    ("mbconv", 3, 1, 1, 32, 16, 1, 0.25),
    ("mbconv", 3, 2, 6, 16, 24, 2, 0.25),
    ("mbconv", 5, 2, 6, 24, 40, 2, 0.25),
    ("mbconv", 3, 2, 6, 40, 80, 3, 0.25),
    ("mbconv", 5, 1, 6, 80, 112, 3, 0.25),
    ("mbconv", 5, 2, 6, 112, 192, 4, 0.25),
    ("mbconv", 3, 1, 6, 192, 320, 1, 0.25),
])

AUTOML = "google/automl efficientnetv2/effnetv2_configs.py"
# name: (stages, head, train size, eval size, dropout)
_V2 = {
    "efficientnetv2_s": (V2_S, 1280, 300, 384, 0.2),
    "efficientnetv2_m": (V2_M, 1280, 384, 480, 0.3),
    "efficientnetv2_l": (V2_L, 1280, 384, 480, 0.4),
    "efficientnetv2_xl": (V2_XL, 1280, 384, 512, 0.4),
}


def _v2(name: str) -> ModelConfig:
    stages, head, train, eval_, dropout = _V2[name]
    return ModelConfig(name, stages, head, dropout=dropout, train_size=train, eval_size=eval_,
                       source=f"{AUTOML} ({name.replace('efficientnetv2_', 'v2_')}_block)")


def _v2_b(name: str) -> ModelConfig:
    """V2-B0..B3: ``v2_base_block`` compound-scaled (no round-down guard) with the official coefficients."""
    width, depth, train, eval_, dropout = V2_B_COEFFICIENTS[name]
    base = ModelConfig("v2_base_block", V2_BASE, 1280)
    return scale(base, width, depth, dropout=dropout, name=name).replace(
        train_size=train, eval_size=eval_, source=f"{AUTOML} (v2_base_block, width {width}, depth {depth})")


def _v1(name: str) -> ModelConfig:
    """EfficientNet B0..B7: B0 compound-scaled with the official (width, depth, resolution, dropout)."""
    width, depth, res, dropout = V1_COEFFICIENTS[name]
    # torchvision keeps PyTorch's BN defaults for B0-B4 and TF's (eps 1e-3, momentum 0.01) for the ported B5-B7.
    ported = name in ("efficientnet_b5", "efficientnet_b6", "efficientnet_b7")
    b0 = ModelConfig("efficientnet_b0", V1_B0, 1280, family="v1", bn_eps=1e-3 if ported else 1e-5,
                     bn_momentum=0.01 if ported else 0.1)
    return scale(b0, width, depth, res, dropout=dropout, name=name).replace(
        source=f"EfficientNet V1 B0 scaled by width {width}, depth {depth} (BN as torchvision)")


def _v2_s_arxiv_v1(name: str) -> ModelConfig:
    rows = list(V2_S)
    rows[5] = dataclasses.replace(rows[5], out_channels=272)
    return ModelConfig(name, tuple(rows), 1792, train_size=300, eval_size=384,
                       source="arXiv v1 of the paper, Table 4 (stage 6: 272 channels, head 1792)",
                       notes="the pre-release V2-S; the official code changed 272/1792 to 256/1280 (automl issue #999)")


def _cifar(name: str) -> ModelConfig:
    """A CPU-sized EfficientNetV2 for 32x32 images (not from the paper)."""
    rows = _table([
        ("fused", 3, 1, 1, 24, 24, 1),
        ("fused", 3, 2, 4, 24, 48, 2),
        ("fused", 3, 2, 4, 48, 96, 2),
        ("mbconv", 3, 2, 4, 96, 160, 2, 0.25),
    ])
    return ModelConfig(name, rows, 512, stem_stride=1, dropout=0.1, drop_path_rate=0.05, train_size=32,
                       eval_size=32, family="custom", source="ev2lib preset (not from the paper)",
                       notes="Not a paper model: a small EfficientNetV2-shaped network for 32x32 images on a CPU "
                             "(stride-1 stem, three Fused-MBConv stages then one MBConv+SE stage, total stride 8).")


def _cifar_half(name: str) -> ModelConfig:
    """:func:`_cifar` at half the width: twice as fast on a CPU, for the ablation grids (not from the paper)."""
    return scale(_cifar("efficientnetv2_cifar"), width=0.5, name=name).replace(
        source="ev2lib preset efficientnetv2_cifar at width 0.5 (not from the paper)")


def _cifar_v1(name: str) -> ModelConfig:
    """A V1-shaped counterpart of ``efficientnetv2_cifar_half`` with matched parameters (not from the paper)."""
    rows = _table([  # EfficientNet-B0's table (MBConv + SE everywhere, its kernels and expansions) for 32x32 images:
        ("mbconv", 3, 1, 1, 32, 16, 1, 0.25),
        ("mbconv", 3, 2, 6, 16, 24, 2, 0.25),
        ("mbconv", 5, 2, 6, 24, 40, 2, 0.25),
        ("mbconv", 3, 2, 6, 40, 80, 3, 0.25),
        ("mbconv", 5, 1, 6, 80, 112, 3, 0.25),
        ("mbconv", 5, 1, 6, 112, 192, 4, 0.25),  # B0: stride 2; 1 here, so the total stride is 8 as in the V2 preset
        ("mbconv", 3, 1, 6, 192, 320, 1, 0.25),
    ])
    base = ModelConfig("efficientnet_cifar_v1_base", rows, 1280, stem_stride=1, dropout=0.1, drop_path_rate=0.05,
                       train_size=32, eval_size=32, family="v1")
    # Uniform (V1) scaling: one width and one depth for every stage, V1's rounding; the V2 preset's 256-wide head.
    return scale(base, width=0.25, depth=0.75, name=name).replace(
        head_channels=256, source="ev2lib preset: EfficientNet-B0's table for 32x32, width 0.25, depth 0.75 "
                                  "(not from the paper)",
        notes="Not a paper model: a V1-shaped network (MBConv+SE in every stage, uniform scaling) with the parameters "
              "of efficientnetv2_cifar_half (279,760 vs 279,546 for 10 classes), for the V1 vs V2 ablation.")


_FACTORIES = {**{n: _v2 for n in _V2}, **{n: _v2_b for n in V2_B_COEFFICIENTS}, **{n: _v1 for n in V1_COEFFICIENTS},
              "efficientnetv2_s_arxiv_v1": _v2_s_arxiv_v1, "efficientnetv2_cifar": _cifar,
              "efficientnetv2_cifar_half": _cifar_half, "efficientnet_cifar_v1": _cifar_v1}


def list_configs() -> list[str]:
    """Names of every stage table ev2lib knows (the names :func:`ev2lib.create_model` accepts)."""
    return list(_FACTORIES)


def get_config(name: str) -> ModelConfig:
    """The :class:`ModelConfig` of a named variant; an unknown name raises an error that lists the known ones."""
    if isinstance(name, ModelConfig):
        return validate(name)
    key = str(name).lower().replace("-", "_")
    if key not in _FACTORIES:
        raise ConfigError(f"unknown model {name!r}; known models: {', '.join(_FACTORIES)}")
    return validate(_FACTORIES[key](key))
