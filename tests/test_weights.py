"""load_pretrained: local files, transfer to other class counts, and clear errors offline or on corrupt files."""
import urllib.error

import pytest
import timm
import torch
import torchvision.models as tvm

import ev2lib
from ev2lib.weights import weights_info


def test_load_from_local_torchvision_file(tmp_path):
    ref = tvm.efficientnet_b0()
    path = tmp_path / "b0.pth"
    torch.save(ref.state_dict(), path)
    m = ev2lib.load_pretrained(ev2lib.create_model("efficientnet_b0"), "torchvision", path=str(path))
    assert torch.equal(m.features[0][0].weight, ref.features[0][0].weight)
    assert m.pretrained.url.startswith("https://download.pytorch.org/")


def test_transfer_keeps_a_fresh_classifier(tmp_path):
    ref = timm.create_model("tf_efficientnetv2_b0")
    path = tmp_path / "tf_b0.pth"
    torch.save(ref.state_dict(), path)
    m = ev2lib.create_model("efficientnetv2_b0", num_classes=10, padding="same")
    head = m.classifier[1].weight.clone()
    ev2lib.load_pretrained(m, "timm", path=str(path))
    assert torch.equal(m.features[0][0].weight, ref.conv_stem.weight)
    assert torch.equal(m.classifier[1].weight, head) and m.classifier[1].out_features == 10


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
