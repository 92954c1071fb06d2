"""The network builder: a :class:`~ev2lib.configs.ModelConfig` stage table -> ``nn.Module`` (paper §3.3, Table 4).

``create_model("efficientnetv2_s")`` builds the official EfficientNetV2-S; every variant, the EfficientNet V1
baselines and any NAS sample go through the same :class:`EfficientNet` class.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch
from torch import nn

from .blocks import BLOCKS, ConvBNAct
from .configs import BLOCK_TYPES, ModelConfig, get_config, list_configs
from .errors import ConfigError, InputSizeError, WeightsError
from .weights import SCRATCH_NORMALIZATION, SOURCES, load_pretrained, load_weights

PADDINGS = ("symmetric", "same")


class Normalize:
    """Input normalisation of 0-255 pixels, ``(x - mean) / std`` per channel, its two tensors made once per device
    (not per call: a host-to-device copy each step would wait for the device's queue)."""

    def __init__(self, normalization):
        self.normalization = tuple(tuple(float(v) for v in t) for t in normalization)
        self._on: tuple | None = None  # (device, mean (1, 3, 1, 1), std (1, 3, 1, 1))

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._on is None or self._on[0] != x.device:
            self._on = (x.device, *(torch.tensor(v, device=x.device).view(1, 3, 1, 1) for v in self.normalization))
        return (x.float() - self._on[1]) / self._on[2]


class EfficientNet(nn.Module):
    """Stem (stage 0) -> block stages 1..K -> 1x1 head conv -> pooling -> dropout -> FC. ``features[i]`` is Table 4's
    stage i. ``normalization`` is the input normalisation the weights expect (:meth:`normalize`): (x-128)/128 from
    scratch, set by :func:`ev2lib.load_pretrained` to what published weights were trained with."""

    frozen: tuple[int, ...] = ()  # stages that do not train (:meth:`freeze`)

    def __init__(self, config: ModelConfig, num_classes: int = 1000, padding: str = "symmetric"):
        super().__init__()
        if padding not in PADDINGS:
            raise ConfigError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be positive, got {num_classes}")
        self.config, self.padding, self.num_classes = config, padding, num_classes
        # The smallest input side: one pixel per cell of the final feature map. A plain int, read in forward (a
        # property computing it there would break torch.compile's graph).
        self.min_image_size = config.total_stride
        self._normalize = Normalize(SCRATCH_NORMALIZATION)
        bn = dict(bn_eps=config.bn_eps, bn_momentum=config.bn_momentum, padding=padding)

        layers = [ConvBNAct(3, config.stem_channels, 3, config.stem_stride, **bn)]  # stage 0: stem
        n_blocks, idx = config.num_blocks, 0
        for s in config.stages:
            stage = []
            for r in range(s.repeats):
                cin, stride = (s.in_channels, s.stride) if r == 0 else (s.out_channels, 1)
                # Stochastic depth grows linearly with the global block index: 0 for the first, p*(N-1)/N last.
                drop_path = config.drop_path_rate * idx / n_blocks
                stage.append(BLOCKS[s.block](cin, s.out_channels, s.kernel, stride, s.expansion, s.se_ratio,
                                             drop_path, **bn))
                idx += 1
            layers.append(nn.Sequential(*stage))
        layers.append(ConvBNAct(config.stages[-1].out_channels, config.head_channels, 1, **bn))  # head
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Dropout(config.dropout, inplace=True),
                                        nn.Linear(config.head_channels, num_classes))
        self.reset_parameters()

    def reset_parameters(self):
        """The official initialisation: conv N(0, 2/fan_out), BN (1, 0), FC U(+-1/sqrt(classes)), biases 0, with
        ``fan_out = k*k*out/groups``: a depthwise conv gets k*k (the official reads its TF shape [k, k, C, 1]), so a 3x3
        one gets std sqrt(2/9), not torchvision's kaiming sqrt(2/(9C))."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                kh, kw = m.kernel_size
                fan_out = kh * kw * m.out_channels // m.groups
                nn.init.normal_(m.weight, 0.0, (2.0 / fan_out) ** 0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                bound = 1.0 / m.out_features ** 0.5
                nn.init.uniform_(m.weight, -bound, bound)
                nn.init.zeros_(m.bias)

    @property
    def dropout(self) -> float:
        return self.classifier[0].p

    def set_dropout(self, p: float) -> None:
        """Change the dropout rate before the FC layer in place (progressive learning, paper §4.2)."""
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {p}")
        self.classifier[0].p = float(p)

    def freeze(self, stages) -> None:
        """Stop training ``stages`` (Table 4 numbering, 0 = the stem; a list or ``"0-3"``) when fine-tuning (§5.3):
        their weights get no gradient, and their BatchNorm layers stay in eval mode, normalising with the statistics
        of the weights loaded (as Keras' ``trainable=False``) instead of the new data's batches."""
        stages = sorted(set(parse_stages(stages) if isinstance(stages, str) else map(int, stages)))
        last = len(self.config.stages)
        if any(not 0 <= i <= last for i in stages):
            raise ConfigError(f"{self.config.name} has stages 0 (stem) to {last}; cannot freeze {stages}")
        self.frozen = tuple(stages)
        for i in self.frozen:
            self.features[i].requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True):
        super().train(mode)
        for i in self.frozen:
            self.features[i].eval()
        return self

    @property
    def normalization(self) -> tuple:
        """((mean R, G, B), (std R, G, B)) in 0-255 pixel units: what the weights expect (:meth:`normalize`)."""
        return self._normalize.normalization

    @normalization.setter
    def normalization(self, value) -> None:
        self._normalize = Normalize(value)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) images in 0-255 pixel units (uint8 or float) -> ``(x - mean) / std`` in float32."""
        return self._normalize(x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, head_channels, H/32, W/32) for the ImageNet variants."""
        if x.shape[-1] < self.min_image_size or x.shape[-2] < self.min_image_size:
            raise InputSizeError(
                f"{self.config.name} needs images of at least {self.min_image_size}x{self.min_image_size} "
                f"(its total stride), got {x.shape[-2]}x{x.shape[-1]}: resize the input")
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.avgpool(self.forward_features(x)).flatten(1)  # (B, head_channels)
        return self.classifier(x)  # (B, num_classes)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict`` with a one-line error when a strict load does not fit this variant."""
        if strict:
            check_state_dict(self, state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)


def check_state_dict(model: nn.Module, state_dict) -> None:
    """Raise :class:`WeightsError` with one line if ``state_dict`` does not fit ``model`` key for key, shape for shape."""
    own = model.state_dict()
    name = getattr(getattr(model, "config", None), "name", type(model).__name__)
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [k for k in own if k in state_dict and tuple(own[k].shape) != tuple(state_dict[k].shape)]
    if missing or unexpected or shapes:
        what = []
        if shapes:
            k = shapes[0]
            what.append(f"{len(shapes)} shape mismatches (first {k}: {tuple(state_dict[k].shape)} "
                        f"vs {tuple(own[k].shape)})")
        if missing:
            what.append(f"{len(missing)} missing keys (first {missing[0]})")
        if unexpected:
            what.append(f"{len(unexpected)} unexpected keys (first {unexpected[0]})")
        raise WeightsError(f"state dict does not fit {name} ({len(state_dict)} tensors vs {len(own)}): "
                           f"{'; '.join(what)}. Is it from another variant or library? "
                           f"Use ev2lib.convert_state_dict for timm weights.")


def parse_stages(text) -> list[int]:
    """Stage ranges as the command lines write them: ``"1-3"`` -> [1, 2, 3]; ``"2"`` -> [2]; ``"none"``/""/None -> []."""
    if text is None or str(text).lower() in ("", "none", "no"):
        return []
    try:
        lo, _, hi = str(text).partition("-")
        return list(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        raise ConfigError(f"stages must look like 1-3 or none, got {text!r}") from None


def swap_blocks(config: str | ModelConfig, stages, block: str = "fused", kernel: int | None = None,
                se_ratio: float | None = None) -> ModelConfig:
    """``config`` with the blocks of ``stages`` (1-based, Table 4 numbering; a list or "1-3") set to ``block``: Table 3's
    "Fused stage1-3" is ``swap_blocks("efficientnet_b4", [1, 2, 3])``. Fused stages lose squeeze-excitation unless
    ``se_ratio`` is given; ``kernel`` overrides the kernel (B4 has 5x5 in stages 3, 5, 6). The name records it."""
    cfg = get_config(config)
    stages = sorted(set(parse_stages(stages) if isinstance(stages, str) else map(int, stages)))
    if block not in BLOCK_TYPES:
        raise ConfigError(f"block must be one of {BLOCK_TYPES}, got {block!r}")
    if not stages:
        return cfg
    rows = list(cfg.stages)
    for i in stages:
        if not 1 <= i <= len(rows):
            raise ConfigError(f"{cfg.name} has block stages 1..{len(rows)}; got stage {i}")
        se = se_ratio if se_ratio is not None else 0.0 if block == "fused" else rows[i - 1].se_ratio
        rows[i - 1] = dataclasses.replace(rows[i - 1], block=block, se_ratio=se, kernel=kernel or rows[i - 1].kernel)
    tag = f"{block}{stages[0]}-{stages[-1]}" + (f"_k{kernel}" if kernel else "") + (f"_se{se_ratio:g}" if se_ratio else "")
    return cfg.replace(stages=tuple(rows), name=f"{cfg.name}_{tag}")


def list_models() -> list[str]:
    """Every name :func:`create_model` accepts."""
    return list_configs()


def create_model(name: str | ModelConfig, num_classes: int = 1000, dropout: float | None = None,
                 drop_path_rate: float | None = None, fused_stages=None, padding: str = "symmetric",
                 bn_eps: float | None = None, bn_momentum: float | None = None, pretrained: str | None = None,
                 **config_overrides) -> EfficientNet:
    """A network by name (:func:`list_models`) or :class:`ModelConfig`. ``fused_stages`` turns those stages' MBConv into
    Fused-MBConv (Table 3: ``range(1, 4)``); ``padding`` "symmetric" (PyTorch, torchvision weights) or "same"
    (TensorFlow, timm weights); ``pretrained`` "torchvision" or "timm" loads published weights; ``dropout``,
    ``drop_path_rate`` and any other :class:`ModelConfig` field override the variant's (e.g. ``stem_stride=1``)."""
    cfg = get_config(name)
    changes = {k: v for k, v in dict(dropout=dropout, drop_path_rate=drop_path_rate, bn_eps=bn_eps,
                                      bn_momentum=bn_momentum).items() if v is not None}
    unknown = set(config_overrides) - set(ModelConfig.__dataclass_fields__)
    if unknown:
        raise ConfigError(f"unknown create_model argument(s) {sorted(unknown)}")
    changes.update(config_overrides)
    if changes:
        cfg = cfg.replace(**changes)
    if fused_stages is not None:
        cfg = swap_blocks(cfg, fused_stages, "fused")
    model = EfficientNet(cfg, num_classes=num_classes, padding=padding)
    if pretrained:
        load_pretrained(model, source=pretrained)
    return model


def init_model(name, num_classes: int, init: str = "", **create_kw) -> EfficientNet:
    """``create_model`` for ``num_classes`` initialised from ``init`` (transfer learning, §5.3): "" (scratch),
    "torchvision" / "timm" or an ev2lib checkpoint or ``model.pt`` (its padding and normalisation,
    :func:`ev2lib.weights.load_weights`). Every tensor but the classifier's comes from the source bit for bit; the
    classifier is new. ``model.init_info`` says what was loaded and, for a bare state dict, what was assumed."""
    if not init:
        return create_model(name, num_classes=num_classes, **create_kw)
    if init in SOURCES:
        model = create_model(name, num_classes=num_classes, padding="same" if init == "timm" else "symmetric",
                             **create_kw)
        model.init_info = {"source": init}
        return load_pretrained(model, source=init)
    if not Path(init).is_file():
        raise WeightsError(f"init {init!r} is neither a weights source ({', '.join(SOURCES)}) nor a checkpoint file: "
                           f"pass --init torchvision, --init timm or the path of an ev2lib checkpoint.pt or model.pt")
    weights, about = load_weights(init)
    model = create_model(name, num_classes=num_classes, padding=about["padding"], **create_kw)
    own = model.state_dict()
    head = {k: v for k, v in own.items() if k.startswith("classifier.")}
    body = {k: v for k, v in weights.items() if not k.startswith("classifier.")}
    if set(body) != set(own) - set(head) or any(body[k].shape != own[k].shape for k in body):
        was = f"the weights of {about['model']}" if about.get("model") else "weights of another architecture"
        raise WeightsError(f"{init} holds {was}, which do not fit {model.config.name}: fine-tune the architecture the "
                           f"checkpoint was trained as" + (f" (--model {about['model']})" if about.get("model") else ""))
    model.load_state_dict({**body, **head}, strict=True)
    model.normalization = about["normalization"]
    model.init_info = {"source": str(init), **about}
    return model
