"""Why EfficientNet trains slowly (paper §3.2, Tables 1 and 2) and what Fused-MBConv changes (§3.2, Table 3). Two
throughputs differ only when their ranges (slowest to fastest step) do not overlap; a stage-time ratio (a mean, no
spread) counts only outside the band the two models' whole steps spread over (each one's fastest / slowest)."""
from __future__ import annotations

import torch

from ..bench import cpu_memory_estimate
from ..configs import get_config
from ..model import create_model, swap_blocks
from ..summary import count_macs, count_params, summarize

B4, B6, SAME = "efficientnet_b4", "efficientnet_b6", "no clear difference"
ROWS = {"No fused": [], **{f"Fused stage1-{k}": list(range(1, k + 1)) for k in (3, 5, 7)}}
# Paper Table 3 (EfficientNet-B4): parameters (M), FLOPs (B; multiply-adds), training images/s on a TPUv3 core, a V100
TABLE3 = {"No fused": (19.3, 4.5, 262, 155), "Fused stage1-3": (20.0, 7.5, 362, 216),
          "Fused stage1-5": (43.4, 21.3, 327, 223), "Fused stage1-7": (132.0, 34.4, 254, 206)}
CONSTRUCTIONS = {"default": {}, "SE kept": {"se_ratio": 0.25}, "3x3 kernels": {"kernel": 3}}  # of fused blocks
SCALING = tuple(f"efficientnet_b{i}" for i in (0, 2, 4, 7)) + tuple(f"efficientnetv2_{v}" for v in "sml")
SHORT = {m: ("V2-" if "v2" in m else "") + m.rsplit("_", 1)[-1].upper() for m in SCALING}  # labels
MEMORY = ("activations (MiB/image)", "fixed (MiB)")  # fixed: weights, gradients and momentum


def _meta(config):
    with torch.device("meta"):  # shapes only: nothing allocated, nothing computed
        return create_model(config)


def compare(run: dict, base: dict, more: str = "faster", less: str = "slower") -> str:
    """``more`` when ``run``'s slowest timed step (images/s) beats ``base``'s fastest, ``less`` the reverse, else
    "no clear difference" (the min-max ranges overlap)."""
    a, b = run["train_img_s"], base["train_img_s"]
    return more if a["min"] > b["max"] else less if a["max"] < b["min"] else SAME


def image_sizes(runs: list[dict]) -> list[dict]:
    """Per run, smallest image first: images/s (median, slowest, fastest step), speed-up and :func:`compare` verdict
    against the largest size at its fastest batch, batch, largest batch, and peak memory as activations per image +
    fixed bytes: weights, gradients and momentum (3 x 4 bytes a parameter)."""
    runs, t = sorted(runs, key=lambda r: (r["image_size"], r["batch_size"])), "train_img_s"
    top = max((r for r in runs if r["image_size"] == runs[-1]["image_size"]), key=lambda r: r[t]["median"])
    return [{"image (px)": r["image_size"], "batch": r["batch_size"], "images/s": r[t]["median"], "slowest": r[t]["min"],
             "fastest": r[t]["max"], "speed-up": r[t]["median"] / top[t]["median"],
             "verdict": compare(r, top) if r is not top else "",
             MEMORY[0]: (r["peak_memory_bytes"] - 12 * r["params"]) / r["batch_size"] / 2**20
             if r.get("peak_memory_bytes") else None, MEMORY[1]: 12 * r["params"] / 2**20,
             "max batch": r.get("max_batch")} for r in runs]


def b6_sizes(sizes=(380, 528)) -> list[dict]:
    """EfficientNet-B6 at each size (528: its own), counted on the CPU: parameters, MACs, and a training step's
    activations saved for backward per image (fp32) apart from weights, gradients and momentum."""
    model = create_model(B6)
    return [{"image (px)": s, "parameters (M)": count_params(model) / 1e6, "MACs (G)": count_macs(_meta(B6), s)
             / 1e9, **dict(zip(MEMORY, (b / 2**20 for b in cpu_memory_estimate(model, s))))} for s in sizes]


def stage_macs(config, size: int) -> list[int]:
    """Multiply-adds of one image per Table 4 stage (stem, block stages, head), counted on the meta device."""
    return [r.macs for r in summarize(_meta(config), size, device="meta")]


def stage_ratios(runs: list[dict], size: int = 380) -> list[dict]:
    """Per block stage of EfficientNet-B4 (runs of B4 and of B4 fused in stages 1-7): both forward+backward ms, the
    Fused / MBConv time ratio and its verdict (module docstring), the MACs ratio counted at ``size``."""
    fused = swap_blocks(B4, ROWS["Fused stage1-7"])
    mb, fu = (next(r for r in runs if r["model"] == n) for n in (B4, fused.name))
    w = [r["train_img_s"]["max"] / r["train_img_s"]["min"] for r in (mb, fu)]
    band, m_mb, m_fu = w[0] * w[1], stage_macs(B4, size), stage_macs(fused, size)
    return [{"stage": i, "MBConv (ms)": a, "Fused (ms)": b, "time ratio": b / a, "MACs ratio": m_fu[i] / m_mb[i],
             "band": band, "verdict": "faster fused" if b / a < 1 / band else "slower fused" if b / a > band else SAME}
            for i, (a, b) in enumerate(zip(mb["stage_ms"], fu["stage_ms"])) if 0 < i < len(m_mb) - 1]


def stage_shares(runs: list[dict] | None = None, models=SCALING) -> dict[str, dict[int, float]]:
    """Each block stage's share of a whole model (stem and head included): of its measured time (each run's
    ``stage_ms``), or with ``runs`` None of its multiply-adds at its training size."""
    values = ({r["model"]: r["stage_ms"] for r in runs} if runs is not None else
              {m: stage_macs(m, get_config(m).train_size) for m in models})
    return {m: {i: v[i] / sum(v) for i in range(1, len(v) - 1)} for m, v in values.items()}


def added_layers(model: str, base: str) -> list[int]:
    """The layers ``model`` adds to ``base`` in each block stage (a stage ``base`` lacks is added whole)."""
    r, b = ([s.repeats for s in get_config(n).stages] for n in (model, base))
    return [x - (b[i] if i < len(b) else 0) for i, x in enumerate(r)]


def table3_counts(size: int = 380, **construction) -> list[dict]:
    """Each Table 3 row built by :func:`swap_blocks` (``kernel``, ``se_ratio`` of the fused blocks): parameters (M),
    MACs at ``size`` (G), and their fractional gaps to the paper's parameters and FLOPs."""
    models = {row: _meta(swap_blocks(B4, stages, **construction)) for row, stages in ROWS.items()}
    return [{"row": row, "parameters (M)": (p := count_params(m) / 1e6), "MACs (G)": (f := count_macs(m, size) / 1e9),
             "parameter gap": p / TABLE3[row][0] - 1, "MAC gap": f / TABLE3[row][1] - 1}
            for row, m in models.items()]


def table3_speed(runs: list[dict]) -> list[dict]:
    """Each recorded Table 3 row: median images/s, relative to the record's No fused, the :func:`compare` verdict
    against No fused, and the paper's relative speeds on a TPUv3 core and a V100."""
    names = {swap_blocks(B4, st).name: row for row, st in ROWS.items()}
    by = {names[r["model"]]: r for r in runs if r["model"] in names}
    base, p0 = by["No fused"], TABLE3["No fused"]
    return [{"row": row, "images/s": r["train_img_s"]["median"], "verdict": compare(r, base) if r is not base else "",
             "relative": r["train_img_s"]["median"] / base["train_img_s"]["median"],
             "paper TPU": TABLE3[row][2] / p0[2], "paper V100": TABLE3[row][3] / p0[3]} for row, r in by.items()]
