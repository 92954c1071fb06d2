"""The training-aware search loop (paper §3.3) and its resumable JSONL log.

    python -m ev2lib.search --profile smoke --trials 8 --log runs/nas_smoke.jsonl
    python -m ev2lib.search --profile cpu-reference --trials 50 --log runs/nas_cpu.jsonl --save nas_search_cifar10

The log has one header line (the space, strategy, seed, proxy task and reward normalisation) and then one line per
finished trial: ``{"trial", "choices", "config", "accuracy", "step_time", "params", "reward", "seconds"}``.
Each line is written and flushed when its trial finishes, so:

* restarting with the same arguments reads the finished trials, skips them and continues; because a strategy's
  proposal depends only on (seed, history), the restarted search proposes exactly what an uninterrupted one would;
* a crash while writing leaves at most a torn *last* line: it is dropped with a warning (that trial is rerun);
  a damaged line anywhere else is an error (the log was edited or mixed up), and nothing is rewritten.

Trials run one after another by default. ``--workers N`` evaluates N trials at a time as Ray tasks
(``pip install ev2lib[search]``), in rounds: the N proposals of a round see the same history, so the result depends
on N but not on timing.
"""
from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from dataclasses import asdict
from pathlib import Path

import torch

from .errors import ConfigError, Ev2Error
from .nas import PROXIES, ProxyTask, Reward, SearchSpace, evaluate, measure_step_time, search_space, strategy


class SearchLogError(Ev2Error, ValueError):
    """A search log that cannot be resumed: damaged, or written by a different search."""


def read_log(path: str | Path) -> tuple[dict | None, list[dict]]:
    """(header, finished trials) of a log; a torn last line is dropped with a warning (and cut from the file)."""
    path = Path(path)
    if not path.exists():
        return None, []
    lines = path.read_text().splitlines(keepends=True)
    records = []
    for i, line in enumerate(lines):
        try:
            rec = json.loads(line)
            if not isinstance(rec, dict) or ("trial" not in rec and rec.get("kind") != "header"):
                raise ValueError("not a search record")
            records.append(rec)
        except ValueError as e:
            if i == len(lines) - 1:
                warnings.warn(f"{path}: the last line is incomplete or damaged ({e}); dropping it: that trial "
                              f"will run again", stacklevel=2)
                keep = "".join(lines[:-1])
                path.write_text(keep)
                break
            raise SearchLogError(f"{path} line {i + 1} is damaged ({e}); only the last line may be torn by a crash: "
                                 f"restore the file or start a new log") from None
    if not records:
        return None, []
    header, trials = records[0], records[1:]
    if header.get("kind") != "header":
        raise SearchLogError(f"{path} does not start with a search header: is it a search log?")
    for k, t in enumerate(trials):
        if t.get("trial") != k:
            raise SearchLogError(f"{path}: trial {t.get('trial')} is at position {k}; the log is out of order")
    return header, trials


def _append(path: Path, record: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _header(space, strat, proxy, rew, seed, options) -> dict:
    return {"kind": "header", "space": space.describe(), "strategy": strat.name, "strategy_options": options,
            "seed": seed, "proxy": asdict(proxy), "reward": asdict(rew)}


def _same_search(old: dict, new: dict) -> list[str]:
    keys = ("space", "strategy", "strategy_options", "seed", "proxy")
    return [k for k in keys if json.loads(json.dumps(old.get(k, {}))) != json.loads(json.dumps(new[k]))]


def _evaluate_trial(config, proxy, train_fn):
    t0 = time.perf_counter()
    out = evaluate(config, proxy, train_fn)
    out["seconds"] = time.perf_counter() - t0
    return out


def run_search(space: SearchSpace, trials: int, log: str | Path, proxy: ProxyTask = PROXIES["smoke"],
               strategy_name: str = "random", seed: int = 0, reward: Reward | None = None, train_fn=None,
               workers: int = 1, progress: bool = True, **strategy_kw) -> list[dict]:
    """Run (or resume) a search of ``trials`` trials, logging each to ``log``; return every finished trial.

    ``reward`` defaults to the paper's exponents normalised by the backbone measured now (and then kept in the log,
    so a resumed search scores with the same reference). ``workers > 1`` evaluates trials as Ray tasks.
    """
    log = Path(log)
    strat = strategy(strategy_name, space, seed, **strategy_kw)
    header, history = read_log(log)
    if header is None:
        if reward is None:
            ref = space.backbone
            reward = Reward(ref_step_time=measure_step_time(ref, proxy.image_size, proxy.timing_batch,
                                                            proxy.timing_repeats, threads=proxy.threads,
                                                            device="cuda" if torch.cuda.is_available() else "cpu"),
                            ref_params=_params(ref))
        log.parent.mkdir(parents=True, exist_ok=True)
        if log.exists():
            log.unlink()  # an empty or header-less-but-torn file
        _append(log, _header(space, strat, proxy, reward, seed, strategy_kw))
    else:
        differs = _same_search(header, _header(space, strat, proxy, reward or Reward(), seed, strategy_kw))
        if differs:
            raise SearchLogError(f"{log} was written by a different search ({', '.join(differs)} differ): "
                                 f"use the same arguments to resume, or a new --log path")
        reward = Reward(**header["reward"])
    from tqdm.auto import tqdm

    bar = tqdm(total=trials, initial=min(len(history), trials), desc=f"{strat.name} search", disable=not progress)
    run = _ray_runner(workers) if workers > 1 else None
    while len(history) < trials:
        n = min(workers, trials - len(history))
        configs = [strat.propose(_pending(history, k)) for k in range(n)]
        results = run(configs, proxy, train_fn) if run else [_evaluate_trial(configs[0], proxy, train_fn)]
        for cfg, res in zip(configs, results):
            rec = {"trial": len(history), "choices": [asdict(c) for c in space.choices_of(cfg)],
                   "config": _config_dict(cfg), **res, "reward": reward(res["accuracy"], res["step_time"], res["params"])}
            _append(log, rec)
            history.append(rec)
            bar.update(1)
    bar.close()
    return history[:trials]


def _pending(history: list[dict], k: int) -> list[dict]:
    """The history a proposal sees in a parallel round: the finished trials plus k placeholders (only their
    count matters to the proposal's random seed; evolution picks parents among finished trials)."""
    return history + [{"choices": None, "reward": float("-inf"), "pending": True}] * k


def _params(config) -> int:
    from .scaling import param_count

    return param_count(config, num_classes=10)


def _config_dict(cfg) -> dict:
    d = asdict(cfg)
    d["stages"] = [asdict(s) for s in cfg.stages]
    return d


def _ray_runner(workers: int):
    """Evaluate a round of configs as Ray tasks (one CPU each); Ray is the optional ``search`` extra."""
    try:
        import ray
    except ImportError:
        raise ConfigError("--workers > 1 runs trials on Ray: pip install 'ev2lib[search]' (or use --workers 1)") from None
    if not ray.is_initialized():
        ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False, configure_logging=False)
    remote = ray.remote(num_cpus=1)(_evaluate_trial)

    def run(configs, proxy, train_fn):
        return ray.get([remote.remote(c, proxy, train_fn) for c in configs])

    return run


def pareto_front(trials: list[dict], keys=(("accuracy", 1), ("step_time", -1), ("params", -1))) -> list[dict]:
    """Trials no other trial beats in every objective (higher accuracy, lower step time, fewer parameters)."""
    def dominates(a, b):
        better_eq = all(s * a[k] >= s * b[k] for k, s in keys)
        return better_eq and any(s * a[k] > s * b[k] for k, s in keys)
    return [t for t in trials if not any(dominates(o, t) for o in trials if o is not t)]


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m ev2lib.search", description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=list(PROXIES), default="smoke", help="proxy task preset (ev2lib.nas.PROXIES)")
    p.add_argument("--trials", type=int, default=8)
    p.add_argument("--strategy", default="random", help="random | evolution")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backbone", default="efficientnetv2_cifar")
    p.add_argument("--width", type=float, default=0.5, help="channel multiplier of the backbone (ev2lib.scaling)")
    p.add_argument("--layers", default="1,2,3", help="allowed layer counts per stage")
    p.add_argument("--data", default=None, help="proxy dataset (default: the profile's, cifar10)")
    p.add_argument("--log", required=True, help="JSONL search log; an existing one is resumed")
    p.add_argument("--workers", type=int, default=1, help="> 1: run trials in parallel on Ray")
    p.add_argument("--save", default=None, help="save the finished search as data/results/<name>.json")
    args = p.parse_args(argv)
    if args.trials < 1 or args.workers < 1:
        raise ConfigError("--trials and --workers must be >= 1")
    try:
        layers = tuple(int(x) for x in args.layers.split(","))
    except ValueError:
        raise ConfigError(f"--layers must be comma-separated integers, got {args.layers!r}") from None
    proxy = PROXIES[args.profile]
    if args.data:
        from dataclasses import replace

        proxy = replace(proxy, data=args.data)
    space = search_space(args.backbone, width=args.width, layers=layers)
    t0 = time.perf_counter()
    trials = run_search(space, args.trials, args.log, proxy, args.strategy, args.seed, workers=args.workers)
    best = max(trials, key=lambda t: t["reward"])
    print(f"{len(trials)} trials in {time.perf_counter() - t0:.0f} s; best reward {best['reward']:.4f} "
          f"(trial {best['trial']}, accuracy {best['accuracy']:.3f}, {best['params']:,} params)")
    if args.save:
        from . import results

        header, _ = read_log(args.log)
        command = "python -m ev2lib.search " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
        path = results.save(args.save, {"header": header, "trials": trials}, profile=args.profile, command=command,
                            config={k: v for k, v in vars(args).items() if k not in ("log", "save")})
        print(f"saved {path}")


if __name__ == "__main__":
    from .errors import cli_main

    cli_main(main)
