"""Small-scale ablations of progressive learning and of the V2 design (paper §4.1, §5.1, §6.2, §6.3; Tables 5, 7,
12, 13, Figure 1), trained with :func:`ev2lib.train.train` on a subset of CIFAR-10.

**A regime where regularization can help.** Every table first trains the fixed size at each of
:attr:`AblationProfile.levels` and records a *gate*: unregularized, the network fits its training images, and the
level chosen on validation (L*) beats none beyond the seed noise (:func:`calibrate` records it for candidate regimes).
**Table 12**: Algorithm 1 up to L* against the fixed size at L* (same end point), and a fixed arm given the progressive
run's time (same budget). **Table 13**: adaptive vs constant L* for progressive and random resize, and a control at
the adaptive arm's mean level. **Table 5**: size x RandAugment magnitude. **Table 7**: V1- vs V2-shaped at L*.
Choices on validation, the test split once a run, pairs by seed with 95 % intervals; time in CPU seconds of one
thread on a CPU, wall seconds on a GPU. Runs are cached under ``cache/<code digest>-<profile digest>/``.
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
from .stats import direction, interval, paired, time_to_accuracy

TABLES = (12, 13, 5, 7)  # Table 12's tuning comes first: every table uses it


@dataclass(frozen=True)
class AblationProfile:
    """The scale of an ablation grid. A regularization *level* is (RandAugment magnitude, mixup alpha, dropout)."""

    model: str = "efficientnetv2_cifar_half"  # 0.28M parameters
    data: str = "cifar10"
    train_subset: int = 1000  # few images, many epochs: the unregularized network fits them (the gate)
    val_images: int = 2500  # held out of the training split; every choice is made on these
    eval_subset: int = 0  # 0 = the whole test split
    epochs: int = 100
    eval_every: int = 5  # epochs between validation scores (the curves that time-to-accuracy reads)
    batch_size: int = 128
    lr: float = 0.2
    amp: str = "auto"
    sizes: tuple = (16, 24, 32)  # small / middle / large image size (the paper's 128 / 192 / 300)
    magnitudes: tuple = (0, 5, 10, 15)  # Table 5 (0: no RandAugment, each size's reference)
    pixel_side: int = 32  # Table 5's official variant: Translate/Cutout in the pixels of an image this size
    num_phases: int = 4  # M in Algorithm 1
    random_every: int = 5  # random resize: a new size every this many epochs (the paper: 8 of 350)
    size_multiple: int = 4  # CIFAR-scale sizes: multiples of 4
    levels: dict = field(default_factory=lambda: {  # weakest first; Table 6: RandAugment 5-15, mixup 0-0.2, dropout
        "none": (0, 0.0, 0.0), "light": (5, 0.0, 0.1), "medium": (10, 0.1, 0.2), "strong": (15, 0.2, 0.3)})
    seeds: tuple = (0, 1, 2)
    table5_seeds: tuple = (0, 1, 2)
    min_train_acc: float = 0.95  # the gate: the unregularized fixed-size network fits its training images
    one_cell: bool = False  # smoke: the tuning's weakest and strongest level only
    v1_model: str = "efficientnet_cifar_v1"  # Table 7's V1-shaped network: the parameters of ``model``, MBConv only
    augment_on: str = "device"  # augment each batch at once on the training device (CPU or GPU: one pipeline)

    def replace(self, **kw) -> "AblationProfile":
        return dataclasses.replace(self, **kw)

    def digest(self) -> str:
        """A short hash of the settings: cached runs are reused only by the same profile."""
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:10]


PROFILES = {
    # CPU, offline, seconds per run: proves the runner works; never saved.
    "smoke": AblationProfile(train_subset=256, val_images=128, eval_subset=256, epochs=4, eval_every=1,
                             batch_size=64, sizes=(12, 16, 16), magnitudes=(0, 10), pixel_side=16, num_phases=2,
                             random_every=1, seeds=(0, 1), table5_seeds=(0,), one_cell=True),
    # The CPU reference (ci/cpu_reference.sh, one-thread processes side by side on 2 cores).
    "cpu-reference": AblationProfile(),
    # One GPU (the kit's table12, v1_v2): V2-B0, CIFAR-10 upsampled, 64 -> 128 px; V1-B0 for Table 7 (5.3M vs 7.1M).
    "colab": AblationProfile(model="efficientnetv2_b0", v1_model="efficientnet_b0", train_subset=10000,
                             val_images=5000, epochs=8, eval_every=2, batch_size=256, lr=0.4, sizes=(64, 96, 128),
                             pixel_side=128, random_every=2, size_multiple=8, seeds=(0, 1), table5_seeds=(0, 1)),
    "full": AblationProfile(model="efficientnetv2_b0", v1_model="efficientnet_b0", train_subset=0, val_images=5000,
                            epochs=40, eval_every=2, batch_size=256, lr=0.4, sizes=(128, 192, 256), pixel_side=256,
                            random_every=4, size_multiple=8),
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


# --- Schedules ----------------------------------------------------------------------------------------------------

def _reg(level: tuple) -> dict:
    ra, mixup, dropout = level
    return dict(randaug=ra, mixup=mixup, dropout=dropout)


def fixed(p: AblationProfile, level: tuple, size: int | None = None, epochs: int | None = None):
    """Every epoch at ``size`` (default: the large one) with the regularization ``level``."""
    return fixed_schedule(epochs or p.epochs, size or p.sizes[-1], **_reg(level))


def adaptive(p: AblationProfile, top: str):
    """Algorithm 1: sizes small -> large, regularization from the weakest level up to ``top``."""
    ranges = {k: (lo, hi) for (k, lo), hi in zip(_reg(list(p.levels.values())[0]).items(), p.levels[top])}
    return ProgressiveSchedule(p.num_phases, p.epochs, (p.sizes[0], p.sizes[-1]), size_multiple=p.size_multiple,
                               name="progressive + adaptive", **ranges)


def time_averaged(schedule) -> tuple:
    """The epoch-weighted mean (RandAugment, mixup, dropout) of a schedule: what it gives on average."""
    ph, E = schedule.phases(), schedule.total_epochs
    return tuple(round(sum((p.end_epoch - p.start_epoch) * getattr(p, k) for p in ph) / E, 4)
                 for k in ("randaug_magnitude", "mixup_alpha", "dropout"))


def random_resize(p: AblationProfile, top: str, adaptive_reg: bool):
    """A function seed -> random resize schedule (each seed draws its own sizes), regularization adaptive from the
    weakest level up to ``top`` or constant at ``top``."""
    lo_level = list(p.levels.values())[0] if adaptive_reg else p.levels[top]
    ranges = {k: (lo, hi) for (k, lo), hi in zip(_reg(lo_level).items(), p.levels[top])}
    return lambda seed: RandomResizeSchedule(p.epochs, (p.sizes[0], p.sizes[-1]), every=p.random_every,
                                             adaptive=adaptive_reg, seed=seed, size_multiple=p.size_multiple, **ranges)


# --- Running cells ------------------------------------------------------------------------------------------------

class _TrainAccuracy:
    """Callback: after the last epoch, accuracy on up to ``n`` training images without augmentation, at the
    evaluation size (with the test accuracy: does the run fit its training images?), and the parameter count."""

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
             model: str | None = None, fixed_side: int = 0) -> dict:
    """Train one cell for one seed (``model``, default ``p.model``), scoring validation every ``eval_every`` epochs
    (at ``eval_size``), test and (un-augmented) training accuracy at the end."""
    from .train import make_config, train
    out, epochs = Path(out), schedule.total_epochs
    shutil.rmtree(out, ignore_errors=True)  # a fresh run: train() would resume an old checkpoint
    cfg = make_config("smoke", model=model or p.model, data=p.data, train_subset=p.train_subset,
                      val_images=p.val_images, eval_subset=p.eval_subset, epochs=epochs, batch_size=p.batch_size,
                      lr=p.lr, warmup_epochs=min(1.0, epochs / 4), image_size=p.sizes[-1], eval_size=eval_size,
                      crop="pad", amp=p.amp, augment_on=p.augment_on, seed=seed, out=str(out), progress=progress,
                      log_every=50, eval_every=p.eval_every, randaug_fixed_side=fixed_side)
    t0, train_acc = time.perf_counter(), _TrainAccuracy(epochs)
    summary = train(cfg, progressive=schedule, callbacks=[train_acc])
    last = summary["history"][-1]
    keep = ("epoch", "val_acc", "train_seconds", "train_cpu_seconds")
    history = [{**{k: h[k] for k in keep}, "image_size": h["phase"]["image_size"]} for h in summary["history"]]
    return {"seed": seed, "val_acc": last["val_acc"], "test_acc": last["test_acc"], "test_loss": last["test_loss"],
            "train_acc": train_acc.acc, "model": cfg.model, "params": train_acc.params, "epochs": epochs,
            "train_seconds": last["train_seconds"], "train_cpu_seconds": last["train_cpu_seconds"],
            "wall_seconds": time.perf_counter() - t0, "amp": summary["config"]["amp"], "history": history,
            "schedule": [ph.as_dict() for ph in schedule.phases()]}


class Runner:
    """Runs cells for a profile, each finished run kept in ``cache`` (and reused by any table asking for it)."""

    def __init__(self, p: AblationProfile, cache: str | Path | None, progress: bool, tmp: str):
        from .results import code_digest
        self.p, self.progress, self.tmp, self.trained, self.warmed = p, progress, Path(tmp), 0, set()
        self.folder = Path(cache) / f"{code_digest('ablations')}-{p.digest()}" if cache else None

    def cell(self, name: str, coords: dict, schedule, **kw) -> dict:
        return self.cells([(name, coords, schedule, kw)])[0]

    def cells(self, specs) -> list[dict]:
        """The records of ``(name, coords, schedule, kw)`` cells, one run per seed (``kw``: ``seeds``, ``model``,
        ``size``, ``fixed_side``), trained or cached, seed-major: a drift of the machine's speed touches all alike."""
        runs = {i: [] for i in range(len(specs))}
        seeds = sorted({s for _, _, _, kw in specs for s in kw.get("seeds") or self.p.seeds})
        for seed in seeds:
            for i, (_, _, schedule, kw) in enumerate(specs):
                if seed in (kw.get("seeds") or self.p.seeds):
                    runs[i].append(self._run(schedule(seed) if callable(schedule) else schedule, seed, **kw))
        out = []
        for i, (name, coords, _, _) in enumerate(specs):
            mean = {k: statistics.fmean(r[k] for r in runs[i]) for k in ("val_acc", "test_acc", "train_seconds")}
            out.append({"name": name, "coords": coords, "runs": runs[i], **{f"{k}_mean": v for k, v in mean.items()},
                        "test_acc_ci95": interval([r["test_acc"] for r in runs[i]])["ci95"]})
        return out

    def _run(self, schedule, seed: int, model=None, size=None, fixed_side=0, seeds=None) -> dict:
        spec = {"model": model or self.p.model, "phases": [ph.as_dict() for ph in schedule.phases()],
                "eval_size": size or self.p.sizes[-1], "seed": seed, "fixed_side": fixed_side}
        slug = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]
        return json_cache(self.folder / f"{slug}.json" if self.folder else None,
                          lambda: self._train(schedule, seed, slug, spec))

    def _train(self, schedule, seed, slug, spec) -> dict:
        self.trained += 1
        if torch.cuda.is_available():  # an untimed warm-up at every new shape: start-up costs stay out of the times
            from .bench import precision, warm_up

            for size in ({ph.image_size for ph in schedule.phases()} | {spec["eval_size"]}) - self.warmed:
                warm_up(spec["model"], size, self.p.batch_size, precision("cuda"))
                self.warmed.add(size)
        if self.progress:
            print(f"[ablations] training {slug}: {spec['model']}, seed {seed}, {schedule!r}", flush=True)
        return run_cell(schedule, self.p, seed, self.tmp / slug, spec["eval_size"], model=spec["model"],
                        fixed_side=spec["fixed_side"])


# --- The tables: each returns (cells, summary); choices on validation accuracy, reports on test -------------------

def _div(x, y):
    return x / y


def tuning(r: Runner) -> tuple[list[dict], dict, dict]:
    """The fixed-size baseline at every level (all seeds), the tuned cell (best mean validation accuracy) and the
    gate: does the unregularized network fit its training images, and does L* beat it on validation?"""
    p, names = r.p, list(r.p.levels)
    names = [names[0], names[-1]] if p.one_cell else names
    cells = r.cells([(f"fixed {p.sizes[-1]} px, {n}", {"level": n, "resize": "none"}, fixed(p, p.levels[n]), {})
                     for n in names])
    tuned = max(cells, key=lambda c: c["val_acc_mean"])
    fit = interval([run["train_acc"] for run in cells[0]["runs"] if run["train_acc"] is not None])
    gain = paired(tuned["runs"], cells[0]["runs"], "val_acc")
    gate = {"unregularized_train_acc": fit, "val_gain_tuned_minus_unregularized": gain,
            "tuned_level": tuned["coords"]["level"], "min_train_acc": p.min_train_acc,
            "passed": bool(fit["n"] and fit["mean"] >= p.min_train_acc and direction(gain) == 1)}
    return cells, tuned, gate


def table12(r: Runner, key: str) -> tuple[list[dict], dict]:
    """Algorithm 1 up to L* against the fixed size at L*, and a fixed-size arm at L* with the progressive time."""
    p = r.p
    tuning_cells, tuned, gate = tuning(r)
    top = gate["tuned_level"]
    prog = r.cell("progressive + adaptive", {"resize": "progressive", "level": top}, adaptive(p, top))
    share = paired(prog["runs"], tuned["runs"], key, _div)
    epochs = max(1, round(p.epochs * share["mean"]))
    equal = r.cell(f"fixed {p.sizes[-1]} px, {top}, equal time", {"level": top, "resize": "none", "epochs": epochs},
                   fixed(p, p.levels[top], epochs=epochs))
    last = prog["runs"][0]["schedule"][-1]
    summary = {"gate": gate, "tuned_level": top, "time": key, "equal_time_epochs": epochs,
               "progressive_ends_at": [last["randaug_magnitude"], last["mixup_alpha"], last["dropout"]],
               "test_acc_diff_progressive_minus_tuned": paired(prog["runs"], tuned["runs"], "test_acc"),
               "train_time_ratio_progressive_over_tuned": share,
               "test_acc_diff_progressive_minus_equal_time": paired(prog["runs"], equal["runs"], "test_acc"),
               "train_time_ratio_equal_time_over_progressive": paired(equal["runs"], prog["runs"], key, _div),
               "speedup_to_tuned_accuracy": time_to_accuracy(prog, tuned, key)}
    return tuning_cells + [prog, equal], summary


def table13(r: Runner, key: str) -> tuple[list[dict], dict]:
    """Adaptive vs constant regularization for progressive and random resize, and the time-averaged control."""
    p = r.p
    tuning_cells, tuned, gate = tuning(r)
    top = gate["tuned_level"]
    sizes, M, E = (p.sizes[0], p.sizes[-1]), p.num_phases, p.epochs
    mean_level = time_averaged(adaptive(p, top))
    rows = r.cells([
        ("progressive + adaptive", {"resize": "progressive", "level": top}, adaptive(p, top), {}),
        ("progressive resize", {"resize": "progressive", "level": top},
         progressive_resize(M, E, sizes, size_multiple=p.size_multiple, **_reg(p.levels[top])), {}),
        ("progressive resize, time-averaged level", {"resize": "progressive", "level": list(mean_level)},
         progressive_resize(M, E, sizes, size_multiple=p.size_multiple, **_reg(mean_level)), {}),
        ("random resize + adaptive", {"resize": "random", "level": top}, random_resize(p, top, True), {}),
        ("random resize", {"resize": "random", "level": top}, random_resize(p, top, False), {})])
    prog, const, control, rand, rand_const = rows
    summary = {"gate": gate, "tuned_level": top, "time_averaged_level": list(mean_level),
               "test_acc_gain_adaptive_progressive": paired(prog["runs"], const["runs"], "test_acc"),
               "test_acc_gain_adaptive_random": paired(rand["runs"], rand_const["runs"], "test_acc"),
               "test_acc_diff_adaptive_minus_time_averaged": paired(prog["runs"], control["runs"], "test_acc"),
               "test_acc_diff_time_averaged_minus_constant": paired(control["runs"], const["runs"], "test_acc"),
               "test_acc_diff_minus_tuned": {c["name"]: paired(c["runs"], tuned["runs"], "test_acc") for c in rows},
               "random_sizes": {str(run["seed"]): [ph["image_size"] for ph in run["schedule"]] for run in rand["runs"]}}
    return rows + tuning_cells, summary


def table5(r: Runner, key: str) -> tuple[list[dict], dict]:
    """Image size x RandAugment magnitude (no mixup or dropout), Translate/Cutout relative and in official pixels."""
    p = r.p
    _, _, gate = tuning(r)
    specs, best = [], {}
    for size in sorted(set(p.sizes)):
        for m in p.magnitudes:
            for variant, side in (("relative", 0), ("pixels", p.pixel_side))[: 2 if m else 1]:
                specs.append((f"size {size}, RandAugment {m}" + (", official pixels" if side else ""),
                              {"image_size": size, "randaug": m, "translate": variant if m else "none"},
                              fixed(p, (m, 0.0, 0.0), size), dict(seeds=p.table5_seeds, size=size, fixed_side=side)))
    cells = r.cells(specs)
    for variant in ("relative", "pixels"):
        for size in sorted(set(p.sizes)):
            pool = [c for c in cells if c["coords"]["image_size"] == size and c["coords"]["translate"] in (variant,
                                                                                                           "none")]
            best.setdefault(variant, {})[str(size)] = max(pool, key=lambda c: c["val_acc_mean"])["coords"]["randaug"]
    return cells, {"gate": gate, "best_magnitude_on_val": best}


def table7(r: Runner, key: str) -> tuple[list[dict], dict]:
    """V1-shaped vs V2-shaped at matched parameters, both at L*, and the V2-shaped one with Algorithm 1."""
    p = r.p
    _, tuned, gate = tuning(r)
    top = gate["tuned_level"]
    v1 = r.cell(f"V1-shaped, fixed {p.sizes[-1]} px, {top}", {"model": p.v1_model, "shape": "V1", "progressive": False},
                fixed(p, p.levels[top]), model=p.v1_model)
    prog = r.cell("progressive + adaptive", {"resize": "progressive", "level": top}, adaptive(p, top))
    v2 = {**tuned, "name": f"V2-shaped, fixed {p.sizes[-1]} px, {top}",
          "coords": {"model": p.model, "shape": "V2", "progressive": False}}
    v2p = {**prog, "name": "V2-shaped, progressive + adaptive",
           "coords": {"model": p.model, "shape": "V2", "progressive": True}}
    summary = {"gate": gate, "tuned_level": top, "time": key,
               "params": {c["coords"]["model"]: c["runs"][0]["params"] for c in (v1, v2)}}
    for name, cell in (("v2", v2), ("v2_progressive", v2p)):
        summary[f"test_acc_diff_{name}_minus_v1"] = paired(cell["runs"], v1["runs"], "test_acc")
        summary[f"train_time_ratio_{name}_over_v1"] = paired(cell["runs"], v1["runs"], key, _div)
        summary[f"speedup_{name}_to_v1_accuracy"] = time_to_accuracy(cell, v1, key)
    return [v1, v2p, v2], summary


BUILDERS = {12: table12, 13: table13, 5: table5, 7: table7}


def calibrate(profile: str | AblationProfile = "smoke", cache=None, progress: bool = True, candidates=None) -> dict:
    """The gate of candidate regimes (training images x epochs), each with the two weakest levels and two seeds:
    which regime lets regularization help, and what a run costs. The candidates are the profile's own regime (the
    one chosen) and one with twice the training images."""
    from .results import hardware
    p, rows = get_profile(profile), []
    for images, epochs in candidates or ((p.train_subset, p.epochs), (2 * p.train_subset, p.epochs)):
        q = p.replace(train_subset=images, epochs=epochs, seeds=p.seeds[:2], levels=dict(list(p.levels.items())[:2]))
        with tempfile.TemporaryDirectory(prefix="ev2_calibrate_") as tmp:
            cells, _, gate = tuning(Runner(q, cache, progress, tmp))
        rows.append({"train_subset": images, "epochs": epochs, "gate": gate, "cells": cells,
                     "cpu_seconds_per_run": statistics.fmean(run["train_cpu_seconds"] for c in cells
                                                             for run in c["runs"])})
    return {"table": "calibration", "profile": dataclasses.asdict(p), "candidates": rows, "device": hardware()[0],
            "chosen": [p.train_subset, p.epochs]}


def run_table(table: int, profile: str | AblationProfile = "smoke", cache: str | Path | None = None,
              progress: bool = True, **overrides) -> dict:
    """Run every cell of ``table`` for every seed; returns what :func:`save_table` writes. ``cache``: a folder where
    each finished run is kept (under the code's and the profile's digests) and reused by later calls."""
    from .results import hardware
    if table not in BUILDERS:
        raise ConfigError(f"ablation table must be one of {TABLES}, got {table!r}")
    p, (device, kind), t0 = get_profile(profile, **overrides), hardware(), time.time()
    key = "train_cpu_seconds" if kind == "cpu" else "train_seconds"  # one-thread CPU time is immune to neighbours
    with tempfile.TemporaryDirectory(prefix="ev2_ablations_") as tmp:
        runner = Runner(p, cache, progress, tmp)
        cells, summary = BUILDERS[table](runner, key)
    return {"table": table, "profile": dataclasses.asdict(p), "cells": cells, "summary": summary, "device": device,
            "time": key, "wall_seconds": sum(run["wall_seconds"] for c in cells for run in c["runs"]),
            "trained_this_call": runner.trained, "elapsed_seconds_this_call": time.time() - t0}


def result_name(table: int | str, device_type: str | None = None) -> str:
    """``ablations_table{N}_gpu`` (or ``ablations_calibration_gpu``) for a CUDA run, ``..._cpu`` otherwise."""
    kind = "gpu" if (device_type or ("cuda" if torch.cuda.is_available() else "cpu")) == "cuda" else "cpu"
    return f"ablations_{'table' if isinstance(table, int) else ''}{table}_{kind}"


def save_table(record: dict, profile: str, command: str, directory=None) -> Path:
    from . import results
    return results.save(result_name(record["table"]), record, config=record["profile"], command=command,
                        profile=profile, directory=directory)


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(prog="python -m ev2lib.ablations", description=__doc__.split("\n")[0])
    ap.add_argument("--table", type=int, nargs="*", default=[], help="12, 13, 5 and/or 7 (runs are shared)")
    ap.add_argument("--calibrate", action="store_true", help="first record the gate of candidate regimes (calibrate)")
    ap.add_argument("--profile", default="smoke", help=f"one of {', '.join(PROFILES)}")
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="override the profile's seeds")
    ap.add_argument("--data", default=None, help="override the dataset (e.g. synthetic:1024)")
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    ap.add_argument("--cache", default="runs/ablations", help="folder of finished runs, reused on a rerun")
    ap.add_argument("--save", action="store_true", help="write <results>/ablations_table{N}_{cpu|gpu}.json")
    args = ap.parse_args(argv)
    bad = [t for t in args.table if t not in TABLES]
    if bad or not (args.table or args.calibrate):
        raise ConfigError(f"--table must be among {TABLES} (or give --calibrate), got {bad[0] if bad else 'none'}")
    from . import results

    if args.save and args.profile == "smoke" and not results.is_rehearsal():
        raise ConfigError("a smoke run is never saved: use --profile cpu-reference, colab or full with --save")
    if args.threads:
        torch.set_num_threads(args.threads)
    over = {k: v for k, v in (("seeds", tuple(args.seeds) if args.seeds else None), ("data", args.data)) if v is not None}
    command, records = "python -m ev2lib.ablations " + " ".join(sys.argv[1:] if argv is None else argv), []
    for t in (["calibration"] if args.calibrate else []) + args.table:
        rec = calibrate(args.profile, args.cache) if t == "calibration" else run_table(t, args.profile, args.cache, **over)
        records.append(rec)
        for c in rec.get("cells", rec.get("candidates")):
            print(f"{t}: {c.get('name', c.get('train_subset'))}: {json.dumps(c.get('gate') or c['test_acc_mean'])}")
        print(f"{t}: {json.dumps(rec.get('summary', {}))}")
        if args.save:
            print(f"saved {save_table(rec, args.profile, command)}")
    return records


if __name__ == "__main__":
    cli_main(main)
