"""What the training recipe and its progressive schedules amount to (paper §5.1; §4.2, Algorithm 1, Table 6; official
``hparams.py``, ``main.py``): the end of the paper's LR schedule, what a run leaves out of §5.1's recipe, a run in
words, the paper's and the official phases and where they differ, the pixels a schedule processes."""
from __future__ import annotations

from . import pct
from ..progressive import official_schedule, paper_schedule
from ..recipe import lr_factor, make_config

PAPER_PIECES = {"RMSProp": ("optimizer", "rmsprop"), "the exponential decay": ("lr_schedule", "exponential"),  # §5.1
                "the EMA": ("ema_decay", 0), "RandAugment": ("randaug_magnitude", 0), "mixup": ("mixup_alpha", 0)}
HEADERS = {"index": "phase", "start_epoch": "from epoch", "image_size": "image size (px)", "randaug_magnitude":
           "RandAugment", "mixup_alpha": "mixup alpha", "cutmix_alpha": "CutMix alpha", "dropout": "dropout rate"}


def schedule_end(profile: str = "full", steps_per_epoch: int = 100) -> str:
    """The paper's schedule (the ``full`` profile) in words, with the learning rate at its last step."""
    c = make_config(profile)
    end = lr_factor(c.epochs * steps_per_epoch - 1, c, steps_per_epoch)  # its last step
    return (f"The paper's schedule (peak {c.lr:g}, a {c.warmup_epochs:g}-epoch warm-up, then ×{c.decay_rate:g} every "
            f"{c.decay_epochs:g} epochs) ends its {c.epochs} epochs at {pct(end, 2)} of the peak, a learning rate of "
            f"{c.lr * end:.4f}.")


def left_out(config: dict) -> list[str]:
    """The pieces of §5.1's recipe a run's config leaves out (a string must match; a number must be above 0)."""
    return [name for name, (key, on) in PAPER_PIECES.items() if (config[key] != on if on else not config[key])]


def run_words(config: dict, history: list, source: str = "") -> str:
    """A run's size and result: images, epochs, steps, batch, accuracy per epoch, time (CPU time where logged)."""
    last, data = history[-1], source.split(" /")[0].split(" (")[0]  # no path (older records end with one), no file
    images = f"{config['train_subset']:,} training images" if config["train_subset"] else "every training image"
    cpu = f" ({last['train_cpu_seconds'] / 60:.1f} CPU min)" if last.get("train_cpu_seconds") else ""
    return (f"{config['model']} trained on {images} ({data}) for {last['epoch']:g} epochs, {last['step']:,} steps "
            f"of {config['batch_size']}: {pct(last['test_acc'])} test accuracy at the end (" +
            ", ".join(pct(h["test_acc"]) for h in history) + f" after each epoch), {last['train_seconds'] / 60:.1f} "
            f"min of training{cpu}, {last['train_seconds'] / last['step']:.2f} s a step; one seed, so no interval.")


def phase_frame(variants, epochs: int = 350):
    """The phases of the paper's (Table 6) and the official schedules per variant, with readable headers."""
    import pandas as pd
    rows = [{"variant": "V2-" + v.split("_")[-1].upper(), "schedule": s.name.split(" (")[0], **p.as_dict()}
            for v in variants for s in (paper_schedule(v, epochs), official_schedule(v, epochs)) for p in s.phases()]
    df = pd.DataFrame(rows).drop(columns="end_epoch").rename(columns=HEADERS)
    return df.assign(phase=df["phase"] + 1)


def words(s) -> list[str]:
    """A schedule's sizes and regularization: ["128/184/240/300 px", "RandAugment 5 → 15", "no mixup", ...]."""
    (a, b), out = (s.phase(0), s.phases()[-1]), ["/".join(str(p.image_size) for p in s.phases()) + " px"]
    for n, k in (("RandAugment", "randaug_magnitude"), ("mixup", "mixup_alpha"), ("CutMix", "cutmix_alpha"),
                 ("dropout", "dropout")):
        lo, hi = getattr(a, k), getattr(b, k)
        out.append(f"{n} unchanged" if hi is None else f"no {n}" if not hi else f"{n} {hi:g} throughout" if lo == hi
                   else f"{n} {lo:g} → {hi:g}")
    return out


def differences(variant: str, paper=None, code=None) -> list[str]:
    """Where the official (``code``) schedule departs from the paper's, as "Y (paper: X)" from :func:`words`."""
    paper, code = paper or paper_schedule(variant), code or official_schedule(variant)
    return [f"{y} (paper: {x.removeprefix(y.split()[0] + ' ')})" for x, y in zip(words(paper), words(code)) if x != y]


def pixel_share(s) -> float:
    """The pixels a schedule processes relative to every epoch at its last phase's size (sum of epochs × size²)."""
    return sum((p.end_epoch - p.start_epoch) * p.image_size ** 2 for p in s.phases()) / (
        s.total_epochs * s.phases()[-1].image_size ** 2)



def fast_path_frame(record: dict):
    """The fast-path record (``python -m ev2lib.fast_path``) as a narrow table: each setting of V2-S's training step
    in words and its images a second (median and interquartile range of the interleaved steps)."""
    import pandas as pd
    rows = []
    for r in record["data"]["runs"].values():
        s = r["train_img_s"]
        setting = f"{r['implementation']}, {r['precision']}{', channels last' if r['channels_last'] else ''}"
        rows.append({"images/s": s["median"], "IQR": f"{s['q25']:,.0f}–{s['q75']:,.0f}",  # numbers first (a phone)
                     "setting": setting + (", compiled" if r["compile"] else ", eager")})
    return pd.DataFrame(rows)


def fast_path_words(record: dict) -> str:
    """The fast-path record in words: each ratio against its goal, "faster" or "slower" only where the interquartile
    ranges do not overlap, the input pipeline's share of the step. A spread over one process's steps, no interval."""
    d, met = record["data"], lambda ok: "met" if ok else "not met"  # noqa: E731
    runs, share = d["runs"], d["data"]["share_of_ev2lib_step"]
    eager_k, same_k = "ev2lib / torchvision eager", "ev2lib / torchvision, same settings"
    g = (d["goals"][eager_k], d["goals"][same_k], d["goals"]["data share of the ev2lib step"])
    vs = lambda a, b: ("faster" if a["q25"] > b["q75"] else "slower" if a["q75"] < b["q25"]  # noqa: E731
                       else "no faster or slower: the interquartile ranges overlap")
    ours, eager, same = (runs[k]["train_img_s"] for k in ("ev2lib", "torchvision eager", "torchvision, same settings"))
    r1, r2 = d["ratios"][eager_k], d["ratios"][same_k]
    return (f"EfficientNetV2-S's training step, batch {d['batch_size']} at {d['image_size']} px: ev2lib with bf16, "
            f"channels_last and torch.compile ran {ours['median']:,.0f} images/s, {r1:.2f}× torchvision's eager step "
            f"in {runs['torchvision eager']['precision']} ({vs(ours, eager)}; goal {g[0]:g}×, {met(r1 >= g[0])}) and "
            f"{r2:.2f}× torchvision's network under the same settings ({vs(ours, same)}; goal {g[1]:g}×). The input "
            f"pipeline on the device took {1e3 * d['data']['seconds']['median']:.1f} ms a batch, {pct(share)} of the "
            f"ev2lib step (goal under {pct(g[2], 0)}, {met(share < g[2])}). Compiling made the first step "
            f"{runs['ev2lib']['first_step_seconds']:.0f} s (torchvision's: "
            f"{runs['torchvision, same settings']['first_step_seconds']:.0f} s). Steps timed interleaved in one process: "
            f"the ranges are a spread over steps, not an interval over runs.")
