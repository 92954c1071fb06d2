"""What the NAS chapter's records say (paper §3.3: the reward A·Sʷ·Pᵛ; V2-S's Fused-MBConv early, MBConv late):
the proxy's noise and validity, the search's winner, how w and v move it, whether the best trials lean toward V2-S.
Inputs: records' ``data`` lists or a live run's; each analysis returns its numbers and its sentence (``"words"``)."""
from __future__ import annotations

import math
from statistics import fmean, stdev, variance

from ..nas import PAPER_V, PAPER_W, Reward
from ..stats import kendall_tau, kendall_tau_critical, kendall_tau_p, subset_test


def arch_code(choices) -> str:
    """Stage choices as F/M (Fused-MBConv / MBConv), expansion, k kernel, × layers: ``"F1k3×2 M4k5×1"``."""
    return " ".join(f"{'MF'[c['block'] == 'fused']}{c['expansion']}k{c['kernel']}×{c['layers']}" for c in choices)


def noise(trials, archs) -> dict:
    """Seed noise (pooled over ``archs``: ``{"runs": [{"accuracy"}, ...]}``) against the spread of single-seed
    ``trials``: twice the noise (3/4 of the variance between architectures) separates them; two trials are told apart
    beyond 1.96·√2 noise std (95 % of a difference of two noisy values stays within it)."""
    std = math.sqrt(fmean(variance([r["accuracy"] for r in a["runs"]]) for a in archs))
    acc, apart = [t["accuracy"] for t in trials], 1.96 * math.sqrt(2) * std
    ratio = stdev(acc) / std if std else math.inf
    pairs = [abs(a - b) > apart for i, a in enumerate(acc) for b in acc[i + 1:]]
    words = (f"{len(archs)} architecture{'s' * (len(archs) > 1)} under {len(archs[0]['runs'])} seeds score with "
             f"a seed-to-seed std of {100 * std:.1f} points of proxy accuracy; the {len(acc)} searched ones spread "
             f"{100 * stdev(acc):.1f} points, {ratio:.1f}× that noise: ") + (
        f"the proxy separates architectures, but two single-seed trials closer than {100 * apart:.1f} points "
        f"(1.96·√2 noise std) are not told apart; {fmean(pairs):.0%} of the pairs differ by more." if ratio >= 2 else
        f"architectures differ by {'less' if ratio < 1 else 'little more'} than the proxy's noise.")
    return {"std": std, "ratio": ratio, "apart": apart, "pairs_apart": fmean(pairs), "words": words}


def validity(rows, task: dict, long: dict) -> dict:
    """Kendall's τ of the proxy's and the longer run's accuracy rankings (``proxy_validity`` rows), its one-sided
    chance between unrelated rankings against 5 %; τ on the reward, and τ of the factor Sʷ·Pᵛ both rewards share
    (the longer run reuses each architecture's step time and size) against the longer run's reward."""
    n, col = len(rows), lambda k: [r[k] for r in rows]
    tau, crit = kendall_tau(col("proxy_accuracy"), col("long_accuracy")), kendall_tau_critical(max(n, 4))
    p, agrees = 1.0 if math.isnan(tau) else kendall_tau_p(tau, n), n > 3 and tau >= crit  # (NaN: a constant ranking)
    on_reward, shared = (kendall_tau(x, col("long_reward")) for x in (col("proxy_reward"), [
        r["proxy_reward"] / r["proxy_accuracy"] for r in rows]))
    words = (f"Trained again for longer ({long['train_images']:,} images × {long['epochs']} epochs instead of "
             f"{task['train_images']:,} × {task['epochs']}), {n} searched architectures rank by accuracy as under the "
             f"proxy with Kendall's τ = {tau:.2f}; unrelated rankings reach that {p:.0%} of the time (the 5% level: "
             f"{crit:.2f}{'' if n > 3 else ' for 4 items'}): " + ("agreement beyond chance (coarse: few points)."
             if agrees else "no clear agreement.") + f" On the reward τ = {on_reward:.2f}, but inflated: Sʷ·Pᵛ, "
             f"which both rewards share, ranks the longer run's reward with τ = {shared:.2f} by itself.")
    return {"tau": tau, "p": p, "critical": crit, "agrees": agrees, "tau_reward": on_reward, "tau_shared": shared,
            "words": words}


def search(trials, reward: dict, scales=(0, 0.5, 1, 2, 4)) -> dict:
    """The accuracy range and the highest-reward trial (S and P relative to the reference model's); and the winner
    for each (w, v) at ``scales`` times the paper's, recomputed from the logged measurements (``rows``)."""
    acc, win, rows = [t["accuracy"] for t in trials], max(trials, key=lambda t: t["reward"]), []
    for w, v in ((a * PAPER_W, b * PAPER_V) for a in scales for b in scales):
        r = Reward(w, v, reward["ref_step_time"], reward["ref_params"])
        best = max(trials, key=lambda t: r(t["accuracy"], t["step_time"], t["params"]))
        rows.append({"w": w, "v": v, "winner": best["trial"], "accuracy": best["accuracy"]})
    paper = next((g["winner"] for g in rows if (g["w"], g["v"]) == (PAPER_W, PAPER_V)), None)
    s, p = win["step_time"] / reward["ref_step_time"], win["params"] / reward["ref_params"]
    return {"rows": rows, "words": (
        f"Over {len(trials)} trials the proxy accuracy ranged {100 * min(acc):.1f}–{100 * max(acc):.1f}%; the "
        f"highest reward went to trial {win['trial']} ({arch_code(win['choices'])}: {100 * win['accuracy']:.1f}%, "
        f"step time {s:.2f}× and parameters {p:.2f}× the reference model's)."), "grid_words": f"At the paper's w and "
        f"v trial {paper} wins; over {len(rows)} pairs (w, v) from {min(scales):g} to {max(scales):g}× the paper's, "
        f"{len({g['winner'] for g in rows})} trials win."}


def pattern(trials, trusted: bool, k: int | None = None) -> dict:
    """Fused-MBConv's share in the early stages (all but the last) and in the last, for the ``k`` highest rewards and
    for all trials, with :func:`ev2lib.stats.subset_test`'s two-sided p of the top ``k`` among random sets of ``k``.
    ``trusted``: the proxy's noise and validity hold (:func:`noise` ratio ≥ 2 and :func:`validity` agrees)."""
    k, n, out = k or min(10, max(1, len(trials) // 5)), len(trials[0]["choices"]), {}
    top = sorted(range(len(trials)), key=lambda i: -trials[i]["reward"])[:k]
    for part, pick in (("early", slice(None, -1)), ("late", slice(-1, None))):
        vals = [fmean(c["block"] == "fused" for c in t["choices"][pick]) for t in trials]
        out[part] = {"top": fmean(vals[i] for i in top), "all": fmean(vals), "p": subset_test(vals, top)}
    (e, last), sign = out.values(), {"early": 1, "late": -1}  # V2-S: fused early (more), MBConv late (less fused)
    moved = [p for p, d in out.items() if sign[p] * (d["top"] - d["all"]) > 0 and d["p"] < 0.05]
    words = (f"The top {k} trials by reward use Fused-MBConv in {e['top']:.0%} of stages 1–{n - 1} and "
             f"{last['top']:.0%} of stage {n}, against {e['all']:.0%} and {last['all']:.0%} over all {len(trials)} "
             f"(permutation test of the top {k}: p = {e['p']:.2f} and {last['p']:.2f}). ")
    words += (f"The {' and '.join(moved)} stages lean toward V2-S's pattern beyond what random sets show" + (
        "." if trusted else ", but with the proxy's noise or validity not established that is no evidence that such "
        "architectures train better.") if moved else "Neither differs beyond what random sets of trials show: V2-S's "
        "pattern does not reproduce here.")
    return {**out, "k": k, "moved": moved, "words": words}
