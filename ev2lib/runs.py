"""Read training logs (``<out>/log.jsonl`` written by :mod:`ev2lib.train`) and plot runs side by side."""
from __future__ import annotations

import json
from pathlib import Path


def read_log(run: str | Path) -> list[dict]:
    """The records of a run folder's ``log.jsonl`` (or of a JSONL file), in order."""
    path = Path(run)
    path = path / "log.jsonl" if path.is_dir() else path
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def curves(records: list[dict]) -> dict:
    """Split a log into ``{"train": [...step records], "eval": [...eval records]}``."""
    return {"train": [r for r in records if "loss" in r and "event" not in r],
            "eval": [r for r in records if r.get("event") == "eval"]}


def plot_runs(runs: dict, metric: str = "test_acc", x: str = "epoch", ax=None):
    """Plot ``metric`` against ``x`` for several runs: ``{label: run folder | log records | eval history}``.

    A committed reference result's ``data["history"]`` (a list of eval records) plots like a live run's log, so a
    chapter can draw the reader's run beside the reference with the hardware in the label."""
    import matplotlib.pyplot as plt

    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for label, run in runs.items():
        records = read_log(run) if isinstance(run, (str, Path)) else list(run)
        rows = [r for r in records if metric in r and x in r]
        if metric != "loss":
            rows = [r for r in rows if r.get("event", "eval") == "eval"]
        ax.plot([r[x] for r in rows], [r[metric] for r in rows], marker="o" if len(rows) < 30 else None, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    return ax
