"""Small helpers the book's chapters share: captions that say where a number came from, stage tables as
DataFrames, training curves of runs side by side and an ipywidgets explorer that also renders statically.

This module is for the chapters only (it imports pandas, matplotlib, seaborn and ipywidgets lazily, from the
``book`` extra); the rest of ev2lib never imports it.
"""
from __future__ import annotations

from pathlib import Path

from . import results
from .configs import ModelConfig, get_config


def run_caption(what: str = "computed in this run", device: str | None = None) -> str:
    """``"computed in this run on <hardware>"``: the label of every number a chapter computes live."""
    desc, _ = results.hardware(device)
    return f"{what} on {desc}"


def show_caption(text: str) -> None:
    """Display ``text`` as a small italic figure caption (Markdown, so it renders in the book and in Jupyter)."""
    from IPython.display import Markdown, display

    display(Markdown(f"*{text}*"))


def stage_table(config: ModelConfig | str):
    """The Table 4 view of a config (a pandas DataFrame): Stage, Operator, Stride, #Channels, #Layers.

    The rows are :func:`ev2lib.summary.stage_rows`, never typed: stage 0 is the stem, the last row the head
    (1x1 conv, pooling, FC, stride "-") as in the paper.
    """
    import pandas as pd

    from .summary import stage_rows

    rows = [(i, op, "-" if stride is None else stride, ch, n) for i, op, stride, ch, n in stage_rows(get_config(config))]
    return pd.DataFrame(rows, columns=["Stage", "Operator", "Stride", "#Channels", "#Layers"]).set_index("Stage")


def summary_frame(rows, variant: str = "", image_size: int | None = None):
    """:func:`ev2lib.summary.summarize` rows as a DataFrame with readable units (M params, G MACs, MiB)."""
    import pandas as pd

    from .summary import as_records

    df = pd.DataFrame(as_records(rows))
    df["params (M)"] = df["params"] / 1e6
    df["MACs (G)"] = df["macs"] / 1e9
    df["activation memory (MiB)"] = df["activation_bytes"] / 2**20
    if variant:
        df.insert(0, "variant", variant)
    if image_size:
        df.insert(1 if variant else 0, "image size", image_size)
    return df


def plot_stage_costs(df, hue: str = "variant", title: str = "", caption: str = ""):
    """Three bar panels (params, MACs, activation memory) per Table 4 stage, one colour per ``hue`` value."""
    import matplotlib.pyplot as plt
    import seaborn as sns

    metrics = ["params (M)", "MACs (G)", "activation memory (MiB)"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), constrained_layout=True)
    for ax, m in zip(axes, metrics):
        sns.barplot(data=df, x="stage", y=m, hue=hue if hue in df else None, ax=ax)
        ax.set_xlabel("stage (Table 4 numbering)")
        ax.set_title(m)
        if ax is not axes[-1] and ax.get_legend() is not None:
            ax.get_legend().remove()
    if title:
        fig.suptitle(title)
    if caption:
        fig.text(0.5, -0.06, caption, ha="center", fontsize=9, style="italic")
    return fig


def plot_runs(runs: dict, metric: str = "test_acc", x: str = "epoch", ax=None):
    """Plot ``metric`` against ``x`` for several runs: ``{label: run folder | log records | eval history}``.

    A committed reference result's ``data["history"]`` (a list of eval records) plots like a live run's log, so a
    chapter can draw the reader's run beside the reference with the hardware in the label."""
    import matplotlib.pyplot as plt

    from .train import read_log

    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    for label, run in runs.items():
        records = read_log(run) if isinstance(run, (str, Path)) else list(run)
        rows = [r for r in records if metric in r and x in r and (metric == "loss" or r.get("event", "eval") == "eval")]
        ax.plot([r[x] for r in rows], [r[metric] for r in rows], marker="o" if len(rows) < 30 else None, label=label)
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    ax.legend(fontsize=8)
    return ax


def explorer(fn, static: bool = True, **controls):
    """An ``ipywidgets.interactive`` explorer of ``fn(**controls)`` that also shows a static rendering.

    A live kernel (Colab, Jupyter) updates the widget's output as the controls move. The static book has no
    kernel, so with ``static=True`` the function is also called once with the controls' defaults below the
    widget: the rendered page always shows a real table and figure. Returns the widget.
    """
    import ipywidgets as widgets
    from IPython.display import Markdown, display

    w = widgets.interactive(fn, **controls)
    display(w)
    if static:
        defaults = dict(w.kwargs)  # the values the widget was first rendered with
        shown = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
        display(Markdown(f"**Static view** at the default settings ({shown}); run the chapter to move the controls."))
        fn(**defaults)
    return w
