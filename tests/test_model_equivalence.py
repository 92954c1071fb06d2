"""ev2lib computes exactly what torchvision's and timm's EfficientNets compute, given their state dicts.

Each reference is built with random weights *and randomized BatchNorm statistics* (the default mean 0 / var 1 /
weight 1 / bias 0 makes every BN nearly the identity and hides swapped or unloaded statistics), its state dict is
loaded into ev2lib, and eval-mode logits and the stem output are compared at an even and an odd input size:
an odd size hides padding bugs (TF "same" and symmetric padding coincide there), an even size exposes them.
"""
import pytest
import timm
import torch
import torchvision.models as tvm
from torch import nn

import ev2lib

TOL = 1e-5
# torchvision builder, ev2lib name, (even, odd) input sides; the largest models run at small sizes to stay fast.
TORCHVISION = [
    ("efficientnet_v2_s", "efficientnetv2_s", (224, 225)),
    ("efficientnet_v2_m", "efficientnetv2_m", (96, 97)),
    ("efficientnet_v2_l", "efficientnetv2_l", (64, 65)),
    *[(f"efficientnet_b{i}", f"efficientnet_b{i}", (128, 129) if i < 4 else (64, 65)) for i in range(8)],
]
TIMM = [(f"tf_efficientnetv2_{v}", f"efficientnetv2_{v}", sizes) for v, sizes in
        [("b0", (224, 225)), ("b1", (128, 129)), ("b2", (128, 129)), ("b3", (128, 129)), ("s", (128, 129)),
         ("m", (96, 97)), ("l", (64, 65)), ("xl", (64, 65))]]


def randomize(model: nn.Module, seed: int = 0) -> nn.Module:
    """Random BN affine parameters and running statistics, random biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            elif isinstance(m, nn.Conv2d) and m.bias is not None:
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model.eval()


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).abs().max() / b.abs().max()).item()


def compare(ref, ours, ref_stem, size):
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(size))
    with torch.no_grad():
        return rel_err(ours.features[0](x), ref_stem(x)), rel_err(ours(x), ref(x))


def timm_stem(m):
    return lambda x: m.bn1(m.conv_stem(x))


@pytest.mark.parametrize("tv_name, name, sizes", TORCHVISION, ids=[t[1] for t in TORCHVISION])
def test_torchvision_weights_give_identical_outputs(tv_name, name, sizes):
    torch.manual_seed(0)
    ref = randomize(getattr(tvm, tv_name)())
    ours = ev2lib.create_model(name).eval()
    ours.load_state_dict(ev2lib.convert_state_dict(ref.state_dict(), "torchvision"), strict=True)
    assert list(ours.state_dict()) == list(ref.state_dict())
    for size in sizes:
        stem, logits = compare(ref, ours, ref.features[0], size)
        assert stem <= TOL and logits <= TOL, (size, stem, logits)


@pytest.mark.parametrize("timm_name, name, sizes", TIMM, ids=[t[1] for t in TIMM])
def test_timm_tf_weights_give_identical_outputs(timm_name, name, sizes):
    torch.manual_seed(0)
    ref = randomize(timm.create_model(timm_name))
    ours = ev2lib.create_model(name, padding="same").eval()
    ours.load_state_dict(ev2lib.convert_state_dict(ref.state_dict(), "timm"), strict=True)
    for size in sizes:
        stem, logits = compare(ref, ours, timm_stem(ref), size)
        assert stem <= TOL and logits <= TOL, (size, stem, logits)


def test_negative_control_bn_eps():
    """The same comparison fails when ev2lib uses PyTorch's default eps 1e-5 instead of 1e-3."""
    torch.manual_seed(0)
    ref = randomize(tvm.efficientnet_v2_s())
    wrong = ev2lib.create_model("efficientnetv2_s", bn_eps=1e-5).eval()
    wrong.load_state_dict(ref.state_dict())
    stem, logits = compare(ref, wrong, ref.features[0], 224)
    assert stem > TOL and logits > TOL


def test_negative_control_symmetric_padding_for_tf_weights():
    """timm's tf_ weights need TF "same" padding: symmetric padding fails at even sizes, coincides at odd ones."""
    torch.manual_seed(0)
    ref = randomize(timm.create_model("tf_efficientnetv2_b0"))
    wrong = ev2lib.create_model("efficientnetv2_b0", padding="symmetric").eval()
    wrong.load_state_dict(ev2lib.convert_state_dict(ref.state_dict(), "timm"))
    stem, logits = compare(ref, wrong, timm_stem(ref), 224)
    assert stem > 0.1 and logits > TOL  # the one-pixel shift changes the stem output completely
    stem, logits = compare(ref, wrong, timm_stem(ref), 225)
    assert stem <= TOL and logits <= TOL


def test_training_mode_is_bit_identical_to_torchvision():
    """Stochastic depth and dropout draw random numbers in the same order as torchvision's implementation."""
    torch.manual_seed(0)
    ref = tvm.efficientnet_v2_s().train()
    ours = ev2lib.create_model("efficientnetv2_s").train()
    ours.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 64, 64)
    torch.manual_seed(1)
    a = ref(x)
    torch.manual_seed(1)
    b = ours(x)
    assert torch.equal(a, b)


def test_channels_last_matches():
    m = randomize(ev2lib.create_model("efficientnetv2_b0"))
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        a = m(x)
        b = m.to(memory_format=torch.channels_last)(x.to(memory_format=torch.channels_last))
    assert rel_err(b, a) < 1e-5


def test_timm_converter_rejects_foreign_state_dicts():
    with pytest.raises(ev2lib.WeightsError, match="timm"):
        ev2lib.convert_state_dict(tvm.efficientnet_b0().state_dict(), "timm")
    with pytest.raises(ev2lib.WeightsError, match="unknown weights source"):
        ev2lib.convert_state_dict({}, "keras")
