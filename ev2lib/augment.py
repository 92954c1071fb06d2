"""The training augmentation of the recipe (paper §5.1; official ``preprocessing.py``) and the evaluation resize: a
crop resized to the training size S, a flip, RandAugment, optionally the fine-tuning cutout (§5.3), mixup / CutMix.

* :func:`augment` -- one uint8 (3, H, W) image on the CPU from its own seed (image folders, DataLoader workers);
* :func:`augment_batch` -- a uint8 (B, 3, H, W) batch on its device: :func:`draw` makes every choice per sample
  from one generator there, then each step is one batched operation.
Both draw the same distributions (tests/test_augment.py) from different streams, never from global random state.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import roi_align
from torchvision.transforms import v2

from . import randaugment as ra
from .errors import DataError

CROPS = ("rrc", "pad", "resize")
RRC_SCALE = (0.05, 1.0)  # official sample_distorted_bounding_box area_range (preprocessing.py)
RRC_RATIO = (3 / 4, 4 / 3)  # its default aspect_ratio_range
RRC_TRIES = 10  # torchvision's RandomResizedCrop tries, then falls back to a centre crop
PAD = 4  # crop="pad": the CIFAR recipe's reflect padding
SQUASH_FROM = 320  # official eval: at >= 320 px the whole image is resized (no crop); below, a centre crop


def augment(img: torch.Tensor, seed: int, image_size: int, randaug_magnitude: float = 0.0, crop: str = "rrc",
            cutout: float = 0.0, randaug_fixed_side: int = 0, **_) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, S, S), drawing only from ``seed``. ``crop``: "rrc" (the official random resized
    crop, area 5-100 %, aspect 3/4-4/3), "pad" (CIFAR: reflect-pad 4, crop back, resize) or "resize" (the whole
    image: official fine-tuning). Then a flip for half the images, RandAugment at ``randaug_magnitude`` (0 = off),
    and when ``cutout > 0`` a box of that fraction of S filled with random pixels (fine-tuning: 0.5)."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators stay untouched
        if crop == "rrc":
            img = v2.RandomResizedCrop(image_size, scale=RRC_SCALE, ratio=RRC_RATIO, antialias=True)(img)
        else:
            if crop == "pad":
                img = v2.RandomCrop(img.shape[-2:], padding=PAD, padding_mode="reflect")(img)
            if img.shape[-2:] != (image_size, image_size):
                img = v2.functional.resize(img, [image_size, image_size], antialias=True)
        img = v2.RandomHorizontalFlip()(img)
        if randaug_magnitude > 0:
            img = ra.rand_augment(img, randaug_magnitude, fixed_side=int(randaug_fixed_side))
        if cutout > 0:
            img = ra.cutout(img, round(cutout * image_size / 2), fill="random")
    return img


def eval_resize(x: torch.Tensor, size: int, crop: bool = True) -> torch.Tensor:
    """Official eval preprocessing on uint8 images: below 320 px a centre crop of ``size/(size+32)`` then resize;
    at 320 px and above the whole image squashed to ``size``. ``crop=False`` (CIFAR-style "pad" training, where the
    whole small image is the object) always resizes the whole image. Identity when the size already matches."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if crop and size < SQUASH_FROM:
        side = int(round(size / (size + 32) * min(h, w)))
        x = v2.functional.center_crop(x, [side, side])
    return v2.functional.resize(x, [size, size], antialias=True)


# --- A whole batch on its device ----------------------------------------------------------------------------------

def draw(batch: int, height: int, width: int, seed: int, *, image_size: int, crop: str = "rrc",
         randaug_magnitude: float = 0.0, cutout: float = 0.0, randaug_fixed_side: int = 0,
         device="cpu") -> dict[str, torch.Tensor]:
    """Every random parameter of a batch, per sample, from ``seed`` alone, in a fixed order whatever the settings:
    ``box`` (B, 4) crop top, left, height, width; ``flip`` (B,); ``ops``, ``signs``, ``ra_args`` (B, 2) RandAugment's
    ops (:data:`ev2lib.randaugment.OPS`) and signed arguments at S, ``op_centres`` (B, 2, 2) its Cutout boxes;
    ``cutout_centres`` (B, 2) and ``cutout_fill`` (B, 3, S, S) the fine-tuning cutout's."""
    if crop not in CROPS:
        raise DataError(f"crop must be one of {CROPS}, got {crop!r}")
    g = torch.Generator(device=device).manual_seed(int(seed))
    B, H, W, S = batch, height, width, int(image_size)

    # Host constants go to the device with non_blocking=True: a blocking copy would wait for the GPU's queue.
    u = torch.rand(B, RRC_TRIES, 4, generator=g, device=device)  # area, log-aspect, top, left of each try
    if crop == "rrc":
        box = _rrc_boxes(u, H, W)
    elif crop == "pad":
        top, left = (u[:, 0, 2:] * (2 * PAD + 1)).floor().long().clamp(max=2 * PAD).unbind(1)  # 0..8 each
        box = torch.stack([top, left, torch.full_like(top, H), torch.full_like(top, W)], 1)
    else:
        box = torch.tensor([0, 0, H, W]).to(device, non_blocking=True).expand(B, 4)
    flip = torch.rand(B, generator=g, device=device) < 0.5
    ops = torch.randint(len(ra.OPS), (B, ra.NUM_LAYERS), generator=g, device=device)
    signs = torch.where(torch.rand(B, ra.NUM_LAYERS, generator=g, device=device) < 0.5, -1.0, 1.0)
    op_centres = torch.randint(S, (B, ra.NUM_LAYERS, 2), generator=g, device=device)
    cutout_centres = torch.randint(S, (B, 2), generator=g, device=device)
    table, signed = ra.argument_table(randaug_magnitude, S, int(randaug_fixed_side), device)
    params = dict(box=box, flip=flip, ops=ops, signs=signs, ra_args=table[ops] * torch.where(signed[ops], signs, 1.0),
                  op_centres=op_centres, cutout_centres=cutout_centres)
    if cutout > 0:
        params["cutout_fill"] = torch.randint(0, 256, (B, 3, S, S), dtype=torch.uint8, generator=g, device=device)
    return params


def _rrc_boxes(u: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(B, tries, 4) uniforms -> int64 (B, 4) top, left, height, width: torchvision's RandomResizedCrop draw,
    all tries of all samples at once (the first try that fits wins; none fits -> its centre-crop fallback)."""
    lo, hi = math.log(RRC_RATIO[0]), math.log(RRC_RATIO[1])
    area = H * W * (RRC_SCALE[0] + (RRC_SCALE[1] - RRC_SCALE[0]) * u[..., 0])  # (B, T) in pixels
    aspect = torch.exp(lo + (hi - lo) * u[..., 1])  # (B, T) width / height
    w = torch.sqrt(area * aspect).round().long()  # round half to even, like Python's round()
    h = torch.sqrt(area / aspect).round().long()
    fits = (w > 0) & (w <= W) & (h > 0) & (h <= H)  # (B, T)
    first = fits.long().argmax(1, keepdim=True)  # index of the first fitting try (0 when none fits)
    h, w = h.gather(1, first)[:, 0], w.gather(1, first)[:, 0]  # (B,)
    u_top, u_left = u[..., 2].gather(1, first)[:, 0], u[..., 3].gather(1, first)[:, 0]
    top = torch.minimum((u_top * (H - h + 1)).floor().long(), H - h)  # uniform over 0..H-h
    left = torch.minimum((u_left * (W - w + 1)).floor().long(), W - w)
    if W / H < RRC_RATIO[0]:  # the fallback: torchvision's centre crop, clipped to the aspect range
        fh, fw = int(round(W / RRC_RATIO[0])), W
    elif W / H > RRC_RATIO[1]:
        fh, fw = H, int(round(H * RRC_RATIO[1]))
    else:
        fh, fw = H, W
    fallback = ((H - fh) // 2, (W - fw) // 2, fh, fw)
    return torch.stack([torch.where(fits.any(1), v, f) for v, f in zip((top, left, h, w), fallback)], 1)


def augment_batch(x: torch.Tensor, seed: int, *, image_size: int, randaug_magnitude: float = 0.0,
                  crop: str = "rrc", cutout: float = 0.0, randaug_fixed_side: int = 0) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, S, S) on x's device: :func:`augment` for a whole batch, every random
    choice from :func:`draw` with ``seed`` (one host sync a batch when RandAugment is on: its op counts)."""
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"augment_batch takes a uint8 (B, 3, H, W) batch, got {got}")
    B, _, H, W = x.shape
    S, fixed = int(image_size), int(randaug_fixed_side)
    p = draw(B, H, W, seed, image_size=S, crop=crop, randaug_magnitude=randaug_magnitude, cutout=cutout,
             randaug_fixed_side=fixed, device=x.device)
    x = _crop_resize(x, p["box"], crop, S)  # (B, 3, S, S)
    x = torch.where(p["flip"][:, None, None, None], x.flip(-1), x)
    if randaug_magnitude > 0:
        x = ra.apply_ops(x, p["ops"], p["ra_args"], p["op_centres"], randaug_magnitude, fixed)
    if cutout > 0:
        x = torch.where(ra.box_mask(p["cutout_centres"], round(cutout * S / 2), S, S), p["cutout_fill"], x)
    return x


def _crop_resize(x: torch.Tensor, box: torch.Tensor, crop: str, S: int) -> torch.Tensor:
    """uint8 (B, 3, H, W), boxes (B, 4) -> uint8 (B, 3, S, S). "rrc": one ``roi_align`` crops and resizes every box
    (``aligned=True``; a box filter, about a grey level from the per-image path). "pad": each window of the padded
    batch gathered exactly, then like "resize" one antialiased interpolate."""
    B, _, H, W = x.shape
    top, left, h, w = box.unbind(1)
    if crop == "rrc":  # rois (B, 5): sample index, then the box's x1, y1, x2, y2 in pixel edges
        rois = torch.stack([torch.arange(B, device=x.device), left, top, left + w, top + h], 1).float()
        x = roi_align(x.float(), rois, (S, S), spatial_scale=1.0, sampling_ratio=0, aligned=True)
    elif crop == "pad":  # an exact copy of each H x W window of the padded batch: gather rows, then columns
        padded = F.pad(x, (PAD,) * 4, mode="reflect")  # (B, 3, H + 8, W + 8), still uint8
        r = (top[:, None] + torch.arange(H, device=x.device))[:, None, :, None].expand(B, 3, H, W + 2 * PAD)
        c = (left[:, None] + torch.arange(W, device=x.device))[:, None, None, :].expand(B, 3, H, W)
        x = padded.gather(2, r).gather(3, c)
    if x.shape[-2:] != (S, S):
        x = F.interpolate(x.float(), (S, S), mode="bilinear", antialias=True, align_corners=False)
    return x if x.dtype == torch.uint8 else x.round().clamp(0, 255).to(torch.uint8)


# --- Mixup / CutMix -----------------------------------------------------------------------------------------------

def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
              seed: int = 0):
    """(B, 3, H, W), (B,) int -> float images and (B, num_classes) soft labels (unchanged if both alphas are 0). One
    lambda ~ Beta(alpha, alpha) per mixer, each image mixed with its neighbour ``roll(1)``; with both alphas > 0 mixup
    takes the first half of the batch and CutMix (a box of side sqrt(1 - lambda)) the second, as the official
    datasets.py. Drawn on the host from ``seed``: no wait for the device."""
    mixers = [(kind, a) for kind, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if not mixers:
        return x, y
    rng = np.random.default_rng(int(seed))
    B = x.shape[0]
    halves = [slice(0, B)] if len(mixers) == 1 or B < 4 else [slice(0, B // 2), slice(B // 2, B)]
    x, y = x.float(), F.one_hot(y, num_classes).float()
    out = [_mix(kind, alpha, x[h], y[h], rng) for (kind, alpha), h in zip(mixers, halves)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def _mix(kind: str, alpha: float, x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator):
    """float (n, 3, H, W), (n, classes) -> mixed images and labels; one lambda for the n samples."""
    lam = float(rng.beta(alpha, alpha))
    if kind == "mixup":
        return lam * x + (1 - lam) * x.roll(1, 0), lam * y + (1 - lam) * y.roll(1, 0)
    H, W = x.shape[-2:]
    cy, cx = int(rng.integers(H)), int(rng.integers(W))
    r = 0.5 * math.sqrt(1 - lam)  # half the box side, as a fraction of the image side
    y1, y2 = max(cy - int(r * H), 0), min(cy + int(r * H), H)
    x1, x2 = max(cx - int(r * W), 0), min(cx + int(r * W), W)
    out = x.clone()
    out[..., y1:y2, x1:x2] = x.roll(1, 0)[..., y1:y2, x1:x2]
    kept = 1 - (y2 - y1) * (x2 - x1) / (H * W)  # the proportion of each image that stays its own
    return out, kept * y + (1 - kept) * y.roll(1, 0)
