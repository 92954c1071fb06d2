"""The training augmentation applied batched on the device of the images (paper §5.1 recipe, §4 RandAugment).

:func:`ev2lib.data.augment` augments one image at a time on the CPU. For in-memory data (a uint8 tensor that
can live on the GPU) this module applies the same augmentation to a whole batch at once, on whatever device the
batch is on:

* :func:`draw` makes every random choice of a batch, per sample, from one ``torch.Generator`` on that device
  seeded by the step seed: crop boxes, flips, the 2 RandAugment ops and their signs, cutout centres;
* :func:`augment_batch` applies them: crop + resize, flip, RandAugment (each op applied once to the samples that
  drew it), the fine-tuning cutout;
* :func:`mix_batch` is mixup / CutMix on device, with :func:`ev2lib.data.mix_batch`'s semantics.

**Same distribution, not the same pixels.** A batch is a function of its seed only (the global RNG is never
touched), but the draws come from a different stream than the per-image path's (and a CUDA generator's stream
differs from a CPU one's), so the two paths agree in distribution (tests/test_device_augment.py checks crop areas,
aspects, flips, op frequencies and mix weights). Given the same parameters, the RandAugment ops match the
per-image ops exactly (the geometric ones up to exact ties of nearest neighbour, see :func:`_warp`), the pad crop
exactly, the resizes within a grey level; the random resized crop differs at its box edges and, when shrinking,
by its antialiasing filter (see :func:`_crop_resize`).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torchvision.ops import roi_align

from .data import _APPLY, CROPS, RANDAUG_FILL, RANDAUG_OPS, SIGNED_OPS, op_args
from .errors import DataError

NUM_LAYERS = 2  # official ra_num_layers
RRC_SCALE = (0.05, 1.0)  # official sample_distorted_bounding_box area_range (preprocessing.py)
RRC_RATIO = (3 / 4, 4 / 3)  # its default aspect_ratio_range
RRC_TRIES = 10  # torchvision's RandomResizedCrop tries, then falls back to a centre crop
PAD = 4  # crop="pad": the CIFAR recipe's reflect padding
GEOMETRIC = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")  # nearest neighbour, fill 128


# ----------------------------------------------------------------------------------------------------------
# The random parameters of a batch


def draw(batch: int, height: int, width: int, seed: int, *, image_size: int, crop: str = "rrc",
         randaug_magnitude: float = 0.0, cutout: float = 0.0, device="cpu") -> dict[str, torch.Tensor]:
    """Every random parameter of a batch of ``batch`` (3, height, width) images, per sample, from ``seed`` alone.

    Drawn in a fixed order whatever the settings (so turning RandAugment on does not move the crops):

    * ``box`` int64 (B, 4): top, left, height, width of the crop in input pixels. ``crop="rrc"``: the official
      random resized crop, area uniform in 5-100% of the image and aspect log-uniform in 3/4-4/3, with
      torchvision's rounding and rejection: of 10 tries the first box that fits is kept; if none fits, a centre
      crop (the whole image when its aspect is in range, else the largest in-range box). ``"pad"``: offsets 0-8
      into the image reflect-padded by 4, size H x W. ``"resize"``: the whole image.
    * ``flip`` bool (B,): horizontal flip, half the samples.
    * ``ops`` int64 (B, 2): each layer's RandAugment op, an index into :data:`ev2lib.data.RANDAUG_OPS`, uniform.
    * ``signs`` float (B, 2): +-1, negating the :data:`ev2lib.data.SIGNED_OPS` half the time.
    * ``ra_args`` float (B, 2): the signed argument each sample's op takes at ``randaug_magnitude`` on an S x S
      image (:func:`ev2lib.data.op_args`: degrees, shear, pixels, factor, ...; 0 for argument-free ops).
    * ``op_centres`` int64 (B, 2, 2): (row, column) of the RandAugment Cutout box of each layer, uniform over S x S.
    * ``cutout_centres`` int64 (B, 2): the fine-tuning cutout's centre; ``cutout_fill`` uint8 (B, 3, S, S): its
      random pixels, drawn only when ``cutout > 0``.
    """
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
    ops = torch.randint(len(RANDAUG_OPS), (B, NUM_LAYERS), generator=g, device=device)
    signs = torch.where(torch.rand(B, NUM_LAYERS, generator=g, device=device) < 0.5, -1.0, 1.0)
    op_centres = torch.randint(S, (B, NUM_LAYERS, 2), generator=g, device=device)
    cutout_centres = torch.randint(S, (B, 2), generator=g, device=device)

    table = torch.tensor([(op_args(op, randaug_magnitude, S) or (0,))[0] for op in RANDAUG_OPS],
                         dtype=torch.float32).to(device, non_blocking=True)  # (16,): each op's unsigned argument
    signed = torch.tensor([op in SIGNED_OPS for op in RANDAUG_OPS]).to(device, non_blocking=True)
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


# ----------------------------------------------------------------------------------------------------------
# Applying them


def augment_batch(x: torch.Tensor, seed: int, *, image_size: int, randaug_magnitude: float = 0.0,
                  crop: str = "rrc", cutout: float = 0.0) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> uint8 (B, 3, S, S) on x's device: :func:`ev2lib.data.augment` for a whole batch.

    Crop (``"rrc"``, ``"pad"`` or ``"resize"``, see :func:`draw`) and resize to S, flip, then RandAugment when
    ``randaug_magnitude > 0`` (2 layers; each op of :data:`ev2lib.data.RANDAUG_OPS` is applied once per layer to
    the samples that drew it, with :func:`ev2lib.data.op_args`, magnitudes above 10 extrapolating), then, when
    ``cutout > 0``, a box of side ``cutout * S`` filled with random pixels (the fine-tuning augmentation, §5.3).
    Every random choice comes from :func:`draw` with ``seed``: one host sync per batch (the op counts).
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] != 3:
        got = f"{x.dtype} {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise DataError(f"augment_batch takes a uint8 (B, 3, H, W) batch, got {got}")
    B, _, H, W = x.shape
    S = int(image_size)
    p = draw(B, H, W, seed, image_size=S, crop=crop, randaug_magnitude=randaug_magnitude, cutout=cutout,
             device=x.device)
    x = _crop_resize(x, p["box"], crop, S)  # (B, 3, S, S)
    x = torch.where(p["flip"][:, None, None, None], x.flip(-1), x)
    if randaug_magnitude > 0:
        x = _rand_augment(x, p, randaug_magnitude)
    if cutout > 0:
        x = torch.where(_box_mask(p["cutout_centres"], round(cutout * S / 2), S, S), p["cutout_fill"], x)
    return x


def _crop_resize(x: torch.Tensor, box: torch.Tensor, crop: str, S: int) -> torch.Tensor:
    """uint8 (B, 3, H, W), boxes (B, 4) -> uint8 (B, 3, S, S).

    ``"rrc"``: one :func:`torchvision.ops.roi_align` call crops every box and resizes it bilinearly to S
    (``aligned=True`` samples where ``interpolate(align_corners=False)`` does; when shrinking, ``sampling_ratio=0``
    averages ceil(box/S) samples per output pixel, an antialiasing box filter). It differs from the per-image
    crop-then-resize (torchvision's antialiased triangle filter on the cropped image) in two ways, by about a grey
    level on average: near the box edges roi_align reads the image just outside the box where the crop clamps
    to its edge, and when shrinking its box filter is not the triangle filter. ``"pad"``: each window of the
    reflect-padded batch is gathered (an exact copy) and, like ``"resize"``, all images then have one size and go
    through one ``interpolate(antialias=True)`` call (within a grey level of the per-image uint8 resize).
    """
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


def _rand_augment(x: torch.Tensor, p: dict, magnitude: float) -> torch.Tensor:
    """RandAugment (§4; official ``distort_image_with_randaugment``) on uint8 (B, 3, S, S), batched per op.

    Each of the 2 layers sorts the batch by the op each sample drew, applies every op once to its group (index,
    apply, scatter back) and moves on: 16 kernel groups per layer whatever the batch size.
    """
    counts = torch.stack([torch.bincount(p["ops"][:, i], minlength=len(RANDAUG_OPS))
                          for i in range(NUM_LAYERS)]).tolist()  # (2, 16): the one host sync of a batch
    for layer in range(NUM_LAYERS):
        groups = p["ops"][:, layer].argsort(stable=True).split(counts[layer])  # sample indices, op by op
        for op, idx in zip(RANDAUG_OPS, groups):
            if len(idx):
                x[idx] = _apply_op(op, x[idx], p["ra_args"][idx, layer], p["op_centres"][idx, layer], magnitude)
    return x


def _apply_op(op: str, x: torch.Tensor, arg: torch.Tensor, centre: torch.Tensor, magnitude: float) -> torch.Tensor:
    """One RandAugment op on uint8 (n, 3, S, S): ``arg`` (n,) the signed per-sample argument, ``centre`` (n, 2)."""
    S = x.shape[-1]
    if op in GEOMETRIC:
        return _warp(x, _inverse_affine(op, arg, *x.shape[-2:]))
    if op == "Cutout":  # grey 128 box of side 2 * half, clipped at the borders
        return torch.where(_box_mask(centre, op_args(op, magnitude, S)[0], *x.shape[-2:]), RANDAUG_FILL, x)
    # The pixel ops take one argument for the whole batch; they are torchvision's own kernels (those of the
    # per-image path), which work on a batch image by image (Equalize/AutoContrast per image and channel,
    # Contrast's mean grey per image, Sharpness's blur per image).
    return _APPLY[op](x, *op_args(op, magnitude, S))


def _inverse_affine(op: str, a: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """(n,) signed arguments -> (n, 2, 3) ``affine_grid`` thetas: each output pixel's source, as the per-image ops.

    In pixel units, with x right, y down and the origin at the image centre, the source of output (x, y) is
    Rotate: (x cos a - y sin a, x sin a + y cos a) (a counter-clockwise turn about the centre, a in degrees);
    ShearX: (x + a (y + H/2), y) and ShearY: (x, y + a (x + W/2)) (shear about the top-left corner, see
    ``ev2lib.data._affine``); TranslateX: (x - a, y), TranslateY: (x, y - a). ``affine_grid`` wants it in
    coordinates normalised to -1..1 (x / (W/2), y / (H/2)), hence the final rescaling.
    """
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
    return torch.stack([torch.stack([e * k for e, k in zip(row, ks)], -1) for row, ks in zip(m, scale)], 1)  # (n, 2, 3)


def _warp(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """uint8 (n, 3, H, W) warped by per-sample ``theta`` (n, 2, 3): nearest neighbour, outside filled with 128.

    Pixels travel as value + 1, so grid_sample's zero padding marks exactly the outside. Identical to the
    per-image ops (torchvision builds its own grid for one theta) except where a source point lies exactly
    half-way between two pixels (e.g. odd sides under a 30 degree turn, translations of k + 1/2 px): float
    rounding then picks either neighbour, not always the same one in the two grids.
    """
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)  # (n, H, W, 2)
    moved = F.grid_sample(x.float() + 1, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return torch.where(moved == 0, float(RANDAUG_FILL), moved - 1).to(torch.uint8)


def _box_mask(centre: torch.Tensor, half: int, H: int, W: int) -> torch.Tensor:
    """(n, 2) (row, column) centres -> bool (n, 1, H, W): the (2 half)^2 box about each, clipped at the borders."""
    ys, xs = torch.arange(H, device=centre.device), torch.arange(W, device=centre.device)
    cy, cx = centre[:, 0, None], centre[:, 1, None]  # (n, 1)
    in_y = (ys >= cy - half) & (ys < cy + half)  # (n, H)
    in_x = (xs >= cx - half) & (xs < cx + half)  # (n, W)
    return (in_y[:, :, None] & in_x[:, None, :])[:, None]


# ----------------------------------------------------------------------------------------------------------
# Mixup / CutMix


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
              seed: int = 0):
    """(B, 3, H, W), (B,) int -> float images, (B, num_classes) soft labels, on x's device; unchanged if both
    alphas are 0.

    :func:`ev2lib.data.mix_batch` drawn from a generator on x's device: one lambda ~ Beta(alpha, alpha) per mixer,
    each image mixed with its neighbour ``roll(1)``; with both alphas > 0 (and B >= 4) mixup takes the first half
    of the batch and CutMix the second (official datasets.py). CutMix pastes the neighbour's box of side
    sqrt(1 - lambda) of the image about a uniform centre, clipped. The label weights are the mixed proportions.
    """
    mixers = [(kind, a) for kind, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if not mixers:
        return x, y
    g = torch.Generator(device=x.device).manual_seed(int(seed))
    B = x.shape[0]
    halves = [slice(0, B)] if len(mixers) == 1 or B < 4 else [slice(0, B // 2), slice(B // 2, B)]
    x, y = x.float(), F.one_hot(y, num_classes).float()
    out = [_mix(kind, alpha, x[h], y[h], g) for (kind, alpha), h in zip(mixers, halves)]
    return torch.cat([o[0] for o in out]), torch.cat([o[1] for o in out])


def _mix(kind: str, alpha: float, x: torch.Tensor, y: torch.Tensor, g: torch.Generator):
    """float (n, 3, H, W), (n, classes) -> mixed images and labels; one lambda for the n samples."""
    # lambda ~ Beta(alpha, alpha). torch.distributions.Beta samples from the global generator only; its kernel,
    # a 2-component Dirichlet, takes ours.
    lam = torch._sample_dirichlet(torch.full((2,), float(alpha), device=x.device), generator=g)[0]  # 0-d
    if kind == "mixup":
        return lam * x + (1 - lam) * x.roll(1, 0), lam * y + (1 - lam) * y.roll(1, 0)
    H, W = x.shape[-2:]
    centre = torch.stack([torch.randint(H, (), generator=g, device=x.device),
                          torch.randint(W, (), generator=g, device=x.device)])
    r = 0.5 * torch.sqrt(1 - lam)  # half the box side, as a fraction of the image side
    hh, hw = (r * H).floor().long(), (r * W).floor().long()
    y1, y2 = (centre[0] - hh).clamp(min=0), (centre[0] + hh).clamp(max=H)
    x1, x2 = (centre[1] - hw).clamp(min=0), (centre[1] + hw).clamp(max=W)
    ys, xs = torch.arange(H, device=x.device), torch.arange(W, device=x.device)
    inside = ((ys >= y1) & (ys < y2))[:, None] & ((xs >= x1) & (xs < x2))[None, :]  # (H, W)
    kept = 1 - (y2 - y1) * (x2 - x1) / (H * W)  # the proportion of each image that stays its own
    return torch.where(inside, x.roll(1, 0), x), kept * y + (1 - kept) * y.roll(1, 0)
