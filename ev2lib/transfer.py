"""Transfer learning (paper §5.3, Tables 8 and 9) as an offline experiment any machine can run: pretrain on
CIFAR-10's classes 0-4, then fine-tune on classes 5-9 against training from scratch with the same budget (and at
the largest size for 4x the steps). Weights load in :func:`ev2lib.model.init_model`, recipes are
:data:`ev2lib.recipe.RECIPES`. ``python -m ev2lib.transfer --profile cpu-reference``."""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError, TrainingError, cli_main
from .files import json_cache
from .recipe import finetune_config
from .stats import interval, paired

# --- An offline transfer experiment: pretrain on CIFAR-10 classes 0-4, fine-tune on classes 5-9 -------------------

@dataclass(frozen=True)
class TransferExperiment:
    """Does a pretrained network learn new classes from few images better than one trained from scratch with the same
    budget? Source: CIFAR-10's classes 0-4; target: 5-9, at several sizes; both arms the same network, steps and
    images. Each (method, size) takes its grid's best LR on validation; the test split is scored once a run."""

    model: str = "efficientnetv2_cifar_half"
    data: str = "cifar10"
    source_classes: str = "0-4"
    target_classes: str = "5-9"
    val_images: int = 2500  # held out of the training split (about 1,250 per task)
    image_size: int = 32
    pretrain_images: int = 0  # 0 = every source image left after the hold-out (~23,750)
    pretrain_epochs: int = 10
    pretrain_lr: float = 0.2  # SGD, batch 128, cosine: the ablations' CPU recipe
    sizes: tuple = (250, 1000, 5000)  # target training images
    steps: int = 500
    batch_size: int = 64
    # Factor-4 grids about the paper's rates at batch 64 (0.000125 fine-tuning, 0.004 scratch), widened upward
    # after a first run chose their top: a choice at the grid's edge is not a tuned value.
    finetune_lrs: tuple = (0.0005, 0.002, 0.008)
    scratch_lrs: tuple = (0.004, 0.016, 0.064)
    seeds: tuple = (0, 1, 2)
    eval_subset: int = 0
    long_scratch: int = 4  # at the largest size also a scratch arm with this many times the steps: what is
    # pretraining worth beyond the budget? (0 = none)

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


EXPERIMENTS = {
    "smoke": TransferExperiment(val_images=500, pretrain_images=512, pretrain_epochs=1, sizes=(128,), steps=6,
                                batch_size=32, finetune_lrs=(0.000125,), scratch_lrs=(0.004,), seeds=(0,),
                                eval_subset=256, long_scratch=2),
    "cpu-reference": TransferExperiment(),
    # One GPU: the same experiment with five seeds (the paper averages five fine-tuning runs).
    "colab": TransferExperiment(seeds=(0, 1, 2, 3, 4)),
    "full": TransferExperiment(pretrain_epochs=30, sizes=(250, 1000, 5000, 23750), steps=2000, seeds=(0, 1, 2, 3, 4)),
}
METHODS = ("fine-tuned", "scratch")
LONG = "scratch, longer"  # the scratch arm with e.long_scratch times the steps, at the largest size


def pretrain(e: TransferExperiment, out: str | Path, progress: bool = False) -> dict:
    """Train the source network on ``e.source_classes`` into ``out`` (resumable); its final validation accuracy."""
    from .train import make_config, train
    cfg = make_config("smoke", model=e.model, data=e.data, classes=e.source_classes, val_images=e.val_images,
                      train_subset=e.pretrain_images, eval_subset=e.eval_subset, epochs=e.pretrain_epochs,
                      batch_size=128, lr=e.pretrain_lr, warmup_epochs=1.0, image_size=e.image_size, crop="pad",
                      out=str(out), progress=progress, log_every=50)
    last = train(cfg)["history"][-1]
    return {"val_acc": last["val_acc"], "test_acc": last["test_acc"], "train_seconds": last["train_seconds"],
            "checkpoint": str(Path(out) / "checkpoint.pt")}


def target_run(e: TransferExperiment, method: str, size: int, lr: float, seed: int, source: str, out: str | Path,
               progress: bool = False) -> dict:
    """One run on the target task: ``method`` "fine-tuned" (from the checkpoint ``source``), "scratch" or
    :data:`LONG` (from scratch with ``e.long_scratch`` times the steps)."""
    import shutil
    from .train import train
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: train() would resume an old checkpoint
    cfg = finetune_config("smoke", "paper", model=e.model, data=e.data, classes=e.target_classes,
                          val_images=e.val_images, train_subset=size, eval_subset=e.eval_subset,
                          steps=e.steps * (e.long_scratch if method == LONG else 1),
                          batch_size=e.batch_size, lr=lr, image_size=e.image_size, seed=seed, eval_every=10**9,
                          init=source if method == "fine-tuned" else "", out=str(out), progress=progress)
    out = {"method": method, "size": size, "lr": lr, "seed": seed}
    try:
        last = train(cfg)["history"][-1]
    except TrainingError as e:  # the loss diverged at this learning rate: an outcome of the grid, kept as such
        return {**out, "val_acc": None, "test_acc": None, "train_seconds": None, "diverged": str(e).split(";")[0]}
    return {**out, "val_acc": last["val_acc"], "test_acc": last["test_acc"], "train_seconds": last["train_seconds"]}


def run_experiment(profile: str | TransferExperiment = "smoke", cache: str | Path | None = None,
                   progress: bool = True) -> dict:
    """Pretrain, then for each target size and method pick the learning rate on validation (seed 0) and run every
    seed with it. ``cache``: a folder where the source checkpoint and every finished run are kept (resumable)."""
    import tempfile
    from .results import code_digest, hardware
    e = profile if isinstance(profile, TransferExperiment) else EXPERIMENTS[profile]
    with tempfile.TemporaryDirectory(prefix="ev2_transfer_") as tmp:
        folder = Path(cache) / f"{code_digest('transfer')}-{e.digest()}" if cache else Path(tmp)
        cells, source = _run_cells(e, folder, Path(tmp), cache is not None, progress)
    return {"experiment": dataclasses.asdict(e), "source": source, "cells": cells,
            "summary": summarize_transfer(cells), "device": hardware()[0]}


def _run_cells(e: TransferExperiment, folder: Path, tmp: Path, keep: bool, progress: bool):
    """Pretrain into ``folder``, then every (size, method) cell: the learning rate tuned on validation (seed 0),
    then the other seeds at it. Finished runs are kept in ``folder / "runs"`` when ``keep``."""
    from tqdm.auto import tqdm
    source = pretrain(e, folder / "source", progress)
    grid = {"fine-tuned": e.finetune_lrs, "scratch": e.scratch_lrs, LONG: e.scratch_lrs}
    todo = [(size, m) for size in e.sizes for m in METHODS] + ([(max(e.sizes), LONG)] if e.long_scratch else [])
    total = sum(len(grid[m]) + len(e.seeds) - 1 for _, m in todo)
    bar, cells = tqdm(total=total, desc="transfer", disable=not progress), []

    def run(method, size, lr, seed):
        slug = f"{method}_{size}_lr{lr:g}_seed{seed}"
        rec = json_cache(folder / "runs" / f"{slug}.json" if keep else None,
                         lambda: target_run(e, method, size, lr, seed, source["checkpoint"], tmp / slug))
        bar.update()
        return rec

    for size, method in todo:
        tuning = [run(method, size, lr, e.seeds[0]) for lr in grid[method]]
        finished = [r for r in tuning if r["val_acc"] is not None]
        if not finished:
            raise TrainingError(f"{method} at {size} images diverged at every learning rate {grid[method]}: "
                                f"lower the grid")
        best = max(finished, key=lambda r: r["val_acc"])
        runs = [best] + [run(method, size, best["lr"], s) for s in e.seeds[1:]]
        cells.append({"method": method, "size": size, "lr": best["lr"], "tuning": tuning, "runs": runs,
                      "steps": e.steps * (e.long_scratch if method == LONG else 1),
                      "test_acc": interval([r["test_acc"] for r in runs if r["test_acc"] is not None])})
    bar.close()
    return cells, source


def summarize_transfer(cells: list[dict]) -> dict:
    """Per target size: fine-tuned minus scratch test accuracy, paired by seed (seeds where either run diverged are
    left out, and ``n`` says how many remain), with its 95 % interval."""
    by = {(c["method"], c["size"]): c for c in cells}
    gain = {other: {str(size): paired(ft["runs"], by[(other, size)]["runs"], "test_acc")
                    for (method, size), ft in by.items() if method == "fine-tuned" and (other, size) in by}
            for other in ("scratch", LONG)}
    return {"test_acc_gain_finetuned_minus_scratch": gain["scratch"],
            "test_acc_gain_finetuned_minus_longer_scratch": gain[LONG]}


def result_name(device_type: str | None = None) -> str:
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return f"transfer_cifar10_{'gpu' if device_type == 'cuda' else 'cpu'}"


def main(argv=None) -> dict:
    import argparse
    import sys
    import time
    from . import results
    ap = argparse.ArgumentParser(prog="python -m ev2lib.transfer", description="The offline transfer experiment "
                                 "(CIFAR-10 classes 0-4 -> 5-9); fine-tune runs themselves: python -m ev2lib.train "
                                 "--finetune paper --init ...")
    ap.add_argument("--profile", default="smoke", help=f"one of {', '.join(EXPERIMENTS)}")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--cache", default="runs/transfer", help="folder of the source checkpoint and finished runs")
    ap.add_argument("--save", action="store_true", help=f"write <results>/{result_name('cpu')}.json (or _gpu)")
    args = ap.parse_args(argv)
    if args.profile not in EXPERIMENTS:
        raise ConfigError(f"unknown profile {args.profile!r}; known: {', '.join(EXPERIMENTS)}")
    if args.save and args.profile == "smoke":
        raise ConfigError("a smoke run is never saved: use --profile cpu-reference with --save")
    if args.threads:
        torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    rec = run_experiment(args.profile, cache=args.cache)
    rec["wall_seconds"] = time.perf_counter() - t0
    print(f"source network on classes {rec['experiment']['source_classes']}: val {rec['source']['val_acc']:.3f}")
    for c in rec["cells"]:
        t = c["test_acc"]
        print(f"  {c['method']:>10} {c['size']:>5} images, lr {c['lr']:g}: test {t['mean']:.3f} (95% CI {t['ci95']})")
    for size, d in rec["summary"]["test_acc_gain_finetuned_minus_scratch"].items():
        print(f"  gain at {size} images: {d['mean']:+.3f}, 95% CI {d['ci95']}")
    if args.save:
        command = "python -m ev2lib.transfer " + " ".join(sys.argv[1:] if argv is None else argv)
        print(f"saved {results.save(result_name(), rec, config=rec['experiment'], command=command, profile=args.profile)}")
    return rec


if __name__ == "__main__":
    cli_main(main)
