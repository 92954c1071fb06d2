"""Training-aware evaluation of a candidate (paper §3.3): a short proxy training, the measured training step time
and the parameters (the terms of :class:`ev2lib.nas.Reward`), and whether the proxy measures anything:
:func:`proxy_noise` (one architecture under several seeds) and :func:`proxy_validity` (rankings against a longer
training, :data:`LONG_PROXIES`). Candidates are scored on validation images, never the test split."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import time
from dataclasses import asdict, dataclass

import torch

from .configs import ModelConfig, validate
from .files import jsonl_cache
from .nas import PAPER_V, PAPER_W, Reward, SearchSpace, search_space
from .summary import count_params

NUM_CLASSES = 10  # of the proxy datasets (CIFAR-10, synthetic)


@contextlib.contextmanager
def _torch_threads(n: int):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def measure(config: ModelConfig, proxy: ProxyTask) -> tuple[float, int]:
    """(S, P) of ``config``: the median seconds of one full training step (forward, loss, backward, SGD;
    ``ev2lib.bench``) on this machine at the proxy's image size, timing batch and threads, and its parameters. On a
    CPU with one thread the seconds are the process's CPU time, which a process running beside it cannot stretch."""
    from .bench import make_train_step, time_calls
    from .model import EfficientNet
    device = "cuda" if torch.cuda.is_available() else "cpu"
    with _torch_threads(proxy.threads):
        model = EfficientNet(config, num_classes=NUM_CLASSES).to(device)
        clock = time.process_time if device == "cpu" and proxy.threads == 1 else time.perf_counter
        times = time_calls(make_train_step(model, proxy.timing_batch, proxy.image_size), proxy.timing_repeats,
                           warmup=2, device=device, clock=clock)
    return sorted(times)[len(times) // 2], count_params(model)


@dataclass(frozen=True)
class ProxyTask:
    """The reduced training every candidate gets ("about 10 epochs with reduced image size"): ``train_images`` at
    ``image_size``, scored at that size on ``val_images`` held out of the training split, never the test split."""

    data: str = "cifar10"  # an ev2lib.data name; "cifar10" uses the shared offline archive where it exists
    image_size: int = 16  # training and scoring size
    epochs: int = 1
    train_images: int = 512
    val_images: int = 500  # held out of the training split: the accuracy the search ranks by
    eval_images: int = 100  # test images, scored once at the end of each run (not used by the search)
    batch_size: int = 64
    lr: float = 0.1
    timing_batch: int = 32  # batch of the step-time measurement
    timing_repeats: int = 5
    threads: int = 1  # torch threads per trial: tiny proxy models gain little from more, and Ray gives each 1 CPU
    seed: int = 0


PROXIES = {  # the search presets, by ev2lib's profile names; "colab" and "full" are for a GPU
    "smoke": ProxyTask(train_images=384, val_images=256, eval_images=64, image_size=16, epochs=1, batch_size=64,
                       timing_repeats=3),
    # The smallest proxy whose spread across architectures clearly exceeds its seed-to-seed noise (the recorded
    # noise check, python -m ev2lib.search --noise, measures both); ~1 min per trial on one thread.
    "cpu-reference": ProxyTask(train_images=4000, val_images=5000, eval_images=200, image_size=16, epochs=8,
                               batch_size=64),
    # One GPU, sized for the chapter's ~15 minutes on a T4 (20 trials, the noise, the validity check): an estimate.
    "colab": ProxyTask(train_images=10000, val_images=5000, eval_images=1000, image_size=32, epochs=8,
                       batch_size=128, timing_batch=128, timing_repeats=10),
    "full": ProxyTask(train_images=45000, val_images=5000, eval_images=1000, image_size=32, epochs=10,
                      batch_size=128, timing_batch=128, timing_repeats=20),
}

# The longer training that checks the proxy's ranking (:func:`proxy_validity`): more images and epochs.
LONG_PROXIES = {
    "smoke": dataclasses.replace(PROXIES["smoke"], epochs=2),
    "cpu-reference": dataclasses.replace(PROXIES["cpu-reference"], train_images=12000, epochs=10),  # 3.75x the steps
    "colab": dataclasses.replace(PROXIES["colab"], train_images=20000, epochs=15),
    "full": dataclasses.replace(PROXIES["full"], epochs=30),
}


def proxy_train(config: ModelConfig, proxy: ProxyTask) -> float:
    """Default ``train_fn``: train ``config`` on the proxy task (:func:`ev2lib.train.train`); return its final top-1
    accuracy on the proxy's validation images, at the training size ``proxy.image_size``."""
    import tempfile
    from .train import make_config, train
    with tempfile.TemporaryDirectory(prefix="ev2nas_") as out:
        cfg = make_config("smoke", model=config, data=proxy.data, epochs=proxy.epochs, batch_size=proxy.batch_size,
                          image_size=proxy.image_size, eval_size=proxy.image_size, crop="pad", lr=proxy.lr,
                          warmup_epochs=min(0.3, proxy.epochs / 4), train_subset=proxy.train_images,
                          val_images=proxy.val_images, eval_subset=proxy.eval_images, seed=proxy.seed, out=out,
                          progress=False, channels_last=False, log_every=10**9,
                          eval_every=proxy.epochs)  # scored once, after the last epoch
        history = train(cfg)["history"]
    return float(history[-1]["val_acc"])


def proxy_accuracy(config: ModelConfig, proxy: ProxyTask, train_fn=None) -> float:
    """``train_fn(config, proxy)`` (default :func:`proxy_train`) on ``proxy.threads`` threads, seeded by ``proxy.seed``."""
    with _torch_threads(proxy.threads):
        torch.manual_seed(proxy.seed)
        return float((train_fn or proxy_train)(config, proxy))


def evaluate_candidate(config: ModelConfig, proxy: ProxyTask = PROXIES["smoke"], train_fn=None) -> dict:
    """Training-aware evaluation (§3.3): proxy accuracy, training step time, parameters, wall seconds.
    ``train_fn(config, proxy) -> accuracy`` defaults to :func:`proxy_train`; seeded by ``proxy.seed``."""
    validate(config)
    t0 = time.perf_counter()
    accuracy = proxy_accuracy(config, proxy, train_fn)
    step_time, params = measure(config, proxy)
    return {"accuracy": accuracy, "step_time": step_time, "params": params, "seconds": time.perf_counter() - t0}


def reward_relative_to(reference: ModelConfig, proxy: ProxyTask, w: float = PAPER_W, v: float = PAPER_V) -> Reward:
    """The reward with S and P divided by ``reference``'s, measured now as every candidate is (the reference then
    scores its own accuracy)."""
    step_time, params = measure(reference, proxy)
    return Reward(w, v, step_time, params)


# --- Does the proxy measure anything? Its noise (seeds) and its validity (rank agreement with longer training) ----

def proxy_noise(config: ModelConfig, proxy: ProxyTask, seeds, reward: Reward | None = None, train_fn=None,
                cache=None) -> list[dict]:
    """The same architecture under each seed (initialisation, training subset and batch order change; the validation
    images do not): ``{"seed", "accuracy", "step_time", "params", "seconds"}`` (+ ``"reward"``) a seed. Its spread is
    the proxy's noise: smaller differences between architectures are not measured."""
    out = []
    for seed in seeds:
        key = json.dumps({"stages": [asdict(st) for st in config.stages], "proxy": asdict(proxy), "seed": seed})
        res = jsonl_cache(cache, key, lambda: evaluate_candidate(config, dataclasses.replace(proxy, seed=seed), train_fn))
        rec = {"seed": seed, **res}
        if reward is not None:
            rec["reward"] = reward(res["accuracy"], res["step_time"], res["params"])
        out.append(rec)
    return out


def spread_sample(trials: list[dict], n: int = 8) -> list[dict]:
    """``n`` trials from across the reward range: sorted by reward, evenly spaced (the worst and the best included)."""
    ranked = sorted(trials, key=lambda t: t["reward"])
    if n >= len(ranked):
        return ranked
    return [ranked[round(i * (len(ranked) - 1) / (n - 1))] for i in range(n)]


def proxy_validity(trials_or_configs, proxy: ProxyTask, long_proxy: ProxyTask, reward: Reward | None = None,
                   space: SearchSpace | None = None, train_fn=None, cache=None) -> list[dict]:
    """Per architecture, the proxy's accuracy and reward beside a longer training's (``long_proxy``). Items are search
    trials (config rebuilt in ``space``) or configs. S and P belong to the architecture: the long reward is
    ``reward(long accuracy, S, P)`` (un-normalised by default: a constant factor changes no ranking)."""
    reward = reward or Reward()
    out = []
    for i, item in enumerate(trials_or_configs):
        if isinstance(item, ModelConfig):
            config, res, trial = item, evaluate_candidate(item, proxy, train_fn), None
        else:
            config, res, trial = (space or search_space(width=0.5)).build(item["choices"]), item, item.get("trial")
        key = json.dumps({"stages": [asdict(st) for st in config.stages], "proxy": asdict(long_proxy)})
        t0 = time.perf_counter()
        long = jsonl_cache(cache, key, lambda: {"accuracy": proxy_accuracy(config, long_proxy, train_fn),
                                            "seconds": time.perf_counter() - t0})
        long_acc = long["accuracy"]
        out.append({"trial": trial if trial is not None else i, "stages": [asdict(c) for c in config.stages],
                    "step_time": res["step_time"], "params": res["params"],
                    "proxy_accuracy": res["accuracy"], "proxy_reward": reward(res["accuracy"], res["step_time"],
                                                                              res["params"]),
                    "long_accuracy": long_acc, "long_reward": reward(long_acc, res["step_time"], res["params"]),
                    "long_seconds": long["seconds"]})
    return out


