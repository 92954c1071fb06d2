"""Datasets and the input pipeline: sources, augmentation, mutable stages, bad input."""
import urllib.error

import pytest
import torch
from PIL import Image

from ev2lib import data
from ev2lib.data import DataError


def test_unknown_dataset_is_one_line_error():
    with pytest.raises(DataError, match=r"unknown dataset 'imagenet21k'; known: cifar10"):
        data.load_data("imagenet21k", image_size=32)


def test_offline_download_is_one_line_error(tmp_path, monkeypatch):
    from torchvision import datasets

    def offline(self, *a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(datasets.CIFAR100, "download", offline)
    with pytest.raises(DataError, match=r"could not download cifar100 .*connect to the internet") as e:
        data.load_data("cifar100", image_size=32, root=tmp_path)
    assert "\n" not in str(e.value)


def test_missing_shared_archive_is_one_line_error(tmp_path):
    with pytest.raises(DataError, match="cifar10_jpeg.npz was not found"):
        data.load_shared_cifar10(tmp_path / "nope.npz")


@pytest.mark.skipif(data.shared_cifar10_path() is None, reason="the shared CIFAR-10 archive is only on the dev machine")
def test_shared_cifar10_decodes_to_uint8_in_memory():
    d = data.load_shared_cifar10()
    (x, y), (xt, yt) = d["train"], d["test"]
    assert x.shape == (50000, 3, 32, 32) and x.dtype == torch.uint8 and xt.shape == (10000, 3, 32, 32)
    assert y.bincount().tolist() == [5000] * 10 and d["classes"][0] == "airplane"
    mean = xt.float().mean((0, 2, 3)) / 255
    assert torch.allclose(mean, torch.tensor([0.4941, 0.4851, 0.4504]), atol=2e-3)  # README statistics


def test_synthetic_is_deterministic_and_pixel_units():
    a, b = data.synthetic(64, seed=1), data.synthetic(64, seed=1)
    assert torch.equal(a[0], b[0]) and a[0].shape == (64, 3, 32, 32) and a[0].dtype == torch.uint8
    td = data.load_data("synthetic:256", image_size=16, batch_size=32, crop="rrc")
    i, x, y = next(td.train_batches(0))
    assert x.shape == (32, 3, 16, 16) and x.dtype == torch.uint8 and y.dtype == torch.int64
    assert x.float().mean() > 50  # pixel units: the model's own normalize() makes network inputs


def test_epoch_order_replays_and_ranks_split_the_global_batch_with_augmentation_on():
    def make(**kw):
        td = data.load_data("synthetic:256", image_size=24, **kw)
        td.set_augment(randaug_magnitude=10, mixup_alpha=0.8, cutmix_alpha=1.0)
        return td

    one, r0, r1 = make(batch_size=32), make(batch_size=16, rank=0, world=2), make(batch_size=16, rank=1, world=2)
    assert one.steps_per_epoch == r0.steps_per_epoch == 8
    torch.manual_seed(123)  # the global RNG plays no part
    b = [next(d.train_batches(3, start_step=2)) for d in (one, r0, r1)]
    assert torch.equal(torch.cat([b[1][1], b[2][1]]), b[0][1])  # the same augmented, mixed pixels ...
    assert torch.equal(torch.cat([b[1][2], b[2][2]]), b[0][2])  # ... and soft labels, split across ranks
    torch.manual_seed(456)
    again = next(one.train_batches(3, start_step=2))
    assert torch.equal(again[1], b[0][1]) and not torch.equal(next(one.train_batches(4, 2))[1], b[0][1])


def test_set_augment_changes_size_and_mixing_between_epochs():
    td = data.load_data("synthetic:256", image_size=32, batch_size=32, crop="pad")
    assert next(td.train_batches(0))[1].shape[-1] == 32
    td.set_augment(image_size=24, randaug_magnitude=5, mixup_alpha=0.2, cutmix_alpha=1.0)
    _, x, y = next(td.train_batches(1))
    assert x.shape == (32, 3, 24, 24) and y.shape == (32, 10) and torch.allclose(y.sum(1), torch.ones(32))
    with pytest.raises(DataError, match="unknown augmentation setting"):
        td.set_augment(dropout=0.1)  # dropout belongs to the model: model.set_dropout


def _coordinates(side=200):
    """uint8 image whose channel 0 is the column index, channel 1 the row index: crops reveal their box."""
    r = torch.arange(side, dtype=torch.uint8)
    return torch.stack([r.expand(side, side), r[:, None].expand(side, side), torch.zeros(side, side, dtype=torch.uint8)])


def test_random_resized_crop_geometry_and_flips():
    img, areas, ratios, flips = _coordinates(), [], [], 0
    for seed in range(300):
        out = data.augment(img, seed, image_size=32, crop="rrc").float()
        cols, rows = out[0, 16], out[1, :, 16]
        w, h = abs(cols[-1] - cols[0]) * 32 / 31 + 1, (rows[-1] - rows[0]) * 32 / 31 + 1  # box side in pixels
        areas.append(w * h / 200**2)
        ratios.append(w / h)
        flips += bool(cols[-1] < cols[0])
    assert 0.04 <= min(areas) < 0.15 and max(areas) > 0.8 and max(areas) <= 1.02  # official area range 0.05-1
    assert 0.7 <= min(ratios) < 0.85 and 1.2 < max(ratios) <= 1.4  # aspect 3/4-4/3
    assert 115 <= flips <= 185  # half the images flipped (binomial 300 x 0.5, 4 sigma)
    assert torch.equal(data.augment(img, 7, 32), data.augment(img, 7, 32))
    state = torch.get_rng_state()
    data.augment(img, 7, 32, randaug_magnitude=10)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched


def test_pad_crop_shifts_by_at_most_4_pixels():
    img = _coordinates(32)
    for seed in range(50):
        out = data.augment(img, seed, image_size=32, crop="pad")
        shift = (out[1, 16, 16].int() - 16)  # rows are never flipped
        assert -4 <= shift <= 4


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mix_batch_label_weights_are_the_mixed_proportions(mixup, cutmix):
    values = torch.arange(8) * 30.0  # image i is one flat colour, class i
    x = values.view(8, 1, 1, 1).expand(8, 3, 16, 16).to(torch.uint8)
    xm, ym = data.mix_batch(x, torch.arange(8), 8, mixup, cutmix, seed=3)
    assert ym.shape == (8, 8) and torch.allclose(ym.sum(1), torch.ones(8))
    assert (ym.max(1).values < 1).all()  # every image was mixed with another one
    # Mean pixel = sum over classes of label weight x that class's colour: the weights are the proportions.
    assert torch.allclose(xm.mean((1, 2, 3)), ym @ values, atol=0.5)
    again = data.mix_batch(x, torch.arange(8), 8, mixup, cutmix, seed=3)
    assert torch.equal(again[0], xm) and not torch.equal(data.mix_batch(x, torch.arange(8), 8, mixup, cutmix, 4)[0], xm)


def _image_folder(root, n=8):
    for split in ("train", "val"):
        for c in ("a", "b"):
            (root / split / c).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 30), (i * 20, 100 if c == "a" else 200, 50)).save(root / split / c / f"{i}.png")


def test_persistent_workers_see_new_augmentation_without_rebuild(tmp_path):
    _image_folder(tmp_path)
    td = data.load_data(f"imagefolder:{tmp_path}", image_size=16, batch_size=4, num_workers=1)
    assert td.num_classes == 2 and not td.in_memory
    shapes = [x.shape[-1] for _, x, _ in td.train_batches(0)]
    loader, workers = td._loader, td._loader._iterator._workers
    td.set_augment(image_size=24, randaug_magnitude=10)
    shapes2 = [x.shape[-1] for _, x, _ in td.train_batches(1)]
    assert shapes == [16] * 4 and shapes2 == [24] * 4
    assert td._loader is loader and td._loader._iterator._workers == workers  # same worker processes
    xe, ye = next(td.eval_batches())
    assert xe.shape[-2:] == (16, 16)  # eval size stays fixed (the official eval size)
    again = data.load_data(f"imagefolder:{tmp_path}", image_size=16, batch_size=4, num_workers=0)
    again.set_augment(image_size=24, randaug_magnitude=10)
    assert all(torch.equal(a[1], b[1]) for a, b in zip(td.train_batches(2), again.train_batches(2)))  # per-image seeds


def test_randaug_magnitude_mapping():
    assert data.randaug_bins(10) == (30, 31) and data.randaug_bins(5) == (15, 31)
    assert data.randaug_bins(20 / 3) == (20, 31) and data.randaug_bins(25 / 3) == (25, 31)
    assert data.randaug_bins(15) == (30, 31)  # torchvision cannot extrapolate past the official level 10


def test_eval_resize_crops_below_320_and_squashes_above():
    x = torch.zeros(2, 3, 200, 300, dtype=torch.uint8)
    assert data.eval_resize(x, 224).shape == (2, 3, 224, 224)
    assert data.eval_resize(x, 384).shape == (2, 3, 384, 384)
    x[..., :50] = 255  # squash keeps the left band, a centre crop cuts it away
    assert data.eval_resize(x, 384)[..., 0].float().mean() > 200 and data.eval_resize(x, 224)[..., 0].float().mean() < 10
    assert data.eval_resize(x, 224, crop=False)[..., 0].float().mean() > 200  # CIFAR-style: never crop
