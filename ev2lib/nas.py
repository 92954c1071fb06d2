"""Training-aware neural architecture search (paper §3.3), in the order a search uses it.

    python -m ev2lib.nas --profile smoke --trials 8 --log runs/nas_smoke.jsonl
    python -m ev2lib.nas --profile cpu-reference --trials 50 --log runs/nas_cpu.jsonl --save nas_search_cifar10
    python -m ev2lib.nas --profile cpu-reference --noise --seeds 5 --cache runs/nas_noise.jsonl --save nas_proxy_noise_cifar10
    python -m ev2lib.nas --profile cpu-reference --validity --log runs/nas_cpu.jsonl --cache runs/nas_validity.jsonl \
        --save nas_proxy_validity_cifar10

* **Search space** (§3.3): a stage-based factorised space as in MnasNet. For every stage of a backbone: the
  operator (MBConv or Fused-MBConv), the number of layers, the kernel (3x3 or 5x5) and the expansion ratio
  (1, 4 or 6). Channel sizes and strides are reused from the backbone ("as they are already searched").
  MBConv stages get squeeze-excitation 0.25 and Fused-MBConv stages none, as in every published V2 table
  (the paper does not say whether SE was searched; we do not search it).
* **Reward** (§3.3): ``A * S**w * P**v`` with w = -0.07, v = -0.05; A accuracy, S training step time, P parameters.
  The paper does not say how S and P are normalised; here both are divided by the same quantities of a
  **reference model measured on the same machine** (by default the backbone itself), so S = P = 1 for the
  backbone and the reward of the backbone is its accuracy. Change it with ``Reward(ref_step_time=..., ref_params=...)``.
* **Proxy evaluation** (training-aware): a few epochs of proxy training at a reduced image size, scored at that
  same size on validation images held out of the training split (never the test split), the measured training
  step time on the machine at hand (``ev2lib.bench``) and the parameter count.
* **Is the proxy any good?** :func:`proxy_noise` (one architecture, several seeds: the score's noise) and
  :func:`proxy_validity` (architectures from across a search's reward range trained again for longer,
  :data:`LONG_PROXIES`; compare the rankings with :func:`kendall_tau`).
* **Strategies**: random search (the paper: "simply random search" suffices for this smaller space) and
  regularized evolution (Real et al., 2019), both ``propose(history) -> ModelConfig``, deterministic given the
  seed and the history.
* **Log**: one JSONL header line (space, strategy, seed, proxy task, reward normalisation), then one line per
  finished trial ``{"trial", "choices", "config", "accuracy", "step_time", "params", "seconds", "reward"}``, fsynced
  when its trial finishes. Restarting with the same arguments skips the finished trials and, since a proposal
  depends only on (seed, history), proposes exactly what an uninterrupted search would. A crash while writing
  leaves at most a torn *last* line: it is dropped with a warning (that trial runs again); a damaged line anywhere
  else is an error (the log was edited or mixed up), and nothing is rewritten.
* **Loop**: trials run one after another, or ``workers`` at a time as Ray tasks (``pip install ev2lib[search]``)
  in rounds whose proposals see the same history, so the result depends on ``workers`` but not on timing.

The paper's backbone is EfficientNet at B4 size with ~10 epochs of ImageNet per candidate (1000 candidates): far
beyond a CPU. The CPU presets search on ``efficientnetv2_cifar`` (a 4-stage, CIFAR-sized V2; optionally thinner via
:func:`ev2lib.scaling.scale`) with a few hundred (smoke) to 2,000 (cpu-reference) CIFAR-10 images at 16 px.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import random
import statistics
import sys
import time
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .configs import ModelConfig, Stage, get_config, validate
from .errors import ConfigError, SearchLogError
from .files import append_jsonl, atomic_write
from .summary import count_params

PAPER_BLOCKS = ("mbconv", "fused")
PAPER_KERNELS = (3, 5)
PAPER_EXPANSIONS = (1, 4, 6)
PAPER_W, PAPER_V = -0.07, -0.05  # reward exponents of step time and parameters (§3.3)
NUM_CLASSES = 10  # of the proxy datasets (CIFAR-10, synthetic)


# ----------------------------------------------------------------------------------------------------------
# Search space


@dataclass(frozen=True)
class StageChoice:
    """The searched decisions of one stage."""

    block: str  # "mbconv" | "fused"
    layers: int
    kernel: int  # 3 | 5
    expansion: int  # 1 | 4 | 6


def _check_subset(what: str, values, allowed) -> tuple:
    values = tuple(values)
    bad = [x for x in values if x not in allowed]
    if bad or not values:
        raise ConfigError(f"search space {what} {bad or values} outside the paper's choices {tuple(allowed)} (§3.3)")
    return values


@dataclass(frozen=True)
class SearchSpace:
    """Per stage of ``backbone``: block x layers x kernel x expansion; channels, strides, stem and head reused."""

    backbone: ModelConfig
    layers: tuple = (1, 2, 3)
    blocks: tuple = PAPER_BLOCKS
    kernels: tuple = PAPER_KERNELS
    expansions: tuple = PAPER_EXPANSIONS
    se_ratio: float = 0.25  # on MBConv stages; Fused-MBConv stages have none

    def __post_init__(self):
        validate(self.backbone)
        object.__setattr__(self, "blocks", _check_subset("blocks", self.blocks, PAPER_BLOCKS))
        object.__setattr__(self, "kernels", _check_subset("kernels", self.kernels, PAPER_KERNELS))
        object.__setattr__(self, "expansions", _check_subset("expansions", self.expansions, PAPER_EXPANSIONS))
        layers = tuple(int(n) for n in self.layers)
        if not layers or min(layers) < 1:
            raise ConfigError(f"search space layers {self.layers} must be positive integers")
        object.__setattr__(self, "layers", layers)

    @property
    def options(self) -> dict:
        """The allowed values of each decision of a stage, in StageChoice's field order."""
        return {"block": self.blocks, "layers": self.layers, "kernel": self.kernels, "expansion": self.expansions}

    @property
    def num_stages(self) -> int:
        return len(self.backbone.stages)

    @property
    def size(self) -> int:
        """Number of distinct architectures: (blocks * layers * kernels * expansions) ** stages."""
        return math.prod(len(allowed) for allowed in self.options.values()) ** self.num_stages

    def check(self, choices) -> tuple[StageChoice, ...]:
        """Validate a list of stage choices (StageChoice or dicts); raise :class:`ConfigError` naming the bad value."""
        if len(choices) != self.num_stages:
            raise ConfigError(f"{len(choices)} stage choices for a {self.num_stages}-stage search space")
        out = tuple(c if isinstance(c, StageChoice) else StageChoice(**c) for c in choices)
        for i, c in enumerate(out, start=1):
            for field, allowed in self.options.items():
                if getattr(c, field) not in allowed:
                    raise ConfigError(f"stage {i}: {field} {getattr(c, field)!r} is outside the search space's "
                                      f"choices {allowed} (paper §3.3: kernel 3/5, expansion 1/4/6, MBConv/Fused)")
        return out

    def build(self, choices, name: str = "nas_candidate") -> ModelConfig:
        """Stage choices -> a :class:`ModelConfig` that :func:`ev2lib.create_model` accepts."""
        rows = [Stage(c.block, c.kernel, b.stride, c.expansion, b.in_channels, b.out_channels, c.layers,
                      self.se_ratio if c.block == "mbconv" else 0.0)
                for c, b in zip(self.check(choices), self.backbone.stages)]
        return self.backbone.replace(stages=tuple(rows), name=name, family="custom",
                                     source=f"NAS sample on {self.backbone.name} (ev2lib.nas)")

    def choices_of(self, config: ModelConfig) -> tuple[StageChoice, ...]:
        """The stage choices of a config of this space; a config outside the space raises :class:`ConfigError`."""
        cfg = validate(config)
        if len(cfg.stages) != self.num_stages:
            raise ConfigError(f"{cfg.name} has {len(cfg.stages)} stages; this space has {self.num_stages}")
        for i, (s, b) in enumerate(zip(cfg.stages, self.backbone.stages), start=1):
            if (s.in_channels, s.out_channels, s.stride) != (b.in_channels, b.out_channels, b.stride):
                raise ConfigError(f"{cfg.name} stage {i}: channels/stride {s.in_channels}->{s.out_channels}/s{s.stride}"
                                  f" differ from the backbone's {b.in_channels}->{b.out_channels}/s{b.stride}")
        return self.check([StageChoice(s.block, s.repeats, s.kernel, s.expansion) for s in cfg.stages])

    def sample(self, rng: random.Random) -> tuple[StageChoice, ...]:
        """One architecture drawn uniformly from the space."""
        return tuple(StageChoice(**{f: rng.choice(allowed) for f, allowed in self.options.items()})
                     for _ in range(self.num_stages))

    def mutate(self, choices, rng: random.Random) -> tuple[StageChoice, ...]:
        """Change one decision of one stage to a different allowed value (regularized evolution's mutation)."""
        choices = list(self.check(choices))
        fields = [f for f, allowed in self.options.items() if len(allowed) > 1]
        if not fields:
            return tuple(choices)
        i, field = rng.randrange(self.num_stages), rng.choice(fields)
        new = rng.choice([x for x in self.options[field] if x != getattr(choices[i], field)])
        choices[i] = dataclasses.replace(choices[i], **{field: new})
        return tuple(choices)

    def describe(self) -> dict:
        """A JSON-able description (written into the search log's header)."""
        return {"backbone": self.backbone.name, "stages": [asdict(s) for s in self.backbone.stages],
                "head_channels": self.backbone.head_channels, "layers": list(self.layers), "blocks": list(self.blocks),
                "kernels": list(self.kernels), "expansions": list(self.expansions), "se_ratio": self.se_ratio}


def search_space(backbone: str | ModelConfig = "efficientnetv2_cifar", width: float = 1.0, layers=(1, 2, 3),
                 **kw) -> SearchSpace:
    """The paper's space on ``backbone`` (its channels optionally scaled by ``width``, :func:`ev2lib.scaling.scale`)."""
    cfg = get_config(backbone)
    if width != 1.0:
        from .scaling import scale

        cfg = dataclasses.replace(scale(cfg, width=width), name=f"{cfg.name}_w{width:g}")
    return SearchSpace(cfg, layers=tuple(layers), **kw)


# ----------------------------------------------------------------------------------------------------------
# Reward: A * S**w * P**v, with S and P measured the same way for the candidates and the reference


@dataclass(frozen=True)
class Reward:
    """The training-aware reward ``A * S**w * P**v`` (§3.3): A accuracy, S training step time, P parameters, S and P
    divided by a reference model's (stored in the search log's header). :meth:`relative_to` measures them."""

    w: float = PAPER_W
    v: float = PAPER_V
    ref_step_time: float = 1.0  # seconds per training step of the reference model, same machine and batch
    ref_params: float = 1.0  # parameters of the reference model

    def __call__(self, accuracy: float, step_time: float, params: float) -> float:
        if min(step_time, params, self.ref_step_time, self.ref_params) <= 0:
            raise ConfigError("step time, parameters and their references must be positive")
        return accuracy * (step_time / self.ref_step_time) ** self.w * (params / self.ref_params) ** self.v

    @classmethod
    def relative_to(cls, reference: ModelConfig, proxy: ProxyTask, w: float = PAPER_W, v: float = PAPER_V) -> Reward:
        """S and P divided by ``reference``'s, measured now as every candidate is: the reference scores its accuracy."""
        step_time, params = measure(reference, proxy)
        return cls(w, v, step_time, params)


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
    ``ev2lib.bench``) on this machine at the proxy's image size, timing batch and threads, and its parameters."""
    from .bench import make_train_step, time_calls
    from .model import EfficientNet

    device = "cuda" if torch.cuda.is_available() else "cpu"
    with _torch_threads(proxy.threads):
        model = EfficientNet(config, num_classes=NUM_CLASSES).to(device)
        times = time_calls(make_train_step(model, proxy.timing_batch, proxy.image_size), proxy.timing_repeats,
                           warmup=2, device=device)
    return sorted(times)[len(times) // 2], count_params(model)


# ----------------------------------------------------------------------------------------------------------
# Proxy evaluation of one candidate


@dataclass(frozen=True)
class ProxyTask:
    """The reduced training every candidate gets (paper: "about 10 epochs with reduced image size").

    A candidate trains on ``train_images`` at ``image_size`` and is scored, **at the same size**, on ``val_images``
    training images held out of the training split (the same images for every candidate and seed,
    ``ev2lib.data``): the search never looks at the test split. ``ev2lib.train`` still scores ``eval_images`` test
    images once at the end of every run; the search does not use them.
    """

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
    # Chosen with ci/calibrate_nas_proxy.py (the backbone and 7 random architectures, 2 seeds each; not a result):
    # 2,000 images x 4 epochs scored on 2,000 gave an accuracy spread across architectures 0.8x the seed-to-seed
    # spread; 4,000 x 8 on 5,000 gave 1.7x (seed std 0.008); scoring on 10,000 instead did not lower the seed noise
    # (training, not the validation sample, makes it). ~1 min per trial on one thread beside another process.
    "cpu-reference": ProxyTask(train_images=4000, val_images=5000, eval_images=200, image_size=16, epochs=8,
                               batch_size=64),
    # One GPU, sized for the chapter's ~15 minutes on a T4 (20 trials, the noise, the validity check): an estimate.
    "colab": ProxyTask(train_images=10000, val_images=5000, eval_images=1000, image_size=32, epochs=8,
                       batch_size=128, timing_batch=128, timing_repeats=10),
    "full": ProxyTask(train_images=45000, val_images=5000, eval_images=1000, image_size=32, epochs=10,
                      batch_size=128, timing_batch=128, timing_repeats=20),
}

# The longer training that checks the proxy's ranking (:func:`proxy_validity`), by the same profile names: the same
# size and validation images, more training images and epochs.
LONG_PROXIES = {
    "smoke": dataclasses.replace(PROXIES["smoke"], epochs=2),
    "cpu-reference": dataclasses.replace(PROXIES["cpu-reference"], train_images=12000, epochs=10),  # 3.75x the steps
    "colab": dataclasses.replace(PROXIES["colab"], train_images=20000, epochs=15),
    "full": dataclasses.replace(PROXIES["full"], epochs=30),
}


def proxy_train(config: ModelConfig, proxy: ProxyTask) -> float:
    """Default ``train_fn``: train ``config`` on the proxy task with :func:`ev2lib.train.train`; return the final
    top-1 accuracy on the proxy's validation images (``proxy.val_images`` held out of the training split), scored
    at the training size ``proxy.image_size``."""
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
    """Training-aware evaluation (§3.3): proxy accuracy, measured training step time, parameters, wall seconds.

    ``train_fn(config, proxy) -> accuracy`` defaults to :func:`proxy_train` (ev2lib.train); pass your own to
    search with another trainer or data. Training is seeded by ``proxy.seed``, so the accuracy is reproducible.
    """
    validate(config)
    t0 = time.perf_counter()
    accuracy = proxy_accuracy(config, proxy, train_fn)
    step_time, params = measure(config, proxy)
    return {"accuracy": accuracy, "step_time": step_time, "params": params, "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------------------------------------
# Does the proxy measure anything? Its noise (seeds) and its validity (rank agreement with longer training)


def kendall_tau(x, y) -> float:
    """Kendall's rank correlation tau-b of two equal-length sequences, by the O(n^2) pair count.

    Over all pairs i < j: C concordant (x and y order the pair the same way), D discordant, and the pairs tied in
    x only (Tx), in y only (Ty); pairs tied in both count nowhere.
    ``tau_b = (C - D) / sqrt((C + D + Tx) * (C + D + Ty))``: 1 for the same order, -1 for the reversed one, equal
    to tau-a = (C - D) / (n (n - 1) / 2) when nothing is tied. NaN when either sequence is constant.
    """
    x, y = list(x), list(y)
    if len(x) != len(y) or len(x) < 2:
        raise ValueError(f"kendall_tau needs two sequences of the same length >= 2, got {len(x)} and {len(y)}")
    c = d = tx = ty = 0
    for i in range(len(x)):
        for j in range(i + 1, len(x)):
            sx, sy = (x[i] > x[j]) - (x[i] < x[j]), (y[i] > y[j]) - (y[i] < y[j])
            if sx and sy:
                c, d = c + (sx == sy), d + (sx != sy)
            else:
                tx, ty = tx + (not sx and sy != 0), ty + (not sy and sx != 0)
    denom = math.sqrt((c + d + tx) * (c + d + ty))
    return (c - d) / denom if denom else float("nan")


def _cached(path, key: str, compute) -> dict:
    """``compute()``'s record, or the one already appended to the JSONL ``path`` under ``key`` (so a stopped
    noise or validity run continues where it stopped). A torn line is ignored: that run is computed again."""
    if path is None:
        return compute()
    path = Path(path)
    for line in path.read_text().splitlines() if path.exists() else []:
        with contextlib.suppress(ValueError):
            rec = json.loads(line)
            if isinstance(rec, dict) and rec.get("key") == key:
                return rec["result"]
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    append_jsonl(path, {"key": key, "result": result}, sync=True)
    return result


def proxy_noise(config: ModelConfig, proxy: ProxyTask, seeds, reward: Reward | None = None, train_fn=None,
                cache=None) -> list[dict]:
    """The same architecture evaluated under each seed (:func:`evaluate_candidate` with ``proxy.seed = seed``: the
    initialisation, the training subset and the batch order change; the validation images do not). One record per
    seed: ``{"seed", "accuracy", "step_time", "params", "seconds"}`` plus ``"reward"`` when ``reward`` is given.
    Its spread is the proxy's noise: differences between architectures smaller than it are not measured."""
    out = []
    for seed in seeds:
        key = json.dumps({"stages": [asdict(st) for st in config.stages], "proxy": asdict(proxy), "seed": seed})
        res = _cached(cache, key, lambda: evaluate_candidate(config, dataclasses.replace(proxy, seed=seed), train_fn))
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
    """Per architecture, the proxy's accuracy and reward and those of a longer training run (``long_proxy``).

    Items are search trials (their logged proxy accuracy, step time and parameters are kept, and the config is
    rebuilt from ``choices`` in ``space``) or :class:`ModelConfig` (evaluated with ``proxy`` here). The long run
    trains the same architecture with ``long_proxy`` (its step time is not measured again: S and P are properties
    of the architecture, so the long reward is ``reward(long accuracy, S, P)``). ``reward`` defaults to
    ``Reward()`` (un-normalised: a constant factor, which changes no ranking). Compare the two rankings with
    :func:`kendall_tau`.
    """
    reward = reward or Reward()
    out = []
    for i, item in enumerate(trials_or_configs):
        if isinstance(item, ModelConfig):
            config, res, trial = item, evaluate_candidate(item, proxy, train_fn), None
        else:
            config, res, trial = (space or search_space(width=0.5)).build(item["choices"]), item, item.get("trial")
        key = json.dumps({"stages": [asdict(st) for st in config.stages], "proxy": asdict(long_proxy)})
        t0 = time.perf_counter()
        long = _cached(cache, key, lambda: {"accuracy": proxy_accuracy(config, long_proxy, train_fn),
                                            "seconds": time.perf_counter() - t0})
        long_acc = long["accuracy"]
        out.append({"trial": trial if trial is not None else i, "stages": [asdict(c) for c in config.stages],
                    "step_time": res["step_time"], "params": res["params"],
                    "proxy_accuracy": res["accuracy"], "proxy_reward": reward(res["accuracy"], res["step_time"],
                                                                              res["params"]),
                    "long_accuracy": long_acc, "long_reward": reward(long_acc, res["step_time"], res["params"]),
                    "long_seconds": long["seconds"]})
    return out


# ----------------------------------------------------------------------------------------------------------
# Strategies: propose(history) -> ModelConfig, deterministic given (seed, history)


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


# ----------------------------------------------------------------------------------------------------------
# Log: a header line, then one line per finished trial


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


# ----------------------------------------------------------------------------------------------------------
# Loop


def run_search(space: SearchSpace, trials: int, log: str | Path, proxy: ProxyTask = PROXIES["smoke"],
               strategy_name: str = "random", seed: int = 0, reward: Reward | None = None, train_fn=None,
               workers: int = 1, progress: bool = True, **strategy_kw) -> list[dict]:
    """Run (or resume) a search of ``trials`` trials, logging each to ``log``; return every finished trial.

    ``reward`` defaults to the paper's exponents relative to the backbone measured now (:meth:`Reward.relative_to`;
    kept in the log, so a resumed search scores with the same reference). ``workers > 1`` runs trials on Ray.
    """
    from tqdm.auto import tqdm

    log, strat = Path(log), strategy(strategy_name, space, seed, **strategy_kw)
    header = {"kind": "header", "space": space.describe(), "strategy": strat.name, "strategy_options": strategy_kw,
              "seed": seed, "proxy": asdict(proxy)}
    old, history = read_log(log)
    if old is None:
        reward = reward or Reward.relative_to(space.backbone, proxy)
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


# ----------------------------------------------------------------------------------------------------------
# CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m ev2lib.nas", description=__doc__.split("\n")[0])
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

        command = "python -m ev2lib.nas " + " ".join(sys.argv[1:] if argv is None else argv)
        path = results.save(args.save, data, profile=args.profile, command=command,
                            config={k: v for k, v in vars(args).items() if k not in ("log", "save", "cache")})
        print(f"saved {path}")


if __name__ == "__main__":
    from .errors import cli_main

    cli_main(main)
