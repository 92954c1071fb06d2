"""Compound scaling (EfficientNet §3.3) and the EfficientNetV2 scaling rules (paper §3.3, last paragraph).

One coefficient phi scales depth ``alpha**phi``, width ``beta**phi`` and resolution ``gamma**phi`` (1.2, 1.1, 1.15;
FLOPs ~2**phi), channels rounded to multiples of 8, layers rounded up: :func:`scale`. B1-B7 and V2-B0..B3 use
hand-picked coefficients (:data:`V1_COEFFICIENTS`, :data:`V2_B_COEFFICIENTS`). V2 scales S to M/L with "a few
additional optimizations" (inference size capped at 480, more layers late; official comments: M ~ (1.6, 2.2),
L ~ (2.0, 3.1)); :func:`compare_stages` shows where the rule and the tables differ. Functions take a
:class:`~ev2lib.configs.ModelConfig` (which imports this module).
"""
from __future__ import annotations

import dataclasses
import math

from .errors import ConfigError

ALPHA, BETA, GAMMA = 1.2, 1.1, 1.15  # depth, width, resolution bases (EfficientNet §3.3, grid search on B0)
V2_MAX_EVAL_SIZE = 480  # paper §3.3: "we restrict the maximum inference image size to 480"
# name: (width, depth, resolution, dropout) -- EfficientNet V1 (official `efficientnet_params`)
V1_COEFFICIENTS = {
    "efficientnet_b0": (1.0, 1.0, 224, 0.2),
    "efficientnet_b1": (1.0, 1.1, 240, 0.2),
    "efficientnet_b2": (1.1, 1.2, 260, 0.3),
    "efficientnet_b3": (1.2, 1.4, 300, 0.3),
    "efficientnet_b4": (1.4, 1.8, 380, 0.4),
    "efficientnet_b5": (1.6, 2.2, 456, 0.4),
    "efficientnet_b6": (1.8, 2.6, 528, 0.5),
    "efficientnet_b7": (2.0, 3.1, 600, 0.5),
}
# name: (width, depth, train size, eval size, dropout) -- official `efficientnetv2-b*` rows (from v2_base_block)
V2_B_COEFFICIENTS = {
    "efficientnetv2_b0": (1.0, 1.0, 192, 224, 0.2),
    "efficientnetv2_b1": (1.0, 1.1, 192, 240, 0.2),
    "efficientnetv2_b2": (1.1, 1.2, 208, 260, 0.3),
    "efficientnetv2_b3": (1.2, 1.4, 240, 300, 0.3),
}
# (width, depth) relative to v2_base_block (= V2-B0), from the official effnetv2_configs.py comments ("about base * ...")
V2_CODE_COEFFICIENTS = {"efficientnetv2_b0": (1.0, 1.0), "efficientnetv2_s": (1.4, 1.8),
                        "efficientnetv2_m": (1.6, 2.2), "efficientnetv2_l": (2.0, 3.1)}


def round_filters(channels: float, width: float = 1.0, divisor: int = 8, round_limit: float = 0.0) -> int:
    """``channels`` x ``width`` rounded to the nearest multiple of ``divisor`` (at least ``divisor``); ``round_limit=0.9``
    is V1's guard "never round down by more than 10%" (torchvision's ``_make_divisible``); the V2 code has none."""
    scaled = channels * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < round_limit * scaled else new)


def round_repeats(repeats: int, depth: float = 1.0) -> int:
    """Scale the number of layers by ``depth`` and round up (official ``round_repeats``)."""
    return int(math.ceil(depth * repeats))


def compound_coefficients(phi: float, alpha: float = ALPHA, beta: float = BETA, gamma: float = GAMMA):
    """The pure compound rule: ``(width, depth, resolution multiplier) = (beta**phi, alpha**phi, gamma**phi)``."""
    return beta ** phi, alpha ** phi, gamma ** phi


def scale(config, width: float = 1.0, depth: float = 1.0, resolution: int | None = None,
          dropout: float | None = None, name: str | None = None, round_limit: float | None = None,
          max_eval_size: int | None = None):
    """A stage table scaled by ``width`` (channels: :func:`round_filters`) and ``depth`` (layers: :func:`round_repeats`,
    ceil). ``round_limit`` defaults to 0.9 for V1 and 0 for V2; ``resolution`` sets ``eval_size`` (``train_size`` keeps
    the base's ratio, a multiple of 8); ``max_eval_size`` caps it (V2: 480)."""
    if width <= 0 or depth <= 0:
        raise ConfigError(f"width and depth coefficients must be positive, got width={width}, depth={depth}")
    limit = (0.9 if config.family == "v1" else 0.0) if round_limit is None else round_limit
    stages = tuple(dataclasses.replace(s, in_channels=round_filters(s.in_channels, width, round_limit=limit),
                                       out_channels=round_filters(s.out_channels, width, round_limit=limit),
                                       repeats=round_repeats(s.repeats, depth)) for s in config.stages)
    changes = dict(stages=stages, head_channels=round_filters(config.head_channels, width, round_limit=limit),
                   name=name or f"{config.name}_w{width:g}_d{depth:g}",
                   source=f"{config.name} scaled by width {width:g}, depth {depth:g} (ev2lib.scaling.scale)")
    if resolution is not None:
        eval_size = int(min(resolution, max_eval_size) if max_eval_size else resolution)
        train = max(8, int(round(eval_size * config.train_size / config.eval_size / 8)) * 8)
        changes.update(eval_size=eval_size, train_size=eval_size if config.train_size == config.eval_size else train)
    if dropout is not None:
        changes["dropout"] = dropout
    return config.replace(**changes)


def v1_phi_table(base_size: int = 224) -> list[dict]:
    """What the pure formula gives for phi = 0..7 next to the official B0..B7 coefficients (EfficientNet Table 7)."""
    rows = []
    for phi, (name, (w, d, res, _)) in enumerate(V1_COEFFICIENTS.items()):
        fw, fd, fr = compound_coefficients(phi)
        rows.append({"model": name, "phi": phi, "width (formula)": round(fw, 3), "width (official)": w,
                     "depth (formula)": round(fd, 3), "depth (official)": d,
                     "resolution (formula)": int(round(base_size * fr)), "resolution (official)": res})
    return rows


def derive_v2(target, base, max_eval_size: int = V2_MAX_EVAL_SIZE):
    """The plain compound rule for ``target`` (V2-S, M or L) from ``base`` (V2-B0 or V2-S), with the code comments'
    (width, depth) ratios (:data:`V2_CODE_COEFFICIENTS`) and only rule 1 (the 480 cap): the extra layers and stage
    are what :func:`compare_stages` then finds missing. The head keeps the target's width."""
    for cfg in (target, base):
        if cfg.name not in V2_CODE_COEFFICIENTS:
            raise ConfigError(f"derive_v2 knows {', '.join(V2_CODE_COEFFICIENTS)}; got {cfg.name!r}")
    (tw, td), (bw, bd) = V2_CODE_COEFFICIENTS[target.name], V2_CODE_COEFFICIENTS[base.name]
    cfg = scale(base, tw / bw, td / bd, target.eval_size, dropout=target.dropout, round_limit=0.0,
                name=f"{target.name}_from_{base.name}", max_eval_size=max_eval_size)
    return cfg.replace(head_channels=target.head_channels, train_size=target.train_size)


def add_layers(config, extra: dict[int, int]):
    """V2 rule 2: "gradually add more layers to later stages"; ``extra`` maps stage (1-based) -> layers to add."""
    rows = list(config.stages)
    for i, n in extra.items():
        if not 1 <= i <= len(rows):
            raise ConfigError(f"{config.name} has block stages 1..{len(rows)}; got stage {i}")
        rows[i - 1] = dataclasses.replace(rows[i - 1], repeats=rows[i - 1].repeats + int(n))
    return config.replace(stages=tuple(rows))


def add_stage(config, out_channels: int, repeats: int, block: str = "mbconv", kernel: int = 3,
              expansion: int = 6, stride: int = 1, se_ratio: float = 0.25):
    """Append a stage after the last one (as M, L and XL's stage 7, which the base and S do not have)."""
    last = config.stages[-1]
    new = dataclasses.replace(last, block=block, kernel=kernel, stride=stride, expansion=expansion,
                              in_channels=last.out_channels, out_channels=out_channels, repeats=repeats,
                              se_ratio=se_ratio)
    return config.replace(stages=config.stages + (new,))


def compare_stages(derived, official) -> list[dict]:
    """Stage-by-stage differences (stem, stages 1..K, head): channels and layers of each table, and the difference."""
    rows = [{"stage": 0, "operator": "Conv3x3 (stem)", "channels": derived.stem_channels,
             "official channels": official.stem_channels, "layers": 1, "official layers": 1}]
    for i in range(max(len(derived.stages), len(official.stages))):
        a = derived.stages[i] if i < len(derived.stages) else None
        b = official.stages[i] if i < len(official.stages) else None
        rows.append({"stage": i + 1, "operator": (a or b).operator,
                     "channels": a.out_channels if a else 0, "official channels": b.out_channels if b else 0,
                     "layers": a.repeats if a else 0, "official layers": b.repeats if b else 0})
    rows.append({"stage": len(rows), "operator": "Conv1x1 (head)", "channels": derived.head_channels,
                 "official channels": official.head_channels, "layers": 1, "official layers": 1})
    for r in rows:
        r["channel diff"] = r["channels"] - r["official channels"]
        r["layer diff"] = r["layers"] - r["official layers"]
    return rows
