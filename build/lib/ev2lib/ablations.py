"""Small-scale ablations of progressive learning (paper §4, §6.2-6.3; Tables 5, 12 and 13), run with ev2lib.train.

* **Table 5** -- image size x RandAugment magnitude: is the best magnitude larger for larger images (§4.1)?
* **Table 12** -- progressive learning (Algorithm 1) vs training at one fixed size: accuracy and wall time.
* **Table 13** -- adaptive vs constant regularization, for progressive resize (Howard 2018) and random resize
  (Hoffer et al. 2019: a random size every few epochs).

Every cell of a table is one schedule from :mod:`ev2lib.progressive`; every cell runs for each seed through
:func:`ev2lib.train.train` and is timed (``train_seconds``: the loop's training time, what the paper's "train
time" measures; ``wall_seconds``: the whole call). A table reports each cell's mean and sample standard deviation
over seeds, and the paired (same-seed) differences and time ratios the paper discusses.

The ImageNet sizes (128-380 px) become CIFAR-10 sizes here: the 32x32 images are resized (down or up) to the
profile's ``sizes`` (small, middle, large) and the test set is scored at the large size (or, for Table 5, at each
cell's own training size; the whole test image is resized, no crop). ``python -m ev2lib.ablations --table 12 13
--profile cpu-reference --save`` writes ``data/results/ablations_table{N}_{cpu|gpu}.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import math
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torchvision.transforms import v2

from .errors import ConfigError, cli_main
from .progressive import ProgressiveSchedule, RandomResizeSchedule, fixed_schedule, progressive_resize

TABLES = (5, 12, 13)


@dataclass(frozen=True)
class AblationProfile:
    """The scale of an ablation grid. ``reg_start`` / ``reg_end`` are the weak (first phase) and strong (last
    phase, and constant-regularization baselines) settings: RandAugment magnitude, mixup alpha, dropout rate."""

    model: str = "efficientnetv2_cifar"
    data: str = "cifar10"
    train_subset: int = 2000
    eval_subset: int = 1000
    epochs: int = 4
    eval_every: int = 0  # epochs between test evaluations (0 = only after the last epoch: cheaper on a CPU)
    batch_size: int = 128
    lr: float = 0.1
    amp: str = "none"
    sizes: tuple = (16, 24, 32)  # the small / middle / large image size (the paper's 128 / 192 / 300)
    magnitudes: tuple = (2, 6, 10)  # Table 5 RandAugment magnitudes, official 0-10 scale (the paper's 5 / 10 / 15)
    num_phases: int = 4  # M in Algorithm 1
    random_every: int = 1  # random resize: a new size every this many epochs (the paper: 8 of 350)
    size_multiple: int = 4  # CIFAR-scale sizes: multiples of 4 (8 is too coarse between 16 and 32)
    reg_start: dict = field(default_factory=lambda: dict(randaug=2, mixup=0.0, dropout=0.1))
    reg_end: dict = field(default_factory=lambda: dict(randaug=10, mixup=0.2, dropout=0.3))
    seeds: tuple = (0, 1, 2)
    one_cell: bool = False  # smoke: only the first cell of each table (plus the baseline it is compared with)

    def replace(self, **kw) -> "AblationProfile":
        return dataclasses.replace(self, **kw)


PROFILES = {
    # CPU, offline, seconds per cell: proves the runner works; never saved.
    "smoke": AblationProfile(train_subset=512, eval_subset=256, epochs=2, batch_size=64, sizes=(12, 16, 16),
                             num_phases=2, seeds=(0,), one_cell=True),
    # The CPU reference (~17 min on 2 idle cores, two one-thread processes): 2,000 images, 16/24/32 px, 4 epochs, 3 seeds.
    "cpu-reference": AblationProfile(),
    # One GPU, the whole grid in about 8 minutes (ci/gpu_reference.sh): 3,000 images upsampled to 32/48/64 px,
    # 8 epochs. Per-image RandAugment runs on the host CPU (~2,000 images/s), which bounds the grid's size.
    "colab": AblationProfile(train_subset=3000, eval_subset=2000, epochs=8, eval_every=2, batch_size=128, lr=0.1,
                             amp="auto", sizes=(32, 48, 64), size_multiple=8, random_every=2),
    # A longer GPU run: all of CIFAR-10 at 64/96/128 px, 24 epochs.
    "full": AblationProfile(train_subset=0, eval_subset=0, epochs=24, eval_every=1, batch_size=256, lr=0.2, amp="auto",
                            sizes=(64, 96, 128), size_multiple=8, random_every=2),
}


def get_profile(profile: str | AblationProfile, **overrides) -> AblationProfile:
    if isinstance(profile, AblationProfile):
        return profile.replace(**overrides)
    if profile not in PROFILES:
        raise ConfigError(f"unknown ablation profile {profile!r}; known: {', '.join(PROFILES)}")
    bad = set(overrides) - {f.name for f in dataclasses.fields(AblationProfile)}
    if bad:
        raise ConfigError(f"unknown ablation setting(s) {sorted(bad)}")
    return PROFILES[profile].replace(**overrides)


def cells(table: int, p: AblationProfile) -> list[tuple[str, dict, ProgressiveSchedule]]:
    """The cells of a table: ``(name, coordinates, schedule)``. Equal names mean equal runs (shared by tables)."""
    lo, mid, hi = p.sizes
    E, M, a, b = p.epochs, p.num_phases, p.reg_start, p.reg_end
    ranges = dict(randaug=(a["randaug"], b["randaug"]), mixup=(a["mixup"], b["mixup"]), dropout=(a["dropout"], b["dropout"]))
    adaptive = ProgressiveSchedule(M, E, (lo, hi), size_multiple=p.size_multiple, name="progressive + adaptive", **ranges)
    fixed = fixed_schedule(E, hi, randaug=b["randaug"], mixup=b["mixup"], dropout=b["dropout"])
    if table == 5:
        out = [(f"size {s}, RandAugment {m}", {"image_size": s, "randaug": m}, fixed_schedule(E, s, randaug=m))
               for s in (lo, mid, hi) for m in p.magnitudes]
    elif table == 12:
        out = [("progressive + adaptive", {"progressive": True}, adaptive),
               (f"fixed {hi} px", {"progressive": False}, fixed)]
    elif table == 13:
        out = [("progressive + adaptive", {"resize": "progressive", "adaptive": True}, adaptive),
               ("progressive resize", {"resize": "progressive", "adaptive": False},
                progressive_resize(M, E, (lo, hi), randaug=b["randaug"], mixup=b["mixup"], dropout=b["dropout"],
                                   size_multiple=p.size_multiple)),
               ("random resize + adaptive", {"resize": "random", "adaptive": True},
                RandomResizeSchedule(E, (lo, hi), every=p.random_every, adaptive=True, seed=0,
                                     size_multiple=p.size_multiple, **ranges)),
               ("random resize", {"resize": "random", "adaptive": False},
                RandomResizeSchedule(E, (lo, hi), every=p.random_every, adaptive=False, seed=0,
                                     size_multiple=p.size_multiple, **ranges))]
    else:
        raise ConfigError(f"ablation table must be one of {TABLES}, got {table!r}")
    return out[:2] if p.one_cell else out


class _ScoreAtSize:
    """Callback: after the last epoch, score the model on the test split with the whole image resized to ``size``."""

    def __init__(self, size: int, epochs: int, test, batch_size: int = 256):
        self.size, self.epochs, self.test, self.bs, self.acc = size, epochs, test, batch_size, None

    def on_epoch_end(self, run, metrics):
        from .train import evaluate

        if metrics["epoch"] != self.epochs:
            return
        x, y = self.test
        batches = ((v2.functional.resize(x[i:i + self.bs], [self.size] * 2, antialias=True), y[i:i + self.bs])
                   for i in range(0, len(y), self.bs))
        self.acc = evaluate(run.model, batches, run.device, run.config["amp"])["acc"]


def run_cell(schedule, p: AblationProfile, seed: int, out: str | Path, score_size: int | None = None,
             progress: bool = False, max_steps: int = 0) -> dict:
    """Train one cell for one seed; returns accuracy, loss, timings and the per-epoch history."""
    from .data import load_data
    from .train import make_config, train

    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: train() would resume an old checkpoint
    hi = p.sizes[-1]
    cfg = make_config("smoke", model=p.model, data=p.data, train_subset=p.train_subset, eval_subset=p.eval_subset,
                      epochs=p.epochs, batch_size=p.batch_size, lr=p.lr, warmup_epochs=min(1.0, p.epochs / 4),
                      image_size=hi, eval_size=hi, crop="pad", amp=p.amp, seed=seed, out=str(out), progress=progress,
                      log_every=50, max_steps=max_steps, eval_every=p.eval_every or p.epochs)
    callbacks = []
    if score_size is not None:
        test = load_data(p.data, image_size=hi, batch_size=1, eval_subset=p.eval_subset, seed=seed).test
        n = min(p.eval_subset, len(test[1])) if p.eval_subset else len(test[1])
        callbacks.append(_ScoreAtSize(score_size, p.epochs, (test[0][:n], test[1][:n])))
    t0 = time.perf_counter()
    summary = train(cfg, progressive=schedule, callbacks=callbacks)
    wall = time.perf_counter() - t0
    last = summary["history"][-1]
    history = [{k: h[k] for k in ("epoch", "test_acc", "test_loss", "train_seconds")} |
               ({"image_size": h["phase"]["image_size"]} if "phase" in h else {}) for h in summary["history"]]
    acc = callbacks[0].acc if callbacks else last["test_acc"]
    return {"seed": seed, "acc": acc, f"acc_at_{hi}px": last["test_acc"], "loss": last["test_loss"],
            "train_seconds": last["train_seconds"], "wall_seconds": wall, "history": history}


def _mean_std(xs):
    xs = [x for x in xs if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return (statistics.fmean(xs) if xs else float("nan"), statistics.stdev(xs) if len(xs) > 1 else 0.0)


def _paired(a: dict, b: dict, key: str, op) -> dict:
    """Mean and std over seeds of ``op(a_seed, b_seed)`` for the seeds both cells ran."""
    by_seed = {r["seed"]: r[key] for r in b["runs"]}
    vals = [op(r[key], by_seed[r["seed"]]) for r in a["runs"] if r["seed"] in by_seed]
    m, s = _mean_std(vals)
    return {"mean": m, "std": s, "n": len(vals), "values": vals}


def summarize(table: int, cell_records: list[dict]) -> dict:
    """The comparisons the paper draws from each table (paired over seeds)."""
    c = {r["name"]: r for r in cell_records}
    if table == 5:
        best = {}
        for r in cell_records:
            s = r["coords"]["image_size"]
            if s not in best or r["acc_mean"] > best[s]["acc_mean"]:
                best[s] = r
        return {"best_magnitude": {str(s): r["coords"]["randaug"] for s, r in sorted(best.items())}}
    if table == 12:
        prog, fixed = c.get("progressive + adaptive"), next((r for r in cell_records if r["name"].startswith("fixed")), None)
        if not (prog and fixed):
            return {}
        return {"time_ratio_progressive_over_fixed": _paired(prog, fixed, "train_seconds", lambda x, y: x / y),
                "wall_ratio_progressive_over_fixed": _paired(prog, fixed, "wall_seconds", lambda x, y: x / y),
                "acc_diff_progressive_minus_fixed": _paired(prog, fixed, "acc", lambda x, y: x - y)}
    out = {}
    for adaptive, constant, key in (("progressive + adaptive", "progressive resize", "progressive"),
                                    ("random resize + adaptive", "random resize", "random")):
        if adaptive in c and constant in c:
            out[f"acc_gain_adaptive_{key}"] = _paired(c[adaptive], c[constant], "acc", lambda x, y: x - y)
    return out


def run_table(table: int, profile: str | AblationProfile = "smoke", out: str | Path | None = None, cache: dict | None = None,
              progress: bool = True, **overrides) -> dict:
    """Run every cell of ``table`` for every seed of the profile; returns the record :func:`save_table` writes.

    ``cache`` (a dict) shares runs between tables: Table 12's progressive cell is Table 13's first row."""
    p = get_profile(profile, **overrides)
    cache = {} if cache is None else cache
    tmp = None
    if out is None:
        out = tmp = tempfile.mkdtemp(prefix="ev2_ablations_")
    from tqdm.auto import tqdm

    todo = cells(table, p)
    records = []
    try:
        if not cache:  # the first steps of a process are slow (allocator, kernel selection): keep them out of the timings
            run_cell(todo[0][2], p.replace(train_subset=2 * p.batch_size if p.train_subset else 0, eval_subset=64), p.seeds[0],
                     Path(out) / "warmup", max_steps=2)
        bar = tqdm(total=len(todo) * len(p.seeds), desc=f"Table {table}", disable=not progress)
        # Seed-major order: a change in machine load during the grid hits every cell alike.
        for seed in p.seeds:
            for name, coords, schedule in todo:
                score = coords.get("image_size") if table == 5 else None
                key = (name, seed, score)
                if key not in cache:
                    slug = "".join(ch if ch.isalnum() else "_" for ch in name)
                    cache[key] = run_cell(schedule, p, seed, Path(out) / f"table{table}" / slug / f"seed{seed}", score)
                bar.update()
        for name, coords, schedule in todo:
            score = coords.get("image_size") if table == 5 else None
            runs = [cache[(name, seed, score)] for seed in p.seeds]
            acc, tsec, wsec = (_mean_std([r[k] for r in runs]) for k in ("acc", "train_seconds", "wall_seconds"))
            records.append({"name": name, "coords": coords, "schedule": [s.as_dict() for s in schedule.phases()],
                            "schedule_name": schedule.name, "runs": runs, "acc_mean": acc[0], "acc_std": acc[1],
                            "train_seconds_mean": tsec[0], "train_seconds_std": tsec[1],
                            "wall_seconds_mean": wsec[0], "wall_seconds_std": wsec[1]})
        bar.close()
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    from .results import hardware

    return {"table": table, "profile": dataclasses.asdict(p), "cells": records, "summary": summarize(table, records),
            "device": hardware()[0]}


def result_name(table: int, device_type: str | None = None) -> str:
    """``ablations_table{N}_gpu`` for a CUDA run, ``..._cpu`` otherwise (the chapter prefers the GPU one)."""
    if device_type is None:
        device_type = "cuda" if torch.cuda.is_available() else "cpu"
    return f"ablations_table{table}_{'gpu' if device_type == 'cuda' else 'cpu'}"


def save_table(record: dict, profile: str, command: str, directory=None) -> Path:
    from . import results

    return results.save(result_name(record["table"]), record, config=record["profile"], command=command,
                        profile=profile, directory=directory)


def to_frame(record: dict):
    """A table record as a pandas DataFrame: one row per cell, accuracy and train time as mean and std."""
    import pandas as pd

    rows = [{"cell": r["name"], **r["coords"], "seeds": len(r["runs"]), "acc mean": r["acc_mean"], "acc std": r["acc_std"],
             "train s mean": r["train_seconds_mean"], "train s std": r["train_seconds_std"]} for r in record["cells"]]
    return pd.DataFrame(rows)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m ev2lib.ablations", description=__doc__.split("\n")[0])
    ap.add_argument("--table", type=int, nargs="+", required=True, help="5, 12 and/or 13 (runs are shared between tables)")
    ap.add_argument("--profile", default="smoke", help=f"one of {', '.join(PROFILES)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="override the profile's seeds")
    ap.add_argument("--data", default=None, help="override the dataset (e.g. synthetic:1024)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--out", default=None, help="folder for the run logs (default: a temporary folder)")
    ap.add_argument("--save", action="store_true", help="write data/results/ablations_table{N}_{cpu|gpu}.json")
    args = ap.parse_args(argv)
    for t in args.table:
        if t not in TABLES:
            raise ConfigError(f"--table must be among {TABLES}, got {t}")
    if args.save and args.profile == "smoke":
        raise ConfigError("a smoke run is never saved: use --profile cpu-reference, colab or full with --save")
    if args.threads:
        torch.set_num_threads(args.threads)
    over = {k: v for k, v in (("seeds", tuple(args.seeds) if args.seeds else None), ("data", args.data)) if v is not None}
    cache, records = {}, []
    command = "python -m ev2lib.ablations " + " ".join(sys.argv[1:] if argv is None else argv)
    for t in args.table:
        rec = run_table(t, args.profile, out=args.out, cache=cache, progress=True, **over)
        records.append(rec)
        print(f"Table {t} ({args.profile}, {len(rec['cells'])} cells):")
        print(to_frame(rec).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        for k, v in rec["summary"].items():
            shown = f"{v['mean']:.3f} +- {v['std']:.3f} (n={v['n']})" if isinstance(v, dict) and "mean" in v else v
            print(f"  {k}: {shown}")
        if args.save:
            print(f"  saved {save_table(rec, args.profile, command)}")
    return records


if __name__ == "__main__":
    cli_main(main)
