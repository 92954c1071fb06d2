"""ev2lib's networks are the published ones: parameter counts, FLOPs, settings, and bad-input errors."""
import subprocess
import sys

import pytest
import torch
from torch import nn

import ev2lib
from ev2lib.configs import Stage, get_config
from ev2lib.summary import summarize, totals

# Trainable parameters: torchvision's num_params (V2-S/M/L, V1), timm's counts (XL, B0-B3) = official [computed].
PARAMS = {
    "efficientnetv2_s": 21_458_488, "efficientnetv2_m": 54_139_356, "efficientnetv2_l": 118_515_272,
    "efficientnetv2_xl": 208_119_808, "efficientnetv2_b0": 7_139_704, "efficientnetv2_b1": 8_141_052,
    "efficientnetv2_b2": 10_096_086, "efficientnetv2_b3": 14_358_406,
    "efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
    "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
    "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960,
}


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("name", PARAMS)
def test_parameter_count_to_the_unit(name):
    assert n_params(ev2lib.create_model(name)) == PARAMS[name]


def test_arxiv_v1_s_explains_24m():
    # The paper's "24M" (Fig. 1b, Table 8) is the pre-release V2-S with 272 channels in stage 6 and a 1792 head.
    assert n_params(ev2lib.create_model("efficientnetv2_s_arxiv_v1")) == 23_940_048


def test_every_listed_model_builds_and_runs():
    for name in ev2lib.list_models():
        m = ev2lib.create_model(name, num_classes=7).eval()
        size = max(m.min_image_size, 32)
        with torch.no_grad():
            assert m(torch.randn(1, 3, size, size)).shape == (1, 7)


def test_v2_s_macs_at_384():
    rows = summarize("efficientnetv2_s", 384)
    t = totals(rows)
    assert t["macs"] == pytest.approx(8.366e9, rel=0.005)
    assert t["flops"] == 2 * t["macs"]
    assert t["params"] == PARAMS["efficientnetv2_s"]
    assert [r.resolution for r in rows] == [192, 192, 96, 48, 24, 24, 12, 12]  # reference §1.5


def test_summary_cli_prints_macs_and_flops():
    out = subprocess.run([sys.executable, "-m", "ev2lib.summary", "efficientnetv2_s", "--image-size", "384"],
                         capture_output=True, text=True, check=True).stdout
    assert "8.366" in out and "16.731" in out and "21,458,488" in out and "MACs" in out


def test_v2_settings_bn_stochastic_depth_dropout():
    m = ev2lib.create_model("efficientnetv2_s")
    bns = [x for x in m.modules() if isinstance(x, nn.BatchNorm2d)]
    assert bns and all(b.eps == 1e-3 and b.momentum == 0.1 for b in bns)
    blocks = [b for stage in m.features[1:-1] for b in stage]
    assert len(blocks) == 40
    p = [b.stochastic_depth.p for b in blocks]
    expected = [0.2 * i / 40 if b.use_residual else 0.0 for i, b in enumerate(blocks)]
    assert p == pytest.approx(expected)
    assert max(p) == pytest.approx(0.2 * 39 / 40)
    assert m.classifier[0].p == 0.2
    assert ev2lib.create_model("efficientnetv2_l").classifier[0].p == 0.4
    m.set_dropout(0.35)
    assert m.dropout == 0.35


def test_v1_bn_settings_follow_torchvision():
    for name, eps, mom in [("efficientnet_b0", 1e-5, 0.1), ("efficientnet_b7", 1e-3, 0.01)]:
        bn = next(x for x in ev2lib.create_model(name).modules() if isinstance(x, nn.BatchNorm2d))
        assert (bn.eps, bn.momentum) == (eps, mom)


def test_blocks_match_the_paper():
    m = ev2lib.create_model("efficientnetv2_s")
    fused_e1, fused_e4, mb = m.features[1][0], m.features[2][0], m.features[4][0]
    assert isinstance(fused_e1, ev2lib.blocks.FusedMBConv) and len(fused_e1.block) == 1  # single k x k conv + act
    assert isinstance(fused_e1.block[0][-1], nn.SiLU)
    assert isinstance(fused_e4.block[0][0], nn.Conv2d) and fused_e4.block[0][0].kernel_size == (3, 3)
    assert len(fused_e4.block[1]) == 2  # project: conv + BN, no activation
    assert isinstance(mb, ev2lib.blocks.MBConv)
    assert mb.block[1][0].groups == 256  # depthwise on 64 * 4 channels
    assert mb.block[2].fc1.out_channels == 16  # SE from the block's input: 64 * 0.25
    assert not any(isinstance(x, ev2lib.blocks.SqueezeExcitation) for x in m.features[1:4].modules())


def test_fused_stages_override():
    base = ev2lib.create_model("efficientnet_b4")
    fused = ev2lib.create_model("efficientnet_b4", fused_stages=range(1, 4))
    kinds = [type(stage[0]).__name__ for stage in fused.features[1:-1]]
    assert kinds == ["FusedMBConv"] * 3 + ["MBConv"] * 4
    assert n_params(base) == PARAMS["efficientnet_b4"] and n_params(fused) != n_params(base)


# ----------------------------------------------------------------------------------------------------- bad input

def test_unknown_name_lists_known_ones():
    with pytest.raises(ev2lib.ConfigError, match="known models: .*efficientnetv2_s") as e:
        ev2lib.create_model("efficientnetv2_q")
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("row, msg", [
    (("conv", 3, 1, 1, 24, 24, 2), "block 'conv' is not one of"),
    (("fused", 4, 1, 1, 24, 24, 2), "kernel 4 must be a positive odd number"),
    (("fused", 3, 3, 1, 24, 24, 2), "stride 3 must be 1 or 2"),
    (("fused", 3, 1, 1, 32, 24, 2), "does not match the previous stage"),
    (("fused", 3, 1, 1, 24, 24, 0), "repeats 0"),
])
def test_malformed_stage_table(row, msg):
    cfg = get_config("efficientnetv2_s")
    with pytest.raises(ev2lib.ConfigError, match=msg):
        ev2lib.create_model(cfg.replace(stages=(Stage(*row),) if "previous" not in msg else (cfg.stages[0], Stage(*row))))


def test_bad_overrides():
    with pytest.raises(ev2lib.ConfigError, match="stages 1..6; got stage 9"):
        ev2lib.create_model("efficientnetv2_s", fused_stages=[9])
    with pytest.raises(ev2lib.ConfigError, match="padding must be one of"):
        ev2lib.create_model("efficientnetv2_s", padding="valid")
    with pytest.raises(ev2lib.ConfigError, match="unknown create_model argument"):
        ev2lib.create_model("efficientnetv2_s", widht=2)


def test_image_smaller_than_the_network_accepts():
    m = ev2lib.create_model("efficientnetv2_s").eval()
    with pytest.raises(ev2lib.InputSizeError, match="at least 32x32"):
        m(torch.randn(1, 3, 16, 16))
    m(torch.randn(1, 3, 32, 32))  # the smallest accepted size works
    cifar = ev2lib.create_model("efficientnetv2_cifar").eval()
    assert cifar.min_image_size < 32


def test_state_dict_from_another_variant():
    m = ev2lib.create_model("efficientnetv2_s")
    with pytest.raises(ev2lib.WeightsError, match="does not fit efficientnetv2_s .*another variant") as e:
        m.load_state_dict(ev2lib.create_model("efficientnetv2_m").state_dict())
    assert "\n" not in str(e.value)


def test_cli_errors_are_one_line():
    r = subprocess.run([sys.executable, "-m", "ev2lib.summary", "efficientnetv2_q"], capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "ev2lib.summary", "efficientnetv2_s", "--image-size", "8"],
                       capture_output=True, text=True)
    assert r.returncode == 2 and "at least 32x32" in r.stderr and "Traceback" not in r.stderr
