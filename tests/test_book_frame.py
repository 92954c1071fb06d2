"""ev2lib.book's chapter frame and figure style: legible figures at the book's text width, readable tables and
labels, the "run it" box and the "what we found" list."""
from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from matplotlib.font_manager import FontProperties  # noqa: E402

from ev2lib import book, results  # noqa: E402

COLUMN_PX = 688  # the rendered book's text column on a 1280 px screen (tests/test_book.py measures the real page)


@pytest.fixture(autouse=True)
def fresh_style():
    with matplotlib.rc_context():
        book.style()
        yield
    plt.close("all")


@pytest.fixture
def displayed(monkeypatch) -> list:
    """What the book helpers pass to IPython's display(), in order."""
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj.data))
    return shown


def _png_width(fig) -> int:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")  # what the inline backend shows
    buf.seek(0)
    return plt.imread(buf).shape[1]


def test_style_text_is_at_least_body_size():
    sizes = {k: FontProperties(size=matplotlib.rcParams[k]).get_size_in_points()
             for k in ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize", "ytick.labelsize",
                       "legend.fontsize", "figure.titlesize")}
    assert min(sizes.values()) >= book.FONT_PT, sizes
    # FONT_PT points at DPI, shown 1:1, is at least the book's 16 px body text.
    assert book.FONT_PT * book.DPI / 72 >= 16


@pytest.mark.parametrize("n, shape", [(1, (1, 1)), (2, (1, 2)), (3, (2, 2)), (4, (2, 2)), (5, (3, 2))])
def test_subplots_puts_at_most_two_panels_side_by_side(n, shape):
    fig, axes = book.subplots(n)
    assert len(axes) == n == len(fig.axes)  # the spare slot of an odd count is removed
    cols = {round(ax.get_position().x0, 3) for ax in axes}
    rows = {round(ax.get_position().y0, 3) for ax in axes}
    assert (len(rows), len(cols)) == shape


def test_a_two_panel_figure_fits_the_text_column_at_natural_size():
    fig, axes = book.subplots(2)
    for ax in axes:
        ax.plot([1, 2, 3], [3, 1, 2], label="progressive")
        ax.set(xlabel="training time, s", ylabel="validation accuracy", title="a title")
        ax.legend()
    assert _png_width(fig) <= COLUMN_PX
    wide, _ = plt.subplots(1, 3, figsize=(15, 4))  # what the style forbids: shrunk to fit, its text gets small
    assert _png_width(wide) > COLUMN_PX / 0.96


def test_subplots_rejects_no_panels():
    with pytest.raises(ValueError, match="at least one panel"):
        book.subplots(0)


@pytest.mark.parametrize("desc, short", [
    ("Intel(R) Xeon(R) Processor @ 2.50GHz (2 threads)", "Intel Xeon (2 threads)"),
    ("Intel(R) Xeon(R) Processor (2 threads)", "Intel Xeon (2 threads)"),
    ("AMD EPYC 7B13 64-Core Processor (16 threads)", "AMD EPYC 7B13 (16 threads)"),
    ("Intel(R) Xeon(R) Processor (1 thread)", "Intel Xeon (1 thread)"),
    ("NVIDIA H100 80GB HBM3", "NVIDIA H100"),
    ("NVIDIA H200", "NVIDIA H200"),
])
def test_short_hardware(desc, short):
    assert book.short_hardware(desc) == short


def test_table_formats_numbers_for_reading():
    df = pd.DataFrame({"model": ["V2-S", "B6"], "top-1": [84.3, 84.6], "params": [21_458_488, 43_040_704],
                       "acc": [0.8123, 0.5], "ratio": [1.23456, float("nan")]})
    html = book.table(df, digits=1, percent=("acc",), caption="Two models (top-1 in %)").to_html()
    assert "84.300000" not in html and ">84.3<" in html and ">84.6<" in html  # one precision a column
    assert ">21,458,488<" in html and ">81.2%<" in html and ">1.2<" in html
    assert "nan" not in html.lower() and "text-align: right" in html and "Two models (top-1 in %)" in html


def test_run_box_links_colab_and_says_what_is_not_measured(tmp_path, monkeypatch, displayed):
    monkeypatch.setenv("EV2_RESULTS_DIR", str(tmp_path))
    book.run_box("ablations", "https://github.com/someone/efficientnetv2-book")
    (html,) = displayed
    assert ("https://colab.research.google.com/github/someone/efficientnetv2-book/blob/main/book/ablations.ipynb"
            in html)
    assert html.count("<li>") == 3 and "not measured yet" in html and 'class="run-it"' in html


def test_run_box_shows_a_recorded_gpu_time(tmp_path, monkeypatch, displayed):
    monkeypatch.setenv("EV2_RESULTS_DIR", str(tmp_path))
    results.save("book_times_gpu", {"chapters": {"bottlenecks": 1260.0}}, config={}, command="bash ci/gpu_book.sh",
                 profile="colab", directory=tmp_path)
    book.run_box("bottlenecks", "https://github.com/someone/efficientnetv2-book")
    book.run_box("ablations", "https://github.com/someone/efficientnetv2-book")  # a chapter the record lacks
    colab = [html.split('profile = "colab"')[1].split("</li>")[0] for html in displayed]  # the colab row
    assert "21 min on" in colab[0] and "not measured yet" in colab[1]


def test_findings_lists_items_and_says_when_nothing_is_recorded(displayed):
    book.findings(["V2 trains **1.5×** faster.", None], hardware="Intel Xeon (2 threads)")
    book.findings([])
    assert displayed[0] == "- V2 trains **1.5×** faster.\n\n*Measured on Intel Xeon (2 threads).*"
    assert "Nothing recorded yet" in displayed[1]
