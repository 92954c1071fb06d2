"""What the ablation records say (paper §4.1, §5.1, §6.2, §6.3; Tables 5, 7, 12, 13): the gate of the regime, every
comparison with its interval and the verdict its interval allows, the paper's claim beside it. The records are
those of :func:`ev2lib.ablations.run_table` and :func:`ev2lib.ablations.calibrate`.
"""
from __future__ import annotations

from . import difference, pct, points, ratio, source, times
from ..stats import direction

# What the paper claims, from its text (§4.1, §5.1, §6.2, §6.3).
PAPER = {12: "ResNet-50 1.4x, ResNet-152 2.1x and EfficientNet-B4 2.2x faster, with slightly better accuracy",
         13: "adaptive regularization 0.7% more accurate than the same regularization at every size",
         5: "small images do best with weak augmentation, large ones with strong (magnitude 5 at 128 px, 15 at 300)",
         7: "V2-M as accurate as EfficientNet-B7 while training 11x faster"}


def clock(rec: dict) -> str:
    """What a record's times measure: CPU seconds of a one-thread process, or wall seconds."""
    return "CPU seconds" if rec.get("time") == "train_cpu_seconds" else "seconds"


def source_words(record: dict | None) -> str:
    """A caption's last sentence: where the reference was measured, or that none is recorded."""
    return (source(record)[0].upper() + source(record)[1:] + ".") if record else "No reference recorded yet."


def measured_on(refs: dict) -> str | None:
    """The hardware line under the findings: where the references shown were measured."""
    where = sorted({r["provenance"]["hardware"] + f" (profile {r['profile']})" for r in refs.values() if r})
    return "; ".join(where) or None


def curve(cell: dict, key: str = "train_seconds") -> tuple[list, list]:
    """A cell's validation curve, mean over seeds at each scored epoch: (training time, validation accuracy %)."""
    hist = [run["history"] for run in cell["runs"]]
    n = min(len(h) for h in hist)
    return ([_mean(h[i][key] for h in hist) for i in range(n)], [100 * _mean(h[i]["val_acc"] for h in hist)
                                                                  for i in range(n)])


def table5_grid(rec: dict, variant: str):
    """Table 5's test accuracy (%, mean over seeds) as magnitude x size, Translate/Cutout ``relative`` or
    ``pixels`` (magnitude 0 is the same run in both)."""
    import pandas as pd
    rows = [(c["coords"]["randaug"], c["coords"]["image_size"], 100 * c["test_acc_mean"]) for c in rec["cells"]
            if c["coords"].get("translate") in (variant, "none")]
    return pd.DataFrame(rows, columns=["m", "size", "acc"]).pivot(index="m", columns="size", values="acc")


def frame(rec: dict):
    """One row per cell: seeds, mean validation, test and un-augmented training accuracy (%), the test accuracy's
    95 % interval, mean training time."""
    import pandas as pd
    key = rec.get("time", "train_seconds")
    return pd.DataFrame([{"cell": c["name"], "seeds": len(c["runs"]), "validation (%)": 100 * c["val_acc_mean"],
                          "test (%)": 100 * c["test_acc_mean"], "test 95% interval (%)": _span(c["test_acc_ci95"]),
                          "training images (%)": 100 * _mean(r.get("train_acc") for r in c["runs"]),
                          f"training time ({clock(rec)})": _mean(r[key] for r in c["runs"])} for c in rec["cells"]])


def _span(ci) -> str:
    return f"{100 * ci[0]:.1f} to {100 * ci[1]:.1f}" if ci else ""


def _mean(values) -> float:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else float("nan")


def gate(summary: dict) -> str:
    """The gate in words: does the unregularized network fit its training images, does L* beat it on validation
    (a 95 % interval above 0), and in how many seeds it did."""
    g = summary["gate"]
    fit, gain = g["unregularized_train_acc"], g["val_gain_tuned_minus_unregularized"]
    up = sum(v > 0 for v in gain["values"])
    return (f"Without regularization the network reaches {pct(fit['mean'])} on its own training images (the gate "
            f"asks {pct(g['min_train_acc'], 0)}); the level chosen on validation, {g['tuned_level']}, beats no "
            f"regularization on validation by {points(gain)} (higher in {up} of {len(gain['values'])} seeds), so the "
            f"gate, which asks for a 95 % interval above 0, {'passes' if g['passed'] else 'fails'}.")


def calibration(rec: dict):
    """The calibration's candidate regimes: training images, epochs, the unregularized network's training accuracy,
    the validation gain of the best regularized level, whether the gate passes, CPU seconds a run."""
    import pandas as pd
    return pd.DataFrame([{"training images": c["train_subset"], "epochs": c["epochs"],
                          "unregularized, training images (%)": 100 * c["gate"]["unregularized_train_acc"]["mean"],
                          "validation gain of regularization (pt)": 100 * c["gate"]["val_gain_tuned_minus_unregularized"]["mean"],
                          "gate (95% interval above 0)": "passes" if c["gate"]["passed"] else "fails",
                          "CPU seconds a run": c["cpu_seconds_per_run"]} for c in rec["candidates"]])


def table12(s: dict) -> str:
    """Table 12: progressive learning (Algorithm 1 up to L*) against the tuned fixed size, and the equal-time arm."""
    reach = s["speedup_to_tuned_accuracy"]
    never, seeds = reach.get("seeds_never_reached", 0), s["test_acc_diff_progressive_minus_tuned"]["n"]
    reached = (f"it reaches the tuned baseline's final validation accuracy sooner by a factor of {times(reach)}"
               + (f" (never in {never} of {seeds} seeds)" if never else "") if reach.get("n") else
               f"it never reaches the tuned baseline's final validation accuracy ({never} of {seeds} seeds)")
    return (f"**Table 12** (both arms end at {s['tuned_level']}): test accuracy, progressive − tuned fixed size, "
            f"{difference(s['test_acc_diff_progressive_minus_tuned'])}; training time, progressive / fixed, "
            f"{ratio(s['train_time_ratio_progressive_over_tuned'], 'longer', 'shorter')}; {reached}. Given the "
            f"progressive run's time ({s['equal_time_epochs']} epochs), the fixed size ends "
            f"{_versus(s['test_acc_diff_progressive_minus_equal_time'])}. Paper: {PAPER[12]}.")


def _versus(iv: dict) -> str:
    """How the progressive arm compares with another, in the interval's own words."""
    word = {1: "below progressive learning", -1: "above progressive learning", 0: "not clearly apart from it"}
    return f"{word[direction(iv)]} ({points(iv)}, progressive − fixed)"


def table13(s: dict) -> str:
    """Table 13: adaptive vs constant regularization, and the time-averaged control."""
    return (f"**Table 13**: adaptive − constant ({s['tuned_level']}) regularization, test accuracy: progressive "
            f"resize {difference(s['test_acc_gain_adaptive_progressive'])}; random resize "
            f"{difference(s['test_acc_gain_adaptive_random'])}. Against a constant level at the adaptive arm's "
            f"average ({s['time_averaged_level'][0]:g} RandAugment), adaptive − averaged "
            f"{difference(s['test_acc_diff_adaptive_minus_time_averaged'])}. Paper: {PAPER[13]}.")


def table5(s: dict) -> str:
    """Table 5: the magnitude chosen on validation at each size, with Translate/Cutout relative and in pixels."""
    words = []
    for variant, best in s["best_magnitude_on_val"].items():
        sizes = sorted(best, key=int)
        grows = all(best[a] <= best[b] for a, b in zip(sizes, sizes[1:])) and best[sizes[0]] < best[sizes[-1]]
        words.append(f"{variant} Translate/Cutout: " + ", ".join(f"{best[z]:g} at {z} px" for z in sizes)
                     + (" (grows with the size)" if grows else " (does not grow with the size)"))
    return f"**Table 5**, magnitude chosen on validation: {'; '.join(words)}. Paper: {PAPER[5]}."


def table7(s: dict) -> str:
    """Table 7 / Figure 1: V2-shaped against V1-shaped, with and without progressive learning."""
    parts = [f"{what}: test accuracy V2 − V1 {difference(s[f'test_acc_diff_{k}_minus_v1'])}, training time V2 / V1 "
             f"{ratio(s[f'train_time_ratio_{k}_over_v1'], 'longer', 'shorter')}"
             for k, what in (("v2", "fixed size"), ("v2_progressive", "progressive")) if f"test_acc_diff_{k}_minus_v1" in s]
    return f"**Table 7** (at {s['tuned_level']}; {', '.join(f'{m} {n:,}' for m, n in s['params'].items())} " \
           f"parameters): {'; '.join(parts)}. Paper: {PAPER[7]}."


def findings(refs: dict) -> list[str]:
    """The chapter's findings from the references ``{12: record, 13: ..., 5: ..., 7: ...}`` (None: not recorded)."""
    out = [gate(refs[12]["data"]["summary"])] if refs.get(12) else []
    for table, say in ((12, table12), (13, table13), (5, table5), (7, table7)):
        rec = refs.get(table)
        out.append(say(rec["data"]["summary"]) if rec else f"**Table {table}:** no reference recorded yet.")
    return out
