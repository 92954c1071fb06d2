"""Datasets and the input pipeline (paper §5.1, official ``preprocessing.py`` / ``datasets.py``; reference §5.2, §6.1).

Two back ends share one API, :class:`TrainData`:

* **in memory** -- the whole split as one uint8 tensor (N, 3, H, W): CIFAR-10/100 (torchvision keeps them in memory
  anyway), the shared offline CIFAR-10 JPEG archive (decoded once, cached in ``~/.cache/ev2lib``) and generated
  data. Batches are cut and augmented on whole tensors in the training process, with a random generator seeded by
  (seed, epoch, step), so a resumed run sees exactly the same augmented batches.
* **files** -- any torchvision dataset of PIL images (Flowers-102, Stanford Cars, Imagenette, ImageFolder):
  per-image :class:`TrainTransform` in persistent ``DataLoader`` workers.

Progressive learning (paper §4.2) changes image size, RandAugment magnitude and mixup/CutMix alpha between
epochs: call :meth:`TrainData.set_stage`. The settings live in a shared-memory tensor that the persistent workers
read, so nothing is rebuilt and nothing is decoded again.
"""
from __future__ import annotations

import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import v2

from .errors import Ev2Error

ROOT = Path(__file__).resolve().parent.parent
CACHE_DIR = Path(os.environ.get("EV2_CACHE_DIR", Path.home() / ".cache" / "ev2lib"))
DATASETS = ("cifar10", "cifar100", "flowers102", "stanford_cars", "imagenette", "imagefolder:<path>",
            "cifar10-shared", "synthetic")
SQUASH_FROM = 320  # official eval: at >= 320 px the whole image is resized (no crop); below, a centre crop


class DataError(Ev2Error, ValueError):
    """An unknown dataset, one that cannot be downloaded, or data files that are missing or damaged."""


# ----------------------------------------------------------------------------------------------------------
# RandAugment magnitude: the paper's scale -> torchvision's


def randaug_bins(magnitude: float) -> tuple[int, int]:
    """Map an official RandAugment magnitude (0-10 scale, ``_MAX_LEVEL = 10``) to torchvision's
    ``(magnitude, num_magnitude_bins)``.

    With 31 bins torchvision's top bin (30) gives the same per-op maxima as the official level 10: shear 0.3,
    rotate 30 deg, brightness/colour/contrast/sharpness 1 +- 0.9, posterize to 4 bits, translate ~0.45 of the image
    side (official: 100 px on 224). So official m -> torchvision ``round(3 m)`` of 31 bins; the progressive
    magnitudes 5, 6.67, 8.33, 10 land exactly on bins 15, 20, 25, 30. What cannot match: the official code
    extrapolates past 10 (the paper's 15-25), torchvision cannot, so m > 10 is clamped to 10; the official ops
    include Cutout, SolarizeAdd and Invert and no Identity; its enhance ops have no random sign (factor 0.1..1.9
    rising with m) and its posterize/solarize strength falls with m (a known quirk).
    """
    m = min(max(float(magnitude), 0.0), 10.0)
    return int(round(3 * m)), 31


def rand_augment(magnitude: float) -> v2.RandAugment:
    """torchvision's RandAugment with 2 ops (official ``ra_num_layers=2``) at an official-scale magnitude."""
    m, bins = randaug_bins(magnitude)
    return v2.RandAugment(num_ops=2, magnitude=m, num_magnitude_bins=bins, fill=128)


def normalize(x: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, H, W) -> float (x - 128) / 128, the official V2 normalisation."""
    return (x.float() - 128.0) / 128.0


# ----------------------------------------------------------------------------------------------------------
# Mixup and CutMix on batches (official datasets.py: half the batch each when both alphas are > 0)


def mix_batch(x: torch.Tensor, y: torch.Tensor, num_classes: int, mixup_alpha: float, cutmix_alpha: float):
    """(B, 3, H, W) float, (B,) int -> images and (B, num_classes) soft labels; integer labels if both alphas are 0.

    torchvision's ``MixUp``/``CutMix`` mix each sample with its neighbour in the batch (``roll(1)``) with one
    lambda per batch; the official code mixes with the reversed batch, draws lambda per sample and keeps
    ``max(lambda, 1 - lambda)``. The label weights are the mixed proportions (for CutMix the pasted area) in both.
    """
    mixers = [v2.MixUp(alpha=a, num_classes=num_classes) if kind == "mixup" else v2.CutMix(alpha=a, num_classes=num_classes)
              for kind, a in (("mixup", mixup_alpha), ("cutmix", cutmix_alpha)) if a > 0]
    if not mixers:
        return x, y
    if len(mixers) == 1 or x.shape[0] < 4:
        return mixers[0](x, y)
    h = x.shape[0] // 2
    (xa, ya), (xb, yb) = mixers[0](x[:h], y[:h]), mixers[1](x[h:], y[h:])
    return torch.cat([xa, xb]), torch.cat([ya, yb])


# ----------------------------------------------------------------------------------------------------------
# Batch-level augmentation for in-memory uint8 data


def random_crop_flip(x: torch.Tensor, g: torch.Generator, pad: int = 4) -> torch.Tensor:
    """CIFAR-style augmentation on a uint8 batch: reflect-pad by ``pad``, random crop back, random flip."""
    b, _, h, w = x.shape
    xp = F.pad(x.float(), (pad, pad, pad, pad), mode="reflect")
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=g)
    rows = (dy[:, None] + torch.arange(h))[:, None, :, None].expand(b, 3, h, w + 2 * pad)  # (B, 3, H, W+2p)
    xp = xp.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w))[:, None, None, :].expand(b, 3, h, w)
    out = xp.gather(3, cols)
    flip = torch.rand(b, generator=g) < 0.5
    out = torch.where(flip[:, None, None, None], out.flip(3), out)
    return out.to(torch.uint8)


def random_resized_crop(x: torch.Tensor, size: int, g: torch.Generator, scale=(0.05, 1.0), ratio=(3 / 4, 4 / 3)):
    """The official train crop on a uint8 batch: a box of area ``scale`` and aspect ``ratio`` (one per image),
    bilinear resize to ``size``, random flip. Boxes are sampled with torch's generator ``g`` (reproducible)."""
    b, _, h, w = x.shape
    area = torch.empty(b).uniform_(*scale, generator=g) * h * w
    logr = torch.empty(b).uniform_(math.log(ratio[0]), math.log(ratio[1]), generator=g)
    bw = (area * logr.exp()).sqrt().clamp(1, w)
    bh = (area / logr.exp()).sqrt().clamp(1, h)
    x0 = torch.rand(b, generator=g) * (w - bw)
    y0 = torch.rand(b, generator=g) * (h - bh)
    # Affine grids map the output square onto each box (coordinates in [-1, 1]).
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 1, 1] = bw / w, bh / h
    theta[:, 0, 2] = (2 * x0 + bw) / w - 1
    theta[:, 1, 2] = (2 * y0 + bh) / h - 1
    flip = torch.rand(b, generator=g) < 0.5
    theta[flip, 0, 0] *= -1
    grid = F.affine_grid(theta, (b, 3, size, size), align_corners=False)
    return F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border", align_corners=False).round().to(torch.uint8)


def eval_resize(x: torch.Tensor, size: int, crop: bool = True) -> torch.Tensor:
    """Official eval preprocessing on a uint8 batch: centre crop of ``size/(size+32)`` then resize below 320 px,
    the whole image squashed to ``size`` at 320 px and above. ``crop=False`` (CIFAR-style "pad" training, where
    the whole small image is the object) always resizes the whole image.
    Identity when the batch already has that size (CIFAR at 32 px is evaluated as is)."""
    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    if crop and size < SQUASH_FROM:
        side = int(round(size / (size + 32) * min(h, w)))
        x = v2.functional.center_crop(x, [side, side])
    return v2.functional.resize(x, [size, size], antialias=True)


# ----------------------------------------------------------------------------------------------------------
# Per-image transform for file datasets (persistent workers read the shared settings)


class AugmentSettings:
    """Mutable augmentation settings in shared memory: image size, RandAugment magnitude, mixup/CutMix alpha."""

    FIELDS = ("image_size", "randaug_magnitude", "mixup_alpha", "cutmix_alpha")

    def __init__(self, image_size: int, randaug_magnitude: float = 0.0, mixup_alpha: float = 0.0, cutmix_alpha: float = 0.0):
        self._t = torch.tensor([image_size, randaug_magnitude, mixup_alpha, cutmix_alpha], dtype=torch.float64).share_memory_()

    def update(self, **kw) -> None:
        for k, v in kw.items():
            if k not in self.FIELDS:
                raise DataError(f"unknown stage setting {k!r}; known: {self.FIELDS}")
            if v is not None:
                self._t[self.FIELDS.index(k)] = float(v)

    def as_dict(self) -> dict:
        d = dict(zip(self.FIELDS, self._t.tolist()))
        d["image_size"] = int(d["image_size"])
        return d

    def __getattr__(self, k):
        if k in AugmentSettings.FIELDS:
            return self.as_dict()[k]
        raise AttributeError(k)


class TrainTransform:
    """PIL image -> uint8 (3, S, S): random resized crop (area 0.05-1, official), flip, RandAugment(m).

    S and m are read from :class:`AugmentSettings` on every call, so :meth:`TrainData.set_stage` reaches the
    persistent workers without rebuilding them."""

    def __init__(self, settings: AugmentSettings, scale=(0.05, 1.0)):
        self.settings, self.scale = settings, scale

    def __call__(self, img):
        s = self.settings.as_dict()
        x = v2.functional.pil_to_tensor(img.convert("RGB")) if not torch.is_tensor(img) else img
        x = v2.RandomResizedCrop(s["image_size"], scale=self.scale, antialias=True)(x)
        x = v2.RandomHorizontalFlip()(x)
        if s["randaug_magnitude"] > 0:
            x = rand_augment(s["randaug_magnitude"])(x)
        return x


class EvalTransform:
    """PIL image -> uint8 (3, S, S) with :func:`eval_resize`."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, img):
        x = v2.functional.pil_to_tensor(img.convert("RGB")) if not torch.is_tensor(img) else img
        return eval_resize(x, self.size)


# ----------------------------------------------------------------------------------------------------------
# Sources: arrays in memory


def shared_cifar10_path() -> Path | None:
    """The offline CIFAR-10 archive: ``$EV2_DATA_DIR/cifar10_jpeg.npz`` or ``<repo>/../shared/data/``; None if absent."""
    for d in (os.environ.get("EV2_DATA_DIR"), ROOT.parent / "shared" / "data"):
        if d and (Path(d) / "cifar10_jpeg.npz").is_file():
            return Path(d) / "cifar10_jpeg.npz"
    return None


def _decode_jpegs(blob: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    from torchvision.io import decode_jpeg

    data = torch.from_numpy(blob)
    files = [data[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]
    return torch.stack(decode_jpeg(files)).numpy()  # (N, 3, 32, 32) uint8


def load_shared_cifar10(path: str | Path | None = None) -> dict:
    """Decode the shared CIFAR-10 JPEG archive once (about 10 s) and cache the uint8 arrays in ``~/.cache/ev2lib``.

    Returns ``{"train": (x, y), "test": (x, y), "classes": [...]}`` with x uint8 (N, 3, 32, 32), y int64."""
    path = Path(path) if path else shared_cifar10_path()
    if path is None or not path.is_file():
        raise DataError("the offline CIFAR-10 archive cifar10_jpeg.npz was not found: set EV2_DATA_DIR to its folder "
                        "or use --data cifar10 on a machine with internet (or --data synthetic)")
    digest = hashlib.sha256(f"{path.resolve()}:{path.stat().st_size}:{path.stat().st_mtime_ns}".encode()).hexdigest()[:16]
    cache = CACHE_DIR / f"cifar10_jpeg_{digest}.npz"
    if cache.is_file():
        try:
            with np.load(cache) as z:
                return {"train": (torch.from_numpy(z["x_train"]), torch.from_numpy(z["y_train"])),
                        "test": (torch.from_numpy(z["x_test"]), torch.from_numpy(z["y_test"])),
                        "classes": [str(c) for c in z["class_names"]]}
        except (OSError, ValueError, KeyError):
            pass  # a damaged cache is rebuilt below
    try:
        with np.load(path) as z:
            arrays = {"x_train": _decode_jpegs(z["train_jpeg"], z["train_offsets"]), "y_train": z["y_train"].astype(np.int64),
                      "x_test": _decode_jpegs(z["test_jpeg"], z["test_offsets"]), "y_test": z["y_test"].astype(np.int64),
                      "class_names": z["class_names"]}
    except (OSError, ValueError, KeyError, RuntimeError) as e:
        raise DataError(f"{path} is damaged ({type(e).__name__}: {str(e)[:80]}); restore the file") from None
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    tmp = cache.with_name(cache.name + f".{os.getpid()}.tmp.npz")
    np.savez(tmp, **arrays)
    os.replace(tmp, cache)
    return load_shared_cifar10(path)


def synthetic(n: int, num_classes: int = 10, size: int = 32, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Generated class-conditional images for machines with no data: each class is a fixed random low-frequency
    colour pattern; every image is its class pattern, randomly shifted, plus noise. Learnable in a few steps."""
    g = torch.Generator().manual_seed(10_000 + num_classes)  # the class patterns: the same for train and test
    patterns = F.interpolate(torch.rand(num_classes, 3, 4, 4, generator=g) * 255, size=size, mode="bilinear",
                             align_corners=False)
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, num_classes, (n,), generator=g)
    shifts = torch.randint(-size // 8, size // 8 + 1, (n, 2), generator=g)
    x = torch.stack([patterns[c].roll((int(s[0]), int(s[1])), (1, 2)) for c, s in zip(y.tolist(), shifts)])
    x = x + torch.randn(x.shape, generator=g) * 40
    return x.clamp(0, 255).to(torch.uint8), y


# ----------------------------------------------------------------------------------------------------------
# Sources: torchvision datasets


def _download_error(name: str, root, e: Exception) -> DataError:
    return DataError(f"could not download {name} to {root} ({type(e).__name__}: {str(e)[:100]}): connect to the "
                     f"internet, or put the files there yourself and pass download=False; offline, use --data "
                     f"cifar10-shared (EV2_DATA_DIR) or --data synthetic")


def torchvision_dataset(name: str, split: str, root: str | Path, download: bool = True, transform=None):
    """A ``torchvision.datasets`` split by ev2lib name; a failed download becomes one :class:`DataError`."""
    from torchvision import datasets as tvd

    train = split == "train"
    makers = {
        "cifar10": lambda: tvd.CIFAR10(root, train=train, download=download, transform=transform),
        "cifar100": lambda: tvd.CIFAR100(root, train=train, download=download, transform=transform),
        "flowers102": lambda: tvd.Flowers102(root, split="train" if train else "test", download=download, transform=transform),
        "stanford_cars": lambda: tvd.StanfordCars(root, split="train" if train else "test", download=download, transform=transform),
        "imagenette": lambda: tvd.Imagenette(root, split="train" if train else "val", size="320px",
                                             download=download and not (Path(root) / "imagenette2-320").is_dir(), transform=transform),
    }
    if name.startswith("imagefolder:"):
        folder = Path(name.split(":", 1)[1]) / ("train" if train else "val")
        if not folder.is_dir():
            raise DataError(f"ImageFolder data needs {folder} (one sub-folder per class under train/ and val/)")
        return tvd.ImageFolder(folder, transform=transform)
    if name not in makers:
        raise DataError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}")
    try:
        return makers[name]()
    except (OSError, RuntimeError) as e:  # URLError is an OSError; torchvision raises RuntimeError when files are missing
        raise _download_error(name, root, e) from None


def num_classes_of(ds) -> int:
    if hasattr(ds, "classes"):
        return len(ds.classes)
    return int(max(ds._labels)) + 1 if hasattr(ds, "_labels") else int(max(t for _, t in ds)) + 1


# ----------------------------------------------------------------------------------------------------------
# The training-data object the loop uses


def epoch_order(n: int, seed: int, epoch: int) -> torch.Tensor:
    """The sample order of an epoch: a permutation that depends only on (seed, epoch), so resuming can replay it."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))


def _step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + step)


class TrainData:
    """Train and test splits behind one interface: :meth:`set_stage`, :meth:`train_batches`, :meth:`eval_batches`.

    ``batch_size`` is per process; with DDP each rank takes every ``world``-th sample of the shared epoch order.
    ``crop`` is ``"rrc"`` (official random resized crop, area 0.05-1) or ``"pad"`` (pad-4 random crop + flip,
    the usual CIFAR augmentation: not the ImageNet recipe, cheaper and better for 32x32 images).
    """

    def __init__(self, train, test, num_classes: int, *, image_size: int, eval_size: int | None = None, batch_size: int = 128,
                 crop: str = "rrc", seed: int = 0, rank: int = 0, world: int = 1, num_workers: int = 0, source: str = ""):
        if crop not in ("rrc", "pad"):
            raise DataError(f"crop must be 'rrc' or 'pad', got {crop!r}")
        self.train, self.test, self.num_classes, self.source = train, test, num_classes, source
        self.in_memory = isinstance(train, tuple)
        self.batch_size, self.crop, self.seed, self.rank, self.world = batch_size, crop, seed, rank, world
        self.eval_size = eval_size or image_size
        self.settings = AugmentSettings(image_size)
        self._loader = None
        if not self.in_memory:
            train.transform = TrainTransform(self.settings)
            test.transform = EvalTransform(self.eval_size)
            self.num_workers = num_workers
        n = len(train[0]) if self.in_memory else len(train)
        if n < batch_size * world:
            raise DataError(f"{n} training images cannot fill one batch of {batch_size} on each of {world} processes: "
                            f"lower --batch-size")
        self.num_train = n
        self.steps_per_epoch = n // (batch_size * world)  # drop_last

    def set_stage(self, image_size=None, randaug_magnitude=None, mixup_alpha=None, cutmix_alpha=None) -> None:
        """Change the augmentation between epochs (progressive learning, §4.2); no worker is rebuilt."""
        self.settings.update(image_size=image_size, randaug_magnitude=randaug_magnitude, mixup_alpha=mixup_alpha,
                             cutmix_alpha=cutmix_alpha)

    def order(self, epoch: int) -> torch.Tensor:
        """The epoch's sample indices, (steps_per_epoch * batch_size * world,): global batch i is block i, and
        rank r trains on the r-th slice of it, so N processes see the batches one process would."""
        return epoch_order(self.num_train, self.seed, epoch)[: self.steps_per_epoch * self.batch_size * self.world]

    def train_batches(self, epoch: int, start_step: int = 0):
        """Yield ``(step_in_epoch, x float (B, 3, S, S), y)`` from ``start_step`` on; y is soft when mixing."""
        s = self.settings.as_dict()
        idx = self.order(epoch)
        if self.in_memory:
            xs, ys = self.train
            gb = self.batch_size * self.world
            for i in range(start_step, self.steps_per_epoch):
                b = idx[i * gb:(i + 1) * gb]
                g = _step_generator(self.seed, epoch, i)
                # Augment the whole global batch with the step's generator, then keep this rank's slice: the
                # same pixels as a one-process run (costs world x the augmentation, cheap next to the model).
                x = xs[b]
                if self.crop == "pad" and x.shape[-1] == s["image_size"]:
                    x = random_crop_flip(x, g)
                elif self.crop == "pad":
                    x = v2.functional.resize(random_crop_flip(x, g), [s["image_size"]] * 2, antialias=True)
                else:
                    x = random_resized_crop(x, s["image_size"], g)
                x, b = x[self.rank * self.batch_size:(self.rank + 1) * self.batch_size], b[self.rank * self.batch_size:(self.rank + 1) * self.batch_size]
                if s["randaug_magnitude"] > 0:
                    ra = rand_augment(s["randaug_magnitude"])
                    x = torch.stack([ra(im) for im in x])  # per image (global RNG): torchvision draws one op per call
                yield (i, *mix_batch(normalize(x), ys[b], self.num_classes, s["mixup_alpha"], s["cutmix_alpha"]))
        else:
            if self._loader is None:
                self._sampler = _IndexList()
                self._loader = torch.utils.data.DataLoader(
                    self.train, batch_size=self.batch_size, sampler=self._sampler, num_workers=self.num_workers,
                    persistent_workers=self.num_workers > 0, drop_last=True, pin_memory=torch.cuda.is_available())
            gb, r = self.batch_size * self.world, self.rank
            self._sampler.indices = [j for i in range(start_step, self.steps_per_epoch)
                                     for j in idx[i * gb + r * self.batch_size:i * gb + (r + 1) * self.batch_size].tolist()]
            for i, (x, y) in enumerate(self._loader, start=start_step):
                yield (i, *mix_batch(normalize(x), y, self.num_classes, s["mixup_alpha"], s["cutmix_alpha"]))

    def eval_batches(self, batch_size: int | None = None, limit: int = 0):
        """Yield ``(x float, y)`` over the test split (first ``limit`` images if > 0), at ``eval_size``."""
        bs = batch_size or max(self.batch_size, 256)
        if self.in_memory:
            xs, ys = self.test
            n = min(limit, len(ys)) if limit else len(ys)
            for i in range(0, n, bs):
                yield normalize(eval_resize(xs[i:min(i + bs, n)], self.eval_size, crop=self.crop == "rrc")), ys[i:min(i + bs, n)]
        else:
            ds = self.test if not limit else torch.utils.data.Subset(self.test, range(min(limit, len(self.test))))
            for x, y in torch.utils.data.DataLoader(ds, batch_size=bs, num_workers=self.num_workers):
                yield normalize(x), y


class _IndexList(torch.utils.data.Sampler):
    """A sampler whose indices the training loop sets each epoch (the epoch order, from the resume point)."""

    def __init__(self):
        self.indices = []

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


def _subset(xy, n: int, seed: int):
    """A class-balanced-in-expectation random subset (the shared archive is sorted by class)."""
    x, y = xy
    if not n or n >= len(y):
        return x, y
    keep = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))[:n].sort().values
    return x[keep], y[keep]


def load_data(name: str, *, image_size: int, eval_size: int | None = None, batch_size: int = 128, crop: str = "rrc",
              root: str | Path | None = None, download: bool = True, train_subset: int = 0, eval_subset: int = 0,
              seed: int = 0, rank: int = 0, world: int = 1, num_workers: int = 0) -> TrainData:
    """Build :class:`TrainData` for a dataset name (see :data:`DATASETS`).

    ``cifar10`` uses the shared offline archive when it exists (``cifar10-shared``), else torchvision's download.
    ``synthetic`` (or ``synthetic:<n>``) generates data. ``root`` defaults to ``$EV2_DATASETS`` or ``./datasets``.
    """
    name = str(name).lower()
    root = Path(root or os.environ.get("EV2_DATASETS", "datasets"))
    kw = dict(image_size=image_size, eval_size=eval_size, batch_size=batch_size, crop=crop, seed=seed, rank=rank,
              world=world, num_workers=num_workers)
    if name.startswith("synthetic"):
        n = int(name.split(":", 1)[1]) if ":" in name else 2048
        return TrainData(synthetic(n, 10, 32, seed=1), synthetic(max(n // 4, 64), 10, 32, seed=2), 10,
                         source=f"generated ({n} train images, 10 classes)", **kw)
    if name == "cifar10-shared" or (name == "cifar10" and shared_cifar10_path() is not None):
        d = load_shared_cifar10()
        return TrainData(_subset(d["train"], train_subset, seed), _subset(d["test"], eval_subset, seed + 1), 10,
                         source=f"shared CIFAR-10 JPEG archive {shared_cifar10_path()}", **kw)
    if name in ("cifar10", "cifar100"):
        tr, te = (torchvision_dataset(name, s, root, download) for s in ("train", "test"))
        arrays = [(torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(d.targets)) for d in (tr, te)]
        return TrainData(_subset(arrays[0], train_subset, seed), _subset(arrays[1], eval_subset, seed + 1),
                         len(tr.classes), source=f"torchvision {name} at {root}", **kw)
    tr, te = (torchvision_dataset(name, s, root, download) for s in ("train", "test"))
    if train_subset:
        tr = torch.utils.data.Subset(tr, epoch_order(len(tr), seed, -1)[:train_subset].tolist())
        tr.classes = tr.dataset.classes if hasattr(tr.dataset, "classes") else None
    return TrainData(tr, te, num_classes_of(tr.dataset if isinstance(tr, torch.utils.data.Subset) else tr),
                     source=f"torchvision {name} at {root}", **kw)
