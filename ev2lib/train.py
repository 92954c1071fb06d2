"""The training loop (paper §5.1; official ``main.py``, ``utils.py``): setup, ``train_step``, ``evaluate``,
checkpoints, and ``train`` that strings them together. No framework.

``python -m ev2lib.train --profile smoke`` runs it; ``torchrun --nproc_per_node=N -m ev2lib.train ...`` runs the
same command on N processes (DDP; gloo on CPU, NCCL on GPU).

The recipe's pieces, each where the loop puts it: SGD or TF-style RMSProp (:class:`RMSpropTF`), linear warm-up
then exponential (x0.97 every 2.4 epochs) or cosine decay (the *LR schedule*), label smoothing, weight decay on
conv/linear weights only, an EMA of the weights, bf16/fp16 autocast chosen for the hardware, channels_last,
optional ``torch.compile``, a stop with one clear line on a NaN/inf loss, atomic checkpoints with exact resume,
a JSONL log and a tqdm bar. A *progressive schedule* (:mod:`ev2lib.progressive`) changes image size,
regularization and dropout per epoch.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import os
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .data import load_data
from .errors import ConfigError, TrainingError, WeightsError, cli_main
from .files import append_jsonl, atomic_write, load_torch, read_jsonl
from .transfer import init_model


@dataclass
class TrainConfig:
    """Every knob of a run. :data:`PROFILES` hold the presets; the CLI flags override single fields."""

    model: str = "efficientnetv2_cifar"
    init: str = ""  # "" = from scratch; "torchvision" | "timm" (published ImageNet weights) | an ev2lib checkpoint.pt
    freeze: str = ""  # stages that do not train when fine-tuning, e.g. "0-3" (0 = the stem; ev2lib.transfer)
    data: str = "cifar10"
    classes: str = ""  # keep these classes only, e.g. "5-9" (in-memory datasets; relabelled from 0)
    epochs: int = 10
    steps: int = 0  # train exactly this many steps, the LR schedule ending there (0 = epochs; §5.3: 10,000)
    batch_size: int = 256  # global: divided among DDP processes
    micro_batches: int = 1  # split each process's batch into this many chunks, gradients accumulated
    image_size: int = 32
    eval_size: int = 0  # 0 = image_size
    crop: str = "pad"  # "rrc": official random resized crop (area 0.05-1); "pad": CIFAR pad-4 crop; "resize": whole image
    optimizer: str = "sgd"  # "sgd" | "rmsprop" (paper: TF RMSProp, decay 0.9, momentum 0.9, eps 1e-3)
    lr: float = 0.2  # peak learning rate for the global batch (paper: 0.016 x batch / 256)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-5  # on conv/linear weights only (official: no decay on BN gamma/beta and biases)
    lr_schedule: str = "cosine"  # "cosine" | "exponential" (x decay_rate every decay_epochs) | "constant"
    warmup_epochs: float = 1.0
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # 0 = no EMA (paper: 0.9999)
    dropout: float = -1.0  # -1 = the model's own
    drop_path_rate: float = -1.0
    randaug_magnitude: float = 0.0  # official 0-10 scale (ev2lib.data.rand_augment; extrapolated above 10)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    cutout: float = 0.0  # cutout box side as a fraction of the image side, random fill (§5.3 fine-tuning: 0.5)
    amp: str = "auto"  # "auto" (bf16 where the hardware runs it natively, fp16 on older GPUs, else fp32) | "none" | "bf16" | "fp16"
    channels_last: bool = True
    compile: bool = False
    grad_clip: float = 0.0  # 0 = no clipping (the norm is logged either way)
    train_subset: int = 0  # 0 = all training images (after the validation hold-out)
    val_images: int = 0  # hold this many training images out for choices (tuning); the test split is then scored once, at the end
    eval_subset: int = 0
    num_workers: int = 0
    augment_on: str = "cpu"  # "cpu": one image at a time (ev2lib.data.augment) | "device": batched on the training
    # device, images kept there (ev2lib.device_augment; in-memory datasets only)
    max_steps: int = 0  # stop after this many steps (0 = all epochs)
    ckpt_every: int = 0  # steps between checkpoints (0 = at epoch ends only)
    log_every: int = 10
    eval_every: int = 1  # epochs
    out: str = "runs/run"
    seed: int = 0
    deterministic: bool = False
    progress: bool = True
    device: str = "auto"


PROFILES = {
    # CPU, offline, about a minute: a few hundred steps on a subset of CIFAR-10 (the shared archive if present).
    "smoke": dict(epochs=2, train_subset=2048, eval_subset=1000, batch_size=128, lr=0.1, warmup_epochs=0.3),
    # The CPU reference: full CIFAR-10 at 32 px, 4 epochs (README benchmark).
    "cpu-reference": dict(epochs=4, batch_size=256, lr=0.4, warmup_epochs=0.5, label_smoothing=0.1),
    # One Colab GPU: EfficientNetV2-B0 on CIFAR-10 upsampled to 64 px with the official augmentation, applied on the
    # GPU (Colab's 2 CPU cores cannot feed a T4 one image at a time). Sized for about 15 minutes on a T4
    # (750,000 images at 64 px; an estimate until the GPU kit has timed it).
    "colab": dict(model="efficientnetv2_b0", epochs=15, batch_size=256, image_size=64, crop="rrc", lr=0.4,
                  warmup_epochs=1, randaug_magnitude=5, ema_decay=0.999, augment_on="device"),
    # Paper scale (ImageNet layout as ImageFolder, §5.1 / official hparams): RMSProp, 350 epochs, batch 4096.
    "full": dict(model="efficientnetv2_s", epochs=350, batch_size=4096, image_size=300, eval_size=384, crop="rrc",
                 optimizer="rmsprop", lr=0.256, weight_decay=1e-5, lr_schedule="exponential", warmup_epochs=5,
                 ema_decay=0.9999, randaug_magnitude=10, num_workers=8, ckpt_every=2000),
}


def make_config(profile: str = "smoke", **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a profile plus field overrides; unknown names raise :class:`ConfigError`."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    bad = set(overrides) - {f.name for f in dataclasses.fields(TrainConfig)}
    if bad:
        raise ConfigError(f"unknown TrainConfig field(s) {sorted(bad)}")
    return TrainConfig(**{**PROFILES[profile], **overrides})


# ----------------------------------------------------------------------------------------------------------
# Optimizer, LR schedule, precision


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp with TensorFlow 1's semantics (``tf.compat.v1.train.RMSPropOptimizer``), the paper's optimizer.

    It differs from ``torch.optim.RMSprop`` in three ways: eps is inside the square root, the mean square starts
    at 1 (not 0, so early steps are small), and the learning rate is applied before the momentum buffer (so
    changing the LR does not rescale the accumulated velocity)::

        ms  = rho * ms + (1 - rho) * g^2                 # ms_0 = 1
        mom = momentum * mom + lr * g / sqrt(ms + eps)
        p   = p - mom

    ``weight_decay`` is added to the gradient (L2 in the loss, as the official ``1e-5 * sum(l2_loss)``).
    """

    def __init__(self, params, lr=0.016, rho=0.9, momentum=0.9, eps=1e-3, weight_decay=0.0):
        super().__init__(params, dict(lr=lr, rho=rho, momentum=momentum, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad.add(p, alpha=group["weight_decay"]) if group["weight_decay"] else p.grad
                st = self.state[p]
                if not st:
                    st["ms"], st["mom"] = torch.ones_like(p), torch.zeros_like(p)
                st["ms"].mul_(group["rho"]).addcmul_(g, g, value=1 - group["rho"])
                update = g / (st["ms"] + group["eps"]).sqrt()
                if group["momentum"] > 0:
                    st["mom"].mul_(group["momentum"]).add_(update, alpha=group["lr"])
                    p.sub_(st["mom"])
                else:
                    p.sub_(update, alpha=group["lr"])


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights only: none on BN gamma/beta and biases (official regex
    ``.*(bias|gamma|beta).*``); every 1-D parameter is a bias or a BN scale/shift."""
    params = [p for p in model.parameters() if p.requires_grad]
    return [{"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]


def build_optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=cfg.lr, rho=0.9, momentum=cfg.momentum, eps=1e-3)
    raise ConfigError(f"optimizer must be 'sgd' or 'rmsprop', got {cfg.optimizer!r}")


def total_steps(cfg: TrainConfig, steps_per_epoch: int) -> int:
    """The run's length in steps: ``cfg.steps`` if set (fine-tuning's fixed 10,000), else epochs x steps per epoch."""
    return cfg.steps or cfg.epochs * steps_per_epoch


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """The LR schedule's multiplier at ``step``: linear warm-up from 0, then cosine to 0, exponential or constant.

    The exponential decay is staircase and counts from step 0 (not from the end of warm-up), as the official
    ``WarmupLearningRateSchedule``: ``decay_rate ** floor(step / (decay_epochs * steps_per_epoch))``."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return step / warm
    total = total_steps(cfg, steps_per_epoch)
    if cfg.lr_schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    if cfg.lr_schedule == "exponential":
        return cfg.decay_rate ** math.floor(step / (cfg.decay_epochs * steps_per_epoch))
    if cfg.lr_schedule == "constant":
        return 1.0
    raise ConfigError(f"lr_schedule must be 'cosine', 'exponential' or 'constant', got {cfg.lr_schedule!r}")


def cpu_has_native_bf16() -> bool:
    """True where the CPU has bf16 arithmetic (x86 AVX512-BF16 or AMX, Arm's BF16 extension). Elsewhere torch
    emulates bf16 and an fp32 step is faster (about 2.5x on an AVX-512 Xeon without BF16)."""
    try:
        flags = {f for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith(("flags", "Features")) for f in line.split(":", 1)[1].split()}
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


def resolve_amp(amp: str, device: torch.device) -> str:
    """``"auto"`` -> ``"bf16"`` where the hardware runs it natively, ``"fp16"`` on a GPU without bf16 (a T4),
    ``"none"`` (fp32) on a CPU without bf16. Explicit values pass through."""
    if amp not in ("auto", "none", "bf16", "fp16"):
        raise ConfigError(f"amp must be 'auto', 'none', 'bf16' or 'fp16', got {amp!r}")
    if amp != "auto":
        return amp
    if device.type == "cuda":
        try:
            native = torch.cuda.is_bf16_supported(including_emulation=False)
        except TypeError:  # torch < 2.4 has no including_emulation and never reports emulation
            native = torch.cuda.is_bf16_supported()
        return "bf16" if native else "fp16"
    return "bf16" if cpu_has_native_bf16() else "none"


# ----------------------------------------------------------------------------------------------------------
# Checkpoints: everything the next step depends on, written atomically, read with weights_only=True


def rng_state() -> dict:
    """Every random state a training step may draw from, as tensors and plain Python (``weights_only``-safe)."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "python": [version, list(py_state), py_gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write a training checkpoint atomically (:func:`ev2lib.files.atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, config: dict | None = None) -> dict:
    """Read a training checkpoint safely; with ``config``, refuse one of another model, dataset or batch size."""
    state = load_torch(path)
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise WeightsError(f"{path} is not an ev2lib training checkpoint (it lacks 'model' and 'step')")
    saved = state.get("config", {})
    for key in ("model", "data", "batch_size", "num_classes"):
        if config and key in saved and key in config and saved[key] != config[key]:
            raise WeightsError(f"checkpoint {path} was written for {key}={saved[key]!r}, this run has "
                               f"{key}={config[key]!r}: use another --out folder, or the same settings to resume")
    return state


# ----------------------------------------------------------------------------------------------------------
# Setup, one step, evaluation


@dataclass
class Run:
    """Everything a run holds: model (and its DDP/compiled wrapper ``net``), data, optimizer, LR schedule, EMA,
    grad scaler, and the counters a checkpoint saves."""

    cfg: TrainConfig
    config: dict  # cfg as a dict, plus what setup resolved (num_classes, world_size, amp)
    model: torch.nn.Module
    net: torch.nn.Module
    data: object
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    ema: AveragedModel | None
    scaler: torch.amp.GradScaler
    device: torch.device
    rank: int = 0
    world: int = 1
    step: int = 0
    phase: dict | None = None  # the progressive-learning phase being trained
    history: list = dataclasses.field(default_factory=list)

    @property
    def ckpt_path(self) -> Path:
        return Path(self.cfg.out) / "checkpoint.pt"

    def log(self, **record) -> None:
        if self.rank == 0:
            append_jsonl(Path(self.cfg.out) / "log.jsonl", record)


def _distributed(cfg: TrainConfig):
    """(rank, world, device): torchrun sets RANK/WORLD_SIZE; a plain ``python`` run is rank 0 of 1."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    if cfg.augment_on not in ("cpu", "device"):
        raise ConfigError(f"augment_on must be 'cpu' or 'device', got {cfg.augment_on!r}")
    if cfg.batch_size % (world * cfg.micro_batches):
        raise ConfigError(f"batch size {cfg.batch_size} is not divisible by {world} processes x "
                          f"{cfg.micro_batches} micro-batches")
    return rank, world, device


def setup(cfg: TrainConfig) -> Run:
    """Build data, model, optimizer, LR schedule, EMA and grad scaler; resume from ``<out>/checkpoint.pt``."""
    rank, world, device = _distributed(cfg)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    torch.use_deterministic_algorithms(cfg.deterministic)
    data = load_data(cfg.data, image_size=cfg.image_size, eval_size=cfg.eval_size or None, crop=cfg.crop,
                     batch_size=cfg.batch_size // world, train_subset=cfg.train_subset, eval_subset=cfg.eval_subset,
                     val_images=cfg.val_images, classes=cfg.classes, seed=cfg.seed, rank=rank, world=world,
                     num_workers=cfg.num_workers, augment_device=device if cfg.augment_on == "device" else None)
    data.set_augment(randaug_magnitude=cfg.randaug_magnitude, mixup_alpha=cfg.mixup_alpha,
                     cutmix_alpha=cfg.cutmix_alpha, cutout=cfg.cutout)
    over = {k: v for k, v in (("dropout", cfg.dropout), ("drop_path_rate", cfg.drop_path_rate)) if v >= 0}
    model = init_model(cfg.model, data.num_classes, cfg.init, **over)  # scratch, or weights + new classifier (§5.3)
    model.freeze(cfg.freeze)
    model = model.to(device)
    model = model.to(memory_format=torch.channels_last) if cfg.channels_last else model
    optimizer = build_optimizer(cfg, model)
    spe = data.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, spe))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) if cfg.ema_decay else None
    amp = resolve_amp(cfg.amp, device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    run = Run(cfg, {**dataclasses.asdict(cfg), "model": getattr(cfg.model, "name", cfg.model), "amp": amp,
                    "num_classes": data.num_classes, "world_size": world}, model,
              torch.compile(net) if cfg.compile else net, data, optimizer, scheduler, ema,
              torch.amp.GradScaler(device.type, enabled=amp == "fp16"), device, rank, world)
    torch.manual_seed(cfg.seed * 1_000_003 + rank)  # dropout / stochastic depth: independent masks per rank
    if rank == 0:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    if run.ckpt_path.exists():
        resume(run)
    return run


def checkpoint(run: Run) -> None:
    """Save the run (rank 0) after checking the weights are finite; other ranks wait for it."""
    if not all(torch.isfinite(p).all() for p in run.model.parameters()):
        raise TrainingError(f"the weights hold NaN/inf at step {run.step}; the last good checkpoint {run.ckpt_path} is "
                            f"kept: lower --lr, use --amp bf16 or --grad-clip, then rerun to resume")
    if run.rank == 0:
        save_checkpoint(run.ckpt_path, {
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "ema": run.ema.state_dict() if run.ema else None,
            "scaler": run.scaler.state_dict(), "rng": rng_state(), "step": run.step, "phase": run.phase,
            "history": run.history, "config": run.config, "normalization": run.model.normalization,
            "padding": run.model.padding})
        run.log(event="checkpoint", step=run.step, path=str(run.ckpt_path))
    if run.world > 1:
        dist.barrier()


def resume(run: Run) -> None:
    state = load_checkpoint(run.ckpt_path, run.config)
    run.model.load_state_dict(state["model"])
    run.optimizer.load_state_dict(state["optimizer"])
    run.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    if run.ema is not None and state.get("ema") is not None:
        run.ema.load_state_dict(state["ema"])
    set_rng_state(state["rng"])
    run.step, run.phase, run.history = state["step"], state.get("phase"), state.get("history", [])
    run.model.normalization = tuple(tuple(v) for v in state.get("normalization", run.model.normalization))
    run.log(event="resume", step=run.step)


def _autocast(run: Run):
    amp = run.config["amp"]
    return torch.autocast(run.device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16,
                          enabled=amp != "none")


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[float, float]:
    """One optimizer step on this process's batch (pixel units): forward and backward per micro-batch, gradients
    averaged (and across DDP ranks), clip, update, LR schedule, EMA. Returns (loss, gradient norm)."""
    mf = torch.channels_last if run.cfg.channels_last else torch.contiguous_format
    x = run.model.normalize(x.to(run.device, non_blocking=True)).contiguous(memory_format=mf)
    y = y.to(run.device, non_blocking=True)
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=run.device)
    for k, (xk, yk) in enumerate(zip(x.chunk(run.cfg.micro_batches), y.chunk(run.cfg.micro_batches))):
        last = k == run.cfg.micro_batches - 1
        with _autocast(run), (run.net.no_sync() if run.world > 1 and not last else contextlib.nullcontext()):
            loss = F.cross_entropy(run.net(xk).float(), yk, label_smoothing=run.cfg.label_smoothing)
            run.scaler.scale(loss / run.cfg.micro_batches).backward()
        loss_sum += loss.detach() / run.cfg.micro_batches
    if run.world > 1:
        dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
    if not torch.isfinite(loss_sum):
        run.log(event="nan", step=run.step)
        raise TrainingError(f"the loss became {loss_sum.item()} at step {run.step}; the last good checkpoint "
                            f"{run.ckpt_path} is kept: lower --lr, use --amp bf16 or --grad-clip, then rerun to resume")
    run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip or float("inf"))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    run.step += 1
    return loss_sum.item(), grad_norm.item()


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, device="cpu", amp: str = "none", channels_last: bool = False) -> dict:
    """Top-1 accuracy and mean cross-entropy of ``model`` over ``(x, y)`` batches in pixel units."""
    was_training, correct, total, loss = model.training, 0, 0, 0.0
    model.eval()
    dtype = torch.float16 if amp == "fp16" else torch.bfloat16
    with torch.autocast(torch.device(device).type, dtype=dtype, enabled=amp not in ("none", "auto")):
        for x, y in batches:
            x = model.normalize(x.to(device))
            out = model(x.contiguous(memory_format=torch.channels_last) if channels_last else x).float()
            y = y.to(device)
            loss += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            total += len(y)
    model.train(was_training)
    return {"acc": correct / total, "loss": loss / total}


def evaluate_run(run: Run, epoch: float, final: bool, **extra) -> dict:
    """Evaluate the model (and its EMA) and append to the history and the log: on the validation split when the
    run holds one out (then the test split only once, at the end), else on the test split."""
    kw = dict(device=run.device, amp=run.config["amp"], channels_last=run.cfg.channels_last)
    splits = (["val"] if run.data.val is not None else []) + (["test"] if run.data.val is None or final else [])
    metrics = {"epoch": epoch, "step": run.step, **extra}
    for split in splits:
        metrics.update({f"{split}_{k}": v for k, v in evaluate(run.model, run.data.eval_batches(split), **kw).items()})
        if run.ema is not None:
            ema = evaluate(run.ema.module, run.data.eval_batches(split), **kw)
            metrics.update({f"ema_{split}_{k}": v for k, v in ema.items()})
    if run.phase is not None:
        metrics["phase"] = run.phase
    run.history.append(metrics)
    run.log(event="eval", **metrics)
    return metrics


# ----------------------------------------------------------------------------------------------------------
# The loop


def train(cfg: TrainConfig, progressive=None, callbacks=()) -> dict:
    """Train ``cfg.model`` on ``cfg.data``, resuming from ``<out>/checkpoint.pt`` if it exists.

    ``progressive``: a schedule from :mod:`ev2lib.progressive` (``phase_at(epoch)``), applied every epoch.
    ``callbacks``: objects with optional ``on_step_end(run)`` and ``on_epoch_end(run, metrics)``.
    Returns ``{"history", "config", "out", "source", "steps"}``.
    """
    from tqdm.auto import tqdm

    from .progressive import apply_phase

    run = setup(cfg)
    spe, t_train = run.data.steps_per_epoch, 0.0
    total = min(cfg.max_steps or total_steps(cfg, spe), total_steps(cfg, spe))
    bar = tqdm(total=total, initial=run.step, disable=run.rank != 0 or not cfg.progress, desc=str(run.config["model"]))
    while run.step < total:
        epoch, start = divmod(run.step, spe)
        if progressive is not None or run.phase is not None:
            run.phase = apply_phase(run.model, run.data, progressive.phase_at(epoch) if progressive else run.phase)
        t0 = time.perf_counter()
        for i, x, y in run.data.train_batches(epoch, start_step=start):
            loss, grad_norm = train_step(run, x, y)
            if run.step % cfg.log_every == 0 or run.step == total:
                run.log(step=run.step, epoch=epoch + (i + 1) / spe, loss=loss, lr=run.scheduler.get_last_lr()[0],
                        grad_norm=grad_norm, img_per_s=(i + 1 - start) * len(x) * run.world / (time.perf_counter() - t0))
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{run.scheduler.get_last_lr()[0]:.3g}")
            bar.update()
            if cfg.ckpt_every and run.step % cfg.ckpt_every == 0:
                checkpoint(run)
            for cb in callbacks:
                getattr(cb, "on_step_end", lambda r: None)(run)
            if run.step >= total:
                break
        t_train += time.perf_counter() - t0
        done = run.step % spe == 0
        if (done and (epoch + 1) % cfg.eval_every == 0) or run.step >= total:  # and always after the last step
            metrics = evaluate_run(run, epoch + 1 if done else run.step / spe, run.step >= total, train_seconds=t_train)
            for cb in callbacks:
                getattr(cb, "on_epoch_end", lambda r, m: None)(run, metrics)
        checkpoint(run)
    bar.close()
    if run.rank == 0:
        torch.save(run.model.state_dict(), Path(cfg.out) / "model.pt")
        if run.ema is not None:
            torch.save(run.ema.module.state_dict(), Path(cfg.out) / "model_ema.pt")
    return {"history": run.history, "config": run.config, "out": cfg.out, "source": run.data.source, "steps": run.step}


def read_log(run: str | Path) -> list[dict]:
    """The records of a run folder's ``log.jsonl`` (or of a JSONL file), in order."""
    path = Path(run)
    return read_jsonl(path / "log.jsonl" if path.is_dir() else path)


# ----------------------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    from .progressive import SCHEDULES
    from .transfer import RECIPES

    p = argparse.ArgumentParser(prog="python -m ev2lib.train", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="smoke", help=f"preset: {', '.join(PROFILES)} (flags override it)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None, metavar="BOOL")
        else:
            p.add_argument(flag, type={"int": int, "float": float}.get(str(f.type), str), default=None)
    p.add_argument("--progressive", default="none", choices=["none", *SCHEDULES],
                   help="progressive learning (ev2lib.progressive): paper Table 6, the official code's schedule, or a "
                        "baseline; phases spread over --epochs")
    p.add_argument("--progressive-variant", default="efficientnetv2_s", help="whose Table 6 / official settings")
    p.add_argument("--progressive-sizes", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="map the schedule onto this image-size range (e.g. 16 32 for CIFAR)")
    p.add_argument("--finetune", default="", choices=["", *RECIPES],
                   help="fine-tune with §5.3's recipe as the paper writes it or as the official code runs it "
                        "(ev2lib.transfer), at --profile's scale; pass the weights with --init")
    p.add_argument("--save-result", default="", help="save the history as a reference result NAME (not for smoke)")
    return p


def main(argv=None) -> dict:
    from .progressive import make_schedule
    from .transfer import finetune_config

    t0, args = time.perf_counter(), vars(_parser().parse_args(argv))
    profile, result_name, recipe = args.pop("profile"), args.pop("save_result"), args.pop("finetune")
    kind, variant, sizes = args.pop("progressive"), args.pop("progressive_variant"), args.pop("progressive_sizes")
    fields = {k: v for k, v in args.items() if v is not None}
    cfg = finetune_config(profile, recipe, **fields) if recipe else make_config(profile, **fields)
    summary = train(cfg, progressive=None if kind == "none" else make_schedule(kind, cfg.epochs, variant, sizes))
    if summary["history"] and int(os.environ.get("RANK", "0")) == 0:
        last = summary["history"][-1]
        print(f"done: {summary['steps']} steps, test accuracy {last['test_acc']:.4f}, "
              f"{last['train_seconds']:.0f} s of training; log {Path(cfg.out) / 'log.jsonl'}")
        if result_name:
            from . import results

            results.save(result_name, {"history": summary["history"], "source": summary["source"],
                                       "wall_seconds": time.perf_counter() - t0},  # this process (a resume: since it)
                         config=summary["config"], profile=profile,
                         command="python -m ev2lib.train " + " ".join(sys.argv[1:] if argv is None else argv))
    if dist.is_initialized():
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    cli_main(main)
