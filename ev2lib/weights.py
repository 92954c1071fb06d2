"""Published and saved weights in ev2lib's layout. ev2lib's layout *is* torchvision's, so torchvision's
``efficientnet_v2_s/m/l`` and ``efficientnet_b0..b7`` load as they are; timm's ``tf_efficientnetv2_*`` (the official
TensorFlow checkpoints) need :func:`convert_state_dict` and ``padding="same"`` (TensorFlow pads a stride-2 conv 0/1
pixels on even inputs, PyTorch 1/1). A run's own files load with :func:`load_weights`.
"""
from __future__ import annotations

import pickle
import re
import zipfile
from dataclasses import dataclass

import torch

from .errors import WeightsError
from .files import load_torch


@dataclass(frozen=True)
class PretrainedWeights:
    """Where a checkpoint comes from, the padding it was trained with and its input normalisation (0-255 units)."""

    url: str
    padding: str  # "symmetric" (PyTorch) or "same" (TensorFlow)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]


def _pixels(mean_std) -> tuple:
    """(mean, std) in 0-1 units, as libraries write them -> 0-255 pixel units, as ``EfficientNet.normalize`` takes."""
    return tuple(tuple(255 * v for v in t) for t in mean_std)


_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # (x - 127.5) / 127.5
_TIMM_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/v0.1-effv2-weights/"
# timm's tf_ ports of the official checkpoints: ev2lib name -> (timm pretrained tag, file, mean/std of timm's
# pretrained_cfg). ImageNet-1k, except XL which only exists pre-trained on ImageNet-21k and fine-tuned on 1k.
TIMM_WEIGHTS = {
    "efficientnetv2_s": ("tf_efficientnetv2_s.in1k", "tf_efficientnetv2_s-eb54923e.pth", _HALF),
    "efficientnetv2_m": ("tf_efficientnetv2_m.in1k", "tf_efficientnetv2_m-cc09e0cd.pth", _HALF),
    "efficientnetv2_l": ("tf_efficientnetv2_l.in1k", "tf_efficientnetv2_l-d664b728.pth", _HALF),
    "efficientnetv2_xl": ("tf_efficientnetv2_xl.in21k_ft_in1k", "tf_efficientnetv2_xl_in21ft1k-06c35c48.pth", _HALF),
    "efficientnetv2_b0": ("tf_efficientnetv2_b0.in1k", "tf_efficientnetv2_b0-c7cc451f.pth", _IMAGENET),
    "efficientnetv2_b1": ("tf_efficientnetv2_b1.in1k", "tf_efficientnetv2_b1-be6e41b0.pth", _IMAGENET),
    "efficientnetv2_b2": ("tf_efficientnetv2_b2.in1k", "tf_efficientnetv2_b2-847de54e.pth", _IMAGENET),
    "efficientnetv2_b3": ("tf_efficientnetv2_b3.in1k", "tf_efficientnetv2_b3-57773f13.pth", _IMAGENET),
}
# ev2lib name -> torchvision builder name (URLs and normalisation are read from torchvision's weight enums).
TORCHVISION_NAMES = {"efficientnetv2_s": "efficientnet_v2_s", "efficientnetv2_m": "efficientnet_v2_m",
                     "efficientnetv2_l": "efficientnet_v2_l", **{f"efficientnet_b{i}": f"efficientnet_b{i}" for i in range(8)}}
SOURCES = ("torchvision", "timm")

# timm module names -> positions inside ev2lib's ``block`` Sequential, per timm block type.
_TIMM_BLOCK = {
    "cn": {"conv": "0.0", "bn1": "0.1"},  # ConvBnAct = Fused-MBConv with expansion 1
    "er": {"conv_exp": "0.0", "bn1": "0.1", "conv_pwl": "1.0", "bn2": "1.1"},  # EdgeResidual = Fused-MBConv
    "ir": {"conv_pw": "0.0", "bn1": "0.1", "conv_dw": "1.0", "bn2": "1.1", "se.conv_reduce": "2.fc1",
           "se.conv_expand": "2.fc2", "conv_pwl": "3.0", "bn3": "3.1"},  # InvertedResidual = MBConv
}


def _timm_block_type(names: set[str]) -> str:
    return "ir" if "conv_dw" in names else "er" if "conv_exp" in names else "cn"


def convert_state_dict(state_dict: dict, source: str = "torchvision") -> dict:
    """Return ``state_dict`` in ev2lib's layout. ``source="torchvision"``: the identity (layouts match);
    ``source="timm"``: rename timm's EfficientNet modules rule by rule (shapes and order are unchanged)."""
    if source == "torchvision":
        return dict(state_dict)
    if source != "timm":
        raise WeightsError(f"unknown weights source {source!r}; use one of {SOURCES}")
    blocks: dict[tuple[int, int], set[str]] = {}
    for key in state_dict:
        m = re.match(r"blocks\.(\d+)\.(\d+)\.(.+)\.(weight|bias|running_mean|running_var|num_batches_tracked)$", key)
        if m:
            blocks.setdefault((int(m[1]), int(m[2])), set()).add(m[3])
    if not blocks:
        raise WeightsError("this state dict has no timm 'blocks.{stage}.{block}' keys: is it really from timm?")
    head = max(s for s, _ in blocks) + 2  # features.0 = stem, features.1..K = stages, features.K+1 = head
    top = {"conv_stem": "features.0.0", "bn1": "features.0.1", "conv_head": f"features.{head}.0",
           "bn2": f"features.{head}.1", "classifier": "classifier.1"}
    out = {}
    for key, value in state_dict.items():
        module, _, leaf = key.rpartition(".")
        m = re.match(r"blocks\.(\d+)\.(\d+)\.(.+)$", module)
        if m:
            s, b, name = int(m[1]), int(m[2]), m[3]
            table = _TIMM_BLOCK[_timm_block_type(blocks[(s, b)])]
            if name not in table:
                raise WeightsError(f"cannot map timm key {key!r} (module {name!r} is not part of an EfficientNetV2 block)")
            out[f"features.{s + 1}.{b}.block.{table[name]}.{leaf}"] = value
        elif module in top:
            out[f"{top[module]}.{leaf}"] = value
        else:
            raise WeightsError(f"cannot map timm key {key!r} to ev2lib's layout")
    return out


def weights_info(name: str, source: str) -> PretrainedWeights:
    """The :class:`PretrainedWeights` (URL, padding, input normalisation) published for variant ``name``."""
    if source == "timm":
        if name not in TIMM_WEIGHTS:
            raise WeightsError(f"timm publishes no tf_ weights for {name}; it has {', '.join(TIMM_WEIGHTS)}")
        _, file, mean_std = TIMM_WEIGHTS[name]
        return PretrainedWeights(_TIMM_URL + file, "same", *_pixels(mean_std))
    if source != "torchvision":
        raise WeightsError(f"unknown weights source {source!r}; use one of {SOURCES}")
    if name not in TORCHVISION_NAMES:
        raise WeightsError(f"torchvision publishes no weights for {name}; it has {', '.join(TORCHVISION_NAMES)}")
    from torchvision.models import get_model_weights

    w = get_model_weights(TORCHVISION_NAMES[name]).DEFAULT
    t = w.transforms()
    return PretrainedWeights(w.url, "symmetric", *_pixels((t.mean, t.std)))


def load_pretrained(model, source: str = "torchvision", path: str | None = None, progress: bool = True):
    """Load published ImageNet weights into ``model`` (torch.hub's download and cache, or ``path`` offline:
    :func:`weights_info` gives the URL); with ``num_classes != 1000`` all but the classifier; sets ``normalization``."""
    name = model.config.name
    info = weights_info(name, source)
    if model.padding != info.padding:
        raise WeightsError(f"{source} weights for {name} were trained with {info.padding!r} padding: create the model "
                           f"with create_model({name!r}, padding={info.padding!r})")
    if path is None:
        try:
            state = torch.hub.load_state_dict_from_url(info.url, map_location="cpu", progress=progress,
                                                       check_hash=source == "torchvision", weights_only=True)
        except OSError as e:
            raise WeightsError(f"could not download {info.url} ({getattr(e, 'reason', e)}): without internet, fetch the "
                               f"file elsewhere and call load_pretrained(model, source={source!r}, path=FILE)") from None
        except (RuntimeError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile) as e:
            raise WeightsError(f"the downloaded checkpoint for {name} is corrupt ({str(e)[:120]}): delete it from "
                               f"{torch.hub.get_dir()}/checkpoints and retry") from None
    else:
        state = load_torch(path)
    state = convert_state_dict(state, source)
    if model.num_classes != state["classifier.1.weight"].shape[0]:
        state = {k: v for k, v in state.items() if not k.startswith("classifier.")}
        own = model.state_dict()
        state.update({k: v for k, v in own.items() if k.startswith("classifier.")})
    model.load_state_dict(state, strict=True)
    model.normalization = (info.mean, info.std)
    return model


# --- ev2lib's own files: a training checkpoint, or the final weights a run writes (model.pt) ----------------------

# The official from-scratch input normalisation, (x - 128) / 128, in 0-255 pixel units: (mean, std) per channel.
SCRATCH_NORMALIZATION = ((128.0, 128.0, 128.0), (128.0, 128.0, 128.0))
ASSUMED = "a bare state dict: assumed the from-scratch normalisation (x - 128) / 128 and symmetric padding"


def weights_file(model) -> dict:
    """What a run's final ``model.pt`` holds: the state dict, and what a model built from it needs besides
    (the model's name, its padding and input normalisation), so fine-tuning from it computes what it trained."""
    return {"model": model.state_dict(), "name": model.config.name, "padding": model.padding,
            "normalization": [list(v) for v in model.normalization]}


def load_weights(path) -> tuple[dict, dict]:
    """``(state dict, about)`` at ``path``: a training checkpoint (its EMA weights when it kept an EMA, as the official
    ``train.ft_init_ckpt``), a ``model.pt`` (:func:`weights_file`) or a bare state dict. ``about``: ``model``,
    ``padding``, ``normalization`` and, for a bare state dict, what was ``assumed`` (:data:`ASSUMED`)."""
    state = load_torch(path)
    if isinstance(state, dict) and "model" in state and ("step" in state or "name" in state):
        weights = state["model"]
        if state.get("ema"):  # AveragedModel's state dict: "module.<name>" plus its counter "n_averaged"
            weights = {k.removeprefix("module."): v for k, v in state["ema"].items() if k.startswith("module.")}
        name = state.get("name") or state.get("config", {}).get("model")
        norm = state.get("normalization") or SCRATCH_NORMALIZATION
        return weights, {"model": name, "padding": state.get("padding", "symmetric"),
                         "normalization": tuple(tuple(float(v) for v in t) for t in norm)}
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        return state, {"model": None, "padding": "symmetric", "normalization": SCRATCH_NORMALIZATION,
                       "assumed": ASSUMED}
    raise WeightsError(f"{path} is neither an ev2lib checkpoint or model.pt nor a state dict of tensors")
