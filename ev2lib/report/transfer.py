"""What the transfer chapter shows (paper §5.3, Tables 8 and 9): the fine-tuning recipes side by side, and what a
record of :func:`ev2lib.transfer.run_experiment` says: its cells, the gains with the verdicts their intervals allow."""
from __future__ import annotations

from . import difference, pct
from ..recipe import RECIPES

TABLE9 = {"dataset": ["CIFAR-10", "CIFAR-100", "Flowers", "Cars"], "train": [50_000, 50_000, 2_040, 8_144],
          "test": [10_000, 10_000, 6_149, 8_041], "classes": [10, 100, 102, 196]}  # the official splits agree
BETTER = ("fine-tuning better", "scratch better")
NAMES = {"lr": "learning rate", "lr_schedule": "learning-rate schedule", "ema_decay": "EMA decay"}


def recipes() -> list[dict]:
    """§5.3's recipe as the paper writes it and as the official code runs it, one row a setting."""
    word = lambda v: "(the model's own)" if v is None else f"{v:,}" if type(v) is int else f"{v:g}" if type(v) is float else v
    p, o = RECIPES["paper"], RECIPES["official"]
    return [{"setting": NAMES.get(k, k.replace("_", " ")), "the paper (§5.3)": word(p.get(k)),
             "the official code": word(o.get(k)), "differs": "yes" if p.get(k) != o.get(k) else ""} for k in {**p, **o}]


def cells(rec: dict) -> list[dict]:
    """One row per (method, target size) of an experiment record; epochs = steps x batch / images."""
    e = rec["experiment"]
    lrs = lambda c: e["finetune_lrs"] if c["method"] == "fine-tuned" else e["scratch_lrs"]
    ci = lambda c: "{:.1f} to {:.1f}".format(*(100 * v for v in c["test_acc"]["ci95"])) if c["test_acc"]["ci95"] else ""
    return [{"method": c["method"], "target images": c["size"], "epochs": c.get("steps", e["steps"]) * e["batch_size"]
             / c["size"], "learning rate": c["lr"], "grid edge": {max(lrs(c)): "top", min(lrs(c)): "bottom"}.get(c["lr"], "")
             if len(lrs(c)) > 1 else "", "test accuracy (%)": 100 * c["test_acc"]["mean"],
             "95% interval (%)": ci(c), "seeds": c["test_acc"]["n"]} for c in rec["cells"]]


def gains(rec: dict) -> list[str]:
    """Fine-tuned minus scratch at each size, and at the largest against scratch with more steps (if recorded)."""
    s, e, n = rec["summary"], rec["experiment"], max(rec["experiment"]["sizes"])
    longer, k = s.get("test_acc_gain_finetuned_minus_longer_scratch", {}).get(str(n)), e.get("long_scratch", 0)
    return [f"at {m:,} images, {difference(s['test_acc_gain_finetuned_minus_scratch'][str(m)], *BETTER)}" for m in e["sizes"]] + [
        f"at {n:,} images against scratch with {k}× the steps ({k * e['steps'] * e['batch_size'] / n:.1f} epochs), "
        f"{difference(longer, *BETTER)}" if longer else f"at {n:,} images against scratch with more steps: not recorded"
        f" yet (the same steps give scratch {e['steps'] * e['batch_size'] / n:.1f} epochs)"]


def overlap(rec: dict) -> str:
    """Whether the gain's intervals at the smallest and the largest target size overlap ("" without two intervals)."""
    g = rec["summary"]["test_acc_gain_finetuned_minus_scratch"]
    (a, x), (b, y) = [(int(k), g[k]) for k in (min(g, key=int), max(g, key=int))]
    return "" if a == b or not (x["ci95"] and y["ci95"]) else f"The gain's intervals at {a:,} and {b:,} images " + (
        f"do not overlap: it is larger at {a if x['mean'] > y['mean'] else b:,} images." if x["ci95"][0] > y["ci95"][1]
        or y["ci95"][0] > x["ci95"][1] else f"overlap: {min(x['n'], y['n'])} seeds do not show that it changes with size.")


def findings(rec: dict) -> list[str]:
    """The "what we found" items of an experiment record: the source network, the gains, the learning-rate grid."""
    e, src = rec["experiment"], rec["source"]
    edge = [f"{r['method']} at {r['target images']:,} images (its {r['grid edge']})" for r in cells(rec) if r["grid edge"]]
    return [f"The source network (`{e['model']}`, {e['pretrain_epochs']} epochs on CIFAR-10 classes "
            f"{e['source_classes']}) reached {pct(src['val_acc'])} validation and {pct(src['test_acc'])} test accuracy.",
            f"Fine-tuned minus scratch, test accuracy on classes {e['target_classes']} after {e['steps']} steps each: "
            + "; ".join(gains(rec)) + ".", overlap(rec), "The learning rate chosen on validation is at an edge of its "
            "grid for " + ", ".join(edge) + ": a rate beyond it might do better there." if edge else ""]
