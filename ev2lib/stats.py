"""The statistics every comparison in the book uses, pure Python (checked against SciPy by the tests): 95 %
Student-t intervals over seeds (:func:`interval`, :func:`paired`, :func:`direction`), :func:`time_to_accuracy`,
Kendall's tau with its exact chance (:func:`kendall_tau_p`), and :func:`subset_test`."""
from __future__ import annotations

import itertools
import math
import random
import statistics

from .errors import ConfigError


# --- Student's t --------------------------------------------------------------------------------------------------

def _betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0 or x >= 1.0:
        return 0.0 if x <= 0.0 else 1.0
    if x > (a + 1) / (a + b + 2):  # the fraction converges fast only below the mean: use the symmetry
        return 1.0 - _betainc(b, a, 1.0 - x)
    log_front = a * math.log(x) + b * math.log1p(-x) - (math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b))
    tiny, f, c, d = 1e-300, 1.0, 1.0, 0.0
    for i in range(1000):
        m = i // 2
        if i == 0:
            num = 1.0
        elif i % 2 == 0:
            num = m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m))
        else:
            num = -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))
        d = 1.0 + num * d
        d = 1.0 / (d if abs(d) > tiny else tiny)
        c = 1.0 + num / (c if abs(c) > tiny else tiny)
        f *= c * d
        if abs(1.0 - c * d) < 1e-15:
            break
    return math.exp(log_front) * (f - 1.0) / a


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _betainc(df / 2, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` degrees of freedom (bisection on :func:`t_cdf`)."""
    if not 0.0 < p < 1.0 or df <= 0:
        raise ConfigError(f"t_quantile needs 0 < p < 1 and df > 0, got p={p}, df={df}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        hi *= 2
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
        if hi - lo < 1e-12 * max(1.0, hi):
            break
    return (lo + hi) / 2


# --- Intervals over seeds -----------------------------------------------------------------------------------------

def interval(values, level: float = 0.95) -> dict:
    """Mean and ``level`` Student-t interval of ``values``: ``{"mean", "ci95", "n", "values"}`` (``ci95`` is None
    for fewer than 2 values; the key keeps its name at other levels)."""
    values = [float(v) for v in values]
    n = len(values)
    mean = statistics.fmean(values) if values else float("nan")
    if n < 2:
        return {"mean": mean, "ci95": None, "n": n, "values": values}
    half = t_quantile(0.5 + level / 2, n - 1) * statistics.stdev(values) / math.sqrt(n)
    return {"mean": mean, "ci95": [mean - half, mean + half], "n": n, "values": values}


def paired(a: list[dict], b: list[dict], key: str, op=lambda x, y: x - y) -> dict:
    """:func:`interval` of ``op(a[key], b[key])`` over the seeds both lists of runs hold (a run whose value is None is
    left out); ``op`` is a difference by default, e.g. ``lambda x, y: x / y`` for a ratio."""
    other = {r["seed"]: r[key] for r in b if r.get(key) is not None}
    return interval([op(r[key], other[r["seed"]]) for r in a if r.get(key) is not None and r["seed"] in other])


def direction(iv: dict | None) -> int:
    """+1 when the interval lies above 0, -1 when below, 0 when it holds 0 or there is none (one seed)."""
    ci = (iv or {}).get("ci95")
    if not ci:
        return 0
    return 1 if ci[0] > 0 else -1 if ci[1] < 0 else 0


def seconds_to_reach(run: dict, target: float, key: str = "train_seconds") -> float | None:
    """The training seconds (``run["history"][i][key]``) at which a run's validation accuracy first reached
    ``target``; None if it never did."""
    return next((h[key] for h in run["history"] if h["val_acc"] >= target), None)


def time_to_accuracy(fast: dict, base: dict, key: str = "train_seconds") -> dict:
    """Per seed of two cells' runs: (seconds ``base`` needed to reach its own final validation accuracy) / (seconds
    ``fast`` needed to reach it), with its interval; above 1, ``fast`` gets there sooner. ``seeds_never_reached``
    counts the seeds where ``fast`` never did (no ratio exists for them)."""
    ratios, missed, other = [], 0, {run["seed"]: run for run in fast["runs"]}
    for b in base["runs"]:
        t = seconds_to_reach(other[b["seed"]], b["val_acc"], key) if b["seed"] in other else None
        missed += b["seed"] in other and t is None
        if t:
            ratios.append(seconds_to_reach(b, b["val_acc"], key) / t)
    return {**interval(ratios), "seeds_never_reached": missed}


# --- Rank agreement -----------------------------------------------------------------------------------------------

def kendall_tau(x, y) -> float:
    """Kendall's tau-b of two equal-length sequences by the O(n^2) pair count: C concordant, D discordant, Tx, Ty tied
    in x or y only, ``(C - D) / sqrt((C + D + Tx) (C + D + Ty))``; NaN when either sequence is constant."""
    x, y = list(x), list(y)
    if len(x) != len(y) or len(x) < 2:
        raise ConfigError(f"kendall_tau needs two sequences of the same length >= 2, got {len(x)} and {len(y)}")
    c = d = tx = ty = 0
    for i, j in itertools.combinations(range(len(x)), 2):
        sx, sy = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
        if sx and sy:
            c, d = c + (sx == sy), d + (sx != sy)
        else:
            tx, ty = tx + (not sx and sy != 0), ty + (not sy and sx != 0)
    denom = math.sqrt((c + d + tx) * (c + d + ty))
    return (c - d) / denom if denom else float("nan")


def _inversion_counts(n: int) -> list[int]:
    """How many permutations of n items have k discordant pairs, k = 0 .. n(n-1)/2 (the Mahonian numbers)."""
    counts = [1]
    for m in range(2, n + 1):  # inserting the m-th item adds 0 .. m-1 inversions
        new = [0] * (len(counts) + m - 1)
        for k, c in enumerate(counts):
            for extra in range(m):
                new[k + extra] += c
        counts = new
    return counts


def kendall_tau_p(tau: float, n: int) -> float:
    """P(tau >= ``tau``) between two unrelated rankings of ``n`` distinct items, one-sided: the exact fraction of the n!
    permutations (tau = 1 - 4 D / (n (n - 1)) with D discordant pairs)."""
    if n < 2:
        raise ConfigError(f"kendall_tau_p needs n >= 2, got {n}")
    pairs, counts = n * (n - 1) // 2, _inversion_counts(n)
    most = math.floor((1 - tau) * pairs / 2 + 1e-9)  # tau >= t  <=>  D <= (1 - t) pairs / 2
    return sum(counts[: max(most, -1) + 1]) / math.factorial(n)


def kendall_tau_critical(n: int, alpha: float = 0.05) -> float:
    """The smallest tau that unrelated rankings of ``n`` items reach at most ``alpha`` of the time."""
    pairs = n * (n - 1) // 2
    taus = sorted({1 - 4 * d / (n * (n - 1)) for d in range(pairs + 1)})
    return next(t for t in taus if kendall_tau_p(t, n) <= alpha)


# --- A subset against the whole -----------------------------------------------------------------------------------

def subset_test(values, subset, draws: int = 20000, seed: int = 0) -> float:
    """Two-sided permutation test of the mean of ``values[subset]`` against random subsets of the same size: twice the
    smaller tail (at most 1), as SciPy's ``permutation_test``; every subset when there are at most ``draws``, else
    ``draws`` samples."""
    values, k = [float(v) for v in values], len(subset)
    if not 0 < k < len(values):
        raise ConfigError(f"subset_test needs a subset of 1 .. {len(values) - 1} of the {len(values)} values, got {k}")
    observed, eps = statistics.fmean(values[i] for i in subset), 1e-12
    if math.comb(len(values), k) <= draws:
        subsets = list(itertools.combinations(range(len(values)), k))
    else:
        rng = random.Random(seed)
        subsets = [rng.sample(range(len(values)), k) for _ in range(draws)]
    means = [statistics.fmean(values[i] for i in s) for s in subsets]
    above = sum(m >= observed - eps for m in means) / len(means)
    below = sum(m <= observed + eps for m in means) / len(means)
    return min(1.0, 2 * min(above, below))
