"""Transfer learning (paper §5.3, Tables 8 and 9): fine-tune published or saved weights on new classes.

* :func:`init_model` -- a model built for the target classes gets every weight of its source but the classifier,
  which stays freshly initialised, and the input normalisation those weights were trained with. The source is
  ``"torchvision"`` or ``"timm"`` (published ImageNet weights, :func:`ev2lib.load_pretrained`) or an ev2lib
  checkpoint (its EMA weights when it kept an EMA, as the official ``train.ft_init_ckpt`` reads the EMA variables).
  ``TrainConfig.init`` and ``--init`` pass it to the training loop, which calls it in ``setup``; a fine-tuning run
  resumes from its own checkpoint like any run. ``TrainConfig.freeze`` (e.g. ``"0-3"``) keeps the stem and stages
  1-3 fixed (:meth:`ev2lib.EfficientNet.freeze`).
* :data:`RECIPES` -- the fine-tuning recipe as §5.3 writes it (``"paper"``) and as the official code runs it
  (``"official"``: its ``cifar10Ft``/``flowersFt``/... configs inherit ``ImagenetFt``), side by side.
* :data:`SCALES` and :func:`finetune_config` -- a recipe at one of ev2lib's profile scales.
* :class:`TransferExperiment` and :func:`run_experiment` -- an offline analogue (CIFAR-10 classes 0-4 pretrain,
  5-9 target) of fine-tuning against training from scratch; ``python -m ev2lib.transfer --profile cpu-reference``.

The recipes differ where the paper and the code differ: the paper decays the learning rate with a cosine and
disables weight decay; the code keeps it constant, keeps weight decay 1e-5, warms up for an epoch and averages the
weights (EMA 0.9996). Both: RMSProp (§5.1), batch 512, learning rate 0.001, a fixed 10,000 steps, the whole image
resized to the training size, flips and cutout (a random-valued box of half the side).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from .errors import ConfigError, TrainingError, WeightsError, cli_main
from .files import json_cache, load_torch
from .weights import SOURCES, load_pretrained

RECIPES = {
    # §5.3: "smaller batch size 512, smaller initial learning rate 0.001 with cosine decay ... fixed 10,000 steps.
    # Since each model is finetuned with very few steps, we disable weight decay and use a simple cutout data
    # augmentation." The optimizer is §5.1's RMSProp; nothing else is named, so nothing else is on.
    "paper": dict(batch_size=512, optimizer="rmsprop", lr=0.001, lr_schedule="cosine", warmup_epochs=0.0,
                  steps=10_000, weight_decay=0.0, crop="resize", cutout=0.5, label_smoothing=0.0, ema_decay=0.0),
    # The official code (ImagenetFt, which the transfer configs inherit): constant LR after a 1-epoch warm-up,
    # weight decay 1e-5, EMA 0.9996, label smoothing 0.1, dropout ~0 (1e-6), survival 0.8 (drop path 0.2).
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
    # One Colab GPU: torchvision's ImageNet V2-S at 224 px, 1,000 steps of 64 (an eightieth of the paper's images),
    # resized and cut out on the GPU: about 10 minutes on a T4 (an estimate until the GPU kit has timed it).
    "colab": dict(model="efficientnetv2_s", init="torchvision", data="cifar10", image_size=224, batch_size=64,
                  steps=1000, augment_on="device"),
    # The paper: V2-S at its evaluation size, batch 512, 10,000 steps.
    "full": dict(model="efficientnetv2_s", init="torchvision", data="cifar10", image_size=384, batch_size=512,
                 steps=10_000, num_workers=8),
}


def load_weights(path: str | Path) -> tuple[dict, dict]:
    """``(state dict, about)`` saved at ``path``: an ev2lib training checkpoint (its EMA weights when it has them;
    ``about`` holds its ``model`` name, ``normalization`` and ``padding``) or a plain state dict such as ``model.pt``
    (``about`` is then empty: the scratch normalisation and symmetric padding are assumed)."""
    state = load_torch(path)
    if isinstance(state, dict) and "model" in state and "step" in state:
        weights = state["model"]
        if state.get("ema"):  # AveragedModel's state dict: "module.<name>" plus its counter "n_averaged"
            weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
        about = {"model": state.get("config", {}).get("model"), "normalization": state.get("normalization"),
                 "padding": state.get("padding", "symmetric")}
        return weights, {k: v for k, v in about.items() if v is not None}
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state, {}
    raise WeightsError(f"{path} is neither an ev2lib training checkpoint nor a state dict of tensors")


def init_model(name, num_classes: int, init: str = "", **create_kw):
    """:func:`ev2lib.create_model` for ``num_classes``, initialised from ``init`` (see the module docstring).

    ``init``: ``""`` (from scratch), ``"torchvision"`` / ``"timm"`` (published ImageNet weights, with the padding
    they need) or the path of an ev2lib checkpoint. Every tensor but the classifier's comes from the source, bit for
    bit; the classifier is new, for ``num_classes``, also when the source had as many classes: continuing a run on
    the same task is resuming it (the same ``--out``), not initialising from it.
    """
    from .model import create_model

    if not init:
        return create_model(name, num_classes=num_classes, **create_kw)
    if init in SOURCES:
        model = create_model(name, num_classes=num_classes, padding="same" if init == "timm" else "symmetric",
                             **create_kw)
        return load_pretrained(model, source=init)
    path = Path(init)
    if not path.is_file():
        raise WeightsError(f"init {init!r} is neither a weights source ({', '.join(SOURCES)}) nor a checkpoint file: "
                           f"pass --init torchvision, --init timm or the path of an ev2lib checkpoint.pt")
    weights, about = load_weights(path)
    model = create_model(name, num_classes=num_classes, padding=about.get("padding", "symmetric"), **create_kw)
    own = model.state_dict()
    head = {k: v for k, v in own.items() if k.startswith("classifier.")}
    body = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
    if set(body) != set(own) - set(head) or any(body[k].shape != own[k].shape for k in body):
        source = about.get("model", "another architecture")
        raise WeightsError(f"checkpoint {path} holds the weights of {source}, which do not fit {model.config.name}: "
                           f"fine-tune the architecture the checkpoint was trained as (--model {source})")
    model.load_state_dict({**body, **head}, strict=True)
    if "normalization" in about:
        model.normalization = tuple(tuple(float(v) for v in t) for t in about["normalization"])
    return model


def finetune_config(profile: str = "smoke", recipe: str = "paper", **overrides):
    """A :class:`ev2lib.train.TrainConfig` for fine-tuning: ``RECIPES[recipe]`` at ``SCALES[profile]``, the learning
    rate scaled with the batch (0.001 at 512, as the official ``lr_base`` 0.0005 per 256), then ``overrides``."""
    from .train import TrainConfig

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


# ----------------------------------------------------------------------------------------------------------
# An offline transfer experiment: pretrain on CIFAR-10 classes 0-4, fine-tune on classes 5-9


@dataclass(frozen=True)
class TransferExperiment:
    """Does a pretrained network learn new classes from few images better than one trained from scratch with the
    same budget? The source task is CIFAR-10's classes 0-4 (airplane, automobile, bird, cat, deer), the target
    task classes 5-9 (dog, frog, horse, ship, truck), at several target training-set sizes.

    Fine-tuning follows the paper's recipe scaled down (RMSProp, cosine to 0 over ``steps``, no weight decay, cutout
    0.5, flips); the scratch baseline trains the same network for the same steps on the same images with the same
    recipe. Each (method, size) gets the best learning rate of its grid on the validation split (seed 0); the test
    split is scored once per run. The validation images are held out of all 50,000 before the class split, so the
    source and target tasks never share an image.
    """

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
    # Factor-4 grids around the paper's rates scaled to batch 64 (fine-tuning 0.001 at 512 -> 0.000125; from scratch
    # §5.1's 0.016 per 256 -> 0.004), widened upward after a first run chose the top of (0.000125, 0.0005, 0.002)
    # and of (0.001, 0.004, 0.016): a choice at the grid's edge is not a tuned value.
    finetune_lrs: tuple = (0.0005, 0.002, 0.008)
    scratch_lrs: tuple = (0.004, 0.016, 0.064)
    seeds: tuple = (0, 1, 2)
    eval_subset: int = 0

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


EXPERIMENTS = {
    "smoke": TransferExperiment(val_images=500, pretrain_images=512, pretrain_epochs=1, sizes=(128,), steps=6,
                                batch_size=32, finetune_lrs=(0.000125,), scratch_lrs=(0.004,), seeds=(0,),
                                eval_subset=256),
    "cpu-reference": TransferExperiment(),
    # One GPU: the same experiment with five seeds (the paper averages five fine-tuning runs).
    "colab": TransferExperiment(seeds=(0, 1, 2, 3, 4)),
    "full": TransferExperiment(pretrain_epochs=30, sizes=(250, 1000, 5000, 23750), steps=2000, seeds=(0, 1, 2, 3, 4)),
}
METHODS = ("fine-tuned", "scratch")


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
    """One run on the target task: ``method`` "fine-tuned" (from the checkpoint ``source``) or "scratch"."""
    import shutil

    from .train import train

    shutil.rmtree(out, ignore_errors=True)  # a fresh run: train() would resume an old checkpoint
    cfg = finetune_config("smoke", "paper", model=e.model, data=e.data, classes=e.target_classes,
                          val_images=e.val_images, train_subset=size, eval_subset=e.eval_subset, steps=e.steps,
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

    from tqdm.auto import tqdm

    from .ablations import interval
    from .results import code_commit, hardware

    e = profile if isinstance(profile, TransferExperiment) else EXPERIMENTS[profile]
    tmp = tempfile.TemporaryDirectory(prefix="ev2_transfer_")
    folder = Path(cache) / f"{code_commit()[:12]}-{e.digest()}" if cache else Path(tmp.name)
    source = pretrain(e, folder / "source", progress)
    grid = {"fine-tuned": e.finetune_lrs, "scratch": e.scratch_lrs}
    total = sum(len(grid[m]) + len(e.seeds) - 1 for m in METHODS) * len(e.sizes)
    bar, cells = tqdm(total=total, desc="transfer", disable=not progress), []

    def run(method, size, lr, seed):
        slug = f"{method}_{size}_lr{lr:g}_seed{seed}"
        rec = json_cache(folder / "runs" / f"{slug}.json" if cache else None,
                           lambda: target_run(e, method, size, lr, seed, source["checkpoint"], Path(tmp.name) / slug))
        bar.update()
        return rec

    for size in e.sizes:
        for method in METHODS:
            tuning = [run(method, size, lr, e.seeds[0]) for lr in grid[method]]
            finished = [r for r in tuning if r["val_acc"] is not None]
            if not finished:
                raise TrainingError(f"{method} at {size} images diverged at every learning rate {grid[method]}: "
                                    f"lower the grid")
            best = max(finished, key=lambda r: r["val_acc"])
            runs = [best] + [run(method, size, best["lr"], s) for s in e.seeds[1:]]
            cells.append({"method": method, "size": size, "lr": best["lr"], "tuning": tuning, "runs": runs,
                          "test_acc": interval([r["test_acc"] for r in runs if r["test_acc"] is not None])})
    bar.close()
    tmp.cleanup()
    return {"experiment": dataclasses.asdict(e), "source": source, "cells": cells,
            "summary": summarize_transfer(cells), "device": hardware()[0]}


def summarize_transfer(cells: list[dict]) -> dict:
    """Per target size: fine-tuned minus scratch test accuracy, paired by seed (seeds where either run diverged are
    left out, and ``n`` says how many remain), with its 95 % interval."""
    from .ablations import interval

    by = {(c["method"], c["size"]): c for c in cells}
    out = {}
    for (method, size), ft in by.items():
        sc = by.get(("scratch", size))
        if method == "fine-tuned" and sc is not None:
            scratch = {r["seed"]: r["test_acc"] for r in sc["runs"] if r["test_acc"] is not None}
            out[str(size)] = interval([r["test_acc"] - scratch[r["seed"]] for r in ft["runs"]
                                       if r["seed"] in scratch and r["test_acc"] is not None])
    return {"test_acc_gain_finetuned_minus_scratch": out}


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
