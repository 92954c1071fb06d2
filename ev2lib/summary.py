"""Counting: parameters, MACs / FLOPs and activation memory, per Table 4 stage (paper §3.2-§3.3, Table 4).

    python -m ev2lib.summary efficientnetv2_s --image-size 384

**MACs**: multiply-accumulates of convolutions and the FC layer, what the paper and torchvision report (V2-S at 384:
8.37 G); **FLOPs**: ``FlopCounterMode``'s, 2 per MAC; neither counts BatchNorm, SiLU, SE multiply or pooling.
**Activation memory**: the bytes autograd saves in one training forward pass (batch 1), by stage (§3.2).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from .configs import ModelConfig, get_config
from .model import EfficientNet, create_model, parse_stages


def count_params(model, num_classes: int = 1000) -> int:
    """Parameters of a model, or of the network a config / name builds (on the meta device: nothing allocated)."""
    if not isinstance(model, nn.Module):
        with torch.device("meta"):
            model = EfficientNet(get_config(model), num_classes)
    return sum(p.numel() for p in model.parameters())


def _flops(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """FLOPs of one eval-mode forward pass of ``x``, per module name (``"Global"``: the whole model)."""
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    model.train(was_training)
    return {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one image (the paper's "FLOPs"), from ``torch.utils.flop_counter`` / 2."""
    x = torch.zeros(1, 3, image_size, image_size, device=next(model.parameters()).device)
    return _flops(model, x)["Global"] // 2


def saved_for_backward(model: EfficientNet, x: torch.Tensor) -> tuple[list[int], list[int]]:
    """(bytes autograd saves for backward, output side) per stage of ``model.features``, one training forward."""
    stages = list(model.features)
    saved, side, seen, current = [0] * len(stages), [0] * len(stages), set(), [0]
    param_ptrs = {p.data_ptr() for p in model.parameters()}
    hooks = [m.register_forward_pre_hook(lambda _m, _a, i=i: current.__setitem__(0, i)) for i, m in enumerate(stages)]
    hooks += [m.register_forward_hook(lambda _m, _a, out, i=i: side.__setitem__(i, out.shape[-1]))
              for i, m in enumerate(stages)]

    def pack(t: torch.Tensor):
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape))
        if t.data_ptr() not in param_ptrs and key not in seen:
            seen.add(key)
            saved[current[0]] += t.numel() * t.element_size()
        return t

    was_training = model.training
    model.train()
    try:
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            model(x)
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    return saved, side


def stage_rows(config: ModelConfig) -> list[tuple]:
    """Table 4's rows of a config: (stage, operator, stride, #channels, #layers); the head's stride is None ("-")."""
    rows = [(0, "Conv3x3", config.stem_stride, config.stem_channels, 1)]
    rows += [(i, s.operator, s.stride, s.out_channels, s.repeats) for i, s in enumerate(config.stages, start=1)]
    return rows + [(len(rows), "Conv1x1 & Pooling & FC", None, config.head_channels, 1)]


@dataclass
class StageSummary:
    stage: int  # Table 4 numbering: 0 stem, 1..K blocks, K+1 head (+ pooling & FC)
    operator: str
    stride: int | None
    channels: int
    layers: int
    resolution: int  # output side length
    params: int
    macs: int
    flops: int
    activation_bytes: int


def summarize(model: EfficientNet | str, image_size: int = 224, batch_size: int = 1, dtype=torch.float32,
              device: str = "cpu") -> list[StageSummary]:
    """One :class:`StageSummary` per Table 4 stage of ``model`` (a model or a name) at ``image_size``."""
    if isinstance(model, str):
        model = create_model(model)
    model = model.to(device)
    x = torch.randn(batch_size, 3, image_size, image_size, device=device, dtype=dtype)
    n = len(model.features)
    params = [count_params(m) for m in model.features]
    params[-1] += count_params(model.classifier)
    counts = _flops(model, x)
    flops = [counts.get(f"{type(model).__name__}.features.{i}", 0) for i in range(n)]
    flops[-1] += counts.get(f"{type(model).__name__}.classifier", 0)
    saved, side = saved_for_backward(model, x)
    return [StageSummary(*row, side[i], params[i], flops[i] // 2, flops[i], saved[i])
            for i, row in enumerate(stage_rows(model.config))]


def totals(rows: list[StageSummary]) -> dict:
    """Whole-network params, MACs, FLOPs and activation bytes."""
    return {k: sum(getattr(r, k) for r in rows) for k in ("params", "macs", "flops", "activation_bytes")}


def format_table(rows: list[StageSummary], title: str = "") -> str:
    """The summary as a plain-text table (what the CLI prints)."""
    head = f"{'stage':>5}  {'operator':<26}{'stride':>6}{'ch':>6}{'layers':>7}{'out':>6}{'params':>12}" \
           f"{'MACs (G)':>10}{'FLOPs (G)':>11}{'act. (MiB)':>11}"
    lines = ([title] if title else []) + [head, "-" * len(head)]
    for r in rows:
        lines.append(f"{r.stage:>5}  {r.operator:<26}{r.stride or '-':>6}{r.channels:>6}{r.layers:>7}"
                     f"{r.resolution:>6}{r.params:>12,}{r.macs / 1e9:>10.3f}{r.flops / 1e9:>11.3f}"
                     f"{r.activation_bytes / 2**20:>11.1f}")
    t = totals(rows)
    lines.append("-" * len(head))
    lines.append(f"{'total':>5}  {'':<51}{t['params']:>12,}{t['macs'] / 1e9:>10.3f}"
                 f"{t['flops'] / 1e9:>11.3f}{t['activation_bytes'] / 2**20:>11.1f}")
    lines.append("MACs = multiply-accumulates (the paper's and torchvision's 'FLOPs'); FLOPs = 2 x MACs as counted by "
                 "torch.utils.flop_counter; act. = tensors saved for backward in one training forward pass.")
    return "\n".join(lines)


def as_records(rows: list[StageSummary]) -> list[dict]:
    """Rows as plain dicts (for pandas / JSON)."""
    return [asdict(r) for r in rows]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ev2lib.summary", description=__doc__.split("\n")[0])
    p.add_argument("model", help="a name from ev2lib.list_models()")
    p.add_argument("--image-size", type=int, default=None, help="input side (default: the variant's eval size)")
    p.add_argument("--batch-size", type=int, default=1)
    p.add_argument("--fused-stages", default=None, help="e.g. 1-3: replace MBConv by Fused-MBConv in stages 1..3")
    args = p.parse_args(argv)
    model = create_model(args.model, fused_stages=parse_stages(args.fused_stages))
    size = args.image_size or model.config.eval_size
    if size < model.min_image_size:
        model.forward_features(torch.zeros(1, 3, size, size))  # raises the one-line InputSizeError
    rows = summarize(model, size, args.batch_size)
    print(format_table(rows, f"{model.config.name} at {size}x{size}, batch {args.batch_size} "
                             f"({model.config.source})"))


if __name__ == "__main__":
    from .errors import cli_main

    cli_main(main)
