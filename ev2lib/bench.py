"""Training and inference speed, memory and the largest batch that fits (paper §3.2, Tables 2 and 3).

    python -m ev2lib.bench --model efficientnet_b6 --image-size 380 512 --batch-size 12 max --device cuda
    python -m ev2lib.bench --model efficientnetv2_s --image-size 128 --batch-size 8 --device cpu

What is measured, and how:

* **Training throughput** (images/s): full steps of forward, cross-entropy, backward and an SGD (momentum 0.9)
  update on random data. ``warmup`` steps are run first and not timed; then ``repeats`` steps are timed one by one
  and the median, quartiles, min and max of images/s are reported. On CUDA each step is timed with
  ``torch.cuda.Event`` pairs after a synchronisation, on CPU with ``time.perf_counter``.
* **Inference throughput and latency**: eval-mode forward passes under ``torch.inference_mode`` at the same batch
  size (throughput) and at batch 1 (latency, median milliseconds).
* **Peak memory**. CUDA: ``torch.cuda.max_memory_allocated`` over one training step, which includes weights,
  gradients, optimizer state and activations. CPU has no allocator statistics, so ``peak_memory_bytes`` there is
  an *estimate of the same quantity*: the bytes autograd saves for the backward pass (``ev2lib.summary``, measured
  at batch 1 and scaled by the batch size) plus 3 x the parameter bytes (weights, gradients, SGD momentum).
  ``memory_kind`` says which of the two a number is.
* **Largest batch** (Table 2's "OOM" column). CUDA: double the batch until ``torch.OutOfMemoryError``, then bisect,
  up to ``limit``. CPU: the largest batch whose estimated peak memory fits ``memory_budget`` bytes (default 8 GiB),
  found by the same bounded doubling/bisection on the estimate (nothing is allocated).
* **Per-stage time** (:func:`stage_times`): forward+backward milliseconds of each Table 4 stage on its real input,
  for the depthwise-vs-fused analysis of §3.2.

``dtype`` is ``fp32``, ``bf16`` or ``fp16`` (``torch.autocast``; fp16 adds a ``GradScaler`` on CUDA), and
``channels_last`` switches model and input to the NHWC memory format.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .configs import ModelConfig, get_config
from .errors import ConfigError
from .model import EfficientNet

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
CPU_MEMORY_BUDGET = 8 * 2**30


# ----------------------------------------------------------------------------------------------------------
# Models: named variants and the Table 3 fused ablation

def parse_stages(text: str | None) -> list[int]:
    """``"1-3"`` -> [1, 2, 3]; ``"2"`` -> [2]; ``"none"``/``""``/None -> []."""
    if text is None or str(text).lower() in ("", "none", "no"):
        return []
    try:
        lo, _, hi = str(text).partition("-")
        return list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"fused stages must look like 1-3 or none, got {text!r}") from None


def fused_config(name: str | ModelConfig, stages=(), kernel: int | None = None,
                 se_ratio: float | None = None) -> ModelConfig:
    """Table 3's ablation: ``name`` with MBConv replaced by Fused-MBConv in ``stages`` (1-based, Table 4 numbering).

    ``kernel`` overrides the fused stages' kernel size (V2 uses 3x3 everywhere; B4 has 5x5 in stages 3, 5 and 6);
    ``se_ratio`` keeps squeeze-excitation in the fused blocks (dropped by default, as in every V2 config).
    """
    cfg = get_config(name)
    stages = list(stages)
    if not stages:
        return cfg
    cfg = cfg.with_blocks(stages, "fused", se_ratio=se_ratio)
    if kernel is not None:
        rows = list(cfg.stages)
        for i in stages:
            rows[i - 1] = dataclasses.replace(rows[i - 1], kernel=kernel)
        cfg = cfg.replace(stages=tuple(rows))
    tag = f"fused{stages[0]}-{stages[-1]}" + (f"_k{kernel}" if kernel else "") + (f"_se{se_ratio:g}" if se_ratio else "")
    return cfg.replace(name=f"{cfg.name}_{tag}")


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, image_size: int) -> int:
    """Multiply-accumulates of one image (the paper's "FLOPs"), from ``torch.utils.flop_counter`` / 2."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training, p = model.training, next(model.parameters())
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, 3, image_size, image_size, device=p.device))
    model.train(was_training)
    return counter.get_total_flops() // 2


# ----------------------------------------------------------------------------------------------------------
# Timing

def _sync(device: torch.device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, repeats: int = 10, warmup: int = 3, device="cpu") -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def spread(values: list[float]) -> dict:
    """Median, quartiles (IQR), min and max of a list of measurements."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q25": q[0], "q75": q[2], "min": min(values), "max": max(values)}


def _inputs(batch_size, image_size, device, channels_last, num_classes=1000):
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, num_classes, (batch_size,), device=device)


def make_train_step(model: nn.Module, batch_size: int, image_size: int, dtype: str = "fp32",
                    channels_last: bool = False, lr: float = 0.01):
    """A closure running one full training step (forward, loss, backward, SGD update) on fixed random data."""
    device = next(model.parameters()).device
    x, y = _inputs(batch_size, image_size, device, channels_last, getattr(model, "num_classes", 1000))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == "fp16" and device.type == "cuda")
    amp = dict(device_type=device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(**amp):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def make_inference(model: nn.Module, batch_size: int, image_size: int, dtype: str = "fp32",
                   channels_last: bool = False):
    """A closure running one eval-mode forward pass under ``torch.inference_mode``."""
    device = next(model.parameters()).device
    x, _ = _inputs(batch_size, image_size, device, channels_last, getattr(model, "num_classes", 1000))
    amp = dict(device_type=device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")

    def infer():
        model.eval()
        with torch.inference_mode(), torch.autocast(**amp):
            model(x)

    return infer


# ----------------------------------------------------------------------------------------------------------
# Memory

def cpu_memory_estimate(model: EfficientNet, image_size: int, dtype: str = "fp32") -> tuple[int, int]:
    """(bytes per image, fixed bytes) of a training step's peak memory, estimated without running it.

    Per image: the tensors autograd saves for backward (``ev2lib.summary``, batch 1). Fixed: weights, gradients
    and SGD momentum (3 x parameter bytes).
    """
    from .summary import summarize

    saved = sum(r.activation_bytes for r in summarize(model, image_size, 1, device=str(next(model.parameters()).device)))
    if dtype != "fp32":
        saved //= 2  # autocast keeps most saved activations in 16 bits (an approximation)
    return saved, 3 * sum(p.numel() * p.element_size() for p in model.parameters())


def peak_memory(model: EfficientNet, batch_size: int, image_size: int, dtype: str = "fp32",
                channels_last: bool = False) -> tuple[int, str]:
    """(bytes, kind): CUDA ``max_memory_allocated`` over a training step, or the CPU estimate (module docstring)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        step = make_train_step(model, batch_size, image_size, dtype, channels_last)
        step()  # optimizer state exists after the first step
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device), "cuda max_memory_allocated"
    per_image, fixed = cpu_memory_estimate(model, image_size, dtype)
    return fixed + per_image * batch_size, "cpu estimate: saved-for-backward + 3x params"


def _fits_cuda(model, batch_size, image_size, dtype, channels_last) -> bool:
    try:
        make_train_step(model, batch_size, image_size, dtype, channels_last)()
        torch.cuda.synchronize()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


def max_batch_size(model: EfficientNet, image_size: int, dtype: str = "fp32", channels_last: bool = False,
                   limit: int = 1024, memory_budget: int | None = None) -> int:
    """The largest training batch (<= ``limit``) that fits: by trying on CUDA, by the estimate on CPU (0: none)."""
    device = next(model.parameters()).device
    if device.type == "cuda":
        def fits(b):
            return _fits_cuda(model, b, image_size, dtype, channels_last)
    else:
        per_image, fixed = cpu_memory_estimate(model, image_size, dtype)
        budget = memory_budget or CPU_MEMORY_BUDGET

        def fits(b):
            return fixed + per_image * b <= budget
    lo, hi = 0, 1
    while hi <= limit and fits(hi):  # double until it does not fit
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:  # bisect: lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


# ----------------------------------------------------------------------------------------------------------
# One benchmark

@dataclass
class BenchResult:
    """One measurement: a model at an image size, batch size, dtype and memory format on one device."""

    model: str
    image_size: int
    batch_size: int
    device: str
    dtype: str
    channels_last: bool
    params: int
    macs: int  # per image
    train_img_s: dict  # median, q25, q75, min, max
    infer_img_s: dict | None = None
    latency_ms: dict | None = None  # batch 1
    peak_memory_bytes: int | None = None
    memory_kind: str = ""
    max_batch: int | None = None
    repeats: int = 0
    warmup: int = 0
    stage_ms: list | None = None  # forward+backward ms per Table 4 stage (stem, 1..K, head)
    notes: dict = field(default_factory=dict)

    def line(self) -> str:
        t = self.train_img_s
        s = (f"{self.model} @{self.image_size} batch {self.batch_size} {self.dtype}"
             f"{' channels_last' if self.channels_last else ''} on {self.device}: "
             f"train {t['median']:.1f} img/s (IQR {t['q25']:.1f}-{t['q75']:.1f}, min {t['min']:.1f}, max {t['max']:.1f})")
        if self.infer_img_s:
            s += f"; infer {self.infer_img_s['median']:.1f} img/s"
        if self.latency_ms:
            s += f", latency {self.latency_ms['median']:.2f} ms"
        if self.peak_memory_bytes:
            s += f"; peak memory {self.peak_memory_bytes / 2**20:.0f} MiB ({self.memory_kind})"
        if self.max_batch is not None:
            s += f"; largest batch {self.max_batch}"
        return s


_LARGEST: dict = {}


def benchmark(model: str | ModelConfig | EfficientNet, image_size: int, batch_size: int | str = 8,
              device: str = "cpu", dtype: str = "fp32", channels_last: bool = False, repeats: int = 10,
              warmup: int = 3, inference: bool = True, memory: bool = True, find_max_batch: bool = False,
              max_batch_limit: int = 1024, memory_budget: int | None = None, per_stage: bool = False,
              num_classes: int = 1000) -> BenchResult:
    """Measure ``model`` (a name, config or model) at one image size; ``batch_size="max"`` uses the largest batch."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for but no CUDA GPU is visible: use --device cpu")
    net = model if isinstance(model, nn.Module) else EfficientNet(get_config(model), num_classes=num_classes)
    net = net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if image_size < net.min_image_size:
        net.forward_features(torch.zeros(1, 3, image_size, image_size))  # the one-line InputSizeError
    largest = None
    if find_max_batch or batch_size == "max":
        key = (net.config, image_size, str(device), dtype, channels_last, max_batch_limit, memory_budget)
        if key not in _LARGEST:  # searched once per model and size, however many batch sizes are timed
            _LARGEST[key] = max_batch_size(net, image_size, dtype, channels_last, max_batch_limit, memory_budget)
        largest = _LARGEST[key]
        if largest == 0:
            raise ConfigError(f"{net.config.name} at {image_size} does not fit even batch 1 in memory")
    b = largest if batch_size == "max" else int(batch_size)
    train = time_calls(make_train_step(net, b, image_size, dtype, channels_last), repeats, warmup, device)
    res = BenchResult(net.config.name, image_size, b, str(device), dtype, channels_last, count_params(net),
                      count_macs(net, image_size), spread([b / t for t in train]), max_batch=largest,
                      repeats=repeats, warmup=warmup)
    if inference:
        res.infer_img_s = spread([b / t for t in time_calls(make_inference(net, b, image_size, dtype, channels_last),
                                                            repeats, warmup, device)])
        res.latency_ms = spread([1000 * t for t in time_calls(make_inference(net, 1, image_size, dtype, channels_last),
                                                              repeats, warmup, device)])
    if memory:
        res.peak_memory_bytes, res.memory_kind = peak_memory(net, b, image_size, dtype, channels_last)
    if per_stage:
        res.stage_ms = stage_times(net, image_size, b, dtype, repeats=max(3, repeats // 2), warmup=1)
    net.zero_grad(set_to_none=True)
    return res


def stage_times(model: EfficientNet, image_size: int, batch_size: int = 8, dtype: str = "fp32",
                repeats: int = 5, warmup: int = 1, channels_last: bool = False) -> list[float]:
    """Median forward+backward milliseconds of each Table 4 stage (stem, block stages 1..K, head) on its real input.

    Each stage is timed alone: its input is the previous stages' output (computed once, without grad) with
    ``requires_grad`` set, and the backward pass starts from a gradient of ones.
    """
    device = next(model.parameters()).device
    x, _ = _inputs(batch_size, image_size, device, channels_last, getattr(model, "num_classes", 1000))
    amp = dict(device_type=device.type, dtype=DTYPES[dtype], enabled=dtype != "fp32")
    model.train()
    out = []
    for i, stage in enumerate(model.features):
        inp = x.detach().requires_grad_(i > 0)  # the image itself needs no gradient

        def fwd_bwd(stage=stage, inp=inp):
            with torch.autocast(**amp):
                y = stage(inp)
            y.backward(torch.ones_like(y))

        out.append(1000 * statistics.median(time_calls(fwd_bwd, repeats, warmup, device)))
        with torch.no_grad(), torch.autocast(**amp):
            x = stage(x)
    model.zero_grad(set_to_none=True)
    return out


# ----------------------------------------------------------------------------------------------------------
# Command line

def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ev2lib.bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", nargs="+", default=["efficientnetv2_s"], help="names from ev2lib.list_models()")
    p.add_argument("--image-size", type=int, nargs="+", default=None, help="input sides (default: train size)")
    p.add_argument("--batch-size", nargs="+", default=["8"], help="batch sizes, or 'max' for the largest that fits")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES), help="autocast dtype")
    p.add_argument("--channels-last", action="store_true", help="NHWC memory format")
    p.add_argument("--repeats", type=int, default=10, help="timed steps (median and spread over these)")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first")
    p.add_argument("--fused-stages", nargs="+", default=None,
                   help="Table 3: e.g. none 1-3 1-5 1-7 (MBConv -> Fused-MBConv in those stages)")
    p.add_argument("--fused-kernel", type=int, default=None, help="kernel of the fused stages (default: unchanged)")
    p.add_argument("--fused-se", type=float, default=None, help="keep SE with this ratio in fused blocks")
    p.add_argument("--max-batch", action="store_true", help="also search the largest batch that fits")
    p.add_argument("--max-batch-limit", type=int, default=1024)
    p.add_argument("--memory-budget-gb", type=float, default=None, help="CPU: memory budget for the batch search")
    p.add_argument("--stage-times", action="store_true", help="also time forward+backward of every stage")
    p.add_argument("--no-inference", action="store_true", help="skip inference throughput and latency")
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    p.add_argument("--save", default=None, help="write data/results/NAME.json (needs --profile)")
    p.add_argument("--profile", default=None, choices=["cpu-reference", "colab", "full"])
    args = p.parse_args(argv)
    if args.save and not args.profile:
        raise ConfigError("--save needs --profile cpu-reference, colab or full (smoke runs are never saved)")
    if args.threads:
        torch.set_num_threads(args.threads)
    batches = [b if b == "max" else _positive_int(b) for b in args.batch_size]
    configs = [fused_config(m, parse_stages(f), args.fused_kernel, args.fused_se)
               for m in args.model for f in (args.fused_stages or ["none"])]
    jobs = [(c, s or c.train_size, b) for c in configs for s in (args.image_size or [None]) for b in batches]

    from tqdm.auto import tqdm

    runs = []
    for cfg, size, b in tqdm(jobs, desc="bench", unit="run"):
        torch.manual_seed(0)
        r = benchmark(cfg, size, b, args.device, args.dtype, args.channels_last, args.repeats, args.warmup,
                      inference=not args.no_inference, find_max_batch=args.max_batch,
                      max_batch_limit=args.max_batch_limit,
                      memory_budget=int(args.memory_budget_gb * 2**30) if args.memory_budget_gb else None,
                      per_stage=args.stage_times)
        tqdm.write(r.line())
        runs.append(asdict(r))
    if args.save:
        from . import results

        cmd = "python -m ev2lib.bench " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
        path = results.save(args.save, {"runs": runs}, config=vars(args), command=cmd, profile=args.profile,
                            device=args.device)
        print(f"saved {path}")
    return runs


def _positive_int(text: str) -> int:
    if not str(text).isdigit() or int(text) < 1:
        raise ConfigError(f"--batch-size takes positive integers or 'max', got {text!r}")
    return int(text)


if __name__ == "__main__":
    from .errors import cli_main

    cli_main(main)
