"""RandAugment as the official code defines it (paper §4, §5.1; official ``autoaugment.py``): each of 2 layers picks
one of the 16 :data:`OPS` and applies it with :func:`op_args`'s argument at the magnitude (official 0-10 scale).
One op table serves :func:`rand_augment` (one uint8 (3, H, W) image, torch's default CPU generator) and
:func:`apply_ops` (a batch whose draws were made beforehand, each op once on the samples that drew it).

**Translate and Cutout** are pixels in the official code (100 px and a Cutout half-side of 40 px at level 10) at any
size. ``fixed_side=0`` (default) scales both with the side, as if every image were 224 px; ``fixed_side=S`` uses the
pixels of an S-px image (``S=224``: the official constants). Differences from the official code: Contrast blends
with PIL's mean grey (the TF code's depends on the image size, a known bug); Posterize's bits clamp to 0-8.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from .errors import DataError

OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast", "Brightness",
       "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")
SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")  # official: negated half the time
GEOMETRIC = SIGNED  # nearest neighbour, outside filled with FILL
NUM_LAYERS = 2  # official ra_num_layers
MAX_LEVEL = 10.0  # official _MAX_LEVEL: magnitudes above it extrapolate every range linearly
FILL = 128  # official replace_value [128] * 3 for Rotate, Shear*, Translate*, Cutout
TRANSLATE_PX, CUTOUT_PX, OFFICIAL_SIDE = 100, 40, 224  # official translate_const, cutout_const; ImageNet's side
_NEAREST = v2.InterpolationMode.NEAREST  # the official image_ops.rotate/translate/transform default


def op_args(op: str, magnitude: float, side: int, fixed_side: int = 0) -> tuple:
    """The unsigned argument of ``op`` at ``magnitude`` (official ``level_to_arg``: level/10 of each range) on an
    image ``side`` px along the op's axis (``fixed_side``: the module docstring). Level 10: rotate 30 deg, shear 0.3,
    enhance 1.9 (1.0 at level 5: below it Color/Contrast/Brightness/Sharpness *degrade*), posterize 4 bits, solarize
    threshold 256, SolarizeAdd +110. Official quirks kept: Posterize and Solarize get *weaker* as the level rises."""
    if op not in OPS:
        raise DataError(f"unknown RandAugment op {op!r}; known: {OPS}")
    r, px = float(magnitude) / MAX_LEVEL, (fixed_side or side) / OFFICIAL_SIDE  # px: pixels per official pixel
    if op in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (r * 1.8 + 0.1,)
    # Posterize: official int(r * 4) bits. The official code is silent on bits outside 0-8 (a shift by 8 gives a
    # black image on the TPUs' XLA, as here); we clamp to 0-8 bits (8 = identity).
    return {"Rotate": (r * 30.0,), "ShearX": (r * 0.3,), "ShearY": (r * 0.3,),
            "TranslateX": (r * TRANSLATE_PX * px,), "TranslateY": (r * TRANSLATE_PX * px,),
            "Posterize": (min(max(int(r * 4), 0), 8),), "Solarize": (int(r * 256),),
            "SolarizeAdd": (int(r * 110),), "Cutout": (int(r * CUTOUT_PX * px),)}[op]


# --- The ops: uint8 (..., 3, H, W) and the op's argument -> uint8, the same shape ---------------------------------

def _affine(img: torch.Tensor, translate=(0.0, 0.0), shear=(0.0, 0.0)) -> torch.Tensor:
    """Official shear/translate: nearest neighbour, fill 128, shear about the top-left corner (output pixel (x, y)
    reads input (x + s y, y) for ShearX, (x, y + s x) for ShearY)."""
    return v2.functional.affine(img, 0.0, list(translate), 1.0, list(shear), interpolation=_NEAREST, fill=FILL,
                                center=[0.0, 0.0])


def _shear(s: float) -> float:
    return math.degrees(math.atan(s))  # torchvision takes the shear as an angle; the official code as its tangent


def _solarize(img: torch.Tensor, threshold: int) -> torch.Tensor:
    return torch.where(img < threshold, img, 255 - img)  # official: invert the pixels >= threshold


def _solarize_add(img: torch.Tensor, addition: int, threshold: int = 128) -> torch.Tensor:
    added = (img.to(torch.int16) + addition).clamp(0, 255).to(torch.uint8)
    return torch.where(img < threshold, added, img)


def cutout(img: torch.Tensor, half: int, fill: int | str = FILL) -> torch.Tensor:
    """Official cutout: a (2 half)^2 box about a uniform pixel (torch's default generator), clipped at the borders,
    filled with grey 128 (RandAugment's op) or random pixels (``fill="random"``: the fine-tuning cutout, §5.3)."""
    h, w = img.shape[-2:]
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    out = img.clone()
    box = out[..., max(0, cy - half):cy + half, max(0, cx - half):cx + half]
    box.copy_(torch.randint(0, 256, box.shape, dtype=torch.uint8) if fill == "random" else torch.full_like(box, fill))
    return out


_F = v2.functional
APPLY = {  # the per-image ops; the pixel ops also serve the batched path (torchvision applies them per image)
    "AutoContrast": _F.autocontrast, "Equalize": _F.equalize, "Invert": _F.invert,
    "Rotate": lambda img, deg: _F.rotate(img, deg, interpolation=_NEAREST, fill=FILL),
    "Posterize": _F.posterize, "Solarize": _solarize, "SolarizeAdd": _solarize_add,
    # Color, Brightness, Sharpness: the official blend(degenerate, image, factor) with PIL's degenerate images,
    # which torchvision's adjust_* compute too (up to rounding by one grey level). Contrast: see the module doc.
    "Color": _F.adjust_saturation, "Brightness": _F.adjust_brightness, "Sharpness": _F.adjust_sharpness,
    "Contrast": _F.adjust_contrast,
    "ShearX": lambda img, s: _affine(img, shear=(_shear(s), 0.0)),
    "ShearY": lambda img, s: _affine(img, shear=(0.0, _shear(s))),
    "TranslateX": lambda img, px: _affine(img, translate=(px, 0.0)),
    "TranslateY": lambda img, px: _affine(img, translate=(0.0, px)),
    "Cutout": cutout,
}


def rand_augment(img: torch.Tensor, magnitude: float, num_layers: int = NUM_LAYERS, fixed_side: int = 0) -> torch.Tensor:
    """Official RandAugment (``distort_image_with_randaugment``) on one uint8 (3, H, W) image: ``num_layers`` times
    one of the 16 :data:`OPS`, always applied (the official per-op ``prob`` is unused), :data:`SIGNED` ops negated
    half the time; every draw from torch's default CPU generator (seed it, as :func:`ev2lib.augment.augment` does)."""
    if img.dtype != torch.uint8 or img.ndim != 3:
        raise DataError(f"rand_augment takes one uint8 (3, H, W) image, got {img.dtype} {tuple(img.shape)}")
    h, w = img.shape[-2:]
    for _ in range(num_layers):
        op = OPS[int(torch.randint(len(OPS), ()))]
        args = op_args(op, magnitude, {"TranslateX": w, "TranslateY": h}.get(op, min(h, w)), fixed_side)
        if op in SIGNED and torch.rand(()) < 0.5:
            args = (-args[0],)
        img = APPLY[op](img, *args)
    return img


# --- The batched path ---------------------------------------------------------------------------------------------

def argument_table(magnitude: float, side: int, fixed_side: int = 0, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """(16,) float: each op's unsigned argument at ``magnitude`` on a ``side``-px square (0 for argument-free ops);
    (16,) bool: which ops are signed. For :func:`ev2lib.augment.draw`."""
    table = torch.tensor([(op_args(op, magnitude, side, fixed_side) or (0,))[0] for op in OPS], dtype=torch.float32)
    signed = torch.tensor([op in SIGNED for op in OPS])
    return table.to(device, non_blocking=True), signed.to(device, non_blocking=True)


def apply_ops(x: torch.Tensor, ops: torch.Tensor, args: torch.Tensor, centres: torch.Tensor, magnitude: float,
              fixed_side: int = 0) -> torch.Tensor:
    """RandAugment on uint8 (B, 3, S, S) with per-sample draws: ``ops`` (B, 2) indices into :data:`OPS`, ``args``
    (B, 2) their signed arguments, ``centres`` (B, 2, 2) Cutout boxes. Each layer applies every op once to the group
    of samples that drew it: 16 kernel groups a layer whatever the batch, one host sync a batch (the op counts)."""
    counts = torch.stack([torch.bincount(ops[:, i], minlength=len(OPS)) for i in range(ops.shape[1])]).tolist()
    for layer in range(ops.shape[1]):
        groups = ops[:, layer].argsort(stable=True).split(counts[layer])  # sample indices, op by op
        for op, idx in zip(OPS, groups):
            if len(idx):
                x[idx] = _apply_op(op, x[idx], args[idx, layer], centres[idx, layer], magnitude, fixed_side)
    return x


def _apply_op(op: str, x: torch.Tensor, arg: torch.Tensor, centre: torch.Tensor, magnitude: float,
              fixed_side: int = 0) -> torch.Tensor:
    """One op on uint8 (n, 3, S, S): ``arg`` (n,) the signed per-sample argument, ``centre`` (n, 2)."""
    S = x.shape[-1]
    if op in GEOMETRIC:
        return _warp(x, _inverse_affine(op, arg, *x.shape[-2:]))
    if op == "Cutout":  # grey 128 box of side 2 * half, clipped at the borders
        return torch.where(box_mask(centre, op_args(op, magnitude, S, fixed_side)[0], *x.shape[-2:]), FILL, x)
    # The pixel ops take one argument for the whole batch; torchvision's kernels work image by image (Equalize and
    # AutoContrast per image and channel, Contrast's mean grey per image, Sharpness's blur per image).
    return APPLY[op](x, *op_args(op, magnitude, S, fixed_side))


def _inverse_affine(op: str, a: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(n,) signed arguments -> (n, 2, 3) ``affine_grid`` thetas: the source of each output pixel (x, y), in pixels
    about the centre: Rotate (x cos a - y sin a, x sin a + y cos a); ShearX (x + a (y + H/2), y), ShearY
    (x, y + a (x + W/2)) (about the top-left corner, as :func:`_affine`); Translate (x - a, y) or (x, y - a)."""
    one, zero = torch.ones_like(a), torch.zeros_like(a)  # (n,)
    if op == "Rotate":
        c, s = torch.cos(torch.deg2rad(a)), torch.sin(torch.deg2rad(a))
        m = [[c, -s, zero], [s, c, zero]]
    elif op == "ShearX":
        m = [[one, a, a * H / 2], [zero, one, zero]]
    elif op == "ShearY":
        m = [[one, zero, zero], [a, one, a * W / 2]]
    elif op == "TranslateX":
        m = [[one, zero, -a], [zero, one, zero]]
    else:  # TranslateY
        m = [[one, zero, zero], [zero, one, -a]]
    scale = ((1.0, H / W, 2 / W), (W / H, 1.0, 2 / H))  # pixels -> normalised coordinates
    return torch.stack([torch.stack([e * k for e, k in zip(row, ks)], -1) for row, ks in zip(m, scale)], 1)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 3, H, W) warped by ``theta`` (n, 2, 3), nearest neighbour, outside 128 (pixels travel as value + 1,
    so zero padding marks the outside). The per-image ops' result, but at exact half-pixel ties, either neighbour."""
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (n, H, W, 2)
    moved = F.grid_sample(x.float() + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return torch.where(moved == 0, float(FILL), moved - 1).to(torch.uint8)


def box_mask(centre: torch.Tensor, half: int, H: int, W: int) -> torch.Tensor:
    """(n, 2) (row, column) centres -> bool (n, 1, H, W): the (2 half)^2 box about each, clipped at the borders."""
    ys, xs = torch.arange(H, device=centre.device), torch.arange(W, device=centre.device)
    cy, cx = centre[:, 0, None], centre[:, 1, None]  # (n, 1)
    in_y = (ys >= cy - half) & (ys < cy + half)  # (n, H)
    in_x = (xs >= cx - half) & (xs < cx + half)  # (n, W)
    return (in_y[:, :, None] & in_x[:, None, :])[:, None]
