"""Training-aware neural architecture search (paper §3.3): the search space and the reward; :mod:`ev2lib.proxy`
evaluates candidates and :mod:`ev2lib.search` runs a search.

* **Search space**: per stage of a backbone the operator (MBConv or Fused-MBConv), the layers, the kernel (3 or 5)
  and the expansion (1, 4 or 6); channels and strides reused. SE 0.25 in MBConv stages, none in fused ones.
* **Reward**: ``A * S**w * P**v``, w = -0.07, v = -0.05; A accuracy, S training step time, P parameters, S and P
  divided by a reference model's measured on the same machine (the paper does not say how it normalises)."""
from __future__ import annotations

import dataclasses
import math
import random
from dataclasses import asdict, dataclass

from .configs import ModelConfig, Stage, get_config, validate
from .errors import ConfigError
from .scaling import scale

PAPER_BLOCKS = ("mbconv", "fused")
PAPER_KERNELS = (3, 5)
PAPER_EXPANSIONS = (1, 4, 6)
PAPER_W, PAPER_V = -0.07, -0.05  # reward exponents of step time and parameters (§3.3)
NUM_CLASSES = 10  # of the proxy datasets (CIFAR-10, synthetic)


# --- Search space -------------------------------------------------------------------------------------------------

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
        cfg = dataclasses.replace(scale(cfg, width=width), name=f"{cfg.name}_w{width:g}")
    return SearchSpace(cfg, layers=tuple(layers), **kw)


# --- Reward: A * S**w * P**v, with S and P measured the same way for the candidates and the reference -------------

@dataclass(frozen=True)
class Reward:
    """The training-aware reward ``A * S**w * P**v`` (§3.3): A accuracy, S training step time, P parameters, S and P
    divided by a reference model's, measured on the same machine (stored in the search log's header;
    :func:`ev2lib.proxy.reward_relative_to` measures them)."""

    w: float = PAPER_W
    v: float = PAPER_V
    ref_step_time: float = 1.0  # seconds per training step of the reference model, same machine and batch
    ref_params: float = 1.0  # parameters of the reference model

    def __call__(self, accuracy: float, step_time: float, params: float) -> float:
        if min(step_time, params, self.ref_step_time, self.ref_params) <= 0:
            raise ConfigError("step time, parameters and their references must be positive")
        return accuracy * (step_time / self.ref_step_time) ** self.w * (params / self.ref_params) ** self.v
