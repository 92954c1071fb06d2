"""Small-scale ablations of progressive learning and of the V2 design (paper §4.1, §5.2, §6.2, §6.3; Tables 5, 7,
12 and 13, Figure 1), run with :func:`ev2lib.train.train` on CIFAR-10.

* **Table 5** (§4.1) -- image size x RandAugment magnitude (0 = off, 5, 10, 15; no mixup or dropout): does the
  best magnitude grow with the image size?
* **Table 12** (§6.2) -- progressive learning with adaptive regularization (Algorithm 1) against training at the
  large size with a *tuned* regularization (the best of :attr:`AblationProfile.levels` on validation): accuracy,
  training time, and time to reach the tuned baseline's final accuracy (the paper's "1.4-2.2x faster").
* **Table 13** (§6.3) -- adaptive vs constant regularization, for progressive resize (Howard 2018) and random
  resize (Hoffer et al. 2019: a random size every few epochs), with Table 12's tuned fixed-size baseline as the
  reference row.
* **Table 7 / Figure 1** (§5.2) -- V1 vs V2 in accuracy against training time: a V1-shaped network
  (``efficientnet_cifar_v1``: MBConv everywhere, uniform scaling) and the V2-shaped profile model (Fused-MBConv early)
  with matched parameters, both at the large size with one fixed regularization level (``table7_level``), and the
  V2-shaped one with progressive learning (Algorithm 1), as the paper's V2 is trained. Same recipe, same seeds.

**Honest numbers.** Every run holds ``val_images`` training images out; every choice (the baseline's level, Table
5's best magnitude) is made on them, and the test split is scored once, at the end of each run. Comparisons are
paired by seed (same seed: same data subset, initial weights and augmentation stream) and reported as the mean
difference with a 95 % Student-t interval.

**Resumable, and each run trained once.** Each run is saved as JSON under ``cache/<code commit>-<profile digest>/``
when it finishes, named by what it trains (model, schedule, evaluation size, seed), not by its table: a run that two
tables share (Table 5's 32 px without RandAugment is Table 12's weak baseline; Table 7's V2-shaped runs are Table
12's progressive and weak ones) trains once, and rerunning the same command with the same code skips what is
done, so a long reference run can be stopped and continued.
``python -m ev2lib.ablations --table 12 13 7 --profile cpu-reference --save`` writes
``<results>/ablations_table{N}_{cpu|gpu}.json``.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .errors import ConfigError, cli_main
from .files import json_cache
from .progressive import ProgressiveSchedule, RandomResizeSchedule, fixed_schedule, progressive_resize
from .stats import interval, paired

TABLES = (5, 12, 13, 7)  # the chapter's order


@dataclass(frozen=True)
class AblationProfile:
    """The scale of an ablation grid. A regularization *level* is (RandAugment magnitude, mixup alpha, dropout)."""

    model: str = "efficientnetv2_cifar_half"  # 0.28M parameters: 10,000 images x 15 epochs in ~5 min on one thread
    data: str = "cifar10"
    train_subset: int = 10000
    val_images: int = 2500  # held out of the training split; every choice is made on these
    eval_subset: int = 0  # 0 = the whole test split
    epochs: int = 15
    batch_size: int = 128
    lr: float = 0.2
    amp: str = "auto"
    sizes: tuple = (16, 24, 32)  # the small / middle / large image size (the paper's 128 / 192 / 300)
    magnitudes: tuple = (0, 5, 10, 15)  # Table 5's RandAugment magnitudes: the paper's 5/10/15, and 0 (off) as the
    # reference at each size: is any RandAugment better than none, in this regime?
    num_phases: int = 4  # M in Algorithm 1
    random_every: int = 2  # random resize: a new size every this many epochs (the paper: 8 of 350)
    size_multiple: int = 4  # CIFAR-scale sizes: multiples of 4 (8 is too coarse between 16 and 32)
    levels: dict = field(default_factory=lambda: {"weak": (0, 0.0, 0.0), "medium": (5, 0.1, 0.1),
                                                  "strong": (10, 0.2, 0.3)})
    seeds: tuple = (0, 1, 2)
    table5_seeds: tuple = (0, 1)
    one_cell: bool = False  # smoke: only two cells of each table
    v1_model: str = "efficientnet_cifar_v1"  # Table 7's V1-shaped network: the parameters of ``model``, MBConv only
    augment_on: str = "device"  # augment each batch at once on the training device, GPU or CPU (ev2lib.device_augment;
    # on one CPU thread 12-15 % less step time than one image at a time), the same pipeline on every machine
    table7_level: str = "weak"  # Table 7's regularization level (of ``levels``) for its fixed-size cells: the level
    # Table 12's recorded CPU reference chose on validation (weak 70.8 %, medium 64.9 %, strong 56.1 %)

    def replace(self, **kw) -> "AblationProfile":
        return dataclasses.replace(self, **kw)

    def digest(self) -> str:
        """A short hash of the settings: cached runs are reused only by the same profile."""
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


PROFILES = {
    # CPU, offline, seconds per cell: proves the runner works; never saved.
    "smoke": AblationProfile(train_subset=512, val_images=128, eval_subset=256, epochs=2, batch_size=64,
                             sizes=(12, 16, 16), num_phases=2, seeds=(0,), table5_seeds=(0,), one_cell=True),
    # The CPU reference (ci/cpu_reference.sh, one-thread processes side by side on 2 cores).
    "cpu-reference": AblationProfile(),
    # One GPU: 20,000 images upsampled to 32 / 48 / 64 px, batch 256 (the learning rate scaled with it). The
    # chapter trains Tables 12 and 7 live (15 runs); ci/gpu_book.sh records those two (5 and 13: CPU reference).
    "colab": AblationProfile(train_subset=20000, val_images=5000, epochs=15, batch_size=256, lr=0.4,
                             sizes=(32, 48, 64), size_multiple=8),
    "full": AblationProfile(train_subset=0, val_images=5000, epochs=30, batch_size=256, lr=0.4, sizes=(64, 96, 128),
                            size_multiple=8),
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


def _reg(level: tuple) -> dict:
    ra, mixup, dropout = level
    return dict(randaug=ra, mixup=mixup, dropout=dropout)


def cells(table: int, p: AblationProfile) -> list[tuple[str, dict, ProgressiveSchedule]]:
    """The cells of a table: ``(name, coordinates, schedule)``. Equal names mean equal runs (shared by tables); a
    ``"model"`` coordinate trains that model instead of ``p.model``."""
    lo, mid, hi = p.sizes
    E, M, weak, strong = p.epochs, p.num_phases, _reg(p.levels["weak"]), _reg(p.levels["strong"])
    ranges = {k: (weak[k], strong[k]) for k in weak}
    adaptive = ProgressiveSchedule(M, E, (lo, hi), size_multiple=p.size_multiple, name="progressive + adaptive", **ranges)
    if table == 5:
        # RandAugment alone varies, on the weak level's other settings (its mixup and dropout): magnitude 0 at the
        # large size is then Table 12's weak baseline, the same run.
        out = [(f"size {s}, RandAugment {m}", {"image_size": s, "randaug": m},
                fixed_schedule(E, s, **{**weak, "randaug": m})) for s in (lo, mid, hi) for m in p.magnitudes]
    elif table == 12:
        out = [("progressive + adaptive", {"progressive": True}, adaptive)]
        out += [(f"fixed {hi} px, {name}", {"progressive": False, "level": name}, fixed_schedule(E, hi, **_reg(lv)))
                for name, lv in p.levels.items()]
    elif table == 13:
        random = dict(every=p.random_every, seed=0, size_multiple=p.size_multiple, **ranges)
        out = [("progressive + adaptive", {"resize": "progressive", "adaptive": True}, adaptive),
               ("progressive resize", {"resize": "progressive", "adaptive": False},
                progressive_resize(M, E, (lo, hi), size_multiple=p.size_multiple, **strong)),
               ("random resize + adaptive", {"resize": "random", "adaptive": True},
                RandomResizeSchedule(E, (lo, hi), adaptive=True, **random)),
               ("random resize", {"resize": "random", "adaptive": False},
                RandomResizeSchedule(E, (lo, hi), adaptive=False, **random))]
        # The reference: Table 12's fixed-size runs (the same runs), of which the summary takes the one tuned on
        # validation. Every row above ends at the strong level; the tuned baseline says what that level costs.
        out += [(f"fixed {hi} px, {name}", {"resize": "none", "level": name}, fixed_schedule(E, hi, **_reg(lv)))
                for name, lv in p.levels.items()]
    elif table == 7:  # V1 first, then V2 progressive: the smoke profile's two cells are Figure 1's comparison.
        # The V2-shaped runs are Table 12's (the same model, schedule and seeds; trained once, see run_table).
        lv = p.table7_level
        fixed = fixed_schedule(E, hi, **_reg(p.levels[lv]))
        out = [(f"V1-shaped, fixed {hi} px, {lv}", {"model": p.v1_model, "shape": "V1", "progressive": False,
                                                    "level": lv}, fixed),
               ("V2-shaped, progressive + adaptive", {"model": p.model, "shape": "V2", "progressive": True}, adaptive),
               (f"V2-shaped, fixed {hi} px, {lv}", {"model": p.model, "shape": "V2", "progressive": False,
                                                    "level": lv}, fixed)]
    else:
        raise ConfigError(f"ablation table must be one of {TABLES}, got {table!r}")
    return out[:2] if p.one_cell else out


class _TrainAccuracy:
    """Callback: after the last epoch, accuracy on up to ``n`` training images without augmentation, at the
    evaluation size: with the test accuracy it shows whether a run overfits (or underfits). Also counts the
    trained model's parameters."""

    def __init__(self, epochs: int, n: int = 2500):
        self.epochs, self.n, self.acc, self.params = epochs, n, None, None

    def on_epoch_end(self, run, metrics):
        from .augment import eval_resize
        from .train import evaluate

        self.params = sum(t.numel() for t in run.model.parameters())
        if metrics["epoch"] == self.epochs and run.data.in_memory:
            xs, ys = (t[: self.n] for t in run.data.train)
            batches = ((eval_resize(xs[i:i + 256], run.data.eval_size, crop=False), ys[i:i + 256])
                       for i in range(0, len(ys), 256))
            self.acc = evaluate(run.model, batches, run.device, run.config["amp"])["acc"]


def run_cell(schedule, p: AblationProfile, seed: int, out: str | Path, eval_size: int, progress: bool = False,
             model: str | None = None) -> dict:
    """Train one cell for one seed (``model``, default ``p.model``), scoring validation every epoch (at
    ``eval_size``), test and (un-augmented) training accuracy at the end."""
    from .train import make_config, train

    out = Path(out)
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: train() would resume an old checkpoint
    cfg = make_config("smoke", model=model or p.model, data=p.data, train_subset=p.train_subset,
                      val_images=p.val_images, eval_subset=p.eval_subset, epochs=p.epochs, batch_size=p.batch_size,
                      lr=p.lr,
                      warmup_epochs=min(1.0, p.epochs / 4), image_size=p.sizes[-1], eval_size=eval_size, crop="pad",
                      amp=p.amp, augment_on=p.augment_on, seed=seed, out=str(out), progress=progress, log_every=50)
    t0, train_acc = time.perf_counter(), _TrainAccuracy(p.epochs)
    summary = train(cfg, progressive=schedule, callbacks=[train_acc])
    last = summary["history"][-1]
    history = [{"epoch": h["epoch"], "val_acc": h["val_acc"], "train_seconds": h["train_seconds"],
                **({"image_size": h["phase"]["image_size"]} if "phase" in h else {})} for h in summary["history"]]
    return {"seed": seed, "val_acc": last["val_acc"], "test_acc": last["test_acc"], "test_loss": last["test_loss"],
            "train_acc": train_acc.acc, "model": cfg.model, "params": train_acc.params,
            "train_seconds": last["train_seconds"], "wall_seconds": time.perf_counter() - t0,
            "amp": summary["config"]["amp"], "history": history}


# ----------------------------------------------------------------------------------------------------------
# Comparisons: paired over seeds, 95 % Student-t intervals (ev2lib.stats)


def _paired(a: dict, b: dict, key: str, op) -> dict:
    """``op(a, b)`` of two cells' ``key`` for each seed both ran, with its interval."""
    return paired(a["runs"], b["runs"], key, op)


def seconds_to_reach(run: dict, target: float) -> float | None:
    """Training seconds until the run's validation accuracy first reached ``target`` (None if it never did)."""
    return next((h["train_seconds"] for h in run["history"] if h["val_acc"] >= target), None)


def _time_to_accuracy(prog: dict, fixed: dict) -> dict:
    """Per seed: (seconds the fixed baseline needed to reach its own final validation accuracy) / (seconds the
    progressive run needed to reach it). Above 1: progressive learning gets there faster."""
    ratios, missed = [], 0
    by_seed = {r["seed"]: r for r in prog["runs"]}
    for f in fixed["runs"]:
        p = by_seed.get(f["seed"])
        t_prog = seconds_to_reach(p, f["val_acc"]) if p else None
        if t_prog is None:
            missed += p is not None
            continue
        ratios.append(seconds_to_reach(f, f["val_acc"]) / t_prog)
    return {**interval(ratios), "seeds_never_reached": missed}


def _summarize_v1_v2(records: list[dict]) -> dict:
    """Table 7 / Figure 1: V2-shaped (fixed size; progressive) against V1-shaped, paired by seed."""
    find = {(r["coords"]["shape"], r["coords"]["progressive"]): r for r in records}
    v1, v2, prog = find.get(("V1", False)), find.get(("V2", False)), find.get(("V2", True))
    if v1 is None:
        return {}
    out = {"params": {r["coords"]["model"]: r["runs"][0].get("params") for r in records if r["runs"]}}
    for key, cell in (("v2", v2), ("v2_progressive", prog)):
        if cell is not None:
            out[f"test_acc_diff_{key}_minus_v1"] = _paired(cell, v1, "test_acc", lambda x, y: x - y)
            out[f"train_time_ratio_{key}_over_v1"] = _paired(cell, v1, "train_seconds", lambda x, y: x / y)
            out[f"speedup_{key}_to_v1_accuracy"] = _time_to_accuracy(cell, v1)
    return out


def summarize(table: int, records: list[dict]) -> dict:
    """The comparisons the paper draws from each table; choices on validation accuracy, reports on test."""
    if table == 7:
        return _summarize_v1_v2(records)
    c = {r["name"]: r for r in records}
    if table == 5:
        best = {}
        for r in records:
            s = str(r["coords"]["image_size"])
            if s not in best or r["val_acc_mean"] > c[best[s]]["val_acc_mean"]:
                best[s] = r["name"]
        return {"best_magnitude_on_val": {s: c[n]["coords"]["randaug"] for s, n in best.items()}}
    fixed = [r for r in records if r["name"].startswith("fixed")]
    tuned = max(fixed, key=lambda r: r["val_acc_mean"]) if fixed else None  # the baseline, chosen on validation
    if table == 12:
        prog = c.get("progressive + adaptive")
        if not (prog and fixed):
            return {}
        return {"tuned_baseline": tuned["name"],
                "test_acc_diff_progressive_minus_tuned": _paired(prog, tuned, "test_acc", lambda x, y: x - y),
                "train_time_ratio_progressive_over_tuned": _paired(prog, tuned, "train_seconds", lambda x, y: x / y),
                "speedup_to_tuned_accuracy": _time_to_accuracy(prog, tuned)}
    out = {}
    for adaptive, constant, key in (("progressive + adaptive", "progressive resize", "progressive"),
                                    ("random resize + adaptive", "random resize", "random")):
        if adaptive in c and constant in c:
            out[f"test_acc_gain_adaptive_{key}"] = _paired(c[adaptive], c[constant], "test_acc", lambda x, y: x - y)
    if tuned is not None:
        out["tuned_baseline"] = tuned["name"]
        for r in records:
            resize = r["coords"].get("resize")
            if resize not in (None, "none"):  # e.g. test_acc_diff_random_adaptive_minus_tuned
                kind = "adaptive" if r["coords"]["adaptive"] else "constant"
                out[f"test_acc_diff_{resize}_{kind}_minus_tuned"] = _paired(r, tuned, "test_acc", lambda x, y: x - y)
    return out


# ----------------------------------------------------------------------------------------------------------
# Running a table


def _cell_record(name: str, coords: dict, schedule, runs: list[dict]) -> dict:
    mean = {k: statistics.fmean(r[k] for r in runs) for k in ("val_acc", "test_acc", "train_seconds", "wall_seconds")}
    return {"name": name, "coords": coords, "schedule_name": schedule.name,
            "schedule": [s.as_dict() for s in schedule.phases()], "runs": runs,
            **{f"{k}_mean": v for k, v in mean.items()}, "test_acc_ci95": interval([r["test_acc"] for r in runs])["ci95"]}


def run_key(model: str, schedule, eval_size: int, seed: int) -> str:
    """A run's file name in the cache: what it trains (model, every phase of the schedule, evaluation size, seed),
    so equal runs of different tables or cells share one file."""
    phases = json.dumps([ph.as_dict() for ph in schedule.phases()], sort_keys=True)
    return f"{model}_{hashlib.sha256(phases.encode()).hexdigest()[:10]}_at{eval_size}_seed{seed}"


def run_table(table: int, profile: str | AblationProfile = "smoke", cache: str | Path | None = None,
              progress: bool = True, **overrides) -> dict:
    """Run every cell of ``table`` for every seed (Table 5: ``table5_seeds``); returns what :func:`save_table` writes.

    ``cache``: a folder; each finished run is kept there under the code's commit and the profile's digest, and
    reused by later calls (Table 12's progressive cell is Table 13's first row; a stopped run continues)."""
    from .results import code_digest, hardware

    p = get_profile(profile, **overrides)
    seeds = p.table5_seeds if table == 5 else p.seeds
    folder = Path(cache) / f"{code_digest('ablations')}-{p.digest()}" if cache else None
    todo = cells(table, p)
    from tqdm.auto import tqdm

    bar, runs, t0 = tqdm(total=len(todo) * len(seeds), desc=f"Table {table}", disable=not progress), {}, time.time()
    with tempfile.TemporaryDirectory(prefix="ev2_ablations_") as tmp:
        for seed in seeds:  # seed-major: a change in machine load hits every cell alike
            for name, coords, schedule in todo:
                size, model = coords.get("image_size", p.sizes[-1]), coords.get("model")
                slug = run_key(model or p.model, schedule, size, seed)
                runs[(name, seed)] = json_cache(folder / f"{slug}.json" if folder else None,
                                                lambda: run_cell(schedule, p, seed, Path(tmp) / slug, size, model=model))
                bar.update()
    bar.close()
    records = [_cell_record(name, coords, sched, [runs[(name, s)] for s in seeds]) for name, coords, sched in todo]
    return {"table": table, "profile": dataclasses.asdict(p), "cells": records, "summary": summarize(table, records),
            "device": hardware()[0], "wall_seconds": sum(r["wall_seconds"] for r in runs.values()),
            "elapsed_seconds_this_call": time.time() - t0}


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
    """A table record as a pandas DataFrame: one row per cell, validation and test accuracy, train time."""
    import pandas as pd

    rows = [{"cell": r["name"], **r["coords"], "seeds": len(r["runs"]), "val acc": r["val_acc_mean"],
             "test acc": r["test_acc_mean"], "test acc 95% CI": r["test_acc_ci95"],
             "train s": r["train_seconds_mean"]} for r in record["cells"]]
    return pd.DataFrame(rows)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m ev2lib.ablations", description=__doc__.split("\n")[0])
    ap.add_argument("--table", type=int, nargs="+", required=True,
                    help="5, 12, 13 and/or 7 (runs are shared between tables)")
    ap.add_argument("--profile", default="smoke", help=f"one of {', '.join(PROFILES)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="override the profile's seeds")
    ap.add_argument("--data", default=None, help="override the dataset (e.g. synthetic:1024)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--cache", default="runs/ablations", help="folder of finished runs, reused on a rerun")
    ap.add_argument("--save", action="store_true", help="write <results>/ablations_table{N}_{cpu|gpu}.json")
    args = ap.parse_args(argv)
    for t in args.table:
        if t not in TABLES:
            raise ConfigError(f"--table must be among {TABLES}, got {t}")
    from . import results

    if args.save and args.profile == "smoke" and not results.is_rehearsal():
        raise ConfigError("a smoke run is never saved: use --profile cpu-reference, colab or full with --save")
    if args.threads:
        torch.set_num_threads(args.threads)
    over = {k: v for k, v in (("seeds", tuple(args.seeds) if args.seeds else None), ("data", args.data)) if v is not None}
    command, records = "python -m ev2lib.ablations " + " ".join(sys.argv[1:] if argv is None else argv), []
    for t in args.table:
        rec = run_table(t, args.profile, cache=args.cache, **over)
        records.append(rec)
        print(f"Table {t} ({args.profile}, {len(rec['cells'])} cells):")
        print(to_frame(rec).to_string(index=False, float_format=lambda x: f"{x:.3f}"))
        for k, v in rec["summary"].items():
            print(f"  {k}: {v['mean']:.3f}, 95% CI {v['ci95']}, n={v['n']}" if isinstance(v, dict) and "mean" in v else f"  {k}: {v}")
        if args.save:
            print(f"  saved {save_table(rec, args.profile, command)}")
    return records


if __name__ == "__main__":
    cli_main(main)
