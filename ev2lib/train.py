"""The training loop (paper §5.1; official ``main.py``): setup, :func:`train_step`, :func:`evaluate`, checkpoints and
:func:`train`; no framework. ``python -m ev2lib.train --profile smoke`` (``torchrun --nproc_per_node=N -m
ev2lib.train`` for DDP). Atomic checkpoints with every rank's random state (a rerun resumes bit for bit), training
time summed over resumes, one clear line on a NaN/inf loss, host-device syncs only when it logs, and a ``model.pt``
that says what a model built from it needs. A progressive schedule sets size, regularization and dropout."""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
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

from .checkpoint import load_checkpoint, rng_state, save_checkpoint, set_rng_state
from .data import load_data
from .errors import ConfigError, TrainingError, cli_main
from .files import append_jsonl, atomic_write, read_jsonl
from .model import init_model
from .progressive import apply_phase
from .recipe import PROFILES, TrainConfig, build_optimizer, lr_factor, make_config, resolve_amp, total_steps
from .weights import weights_file

__all__ = ["PROFILES", "TrainConfig", "make_config", "setup", "train_step", "evaluate", "train", "read_log"]


# --- Setup --------------------------------------------------------------------------------------------------------

@dataclass
class Run:
    """Everything a run holds: model (and its DDP/compiled wrapper ``net``), data, optimizer, LR schedule, EMA,
    grad scaler, and the counters a checkpoint saves."""

    cfg: TrainConfig
    config: dict  # cfg as a dict, plus what setup resolved (num_classes, world_size, amp, device)
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
    train_seconds: float = 0.0  # the loop's own time (evaluation and checkpoints excluded), summed over resumes
    cpu_seconds: float = 0.0  # the CPU time this process spent in it: on one thread, what other processes cannot slow
    phase: dict | None = None  # the progressive-learning phase being trained
    history: list = dataclasses.field(default_factory=list)

    @property
    def ckpt_path(self) -> Path:
        return Path(self.cfg.out) / "checkpoint.pt"

    def log(self, **record) -> None:
        if self.rank == 0:
            append_jsonl(Path(self.cfg.out) / "log.jsonl", record)


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``TrainConfig.device`` -> a torch device: "auto" is this process's GPU if there is one, else the CPU; an
    explicit device that this machine lacks is one clear :class:`ConfigError`."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(f"cuda:{local_rank}" if name == "cuda" else name)
    except RuntimeError:
        raise ConfigError(f"unknown device {name!r}: use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and not (torch.cuda.is_available() and (device.index or 0) < torch.cuda.device_count()):
        raise ConfigError(f"--device {name} asked for, but this machine has {torch.cuda.device_count()} visible CUDA "
                          f"GPU(s): use --device cpu (or auto)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError("--device mps asked for, but this machine has no Apple GPU: use --device cpu (or auto)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ConfigError(f"device {name!r} is not supported: use auto, cpu, cuda, cuda:N or mps")
    return device


def _distributed(cfg: TrainConfig):
    """(rank, world, device): torchrun sets RANK/WORLD_SIZE; a plain ``python`` run is rank 0 of 1."""
    world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    if cfg.augment_on not in ("cpu", "device"):
        raise ConfigError(f"augment_on must be 'cpu' or 'device', got {cfg.augment_on!r}")
    if cfg.batch_size % (world * cfg.micro_batches):
        raise ConfigError(f"batch size {cfg.batch_size} is not divisible by {world} processes x "
                          f"{cfg.micro_batches} micro-batches")
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


def setup(cfg: TrainConfig) -> Run:
    """Build data, model, optimizer, LR schedule, EMA and grad scaler; resume from ``<out>/checkpoint.pt``."""
    rank, world, device = _distributed(cfg)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank
    data = load_data(cfg.data, image_size=cfg.image_size, eval_size=cfg.eval_size or None, crop=cfg.crop,
                     batch_size=cfg.batch_size // world, train_subset=cfg.train_subset, eval_subset=cfg.eval_subset,
                     val_images=cfg.val_images, classes=cfg.classes, seed=cfg.seed, rank=rank, world=world,
                     num_workers=cfg.num_workers, augment_device=device if cfg.augment_on == "device" else None)
    data.set_augment(randaug_magnitude=cfg.randaug_magnitude, mixup_alpha=cfg.mixup_alpha,
                     cutmix_alpha=cfg.cutmix_alpha, cutout=cfg.cutout, randaug_fixed_side=cfg.randaug_fixed_side)
    over = {k: v for k, v in (("dropout", cfg.dropout), ("drop_path_rate", cfg.drop_path_rate)) if v >= 0}
    model = init_model(cfg.model, data.num_classes, cfg.init, **over)  # scratch, or weights + new classifier (§5.3)
    model.freeze(cfg.freeze)
    run = make_run(cfg, model, device, data, rank, world)
    torch.manual_seed(cfg.seed * 1_000_003 + rank)  # dropout / stochastic depth: independent masks per rank
    if rank == 0:
        Path(cfg.out).mkdir(parents=True, exist_ok=True)
    if run.ckpt_path.exists():
        resume(run)
    else:
        run.log(event="start", data=data.source, device=str(device), amp=run.config["amp"], init=getattr(model, "init_info", None))
    return run


def make_run(cfg: TrainConfig, model: torch.nn.Module, device: torch.device, data=None, rank: int = 0,
             world: int = 1) -> Run:
    """The :class:`Run` that trains ``model`` with ``cfg``'s recipe on ``device``: optimizer, LR schedule (over
    ``data``'s epochs; one step an epoch without data), EMA, precision, grad scaler, the DDP and compiled wrappers."""
    model = model.to(device, memory_format=torch.channels_last if cfg.channels_last else torch.preserve_format)
    optimizer = build_optimizer(cfg, model)
    spe = data.steps_per_epoch if data is not None else 1
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg, spe))
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(cfg.ema_decay), use_buffers=True) if cfg.ema_decay else None
    amp = resolve_amp(cfg.amp, device)
    net = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    # One compiled graph per image size (dynamic=False): progressive learning recompiles once per phase's size.
    net = torch.compile(net, dynamic=False) if cfg.compile else net
    config = {**dataclasses.asdict(cfg), "model": getattr(cfg.model, "name", cfg.model), "amp": amp,
              "num_classes": getattr(data, "num_classes", None), "world_size": world, "device": str(device)}
    return Run(cfg, config, model, net, data, optimizer, scheduler, ema,
               torch.amp.GradScaler(device.type, enabled=amp == "fp16"), device, rank, world)


def checkpoint(run: Run) -> None:
    """Save the run (rank 0 writes; every rank's random state goes in) after checking the weights are finite."""
    if not all(torch.isfinite(p).all() for p in run.model.parameters()):
        raise TrainingError(f"the weights hold NaN/inf at step {run.step}; the last good checkpoint is kept: lower "
                            f"--lr, use --amp bf16 or --grad-clip, then rerun to resume")
    rngs = [rng_state()]
    if run.world > 1:
        rngs = [None] * run.world
        dist.all_gather_object(rngs, rng_state())
    if run.rank == 0:
        save_checkpoint(run.ckpt_path, {
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "ema": run.ema.state_dict() if run.ema else None,
            "scaler": run.scaler.state_dict(), "rng": rngs, "step": run.step, "train_seconds": run.train_seconds,
            "cpu_seconds": run.cpu_seconds,
            "phase": run.phase, "history": run.history, "config": run.config,
            "normalization": run.model.normalization, "padding": run.model.padding})
        run.log(event="checkpoint", step=run.step)
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
    set_rng_state(state["rng"][run.rank])  # each rank its own: dropout masks stay independent across ranks
    run.step, run.phase, run.history = state["step"], state.get("phase"), state.get("history", [])
    run.train_seconds, run.cpu_seconds = state.get("train_seconds", 0.0), state.get("cpu_seconds", 0.0)
    run.model.normalization = tuple(tuple(v) for v in state["normalization"])
    run.log(event="resume", step=run.step)


# --- One step, evaluation -----------------------------------------------------------------------------------------

def _autocast(device: torch.device, amp: str):
    return torch.autocast(device.type, dtype=torch.float16 if amp == "fp16" else torch.bfloat16,
                          enabled=amp not in ("none", "auto"))


def train_step(run: Run, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on this process's batch (pixel units): forward and backward per micro-batch, gradients
    averaged (and across DDP ranks), clip, update, LR schedule, EMA. Returns (loss, gradient norm) as 0-d tensors on
    the device: reading them (``.item()``) waits for the device, so the loop does it only when it logs."""
    mf = torch.channels_last if run.cfg.channels_last else torch.contiguous_format
    x = run.model.normalize(x.to(run.device, non_blocking=True)).contiguous(memory_format=mf)  # (B, 3, S, S) float
    y = y.to(run.device, non_blocking=True)  # (B,) labels, or (B, classes) soft labels after mixing
    run.optimizer.zero_grad(set_to_none=True)
    loss_sum = torch.zeros((), device=run.device)
    k_last = run.cfg.micro_batches - 1
    for k, (xk, yk) in enumerate(zip(x.chunk(run.cfg.micro_batches), y.chunk(run.cfg.micro_batches))):
        with _autocast(run.device, run.config["amp"]), (run.net.no_sync() if run.world > 1 and k < k_last
                                                        else contextlib.nullcontext()):
            loss = F.cross_entropy(run.net(xk).float(), yk, label_smoothing=run.cfg.label_smoothing)
            run.scaler.scale(loss / run.cfg.micro_batches).backward()
        loss_sum += loss.detach() / run.cfg.micro_batches
    if run.world > 1:
        dist.all_reduce(loss_sum, op=dist.ReduceOp.AVG)
    run.scaler.unscale_(run.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.cfg.grad_clip or float("inf"))
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.scheduler.step()
    if run.ema is not None:
        run.ema.update_parameters(run.model)
    run.step += 1
    return loss_sum, grad_norm


@torch.no_grad()
def evaluate(model: torch.nn.Module, batches, device="cpu", amp: str = "none", channels_last: bool = False) -> dict:
    """Top-1 accuracy and mean cross-entropy of ``model`` over ``(x, y)`` batches in pixel units."""
    was_training, device = model.training, torch.device(device)
    correct, loss, total = torch.zeros((), device=device), torch.zeros((), device=device), 0
    model.eval()
    with _autocast(device, amp):
        for x, y in batches:
            x = model.normalize(x.to(device))
            out = model(x.contiguous(memory_format=torch.channels_last) if channels_last else x).float()
            y = y.to(device)
            loss += F.cross_entropy(out, y, reduction="sum")
            correct += (out.argmax(1) == y).sum()
            total += len(y)
    model.train(was_training)
    return {"acc": correct.item() / total, "loss": loss.item() / total}


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


# --- The loop -----------------------------------------------------------------------------------------------------

@contextlib.contextmanager
def _deterministic(on: bool, device: torch.device):
    """``torch.use_deterministic_algorithms`` for the run only (the process-wide switch is put back after); on CUDA
    cuBLAS then needs a workspace setting, set here unless the environment has one."""
    before = torch.are_deterministic_algorithms_enabled()
    if on and device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(on)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before)


def _schedule_for(progressive, cfg: TrainConfig, epochs: int):
    """The run's progressive schedule: ``progressive`` itself, or built by it for the run's epoch count (a callable
    ``epochs -> schedule``); one clear error when it does not span the run or fights an explicit setting."""
    if progressive is None:
        return None
    explicit = [f for f in ("randaug_magnitude", "mixup_alpha", "cutmix_alpha") if getattr(cfg, f)]
    schedule = progressive if hasattr(progressive, "phase_at") or explicit else progressive(epochs)
    explicit += ["dropout"] if cfg.dropout >= 0 and getattr(schedule, "dropout", 0) is not None else []
    if explicit:
        raise ConfigError(f"the progressive schedule sets {', '.join(explicit)} per phase, and the run sets them too: "
                          f"drop {' '.join('--' + f.replace('_', '-') for f in explicit)} or the schedule")
    if schedule.total_epochs != epochs:
        raise ConfigError(f"the progressive schedule spans {schedule.total_epochs} epochs, the run {epochs}: build it "
                          f"for the run's epochs (or pass a function epochs -> schedule)")
    return schedule


def train(cfg: TrainConfig, progressive=None, callbacks=()) -> dict:
    """Train ``cfg.model`` on ``cfg.data``, resuming from ``<out>/checkpoint.pt`` if it exists. ``progressive``: a
    schedule (``phase_at(epoch)``) spanning the run's epochs, or a function ``epochs -> schedule``; ``callbacks``:
    objects with ``on_step_end(run)`` / ``on_epoch_end(run, metrics)``. Returns history, config, out, source, steps."""
    from tqdm.auto import tqdm
    device = resolve_device(cfg.device, int(os.environ.get("LOCAL_RANK", "0")))
    with _deterministic(cfg.deterministic, device):
        run = setup(cfg)
        spe = run.data.steps_per_epoch
        length = total_steps(cfg, spe)
        schedule, total = _schedule_for(progressive, cfg, math.ceil(length / spe)), min(cfg.max_steps or length, length)
        bar = tqdm(total=total, initial=run.step, disable=run.rank != 0 or not cfg.progress, desc=str(run.config["model"]))
        while run.step < total:
            epoch, start = divmod(run.step, spe)
            if schedule is not None or run.phase is not None:
                run.phase = apply_phase(run.model, run.data, schedule.phase_at(epoch) if schedule else run.phase)
            _epoch(run, epoch, start, total, callbacks, bar)
        bar.close()
        if run.rank == 0:
            atomic_write(Path(cfg.out) / "model.pt", lambda f: torch.save(weights_file(run.model), f))
            if run.ema is not None:
                ema = weights_file(run.ema.module)
                atomic_write(Path(cfg.out) / "model_ema.pt", lambda f: torch.save(ema, f))
    return {"history": run.history, "config": run.config, "out": cfg.out, "source": run.data.source, "steps": run.step}


def _epoch(run: Run, epoch: int, start: int, total: int, callbacks, bar) -> None:
    """Train the rest of one epoch (from step ``start`` of it), then evaluate when due and checkpoint."""
    cfg, spe, t0, c0 = run.cfg, run.data.steps_per_epoch, time.perf_counter(), time.process_time()

    def clock() -> None:  # fold the time since (t0, c0) into the run's (after the device has finished it)
        nonlocal t0, c0
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        run.train_seconds += time.perf_counter() - t0
        run.cpu_seconds += time.process_time() - c0
        t0, c0 = time.perf_counter(), time.process_time()

    for i, x, y in run.data.train_batches(epoch, start_step=start):
        loss, grad_norm = train_step(run, x, y)
        if run.step % cfg.log_every == 0 or run.step == total:
            loss, lr = loss.item(), run.scheduler.get_last_lr()[0]  # the step's one wait for the device
            if not math.isfinite(loss):
                run.log(event="nan", step=run.step)
                raise TrainingError(f"the loss became {loss} at step {run.step}; the last good checkpoint is kept: "
                                    f"lower --lr, use --amp bf16 or --grad-clip, then rerun to resume")
            run.log(step=run.step, epoch=epoch + (i + 1) / spe, loss=loss, lr=lr, grad_norm=grad_norm.item())
            bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.3g}")
        bar.update()
        if cfg.ckpt_every and run.step % cfg.ckpt_every == 0:
            clock()
            checkpoint(run)
            t0, c0 = time.perf_counter(), time.process_time()
        for cb in callbacks:
            getattr(cb, "on_step_end", lambda r: None)(run)
        if run.step >= total:
            break
    clock()
    done = run.step % spe == 0
    if (done and (epoch + 1) % cfg.eval_every == 0) or run.step >= total:  # and always after the last step
        metrics = evaluate_run(run, epoch + 1 if done else run.step / spe, run.step >= total,
                               train_seconds=run.train_seconds, train_cpu_seconds=run.cpu_seconds)
        for cb in callbacks:
            getattr(cb, "on_epoch_end", lambda r, m: None)(run, metrics)
    checkpoint(run)


def read_log(run: str | Path) -> list[dict]:
    """The records of a run folder's ``log.jsonl`` (or of a JSONL file), in order."""
    path = Path(run)
    return read_jsonl(path / "log.jsonl" if path.is_dir() else path)


# --- Command line -------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    from .progressive import SCHEDULES
    from .recipe import RECIPES
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
                        "baseline; phases spread over the run's epochs")
    p.add_argument("--progressive-variant", default="efficientnetv2_s", help="whose Table 6 / official settings")
    p.add_argument("--progressive-sizes", type=int, nargs=2, default=None, metavar=("MIN", "MAX"),
                   help="map the schedule onto this image-size range (e.g. 16 32 for CIFAR)")
    p.add_argument("--finetune", default="", choices=["", *RECIPES],
                   help="fine-tune with §5.3's recipe as the paper writes it or as the official code runs it "
                        "(ev2lib.recipe), at --profile's scale; pass the weights with --init")
    p.add_argument("--save-result", default="", help="save the history as a reference result NAME (not for smoke)")
    return p


def main(argv=None) -> dict:
    from .progressive import make_schedule
    from .recipe import finetune_config
    t0, args = time.perf_counter(), vars(_parser().parse_args(argv))
    profile, result_name, recipe = args.pop("profile"), args.pop("save_result"), args.pop("finetune")
    kind, variant, sizes = args.pop("progressive"), args.pop("progressive_variant"), args.pop("progressive_sizes")
    fields = {k: v for k, v in args.items() if v is not None}
    cfg = finetune_config(profile, recipe, **fields) if recipe else make_config(profile, **fields)
    schedule = None if kind == "none" else lambda epochs: make_schedule(kind, epochs, variant, sizes, seed=cfg.seed)
    summary = train(cfg, progressive=schedule)
    if summary["history"] and int(os.environ.get("RANK", "0")) == 0:
        last = summary["history"][-1]
        print(f"done: {summary['steps']} steps, test accuracy {last['test_acc']:.4f}, "
              f"{last['train_seconds']:.0f} s of training on {summary['source']}; log {Path(cfg.out) / 'log.jsonl'}")
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
