"""Datasets and the input pipeline (paper §5.1; official ``preprocessing.py`` / ``datasets.py``).

Two back ends share one interface, :class:`TrainData`:

* **in memory** -- a whole split as one uint8 tensor (N, 3, H, W): CIFAR-10/100, the shared offline CIFAR-10
  JPEG archive (decoded once, cached) and generated data;
* **files** -- any torchvision dataset of PIL images (Flowers-102, Stanford Cars, Imagenette, ImageFolder),
  augmented in persistent ``DataLoader`` workers.

**Randomness.** Every random draw of the augmentation comes from a generator seeded by (seed, epoch, step): each
image gets its own seed from it (crop, flip, RandAugment run with that seed on a private RNG state, never the
global one) and mixup/CutMix get the next. So a resumed run sees exactly the same batches, and with DDP every rank
computes the same global batch and keeps its slice: ``torchrun --nproc_per_node=N`` trains on the pixels and
labels of a one-process run. One exception: file datasets under DDP mix each rank's slice within itself (the
images before mixing are still identical to a one-process run's).

Images leave the pipeline in pixel units (uint8, or float 0-255 after mixing); the model's own
``normalize`` (which knows what its weights were trained with) turns them into network inputs.

Data locations: ``$EV2_DATA_DIR`` holds the shared ``cifar10_jpeg.npz``; torchvision downloads go to ``root``
(default ``$EV2_DATASETS`` or ``./datasets``); decoded caches to ``$EV2_CACHE_DIR`` (default ``~/.cache/ev2lib``).
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from .errors import DataError
from .files import atomic_write

DATASETS = ("cifar10", "cifar100", "flowers102", "stanford_cars", "imagenette", "imagefolder:<path>",
            "cifar10-shared", "synthetic[:<n>]")
SQUASH_FROM = 320  # official eval: at >= 320 px the whole image is resized (no crop); below, a centre crop
AUGMENT_FIELDS = ("image_size", "randaug_magnitude", "mixup_alpha", "cutmix_alpha", "cutout")
CROPS = ("rrc", "pad", "resize")
VAL_SEED = 2021  # the seed of the validation hold-out: one split for every run


# ----------------------------------------------------------------------------------------------------------
# RandAugment as the official code defines it (paper §4 and §5.1; official efficientnetv2/autoaugment.py)

RANDAUG_OPS = ("AutoContrast", "Equalize", "Invert", "Rotate", "Posterize", "Solarize", "Color", "Contrast",
               "Brightness", "Sharpness", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd")
SIGNED_OPS = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")  # official: negated half the time
MAX_LEVEL = 10.0  # official ``_MAX_LEVEL``: magnitudes above it extrapolate every range linearly
RANDAUG_FILL = 128  # official ``replace_value = [128] * 3`` for Rotate, Shear*, Translate*, Cutout
TRANSLATE_FRACTION = 100 / 224  # official translate_const = 100 px, taken relative to a 224 px side
CUTOUT_FRACTION = 40 / 224  # official cutout_const = 40 px (half the box side), relative to a 224 px side
_NEAREST = v2.InterpolationMode.NEAREST  # the official image_ops.rotate/translate/transform default


def op_args(op: str, magnitude: float, side: int) -> tuple:
    """The argument of RandAugment op ``op`` at ``magnitude`` (official ``level_to_arg``, level/10 of each range).

    Unsigned: :func:`rand_augment` negates the :data:`SIGNED_OPS` half the time. ``side`` is the image side the op
    acts along (width for TranslateX, height for TranslateY, the shorter side for Cutout). Level 10 gives rotate
    30 deg, shear 0.3, translate 100/224 of the side, enhance factor 1.9 (0.1 at level 0, 1.0 at level 5: below 5
    Color/Contrast/Brightness/Sharpness *degrade*, above it they exaggerate), posterize 4 bits, solarize threshold
    256, SolarizeAdd +110 below grey 128, Cutout half-side 40/224 of the side. Above 10 every formula extrapolates
    (level 15: rotate 45 deg, shear 0.45, enhance 2.8). Official quirks kept: Posterize keeps *more* bits and
    Solarize inverts *fewer* pixels as the level rises (both identity from level 20 / 10 on).
    """
    if op not in RANDAUG_OPS:
        raise DataError(f"unknown RandAugment op {op!r}; known: {RANDAUG_OPS}")
    r = float(magnitude) / MAX_LEVEL
    if op in ("AutoContrast", "Equalize", "Invert"):
        return ()
    if op in ("Color", "Contrast", "Brightness", "Sharpness"):
        return (r * 1.8 + 0.1,)
    # Posterize: official int(r * 4) bits, then a shift by 8 - bits. The official code is silent on bits outside
    # 0-8. A shift by 8 (levels < 2.5) is implementation-defined in TF's documentation (as far as we know XLA,
    # which the paper's TPUs run, gives 0, a black image, as here; TF's CPU kernel clamps the shift to 7). A
    # negative shift (levels >= 22.5) does not convert to the image's uint8. We clamp to 0-8 bits (8 = identity).
    return {"Rotate": (r * 30.0,), "ShearX": (r * 0.3,), "ShearY": (r * 0.3,),
            "TranslateX": (r * TRANSLATE_FRACTION * side,), "TranslateY": (r * TRANSLATE_FRACTION * side,),
            "Posterize": (min(max(int(r * 4), 0), 8),), "Solarize": (int(r * 256),),
            "SolarizeAdd": (int(r * 110),), "Cutout": (int(r * CUTOUT_FRACTION * side),)}[op]


def _affine(img: torch.Tensor, translate=(0.0, 0.0), shear=(0.0, 0.0)) -> torch.Tensor:
    """Official shear/translate: nearest neighbour, fill 128, shear about the top-left corner (output pixel (x, y)
    reads input (x + s y, y) for ShearX, (x, y + s x) for ShearY)."""
    return v2.functional.affine(img, 0.0, list(translate), 1.0, list(shear), interpolation=_NEAREST,
                                fill=RANDAUG_FILL, center=[0.0, 0.0])


def _shear_degrees(s: float) -> float:
    return math.degrees(math.atan(s))  # torchvision takes the shear as an angle; the official code as its tangent


def _solarize(img: torch.Tensor, threshold: int) -> torch.Tensor:
    return torch.where(img < threshold, img, 255 - img)  # official: invert the pixels >= threshold


def _solarize_add(img: torch.Tensor, addition: int, threshold: int = 128) -> torch.Tensor:
    added = (img.to(torch.int16) + addition).clamp(0, 255).to(torch.uint8)
    return torch.where(img < threshold, added, img)


def _cutout(img: torch.Tensor, half: int, fill: int | str = RANDAUG_FILL) -> torch.Tensor:
    """Official cutout: a (2 half)^2 box centred on a uniformly drawn pixel, clipped at the borders, filled with
    grey 128 (RandAugment's op) or, ``fill="random"``, uniform random pixels (the fine-tuning augmentation, §5.3)."""
    h, w = img.shape[-2:]
    cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
    out = img.clone()
    box = out[..., max(0, cy - half):cy + half, max(0, cx - half):cx + half]
    box.copy_(torch.randint(0, 256, box.shape, dtype=torch.uint8) if fill == "random" else torch.full_like(box, fill))
    return out


_F = v2.functional
_APPLY = {  # uint8 (3, H, W) and the op's argument -> uint8 (3, H, W)
    "AutoContrast": _F.autocontrast, "Equalize": _F.equalize, "Invert": _F.invert,
    "Rotate": lambda img, deg: _F.rotate(img, deg, interpolation=_NEAREST, fill=RANDAUG_FILL),
    "Posterize": _F.posterize, "Solarize": _solarize, "SolarizeAdd": _solarize_add,
    # Color, Brightness, Sharpness: the official blend(degenerate, image, factor) with PIL's degenerate images,
    # which torchvision's adjust_* compute too (up to rounding by one grey level).
    "Color": _F.adjust_saturation, "Brightness": _F.adjust_brightness, "Sharpness": _F.adjust_sharpness,
    # Contrast: torchvision blends with the mean grey level (PIL's ImageEnhance.Contrast, which the official
    # docstring names). The official TF code blends with sum(histogram)/256 = H*W/256 instead, a constant that
    # depends on the image size (4 at 32 px, 196 at 224 px): a known bug we do not copy.
    "Contrast": _F.adjust_contrast,
    "ShearX": lambda img, s: _affine(img, shear=(_shear_degrees(s), 0.0)),
    "ShearY": lambda img, s: _affine(img, shear=(0.0, _shear_degrees(s))),
    "TranslateX": lambda img, px: _affine(img, translate=(px, 0.0)),
    "TranslateY": lambda img, px: _affine(img, translate=(0.0, px)),
    "Cutout": _cutout,
}


def rand_augment(img: torch.Tensor, magnitude: float, num_layers: int = 2) -> torch.Tensor:
    """Official RandAugment (``distort_image_with_randaugment``) on one uint8 (3, H, W) image -> same shape, uint8.

    ``num_layers`` times (official ``ra_num_layers = 2``) pick one of the 16 :data:`RANDAUG_OPS` uniformly and
    apply it always (the official per-op ``prob`` is drawn but unused), with the argument :func:`op_args` gives at
    ``magnitude`` on the official 0-10 scale; magnitudes above 10 (the paper's 15-25, Table 6) extrapolate.
    Every random draw (op, sign, Cutout centre) comes from torch's default CPU generator: seed it (as
    :func:`augment` does) for a reproducible result.

    Differences from the official code: Translate and Cutout are relative to the side (100/224 and 40/224 of it)
    where the official constants are pixels at whatever size it trains at (128-380 px under progressive
    learning); Contrast uses the mean grey level (see ``_APPLY``); Posterize's bits are clamped to 0-8; rounding
    may differ by one grey level.
    """
    if img.dtype != torch.uint8 or img.ndim != 3:
        raise DataError(f"rand_augment takes one uint8 (3, H, W) image, got {img.dtype} {tuple(img.shape)}")
    h, w = img.shape[-2:]
    for _ in range(num_layers):
        op = RANDAUG_OPS[int(torch.randint(len(RANDAUG_OPS), ()))]
        side = {"TranslateX": w, "TranslateY": h}.get(op, min(h, w))
        args = op_args(op, magnitude, side)
        if op in SIGNED_OPS and torch.rand(()) < 0.5:
            args = (-args[0],)
        img = _APPLY[op](img, *args)
    return img


# ----------------------------------------------------------------------------------------------------------
# Augmentation: one image at a time, from its own seed


def _seeds(g: torch.Generator, n: int) -> list[int]:
    return torch.randint(0, 2**62, (n,), generator=g).tolist()


def augment(img: torch.Tensor, seed: int, image_size: int, randaug_magnitude: float = 0.0, crop: str = "rrc",
            cutout: float = 0.0, **_) -> torch.Tensor:
    """uint8 (3, H, W) -> uint8 (3, S, S), drawing only from ``seed`` (the global RNG is left untouched).

    ``crop="rrc"``: the official random resized crop (area 0.05-1, aspect 3/4-4/3) to S. ``crop="pad"``: the
    CIFAR recipe, reflect-pad 4 and crop back to H, then resize to S if S != H. ``crop="resize"``: the whole image
    resized to S (the official fine-tuning augmentation, ``augname='ft'``). All flip half the images, then apply
    :func:`rand_augment` (2 ops at ``randaug_magnitude``; 0 = off), then cutout when ``cutout > 0``: a box whose
    side is that fraction of S, filled with random pixels (the official fine-tuning's is 0.5, a pad of S/4).
    """
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators stay untouched
        if crop == "rrc":
            img = v2.RandomResizedCrop(image_size, scale=(0.05, 1.0), antialias=True)(img)
        else:
            if crop == "pad":
                img = v2.RandomCrop(img.shape[-2:], padding=4, padding_mode="reflect")(img)
            if img.shape[-1] != image_size or img.shape[-2] != image_size:
                img = v2.functional.resize(img, [image_size, image_size], antialias=True)
        img = v2.RandomHorizontalFlip()(img)
        if randaug_magnitude > 0:
            img = rand_augment(img, randaug_magnitude)
        if cutout > 0:
            img = _cutout(img, round(cutout * image_size / 2), fill="random")
    return img


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float,
              seed: int = 0):
    """(B, 3, H, W), (B,) int -> float images, (B, num_classes) soft labels; integer labels if both alphas are 0.

    torchvision's ``MixUp``/``CutMix`` (one lambda per batch, each image mixed with its neighbour ``roll(1)``) on
    half the batch each when both alphas are > 0 (official datasets.py). The official code instead mixes with the
    reversed batch and draws lambda per sample. The label weights are the mixed proportions in both.
    """
    mixers = [m(alpha=a, num_classes=num_classes) for m, a in ((v2.MixUp, mixup_alpha), (v2.CutMix, cutmix_alpha)) if a > 0]
    if not mixers:
        return x, y
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)  # CPU only: CUDA generators stay untouched
        if len(mixers) == 1 or x.shape[0] < 4:
            return mixers[0](x.float(), y)
        h = x.shape[0] // 2
        (xa, ya), (xb, yb) = mixers[0](x[:h].float(), y[:h]), mixers[1](x[h:].float(), y[h:])
    return torch.cat([xa, xb]), torch.cat([ya, yb])


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


# ----------------------------------------------------------------------------------------------------------
# Sources


def shared_cifar10_path() -> Path | None:
    """The offline CIFAR-10 archive ``$EV2_DATA_DIR/cifar10_jpeg.npz``; None if unset or absent."""
    d = os.environ.get("EV2_DATA_DIR")
    return Path(d) / "cifar10_jpeg.npz" if d and (Path(d) / "cifar10_jpeg.npz").is_file() else None


def _decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from torchvision.io import decode_jpeg

    data = torch.from_numpy(blob)
    return torch.stack(decode_jpeg([data[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)])).numpy()


def _read_cache(cache: Path) -> dict | None:
    try:
        with np.load(cache) as z:
            return {"train": (torch.from_numpy(z["x_train"]), torch.from_numpy(z["y_train"])),
                    "test": (torch.from_numpy(z["x_test"]), torch.from_numpy(z["y_test"])),
                    "classes": [str(c) for c in z["class_names"]]}
    except (OSError, ValueError, KeyError):
        return None  # missing or damaged: rebuilt by the caller


def load_shared_cifar10(path: str | Path | None = None) -> dict:
    """Decode the shared CIFAR-10 JPEG archive once (about 10 s) and cache the uint8 arrays.

    Returns ``{"train": (x, y), "test": (x, y), "classes": [...]}``, x uint8 (N, 3, 32, 32), y int64."""
    path = Path(path) if path else shared_cifar10_path()
    if path is None or not path.is_file():
        raise DataError("the offline CIFAR-10 archive cifar10_jpeg.npz was not found: set EV2_DATA_DIR to its folder "
                        "or use --data cifar10 on a machine with internet (or --data synthetic)")
    st = path.stat()
    digest = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    cache = Path(os.environ.get("EV2_CACHE_DIR", Path.home() / ".cache" / "ev2lib")) / f"cifar10_jpeg_{digest}.npz"
    if (found := _read_cache(cache)) is not None:
        return found
    try:
        with np.load(path) as z:
            arrays = {"x_train": _decode_jpegs(z["train_jpeg"], z["train_offsets"]), "y_train": z["y_train"].astype(np.int64),
                      "x_test": _decode_jpegs(z["test_jpeg"], z["test_offsets"]), "y_test": z["y_test"].astype(np.int64),
                      "class_names": z["class_names"]}
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise DataError(f"{path} is damaged ({type(e).__name__}: {str(e)[:80]}); restore the file") from None
    atomic_write(cache, lambda f: np.savez(f, **arrays))
    return _read_cache(cache)


def synthetic(n: int, num_classes: int = 10, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated class-conditional images for machines with no data: each class is a fixed random low-frequency
    colour pattern; every image is its class pattern, randomly shifted, plus noise. Learnable in a few steps."""
    g = torch.Generator().manual_seed(10_000 + num_classes)  # the class patterns: the same for train and test
    patterns = torch.nn.functional.interpolate(torch.rand(num_classes, 3, 4, 4, generator=g) * 255, size=size,
                                               mode="bilinear", align_corners=False)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    shifts = torch.randint(-size // 8, size // 8 + 1, (n, 2), generator=g)
    x = torch.stack([patterns[c].roll((int(s[0]), int(s[1])), (1, 2)) for c, s in zip(y.tolist(), shifts)])
    x = x + torch.randn(x.shape, generator=g) * 40
    return x.clamp(0, 255).to(torch.uint8), y


def torchvision_dataset(name: str, split: str, root: str | Path, download: bool = True):
    """A ``torchvision.datasets`` split by ev2lib name; a failed download becomes one :class:`DataError`."""
    from torchvision import datasets as tvd

    train = split == "train"
    if name.startswith("imagefolder:"):
        folder = Path(name.split(":", 1)[1]) / ("train" if train else "val")
        if not folder.is_dir():
            raise DataError(f"ImageFolder data needs {folder} (one sub-folder per class under train/ and val/)")
        return tvd.ImageFolder(folder)
    makers = {
        "cifar10": lambda: tvd.CIFAR10(root, train=train, download=download),
        "cifar100": lambda: tvd.CIFAR100(root, train=train, download=download),
        # Table 9's 2,040 Flowers training images are torchvision's "train" and "val" splits together.
        "flowers102": lambda: torch.utils.data.ConcatDataset(
            [tvd.Flowers102(root, split=s, download=download) for s in ("train", "val")]) if train
        else tvd.Flowers102(root, split="test", download=download),
        # torchvision cannot download Stanford Cars any more (its URL is gone): the files must be in place.
        "stanford_cars": lambda: tvd.StanfordCars(root, split="train" if train else "test"),
        "imagenette": lambda: tvd.Imagenette(root, split="train" if train else "val", size="320px",
                                             download=download and not (Path(root) / "imagenette2-320").is_dir()),
    }
    if name not in makers:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    try:
        return makers[name]()
    except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError for missing files
        if name == "stanford_cars":
            raise DataError(f"Stanford Cars is not in {Path(root) / 'stanford_cars'} and cannot be downloaded (its "
                            f"original URL is gone; {str(e)[:60]}): put a copy there (devkit/ with cars_meta.mat and "
                            f"cars_train_annos.mat, cars_train/, cars_test/, cars_test_annos_withlabels.mat) and "
                            f"`pip install scipy`") from None
        raise DataError(f"could not download {name} to {root} ({type(e).__name__}: {str(e)[:100]}): connect to the "
                        f"internet, or put the files there yourself and pass download=False; offline, use --data "
                        f"cifar10-shared (EV2_DATA_DIR) or --data synthetic") from None


def _num_classes(ds) -> int:
    while isinstance(ds, (torch.utils.data.Subset, torch.utils.data.ConcatDataset)):
        ds = ds.dataset if isinstance(ds, torch.utils.data.Subset) else ds.datasets[0]
    return len(ds.classes) if hasattr(ds, "classes") else int(max(ds._labels)) + 1


# ----------------------------------------------------------------------------------------------------------
# The training data the loop uses


def _step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + step)


class _SeededFiles(torch.utils.data.Dataset):
    """A file dataset indexed by ``(index, seed)``: decode, then :func:`augment` with that seed (in a worker)."""

    def __init__(self, ds, augment_state: torch.Tensor, crop: str):
        self.ds, self.state, self.crop = ds, augment_state, crop

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, key):
        i, seed = key
        img, label = self.ds[i]
        settings = dict(zip(AUGMENT_FIELDS, self.state.tolist()))
        settings["image_size"] = int(settings["image_size"])
        return augment(v2.functional.pil_to_tensor(img.convert("RGB")), seed, crop=self.crop, **settings), label


class TrainData:
    """Train and test splits behind one interface: :meth:`set_augment`, :meth:`train_batches`, :meth:`eval_batches`.

    ``batch_size`` is per process; with DDP each rank keeps its slice of every global batch. ``crop`` is ``"rrc"``
    (official random resized crop) or ``"pad"`` (pad-4 random crop, the usual CIFAR augmentation).

    ``augment_device`` (in-memory data only): keep the uint8 training images on that device (a GPU) and augment
    each batch there with :mod:`ev2lib.device_augment` (the same distribution as the per-image CPU path, drawn from
    the same per-step seed); None augments one image at a time on the CPU (:func:`augment`).
    """

    def __init__(self, train, test, num_classes: int, *, image_size: int, eval_size: int | None = None,
                 batch_size: int = 128, crop: str = "rrc", seed: int = 0, rank: int = 0, world: int = 1,
                 num_workers: int = 0, source: str = "", val=None, augment_device=None):
        if crop not in CROPS:
            raise DataError(f"crop must be one of {CROPS}, got {crop!r}")
        if augment_device is not None and not isinstance(train, tuple):
            raise DataError("augmenting on the device needs in-memory data (cifar10, cifar100, synthetic); for "
                            "image folders augment on the CPU (augment_on='cpu') with num_workers")
        self.train, self.val, self.test, self.num_classes, self.source = train, val, test, num_classes, source
        self.in_memory = isinstance(train, tuple)
        self.batch_size, self.crop, self.seed, self.rank, self.world = batch_size, crop, seed, rank, world
        self.eval_size, self.num_workers, self._loader = eval_size or image_size, num_workers, None
        # The augmentation settings live in shared memory, so persistent workers see set_augment() at once.
        self.augment_state = torch.tensor([image_size] + [0.0] * (len(AUGMENT_FIELDS) - 1),
                                          dtype=torch.float64).share_memory_()
        self.augment_device = None if augment_device is None else torch.device(augment_device)
        if self.augment_device is not None:  # uint8 images: CIFAR-10's 50,000 take 150 MiB of GPU memory
            self.train = (train[0].to(self.augment_device), train[1].to(self.augment_device))
        self.num_train = len(train[0]) if self.in_memory else len(train)
        if self.num_train < batch_size * world:
            raise DataError(f"{self.num_train} training images cannot fill one batch of {batch_size} on each of "
                            f"{world} processes: lower --batch-size")
        self.steps_per_epoch = self.num_train // (batch_size * world)  # drop_last

    @property
    def augmentation(self) -> dict:
        """The current image size, RandAugment magnitude, mixup / CutMix alphas and cutout size."""
        d = dict(zip(AUGMENT_FIELDS, self.augment_state.tolist()))
        return {**d, "image_size": int(d["image_size"])}

    def set_augment(self, **settings) -> None:
        """Change the augmentation (between epochs; progressive learning, §4.2); None leaves a value as it is."""
        for k, v in settings.items():
            if k not in AUGMENT_FIELDS:
                raise DataError(f"unknown augmentation setting {k!r}; known: {AUGMENT_FIELDS}")
            if v is not None:
                self.augment_state[AUGMENT_FIELDS.index(k)] = float(v)

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's sample indices (global batch i is block i): a permutation of (seed, epoch) only."""
        perm = torch.randperm(self.num_train, generator=torch.Generator().manual_seed(self.seed * 100_003 + epoch))
        return perm[: self.steps_per_epoch * self.batch_size * self.world]

    def train_batches(self, epoch: int, start_step: int = 0):
        """Yield ``(step_in_epoch, x, y)`` from ``start_step`` on: x (B, 3, S, S) in pixel units, y int (B,) or
        soft (B, classes) when mixing. B is this rank's share of the global batch."""
        s, idx, gb = self.augmentation, self.order(epoch), self.batch_size * self.world
        mine = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        batches = self._file_batches(epoch, start_step, idx) if not self.in_memory else None
        if self.augment_device is not None:
            yield from self._device_batches(epoch, start_step, idx, mine)
            return
        for i in range(start_step, self.steps_per_epoch):
            g = _step_generator(self.seed, epoch, i)
            seeds, mix_seed = _seeds(g, gb), _seeds(g, 1)[0]
            if self.in_memory:  # the whole global batch, then this rank's slice: identical to one process
                xs, ys = self.train
                b = idx[i * gb:(i + 1) * gb]
                x = torch.stack([augment(xs[j], sd, crop=self.crop, **s) for j, sd in zip(b.tolist(), seeds)])
                x, y = mix_batch(x, ys[b], self.num_classes, s["mixup_alpha"], s["cutmix_alpha"], mix_seed)
                yield i, x[mine], y[mine]
            else:
                x, y = next(batches)
                yield (i, *mix_batch(x, y, self.num_classes, s["mixup_alpha"], s["cutmix_alpha"], mix_seed))

    def _device_batches(self, epoch: int, start_step: int, idx: torch.Tensor, mine: slice):
        """train_batches on ``augment_device``: the global batch augmented and mixed there, then this rank's slice."""
        from . import device_augment

        s, (xs, ys), gb = self.augmentation, self.train, self.batch_size * self.world
        idx = idx.to(self.augment_device)
        for i in range(start_step, self.steps_per_epoch):
            batch_seed, mix_seed = _seeds(_step_generator(self.seed, epoch, i), 2)
            b = idx[i * gb:(i + 1) * gb]
            x = device_augment.augment_batch(xs[b], batch_seed, image_size=s["image_size"], crop=self.crop,
                                             randaug_magnitude=s["randaug_magnitude"], cutout=s["cutout"])
            x, y = device_augment.mix_batch(x, ys[b], self.num_classes, s["mixup_alpha"], s["cutmix_alpha"], mix_seed)
            yield i, x[mine], y[mine]

    def _file_batches(self, epoch: int, start_step: int, idx: torch.Tensor):
        if self._loader is None:
            self._sampler = _KeyList()
            self._loader = torch.utils.data.DataLoader(
                _SeededFiles(self.train, self.augment_state, self.crop), batch_size=self.batch_size,
                sampler=self._sampler, num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                drop_last=True, pin_memory=torch.cuda.is_available())
        gb, keys = self.batch_size * self.world, []
        for i in range(start_step, self.steps_per_epoch):  # the same (index, seed) pairs as train_batches draws
            seeds = _seeds(_step_generator(self.seed, epoch, i), gb)
            lo = self.rank * self.batch_size
            keys += list(zip(idx[i * gb + lo:i * gb + lo + self.batch_size].tolist(), seeds[lo:lo + self.batch_size]))
        self._sampler.keys = keys
        return iter(self._loader)

    def eval_batches(self, split: str = "test", batch_size: int | None = None, limit: int = 0):
        """Yield ``(x uint8, y)`` over the ``"test"`` or ``"val"`` split (its first ``limit`` images if > 0), at
        ``eval_size``."""
        if split not in ("test", "val") or (split == "val" and self.val is None):
            raise DataError(f"no {split!r} split: use 'test', or hold out validation images with val_images")
        data, bs = self.val if split == "val" else self.test, batch_size or max(self.batch_size, 256)
        if self.in_memory:
            xs, ys = data
            n = min(limit, len(ys)) if limit else len(ys)
            for i in range(0, n, bs):
                yield eval_resize(xs[i:min(i + bs, n)], self.eval_size, crop=self.crop != "pad"), ys[i:min(i + bs, n)]
            return
        size, crop = self.eval_size, self.crop != "pad"
        tf = v2.Compose([v2.PILToTensor(), v2.Lambda(lambda x: eval_resize(x, size, crop))])
        ds = _Transformed(data, tf)
        ds = ds if not limit else torch.utils.data.Subset(ds, range(min(limit, len(ds))))
        yield from torch.utils.data.DataLoader(ds, batch_size=bs, num_workers=self.num_workers)


class _Transformed(torch.utils.data.Dataset):
    def __init__(self, ds, transform):
        self.ds, self.transform = ds, transform

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        img, label = self.ds[i]
        return self.transform(img.convert("RGB")), label


class _KeyList(torch.utils.data.Sampler):
    """A sampler of ``(index, seed)`` keys that the training loop sets each epoch."""

    def __init__(self):
        self.keys = []

    def __iter__(self):
        return iter(self.keys)

    def __len__(self):
        return len(self.keys)


def _subset(xy, n: int, seed: int):
    """A random subset of ``n`` (the shared archive is sorted by class, so take a random one, sorted)."""
    x, y = xy
    if not n or n >= len(y):
        return x, y
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[keep], y[keep]


def _in_memory(name: str, root: Path, download: bool):
    """(train, test, classes, source) for the in-memory datasets, or None for a file dataset."""
    if name.startswith("synthetic"):
        n = int(name.split(":", 1)[1]) if ":" in name else 2048
        return synthetic(n, 10, 32, seed=1), synthetic(max(n // 4, 64), 10, 32, seed=2), 10, f"generated ({n} images)"
    if name == "cifar10-shared" or (name == "cifar10" and shared_cifar10_path() is not None):
        d = load_shared_cifar10()
        return d["train"], d["test"], 10, f"shared CIFAR-10 JPEG archive {shared_cifar10_path()}"
    if name in ("cifar10", "cifar100"):
        tr, te = (torchvision_dataset(name, s, root, download) for s in ("train", "test"))
        arrays = [(torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(d.targets)) for d in (tr, te)]
        return arrays[0], arrays[1], len(tr.classes), f"torchvision {name} at {root}"
    return None


def parse_classes(text) -> list[int]:
    """Class labels as the command lines write them: ``"5-9"`` -> [5, 6, 7, 8, 9]; ``"0,3,7"``; ``""`` -> [] (all)."""
    if text is None or str(text).strip().lower() in ("", "all"):
        return []
    try:
        out = []
        for part in str(text).split(","):
            lo, _, hi = part.partition("-")
            out += range(int(lo), int(hi or lo) + 1)
    except ValueError:
        raise DataError(f"classes must look like 5-9 or 0,3,7, got {text!r}") from None
    if len(set(out)) != len(out) or min(out) < 0:
        raise DataError(f"classes {text!r} lists a class twice or a negative one")
    return out


def _keep_classes(xy, classes: list[int]):
    """The images of ``classes`` only, relabelled 0..len(classes)-1 in the order given."""
    x, y = xy
    keep = torch.isin(y, torch.tensor(classes))
    new_label = {c: i for i, c in enumerate(classes)}
    return x[keep], torch.tensor([new_label[c] for c in y[keep].tolist()], dtype=torch.long)


def _hold_out(n_total: int, n: int) -> tuple[list[int], list[int]]:
    """(train indices, validation indices): ``n`` images held out of the training split, the same ones for every
    run and seed (a fixed generator), so that every choice made on validation is made on the same images."""
    if not 0 < n < n_total:
        raise DataError(f"val_images={n} must be between 1 and the {n_total - 1} training images left after it")
    perm = torch.randperm(n_total, generator=torch.Generator().manual_seed(VAL_SEED))
    return perm[n:].sort().values.tolist(), perm[:n].sort().values.tolist()


def load_data(name: str, *, image_size: int, eval_size: int | None = None, batch_size: int = 128, crop: str = "rrc",
              root: str | Path | None = None, download: bool = True, train_subset: int = 0, eval_subset: int = 0,
              val_images: int = 0, classes="", seed: int = 0, rank: int = 0, world: int = 1,
              num_workers: int = 0, augment_device=None) -> TrainData:
    """Build :class:`TrainData` for a dataset name (see :data:`DATASETS`).

    ``cifar10`` uses the shared offline archive when ``$EV2_DATA_DIR`` has it, else torchvision's download.
    ``synthetic`` (or ``synthetic:<n>``) generates data. ``val_images`` holds that many training images out as a
    validation split (the same for every seed); then ``train_subset`` / ``eval_subset`` keep that many of the rest
    of the training images / of the test images. ``classes`` (e.g. ``"5-9"``, in-memory datasets) keeps those
    classes only, relabelled from 0, in every split; the validation hold-out is drawn before, so a run on classes
    0-4 and one on 5-9 never share an image. ``augment_device``: see :class:`TrainData`.
    """
    wanted = parse_classes(classes)
    name = str(name).lower()
    root = Path(root or os.environ.get("EV2_DATASETS", "datasets"))
    kw = dict(image_size=image_size, eval_size=eval_size, batch_size=batch_size, crop=crop, seed=seed, rank=rank,
              world=world, num_workers=num_workers, augment_device=augment_device)
    found = _in_memory(name, root, download)
    if found is not None:
        tr, te, num_classes, source = found
        val = None
        if val_images:
            keep, held = _hold_out(len(tr[1]), val_images)
            tr, val = (tr[0][keep], tr[1][keep]), (tr[0][held], tr[1][held])
        if wanted:
            if max(wanted) >= num_classes:
                raise DataError(f"{name} has classes 0-{num_classes - 1}; classes={classes!r} asks for {max(wanted)}")
            tr, te, val = (_keep_classes(d, wanted) if d is not None else None for d in (tr, te, val))
            num_classes, source = len(wanted), f"{source}, classes {classes}"
        return TrainData(_subset(tr, train_subset, seed), _subset(te, eval_subset, seed + 1), num_classes,
                         source=source, val=val, **kw)
    if wanted:
        raise DataError(f"classes= selects classes of the in-memory datasets (cifar10, cifar100, synthetic), not of "
                        f"{name}: make an ImageFolder with the classes you want")
    tr, te = (torchvision_dataset(name, s, root, download) for s in ("train", "test"))
    val = None
    if val_images:
        keep, held = _hold_out(len(tr), val_images)
        tr, val = torch.utils.data.Subset(tr, keep), torch.utils.data.Subset(tr, held)
    if train_subset:
        keep = torch.randperm(len(tr), generator=torch.Generator().manual_seed(seed))[:train_subset].tolist()
        tr = torch.utils.data.Subset(tr, keep)
    if eval_subset:
        te = torch.utils.data.Subset(te, range(min(eval_subset, len(te))))
    return TrainData(tr, te, _num_classes(tr), source=f"torchvision {name} at {root}", val=val, **kw)
