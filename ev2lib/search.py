"""Running a training-aware search (paper §3.3): strategies, a resumable log, the loop and the command line.

    python -m ev2lib.search --profile cpu-reference --trials 50 --log runs/nas.jsonl --save nas_search_cifar10
    python -m ev2lib.search --profile cpu-reference --noise --seeds 5 --cache runs/noise.jsonl --save ...
    python -m ev2lib.search --profile cpu-reference --validity --log runs/nas.jsonl --cache runs/v.jsonl --save ...

Strategies: random search (enough for this space, §3.3) and regularized evolution (Real et al., 2019), both
deterministic given the seed and the history. The log: a JSONL header, then one fsynced line a trial; a rerun skips
finished trials (a torn last line is dropped with a warning). With ``workers`` on Ray (``ev2lib[search]``), rounds
of proposals see the same history: the result depends on ``workers``, not on timing.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import random
import statistics
import sys
import warnings
from dataclasses import asdict
from pathlib import Path

from .configs import ModelConfig
from .errors import ConfigError, SearchLogError
from .files import append_jsonl, atomic_write
from .nas import Reward, SearchSpace, search_space
from .proxy import (LONG_PROXIES, PROXIES, ProxyTask, evaluate_candidate, proxy_noise, proxy_validity,
                    reward_relative_to, spread_sample)
from .stats import kendall_tau


# --- Strategies: propose(history) -> ModelConfig, deterministic given (seed, history) -----------------------------

class RandomSearch:
    """Uniform random sampling. Proposal i depends only on (seed, i), so a resumed search proposes the same."""

    name = "random"

    def __init__(self, space: SearchSpace, seed: int = 0):
        self.space, self.seed = space, seed

    def _rng(self, history) -> random.Random:
        return random.Random(f"{self.name}:{self.seed}:{len(history)}")

    def propose(self, history: list[dict]) -> ModelConfig:
        """``history``: the finished trials (dicts with "choices" and "reward"), oldest first."""
        return self.space.build(self.space.sample(self._rng(history)), name=f"trial_{len(history)}")


class RegularizedEvolution(RandomSearch):
    """Aging evolution (Real et al., 2019): the first ``population`` proposals are random; then pick ``sample``
    of the last ``population`` trials, mutate the best of them (by reward) in one decision."""

    name = "evolution"

    def __init__(self, space: SearchSpace, seed: int = 0, population: int = 12, sample: int = 4):
        super().__init__(space, seed)
        if not 1 <= sample <= population:
            raise ConfigError(f"evolution needs 1 <= sample ({sample}) <= population ({population})")
        self.population, self.sample = population, sample

    def propose(self, history: list[dict]) -> ModelConfig:
        finished = [t for t in history if not t.get("pending")]  # (pending: proposed in the same parallel round)
        if len(finished) < self.population:
            return super().propose(history)
        rng = self._rng(history)
        alive = finished[-self.population:]  # aging: only the youngest `population` trials can be parents
        parent = max(rng.sample(alive, self.sample), key=lambda t: t["reward"])
        child = self.space.mutate(parent["choices"], rng)
        return self.space.build(child, name=f"trial_{len(history)}")


STRATEGIES = {"random": RandomSearch, "evolution": RegularizedEvolution}


def strategy(name: str, space: SearchSpace, seed: int = 0, **kw):
    """A strategy by name (:data:`STRATEGIES`)."""
    if name not in STRATEGIES:
        raise ConfigError(f"unknown search strategy {name!r}; known: {', '.join(STRATEGIES)}")
    return STRATEGIES[name](space, seed, **kw)


# --- Log: a header line, then one line per finished trial ---------------------------------------------------------

def read_log(path: str | Path) -> tuple[dict | None, list[dict]]:
    """(header, finished trials) of a log; a torn last line is dropped with a warning (and cut from the file)."""
    path = Path(path)
    lines = path.read_text().splitlines(keepends=True) if path.exists() else []
    records = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or ("trial" not in rec and rec.get("kind") != "header"):
                raise ValueError("not a search record")
            records.append(rec)
        except ValueError as e:
            if i < len(lines) - 1:
                raise SearchLogError(f"{path} line {i + 1} is damaged ({e}); only the last line may be torn by a "
                                     f"crash: restore the file or start a new log") from None
            warnings.warn(f"{path}: the last line is incomplete or damaged ({e}); dropping it: that trial "
                          f"will run again", stacklevel=2)
            atomic_write(path, "".join(lines[:-1]))
    if not records:
        return None, []
    header, trials = records[0], records[1:]
    if header.get("kind") != "header":
        raise SearchLogError(f"{path} does not start with a search header: is it a search log?")
    for k, t in enumerate(trials):
        if t.get("trial") != k:
            raise SearchLogError(f"{path}: trial {t.get('trial')} is at position {k}; the log is out of order")
    return header, trials


def _check_same_search(path: Path, old: dict, new: dict) -> None:
    """A log is resumed only by the search that wrote it (the reward is read from it, not compared)."""
    differs = [k for k in new if json.loads(json.dumps(old.get(k, {}))) != json.loads(json.dumps(new[k]))]
    if differs:
        raise SearchLogError(f"{path} was written by a different search ({', '.join(differs)} differ): "
                             f"use the same arguments to resume, or a new --log path")


def pareto_front(trials: list[dict], keys=(("accuracy", 1), ("step_time", -1), ("params", -1))) -> list[dict]:
    """Trials no other trial beats in every objective (higher accuracy, lower step time, fewer parameters)."""
    def dominates(a, b):
        better_eq = all(s * a[k] >= s * b[k] for k, s in keys)
        return better_eq and any(s * a[k] > s * b[k] for k, s in keys)
    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]


# --- Loop ---------------------------------------------------------------------------------------------------------

def run_search(space: SearchSpace, trials: int, log: str | Path, proxy: ProxyTask = PROXIES["smoke"],
               strategy_name: str = "random", seed: int = 0, reward: Reward | None = None, train_fn=None,
               workers: int = 1, progress: bool = True, **strategy_kw) -> list[dict]:
    """Run (or resume) a search of ``trials`` trials logged to ``log``; every finished trial. ``reward`` defaults to the
    paper's exponents relative to the backbone measured now (kept in the log); ``workers > 1`` runs on Ray."""
    from tqdm.auto import tqdm
    log, strat = Path(log), strategy(strategy_name, space, seed, **strategy_kw)
    header = {"kind": "header", "space": space.describe(), "strategy": strat.name, "strategy_options": strategy_kw,
              "seed": seed, "proxy": asdict(proxy)}
    old, history = read_log(log)
    if old is None:
        reward = reward or reward_relative_to(space.backbone, proxy)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.unlink(missing_ok=True)  # an empty file, or a header torn by a crash
        append_jsonl(log, {**header, "reward": asdict(reward)}, sync=True)
    else:
        _check_same_search(log, old, header)
        reward = Reward(**old["reward"])
    evaluate_round = _ray_runner(workers) if workers > 1 else _run_here
    bar = tqdm(total=trials, initial=min(len(history), trials), desc=f"{strat.name} search", disable=not progress)
    while len(history) < trials:
        configs = [strat.propose(_pending(history, k)) for k in range(min(workers, trials - len(history)))]
        for cfg, res in zip(configs, evaluate_round(configs, proxy, train_fn)):
            rec = {"trial": len(history), "choices": [asdict(c) for c in space.choices_of(cfg)], "config": asdict(cfg),
                   **res, "reward": reward(res["accuracy"], res["step_time"], res["params"])}
            append_jsonl(log, rec, sync=True)
            history.append(rec)
            bar.update(1)
    bar.close()
    return history[:trials]


def _pending(history: list[dict], k: int) -> list[dict]:
    """The history a proposal sees in a parallel round: the finished trials plus k placeholders (only their
    count matters to the proposal's random seed; evolution picks parents among finished trials)."""
    return history + [{"choices": None, "reward": float("-inf"), "pending": True}] * k


def _run_here(configs, proxy, train_fn) -> list[dict]:
    return [evaluate_candidate(c, proxy, train_fn) for c in configs]


def _ray_runner(workers: int):
    """Evaluate a round of configs as Ray tasks (one CPU each); Ray is the optional ``search`` extra."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--workers > 1 runs trials on Ray: pip install 'ev2lib[search]' (or use --workers 1)") from None
    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    remote = ray.remote(num_cpus=1)(evaluate_candidate)
    return lambda configs, proxy, train_fn: ray.get([remote.remote(c, proxy, train_fn) for c in configs])


# --- CLI ----------------------------------------------------------------------------------------------------------

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ev2lib.search", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=list(PROXIES), default="smoke", help="proxy task preset (PROXIES)")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--strategy", default="random", help="random | evolution")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="efficientnetv2_cifar")
    p.add_argument("--width", type=float, default=0.5, help="channel multiplier of the backbone (ev2lib.scaling)")
    p.add_argument("--layers", default="1,2,3", help="allowed layer counts per stage")
    p.add_argument("--data", default=None, help="proxy dataset (default: the profile's, cifar10)")
    p.add_argument("--log", default=None, help="JSONL search log; an existing one is resumed (--validity reads it)")
    p.add_argument("--workers", type=int, default=1, help="> 1: run trials in parallel on Ray")
    p.add_argument("--noise", action="store_true", help="instead of searching: the backbone and --noise-random "
                   "random architectures, each under --seeds seeds")
    p.add_argument("--noise-random", type=int, default=1, help="--noise: random architectures besides the backbone")
    p.add_argument("--seeds", type=int, default=5, help="--noise: number of seeds (0 .. seeds-1)")
    p.add_argument("--validity", action="store_true", help="instead of searching: --architectures trials of the "
                   "--log search, from across its reward range, trained again with the profile's LONG_PROXIES task")
    p.add_argument("--architectures", type=int, default=8, help="--validity: how many")
    p.add_argument("--cache", default=None, help="--noise/--validity: JSONL of finished runs (resumed)")
    p.add_argument("--save", default=None, help="save the result as data/results/<name>.json")
    return p


def _check(args) -> tuple:
    """One-line errors for flags that do not fit together; returns the allowed layer counts."""
    if args.trials < 1 or args.workers < 1 or args.seeds < 2 or args.architectures < 2 or args.noise_random < 0:
        raise ConfigError("--trials and --workers must be >= 1, --seeds and --architectures >= 2")
    if args.save and args.profile == "smoke":
        raise ConfigError("a smoke run is never saved as a result (ev2lib.results): use --profile cpu-reference, "
                          "colab or full with --save")
    if args.noise and args.validity:
        raise ConfigError("--noise and --validity are separate runs: give one")
    if not args.noise and not args.log:
        raise ConfigError("--log is required (the search log to write, or for --validity to read)")
    try:
        return tuple(int(x) for x in args.layers.split(","))
    except ValueError:
        raise ConfigError(f"--layers must be comma-separated integers, got {args.layers!r}") from None


def _noise_record(args, space: SearchSpace, proxy: ProxyTask) -> dict:
    rng = random.Random(f"noise:{args.seed}")  # the backbone, then --noise-random architectures of the space
    configs = [space.backbone] + [space.build(space.sample(rng), name=f"random_{i}") for i in range(args.noise_random)]
    archs = []
    for cfg in configs:
        runs = proxy_noise(cfg, proxy, range(args.seeds), cache=args.cache)
        acc = [r["accuracy"] for r in runs]
        archs.append({"architecture": cfg.name, "choices": [asdict(c) for c in space.choices_of(cfg)],
                      "runs": runs, "mean": statistics.fmean(acc), "std": statistics.stdev(acc)})
        print(f"{cfg.name} under {len(runs)} seeds: proxy accuracy {archs[-1]['mean']:.3f} +- {archs[-1]['std']:.3f}")
    pooled = math.sqrt(sum(a["std"] ** 2 for a in archs) / len(archs))  # equal seeds per architecture
    print(f"pooled seed-to-seed std {pooled:.4f}")
    return {"proxy": asdict(proxy), "seeds": args.seeds, "architectures": archs, "pooled_std": pooled,
            "wall_seconds": sum(r["seconds"] for a in archs for r in a["runs"])}


def _validity_record(args, space: SearchSpace, proxy: ProxyTask, long_proxy: ProxyTask) -> dict:
    header, trials = read_log(args.log)
    if header is None:
        raise ConfigError(f"{args.log}: no search log to check: run the search first")
    rows = proxy_validity(spread_sample(trials, args.architectures), proxy, long_proxy, Reward(**header["reward"]),
                          space, cache=args.cache)
    tau = kendall_tau([r["proxy_reward"] for r in rows], [r["long_reward"] for r in rows])
    tau_acc = kendall_tau([r["proxy_accuracy"] for r in rows], [r["long_accuracy"] for r in rows])
    print(f"{len(rows)} architectures: Kendall tau {tau:.2f} (reward), {tau_acc:.2f} (accuracy)")
    return {"proxy": header["proxy"], "long_proxy": asdict(long_proxy), "search_trials": len(trials),
            "architectures": rows, "kendall_tau_reward": tau, "kendall_tau_accuracy": tau_acc,
            "wall_seconds": sum(r["long_seconds"] for r in rows)}


def _search_record(args, space: SearchSpace, proxy: ProxyTask) -> dict:
    trials = run_search(space, args.trials, args.log, proxy, args.strategy, args.seed, workers=args.workers)
    best = max(trials, key=lambda t: t["reward"])
    print(f"{len(trials)} trials; best reward {best['reward']:.4f} (trial {best['trial']}, accuracy "
          f"{best['accuracy']:.3f}, {best['params']:,} params)")
    return {"header": read_log(args.log)[0], "trials": trials, "wall_seconds": sum(t["seconds"] for t in trials)}


def main(argv=None):
    args = _parser().parse_args(argv)
    layers = _check(args)
    proxy, long_proxy = PROXIES[args.profile], LONG_PROXIES[args.profile]
    if args.data:
        proxy, long_proxy = (dataclasses.replace(x, data=args.data) for x in (proxy, long_proxy))
    space = search_space(args.backbone, width=args.width, layers=layers)
    if args.noise:
        data = _noise_record(args, space, proxy)
    elif args.validity:
        data = _validity_record(args, space, proxy, long_proxy)
    else:
        data = _search_record(args, space, proxy)
    if args.save:
        from . import results

        command = "python -m ev2lib.search " + " ".join(sys.argv[1:] if argv is None else argv)
        path = results.save(args.save, data, profile=args.profile, command=command,
                            config={k: v for k, v in vars(args).items() if k not in ("log", "save", "cache")})
        print(f"saved {path}")


if __name__ == "__main__":
    from .errors import cli_main

    cli_main(main)
