"""Training and inference speed, memory and the largest batch that fits (paper §3.2, Tables 2 and 3).

    python -m ev2lib.bench --model efficientnet_b6 --image-size 380 512 --batch-size 12 max --device cuda

* **Training throughput** (images/s): forward, cross-entropy, backward and SGD on random data, ``warmup`` untimed,
  ``repeats`` timed one by one (CUDA events on a GPU); **inference**: eval-mode batches and batch-1 latency (ms).
* **Peak memory**: CUDA's ``max_memory_allocated`` over a step; on a CPU an *estimate of the same quantity*, the
  bytes autograd saves (``ev2lib.summary``) plus 3 x the parameter bytes (``memory_kind`` says which).
* **Largest batch** (Table 2's "OOM"): on CUDA double until out of memory (:func:`is_out_of_memory`), then bisect;
  on a CPU the largest batch whose estimate fits ``memory_budget``. **Per-stage time** (:func:`stage_times`).
``dtype``: fp32, bf16 or fp16 (autocast; fp16 adds a GradScaler on CUDA); ``channels_last`` switches to NHWC.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .configs import ModelConfig, get_config
from .errors import ConfigError
from .model import EfficientNet, parse_stages, swap_blocks
from .summary import count_macs, count_params, saved_for_backward

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def precision(device: str = "cuda") -> str:
    """The autocast dtype a measurement on ``device`` should use, the training loop's own choice
    (:func:`ev2lib.recipe.resolve_amp`): bf16 where the hardware runs it natively, fp16 on an older GPU, else fp32."""
    from .recipe import resolve_amp
    return {"none": "fp32"}.get(amp := resolve_amp("auto", torch.device(device)), amp)
CPU_MEMORY_BUDGET = 8 * 2**30


# --- Timing -------------------------------------------------------------------------------------------------------

def time_calls(fn, repeats: int = 10, warmup: int = 3, device="cpu", clock=time.perf_counter) -> list[float]:
    """Seconds taken by each of ``repeats`` calls of ``fn()`` after ``warmup`` untimed calls: CUDA events on a GPU,
    ``clock`` on a CPU (``time.process_time`` for a one-thread process: what a neighbour cannot stretch)."""
    device = torch.device(device)
    for _ in range(warmup):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
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
            t0 = clock()
            fn()
            times.append(clock() - t0)
    return times


def spread(values: list[float]) -> dict:
    """Median, quartiles (IQR), min and max of a list of measurements."""
    q = statistics.quantiles(values, n=4, method="inclusive") if len(values) > 1 else [values[0]] * 3
    return {"median": statistics.median(values), "q25": q[0], "q75": q[2], "min": min(values), "max": max(values)}


def _inputs(model, batch_size, image_size, channels_last):
    device = next(model.parameters()).device
    x = torch.randn(batch_size, 3, image_size, image_size, device=device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, torch.randint(0, getattr(model, "num_classes", 1000), (batch_size,), device=device)


def _autocast(model, dtype: str):
    return torch.autocast(next(model.parameters()).device.type, DTYPES[dtype], enabled=dtype != "fp32")


def make_train_step(model: nn.Module, batch_size: int, image_size: int, dtype: str = "fp32",
                    channels_last: bool = False, lr: float = 0.01):
    """A closure running one full training step (forward, loss, backward, SGD update) on fixed random data."""
    x, y = _inputs(model, batch_size, image_size, channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    scaler = torch.amp.GradScaler(x.device.type, enabled=dtype == "fp16" and x.device.type == "cuda")
    model.train()

    def step():
        opt.zero_grad(set_to_none=True)
        with _autocast(model, dtype):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def warm_up(model: str, image_size: int, batch_size: int, dtype: str = "bf16", channels_last: bool = True,
            steps: int = 3) -> None:
    """A few untimed training steps and an evaluation pass of ``model`` at ``image_size`` on the GPU (CUDA
    start-up, library handles, cuDNN's plan for the shape), so the first timed run is not the one paying for them."""
    net = EfficientNet(get_config(model), num_classes=10).to("cuda")
    step = make_train_step(net, batch_size, image_size, dtype, channels_last)
    for _ in range(steps):
        step()
    make_inference(net, batch_size, image_size, dtype, channels_last)()
    torch.cuda.synchronize()


def make_inference(model: nn.Module, batch_size: int, image_size: int, dtype: str = "fp32",
                   channels_last: bool = False):
    """A closure running one eval-mode forward pass under ``torch.inference_mode``."""
    x, _ = _inputs(model, batch_size, image_size, channels_last)

    def infer():
        model.eval()
        with torch.inference_mode(), _autocast(model, dtype):
            model(x)

    return infer


def stage_times(model: EfficientNet, image_size: int, batch_size: int = 8, dtype: str = "fp32",
                repeats: int = 5, channels_last: bool = False) -> list[float]:
    """Mean forward+backward ms of each Table 4 stage (stem, stages 1..K, head) on its real input: each stage timed
    alone by ``torch.utils.benchmark.Timer`` (2 warm-ups, ``repeats`` calls) on the previous stages' output with
    ``requires_grad`` set, the backward pass from a gradient of ones."""
    from torch.utils.benchmark import Timer  # imported here: it imports cpp_extension, which may warn on stderr
    x, _ = _inputs(model, batch_size, image_size, channels_last)
    model.train()
    out = []
    for i, stage in enumerate(model.features):
        inp = x.detach().requires_grad_(i > 0)  # the image itself needs no gradient

        def fwd_bwd(stage=stage, inp=inp):
            with _autocast(model, dtype):
                y = stage(inp)
            y.backward(torch.ones_like(y))

        timer = Timer("fwd_bwd()", globals={"fwd_bwd": fwd_bwd}, num_threads=torch.get_num_threads())
        out.append(1000 * timer.timeit(repeats).mean)
        with torch.no_grad(), _autocast(model, dtype):
            x = stage(x)
    model.zero_grad(set_to_none=True)
    return out


# --- Memory -------------------------------------------------------------------------------------------------------

def cpu_memory_estimate(model: EfficientNet, image_size: int, dtype: str = "fp32") -> tuple[int, int]:
    """(bytes per image, fixed bytes) of a training step's peak memory, without running it: per image the tensors
    autograd saves (:func:`ev2lib.summary.saved_for_backward`, batch 1); fixed the weights, gradients and momentum."""
    saved = sum(saved_for_backward(model, _inputs(model, 1, image_size, False)[0])[0])
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


# Near full memory CUDA fails as an OutOfMemoryError or as cuDNN's own allocation in a RuntimeError: "does not fit".
OOM_MESSAGES = ("out of memory", "CUDNN_STATUS_ALLOC_FAILED", "CUDNN_STATUS_NOT_SUPPORTED", "unable to find an engine",
                "CUBLAS_STATUS_ALLOC_FAILED")


def is_out_of_memory(e: BaseException) -> bool:
    """Whether an exception of a training step means the batch does not fit in the GPU's memory."""
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and any(m in str(e) for m in OOM_MESSAGES))


def _fits_cuda(model, batch_size, image_size, dtype, channels_last) -> bool:
    try:
        make_train_step(model, batch_size, image_size, dtype, channels_last)()
        torch.cuda.synchronize()
        return True
    except RuntimeError as e:  # OutOfMemoryError is a RuntimeError
        if is_out_of_memory(e):
            return False
        raise
    finally:
        model.zero_grad(set_to_none=True)
        torch.cuda.empty_cache()


def max_batch_size(model: EfficientNet, image_size: int, dtype: str = "fp32", channels_last: bool = False,
                   limit: int = 1024, memory_budget: int | None = None) -> int:
    """The largest training batch (<= ``limit``) that fits: by trying on CUDA, by the estimate on CPU (0: none)."""
    if next(model.parameters()).device.type == "cuda":
        def fits(b):
            return _fits_cuda(model, b, image_size, dtype, channels_last)
    else:
        per_image, fixed = cpu_memory_estimate(model, image_size, dtype)

        def fits(b):
            return fixed + per_image * b <= (memory_budget or CPU_MEMORY_BUDGET)
    lo, hi = 0, 1
    while hi <= limit and fits(hi):  # double until it does not fit
        lo, hi = hi, hi * 2
    hi = min(hi, limit + 1)
    while hi - lo > 1:  # bisect: lo fits, hi does not
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if fits(mid) else (lo, mid)
    return lo


# --- One benchmark ------------------------------------------------------------------------------------------------

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


_LARGEST: dict = {}  # (config, size, device, dtype, ...) -> largest batch: searched once however many batches are timed


def _prepare(model, image_size, device, channels_last, num_classes) -> EfficientNet:
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("--device cuda asked for but no CUDA GPU is visible: use --device cpu")
    net = model if isinstance(model, nn.Module) else EfficientNet(get_config(model), num_classes=num_classes)
    net = net.to(device, memory_format=torch.channels_last if channels_last else torch.preserve_format)
    if image_size < net.min_image_size:
        net.forward_features(torch.zeros(1, 3, image_size, image_size))  # the one-line InputSizeError
    return net


def benchmark(model: str | ModelConfig | EfficientNet, image_size: int, batch_size: int | str = 8,
              device: str = "cpu", dtype: str = "fp32", channels_last: bool = False, repeats: int = 10,
              warmup: int = 3, inference: bool = True, memory: bool = True, find_max_batch: bool = False,
              max_batch_limit: int = 1024, memory_budget: int | None = None, per_stage: bool = False,
              num_classes: int = 1000) -> BenchResult:
    """Measure ``model`` (a name, config or model) at one image size; ``batch_size="max"`` uses the largest batch."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    net = _prepare(model, image_size, device, channels_last, num_classes)
    largest = None
    if find_max_batch or batch_size == "max":
        key = (net.config, image_size, str(device), dtype, channels_last, max_batch_limit, memory_budget)
        if key not in _LARGEST:
            _LARGEST[key] = max_batch_size(net, image_size, dtype, channels_last, max_batch_limit, memory_budget)
        largest = _LARGEST[key]
        if largest == 0:
            raise ConfigError(f"{net.config.name} at {image_size} does not fit even batch 1 in memory")
    b = largest if batch_size == "max" else int(batch_size)

    def img_s(closure, batch):
        return spread([batch / t for t in time_calls(closure, repeats, warmup, device)])

    res = BenchResult(net.config.name, image_size, b, str(device), dtype, channels_last, count_params(net),
                      count_macs(net, image_size), img_s(make_train_step(net, b, image_size, dtype, channels_last), b),
                      max_batch=largest, repeats=repeats, warmup=warmup)
    if inference:
        res.infer_img_s = img_s(make_inference(net, b, image_size, dtype, channels_last), b)
        res.latency_ms = spread([1000 * t for t in time_calls(make_inference(net, 1, image_size, dtype, channels_last),
                                                              repeats, warmup, device)])
    if memory:
        res.peak_memory_bytes, res.memory_kind = peak_memory(net, b, image_size, dtype, channels_last)
    if per_stage:
        res.stage_ms = stage_times(net, image_size, b, dtype, repeats=max(3, repeats // 2), channels_last=channels_last)
    net.zero_grad(set_to_none=True)
    return res


# --- Command line -------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
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
    p.add_argument("--profile", default=None, choices=["smoke", "cpu-reference", "colab", "full"],
                   help="smoke is saved only into a rehearsal's results folder (ev2lib.results.is_rehearsal)")
    return p


def main(argv=None):
    t0, args = time.perf_counter(), _parser().parse_args(argv)
    if args.save and not args.profile:
        raise ConfigError("--save needs --profile cpu-reference, colab or full (smoke runs are never saved)")
    if args.threads:
        torch.set_num_threads(args.threads)
    if any(b != "max" and (not b.isdigit() or int(b) < 1) for b in args.batch_size):
        raise ConfigError(f"--batch-size takes positive integers or 'max', got {args.batch_size}")
    configs = [swap_blocks(m, parse_stages(f), "fused", args.fused_kernel, args.fused_se)
               for m in args.model for f in (args.fused_stages or ["none"])]
    jobs = [(c, s or c.train_size, b) for c in configs for s in (args.image_size or [None]) for b in args.batch_size]

    from tqdm.auto import tqdm

    runs, cmd = [], "python -m ev2lib.bench " + " ".join(argv if argv is not None else sys.argv[1:])
    for cfg, size, b in tqdm(jobs, desc="bench", unit="run"):
        torch.manual_seed(0)
        r = benchmark(cfg, size, b, args.device, args.dtype, args.channels_last, args.repeats, args.warmup,
                      inference=not args.no_inference, find_max_batch=args.max_batch,
                      max_batch_limit=args.max_batch_limit,
                      memory_budget=int(args.memory_budget_gb * 2**30) if args.memory_budget_gb else None,
                      per_stage=args.stage_times)
        tqdm.write(r.line())
        runs.append(asdict(r))
        if args.save:  # after every measurement: a run cut off keeps what it finished ("complete": false)
            from . import results

            path = results.save(args.save, {"runs": runs, "complete": len(runs) == len(jobs),
                                            "wall_seconds": time.perf_counter() - t0},
                                config=vars(args), command=cmd, profile=args.profile, device=args.device)
    if args.save:
        print(f"saved {path}")
    return runs


if __name__ == "__main__":
    from .errors import cli_main

    cli_main(main)
