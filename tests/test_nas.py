"""Training-aware NAS (paper §3.3): search space, reward and its normalisation, proxy evaluation, strategies, the
resumable search log and the CLI."""
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import ev2lib
import ev2lib.bench
import ev2lib.train
from ev2lib.configs import get_config
from ev2lib.data import shared_cifar10_path
from ev2lib.errors import ConfigError, SearchLogError
from ev2lib.nas import Reward, SearchSpace, StageChoice, search_space
from ev2lib.proxy import (LONG_PROXIES, PROXIES, evaluate_candidate, measure, proxy_noise, proxy_train, proxy_validity,
                          reward_relative_to, spread_sample)
from ev2lib.search import pareto_front, read_log, run_search, strategy
from ev2lib.stats import kendall_tau

ROOT = Path(__file__).resolve().parent.parent
SPACE = search_space(width=0.5)
# A proxy task that trains nothing heavy: tiny timing and (where used) generated data.
TINY = replace(PROXIES["smoke"], data="synthetic:128", train_images=96, val_images=32, eval_images=64, batch_size=32,
               timing_batch=4, timing_repeats=1)
FIELDS = ("block", "layers", "kernel", "expansion")


def fake_train(config, proxy):
    """A deterministic stand-in accuracy (no training), so the search machinery is tested in seconds; the real
    trainer runs in the CLI and Ray tests below."""
    return random.Random(repr(config.stages)).uniform(0.1, 0.9)


def n_params(config):
    return sum(p.numel() for p in ev2lib.create_model(config, num_classes=10).parameters())


@pytest.fixture
def fake_timing(monkeypatch):
    """bench.time_calls returning [3, 1, 2] x (params / 1e7) seconds (so the median of 3 is 2x, of 1 is 3x),
    recording what each train step was built with: (batch, image size, torch threads)."""
    built = []
    real_step = ev2lib.bench.make_train_step

    def make_train_step(model, batch_size, image_size, **kw):
        built.append((batch_size, image_size, torch.get_num_threads()))
        step = real_step(model, batch_size, image_size, **kw)
        return step, sum(p.numel() for p in model.parameters()) / 1e7

    def time_calls(fn_and_unit, repeats, warmup, device, clock=None):
        built[-1] += (getattr(clock, "__name__", None),)  # the clock the proxy times with
        return [k * fn_and_unit[1] for k in (3, 1, 2)][:repeats]

    monkeypatch.setattr(ev2lib.bench, "make_train_step", make_train_step)
    monkeypatch.setattr(ev2lib.bench, "time_calls", time_calls)
    return built


# ------------------------------------------------------------------------------------------------- reward

def test_reward_against_hand_computed_values():
    # A * S^w * P^v with w = -0.07, v = -0.05 (paper §3.3)
    assert Reward()(0.8, 2.0, 4.0) == pytest.approx(0.8 * 2 ** -0.07 * 4 ** -0.05)
    assert Reward()(0.8, 2.0, 4.0) == pytest.approx(0.711074, abs=1e-6)  # 0.8 * 0.952638 * 0.933033
    # normalised by a reference: the reference itself scores its accuracy
    assert Reward(ref_step_time=0.3, ref_params=1e6)(0.7, 0.3, 1e6) == pytest.approx(0.7)
    # twice the step time of the reference costs 1 - 2^-0.07 = 4.7% of the reward; 2x params 3.4%
    r = Reward(ref_step_time=0.1, ref_params=1000)
    assert r(1.0, 0.2, 1000) == pytest.approx(0.952638, abs=1e-6)
    assert r(1.0, 0.1, 2000) == pytest.approx(0.965936, abs=1e-6)
    assert Reward(w=0, v=0)(0.42, 123.0, 4567) == 0.42
    with pytest.raises(ConfigError):
        Reward()(0.5, 0.0, 10)


def test_reward_is_normalised_by_the_reference_measured_like_a_candidate(fake_timing):
    three = replace(TINY, timing_repeats=3, threads=1)
    n = n_params(SPACE.backbone)
    assert measure(SPACE.backbone, three) == (pytest.approx(2 * n / 1e7), n)  # the median time, 10-class params
    # timing batch, proxy size, proxy threads; one thread on a CPU: the process's own CPU time
    assert fake_timing[-1] == (three.timing_batch, three.image_size, 1, "process_time")
    r = reward_relative_to(SPACE.backbone, three)
    assert (r.w, r.v, r.ref_step_time, r.ref_params) == (-0.07, -0.05, pytest.approx(2 * n / 1e7), n)
    # the backbone evaluated as a candidate scores exactly its accuracy (S = P = 1); a wider candidate less
    res = evaluate_candidate(SPACE.backbone, three, train_fn=lambda c, p: 0.61)
    assert r(res["accuracy"], res["step_time"], res["params"]) == pytest.approx(0.61, abs=1e-12)
    wide = search_space(width=1.0).backbone
    res = evaluate_candidate(wide, three, train_fn=lambda c, p: 0.61)
    k = n_params(wide) / n
    assert r(res["accuracy"], res["step_time"], res["params"]) == pytest.approx(0.61 * k ** -0.07 * k ** -0.05)


def test_search_scores_every_trial_with_the_backbone_normalisation(tmp_path, fake_timing):
    trials = run_search(SPACE, 3, tmp_path / "s.jsonl", TINY, seed=0, train_fn=fake_train, progress=False)
    header, logged = read_log(tmp_path / "s.jsonl")
    n = n_params(SPACE.backbone)
    assert header["reward"] == {"w": -0.07, "v": -0.05, "ref_step_time": pytest.approx(3 * n / 1e7), "ref_params": n}
    for t in logged:
        p = n_params(SPACE.build(t["choices"]))
        assert t["params"] == p and t["step_time"] == pytest.approx(3 * p / 1e7)
        assert t["reward"] == pytest.approx(t["accuracy"] * (p / n) ** -0.12)
    assert [t["reward"] for t in trials] == [t["reward"] for t in logged]


# ------------------------------------------------------------------------------------------------- space

@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_sampled_choices_build_the_stages_they_name(seed):
    choices = SPACE.sample(random.Random(seed))
    cfg = SPACE.build(choices)
    for s, c, b in zip(cfg.stages, choices, SPACE.backbone.stages):
        assert (s.block, s.repeats, s.kernel, s.expansion) == (c.block, c.layers, c.kernel, c.expansion)
        assert (s.in_channels, s.out_channels, s.stride) == (b.in_channels, b.out_channels, b.stride)
        assert s.se_ratio == (0.25 if s.block == "mbconv" else 0.0)
    assert SPACE.choices_of(cfg) == choices
    model = ev2lib.create_model(cfg, num_classes=10).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 16, 16)).shape == (1, 10)


def test_sampling_reaches_exactly_size_architectures():
    small = SearchSpace(SPACE.backbone, layers=(1, 2), blocks=("fused",), kernels=(3, 5), expansions=(1,))
    assert small.size == 4 ** 4 and SPACE.size == (2 * 3 * 2 * 3) ** 4
    rng = random.Random(0)
    seen = {small.sample(rng) for _ in range(4000)}  # P(some of the 256 missed) < 256 * (255/256)^4000 ~ 4e-5
    assert len(seen) == small.size


def test_mutation_changes_exactly_one_searched_decision():
    narrow = SearchSpace(SPACE.backbone, kernels=(3,), expansions=(4, 6))
    rng = random.Random(0)
    for _ in range(100):
        c = narrow.sample(rng)
        m = narrow.mutate(c, rng)
        assert sum(getattr(x, f) != getattr(y, f) for x, y in zip(c, m) for f in FIELDS) == 1
        assert narrow.check(m) == m and all(s.kernel == 3 for s in m)  # never outside the space


def test_strategies_are_deterministic_given_seed_and_history():
    history = [{"trial": i, "choices": [vars(c) for c in SPACE.sample(random.Random(i))], "reward": i / 20}
               for i in range(15)]
    for name in ("random", "evolution"):
        a, b = strategy(name, SPACE, seed=3), strategy(name, SPACE, seed=3)
        assert a.propose(history).stages == b.propose(history).stages
        assert a.propose(history[:5]).stages == b.propose(history[:5]).stages
        assert strategy(name, SPACE, seed=4).propose(history).stages != a.propose(history).stages
    # random search: proposal i depends on (seed, i) only, not on the results
    shuffled = [dict(t, reward=-t["reward"]) for t in history]
    assert strategy("random", SPACE, 3).propose(shuffled).stages == strategy("random", SPACE, 3).propose(history).stages
    # evolution after the random warm-up: a one-decision mutation of a trial among the youngest `population`
    evo = strategy("evolution", SPACE, seed=0, population=10, sample=3)
    child = SPACE.choices_of(evo.propose(history))
    parents = [SPACE.check(t["choices"]) for t in history[-10:]]
    assert min(sum(x != y for x, y in zip(child, p)) for p in parents) == 1


def test_evolution_mutates_the_best_of_its_sample():
    # sample == population: the parent is the best of the youngest `population`, whatever the draw
    history = [{"trial": i, "choices": [vars(c) for c in SPACE.sample(random.Random(i))], "reward": r}
               for i, r in enumerate([0.9, 0.1, 0.2, 0.3, 0.8, 0.4])]  # trial 0 (0.9) is too old to be a parent
    for seed in range(10):
        child = SPACE.choices_of(strategy("evolution", SPACE, seed, population=5, sample=5).propose(history))
        best = SPACE.check(history[4]["choices"])
        assert sum(getattr(x, f) != getattr(y, f) for x, y in zip(child, best) for f in FIELDS) == 1


# ------------------------------------------------------------------------------------------------- proxy evaluation

def test_proxy_is_scored_on_validation_at_its_training_size(monkeypatch):
    seen = []

    def train(cfg):
        seen.append(cfg)
        return {"history": [{"val_acc": 0.25}, {"val_acc": 0.5, "test_acc": 0.75}]}

    monkeypatch.setattr(ev2lib.train, "train", train)
    proxy = replace(TINY, epochs=2, lr=0.05, seed=7)
    cfg = SPACE.build(SPACE.sample(random.Random(0)))
    assert proxy_train(cfg, proxy) == 0.5  # the last evaluation's validation accuracy, never the test split's
    got = seen[0]
    assert got.model == cfg and got.data == proxy.data and got.seed == 7 and got.lr == 0.05
    assert (got.epochs, got.batch_size, got.image_size) == (2, proxy.batch_size, proxy.image_size)
    assert got.eval_size == got.image_size == 16  # scored at the size it trains at
    assert got.val_images == proxy.val_images > 0
    assert (got.train_subset, got.eval_subset) == (proxy.train_images, proxy.eval_images)
    for name, p in {**PROXIES, **{f"long {k}": v for k, v in LONG_PROXIES.items()}}.items():
        assert p.val_images > 0 and not hasattr(p, "eval_size"), name
    for name in PROXIES:  # the longer run trains more, on the same size and validation images
        short, long = PROXIES[name], LONG_PROXIES[name]
        assert (long.image_size, long.val_images) == (short.image_size, short.val_images)
        assert long.train_images * long.epochs > short.train_images * short.epochs


def test_candidate_training_is_seeded_and_threaded_by_the_proxy():
    before = torch.get_num_threads()
    draws = []

    def train_fn(config, proxy):
        draws.append((torch.get_num_threads(), torch.rand(3).tolist()))
        return 0.5

    cfg = SPACE.build(SPACE.sample(random.Random(1)))
    for _ in range(2):
        res = evaluate_candidate(cfg, replace(TINY, threads=before + 1, seed=3), train_fn)
    assert draws[0] == draws[1] and draws[0][0] == before + 1 and torch.get_num_threads() == before
    assert res["accuracy"] == 0.5 and res["params"] == n_params(cfg)


def test_values_outside_the_papers_choices_are_clear_errors():
    with pytest.raises(ConfigError, match=r"kernels \[7\] outside the paper's choices \(3, 5\)"):
        SearchSpace(get_config("efficientnetv2_cifar"), kernels=(3, 7))
    with pytest.raises(ConfigError, match="expansions"):
        search_space(expansions=(2,))
    with pytest.raises(ConfigError, match="stage 2: kernel 7 is outside"):
        SPACE.build([StageChoice("fused", 1, 3, 1), StageChoice("fused", 1, 7, 4)] + [StageChoice("mbconv", 1, 3, 4)] * 2)
    v2s = get_config("efficientnetv2_s")
    with pytest.raises(ConfigError, match="stages"):
        SPACE.choices_of(v2s)
    with pytest.raises(ConfigError, match="unknown search strategy"):
        strategy("bayes", SPACE)


def test_a_config_the_builder_rejects_is_a_clear_error():
    cfg = SPACE.build(SPACE.sample(random.Random(0)))
    bad = replace(cfg, stages=(replace(cfg.stages[0], repeats=0),) + cfg.stages[1:])  # bypasses .replace's check
    with pytest.raises(ConfigError, match="repeats 0 must be >= 1"):
        evaluate_candidate(bad, TINY, train_fn=fake_train)


# ------------------------------------------------------------------------------------------------- noise, validity

def test_kendall_tau_against_hand_computed_values():
    assert kendall_tau([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert kendall_tau([1, 2, 3, 4, 5], [5, 4, 3, 2, 1]) == -1.0  # perfectly reversed
    # one swapped pair of 4 -> 6 pairs: C = 5, D = 1 -> (5 - 1) / 6
    assert kendall_tau([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)
    # x = [1, 2, 3], y = [1, 3, 2]: pairs (12) C, (13) C, (23) D -> 1/3
    assert kendall_tau([1, 2, 3], [1, 3, 2]) == pytest.approx(1 / 3)
    # ties, tau-b: x = [1, 1, 2, 3], y = [1, 2, 2, 3]. Pairs: (12) tied in x only, (13) C, (14) C,
    # (23) tied in y only, (24) C, (34) C -> C = 4, D = 0, Tx = 1, Ty = 1: 4 / sqrt(5 * 5) = 0.8
    assert kendall_tau([1, 1, 2, 3], [1, 2, 2, 3]) == pytest.approx(0.8)
    # a pair tied in both counts nowhere: x = [1, 1, 2], y = [5, 5, 0]: (12) both, (13) D, (23) D -> -2/2 = -1
    assert kendall_tau([1, 1, 2], [5, 5, 0]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau([1, 1, 1], [1, 2, 3]))  # a constant ranking orders nothing
    with pytest.raises(ValueError):
        kendall_tau([1, 2], [1, 2, 3])


def test_spread_sample_covers_the_reward_range():
    trials = [{"trial": i, "reward": r} for i, r in enumerate([0.5, 0.1, 0.9, 0.3, 0.7, 0.2, 0.8, 0.4, 0.6, 0.0])]
    got = spread_sample(trials, 4)
    assert [t["reward"] for t in got] == [0.0, 0.3, 0.6, 0.9]  # sorted indices 0, 3, 6, 9
    assert len(spread_sample(trials, 20)) == 10


def test_proxy_noise_and_validity_on_synthetic_data(tmp_path):
    proxy = replace(TINY, data="synthetic:256", train_images=96, val_images=64, eval_images=32, epochs=1)
    long = replace(proxy, train_images=128, epochs=2)
    cfg = SPACE.build(SPACE.sample(random.Random(0)))
    runs = proxy_noise(cfg, proxy, [0, 1], reward=Reward(), cache=tmp_path / "noise.jsonl")
    assert [r["seed"] for r in runs] == [0, 1] and all(0 <= r["accuracy"] <= 1 for r in runs)
    assert all(r["reward"] == pytest.approx(Reward()(r["accuracy"], r["step_time"], r["params"])) for r in runs)
    # the cache: a rerun trains nothing and returns the same accuracies
    calls = []
    again = proxy_noise(cfg, proxy, [0, 1], cache=tmp_path / "noise.jsonl", train_fn=lambda c, p: calls.append(1))
    assert not calls and [r["accuracy"] for r in again] == [r["accuracy"] for r in runs]
    # validity from logged trials: the logged proxy numbers are kept, the long run trains the same architecture
    trials = run_search(SPACE, 3, tmp_path / "s.jsonl", proxy, seed=0, train_fn=fake_train, progress=False)
    reward = Reward(**read_log(tmp_path / "s.jsonl")[0]["reward"])
    seen = []

    def long_train(config, p):
        seen.append((config.stages, p))
        return 0.5 + 0.1 * config.num_blocks / 12

    rows = proxy_validity(trials, proxy, long, reward, SPACE, train_fn=long_train, cache=tmp_path / "v.jsonl")
    for r, t in zip(rows, trials):
        assert r["trial"] == t["trial"] and r["proxy_reward"] == pytest.approx(t["reward"])
        assert r["proxy_accuracy"] == t["accuracy"] and r["long_reward"] == pytest.approx(
            reward(r["long_accuracy"], t["step_time"], t["params"]))
    assert [p for _, p in seen] == [long] * 3 and [s for s, _ in seen] == [SPACE.build(t["choices"]).stages for t in trials]
    rows2 = proxy_validity(trials, proxy, long, reward, SPACE, train_fn=None, cache=tmp_path / "v.jsonl")
    assert [r["long_accuracy"] for r in rows2] == [r["long_accuracy"] for r in rows]  # cached: nothing trained
    # ModelConfigs are evaluated with the proxy here, for real (synthetic data)
    rows = proxy_validity([cfg], proxy, long, train_fn=None)
    assert 0 <= rows[0]["proxy_accuracy"] <= 1 and 0 <= rows[0]["long_accuracy"] <= 1


def test_noise_and_validity_results_refuse_smoke(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ev2lib.search", "--profile", "smoke", "--noise", "--seeds", "2",
                        "--data", "synthetic:256", "--save", "nas_noise_should_not_exist"],
                       cwd=tmp_path, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "EV2_RESULTS_DIR": str(tmp_path)})
    assert r.returncode != 0 and "smoke run is never saved" in r.stderr
    assert not list(tmp_path.glob("*.json"))


# ------------------------------------------------------------------------------------------------- search log

def _key(trials):
    return [(t["trial"], t["choices"], t["accuracy"], t["params"]) for t in trials]


def test_search_resumes_without_repeating_trials(tmp_path):
    full = run_search(SPACE, 6, tmp_path / "full.jsonl", TINY, "evolution", seed=1, train_fn=fake_train,
                      progress=False, population=3, sample=2)
    part = tmp_path / "part.jsonl"
    run_search(SPACE, 3, part, TINY, "evolution", seed=1, train_fn=fake_train, progress=False, population=3, sample=2,
               reward=Reward(**read_log(tmp_path / "full.jsonl")[0]["reward"]))
    calls = []
    resumed = run_search(SPACE, 6, part, TINY, "evolution", seed=1, progress=False, population=3, sample=2,
                         train_fn=lambda c, p: calls.append(c) or fake_train(c, p))
    assert len(calls) == 3  # trials 0-2 were not run again
    assert _key(resumed) == _key(full)
    # rewards of the finished trials are read back, not recomputed (step times are measured, so they vary)
    assert [t["reward"] for t in resumed[:3]] == [json.loads(x)["reward"] for x in part.read_text().splitlines()[1:4]]
    assert len(read_log(part)[1]) == 6


def test_corrupt_last_line_loses_only_that_trial(tmp_path):
    log = tmp_path / "s.jsonl"
    done = run_search(SPACE, 4, log, TINY, seed=2, train_fn=fake_train, progress=False)
    lines = log.read_text().splitlines(keepends=True)
    log.write_text("".join(lines[:-1]) + lines[-1][:40])  # a torn write of trial 3
    with pytest.warns(UserWarning, match="last line"):
        header, trials = read_log(log)
    assert len(trials) == 3 and log.read_text() == "".join(lines[:-1])  # the torn bytes are cut, the rest kept
    again = run_search(SPACE, 4, log, TINY, seed=2, train_fn=fake_train, progress=False)
    assert _key(again) == _key(done)


def test_corrupt_line_elsewhere_and_other_search_are_errors(tmp_path):
    log = tmp_path / "s.jsonl"
    run_search(SPACE, 3, log, TINY, seed=2, train_fn=fake_train, progress=False)
    original = log.read_text()
    lines = original.splitlines(keepends=True)
    log.write_text(lines[0] + "{not json\n" + "".join(lines[2:]))
    with pytest.raises(SearchLogError, match="line 2 is damaged"):
        run_search(SPACE, 4, log, TINY, seed=2, train_fn=fake_train, progress=False)
    assert log.read_text().startswith(lines[0] + "{not json")  # nothing rewritten
    log.write_text(original)
    with pytest.raises(SearchLogError, match="different search .*seed"):
        run_search(SPACE, 4, log, TINY, seed=3, train_fn=fake_train, progress=False)


def test_pareto_front():
    t = [{"accuracy": 0.9, "step_time": 2, "params": 10}, {"accuracy": 0.8, "step_time": 1, "params": 10},
         {"accuracy": 0.7, "step_time": 2, "params": 20}, {"accuracy": 0.9, "step_time": 2, "params": 5}]
    assert pareto_front(t) == [t[1], t[3]]


# ------------------------------------------------------------------------------------------------- end to end

def _cli(log, *extra):
    data = "cifar10" if shared_cifar10_path() else "synthetic:384"  # offline: the shared archive, else generated
    return [sys.executable, "-m", "ev2lib.search", "--profile", "smoke", "--trials", "8", "--data", data,
            "--log", str(log), *extra]


@pytest.mark.slow
def test_smoke_search_8_trials_killed_after_trial_3_and_restarted(tmp_path):
    """8 trials in the smoke profile; SIGKILLed after trial 3 and restarted, no finished trial runs again and the log equals an uninterrupted run's (config, accuracy,
    params; step times are wall-clock measurements and differ run to run)."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(_cli(tmp_path / "full.jsonl"), check=True, cwd=ROOT, env=env, capture_output=True)
    log = tmp_path / "killed.jsonl"
    proc = subprocess.Popen(_cli(log), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not log.exists() or len(log.read_text().splitlines()) < 4:  # header + trials 0, 1, 2
        assert proc.poll() is None, "the search ended before it could be killed"
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    n_before = len(read_log(log)[1])
    assert 3 <= n_before < 8
    out = subprocess.run(_cli(log), check=True, cwd=ROOT, env=env, capture_output=True, text=True)
    _, resumed = read_log(log)
    _, full = read_log(tmp_path / "full.jsonl")
    assert _key(resumed) == _key(full)
    assert "8 trials" in out.stdout


def test_cli_bad_input_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ev2lib.search", "--log", str(tmp_path / "x.jsonl"), "--layers", "0,1"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_parallel_search_on_ray_equals_sequential(tmp_path):
    pytest.importorskip("ray", reason="Ray is the optional extra ev2lib[search]")
    seq = run_search(SPACE, 4, tmp_path / "seq.jsonl", TINY, seed=5, progress=False)
    par = run_search(SPACE, 4, tmp_path / "par.jsonl", TINY, seed=5, progress=False, workers=2,
                     reward=Reward(**read_log(tmp_path / "seq.jsonl")[0]["reward"]))
    assert _key(par) == _key(seq)
