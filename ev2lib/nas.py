"""Training-aware neural architecture search (paper §3.3): the search space, the reward, candidate evaluation and
the search strategies. The search loop and its resumable log are in :mod:`ev2lib.search`.

* **Search space** (§3.3): a stage-based factorised space as in MnasNet. For every stage of a backbone: the
  operator (MBConv or Fused-MBConv), the number of layers, the kernel (3x3 or 5x5) and the expansion ratio
  (1, 4 or 6). Channel sizes and strides are reused from the backbone ("as they are already searched").
  MBConv stages get squeeze-excitation 0.25 and Fused-MBConv stages none, as in every published V2 table
  (the paper does not say whether SE was searched; we do not search it).
* **Reward** (§3.3): ``A * S**w * P**v`` with w = -0.07, v = -0.05; A accuracy, S training step time, P parameters.
  The paper does not say how S and P are normalised; here both are divided by the same quantities of a
  **reference model measured on the same machine** (by default the backbone itself), so S = P = 1 for the
  backbone and the reward of the backbone is its accuracy. Change it with ``Reward(ref_step_time=..., ref_params=...)``.
* **Training-aware evaluation**: a few epochs of proxy training at a reduced image size, the measured training
  step time on the machine at hand (``ev2lib.bench``) and the parameter count.
* **Strategies**: random search (the paper: "simply random search" suffices for this smaller space) and
  regularized evolution (Real et al., 2019), both ``propose(history) -> ModelConfig``, deterministic given the
  seed and the history.

The paper's backbone is EfficientNet at B4 size with ~10 epochs of ImageNet per candidate (1000 candidates): far
beyond a CPU. The CPU presets search on ``efficientnetv2_cifar`` (a 4-stage, CIFAR-sized V2; optionally thinner via
:func:`ev2lib.scaling.scale`) with a few hundred to a thousand CIFAR-10 images at 16 px.
"""
from __future__ import annotations

import dataclasses
import random
from dataclasses import asdict, dataclass

import torch

from .configs import ModelConfig, Stage, get_config, validate
from .errors import ConfigError

PAPER_BLOCKS = ("mbconv", "fused")
PAPER_KERNELS = (3, 5)
PAPER_EXPANSIONS = (1, 4, 6)
PAPER_W, PAPER_V = -0.07, -0.05  # reward exponents of step time and parameters (§3.3)


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
    def num_stages(self) -> int:
        return len(self.backbone.stages)

    @property
    def size(self) -> int:
        """Number of distinct architectures: (blocks * layers * kernels * expansions) ** stages."""
        per_stage = len(self.blocks) * len(self.layers) * len(self.kernels) * len(self.expansions)
        return per_stage ** self.num_stages

    def check(self, choices) -> tuple[StageChoice, ...]:
        """Validate a list of stage choices (StageChoice or dicts); raise :class:`ConfigError` naming the bad value."""
        out = []
        if len(choices) != self.num_stages:
            raise ConfigError(f"{len(choices)} stage choices for a {self.num_stages}-stage search space")
        for i, c in enumerate(choices, start=1):
            c = c if isinstance(c, StageChoice) else StageChoice(**c)
            for field, allowed in (("block", self.blocks), ("layers", self.layers), ("kernel", self.kernels),
                                   ("expansion", self.expansions)):
                if getattr(c, field) not in allowed:
                    raise ConfigError(f"stage {i}: {field} {getattr(c, field)!r} is outside the search space's "
                                      f"choices {allowed} (paper §3.3: kernel 3/5, expansion 1/4/6, MBConv/Fused)")
            out.append(c)
        return tuple(out)

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
        return tuple(StageChoice(rng.choice(self.blocks), rng.choice(self.layers), rng.choice(self.kernels),
                                 rng.choice(self.expansions)) for _ in range(self.num_stages))

    def mutate(self, choices, rng: random.Random) -> tuple[StageChoice, ...]:
        """Change one decision of one stage to a different allowed value (regularized evolution's mutation)."""
        choices = list(self.check(choices))
        options = {"block": self.blocks, "layers": self.layers, "kernel": self.kernels, "expansion": self.expansions}
        fields = [f for f, allowed in options.items() if len(allowed) > 1]
        if not fields:
            return tuple(choices)
        i, field = rng.randrange(self.num_stages), rng.choice(fields)
        new = rng.choice([x for x in options[field] if x != getattr(choices[i], field)])
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

        cfg = scale(cfg, width=width, name=f"{cfg.name}_w{width:g}")
    return SearchSpace(cfg, layers=tuple(layers), **kw)


def sampler(space: SearchSpace, seed: int = 0):
    """Yield an endless, seeded stream of random :class:`ModelConfig` samples of ``space``."""
    rng = random.Random(seed)
    i = 0
    while True:
        yield space.build(space.sample(rng), name=f"nas_sample_{seed}_{i}")
        i += 1


# ----------------------------------------------------------------------------------------------------------
# Reward


def reward(accuracy: float, step_time: float, params: float, w: float = PAPER_W, v: float = PAPER_V,
           ref_step_time: float = 1.0, ref_params: float = 1.0) -> float:
    """The training-aware reward ``A * S**w * P**v`` (§3.3), S and P divided by a reference model's values."""
    if step_time <= 0 or params <= 0 or ref_step_time <= 0 or ref_params <= 0:
        raise ConfigError("step time, parameters and their references must be positive")
    return accuracy * (step_time / ref_step_time) ** w * (params / ref_params) ** v


@dataclass(frozen=True)
class Reward:
    """:func:`reward` with its exponents and normalisation fixed (stored in the search log's header)."""

    w: float = PAPER_W
    v: float = PAPER_V
    ref_step_time: float = 1.0  # seconds per training step of the reference model, same machine and batch
    ref_params: float = 1.0  # parameters of the reference model

    def __call__(self, accuracy: float, step_time: float, params: float) -> float:
        return reward(accuracy, step_time, params, self.w, self.v, self.ref_step_time, self.ref_params)


# ----------------------------------------------------------------------------------------------------------
# Training-aware evaluation of one candidate


@dataclass(frozen=True)
class ProxyTask:
    """The reduced training every candidate gets (paper: "about 10 epochs with reduced image size")."""

    data: str = "cifar10"  # an ev2lib.data name; "cifar10" uses the shared offline archive where it exists
    image_size: int = 16
    epochs: int = 1
    train_images: int = 512
    eval_images: int = 256
    batch_size: int = 64
    lr: float = 0.1
    eval_size: int = 32  # CIFAR's native size: the test images are scored as they are, whatever the training size
    timing_batch: int = 32  # batch of the step-time measurement
    timing_repeats: int = 5
    threads: int = 1  # torch threads per trial: tiny proxy models gain little from more, and Ray gives each 1 CPU
    seed: int = 0


PROXIES = {  # the search presets; "colab" and "full" are for a GPU
    "smoke": ProxyTask(train_images=384, eval_images=256, image_size=16, epochs=1, batch_size=64, timing_repeats=3),
    "cpu-reference": ProxyTask(train_images=1024, eval_images=500, image_size=16, epochs=3, batch_size=64),
    "colab": ProxyTask(train_images=20000, eval_images=5000, image_size=32, epochs=10, batch_size=128,
                       timing_batch=128, timing_repeats=10),
    "full": ProxyTask(train_images=50000, eval_images=10000, image_size=32, epochs=10, batch_size=128,
                      timing_batch=128, timing_repeats=20),
}


def proxy_train(config: ModelConfig, proxy: ProxyTask) -> float:
    """Default ``train_fn``: train ``config`` on the proxy task with :func:`ev2lib.train.train`; return the final
    top-1 accuracy on the proxy's held-out images (``proxy.eval_images`` of the test split, evaluated at 32 px)."""
    import tempfile

    from .train import make_config, train

    with tempfile.TemporaryDirectory(prefix="ev2nas_") as out:
        cfg = make_config("smoke", model=config, data=proxy.data, epochs=proxy.epochs, batch_size=proxy.batch_size,
                          image_size=proxy.image_size, eval_size=proxy.eval_size, crop="pad", lr=proxy.lr,
                          warmup_epochs=min(0.3, proxy.epochs / 4), train_subset=proxy.train_images,
                          eval_subset=proxy.eval_images, seed=proxy.seed, out=out, progress=False,
                          channels_last=False, log_every=10**9)
        history = train(cfg)["history"]
    return float(history[-1]["test_acc"])


def measure_step_time(config: ModelConfig, image_size: int, batch_size: int = 32, repeats: int = 5,
                      warmup: int = 2, num_classes: int = 10, device: str = "cpu", threads: int | None = None) -> float:
    """Median seconds of one full training step (forward, loss, backward, SGD) on this machine (ev2lib.bench),
    with ``threads`` torch threads (None: as set)."""
    from .bench import make_train_step, time_calls
    from .model import EfficientNet

    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        model = EfficientNet(config, num_classes=num_classes).to(device)
        times = time_calls(make_train_step(model, batch_size, image_size), repeats, warmup, device)
    finally:
        torch.set_num_threads(before)
    return sorted(times)[len(times) // 2]


def evaluate(config: ModelConfig, proxy: ProxyTask = PROXIES["smoke"], train_fn=None, num_classes: int = 10) -> dict:
    """Training-aware evaluation (§3.3): proxy accuracy, measured training step time and parameter count.

    ``train_fn(config, proxy) -> accuracy`` defaults to :func:`proxy_train` (ev2lib.train); pass your own to
    search with another trainer or data. Training is seeded by ``proxy.seed``, so the accuracy is reproducible.
    """
    from .scaling import param_count

    validate(config)
    params = param_count(config, num_classes=num_classes)
    threads = torch.get_num_threads()
    torch.set_num_threads(proxy.threads)
    try:
        torch.manual_seed(proxy.seed)
        accuracy = float((train_fn or proxy_train)(config, proxy))
        step = measure_step_time(config, proxy.image_size, proxy.timing_batch, proxy.timing_repeats,
                                 num_classes=num_classes, device="cuda" if torch.cuda.is_available() else "cpu")
    finally:
        torch.set_num_threads(threads)
    return {"accuracy": accuracy, "step_time": step, "params": params}


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
