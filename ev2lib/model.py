"""The network builder: a :class:`~ev2lib.configs.ModelConfig` stage table -> ``nn.Module`` (paper §3.3, Table 4).

``create_model("efficientnetv2_s")`` builds the official EfficientNetV2-S; every variant, the EfficientNet V1
baselines and any NAS sample go through the same :class:`EfficientNet` class.
"""
from __future__ import annotations

import torch
from torch import nn

from .blocks import BLOCKS, ConvBNAct
from .configs import ModelConfig, get_config, list_configs
from .errors import ConfigError, InputSizeError, WeightsError

PADDINGS = ("symmetric", "same")


class EfficientNet(nn.Module):
    """Stem (stage 0) -> block stages 1..K -> 1x1 head conv -> global pooling -> dropout -> FC.

    ``features`` holds the stem, one ``nn.Sequential`` per stage and the head, so
    ``features[0]`` is the stem and ``features[i]`` is Table 4's stage i.
    """

    def __init__(self, config: ModelConfig, num_classes: int = 1000, padding: str = "symmetric"):
        super().__init__()
        if padding not in PADDINGS:
            raise ConfigError(f"padding must be one of {PADDINGS}, got {padding!r}")
        if num_classes < 1:
            raise ConfigError(f"num_classes must be positive, got {num_classes}")
        self.config, self.padding, self.num_classes = config, padding, num_classes
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
        """Initialise as the official code: conv N(0, 2/fan_out), BN (1, 0), FC U(+-1/sqrt(classes)), biases 0."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
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
    def min_image_size(self) -> int:
        """The smallest input side the network accepts: one pixel per cell of its final feature map."""
        return self.config.total_stride

    @property
    def dropout(self) -> float:
        return self.classifier[0].p

    def set_dropout(self, p: float) -> None:
        """Change the dropout rate before the FC layer in place (progressive learning, paper §4.2)."""
        if not 0.0 <= p < 1.0:
            raise ConfigError(f"dropout must be in [0, 1), got {p}")
        self.classifier[0].p = float(p)

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


def list_models() -> list[str]:
    """Every name :func:`create_model` accepts."""
    return list_configs()


def create_model(name: str | ModelConfig, num_classes: int = 1000, dropout: float | None = None,
                 drop_path_rate: float | None = None, fused_stages=None, padding: str = "symmetric",
                 bn_eps: float | None = None, bn_momentum: float | None = None, pretrained: str | None = None,
                 **config_overrides) -> EfficientNet:
    """Build a network by name (see :func:`list_models`) or from a :class:`ModelConfig`.

    Args:
        dropout / drop_path_rate: override the variant's rates (None keeps the official value).
        fused_stages: block stages (1-based, Table 4 numbering) whose MBConv blocks become Fused-MBConv, as in the
            paper's Table 3 ablation on EfficientNet-B4: ``fused_stages=range(1, 4)`` is "Fused stage1-3".
        padding: ``"symmetric"`` (PyTorch, torchvision weights) or ``"same"`` (TensorFlow, official/timm weights).
        pretrained: ``"torchvision"`` or ``"timm"`` to download and load published weights
            (:func:`ev2lib.load_pretrained`).
        config_overrides: any other :class:`ModelConfig` field, e.g. ``stem_stride=1``.
    """
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
        cfg = cfg.with_blocks(fused_stages, "fused")
    model = EfficientNet(cfg, num_classes=num_classes, padding=padding)
    if pretrained:
        from .weights import load_pretrained

        load_pretrained(model, source=pretrained)
    return model
