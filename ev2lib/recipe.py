"""The training recipe (paper §5.1; official ``hparams.py``, ``effnetv2_configs.py``): every knob of a run in one
:class:`TrainConfig`, the profiles that set them, the optimizer (SGD or the paper's TF-style :class:`RMSpropTF`,
weight decay on conv/linear weights only), the learning-rate schedule (warm-up, then exponential or cosine), the
precision (:func:`resolve_amp`) and the fine-tuning recipes of §5.3 as the paper writes them and as the official
code runs them (the code keeps the LR constant, weight decay 1e-5, a 1-epoch warm-up and an EMA). The loop that
runs it is :mod:`ev2lib.train`.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError


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
    randaug_magnitude: float = 0.0  # official 0-10 scale (ev2lib.randaugment; extrapolated above 10)
    randaug_fixed_side: int = 0  # 0: Translate/Cutout relative to the side; S: fixed pixels, an S-px image's (official)
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
    augment_on: str = "cpu"  # "cpu": one image at a time (ev2lib.augment.augment) | "device": batched on the training
    # device, images kept there (ev2lib.augment.augment_batch; in-memory datasets only)
    max_steps: int = 0  # stop after this many steps (0 = all epochs)
    ckpt_every: int = 0  # steps between checkpoints (0 = at epoch ends only)
    log_every: int = 10
    eval_every: int = 1  # epochs
    out: str = "runs/run"
    seed: int = 0
    deterministic: bool = False
    progress: bool = True
    device: str = "auto"  # "auto" (the local GPU if there is one, else the CPU) | "cpu" | "cuda" | "cuda:N" | "mps"


PROFILES = {
    # CPU, offline, about a minute: a few hundred steps on a subset of CIFAR-10 (the shared archive if present).
    "smoke": dict(epochs=2, train_subset=2048, eval_subset=1000, batch_size=128, lr=0.1, warmup_epochs=0.3),
    # The CPU reference: full CIFAR-10 at 32 px, 4 epochs (README benchmark).
    "cpu-reference": dict(epochs=4, batch_size=256, lr=0.4, warmup_epochs=0.5, label_smoothing=0.1),
    # One Colab GPU: V2-B0 on CIFAR-10 at 64 px, augmented on the GPU (2 CPU cores cannot feed a T4): ~15 min (estimate).
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


# --- Optimizer, LR schedule, precision ----------------------------------------------------------------------------

class RMSpropTF(torch.optim.Optimizer):
    """RMSProp with TensorFlow 1's semantics, the paper's optimizer. Unlike ``torch.optim.RMSprop``, eps is inside the
    square root, the mean square starts at 1 (small early steps), and the LR is applied before the momentum buffer::

        ms  = rho * ms + (1 - rho) * g^2                 # ms_0 = 1
        mom = momentum * mom + lr * g / sqrt(ms + eps)
        p   = p - mom

    ``weight_decay`` is added to the gradient (L2 in the loss, as the official ``1e-5 * sum(l2_loss)``)."""

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
    """The LR schedule's multiplier at ``step``: linear warm-up from 0, then cosine to 0, exponential or constant. The
    exponential decay is staircase from step 0 (not from the end of warm-up), as the official
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


RECIPES = {
    # §5.3: "batch size 512, ... learning rate 0.001 with cosine decay ... fixed 10,000 steps ... we disable weight
    # decay and use a simple cutout data augmentation"; §5.1's RMSProp; nothing else is named, so nothing else is on.
    "paper": dict(batch_size=512, optimizer="rmsprop", lr=0.001, lr_schedule="cosine", warmup_epochs=0.0,
                  steps=10_000, weight_decay=0.0, crop="resize", cutout=0.5, label_smoothing=0.0, ema_decay=0.0),
    # The official ImagenetFt (the transfer configs inherit it): constant LR, 1-epoch warm-up, EMA 0.9996, ...
    "official": dict(batch_size=512, optimizer="rmsprop", lr=0.001, lr_schedule="constant", warmup_epochs=1.0,
                     steps=10_000, weight_decay=1e-5, crop="resize", cutout=0.5, label_smoothing=0.1,
                     ema_decay=0.9996, dropout=1e-6, drop_path_rate=0.2),
}
REFERENCE_BATCH = 512  # the recipes' batch: a smaller batch gets a proportionally smaller learning rate

# The scales, by ev2lib's profile names. The paper fine-tunes at the ImageNet evaluation size (384 for V2-S).
SCALES = {
    # CPU, offline: a CIFAR-sized network on classes 5-9 of the shared CIFAR-10, from a checkpoint you pass as init.
    "smoke": dict(model="efficientnetv2_cifar_half", data="cifar10", classes="5-9", image_size=32, batch_size=32,
                  steps=20, train_subset=256, val_images=0, eval_subset=256, log_every=5),
    # CPU reference: the offline experiment's fine-tuning runs (pretrained on classes 0-4, see the chapter).
    "cpu-reference": dict(model="efficientnetv2_cifar_half", data="cifar10", classes="5-9", image_size=32,
                          batch_size=64, steps=500),
    # One Colab GPU: torchvision's V2-S at 224 px, 1,000 steps of 64, augmented on the GPU: ~10 min (estimate).
    "colab": dict(model="efficientnetv2_s", init="torchvision", data="cifar10", image_size=224, batch_size=64,
                  steps=1000, augment_on="device"),
    # The paper: V2-S at its evaluation size, batch 512, 10,000 steps.
    "full": dict(model="efficientnetv2_s", init="torchvision", data="cifar10", image_size=384, batch_size=512,
                 steps=10_000, num_workers=8),
}


def finetune_config(profile: str = "smoke", recipe: str = "paper", **overrides):
    """A :class:`ev2lib.train.TrainConfig` for fine-tuning: ``RECIPES[recipe]`` at ``SCALES[profile]``, the learning
    rate scaled with the batch (0.001 at 512, as the official ``lr_base`` 0.0005 per 256), then ``overrides``."""
    if recipe not in RECIPES:
        raise ConfigError(f"unknown fine-tuning recipe {recipe!r}; known: {', '.join(RECIPES)}")
    if profile not in SCALES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(SCALES)}")
    fields = {**RECIPES[recipe], **SCALES[profile], **overrides}
    if "lr" not in overrides:
        fields["lr"] = RECIPES[recipe]["lr"] * fields["batch_size"] / REFERENCE_BATCH
    bad = set(fields) - {f.name for f in dataclasses.fields(TrainConfig)}
    if bad:
        raise ConfigError(f"unknown TrainConfig field(s) {sorted(bad)}")
    return TrainConfig(**fields)


