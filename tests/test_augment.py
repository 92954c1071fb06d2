"""The augmentation (ev2lib.augment, ev2lib.randaugment): per-sample draws of the batched path, reproducibility,
agreement with the per-image path, mixing, and both in the training data."""
import math

import pytest
import torch
from torchvision.transforms import v2

from ev2lib import augment as da
from ev2lib import data
from ev2lib import randaugment as ra
from ev2lib.errors import DataError

KS_001 = 1.95  # two-sample Kolmogorov-Smirnov: reject at alpha = 0.001 when D > 1.95 sqrt((n + m) / (n m))
CHI2_15_001 = 37.70  # chi-square, 15 degrees of freedom (16 ops), alpha = 0.001


def _images(n: int = 32, size: int = 32) -> torch.Tensor:
    """Real-looking uint8 images plus the corner cases of the pixel ops: a flat image (AutoContrast's max == min),
    a ramp (Equalize's histogram) and pure black / white."""
    x = data.synthetic(n, 10, size, seed=5)[0]
    ramp = torch.linspace(0, 255, size).round().to(torch.uint8).expand(3, size, size)
    flat = [torch.full((3, size, size), v, dtype=torch.uint8) for v in (77, 0, 255)]
    special = torch.stack([flat[0], ramp, ramp.transpose(1, 2), flat[1], flat[2]])
    return torch.cat([x, special])


def _ks(a: torch.Tensor, b: torch.Tensor) -> float:
    """The two-sample Kolmogorov-Smirnov statistic (largest gap between the two empirical CDFs; ties allowed)."""
    a, b = a.double().sort().values, b.double().sort().values
    at = torch.cat([a, b]).unique()
    fa = torch.searchsorted(a, at, right=True) / len(a)
    fb = torch.searchsorted(b, at, right=True) / len(b)
    return float((fa - fb).abs().max())


def _ks_bound(n: int, m: int) -> float:
    return KS_001 * math.sqrt((n + m) / (n * m))


# ----------------------------------------------------------------------------------------------------------
# 1. Per-sample parameters


def test_every_sample_draws_its_own_crop_flip_and_ops():
    p = da.draw(256, 32, 32, seed=11, image_size=32, crop="rrc", randaug_magnitude=10, cutout=0.5)
    assert len({tuple(b) for b in p["box"].tolist()}) > 150  # crop boxes differ across samples
    assert 0.3 < p["flip"].float().mean() < 0.7
    for layer in range(2):
        assert len(p["ops"][:, layer].unique()) >= 10 and len(p["op_centres"][:, layer].unique(dim=0)) > 150
    assert 0.3 < (p["signs"] < 0).float().mean() < 0.7
    rotate = p["ops"] == ra.OPS.index("Rotate")  # magnitude 10: +-30 degrees, per sample
    assert set(p["ra_args"][rotate].tolist()) == {30.0, -30.0}
    assert p["cutout_fill"].shape == (256, 3, 32, 32) and len(p["cutout_centres"].unique(dim=0)) > 150
    # The augmentation itself: 256 copies of one image come out as (almost) 256 different images.
    x = data.synthetic(1, size=32)[0].expand(256, 3, 32, 32).contiguous()
    out = da.augment_batch(x, 11, image_size=32, randaug_magnitude=10)
    assert len(out.flatten(1).unique(dim=0)) > 250


def test_pad_crop_offsets_cover_the_9_by_9_shifts():
    box = da.draw(2000, 32, 32, seed=3, image_size=32, crop="pad")["box"]
    assert box[:, 2:].unique().tolist() == [32] and box[:, :2].unique().tolist() == list(range(9))
    counts = torch.bincount(box[:, 0] * 9 + box[:, 1], minlength=81).float()  # uniform over the 81 offsets
    assert ((counts - 2000 / 81) ** 2 / (2000 / 81)).sum() < 124.84  # chi-square, 80 d.o.f., alpha = 0.001


# ----------------------------------------------------------------------------------------------------------
# 2. Reproducible from the step seed


def test_a_step_is_reproducible_from_its_seed_and_leaves_the_global_rng_alone():
    x, y = data.synthetic(64, size=32, seed=2)
    kw = dict(image_size=24, randaug_magnitude=15, crop="rrc", cutout=0.25)
    state = torch.get_rng_state()
    a, b, c = (da.augment_batch(x, s, **kw) for s in (123, 123, 124))
    ma, mb, mc = (da.mix_batch(a, y, 10, 0.8, 1.0, seed=s) for s in (5, 5, 6))
    assert torch.equal(state, torch.get_rng_state())  # the global generator was never used
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(ma[0], mb[0]) and torch.equal(ma[1], mb[1]) and not torch.equal(ma[1], mc[1])
    p, q = (da.draw(64, 32, 32, 123, **kw) for _ in range(2))
    assert all(torch.equal(p[k], q[k]) for k in p)


def test_the_draws_do_not_depend_on_the_settings():
    """Turning RandAugment or cutout on does not move the crops and flips of a step."""
    p = da.draw(64, 32, 32, 9, image_size=32)
    q = da.draw(64, 32, 32, 9, image_size=32, randaug_magnitude=15, cutout=0.5)
    assert all(torch.equal(p[k], q[k]) for k in ("box", "flip", "ops", "signs", "op_centres", "cutout_centres"))


# ----------------------------------------------------------------------------------------------------------
# 3. Statistics: the same distribution as ev2lib.augment.augment / mix_batch


def _record_cpu_draws(monkeypatch, n: int, shape, **kw) -> dict:
    """Run the per-image path ``ev2lib.augment.augment`` on ``n`` images with per-image seeds and record what it
    drew: the crop boxes (RandomResizedCrop.make_params), the flips, the RandAugment ops and their signs."""
    rec = {"box": [], "flips": 0, "ops": [], "negative": []}
    make_params, flip = v2.RandomResizedCrop.make_params, v2.RandomHorizontalFlip.transform

    def record_box(self, flat_inputs):
        params = make_params(self, flat_inputs)
        rec["box"].append([params[k] for k in ("top", "left", "height", "width")])
        return params

    def record_flip(self, inpt, params):
        rec["flips"] += 1
        return flip(self, inpt, params)

    def recorder(op, fn):
        def apply(img, *args):
            rec["ops"].append(ra.OPS.index(op))
            if op in ra.SIGNED:
                rec["negative"].append(args[0] < 0)
            return fn(img, *args)
        return apply

    monkeypatch.setattr(v2.RandomResizedCrop, "make_params", record_box)
    monkeypatch.setattr(v2.RandomHorizontalFlip, "transform", record_flip)
    for op in ra.OPS:
        monkeypatch.setitem(ra.APPLY, op, recorder(op, ra.APPLY[op]))
    img = torch.zeros(shape, dtype=torch.uint8)
    seeds = data._seeds(torch.Generator().manual_seed(2024), n)  # per-image seeds, as TrainData draws them
    for s in seeds:
        da.augment(img, s, **kw)
    return {"box": torch.tensor(rec["box"]), "flip_rate": rec["flips"] / n, "ops": torch.tensor(rec["ops"]),
            "negative": torch.tensor(rec["negative"], dtype=torch.float)}


@pytest.mark.parametrize("height,width", [(32, 32), (24, 48)])  # square; wide (more rejected tries)
def test_crop_and_flip_statistics_match_the_per_image_path(monkeypatch, height, width):
    n = 3000
    cpu = _record_cpu_draws(monkeypatch, n, (3, height, width), image_size=16, crop="rrc")
    dev = da.draw(n, height, width, seed=77, image_size=16, crop="rrc")
    for name, stat in (("area", lambda b: b[:, 2] * b[:, 3] / (height * width)),
                       ("aspect", lambda b: b[:, 3] / b[:, 2]),
                       ("top", lambda b: b[:, 0].float()), ("left", lambda b: b[:, 1].float())):
        a, b = stat(cpu["box"]).double(), stat(dev["box"]).double()
        se = math.sqrt(a.var() / n + b.var() / n)
        assert abs(a.mean() - b.mean()) < 4 * se, (name, a.mean(), b.mean())  # means within 4 standard errors
        assert _ks(a, b) < _ks_bound(n, n), (name, _ks(a, b))  # the whole distribution, quantiles included
    area = lambda b: (b[:, 2] * b[:, 3] / (height * width)).double()
    for q in (0.1, 0.5, 0.9):  # KS bounds every quantile; these are the ones to read (area: 0.05-1)
        assert abs(area(cpu["box"]).quantile(q) - area(dev["box"]).quantile(q)) < 0.05, q
    assert 0.05 - 0.01 < area(dev["box"]).min() and area(dev["box"]).max() <= 1.0
    p_cpu, p_dev = cpu["flip_rate"], float(dev["flip"].float().mean())
    assert abs(p_dev - 0.5) < 4 * math.sqrt(0.25 / n) and abs(p_cpu - p_dev) < 4 * math.sqrt(0.5 / n)


def test_randaugment_op_frequencies_and_signs_match_the_per_image_path(monkeypatch):
    n = 1500  # images: 3000 op draws on the per-image path
    cpu = _record_cpu_draws(monkeypatch, n, (3, 16, 16), image_size=16, crop="resize", randaug_magnitude=10)
    dev = da.draw(2 * n, 16, 16, seed=5, image_size=16, randaug_magnitude=10)
    c_cpu = torch.bincount(cpu["ops"], minlength=16).double()
    c_dev = torch.bincount(dev["ops"].flatten(), minlength=16).double()
    expected = c_dev.sum() / 16
    assert ((c_dev - expected) ** 2 / expected).sum() < CHI2_15_001  # uniform over the 16 ops
    # Homogeneity of the two 16-bin histograms (2 x 16 contingency table, 15 d.o.f.).
    rows = torch.stack([c_cpu, c_dev])
    e = rows.sum(1, keepdim=True) * rows.sum(0, keepdim=True) / rows.sum()
    assert ((rows - e) ** 2 / e).sum() < CHI2_15_001
    signed = torch.isin(dev["ops"], torch.tensor([ra.OPS.index(o) for o in ra.SIGNED]))
    neg_dev, neg_cpu = (dev["signs"][signed] < 0).double(), cpu["negative"].double()
    assert abs(neg_dev.mean() - 0.5) < 4 * math.sqrt(0.25 / len(neg_dev))
    assert abs(neg_dev.mean() - neg_cpu.mean()) < 4 * math.sqrt(0.25 / len(neg_dev) + 0.25 / len(neg_cpu))


def _mix_weights(mix, seeds, mixup, cutmix):
    """Mixup lambda and CutMix kept proportion of each call, read off the soft labels of a 4-image batch of
    classes 0-3 (first half mixup, second half CutMix; image 0 is mixed with image 1, image 2 with image 3)."""
    x = torch.arange(4, dtype=torch.uint8).view(4, 1, 1, 1).expand(4, 3, 16, 16) * 60
    lam, kept = [], []
    for s in seeds:
        _, y = mix(x, torch.arange(4), 4, mixup, cutmix, s)
        lam.append(float(y[0, 0]))
        kept.append(float(y[2, 2]))
    return torch.tensor(lam, dtype=torch.float64), torch.tensor(kept, dtype=torch.float64)


@pytest.mark.parametrize("alpha", [0.2, 1.0])
def test_mix_weights_follow_beta(alpha):
    n = 2000
    lam, kept = _mix_weights(da.mix_batch, range(n), alpha, alpha)
    beta = torch.distributions.Beta(torch.tensor(alpha, dtype=torch.float64), torch.tensor(alpha, dtype=torch.float64))
    var = float(beta.variance)
    mu4 = 3 / (16 * (2 * alpha + 1) * (2 * alpha + 3))  # 4th central moment of a symmetric Beta(alpha, alpha)
    assert abs(lam.mean() - float(beta.mean)) < 4 * math.sqrt(var / n)
    assert abs(lam.var() - var) < 4 * math.sqrt((mu4 - var ** 2) / n)
    ref = torch.distributions.Beta(alpha, alpha).sample((n,)).double()  # the law itself, drawn by torch
    assert _ks(lam, ref) < _ks_bound(n, n)
    # CutMix keeps 1 - (clipped box area) of an image: at least 1 - (1 - lambda), on average more (clipping).
    assert (kept >= 0).all() and (kept <= 1).all() and kept.mean() > 1 - float(beta.mean) - 4 * math.sqrt(var / n)


def test_mix_batch_mixes_with_the_neighbour_and_weights_labels_by_proportion():
    x = torch.randint(0, 256, (8, 3, 16, 16), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    xm, ym = da.mix_batch(x, torch.arange(8), 8, 0.8, 1.0, seed=3)
    assert xm.dtype == torch.float32 and ym.shape == (8, 8) and torch.allclose(ym.sum(1), torch.ones(8))
    xf, lam = x.float(), ym[0, 0]
    first, second = xf[:4], xf[4:]  # mixup on the first half, CutMix on the second, each rolled within its half
    assert torch.allclose(xm[:4], lam * first + (1 - lam) * first.roll(1, 0), atol=1e-4)
    assert torch.allclose(ym[:4, :4], lam * torch.eye(4) + (1 - lam) * torch.eye(4).roll(1, 0))
    own = (xm[4:] == second).all(1)  # (4, 16, 16): pixels that stayed the image's own
    assert (own | (xm[4:] == second.roll(1, 0)).all(1)).all()  # every other pixel is the neighbour's
    assert torch.allclose(ym[4:, 4:].diagonal(), own.float().mean((1, 2)))  # label weight = own proportion
    assert da.mix_batch(x, torch.arange(8), 8, 0.0, 0.0, 1)[1].dtype == torch.int64  # no mixing: unchanged


# ----------------------------------------------------------------------------------------------------------
# 4. Each batched op equals the per-image op


@pytest.mark.parametrize("op", ra.OPS)
def test_each_batched_op_equals_the_per_image_op(op):
    """Exact (max |diff| = 0) for all 16 ops at 32 px, including extrapolated magnitudes: the pixel ops ARE the
    per-image torchvision kernels called on the sub-batch; the geometric ops are an affine_grid + nearest
    grid_sample of the same inverse map, Cutout a mask of the same box."""
    x = _images()
    n, S = len(x), x.shape[-1]
    for magnitude in (3, 5, 10, 15, 25):
        arg = ra.op_args(op, magnitude, S)
        sign = torch.where(torch.arange(n) % 2 == 0, 1.0, -1.0) if op in ra.SIGNED else torch.ones(n)
        signed = sign * (arg[0] if arg else 0.0)  # (n,) per-sample argument, half of them negated
        centre = torch.stack([torch.arange(n) * 5 % S, torch.arange(n) * 11 % S], 1)  # corners and borders too
        got = ra._apply_op(op, x, signed, centre, magnitude)
        ref = []
        for i in range(n):
            if op == "Cutout":  # data._cutout draws its centre from the global RNG: recreate the same box
                cy, cx, h = int(centre[i, 0]), int(centre[i, 1]), arg[0]
                img = x[i].clone()
                img[:, max(0, cy - h):cy + h, max(0, cx - h):cx + h] = ra.FILL
                ref.append(img)
            else:
                ref.append(ra.APPLY[op](x[i], *((float(signed[i]),) if op in ra.SIGNED else arg)))
        diff = (got.int() - torch.stack(ref).int()).abs()
        assert got.dtype == torch.uint8 and int(diff.max()) == 0, (op, magnitude, int(diff.max()))


def _source(op: str, a: float, H: int, W: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact (float64) source coordinates (x, y), from the top-left corner, of every output pixel centre."""
    y, x = torch.meshgrid(torch.arange(H, dtype=torch.float64) + 0.5, torch.arange(W, dtype=torch.float64) + 0.5,
                          indexing="ij")
    if op == "Rotate":  # about the centre
        c, s, xc, yc = math.cos(math.radians(a)), math.sin(math.radians(a)), x - W / 2, y - H / 2
        return c * xc - s * yc + W / 2, s * xc + c * yc + H / 2
    return {"ShearX": (x + a * y, y), "ShearY": (x, y + a * x), "TranslateX": (x - a, y), "TranslateY": (x, y - a)}[op]


@pytest.mark.parametrize("size", [31, 56, 171])
def test_geometric_ops_differ_from_the_per_image_ops_only_at_exact_ties(size):
    """At some sizes an output pixel's source lies exactly half-way between two input pixels (odd sides under
    Rotate 30 degrees, shear 0.6, translations of k + 1/2 px: TranslateX at magnitude 1 on 56 px is 2.5 px).
    Nearest neighbour then picks either one by float rounding, which differs between affine_grid and
    torchvision's own grid. Every differing pixel must be such a tie; exact everywhere else."""
    x = torch.randint(0, 256, (4, 3, size, size), dtype=torch.uint8, generator=torch.Generator().manual_seed(size))
    ties, worst = 0, 0.0
    for op in ra.GEOMETRIC:
        for magnitude in (1, 3, 10, 15, 20):
            a = ra.op_args(op, magnitude, size)[0]
            signed = torch.tensor([a, -a, a, -a])
            got = ra._apply_op(op, x, signed, None, magnitude)
            for i in range(4):
                ref = ra.APPLY[op](x[i], float(signed[i]))
                differ = (got[i] != ref).any(0)  # (H, W)
                sx, sy = _source(op, float(signed[i]), size, size)
                on_edge = ((sx - sx.round()).abs() < 1e-4) | ((sy - sy.round()).abs() < 1e-4)
                assert not (differ & ~on_edge).any(), (op, magnitude, i)
                ties, worst = ties + int(differ.sum()), max(worst, float(differ.float().mean()))
    print(f"\n{size} px: {ties} tie pixels differ, at most {worst:.1%} of an image")


def test_augment_batch_applies_its_drawn_parameters_like_the_per_image_path():
    """The whole pipeline, sample by sample, from :func:`draw`'s parameters with the per-image kernels: exact for
    the pad crop (and flip, RandAugment, cutout); the rrc's roi_align resize is within a grey level inside the
    image, differing at the box edges (it reads just outside the box where crop-then-resize clamps)."""
    x = _images(59)  # 64 images
    kw = dict(image_size=32, randaug_magnitude=15, cutout=0.25)
    p = da.draw(64, 32, 32, 8, crop="pad", **kw)
    got = da.augment_batch(x, 8, crop="pad", **kw)
    for i in range(64):
        t, l = p["box"][i, :2].tolist()
        img = v2.functional.crop(v2.functional.pad(x[i], [4], padding_mode="reflect"), t, l, 32, 32)
        img = img.flip(-1) if p["flip"][i] else img
        for layer in range(2):
            op = ra.OPS[int(p["ops"][i, layer])]
            if op == "Cutout":
                img = ra._apply_op(op, img[None], None, p["op_centres"][i, layer][None], 15)[0]  # checked above
            else:
                args = (float(p["ra_args"][i, layer]),) if op in ra.SIGNED else ra.op_args(op, 15, 32)
                img = ra.APPLY[op](img, *args)
        box = ra.box_mask(p["cutout_centres"][i][None], 4, 32, 32)[0]  # cutout 0.25 of 32 px: half-side 4
        img = torch.where(box, p["cutout_fill"][i], img)
        assert torch.equal(got[i], img), i

    p = da.draw(64, 32, 32, 9, image_size=32, crop="rrc")
    got = da.augment_batch(x, 9, image_size=32, crop="rrc")
    ref = torch.stack([v2.functional.resized_crop(x[i], *p["box"][i].tolist(), [32, 32], antialias=True)
                       for i in range(64)])
    ref = torch.where(p["flip"][:, None, None, None], ref.flip(-1), ref)
    diff = (got.int() - ref.int()).abs().float()
    assert diff.mean() < 1.5 and diff[..., 2:-2, 2:-2].max() <= 1, (diff.mean(), diff[..., 2:-2, 2:-2].max())


def test_resizes_agree_with_the_per_image_path_when_shrinking_and_growing():
    """pad / resize to S != H: one interpolate(antialias=True) on the float batch, within one grey level of the
    per-image uint8 resize (its fixed-point rounding). rrc shrinking 96 -> 32 px: roi_align's box average of
    ceil(box / S)^2 bilinear samples against torchvision's antialiased triangle filter, about 3 grey levels on
    these noisy images (pixel sd 65); without antialiasing either way it would be about 12."""
    x = data.synthetic(64, 10, 96, seed=3)[0]
    for crop, size in (("pad", 40), ("pad", 160), ("resize", 40), ("resize", 160)):
        p = da.draw(64, 96, 96, 4, image_size=size, crop=crop)
        got = da.augment_batch(x, 4, image_size=size, crop=crop)
        ref = []
        for i in range(64):
            t, l = p["box"][i, :2].tolist()
            img = v2.functional.crop(v2.functional.pad(x[i], [4], padding_mode="reflect"), t, l, 96, 96) \
                if crop == "pad" else x[i]
            img = v2.functional.resize(img, [size, size], antialias=True)
            ref.append(img.flip(-1) if p["flip"][i] else img)
        assert int((got.int() - torch.stack(ref).int()).abs().max()) <= 1, (crop, size)
    p = da.draw(64, 96, 96, 5, image_size=32, crop="rrc")
    assert ((p["box"][:, 2] > 32) | (p["box"][:, 3] > 32)).float().mean() > 0.8  # most boxes shrink
    ref = torch.stack([v2.functional.resized_crop(x[i], *p["box"][i].tolist(), [32, 32], antialias=True)
                       for i in range(64)])
    diff = (da._crop_resize(x, p["box"], "rrc", 32).int() - ref.int()).abs().float()
    assert diff.mean() < 4, diff.mean()


@pytest.mark.parametrize("height,width", [(6, 300), (300, 6)])
def test_boxes_that_never_fit_fall_back_to_torchvisions_centre_crop(monkeypatch, height, width):
    """On a 1:50 image no try fits (the smallest box, 5% of 1800 px at aspect 4/3, is 8 px high): every sample
    takes torchvision's fallback, the centre crop clipped to aspect 4/3 (3/4), as the per-image path does."""
    cpu = _record_cpu_draws(monkeypatch, 20, (3, height, width), image_size=8, crop="rrc")["box"]
    dev = da.draw(500, height, width, seed=1, image_size=8, crop="rrc")["box"]
    assert cpu.unique(dim=0).tolist() == dev.unique(dim=0).tolist() == [
        [0, 146, 6, 8] if width > height else [146, 0, 8, 6]]


# ----------------------------------------------------------------------------------------------------------
# 5. Shapes, devices, errors


@pytest.mark.parametrize("crop", da.CROPS)
@pytest.mark.parametrize("size", [24, 48])
def test_output_is_uint8_on_the_input_device_at_the_image_size(crop, size):
    x = data.synthetic(6, size=40)[0][:, :, :, :36]  # (6, 3, 40, 36): non-square, S != H, W
    out = da.augment_batch(x, 1, image_size=size, crop=crop, randaug_magnitude=10, cutout=0.5)
    assert out.shape == (6, 3, size, size) and out.dtype == torch.uint8 and out.device == x.device


@pytest.mark.parametrize("bad", [torch.zeros(2, 3, 8, 8), torch.zeros(3, 8, 8, dtype=torch.uint8),
                                 torch.zeros(2, 1, 8, 8, dtype=torch.uint8)])
def test_wrong_input_is_one_line_error(bad):
    with pytest.raises(DataError, match=r"augment_batch takes a uint8 \(B, 3, H, W\) batch, got") as e:
        da.augment_batch(bad, 0, image_size=8)
    assert "\n" not in str(e.value)
    with pytest.raises(DataError, match="crop must be one of"):
        da.augment_batch(torch.zeros(2, 3, 8, 8, dtype=torch.uint8), 0, image_size=8, crop="centre")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_on_cuda_everything_stays_on_the_gpu_without_host_syncs():
    x, y = (t.cuda() for t in data.synthetic(256, size=32))
    kw = dict(image_size=48, randaug_magnitude=15, crop="rrc", cutout=0.25)
    out = da.augment_batch(x, 3, **kw)
    assert out.is_cuda and out.shape == (256, 3, 48, 48) and torch.equal(out, da.augment_batch(x, 3, **kw))
    torch.cuda.set_sync_debug_mode("error")  # any host sync raises: draws, crops and mixing have none
    try:
        for crop in da.CROPS:
            da.augment_batch(x, 4, image_size=40, crop=crop, cutout=0.25)  # RandAugment off: its op counts sync
        xm, ym = da.mix_batch(out, y, 10, 0.8, 1.0, seed=3)
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert xm.is_cuda and ym.is_cuda and torch.allclose(ym.sum(1), torch.ones(256, device="cuda"))


# ----------------------------------------------------------------------------------------------------------
# 6. In the training data: TrainData(augment_device=...), TrainConfig(augment_on="device")


def _device_data(**kw):
    td = data.load_data("synthetic:256", image_size=24, augment_device="cpu", **kw)
    td.set_augment(randaug_magnitude=10, mixup_alpha=0.8, cutmix_alpha=1.0)
    return td


def test_train_data_on_the_device_replays_steps_and_splits_ranks():
    one, r0, r1 = _device_data(batch_size=32), _device_data(batch_size=16, rank=0, world=2), \
        _device_data(batch_size=16, rank=1, world=2)
    torch.manual_seed(123)  # the global RNG plays no part
    b = [next(d.train_batches(3, start_step=2)) for d in (one, r0, r1)]
    i, x, y = b[0]
    assert i == 2 and x.shape == (32, 3, 24, 24) and x.dtype == torch.float32 and y.shape == (32, 10)
    assert torch.allclose(y.sum(1), torch.ones(32))
    assert torch.equal(torch.cat([b[1][1], b[2][1]]), x) and torch.equal(torch.cat([b[1][2], b[2][2]]), y)
    torch.manual_seed(456)
    full = list(one.train_batches(3))  # the whole epoch from step 0 reaches step 2 with the same batch
    assert torch.equal(full[2][1], x) and not torch.equal(full[3][1], x)
    assert not torch.equal(next(one.train_batches(4, 2))[1], x)  # another epoch, other draws
    cpu = data.load_data("synthetic:256", image_size=24, batch_size=32)  # the per-image path: the same images ...
    cpu.set_augment(randaug_magnitude=10, mixup_alpha=0.8, cutmix_alpha=1.0)
    assert not torch.equal(next(cpu.train_batches(3, 2))[1], x)  # ... other draws


def test_train_data_on_the_device_follows_set_augment_and_keeps_uint8_without_mixing():
    td = data.load_data("synthetic:256", image_size=32, batch_size=32, crop="pad", augment_device="cpu")
    _, x, y = next(td.train_batches(0))
    assert x.dtype == torch.uint8 and x.shape[-1] == 32 and y.dtype == torch.int64
    td.set_augment(image_size=16, cutout=0.5)
    assert next(td.train_batches(1))[1].shape == (32, 3, 16, 16)


def test_augmenting_on_the_device_needs_in_memory_data():
    files = [(None, 0)] * 64  # any map-style dataset that is not an in-memory (images, labels) pair
    with pytest.raises(DataError, match="needs in-memory data"):
        data.TrainData(files, files, 10, image_size=32, batch_size=8, augment_device="cpu")


def test_a_training_run_augments_on_the_device_and_a_bad_choice_is_one_line(tmp_path):
    from ev2lib.errors import ConfigError
    from ev2lib.train import make_config, train

    kw = dict(data="synthetic:256", epochs=1, batch_size=64, image_size=16, eval_subset=64, progress=False)
    out = train(make_config("smoke", augment_on="device", out=str(tmp_path / "a"), **kw))
    assert out["config"]["augment_on"] == "device" and out["steps"] == 4 and out["history"][-1]["test_acc"] >= 0
    with pytest.raises(ConfigError, match="augment_on must be 'cpu' or 'device'"):
        train(make_config("smoke", augment_on="gpu", out=str(tmp_path / "b"), **kw))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_train_data_on_cuda_yields_batches_on_the_gpu():
    td = data.load_data("synthetic:256", image_size=24, batch_size=32, augment_device="cuda")
    td.set_augment(randaug_magnitude=10, mixup_alpha=0.8)
    _, x, y = next(td.train_batches(0))
    assert x.is_cuda and y.is_cuda and td.train[0].is_cuda


def test_official_pixels_translate_a_small_image_further_relative_to_its_side():
    """Translate in the official fixed pixels (those of a 32 px image here) moves a 16 px image twice as far,
    relative to its side, as a 32 px one; relative to the side (the default), the same fraction at every size."""
    def moved(side, fixed_side):  # how far a dot travels, as a fraction of the side
        dot = torch.zeros(3, side, side, dtype=torch.uint8)
        dot[:, 2, 1] = 255
        px = ra.op_args("TranslateX", 10, side, fixed_side)[0]
        out = ra.APPLY["TranslateX"](dot, px)
        return (int(torch.nonzero(out[0, 2] == 255)[0]) - 1) / side

    assert moved(16, 32) == pytest.approx(2 * moved(32, 32), abs=1 / 16) and moved(16, 32) > moved(32, 32)
    assert moved(16, 0) == pytest.approx(moved(32, 0), abs=1 / 16)  # relative: the same fraction
    assert ra.op_args("Cutout", 10, 16, 32) == ra.op_args("Cutout", 10, 32, 32) == (int(40 / 224 * 32),)
    assert ra.op_args("TranslateX", 10, 224, 224) == pytest.approx((100,))  # official: 100 px at 224
    batch = da.draw(64, 16, 16, 1, image_size=16, randaug_magnitude=10, randaug_fixed_side=32)
    translate = batch["ops"] == ra.OPS.index("TranslateX")
    assert translate.any() and torch.allclose(batch["ra_args"][translate].abs(), torch.tensor(100 / 224 * 32))
