"""Progressive learning with adaptive regularization (paper §4, Algorithm 1, Table 6) and its baselines.

Training is split into M stages, here **phases** (``Phase``; "stage" stays with Table 4's rows). Phase i trains at
image size S_i with regularization Φ_i (dropout, RandAugment magnitude, mixup alpha), both interpolated between a
small, weak start (S_0, Φ_0) and the target (S_e, Φ_e)::

    S_i = S_0 + (S_e - S_0) * i / (M - 1)        φ_i = φ_0 + (φ_e - φ_0) * i / (M - 1)        (Algorithm 1)

Weights, optimizer, EMA and the LR schedule carry over; only the data pipeline, the mixing and the dropout change
(:func:`apply_phase`). The official ``main.py`` differs (``official_schedule``): sizes at (i + 1) / M, dropout fixed,
CutMix ramped with mixup. Intermediate sizes round to ``size_multiple`` (8: few compiled shapes)."""
from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass

from .errors import ConfigError


@dataclass(frozen=True)
class Phase:
    """What one phase (Algorithm 1's stage i) trains with. ``dropout=None`` leaves the model's dropout unchanged."""

    index: int
    start_epoch: int
    end_epoch: int  # exclusive
    image_size: int
    randaug_magnitude: float  # on the paper's / official code's 0-10 scale (see ev2lib.data for the mapping)
    mixup_alpha: float
    cutmix_alpha: float
    dropout: float | None

    def as_dict(self) -> dict:
        return asdict(self)


def apply_phase(model, data, phase) -> dict:
    """Set a phase's image size and regularization on the data pipeline and the model; returns it as a dict
    (what checkpoints store). ``phase`` is a :class:`Phase` or such a dict."""
    p = phase.as_dict() if isinstance(phase, Phase) else dict(phase)
    if p.get("dropout") is not None:
        model.set_dropout(p["dropout"])
    data.set_augment(image_size=p["image_size"], randaug_magnitude=p["randaug_magnitude"], mixup_alpha=p["mixup_alpha"],
                     cutmix_alpha=p["cutmix_alpha"])
    return p


def _lerp(lo: float, hi: float, t: float) -> float:
    return lo + (hi - lo) * t


def _round_to(x: float, multiple: int) -> int:
    return int(round(x / multiple) * multiple)


def _pair(name, v):
    if isinstance(v, (int, float)):
        v = (v, v)
    lo, hi = v
    if lo < 0 or hi < 0:
        raise ConfigError(f"{name} range {v} must be non-negative")
    return float(lo), float(hi)


def _phase_bounds(total_epochs: int, num_phases: int, i: int) -> tuple[int, int]:
    return total_epochs * i // num_phases, total_epochs * (i + 1) // num_phases


class ProgressiveSchedule:
    """Algorithm 1: ``num_phases`` phases over ``total_epochs``. image_size / randaug / mixup / cutmix / dropout are
    (start, end) pairs or constants (``dropout=None`` never touches the model's, as the official code);
    ``size_rule`` "paper" (S_0 first, i/(M-1)) or "official" (S_0 + (S_e - S_0)(i + 1)/M, int()); ``size_multiple``
    rounds the intermediate sizes (the endpoints stay exact)."""

    def __init__(self, num_phases: int, total_epochs: int, image_size=(128, 300), randaug=(5, 15), mixup=(0, 0),
                 cutmix=(0, 0), dropout=(0.1, 0.3), size_rule: str = "paper", size_multiple: int = 8,
                 name: str = "progressive"):
        if num_phases < 1 or total_epochs < num_phases:
            raise ConfigError(f"need 1 <= num_phases <= total_epochs, got {num_phases} phases over {total_epochs} epochs")
        if size_rule not in ("paper", "official"):
            raise ConfigError(f"size_rule must be 'paper' or 'official', got {size_rule!r}")
        self.num_phases, self.total_epochs, self.name = num_phases, total_epochs, name
        self.image_size = _pair("image_size", image_size)
        if self.image_size[0] < 1:
            raise ConfigError(f"image sizes must be positive, got {image_size}")
        self.randaug, self.mixup, self.cutmix = _pair("randaug", randaug), _pair("mixup", mixup), _pair("cutmix", cutmix)
        self.dropout = None if dropout is None else _pair("dropout", dropout)
        if self.dropout and not self.dropout[1] < 1:
            raise ConfigError(f"dropout must be < 1, got {dropout}")
        self.size_rule, self.size_multiple = size_rule, size_multiple

    def _t(self, i: int) -> float:
        """Interpolation weight of phase i for the regularizers (np.linspace in the official code too)."""
        return i / (self.num_phases - 1) if self.num_phases > 1 else 1.0

    def _size(self, i: int) -> int:
        s0, se = self.image_size
        if self.size_rule == "official":
            return int(s0 + (se - s0) * (i + 1) / self.num_phases)
        if i in (0, self.num_phases - 1) or self.num_phases == 1:
            return int(se if i == self.num_phases - 1 else s0)
        return _round_to(_lerp(s0, se, self._t(i)), self.size_multiple)

    def phase(self, i: int) -> Phase:
        """The settings of phase ``i`` (0-based)."""
        if not 0 <= i < self.num_phases:
            raise ConfigError(f"phase {i} is outside 0..{self.num_phases - 1}")
        t = self._t(i)
        start, end = _phase_bounds(self.total_epochs, self.num_phases, i)
        return Phase(i, start, end, self._size(i), round(_lerp(*self.randaug, t), 6),
                             round(_lerp(*self.mixup, t), 6), round(_lerp(*self.cutmix, t), 6),
                             None if self.dropout is None else round(_lerp(*self.dropout, t), 6))

    def phase_index(self, epoch: int) -> int:
        if not 0 <= epoch < self.total_epochs:
            raise ConfigError(f"epoch {epoch} is outside 0..{self.total_epochs - 1}")
        return next(i for i in range(self.num_phases) if epoch < _phase_bounds(self.total_epochs, self.num_phases, i)[1])

    def phase_at(self, epoch: int) -> Phase:
        """The settings to train epoch ``epoch`` (0-based) with: the hook ``ev2lib.train`` calls every epoch."""
        return self.phase(self.phase_index(epoch))

    def phases(self) -> list[Phase]:
        return [self.phase(i) for i in range(self.num_phases)]

    def scaled(self, image_size=None, total_epochs: int | None = None, size_multiple: int | None = None):
        """The same schedule on another image-size range and epoch budget, regularization unchanged: e.g. the
        paper's V2-S schedule mapped onto CIFAR-sized images, ``paper_schedule().scaled((16, 32), 8, 4)``."""
        return ProgressiveSchedule(self.num_phases, total_epochs or self.total_epochs, image_size or self.image_size,
                                   self.randaug, self.mixup, self.cutmix, self.dropout, self.size_rule,
                                   size_multiple or self.size_multiple, self.name)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}({self.name!r}, {self.num_phases} phases / {self.total_epochs} epochs, "
                f"size {self.image_size}, randaug {self.randaug}, mixup {self.mixup}, cutmix {self.cutmix}, "
                f"dropout {self.dropout})")


class RandomResizeSchedule(ProgressiveSchedule):
    """Random resize (Hoffer et al. 2019, "Mix & Match"), the paper's Table 13 baseline: a random image size every
    ``every`` epochs ("every eight epochs" on TPU in the paper). With ``adaptive=True`` the regularization follows
    the sampled size (the paper's adaptive regularization); otherwise it stays at the end values."""

    def __init__(self, total_epochs: int, image_size=(128, 300), every: int = 1, adaptive: bool = True, seed: int = 0,
                 size_multiple: int = 8, **ranges):
        super().__init__(max(1, math.ceil(total_epochs / every)), total_epochs, image_size,
                         size_multiple=size_multiple, name="random resize" + (" + adaptive" if adaptive else ""),
                         **ranges)
        self.every, self.adaptive, self.seed = every, adaptive, seed
        rng = random.Random(seed)  # each seed its own sequence of sizes, uniform over the grid, both ends included
        lo, hi = (int(v) for v in self.image_size)
        grid = sorted({lo, hi, *range(_round_to(lo, size_multiple), hi + 1, size_multiple)} & set(range(lo, hi + 1)))
        self._sizes = [rng.choice(grid) for _ in range(self.num_phases)]

    def phase(self, i: int) -> Phase:
        if not 0 <= i < self.num_phases:
            raise ConfigError(f"phase {i} is outside 0..{self.num_phases - 1}")
        lo, hi = self.image_size
        size = self._sizes[i]
        t = (size - lo) / (hi - lo) if self.adaptive and hi > lo else 1.0
        start, end = i * self.every, min((i + 1) * self.every, self.total_epochs)
        return Phase(i, start, end, size, round(_lerp(*self.randaug, t), 6), round(_lerp(*self.mixup, t), 6),
                             round(_lerp(*self.cutmix, t), 6),
                             None if self.dropout is None else round(_lerp(*self.dropout, t), 6))

    def phase_index(self, epoch: int) -> int:
        if not 0 <= epoch < self.total_epochs:
            raise ConfigError(f"epoch {epoch} is outside 0..{self.total_epochs - 1}")
        return epoch // self.every

    def scaled(self, image_size=None, total_epochs: int | None = None, size_multiple: int | None = None):
        return RandomResizeSchedule(total_epochs or self.total_epochs, image_size or self.image_size, self.every,
                                    self.adaptive, self.seed, size_multiple or self.size_multiple,
                                    randaug=self.randaug, mixup=self.mixup, cutmix=self.cutmix, dropout=self.dropout)


# ------------------------------------------------------------------------------------------------------ presets
# Paper Table 6 (min, max): image size, RandAugment magnitude, mixup alpha, dropout rate.
PAPER_TABLE6 = {
    "efficientnetv2_s": dict(image_size=(128, 300), randaug=(5, 15), mixup=(0, 0), dropout=(0.1, 0.3)),
    "efficientnetv2_m": dict(image_size=(128, 380), randaug=(5, 20), mixup=(0, 0.2), dropout=(0.1, 0.4)),
    "efficientnetv2_l": dict(image_size=(128, 380), randaug=(5, 25), mixup=(0, 0.4), dropout=(0.1, 0.5)),
}
# Official effnetv2_configs.py: (train size, RandAugment max, mixup = CutMix max, fixed dropout); ibase 128, RA from 5.
OFFICIAL = {
    "efficientnetv2_s": (300, 10, 0.0, 0.2),
    "efficientnetv2_m": (384, 15, 0.2, 0.3),
    "efficientnetv2_l": (384, 20, 0.5, 0.4),
    "efficientnetv2_xl": (384, 20, 0.5, 0.4),
}


def paper_schedule(variant: str = "efficientnetv2_s", total_epochs: int = 350, num_phases: int = 4,
                   size_multiple: int = 8) -> ProgressiveSchedule:
    """Algorithm 1 with the paper's Table 6 settings (4 phases of ~87 epochs on ImageNet)."""
    if variant not in PAPER_TABLE6:
        raise ConfigError(f"the paper's Table 6 covers {', '.join(PAPER_TABLE6)}, not {variant!r}")
    return ProgressiveSchedule(num_phases, total_epochs, size_multiple=size_multiple,
                               name=f"paper Table 6 ({variant})", **PAPER_TABLE6[variant])


def official_schedule(variant: str = "efficientnetv2_s", total_epochs: int = 350, num_phases: int = 4) -> ProgressiveSchedule:
    """The released code's schedule (main.py): sizes at (i + 1)/M from 128, RandAugment 5 -> max, mixup and CutMix
    0 -> max, dropout fixed."""
    if variant not in OFFICIAL:
        raise ConfigError(f"the official code configures {', '.join(OFFICIAL)}, not {variant!r}")
    size, ra, mix, dropout = OFFICIAL[variant]
    return ProgressiveSchedule(num_phases, total_epochs, image_size=(128, size), randaug=(5, ra), mixup=(0, mix),
                               cutmix=(0, mix), dropout=dropout, size_rule="official", size_multiple=1,
                               name=f"official code ({variant})")


def fixed_schedule(total_epochs: int, image_size: int, randaug: float = 0, mixup: float = 0, cutmix: float = 0,
                   dropout: float | None = None) -> ProgressiveSchedule:
    """The baseline: one phase, one size, constant regularization."""
    return ProgressiveSchedule(1, total_epochs, image_size, randaug, mixup, cutmix, dropout, name=f"fixed {image_size}px")


def progressive_resize(num_phases: int, total_epochs: int, image_size=(128, 300), randaug: float = 15,
                       mixup: float = 0, cutmix: float = 0, dropout: float | None = 0.3,
                       size_multiple: int = 8) -> ProgressiveSchedule:
    """Progressive resizing without adaptive regularization (Howard 2018; paper Table 13): sizes grow,
    regularization stays constant at the given values."""
    return ProgressiveSchedule(num_phases, total_epochs, image_size, randaug, mixup, cutmix, dropout,
                               size_multiple=size_multiple, name="progressive resize")


SCHEDULES = ("paper", "official", "progressive-resize", "random-resize")


def make_schedule(kind: str, epochs: int, variant: str = "efficientnetv2_s", sizes=None,
                  seed: int = 0) -> ProgressiveSchedule:
    """A schedule by name over ``epochs`` (the CLI's ``--progressive``), optionally mapped onto the sizes ``sizes``
    (e.g. (16, 32)). "random-resize" draws a size (from ``seed``) every ``max(1, epochs // 8)`` epochs, about 8 in
    all, not every 8 epochs as the paper (44 in 350): that rate would give a short run one or two sizes."""
    if kind == "paper":
        s = paper_schedule(variant, epochs)
    elif kind == "official":
        s = official_schedule(variant, epochs)
    elif kind == "progressive-resize":
        s = progressive_resize(4, epochs)
    elif kind == "random-resize":
        s = RandomResizeSchedule(epochs, every=max(1, epochs // 8), seed=seed)
    else:
        raise ConfigError(f"unknown progressive schedule {kind!r}; known: {', '.join(SCHEDULES)}")
    return s.scaled(tuple(sizes), epochs) if sizes else s
