"""Datasets and the batches the training loop draws from them (paper §5.1; official ``datasets.py``).

:class:`TrainData` serves a split **in memory** (one uint8 (N, 3, H, W) tensor: CIFAR, the shared offline CIFAR-10
archive, generated data) or from **files** (torchvision datasets of PIL images, augmented in ``DataLoader`` workers).
Augmentation draws come from a generator seeded by (seed, epoch, step): a resumed run sees the same batches, and
under DDP every rank computes the same global batch and keeps its slice. Images leave in pixel units; the model's
``normalize`` turns them into inputs. ``$EV2_DATA_DIR`` holds the shared ``cifar10_jpeg.npz``; downloads go to
``root`` (``$EV2_DATASETS``, ``./datasets``), caches to ``$EV2_CACHE_DIR``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms import v2

from .augment import CROPS, augment, augment_batch, eval_resize, mix_batch
from .errors import DataError
from .files import atomic_write

DATASETS = ("cifar10", "cifar100", "flowers102", "stanford_cars", "imagenette", "imagefolder:<path>",
            "cifar10-shared", "synthetic[:<n>]")
AUGMENT_FIELDS = ("image_size", "randaug_magnitude", "mixup_alpha", "cutmix_alpha", "cutout", "randaug_fixed_side")
VAL_SEED = 2021  # the seed of the validation hold-out: one split for every run
EVAL_SEED = 2022  # the seed of a test subset (eval_subset): the same images for every run and seed
SHARED_SOURCE = "CIFAR-10, shared JPEG archive (cifar10_jpeg.npz)"


# --- Sources ------------------------------------------------------------------------------------------------------

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
    """Decode the shared CIFAR-10 JPEG archive once (about 10 s) and cache it: ``{"train": (x, y), "test": (x, y),
    "classes": [...]}``, x uint8 (N, 3, 32, 32), y int64."""
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


# --- The training data the loop uses ------------------------------------------------------------------------------

def _step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 1_000_003 + step)


def _seeds(g: torch.Generator, n: int) -> list[int]:
    return torch.randint(0, 2**62, (n,), generator=g).tolist()


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
    ``batch_size`` is per process; ``crop`` "rrc" (random resized crop) or "pad" (CIFAR's pad-4 crop).
    ``augment_device`` (in-memory data) augments each batch on that device (:func:`ev2lib.augment.augment_batch`, the
    same distribution from the same per-step seed); None augments one image at a time on the CPU."""

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
        s, (xs, ys), gb = self.augmentation, self.train, self.batch_size * self.world
        idx = idx.to(self.augment_device)
        for i in range(start_step, self.steps_per_epoch):
            batch_seed, mix_seed = _seeds(_step_generator(self.seed, epoch, i), 2)
            b = idx[i * gb:(i + 1) * gb]
            x = augment_batch(xs[b], batch_seed, image_size=s["image_size"], crop=self.crop, cutout=s["cutout"],
                              randaug_magnitude=s["randaug_magnitude"], randaug_fixed_side=s["randaug_fixed_side"])
            x, y = mix_batch(x, ys[b], self.num_classes, s["mixup_alpha"], s["cutmix_alpha"], mix_seed)
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
        return d["train"], d["test"], 10, SHARED_SOURCE
    if name in ("cifar10", "cifar100"):
        tr, te = (torchvision_dataset(name, s, root, download) for s in ("train", "test"))
        arrays = [(torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous(), torch.tensor(d.targets)) for d in (tr, te)]
        return arrays[0], arrays[1], len(tr.classes), f"torchvision {name}"
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
    """:class:`TrainData` for a dataset name (:data:`DATASETS`; ``synthetic[:<n>]`` generates data). ``val_images``
    holds that many training images out (the same for every seed), then ``train_subset`` / ``eval_subset`` keep that
    many of the rest / of the test images. ``classes`` (e.g. "5-9") keeps those classes, relabelled from 0, after the
    hold-out: runs on classes 0-4 and 5-9 never share an image."""
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
        return TrainData(_subset(tr, train_subset, seed), _subset(te, eval_subset, EVAL_SEED), num_classes,
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
        keep = torch.randperm(len(te), generator=torch.Generator().manual_seed(EVAL_SEED))[:eval_subset]
        te = torch.utils.data.Subset(te, keep.sort().values.tolist())
    return TrainData(tr, te, _num_classes(tr), source=f"torchvision {name}", val=val, **kw)
