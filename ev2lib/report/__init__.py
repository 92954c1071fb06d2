"""What the recorded results say, in words generated from the data and its intervals, never typed: a difference
whose 95 % interval holds 0 is "no clear difference", one seed has no interval and says so. One module a chapter
(``report.ablations``, ...); no run imports them, so changing them leaves every result current.
"""
from __future__ import annotations

from .. import results
from ..stats import direction


def pct(x: float | None, digits: int = 1) -> str:
    """A fraction as a percentage, ``0.714 -> "71.4%"``; None as an en dash."""
    return "–" if x is None else f"{100 * x:.{digits}f}%"


def points(iv: dict | None, digits: int = 1) -> str:
    """A paired difference of fractions in percentage points with its interval and seeds, e.g.
    ``"+1.0 pt [−2.6, +4.7], 3 seeds"``."""
    if not iv or not iv.get("n"):
        return "not measured"
    ci = iv.get("ci95")
    span = f" [{100 * ci[0]:+.{digits}f}, {100 * ci[1]:+.{digits}f}]" if ci else ""
    return f"{100 * iv['mean']:+.{digits}f} pt{span}, {_seeds(iv['n'])}".replace("-", "−")


def times(iv: dict | None, digits: int = 2) -> str:
    """A paired ratio with its interval, e.g. ``"0.73× [0.54, 0.92], 3 seeds"``."""
    if not iv or not iv.get("n"):
        return "not measured"
    ci = iv.get("ci95")
    span = f" [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]" if ci else ""
    return f"{iv['mean']:.{digits}f}×{span}, {_seeds(iv['n'])}"


def _seeds(n: int) -> str:
    return f"{n} seed{'s' if n != 1 else ''}"


def verdict(iv: dict | None, more: str = "higher", less: str = "lower", around: float = 0.0) -> str:
    """``more`` / ``less`` when the interval lies above / below ``around`` (0 for a difference, 1 for a ratio), "no
    clear difference" when it holds it, "one seed: no interval" with one value, "not measured" without any."""
    if not iv or not iv.get("n"):
        return "not measured"
    if not iv.get("ci95"):
        return "one seed: no interval"
    shifted = {"ci95": [v - around for v in iv["ci95"]]}
    return {1: more, -1: less, 0: "no clear difference"}[direction(shifted)]


def difference(iv: dict | None, more: str = "higher", less: str = "lower") -> str:
    """:func:`points` followed by its :func:`verdict`: ``"+1.0 pt [−2.6, +4.7], 3 seeds: no clear difference"``."""
    return f"{points(iv)}: {verdict(iv, more, less)}" if iv and iv.get("n") else points(iv)


def ratio(iv: dict | None, more: str = "more", less: str = "less") -> str:
    """:func:`times` followed by its :func:`verdict` against 1."""
    return f"{times(iv)}: {verdict(iv, more, less, around=1.0)}" if iv and iv.get("n") else times(iv)


def source(record: dict | None) -> str:
    """Where a reference was measured, for a caption: ``"reference: <hardware>, profile ..., commit ..."``; a
    reference not recorded yet says so."""
    return f"reference: {results.caption(record)}" if record else "no reference recorded yet"


def kind(record: dict | None) -> str:
    """ "GPU" or "CPU": which kind of reference a record is (for sentences)."""
    return "GPU" if record and record["provenance"]["device_type"] == "cuda" else "CPU"
