"""Compound scaling (EfficientNet §3.3) and the V2 rules (paper §3.3): ev2lib.scaling."""
import math

import pytest

from ev2lib.configs import V1_COEFFICIENTS, get_config
from ev2lib.errors import ConfigError
from ev2lib.scaling import (ALPHA, BETA, GAMMA, add_layers, add_stage, compare_stages, compound_coefficients, derive_v1,
                            derive_v2, param_count, scale, v1_phi_table)

# torchvision's num_params for EfficientNet B0-B7 (the published counts, independent of ev2lib.configs).
V1_PARAMS = {"efficientnet_b0": 5_288_548, "efficientnet_b1": 7_794_184, "efficientnet_b2": 9_109_994,
             "efficientnet_b3": 12_233_232, "efficientnet_b4": 19_341_616, "efficientnet_b5": 30_389_784,
             "efficientnet_b6": 43_040_704, "efficientnet_b7": 66_347_960}


@pytest.mark.parametrize("name", list(V1_COEFFICIENTS))
def test_v1_derived_from_b0_matches_configs_and_params_to_the_unit(name):
    derived, official = derive_v1(name), get_config(name)
    assert derived.stages == official.stages
    assert derived.head_channels == official.head_channels
    assert (derived.train_size, derived.eval_size, derived.dropout) == (official.train_size, official.eval_size,
                                                                        official.dropout)
    assert param_count(derived) == param_count(official) == V1_PARAMS[name]


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
    cfg = scale("efficientnetv2_cifar", width=0.5, depth=1.5)
    base = get_config("efficientnetv2_cifar")
    for s, b in zip(cfg.stages, base.stages):
        assert s.out_channels % 8 == 0 and s.repeats == math.ceil(1.5 * b.repeats)
    assert cfg.head_channels == 256


def test_v2_plain_rule_against_official_tables():
    # S from v2_base with the code comments' (1.4, 1.8): same layers, stem 48 vs 24 and stage 4/6 channels differ.
    s = {r["stage"]: r for r in compare_stages(derive_v2("s"), "efficientnetv2_s")}
    assert all(r["layer diff"] == 0 for r in s.values())
    assert (s[0]["channel diff"], s[4]["channel diff"], s[6]["channel diff"]) == (24, 8, 16)
    # M and L: the plain rule lacks stage 7 and 3 layers of stage 5 -- the paper's "more layers to later stages".
    for name, extra_out, extra_layers in (("m", 512, 5), ("l", 640, 7)):
        rows = {r["stage"]: r for r in compare_stages(derive_v2(name), f"efficientnetv2_{name}")}
        assert rows[5]["layer diff"] == -3
        assert rows[7]["official channels"] == extra_out and rows[7]["layers"] == 0
        assert rows[7]["official layers"] == extra_layers
        derived = derive_v2(name)
        assert derived.eval_size == 480 and param_count(derived) < param_count(f"efficientnetv2_{name}")


def test_v2_rules_recover_official_m_layers():
    m = derive_v2("m")
    fixed = add_stage(add_layers(m, {5: 3}), out_channels=512, repeats=5)
    rows = compare_stages(fixed, "efficientnetv2_m")
    assert all(r["layer diff"] == 0 for r in rows)


def test_inference_size_is_capped_at_480():
    assert scale("efficientnetv2_s", 1.2, 1.2, resolution=600, max_eval_size=480).eval_size == 480


def test_bad_input():
    with pytest.raises(ConfigError, match="positive"):
        scale("efficientnet_b0", width=0)
    with pytest.raises(ConfigError, match="unknown V1"):
        derive_v1("efficientnet_b9")
    with pytest.raises(ConfigError, match="stages 1..6"):
        add_layers(get_config("efficientnetv2_s"), {9: 1})
