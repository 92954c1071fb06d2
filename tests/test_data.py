"""Datasets and the input pipeline: sources, augmentation, mutable stages, bad input."""
import urllib.error

import pytest
import torch
from PIL import Image

from ev2lib import augment as aug
from ev2lib import data
from ev2lib import randaugment as ra
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
        out = aug.augment(img, seed, image_size=32, crop="rrc").float()
        cols, rows = out[0, 16], out[1, :, 16]
        w, h = abs(cols[-1] - cols[0]) * 32 / 31 + 1, (rows[-1] - rows[0]) * 32 / 31 + 1  # box side in pixels
        areas.append(w * h / 200**2)
        ratios.append(w / h)
        flips += bool(cols[-1] < cols[0])
    assert 0.04 <= min(areas) < 0.15 and max(areas) > 0.8 and max(areas) <= 1.02  # official area range 0.05-1
    assert 0.7 <= min(ratios) < 0.85 and 1.2 < max(ratios) <= 1.4  # aspect 3/4-4/3
    assert 115 <= flips <= 185  # half the images flipped (binomial 300 x 0.5, 4 sigma)
    assert torch.equal(aug.augment(img, 7, 32), aug.augment(img, 7, 32))
    state = torch.get_rng_state()
    aug.augment(img, 7, 32, randaug_magnitude=10)
    assert torch.equal(state, torch.get_rng_state())  # the global RNG is untouched


def test_pad_crop_shifts_by_at_most_4_pixels():
    img = _coordinates(32)
    for seed in range(50):
        out = aug.augment(img, seed, image_size=32, crop="pad")
        shift = (out[1, 16, 16].int() - 16)  # rows are never flipped
        assert -4 <= shift <= 4


@pytest.mark.parametrize("mixup,cutmix", [(0.8, 0.0), (0.0, 1.0), (0.8, 1.0)])
def test_mix_batch_label_weights_are_the_mixed_proportions(mixup, cutmix):
    values = torch.arange(8) * 30.0  # image i is one flat colour, class i
    x = values.view(8, 1, 1, 1).expand(8, 3, 16, 16).to(torch.uint8)
    xm, ym = aug.mix_batch(x, torch.arange(8), 8, mixup, cutmix, seed=3)
    assert ym.shape == (8, 8) and torch.allclose(ym.sum(1), torch.ones(8))
    assert (ym.max(1).values < 1).all()  # every image was mixed with another one
    # Mean pixel = sum over classes of label weight x that class's colour: the weights are the proportions.
    assert torch.allclose(xm.mean((1, 2, 3)), ym @ values, atol=0.5)
    again = aug.mix_batch(x, torch.arange(8), 8, mixup, cutmix, seed=3)
    assert torch.equal(again[0], xm) and not torch.equal(aug.mix_batch(x, torch.arange(8), 8, mixup, cutmix, 4)[0], xm)


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


def _seeded_rand_augment(img, magnitude, seed):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return ra.rand_augment(img, magnitude)


def test_randaug_op_args_follow_the_official_formulas_and_extrapolate():
    assert ra.OPS[:3] == ("AutoContrast", "Equalize", "Invert") and len(set(ra.OPS)) == 16
    args = lambda op, m, side=224: ra.op_args(op, m, side)[0]  # noqa: E731
    assert args("Rotate", 10) == pytest.approx(30) and args("Rotate", 15) == pytest.approx(45)  # not clamped at 10
    assert args("ShearX", 10) == pytest.approx(0.3) and args("ShearY", 20) == pytest.approx(0.6)
    assert args("TranslateX", 10) == pytest.approx(100) and args("TranslateY", 20, 32) == pytest.approx(200 / 7)
    assert [args("Brightness", m) for m in (0, 5, 10, 15)] == pytest.approx([0.1, 1.0, 1.9, 2.8])
    assert [args("Posterize", m) for m in (0, 5, 10, 20, 25)] == [0, 2, 4, 8, 8]  # more bits (weaker) as m rises
    assert [args("Solarize", m) for m in (0, 5, 10)] == [0, 128, 256]  # fewer pixels inverted as m rises
    assert args("SolarizeAdd", 10) == 110 and args("SolarizeAdd", 20) == 220
    assert args("Cutout", 10) == 40 and args("Cutout", 20, 32) == 11  # int(2 * 40/224 * 32)
    assert all(ra.op_args(op, 20, 32) == () for op in ("AutoContrast", "Equalize", "Invert"))
    with pytest.raises(DataError, match="unknown RandAugment op 'Identity'"):
        ra.op_args("Identity", 5, 32)


def _line_angle(img):
    """Angle in degrees (0-180) of the principal axis of an image's bright pixels."""
    ys, xs = torch.nonzero(img[0] > 200, as_tuple=True)
    xs, ys = xs.float() - xs.float().mean(), ys.float() - ys.float().mean()
    return float(torch.rad2deg(0.5 * torch.atan2(2 * (xs * ys).mean(), (xs**2).mean() - (ys**2).mean()))) % 180


def test_randaug_geometric_ops_move_pixels_as_the_official_code():
    bar = torch.zeros(3, 65, 65, dtype=torch.uint8)
    bar[:, 32, 8:57] = 255  # a horizontal bar through the centre
    for sign in (1, -1):
        turned = ra.APPLY["Rotate"](bar, sign * ra.op_args("Rotate", 15, 65)[0])
        assert min(abs(_line_angle(turned) - a) for a in (45, 135)) < 2  # magnitude 15: 45 degrees
    column = torch.zeros(3, 40, 40, dtype=torch.uint8)
    column[:, :, 30] = 255
    sheared = ra.APPLY["ShearX"](column, ra.op_args("ShearX", 20, 40)[0])  # input (x + 0.6 y, y)
    assert [int(torch.nonzero(sheared[0, y] == 255)[0]) for y in (0, 10, 20)] == [30, 24, 18]
    assert sheared[0, 39, 39] == ra.FILL  # uncovered pixels are grey 128
    dot = torch.zeros(3, 64, 64, dtype=torch.uint8)
    dot[:, 10, 5] = 255
    moved = ra.APPLY["TranslateX"](dot, ra.op_args("TranslateX", 10, 64)[0])  # 100/224 * 64 = 28.6 px
    assert abs(int(torch.nonzero(moved[0, 10] == 255)[0]) - 5 - 28.6) <= 1
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cut = ra.APPLY["Cutout"](torch.zeros(3, 224, 224, dtype=torch.uint8), ra.op_args("Cutout", 10, 224)[0])
    rows, cols = torch.nonzero(cut[0] == ra.FILL, as_tuple=True)
    assert 0 < rows.max() - rows.min() + 1 <= 80 and 0 < cols.max() - cols.min() + 1 <= 80  # box of side 2 x 40


def test_randaug_magnitude_0_keeps_the_level_dependent_ops_official():
    img = data.synthetic(1, size=32)[0][0]
    for op in ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY", "Cutout", "SolarizeAdd"):
        assert torch.equal(ra.APPLY[op](img, *ra.op_args(op, 0, 32)), img), op  # zero-range ops: identity
    assert torch.equal(ra.APPLY["Solarize"](img, *ra.op_args("Solarize", 0, 32)), 255 - img)  # threshold 0
    assert ra.APPLY["Brightness"](img, *ra.op_args("Brightness", 0, 32)).float().mean() < 0.11 * img.float().mean() + 1
    assert int(ra.APPLY["Posterize"](img, *ra.op_args("Posterize", 0, 32)).max()) == 0  # 0 bits


def test_randaug_magnitude_20_perturbs_images_more_than_10():
    x = data.synthetic(400, size=32, seed=3)[0]
    change = {m: torch.stack([(_seeded_rand_augment(img, m, seed).float() - img.float()).abs().mean()
                              for seed, img in enumerate(x)]) for m in (5, 10, 20)}  # mean |pixel change| per image
    # The same seed draws the same ops and signs at every magnitude: a paired comparison. Level-independent ops
    # (Invert, Equalize, AutoContrast) and the official Posterize/Solarize quirk dilute it, hence the mean.
    diff = change[20] - change[10]
    assert diff.mean() > 5 * diff.std() / len(diff) ** 0.5, diff.mean()  # about 8.5 standard errors here
    assert change[20].mean() > 1.08 * change[10].mean() > 1.08 * 1.08 * change[5].mean()  # 73.6 > 66.1 > 49.7


def test_rand_augment_is_uint8_same_shape_and_deterministic_from_the_seed():
    img = data.synthetic(1, size=32)[0][0][:, :20, :]  # non-square: (3, 20, 32)
    outs = [_seeded_rand_augment(img, 15, seed) for seed in (1, 1, 2, 3, 4)]
    assert all(o.dtype == torch.uint8 and o.shape == img.shape for o in outs)
    assert torch.equal(outs[0], outs[1]) and not all(torch.equal(outs[0], o) for o in outs[2:])
    with pytest.raises(DataError, match="one uint8"):
        ra.rand_augment(img.float(), 10)


def test_eval_resize_crops_below_320_and_squashes_above():
    x = torch.zeros(2, 3, 200, 300, dtype=torch.uint8)
    assert aug.eval_resize(x, 224).shape == (2, 3, 224, 224)
    assert aug.eval_resize(x, 384).shape == (2, 3, 384, 384)
    x[..., :50] = 255  # squash keeps the left band, a centre crop cuts it away
    assert aug.eval_resize(x, 384)[..., 0].float().mean() > 200 and aug.eval_resize(x, 224)[..., 0].float().mean() < 10
    assert aug.eval_resize(x, 224, crop=False)[..., 0].float().mean() > 200  # CIFAR-style: never crop


def test_validation_hold_out_is_the_same_for_every_seed_and_disjoint_from_training():
    a = data.load_data("synthetic:256", image_size=32, val_images=64, seed=0, batch_size=32)
    b = data.load_data("synthetic:256", image_size=32, val_images=64, seed=1, train_subset=100, batch_size=32)
    assert torch.equal(a.val[0], b.val[0]) and len(a.val[1]) == 64 and a.num_train == 192 and b.num_train == 100
    seen = {bytes(x.numpy()) for x in a.train[0]}
    assert not any(bytes(x.numpy()) in seen for x in a.val[0])  # no validation image is trained on
    assert sum(len(y) for _, y in a.eval_batches("val")) == 64
    with pytest.raises(DataError, match="no 'val' split"):
        next(data.load_data("synthetic:256", image_size=32).eval_batches("val"))
