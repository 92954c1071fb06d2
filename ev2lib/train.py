"""The training loop (paper §5.1; official ``main.py``, ``utils.py``): one readable function, no framework.

``python -m ev2lib.train --model efficientnetv2_cifar --data cifar10 --profile smoke`` runs it; ``torchrun
--nproc_per_node=N -m ev2lib.train ...`` runs the same command on N processes (DDP; gloo on CPU, NCCL on GPU).

What it does, each piece where the recipe puts it: SGD or TF-style RMSProp (:class:`RMSpropTF`), linear warm-up
then exponential (x0.97 every 2.4 epochs) or cosine decay, label smoothing, weight decay on conv/linear weights only,
an EMA of the weights (``torch.optim.swa_utils``), bf16/fp16 autocast (grad scaler for fp16), channels_last,
optional ``torch.compile``, gradient-norm logging, a stop with one clear line on a NaN/inf loss, atomic checkpoints
every N steps with exact resume (:mod:`ev2lib.checkpoint`), a JSONL log and a tqdm bar. A ``schedule`` object
with ``settings_at(epoch)`` sets image size, dropout, RandAugment and mixup/CutMix per epoch (progressive learning).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .checkpoint import check_compatible, load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import load_data
from .errors import ConfigError, Ev2Error, cli_main
from .model import create_model


class TrainingError(Ev2Error, RuntimeError):
    """Training cannot go on (a NaN/inf loss); the last good checkpoint is kept."""


@dataclass
class TrainConfig:
    """Every knob of a run. ``PROFILES`` hold the presets; the CLI flags override single fields."""

    model: str = "efficientnetv2_cifar"
    data: str = "cifar10"
    epochs: int = 10
    batch_size: int = 256  # global: divided among DDP processes
    image_size: int = 32
    eval_size: int = 0  # 0 = image_size
    crop: str = "pad"  # "rrc": official random resized crop (area 0.05-1); "pad": CIFAR pad-4 crop + flip
    optimizer: str = "sgd"  # "sgd" (torchvision recipe) | "rmsprop" (paper: TF RMSProp, decay 0.9, momentum 0.9, eps 1e-3)
    lr: float = 0.2  # peak learning rate for the global batch (paper: 0.016 x batch / 256)
    momentum: float = 0.9
    nesterov: bool = True
    weight_decay: float = 5e-5  # on conv/linear weights only (official: no decay on BN gamma/beta and biases)
    schedule: str = "cosine"  # "cosine" | "exponential" (x decay_rate every decay_epochs) | "constant"
    warmup_epochs: float = 1.0
    decay_rate: float = 0.97
    decay_epochs: float = 2.4
    label_smoothing: float = 0.1
    ema_decay: float = 0.0  # 0 = no EMA (paper: 0.9999)
    dropout: float = -1.0  # -1 = the model's own
    drop_path_rate: float = -1.0
    randaug_magnitude: float = 0.0  # official 0-10 scale (ev2lib.data.randaug_bins)
    mixup_alpha: float = 0.0
    cutmix_alpha: float = 0.0
    amp: str = "none"  # "none" | "bf16" | "fp16"
    channels_last: bool = True
    compile: bool = False
    grad_clip: float = 0.0  # 0 = no clipping (the norm is logged either way)
    train_subset: int = 0  # 0 = all training images
    eval_subset: int = 0
    num_workers: int = 0
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
    # The CPU preset: full CIFAR-10 at 32 px in about 10 minutes on 2 cores (README benchmark).
    "cpu": dict(epochs=4, batch_size=256, lr=0.4, warmup_epochs=0.5, amp="bf16", label_smoothing=0.1),
    # One Colab GPU: EfficientNetV2-B0 on CIFAR-10 at 128 px with the official augmentation.
    "colab": dict(model="efficientnetv2_b0", epochs=30, batch_size=256, image_size=128, crop="rrc", lr=0.4,
                  warmup_epochs=2, randaug_magnitude=5, mixup_alpha=0.0, amp="bf16", ema_decay=0.999, num_workers=2),
    # Paper scale (ImageNet layout as ImageFolder, §5.1 / official hparams): RMSProp, 350 epochs, batch 4096.
    "full": dict(model="efficientnetv2_s", epochs=350, batch_size=4096, image_size=300, eval_size=384, crop="rrc",
                 optimizer="rmsprop", lr=0.256, weight_decay=1e-5, schedule="exponential", warmup_epochs=5,
                 ema_decay=0.9999, randaug_magnitude=10, amp="bf16", num_workers=8, ckpt_every=2000),
}


def make_config(profile: str = "smoke", **overrides) -> TrainConfig:
    """A :class:`TrainConfig` from a profile plus field overrides; unknown names raise :class:`ConfigError`."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; known: {', '.join(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    bad = set(overrides) - fields
    if bad:
        raise ConfigError(f"unknown TrainConfig field(s) {sorted(bad)}")
    return TrainConfig(**{**PROFILES[profile], **overrides})


# ----------------------------------------------------------------------------------------------------------
# Optimizer and schedule


class RMSpropTF(torch.optim.Optimizer):
    """RMSProp with TensorFlow 1's semantics (``tf.compat.v1.train.RMSPropOptimizer``), the paper's optimizer.

    It differs from ``torch.optim.RMSprop`` in three ways: eps is inside the square root, the mean square starts
    at 1 (not 0, so early steps are small: no extra warm-up needed), and the learning rate is applied before the
    momentum buffer (so changing the LR does not rescale the accumulated velocity)::

        ms  = rho * ms + (1 - rho) * g^2                 # ms_0 = 1
        mom = momentum * mom + lr * g / sqrt(ms + eps)
        p   = p - mom

    ``weight_decay`` is added to the gradient (L2 in the loss, as the official code's ``1e-5 * sum(l2_loss)``).
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
                    st["ms"] = torch.ones_like(p)
                    st["mom"] = torch.zeros_like(p)
                st["ms"].mul_(group["rho"]).addcmul_(g, g, value=1 - group["rho"])
                update = g / (st["ms"] + group["eps"]).sqrt()
                if group["momentum"] > 0:
                    st["mom"].mul_(group["momentum"]).add_(update, alpha=group["lr"])
                    p.sub_(st["mom"])
                else:
                    p.sub_(update, alpha=group["lr"])


def param_groups(model: torch.nn.Module, weight_decay: float) -> list[dict]:
    """Weight decay on conv and linear weights only: no decay on BN gamma/beta and biases (official regex
    ``.*(bias|gamma|beta).*``); every 1-D parameter is a bias or a BN scale/shift."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim <= 1]
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(cfg: TrainConfig, model) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.optimizer == "rmsprop":
        return RMSpropTF(groups, lr=cfg.lr, rho=0.9, momentum=cfg.momentum, eps=1e-3)
    raise ConfigError(f"optimizer must be 'sgd' or 'rmsprop', got {cfg.optimizer!r}")


def lr_factor(step: int, cfg: TrainConfig, steps_per_epoch: int) -> float:
    """LR multiplier at ``step``: linear warm-up from 0, then cosine to 0, exponential or constant.

    The exponential decay is staircase and counts from step 0 (not from the end of warm-up), as the official
    ``WarmupLearningRateSchedule``: ``decay_rate ** floor(step / (decay_epochs * steps_per_epoch))``."""
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return step / warm
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "cosine":
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
    if cfg.schedule == "exponential":
        return cfg.decay_rate ** math.floor(step / (cfg.decay_epochs * steps_per_epoch))
    if cfg.schedule == "constant":
        return 1.0
    raise ConfigError(f"schedule must be 'cosine', 'exponential' or 'constant', got {cfg.schedule!r}")


# ----------------------------------------------------------------------------------------------------------
# The loop


def _setup_distributed(cfg: TrainConfig):
    """(rank, world, device): torchrun sets RANK/WORLD_SIZE; a plain ``python`` run is rank 0 of 1."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available() and cfg.device in ("auto", "cuda")
    device = torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}" if cuda else "cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return rank, world, device


def _evaluate(model, data, device, cfg) -> dict:
    model.eval()
    correct = total = 0
    loss = 0.0
    with torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp == "bf16"):
        for x, y in data.eval_batches(limit=cfg.eval_subset):
            x = x.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.contiguous_format)
            y = y.to(device)
            out = model(x).float()
            loss += F.cross_entropy(out, y, reduction="sum").item()
            correct += (out.argmax(1) == y).sum().item()
            total += len(y)
    model.train()
    return {"acc": correct / total, "loss": loss / total}


def _apply_settings(settings, model, data) -> dict:
    """Apply one epoch's progressive-learning settings (dict or dataclass; None fields stay as they are)."""
    s = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    if s.get("dropout") is not None:
        model.set_dropout(s["dropout"])
    data.set_stage(**{k: s.get(k) for k in ("image_size", "randaug_magnitude", "mixup_alpha", "cutmix_alpha")})
    return {**data.settings.as_dict(), "dropout": model.dropout}


class _Log:
    """Append JSON lines to ``<out>/log.jsonl`` (rank 0 only)."""

    def __init__(self, path: Path, enabled: bool):
        self.path, self.enabled = path, enabled

    def __call__(self, **record):
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def train(cfg: TrainConfig, schedule=None, callbacks=()) -> dict:
    """Train ``cfg.model`` on ``cfg.data``; resume from ``<out>/checkpoint.pt`` if it exists. Returns the history.

    ``schedule.settings_at(epoch)`` (optional) returns the epoch's image size, dropout, RandAugment magnitude and
    mixup/CutMix alpha. ``callbacks`` are objects with optional ``on_epoch_end(epoch, metrics, model)``.
    """
    rank, world, device = _setup_distributed(cfg)
    out = Path(cfg.out)
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    if cfg.batch_size % world:
        raise ConfigError(f"batch size {cfg.batch_size} is not divisible by {world} processes")
    data = load_data(cfg.data, image_size=cfg.image_size, eval_size=cfg.eval_size or None, batch_size=cfg.batch_size // world,
                     crop=cfg.crop, train_subset=cfg.train_subset, eval_subset=cfg.eval_subset, seed=cfg.seed,
                     rank=rank, world=world, num_workers=cfg.num_workers)
    over = {k: v for k, v in (("dropout", cfg.dropout), ("drop_path_rate", cfg.drop_path_rate)) if v >= 0}
    model = create_model(cfg.model, num_classes=data.num_classes, **over).to(device)
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = build_optimizer(cfg, model)
    spe = data.steps_per_epoch
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, spe))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) if cfg.ema_decay else None
    scaler = torch.amp.GradScaler(device.type, enabled=cfg.amp == "fp16")
    if cfg.amp not in ("none", "bf16", "fp16"):
        raise ConfigError(f"amp must be 'none', 'bf16' or 'fp16', got {cfg.amp!r}")
    amp_dtype = torch.float16 if cfg.amp == "fp16" else torch.bfloat16
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    fwd = torch.compile(net) if cfg.compile else net
    config = {**dataclasses.asdict(cfg), "num_classes": data.num_classes, "world_size": world}

    ckpt_path, step, stage, history = out / "checkpoint.pt", 0, None, []
    log = _Log(out / "log.jsonl", rank == 0)
    if ckpt_path.exists():
        state = load_checkpoint(ckpt_path)
        check_compatible(state, config, ckpt_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        if ema is not None and state.get("ema") is not None:
            ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])
        step, stage, history = state["step"], state.get("stage"), state.get("history", [])
        log(event="resume", step=step, epoch=state["data_order"]["epoch"])

    def checkpoint(epoch, step_in_epoch):
        if not all(torch.isfinite(p).all() for p in model.parameters()):
            raise TrainingError(f"the weights hold NaN/inf at step {step}; the last good checkpoint {ckpt_path} is kept: "
                                f"lower --lr, use --amp bf16 or --grad-clip, then rerun to resume")
        if rank == 0:
            save_checkpoint(ckpt_path, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "ema": ema.state_dict() if ema is not None else None, "scaler": scaler.state_dict(), "rng": rng_state(),
                "data_order": {"seed": cfg.seed, "epoch": epoch, "step_in_epoch": step_in_epoch,
                               "order": data.order(epoch)},
                "stage": stage, "step": step, "history": history, "config": config})
            log(event="checkpoint", step=step, path=str(ckpt_path))
        if world > 1:
            dist.barrier()

    total_steps = cfg.epochs * spe if not cfg.max_steps else min(cfg.max_steps, cfg.epochs * spe)
    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=step, disable=rank != 0 or not cfg.progress, desc=cfg.model, leave=True)
    start_epoch, t_train = step // spe, 0.0
    for epoch in range(start_epoch, cfg.epochs):
        if step >= total_steps:
            break
        if schedule is not None:
            stage = {"epoch": epoch, **_apply_settings(schedule.settings_at(epoch), model, data)}
        elif stage is not None:
            _apply_settings(stage, model, data)
        net.train()
        t0, seen = time.perf_counter(), 0
        for i, x, y in data.train_batches(epoch, start_step=step - epoch * spe):
            mf = torch.channels_last if cfg.channels_last else torch.contiguous_format
            x, y = x.to(device, non_blocking=True, memory_format=mf), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=amp_dtype, enabled=cfg.amp != "none"):
                loss = F.cross_entropy(fwd(x).float(), y, label_smoothing=cfg.label_smoothing)
            loss_value = loss.detach().clone()
            if world > 1:
                dist.all_reduce(loss_value, op=dist.ReduceOp.AVG)
            if not torch.isfinite(loss_value):
                bar.close()
                log(event="nan", step=step, epoch=epoch)
                raise TrainingError(f"the loss became {loss_value.item()} at step {step} (epoch {epoch}); the last good "
                                    f"checkpoint {ckpt_path} is kept: lower --lr, use --amp bf16 or --grad-clip, then rerun to resume")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip or float("inf"))
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            if ema is not None:
                ema.update_parameters(model)
            step, seen = step + 1, seen + len(x) * world
            rate = seen / (time.perf_counter() - t0)
            if step % cfg.log_every == 0 or step == total_steps:
                log(step=step, epoch=epoch + (i + 1) / spe, loss=loss_value.item(), lr=scheduler.get_last_lr()[0],
                    grad_norm=grad_norm.item(), img_per_s=rate)
            bar.set_postfix(loss=f"{loss_value.item():.3f}", lr=f"{scheduler.get_last_lr()[0]:.3g}", img_s=f"{rate:.0f}")
            bar.update()
            if cfg.ckpt_every and step % cfg.ckpt_every == 0:
                checkpoint(epoch, i + 1)
            if os.environ.get("EV2_KILL_AT_STEP") == str(step):  # fault injection for the resume test
                os.kill(os.getpid(), 9)
            if step >= total_steps:
                break
        t_train += time.perf_counter() - t0
        epoch_done = step % spe == 0
        if epoch_done and ((epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs) or step >= total_steps:
            metrics = {"epoch": epoch + 1 if epoch_done else step / spe, "step": step, "train_seconds": t_train,
                       **{f"test_{k}": v for k, v in _evaluate(model, data, device, cfg).items()}}
            if ema is not None:
                metrics.update({f"ema_test_{k}": v for k, v in _evaluate(ema.module, data, device, cfg).items()})
            if stage is not None:
                metrics["stage"] = stage
            history.append(metrics)
            log(event="eval", **metrics)
            for cb in callbacks:
                if hasattr(cb, "on_epoch_end"):
                    cb.on_epoch_end(epoch, metrics, model)
        checkpoint(epoch + 1 if epoch_done else epoch, 0 if epoch_done else step - epoch * spe)
    bar.close()
    if rank == 0:
        torch.save(model.state_dict(), out / "model.pt")
        if ema is not None:
            torch.save(ema.module.state_dict(), out / "model_ema.pt")
    return {"history": history, "config": config, "out": str(out), "source": data.source, "steps": step}


# ----------------------------------------------------------------------------------------------------------
# Command line


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ev2lib.train", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="smoke", help=f"preset: {', '.join(PROFILES)} (flags override it)")
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        if f.type in ("bool", bool):
            p.add_argument(flag, type=lambda s: s.lower() in ("1", "true", "yes"), default=None, metavar="BOOL")
        else:
            kind = {"int": int, "float": float}.get(str(f.type), str)
            p.add_argument(flag, type=kind, default=None)
    p.add_argument("--progressive", default="none", choices=["none", *SCHEDULES],
                   help="progressive learning (ev2lib.progressive): paper Table 6, the official code's schedule, or a "
                        "baseline; stages spread over --epochs")
    p.add_argument("--progressive-variant", default="efficientnetv2_s", help="whose Table 6 / official settings")
    p.add_argument("--progressive-sizes", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="map the schedule onto this image-size range (e.g. 16 32 for CIFAR)")
    p.add_argument("--save-result", default="", help="save the history as data/results/<NAME>.json (not for smoke)")
    return p


SCHEDULES = ("paper", "official", "progressive-resize", "random-resize")


def make_schedule(kind: str, epochs: int, variant: str = "efficientnetv2_s", sizes=None):
    """A progressive-learning schedule by name over ``epochs`` (the CLI's ``--progressive``)."""
    from . import progressive as P

    if kind == "paper":
        s = P.paper_schedule(variant, epochs)
    elif kind == "official":
        s = P.official_schedule(variant, epochs)
    elif kind == "progressive-resize":
        s = P.progressive_resize(4, epochs)
    elif kind == "random-resize":
        s = P.RandomResizeSchedule(epochs, every=max(1, epochs // 8))
    else:
        raise ConfigError(f"unknown progressive schedule {kind!r}; known: {', '.join(SCHEDULES)}")
    return s.scaled(tuple(sizes), epochs) if sizes else s


def main(argv=None) -> dict:
    args = vars(_parser().parse_args(argv))
    profile, result_name = args.pop("profile"), args.pop("save_result")
    kind, variant, sizes = args.pop("progressive"), args.pop("progressive_variant"), args.pop("progressive_sizes")
    cfg = make_config(profile, **{k: v for k, v in args.items() if v is not None})
    schedule = None if kind == "none" else make_schedule(kind, cfg.epochs, variant, sizes)
    summary = train(cfg, schedule=schedule)
    if summary["history"] and int(os.environ.get("RANK", "0")) == 0:
        last = summary["history"][-1]
        print(f"done: {summary['steps']} steps, test accuracy {last['test_acc']:.4f}, "
              f"{last['train_seconds']:.0f} s of training; log {Path(cfg.out) / 'log.jsonl'}")
        if result_name:
            from . import results

            results.save(result_name, {"history": summary["history"], "source": summary["source"]},
                         config=summary["config"], command="python -m ev2lib.train " + " ".join(sys.argv[1:] if argv is None else argv),
                         profile={"cpu": "cpu-reference"}.get(profile, profile))
    if dist.is_initialized():
        dist.destroy_process_group()
    return summary


if __name__ == "__main__":
    cli_main(main)
