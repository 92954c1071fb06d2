"""load_pretrained: local files, the input normalisation of each weights source, transfer to other class counts,
and clear errors offline or on corrupt files."""
import urllib.error

import pytest
import timm
import torch
import torchvision.models as tvm
from torchvision.transforms import v2

import ev2lib
from ev2lib.weights import TIMM_WEIGHTS, TORCHVISION_NAMES, weights_info

SCRATCH = ((128.0,) * 3, (128.0,) * 3)


def same_normalization(normalization, mean, std) -> bool:
    """``normalization`` (0-255 units) equals a library's 0-1 ``mean``/``std`` scaled by 255."""
    return (list(normalization[0]) == pytest.approx([255 * m for m in mean])
            and list(normalization[1]) == pytest.approx([255 * s for s in std]))


@pytest.mark.parametrize("name", TORCHVISION_NAMES)
def test_torchvision_normalization_is_what_the_weights_were_trained_with(name):
    w = tvm.get_model_weights(TORCHVISION_NAMES[name]).DEFAULT
    t = w.transforms()
    info = weights_info(name, "torchvision")
    assert info.url == w.url and info.padding == "symmetric"
    assert same_normalization((info.mean, info.std), t.mean, t.std)
    # ImageNet mean/std, except V2-L: torchvision ported it from the TF checkpoint, which takes (x - 127.5) / 127.5.
    assert list(info.mean) == pytest.approx([127.5] * 3 if name == "efficientnetv2_l" else [123.675, 116.28, 103.53])


@pytest.mark.parametrize("name", TIMM_WEIGHTS)
def test_timm_normalization_is_what_the_weights_were_trained_with(name):
    cfg = timm.models.get_pretrained_cfg(TIMM_WEIGHTS[name][0])
    info = weights_info(name, "timm")
    assert info.url == cfg.url and info.padding == "same"
    assert same_normalization((info.mean, info.std), cfg.mean, cfg.std)
    # timm's tf_ ports: S/M/L/XL take (x - 127.5) / 127.5, B0-B3 the ImageNet mean/std.
    assert list(info.mean) == pytest.approx([127.5] * 3 if name[-1] in "sml" else [123.675, 116.28, 103.53])


def test_load_from_local_torchvision_file_sets_its_normalization(tmp_path):
    ref = tvm.efficientnet_b0()
    path = tmp_path / "b0.pth"
    torch.save(ref.state_dict(), path)
    m = ev2lib.create_model("efficientnet_b0")
    assert m.normalization == SCRATCH
    ev2lib.load_pretrained(m, "torchvision", path=str(path))
    assert torch.equal(m.features[0][0].weight, ref.features[0][0].weight)
    assert same_normalization(m.normalization, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    # normalize(uint8 pixels) is exactly what torchvision's eval transform does after ToDtype(scale=True).
    x = torch.randint(0, 256, (2, 3, 8, 8), dtype=torch.uint8)
    t = tvm.EfficientNet_B0_Weights.DEFAULT.transforms()
    expected = v2.Normalize(t.mean, t.std)(v2.ToDtype(torch.float32, scale=True)(x))
    torch.testing.assert_close(m.normalize(x), expected)
    assert ev2lib.create_model("efficientnet_b0").normalization == SCRATCH  # other models keep the default


def test_transfer_keeps_a_fresh_classifier(tmp_path):
    ref = timm.create_model("tf_efficientnetv2_b0")
    path = tmp_path / "tf_b0.pth"
    torch.save(ref.state_dict(), path)
    m = ev2lib.create_model("efficientnetv2_b0", num_classes=10, padding="same")
    head = m.classifier[1].weight.clone()
    ev2lib.load_pretrained(m, "timm", path=str(path))
    assert torch.equal(m.features[0][0].weight, ref.conv_stem.weight)
    assert torch.equal(m.classifier[1].weight, head) and m.classifier[1].out_features == 10
    assert same_normalization(m.normalization, ref.pretrained_cfg["mean"], ref.pretrained_cfg["std"])


def test_offline_download_is_one_clear_line(monkeypatch):
    def offline(*a, **k):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", offline)
    with pytest.raises(ev2lib.WeightsError, match="could not download .*path=FILE") as e:
        ev2lib.create_model("efficientnetv2_s", pretrained="torchvision")
    assert "\n" not in str(e.value)


def test_corrupt_and_missing_checkpoints(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint at all")
    m = ev2lib.create_model("efficientnet_b0")
    with pytest.raises(ev2lib.WeightsError, match="corrupt"):
        ev2lib.load_pretrained(m, "torchvision", path=str(bad))
    with pytest.raises(ev2lib.WeightsError, match="does not exist"):
        ev2lib.load_pretrained(m, "torchvision", path=str(tmp_path / "missing.pth"))


def test_wrong_variant_file_and_wrong_padding(tmp_path):
    path = tmp_path / "b1.pth"
    torch.save(tvm.efficientnet_b1().state_dict(), path)
    with pytest.raises(ev2lib.WeightsError, match="does not fit efficientnet_b0"):
        ev2lib.load_pretrained(ev2lib.create_model("efficientnet_b0"), "torchvision", path=str(path))
    with pytest.raises(ev2lib.WeightsError, match="padding='same'"):
        ev2lib.load_pretrained(ev2lib.create_model("efficientnetv2_s"), "timm")
    with pytest.raises(ev2lib.WeightsError, match="no tf_ weights"):
        weights_info("efficientnet_b0", "timm")


def test_weights_only_loading_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    torch.save({"x": Evil()}, path)
    with pytest.raises(ev2lib.WeightsError, match="corrupt, truncated or not a PyTorch weights file"):
        ev2lib.load_pretrained(ev2lib.create_model("efficientnet_b0"), "torchvision", path=str(path))
