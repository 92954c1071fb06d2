"""ev2lib.stats against SciPy: the t quantile and interval, Kendall's tau and its exact null distribution, the
permutation test of a subset's mean."""
import math
import random
import statistics

import pytest
from scipy import stats as sp

from ev2lib import stats
from ev2lib.errors import ConfigError


@pytest.mark.parametrize("df", [1, 2, 3, 4, 5, 7, 10, 11, 20, 30, 100, 1000])
def test_t_quantile_and_cdf_equal_scipys(df):
    for p in (0.5001, 0.6, 0.9, 0.95, 0.975, 0.995, 0.9999):
        assert stats.t_quantile(p, df) == pytest.approx(sp.t.ppf(p, df), rel=1e-9, abs=1e-10)
        assert stats.t_quantile(1 - p, df) == pytest.approx(sp.t.ppf(1 - p, df), rel=1e-9, abs=1e-10)
    for t in (-30.0, -2.5, -0.1, 0.0, 0.7, 4.303, 50.0):
        assert stats.t_cdf(t, df) == pytest.approx(sp.t.cdf(t, df), rel=1e-10, abs=1e-14)


@pytest.mark.parametrize("n", [2, 3, 5, 12, 40])  # 12 and 40: beyond any short table of t quantiles
def test_interval_equals_scipys_t_interval(n):
    rng = random.Random(n)
    values = [rng.gauss(0.01, 0.02) for _ in range(n)]
    iv = stats.interval(values)
    lo, hi = sp.t.interval(0.95, n - 1, loc=statistics.fmean(values), scale=sp.sem(values))
    assert iv["n"] == n and iv["mean"] == pytest.approx(statistics.fmean(values))
    assert iv["ci95"] == pytest.approx([lo, hi], rel=1e-9)
    assert stats.interval([0.3])["ci95"] is None and stats.interval([])["n"] == 0


def test_paired_pairs_by_seed_and_direction_reads_the_interval():
    a = [{"seed": s, "acc": v} for s, v in ((0, 0.70), (1, 0.72), (2, 0.71), (3, None))]
    b = [{"seed": s, "acc": v} for s, v in ((2, 0.60), (0, 0.61), (1, 0.62), (3, 0.5))]
    d = stats.paired(a, b, "acc")  # seed 3 left out: one of its runs has no value (e.g. diverged)
    assert d["n"] == 3 and d["values"] == pytest.approx([0.09, 0.10, 0.11]) and stats.direction(d) == 1
    r = stats.paired(a, b, "acc", lambda x, y: x / y)
    assert r["values"][0] == pytest.approx(0.70 / 0.61)
    assert stats.direction({"ci95": [-0.01, 0.02]}) == 0 and stats.direction({"ci95": [-0.3, -0.1]}) == -1
    assert stats.direction({"ci95": None}) == 0 and stats.direction(None) == 0


def test_kendall_tau_equals_scipys_tau_b_with_and_without_ties():
    rng = random.Random(0)
    for n in (2, 3, 8, 15):
        for _ in range(20):
            x = [rng.randint(0, 4) for _ in range(n)]  # ties
            y = [rng.random() for _ in range(n)]
            want = sp.kendalltau(x, y).statistic
            got = stats.kendall_tau(x, y)
            assert (math.isnan(got) and math.isnan(want)) or got == pytest.approx(want, abs=1e-12)
    with pytest.raises(ConfigError, match="same length"):
        stats.kendall_tau([1, 2], [1])


@pytest.mark.parametrize("n", [3, 5, 8, 10])
def test_kendall_tau_p_is_scipys_exact_one_sided_p(n):
    rng = random.Random(n)
    for _ in range(15):
        y = rng.sample(range(n), n)
        tau = stats.kendall_tau(range(n), y)
        want = sp.kendalltau(range(n), y, method="exact", alternative="greater").pvalue
        assert stats.kendall_tau_p(tau, n) == pytest.approx(want, rel=1e-9)


def test_kendall_tau_critical_value_is_the_smallest_tau_chance_reaches_5_percent_of_the_time():
    for n in (5, 8, 10):
        crit = stats.kendall_tau_critical(n)
        assert stats.kendall_tau_p(crit, n) <= 0.05 < stats.kendall_tau_p(crit - 4 / (n * (n - 1)), n)
    assert stats.kendall_tau_critical(8) == pytest.approx(16 / 28)  # tau 0.571 for 8 items


def test_subset_test_enumerates_as_scipys_exact_permutation_test():
    values = [0.41, 0.45, 0.43, 0.50, 0.47, 0.44, 0.49, 0.42, 0.48]
    subset = [3, 6, 8]  # the three largest
    sub = [values[i] for i in subset]
    rest = [v for i, v in enumerate(values) if i not in subset]
    want = sp.permutation_test((sub, rest), lambda a, b: statistics.fmean(a) - statistics.fmean(b),
                               permutation_type="independent", alternative="two-sided", n_resamples=10**6).pvalue
    assert stats.subset_test(values, subset) == pytest.approx(want, rel=1e-9)
    assert stats.subset_test(values, subset) < 0.05 < stats.subset_test(values, [0, 3, 5])
    big = list(range(30))  # C(30, 10) subsets: sampled, close to the exact answer for the 10 smallest
    assert stats.subset_test(big, range(10), draws=4000) < 0.01
    with pytest.raises(ConfigError):
        stats.subset_test(values, [])
