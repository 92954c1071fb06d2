"""Compound scaling (EfficientNet §3.3) and the V2 rules (paper §3.3): ev2lib.scaling."""
import math

import pytest
import torch
import torchvision.models as tvm

from ev2lib.configs import get_config
from ev2lib.errors import ConfigError
from ev2lib.scaling import (ALPHA, BETA, GAMMA, V1_COEFFICIENTS, add_layers, add_stage, compare_stages,
                            compound_coefficients, derive_v2, round_filters, scale, v1_phi_table)
from ev2lib.summary import count_params

B0, S = get_config("efficientnetv2_b0"), get_config("efficientnetv2_s")


@pytest.mark.parametrize("name", list(V1_COEFFICIENTS)[1:])
def test_v1_scaled_from_b0_equals_torchvision(name):
    """configs builds B1-B7 by scaling B0 (ev2lib.scaling.scale); torchvision builds them with its own code.
    Stem, every stage's channels and layers, the head and the parameter count must agree."""
    with torch.device("meta"):  # shapes only
        ref = getattr(tvm, name)(weights=None)
    cfg = get_config(name)
    assert ref.features[0][0].out_channels == cfg.stem_channels
    for stage, row in zip(ref.features[1:-1], cfg.stages):
        assert (len(stage), stage[-1].block[-1][0].out_channels) == (row.repeats, row.out_channels)
    assert ref.features[-1][0].out_channels == cfg.head_channels
    assert count_params(cfg) == count_params(ref)


def test_round_filters_nearest_multiple_of_8_and_v1_guard():
    assert round_filters(32, 1.1) == 32 and round_filters(40, 1.1) == 48  # 35.2 -> 32, 44 -> 48 (nearest)
    assert round_filters(16, 0.5) == 8 and round_filters(8, 0.25) == 8  # never below the divisor
    # 11 rounds to 8, down by 27%: V1's guard (round_limit 0.9) goes up to 16 instead; V2 has no guard.
    assert round_filters(11, 1.0) == 8 and round_filters(11, 1.0, round_limit=0.9) == 16


def test_compound_coefficients_and_flops_doubling():
    w, d, r = compound_coefficients(1)
    assert (w, d, r) == (BETA, ALPHA, GAMMA) == (1.1, 1.2, 1.15)
    assert ALPHA * BETA ** 2 * GAMMA ** 2 == pytest.approx(1.92, abs=0.01)  # FLOPs ~ 2**phi
    w3, d3, r3 = compound_coefficients(3)
    assert w3 == pytest.approx(1.331) and d3 == pytest.approx(1.728) and r3 == pytest.approx(1.520875)
    rows = v1_phi_table()
    assert [r["resolution (official)"] for r in rows] == [224, 240, 260, 300, 380, 456, 528, 600]
    assert rows[7]["resolution (formula)"] == round(224 * 1.15 ** 7)


def test_scale_rounds_channels_to_8_and_layers_up():
    base = get_config("efficientnetv2_cifar")
    cfg = scale(base, width=0.5, depth=1.5)
    for s, b in zip(cfg.stages, base.stages):
        assert s.out_channels % 8 == 0 and s.repeats == math.ceil(1.5 * b.repeats)
    assert cfg.head_channels == 256


def test_v2_plain_rule_against_official_tables():
    # S from v2_base (= B0) with the code comments' (1.4, 1.8): same layers, stem 48 vs 24 and stage 4/6 differ.
    s = {r["stage"]: r for r in compare_stages(derive_v2(S, B0), S)}
    assert all(r["layer diff"] == 0 for r in s.values())
    assert (s[0]["channel diff"], s[4]["channel diff"], s[6]["channel diff"]) == (24, 8, 16)
    # M and L: the plain rule lacks stage 7 and 3 layers of stage 5 -- the paper's "more layers to later stages".
    for name, extra_out, extra_layers in (("m", 512, 5), ("l", 640, 7)):
        official = get_config(f"efficientnetv2_{name}")
        derived = derive_v2(official, B0)
        rows = {r["stage"]: r for r in compare_stages(derived, official)}
        assert rows[5]["layer diff"] == -3
        assert rows[7]["official channels"] == extra_out and rows[7]["layers"] == 0
        assert rows[7]["official layers"] == extra_layers
        assert derived.eval_size == 480 and count_params(derived) < count_params(official)


def test_v2_rules_recover_official_m_layers():
    m = get_config("efficientnetv2_m")
    fixed = add_stage(add_layers(derive_v2(m, B0), {5: 3}), out_channels=512, repeats=5)
    assert all(r["layer diff"] == 0 for r in compare_stages(fixed, m))
    from_s = derive_v2(m, S)  # M = S * (1.6/1.4, 2.2/1.8)
    assert from_s.name == "efficientnetv2_m_from_efficientnetv2_s" and from_s.stages[0].repeats == math.ceil(2 * 2.2 / 1.8)


def test_resolution_rule_caps_eval_size_and_keeps_the_train_ratio():
    capped = scale(S, 1.2, 1.2, resolution=600, max_eval_size=480)
    assert (capped.eval_size, capped.train_size) == (480, 376)  # 480 * 300/384 = 375 -> nearest multiple of 8
    free = scale(S, 1.2, 1.2, resolution=600)
    assert (free.eval_size, free.train_size) == (600, 472)
    v1 = scale(get_config("efficientnet_b0"), 1.0, 1.0, resolution=300)
    assert v1.train_size == v1.eval_size == 300  # V1 trains and evaluates at one size
    assert derive_v2(get_config("efficientnetv2_l"), B0, max_eval_size=400).eval_size == 400


def test_bad_input():
    with pytest.raises(ConfigError, match="positive"):
        scale(get_config("efficientnet_b0"), width=0)
    with pytest.raises(ConfigError, match="derive_v2 knows"):
        derive_v2(get_config("efficientnetv2_xl"), B0)
    with pytest.raises(ConfigError, match="stages 1..6"):
        add_layers(S, {9: 1})
