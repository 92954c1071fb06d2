"""Compound scaling (EfficientNet §3.3) and the EfficientNetV2 scaling rules (paper §3.3, last paragraph).

EfficientNet scales a baseline with one coefficient phi: depth ``alpha**phi``, width ``beta**phi`` and resolution
``gamma**phi`` with alpha=1.2, beta=1.1, gamma=1.15 found by a grid search on B0 (alpha * beta**2 * gamma**2 ~= 2,
so FLOPs grow ~2**phi). Channels are rounded to multiples of 8 and layer counts rounded up
(:func:`ev2lib.configs.round_filters` / :func:`~ev2lib.configs.round_repeats`).

EfficientNetV2 scales S up to M/L "using similar compound scaling ... with a few additional optimizations":
(1) the inference image size is capped at 480, (2) more layers are added to later stages (stage 5 and 6). The paper
gives no coefficients; the official code comments say M ~ base * (width 1.6, depth 2.2), L ~ base * (2.0, 3.1).
:func:`compare_stages` shows, stage by stage, where the plain rule and the published tables differ.
"""
from __future__ import annotations

import dataclasses

from .configs import (V1_COEFFICIENTS, V2_BASE, ModelConfig, Stage, get_config, round_filters,
                      scale_stages, validate)
from .errors import ConfigError

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases (EfficientNet §3.3, grid search on B0)
V2_MAX_EVAL_SIZE = 480  # paper §3.3: "we restrict the maximum inference image size to 480"
# (width, depth) relative to v2_base_block, from the official effnetv2_configs.py comments ("about base * ...")
V2_CODE_COEFFICIENTS = {"efficientnetv2_s": (1.4, 1.8), "efficientnetv2_m": (1.6, 2.2), "efficientnetv2_l": (2.0, 3.1)}


def compound_coefficients(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA):
    """The pure compound rule: ``(width, depth, resolution multiplier) = (beta**phi, alpha**phi, gamma**phi)``."""
    return beta ** phi, alpha ** phi, gamma ** phi


def scale(config: str | ModelConfig, width: float = 1.0, depth: float = 1.0, resolution: int | None = None,
          dropout: float | None = None, name: str | None = None, round_limit: float | None = None,
          max_eval_size: int | None = None) -> ModelConfig:
    """Scale a stage table by ``width`` (channels) and ``depth`` (layers per stage), and set its image size.

    Channels of every stage, the stem and the head go through ``round_filters``; layer counts through
    ``round_repeats`` (ceil). ``round_limit`` defaults to 0.9 for V1 tables (its "never round down by more than
    10%" guard) and 0 for V2 (the official V2 code has no guard). ``resolution`` sets ``eval_size``; ``train_size``
    keeps the base's train/eval ratio (rounded to a multiple of 8). ``max_eval_size`` caps the resolution (V2: 480).
    """
    cfg = get_config(config)
    if width <= 0 or depth <= 0:
        raise ConfigError(f"width and depth coefficients must be positive, got width={width}, depth={depth}")
    limit = (0.9 if cfg.family == "v1" else 0.0) if round_limit is None else round_limit
    changes = dict(stages=scale_stages(cfg.stages, width, depth, round_limit=limit),
                   head_channels=round_filters(cfg.head_channels, width, round_limit=limit),
                   name=name or f"{cfg.name}_w{width:g}_d{depth:g}",
                   source=f"{cfg.name} scaled by width {width:g}, depth {depth:g} (ev2lib.scaling.scale)")
    if resolution is not None:
        eval_size = int(min(resolution, max_eval_size) if max_eval_size else resolution)
        train = max(8, int(round(eval_size * cfg.train_size / cfg.eval_size / 8)) * 8)
        changes.update(eval_size=eval_size, train_size=eval_size if cfg.train_size == cfg.eval_size else train)
    if dropout is not None:
        changes["dropout"] = dropout
    return cfg.replace(**changes)


def derive_v1(name: str) -> ModelConfig:
    """EfficientNet V1 ``name`` (b0..b7) derived from B0 with the official hand-picked (width, depth, res, dropout)."""
    key = str(name).lower().replace("-", "_")
    if key not in V1_COEFFICIENTS:
        raise ConfigError(f"unknown V1 variant {name!r}; known: {', '.join(V1_COEFFICIENTS)}")
    width, depth, res, dropout = V1_COEFFICIENTS[key]
    return scale("efficientnet_b0", width, depth, res, dropout=dropout, name=key)


def v1_phi_table(phis=range(8), base_size: int = 224) -> list[dict]:
    """What the pure formula gives for phi = 0..7 next to the official B0..B7 coefficients (EfficientNet Table 7)."""
    rows = []
    for phi, (name, (w, d, res, _)) in zip(phis, V1_COEFFICIENTS.items()):
        fw, fd, fr = compound_coefficients(phi)
        rows.append({"model": name, "phi": phi, "width (formula)": round(fw, 3), "width (official)": w,
                     "depth (formula)": round(fd, 3), "depth (official)": d,
                     "resolution (formula)": int(round(base_size * fr)), "resolution (official)": res})
    return rows


def add_layers(config: ModelConfig, extra: dict[int, int]) -> ModelConfig:
    """V2 rule 2: "gradually add more layers to later stages"; ``extra`` maps stage (1-based) -> layers to add."""
    rows = list(config.stages)
    for i, n in extra.items():
        if not 1 <= i <= len(rows):
            raise ConfigError(f"{config.name} has block stages 1..{len(rows)}; got stage {i}")
        rows[i - 1] = dataclasses.replace(rows[i - 1], repeats=rows[i - 1].repeats + int(n))
    return config.replace(stages=tuple(rows))


def add_stage(config: ModelConfig, out_channels: int, repeats: int, block: str = "mbconv", kernel: int = 3,
              expansion: int = 6, stride: int = 1, se_ratio: float = 0.25) -> ModelConfig:
    """Append a stage after the last one (as M, L and XL's stage 7, which the base and S do not have)."""
    new = Stage(block, kernel, stride, expansion, config.stages[-1].out_channels, out_channels, repeats, se_ratio)
    return config.replace(stages=config.stages + (new,))


def derive_v2(target: str, base: str = "v2_base", max_eval_size: int = V2_MAX_EVAL_SIZE) -> ModelConfig:
    """The plain compound rule for V2 ``target`` (s, m or l) from ``base`` ("v2_base" or "efficientnetv2_s").

    From the base the (width, depth) are the code comments' :data:`V2_CODE_COEFFICIENTS`; from S they are the
    ratios of those (e.g. M = S * (1.6/1.4, 2.2/1.8)). Only rule 1 (the 480 cap) is applied: the extra layers
    and stage are what :func:`compare_stages` then finds missing.
    """
    key = "efficientnetv2_" + str(target).lower().replace("-", "_").split("_")[-1]
    if key not in V2_CODE_COEFFICIENTS:
        raise ConfigError(f"derive_v2 knows {', '.join(V2_CODE_COEFFICIENTS)}; got {target!r}")
    official = get_config(key)
    w, d = V2_CODE_COEFFICIENTS[key]
    if base == "v2_base":
        start = ModelConfig("v2_base", V2_BASE, 1280, train_size=192, eval_size=224, source="v2_base_block")
    elif base == "efficientnetv2_s":
        start = get_config(base)
        sw, sd = V2_CODE_COEFFICIENTS[base]
        w, d = w / sw, d / sd
    else:
        raise ConfigError(f"base must be 'v2_base' or 'efficientnetv2_s', got {base!r}")
    cfg = scale(start, w, d, official.eval_size, dropout=official.dropout, name=f"{key}_from_{start.name}",
                round_limit=0.0, max_eval_size=max_eval_size)
    return cfg.replace(head_channels=1280, train_size=official.train_size)  # all V2 keep the 1280 head (§1.3)


def param_count(config: str | ModelConfig, num_classes: int = 1000) -> int:
    """Parameters of the network a config builds (on the meta device: nothing is allocated)."""
    import torch

    from .bench import count_params
    from .model import EfficientNet

    with torch.device("meta"):
        return count_params(EfficientNet(get_config(config), num_classes))


def compare_stages(derived: ModelConfig, official: str | ModelConfig) -> list[dict]:
    """Stage-by-stage differences (stem, stages 1..K, head): channels and layers of each table, and the difference."""
    ref = get_config(official)
    validate(derived)
    rows = [{"stage": 0, "operator": "Conv3x3 (stem)", "channels": derived.stem_channels,
             "official channels": ref.stem_channels, "layers": 1, "official layers": 1}]
    for i in range(max(len(derived.stages), len(ref.stages))):
        a = derived.stages[i] if i < len(derived.stages) else None
        b = ref.stages[i] if i < len(ref.stages) else None
        rows.append({"stage": i + 1, "operator": (a or b).operator,
                     "channels": a.out_channels if a else 0, "official channels": b.out_channels if b else 0,
                     "layers": a.repeats if a else 0, "official layers": b.repeats if b else 0})
    rows.append({"stage": len(rows), "operator": "Conv1x1 (head)", "channels": derived.head_channels,
                 "official channels": ref.head_channels, "layers": 1, "official layers": 1})
    for r in rows:
        r["channel diff"] = r["channels"] - r["official channels"]
        r["layer diff"] = r["layers"] - r["official layers"]
    return rows
