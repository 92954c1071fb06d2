"""ev2lib.report.nas: each verdict of the NAS chapter, with a control where the effect is absent."""
import math
import random

import pytest

from ev2lib import stats
from ev2lib.nas import PAPER_V, PAPER_W, Reward
from ev2lib.report import nas as rn


def _choice(block, expansion=4, kernel=3, layers=1):
    return {"block": block, "expansion": expansion, "kernel": kernel, "layers": layers}


def _trials(accuracies):
    return [{"trial": i, "accuracy": a} for i, a in enumerate(accuracies)]


def test_arch_code():
    assert rn.arch_code([_choice("fused", 1, 3, 2), _choice("mbconv", 6, 5, 1)]) == "F1k3×2 M6k5×1"


def test_noise_separates_architectures_only_when_they_spread_beyond_it():
    archs = [{"runs": [{"accuracy": a} for a in accuracies]} for accuracies in ((0.49, 0.50, 0.51), (0.59, 0.60, 0.61))]
    wide = rn.noise(_trials([0.40, 0.45, 0.50, 0.55, 0.60]), archs)
    assert wide["std"] == pytest.approx(0.01) and wide["apart"] == pytest.approx(1.96 * math.sqrt(2) * 0.01)
    assert wide["ratio"] > 2 and "separates" in wide["words"] and "2.8 points" in wide["words"]
    assert wide["pairs_apart"] == 1.0  # every pair is 5 points or more apart
    middle = rn.noise(_trials([0.48, 0.50, 0.52, 0.50]), archs)  # 1.6x the noise: not yet twice it
    assert 1 < middle["ratio"] < 2 and "little more than the proxy's noise" in middle["words"]
    narrow = rn.noise(_trials([0.500, 0.505, 0.495, 0.502]), archs)  # the control: a spread inside the noise
    assert narrow["ratio"] < 1 and "less than the proxy's noise" in narrow["words"]
    assert "separates" not in narrow["words"]


def _validity_rows(proxy_acc, long_acc, step_times=None):
    reward = Reward(ref_step_time=1.0, ref_params=1.0)
    step_times = step_times or [1.0] * len(proxy_acc)
    return [{"proxy_accuracy": p, "long_accuracy": q, "step_time": s, "params": 1.0,
             "proxy_reward": reward(p, s, 1.0), "long_reward": reward(q, s, 1.0)}
            for p, q, s in zip(proxy_acc, long_acc, step_times)]


TASK, LONG = {"train_images": 4000, "epochs": 8}, {"train_images": 12000, "epochs": 10}


def test_validity_agrees_when_the_rankings_do_and_not_otherwise():
    same = rn.validity(_validity_rows([0.1 + 0.1 * i for i in range(8)], [0.2 + 0.1 * i for i in range(8)]), TASK, LONG)
    assert same["tau"] == 1 and same["p"] == pytest.approx(1 / math.factorial(8)) and same["agrees"]
    assert same["critical"] == stats.kendall_tau_critical(8) and "agreement beyond chance" in same["words"]
    unrelated = rn.validity(_validity_rows(list(range(1, 9)), [4, 7, 2, 8, 1, 6, 3, 5]), TASK, LONG)
    assert not unrelated["agrees"] and unrelated["p"] > 0.05 and "no clear agreement" in unrelated["words"]
    assert "12,000 images × 10 epochs instead of 4,000 × 8" in unrelated["words"]


def test_validity_names_the_shared_factor_that_inflates_the_reward():
    # Accuracies unrelated between the runs, step times 1x .. 1000x: the shared S**w orders both rewards alike.
    proxy_acc, long_acc = [0.50, 0.52, 0.51, 0.53] * 2, [0.53, 0.50, 0.52, 0.51] * 2
    rows = _validity_rows(proxy_acc, long_acc, [10.0 ** i for i in range(8)])
    va = rn.validity(rows, TASK, LONG)
    assert va["tau"] < 0.2 and va["tau_reward"] > 0.7 and va["tau_shared"] > 0.7
    flat = rn.validity(_validity_rows(proxy_acc, long_acc), TASK, LONG)  # the control: no shared factor to lift it
    assert flat["tau_reward"] == pytest.approx(flat["tau"]) and math.isnan(flat["tau_shared"])


def test_validity_of_three_items_never_claims_agreement():
    va = rn.validity(_validity_rows([0.1, 0.2, 0.3], [0.4, 0.5, 0.6]), TASK, LONG)
    assert va["tau"] == 1 and not va["agrees"] and va["p"] == pytest.approx(1 / 6)


def _measured(accuracy, step_time, params, trial):
    r = Reward(ref_step_time=1.0, ref_params=1.0)
    return {"trial": trial, "accuracy": accuracy, "step_time": step_time, "params": params,
            "reward": r(accuracy, step_time, params), "choices": [_choice("fused"), _choice("mbconv")]}


def test_search_names_the_winner_and_the_grid_moves_it():
    trials = [_measured(0.60, 4.0, 1.0, 0), _measured(0.58, 1.0, 1.0, 1), _measured(0.40, 0.1, 1.0, 2)]
    out = rn.search(trials, {"ref_step_time": 1.0, "ref_params": 1.0})
    assert "highest reward went to trial 1 (F4k3×1 M4k3×1: 58.0%" in out["words"] and "40.0–60.0%" in out["words"]
    grid = {(g["w"], g["v"]): g["winner"] for g in out["rows"]}
    # Accuracy alone (w = v = 0) picks trial 0; the paper's w trial 1; four times it the fastest, trial 2.
    assert len(grid) == 25 and grid[(0, 0)] == 0 and grid[(PAPER_W, PAPER_V)] == 1 and grid[(4 * PAPER_W, 0)] == 2
    assert "trial 1 wins" in out["grid_words"] and "3 trials win" in out["grid_words"]


def _patterned(lean: bool, n=50, seed=0):
    """Trials with four stages; where ``lean``, the 10 highest rewards are V2-S-like (fused early, MBConv last)."""
    rng, out = random.Random(seed), []
    for i in range(n):
        v2s = lean and i < 10
        blocks = ["fused"] * 3 + ["mbconv"] if v2s else [rng.choice(("fused", "mbconv")) for _ in range(4)]
        out.append({"trial": i, "reward": 1.0 - i / n, "choices": [_choice(b) for b in blocks]})
    return out


def test_pattern_sees_v2s_pattern_only_where_the_top_trials_have_it():
    lean = rn.pattern(_patterned(True), trusted=True)
    assert lean["k"] == 10 and lean["early"]["top"] == 1 and lean["late"]["top"] == 0
    assert lean["moved"] == ["early", "late"] and lean["early"]["p"] < 0.05 and lean["late"]["p"] < 0.05
    assert lean["words"].endswith("beyond what random sets show.")
    doubt = rn.pattern(_patterned(True), trusted=False)
    assert "no evidence" in doubt["words"]
    none = rn.pattern(_patterned(False), trusted=True)  # the control: rewards unrelated to the blocks
    assert none["moved"] == [] and "does not reproduce" in none["words"]
