"""ev2lib.report.architecture: counts at the official sizes (they must not follow a profile's small image), stages
labelled by role, Table 10 against its prose, V2 against V1 at equal parameters, the V1 check and the plain rule."""
import types

import pandas as pd
import pytest
from torchvision import models as tvm

from ev2lib.report import architecture as arch

# [computed] in the reference notes (§2.1-2.3): trainable parameters (M), GMACs at final train size and at eval size.
OFFICIAL = {"V2-S": (21.458488, 5.31, 8.366), "V2-M": (54.139356, 15.74, 24.582), "V2-L": (118.515272, 35.90, 56.080),
            "V2-XL": (208.119808, 52.53, 93.353)}


def test_costs_are_at_the_official_sizes_whatever_the_profile():
    rows = {r["model"]: r for r in arch.costs([f"efficientnetv2_{v}" for v in "sml"] + ["efficientnetv2_xl"])}
    for name, (params, train, eval_) in OFFICIAL.items():
        r = rows[name]
        assert r["parameters (M)"] == pytest.approx(params, abs=1e-6)
        assert (r["GMACs at train size"], r["GMACs at eval size"]) == pytest.approx((train, eval_), abs=0.01)
    assert [rows[n]["train size (px)"] for n in OFFICIAL] == [300, 384, 384, 384]
    assert [rows[n]["eval size (px)"] for n in OFFICIAL] == [384, 480, 480, 512]
    assert arch.gmacs("efficientnetv2_s", 128) == pytest.approx(0.934, abs=0.01)  # the smoke size the page once showed
    assert rows["V2-XL"]["README parameters (M)"] is None and rows["V2-S"]["README FLOPs (B)"] == 8.4


def test_readme_values_agree_with_the_counts_within_rounding():
    rows = arch.costs(list(arch.README))
    for r in rows:
        assert r["README parameters (M)"] == pytest.approx(r["parameters (M)"], rel=0.01), r["model"]
        assert r["README FLOPs (B)"] == pytest.approx(r["GMACs at eval size"], rel=0.01), r["model"]
    assert r["GMACs at train size"] != pytest.approx(r["README FLOPs (B)"], rel=0.01)  # the train size is not Table 7's


def test_stages_are_aligned_by_role_not_by_number():
    frame = pd.DataFrame({"variant": ["S"] * 8 + ["M"] * 9, "stage": [*range(8), *range(9)]})
    got = arch.by_role(frame)
    s, m = got[got.variant == "S"].stage.tolist(), got[got.variant == "M"].stage.tolist()
    assert s[0] == "stem" and s[-1] == "head" and "7" not in s  # S's head is not M's stage 7
    assert m[-2:] == ["7", "head"]
    assert list(got.stage.cat.categories) == ["stem", *map(str, range(1, 8)), "head"]
    only_s = arch.by_role(frame[frame.variant == "S"])
    assert list(only_s.stage.cat.categories) == ["stem", *map(str, range(1, 7)), "head"]


def test_table10_reductions_against_the_prose():
    t = arch.table10()
    assert t["rows"]["B7"] == pytest.approx((66.347960, 37.75), abs=0.01)
    assert t["parameters"] == pytest.approx(0.184, abs=0.002) and t["FLOPs"] == pytest.approx(0.349, abs=0.002)
    assert all(abs(t[k] - v) < 0.03 for k, v in arch.TABLE10_PROSE.items())
    bigger = arch.table10(v2="efficientnetv2_l")  # negative control: L is larger than B7, no reduction
    assert bigger["parameters"] < 0 and bigger["FLOPs"] < 0


def test_against_v1_interpolates_log_log_and_says_beyond_the_noise():
    rows = [{"model": "a", "family": "V1", "x": 1.0, "y": 100.0}, {"model": "b", "family": "V1", "x": 100.0, "y": 1.0},
            {"model": "on", "family": "V2", "x": 10.0, "y": 10.0}, {"model": "fast", "family": "V2", "x": 10.0, "y": 20.0},
            {"model": "slow", "family": "V2", "x": 10.0, "y": 5.0}, {"model": "out", "family": "V2", "x": 1000.0, "y": 1.0}]
    got = arch.against_v1(rows, "y", "x")  # exact values (no spread): any ratio off 1 is a difference
    assert {k: v[0] for k, v in got.items()} == pytest.approx({"on": 1.0, "fast": 2.0, "slow": 0.5})
    assert {k: v[1] for k, v in got.items()} == {"on": "no clear difference", "fast": "more", "slow": "less"}
    for r in rows:  # repeats that spread 60% (V2) plus 50% (V1): neither 2x nor 0.5x is beyond that band
        r["spread"] = 0.6 if r["family"] == "V2" else 0.5
    got = arch.against_v1(rows, "y", "x")
    assert got["fast"][1] == "no clear difference" and got["slow"][1] == "no clear difference"
    rows[3]["y"] = 30.0  # 3x: beyond 1 + 0.6 + 0.5
    assert arch.against_v1(rows, "y", "x")["fast"] == (pytest.approx(3.0), "more")


def test_throughput_rows_from_a_bench_record():
    run = lambda m, p, med: {"model": m, "params": p, "train_img_s": {"median": med, "min": med - 1, "max": med + 1}}
    rows = arch.throughput({"data": {"runs": [run("efficientnet_b0", 5e6, 40.0), run("efficientnetv2_s", 2e7, 10.0)]}})
    assert [(r["model"], r["family"], r["parameters (M)"]) for r in rows] == [("B0", "V1", 5.0), ("V2-S", "V2", 20.0)]
    assert rows[1]["spread"] == pytest.approx(0.2)


def test_v1_check_agrees_with_torchvision_and_catches_a_mismatch(monkeypatch):
    rows = arch.v1_check()
    assert [r["model"] for r in rows] == [f"B{i}" for i in range(1, 8)]
    assert all(r["same stem, stages and head"] and r["parameters (ev2lib)"] == r["parameters (torchvision)"]
               for r in rows)
    monkeypatch.setattr(arch, "tvm", types.SimpleNamespace(efficientnet_b2=tvm.efficientnet_b3))  # a wrong reference
    (bad,) = arch.v1_check(["efficientnet_b2"])
    assert not bad["same stem, stages and head"] and bad["parameters (ev2lib)"] != bad["parameters (torchvision)"]


def test_plain_rule_finds_the_layers_m_and_l_add():
    rows = {r["model"]: r for r in arch.plain_rule()}
    assert rows["V2-S"]["layers missing"] == {}
    assert rows["V2-M"]["layers missing"] == {5: 3, 7: 5} and rows["V2-L"]["layers missing"] == {5: 3, 7: 7}
    assert all(r["plain rule (M)"] < r["released (M)"] for n, r in rows.items() if n != "V2-S")
