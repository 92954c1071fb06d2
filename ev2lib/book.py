"""What the chapters show and how: the frame (a "run it" note, a "what we found" list), figures legible on a
phone, tables a reader can scan, captions, the live run in a block of its own (:func:`this_run`), stage tables and
an explorer that also renders statically. Display only (what the numbers say is :mod:`ev2lib.report`); for the
chapters, with the ``chapters`` extra's packages imported lazily.
"""
from __future__ import annotations

import math
import re
from pathlib import Path

from . import results
from .configs import ModelConfig, get_config
from .errors import ConfigError

# Figures sized for the page: TEXT_WIDTH in at DPI (550 px) show at natural size in the 688 px desktop column, so
# FONT_PT text is 16.7 px there, and 358/550 of it in a 390 px phone's column: 10.9 px, above MIN_PHONE_FONT_PX.
TEXT_WIDTH = 5.5  # inches (the inline backend's tight bounding box adds ~0.3 in)
DPI = 100
FONT_PT = 12
PHONE_COLUMN_PX, MIN_PHONE_FONT_PX = 358, 9
PALETTE = "colorblind"  # distinct hues; series also differ in marker or line style where they may overlap
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def style() -> None:
    """The book's one figure style: seaborn's whitegrid theme, the colorblind palette, every text at least
    :data:`FONT_PT` points, figures :data:`TEXT_WIDTH` inches wide at :data:`DPI`, constrained layout."""
    import matplotlib as mpl
    import seaborn as sns
    sns.set_theme(context="notebook", style="whitegrid", palette=PALETTE)
    sizes = ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize", "ytick.labelsize", "legend.fontsize",
             "legend.title_fontsize", "figure.labelsize")
    mpl.rcParams.update({k: FONT_PT for k in sizes if k in mpl.rcParams})  # figure.labelsize: matplotlib >= 3.6
    mpl.rcParams.update({"figure.titlesize": FONT_PT + 1, "figure.dpi": DPI, "savefig.dpi": DPI,
                         "figure.figsize": (TEXT_WIDTH, 3.6), "figure.constrained_layout.use": True})


def subplots(n: int = 1, height: float = 3.4, **kw):
    """``n`` panels, at most two side by side (more go on further rows), as wide as the text column; returns
    ``(figure, [axes])``. ``height`` is per row, in inches; ``kw`` go to :func:`matplotlib.pyplot.subplots`."""
    import matplotlib.pyplot as plt
    if n < 1:
        raise ConfigError(f"subplots needs at least one panel, got n={n}")
    ncols = min(n, 2)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(TEXT_WIDTH, height * nrows), squeeze=False, **kw)
    axes = list(axes.ravel())
    for ax in axes[n:]:
        ax.remove()
    return fig, axes[:n]


# --- Tables and labels --------------------------------------------------------------------------------------------

def short_hardware(desc: str) -> str:
    """A short device label for tables, e.g. "Intel(R) Xeon(R) Processor @ 2.50GHz (2 threads)" ->
    "Intel Xeon (2 threads)", "NVIDIA H100 80GB HBM3" -> "NVIDIA H100"; the full string belongs in a caption."""
    s = re.sub(r"\((R|TM)\)|\bCPU\b|\bProcessor\b", "", desc)
    s = re.sub(r"@ ?[\d.]+ ?GHz", "", s)
    s = re.sub(r"(NVIDIA \S+) .*", r"\1", s) if s.startswith("NVIDIA") else s
    s = re.sub(r"\b(\d+-Core|\d+-core)\b", "", s)
    return re.sub(r"\s+", " ", s).replace(" )", ")").strip()


def table(df, digits: int | dict = 1, percent=(), index: bool = False, caption: str = ""):
    """A DataFrame for reading (a Styler): floats at ``digits`` decimals (a dict: per column), thousands separators,
    ``percent`` columns (fractions) as percentages, blanks for empty cells, numbers right-aligned, a ``caption`` (what,
    in which units). Headers are words with units ("test accuracy (%)"), never code names."""
    import pandas as pd
    fmt, places = {}, (lambda col: digits.get(col, 1)) if isinstance(digits, dict) else (lambda col: digits)
    for col in df.columns:
        if col in percent:
            fmt[col] = lambda v, d=places(col): "" if pd.isna(v) else f"{100 * v:.{d}f}%"
        elif pd.api.types.is_float_dtype(df[col]):
            fmt[col] = lambda v, d=places(col): "" if pd.isna(v) else f"{v:,.{d}f}"
        elif pd.api.types.is_integer_dtype(df[col]):
            fmt[col] = "{:,}"
    numeric = [c for c in df.columns if c in percent or pd.api.types.is_numeric_dtype(df[c])]
    styler = df.style.format(fmt).set_properties(subset=numeric, **{"text-align": "right"})
    styler = styler.set_caption(caption) if caption else styler
    return styler if index else styler.hide(axis="index")


# --- This run: the live computation of the chosen profile, apart from the references ------------------------------

def _html(item) -> str:
    """An item of :func:`this_run` as HTML: a matplotlib figure (as a PNG), a DataFrame or Styler, or plain text."""
    import base64
    import io
    if hasattr(item, "savefig"):
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        item.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
        plt.close(item)
        return f'<img src="data:image/png;base64,{base64.b64encode(buf.getvalue()).decode()}" alt="this run">'
    if hasattr(item, "to_html"):
        return item.to_html()
    from html import escape

    return f"<p>{escape(str(item))}</p>"


def this_run(profile: str, *items, hardware: str | None = None) -> None:
    """Display the live run of the chosen profile in a block of its own, after the section's reference: folded and
    grey at the smoke profile ("checks that the code runs; the numbers mean nothing"), open at colab and full, where
    it is a real result. ``items``: figures (drawn on their own axes, never beside a reference), tables, text."""
    from html import escape
    from IPython.display import HTML, display
    smoke = profile == "smoke"
    where = escape(hardware or results.hardware()[0])
    title = (f"This run (smoke profile, {where}): checks that the code runs; its numbers mean nothing" if smoke else
             f"This run ({escape(profile)} profile, {where})")
    body = "".join(f'<div class="this-run-item">{_html(i)}</div>' for i in items)
    display(HTML(f'<details class="this-run{" smoke" if smoke else ""}"{"" if smoke else " open"}>'
                 f"<summary>{title}</summary>{body}</details>"))
# --- The chapter frame: a "run it" box after the opening paragraph, a "what we found" list at the end -------------

PROFILES = {
    "smoke": "CPU, offline, tiny data: shows that every cell runs; its numbers mean nothing",
    "colab": "one GPU (a Colab runtime): the chapter's experiments at a size that can show their effect",
    "full": "the paper's scale where one GPU allows it",
}
SMOKE_BUDGET_MIN = 3  # CI fails a chapter whose smoke run takes longer on 2 CPU cores (ci/build_book.py)


def run_box(chapter: str, repo: str, branch: str = "main") -> None:
    """Display the chapter's "run it" note: an Open-in-Colab link to ``book/<chapter>.ipynb`` of ``repo``, what each
    profile does and how long it took where measured (GPU times from the recorded ``book_times_gpu``)."""
    from html import escape
    from IPython.display import HTML, display
    colab = f"https://colab.research.google.com/github/{repo.split('github.com/')[-1]}/blob/{branch}/book/{chapter}.ipynb"
    try:
        gpu = results.load("book_times_gpu")
        sec = gpu["data"]["chapters"].get(chapter)
        gpu_time = (f"{sec / 60:.0f} min on {short_hardware(gpu['provenance']['hardware'])} "
                    f"({gpu['provenance']['date'][:10]})" if sec else "not measured yet")
    except (results.ResultsError, KeyError):
        gpu_time = "not measured yet"
    times = {"smoke": f"under {SMOKE_BUDGET_MIN} min on 2 CPU cores (CI enforces it)", "colab": gpu_time,
             "full": "not measured"}
    rows = "".join(f"<li><code>profile = \"{p}\"</code>: {escape(what)}. Time: {escape(times[p])}.</li>"
                   for p, what in PROFILES.items())
    display(HTML(f'<div class="run-it"><p><strong>Run it.</strong> <a href="{escape(colab)}">Open this chapter in '
                 f'Colab</a> (or the rocket button at the top), choose a GPU runtime and run all cells. The first code '
                 f'cell sets the profile:</p><ul>{rows}</ul></div>'))


def findings(items, hardware: str | None = None) -> None:
    """Display the "what we found" list: ``items`` are Markdown sentences that state results in numbers; ``hardware``
    names where the numbers were measured (shown once, below the list)."""
    from IPython.display import Markdown, display
    items = [i for i in items if i]
    body = "\n".join(f"- {i}" for i in items) if items else "- Nothing recorded yet: `bash ci/cpu_reference.sh`."
    display(Markdown(body + (f"\n\n*Measured on {hardware}.*" if hardware else "")))


def run_caption(what: str = "computed in this run", device: str | None = None) -> str:
    """``"computed in this run on <hardware>"``: the label of every number a chapter computes live."""
    desc, _ = results.hardware(device)
    return f"{what} on {desc}"


def say(text: str) -> None:
    """Display a sentence (Markdown) as a paragraph of the page: a report's verdict, a computed fact."""
    from IPython.display import Markdown, display
    display(Markdown(text))


def show_caption(text: str) -> None:
    """Display ``text`` as a small italic figure caption (Markdown, so it renders in the book and in Jupyter)."""
    from IPython.display import Markdown, display
    display(Markdown(f"*{text}*"))


def stage_table(config: ModelConfig | str):
    """The Table 4 view of a config (a DataFrame: Stage, Operator, Stride, #Channels, #Layers), from
    :func:`ev2lib.summary.stage_rows`: stage 0 the stem, the last row the head (stride "-"), as in the paper."""
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


def plot_stage_costs(df, hue: str = "variant", title: str = ""):
    """Three bar panels (params, MACs, activation memory) per Table 4 stage, one colour per ``hue`` value, two
    panels a row; the panel titles name the quantity and the legend fills the empty fourth quarter. Keep ``title``
    short and say where the numbers came from in a caption below (:func:`show_caption`)."""
    import seaborn as sns
    metrics = ["params (M)", "MACs (G)", "activation memory (MiB)"]
    fig, axes = subplots(3, height=3.0)
    for ax, m in zip(axes, metrics):
        sns.barplot(data=df, x="stage", y=m, hue=hue if hue in df else None, ax=ax)
        ax.set(xlabel="stage (Table 4 numbering)", ylabel="", title=m)
        if ax.get_legend() is not None:
            handles, labels = ax.get_legend_handles_labels()
            ax.get_legend().remove()
    if hue in df:
        fig.legend(handles, labels, title=hue, loc="center", bbox_to_anchor=(0.75, 0.25))
    if title:
        fig.suptitle(title)
    return fig


def explorer(fn, static: bool = True, **controls):
    """An ``ipywidgets.interactive`` explorer of ``fn(**controls)``, plus a static rendering at the controls'
    defaults (the static book has no kernel: its page always shows a real table and figure). Returns the widget."""
    import ipywidgets as widgets
    from IPython.display import Markdown, display
    w = widgets.interactive(fn, **controls)
    display(w)
    if static:
        # The controls' values as first rendered (ipywidgets 7 fills ``w.kwargs`` only once a kernel displays it).
        defaults = {c._kwarg: c.value for c in w.kwargs_widgets}
        shown = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
        display(Markdown(f"**Static view** at the default settings ({shown}); run the chapter to move the controls."))
        fn(**defaults)
    return w
