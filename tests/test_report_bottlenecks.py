"""ev2lib.report.bottlenecks: the verdicts and counts of the bottlenecks and fused_mbconv chapters. Each verdict is
also given a record where the effect is absent (or reversed), which must give the other verdict."""
import pytest

from ev2lib.model import swap_blocks
from ev2lib.report import bottlenecks as rb

MIB = 2**20


def run(model="efficientnet_b4", size=96, img_s=(8.0, 7.8, 8.2), stage_ms=None, **fields):
    """A bench record's run: ``img_s`` = (median, slowest, fastest) training images/s."""
    median, lo, hi = img_s
    return {"model": model, "image_size": size, "batch_size": 2, "params": 1000, "stage_ms": stage_ms,
            "train_img_s": {"median": median, "q25": median, "q75": median, "min": lo, "max": hi}, **fields}


def test_compare_needs_the_ranges_apart():
    base = run(img_s=(8, 7.5, 8.5))
    assert rb.compare(run(img_s=(10, 9, 11)), base) == "faster"
    assert rb.compare(run(img_s=(5, 4, 6)), base) == "slower"
    assert rb.compare(run(img_s=(9, 8.4, 9.5)), base) == rb.SAME  # a higher median, but the ranges overlap


def test_image_sizes_split_memory_and_judge_against_the_largest_size():
    large = run(size=128, img_s=(2.5, 2.3, 2.8), peak_memory_bytes=12_000 + 2 * 30 * MIB, max_batch=61)
    small = run(size=64, img_s=(5, 4.4, 5.1), peak_memory_bytes=12_000 + 2 * 8 * MIB, max_batch=233)
    first, last = rb.image_sizes([large, small])
    assert (first["image (px)"], last["image (px)"]) == (64, 128)
    assert first[rb.MEMORY[0]] == pytest.approx(8) and last[rb.MEMORY[0]] == pytest.approx(30)
    assert first[rb.MEMORY[1]] == pytest.approx(12_000 / MIB)  # weights + gradients + momentum: 12 bytes a parameter
    assert first["speed-up"] == pytest.approx(2) and first["verdict"] == "faster"
    assert last["speed-up"] == 1 and last["verdict"] == ""  # the largest size is the baseline itself
    close = rb.image_sizes([run(size=64, img_s=(2.6, 2.2, 3.0)), large])[0]  # overlapping ranges, no memory recorded
    assert close["verdict"] == rb.SAME and close[rb.MEMORY[0]] is None


def test_image_sizes_compare_with_the_fastest_batch_of_the_largest_size():
    runs = [run(size=128, img_s=(2, 1.9, 2.1), batch_size=12), run(size=128, img_s=(4, 3.9, 4.1), batch_size=60),
            run(size=64, img_s=(5, 4.9, 5.1))]
    assert rb.image_sizes(runs)[0]["speed-up"] == pytest.approx(5 / 4)


def stage_runs(ratios, fused_spread=(3.2, 2.35, 3.39)):
    """B4 and B4 fused in stages 1-7 with the given Fused / MBConv time ratios of block stages 1-7."""
    mb = [1.0] + [10.0] * 7 + [1.0]
    return [run(stage_ms=mb, img_s=(8.2, 7.9, 8.25)),
            run(model=swap_blocks("efficientnet_b4", "1-7").name, img_s=fused_spread,
                stage_ms=[1.0] + [10.0 * r for r in ratios] + [1.0])]


def test_stage_ratios_count_a_change_only_outside_the_steps_spread():
    rows = rb.stage_ratios(stage_runs([0.5, 0.6, 0.995, 0.9, 2.0, 4.0, 1.2]))
    assert [r["stage"] for r in rows] == list(range(1, 8))
    assert [r["verdict"] for r in rows] == ["faster fused"] * 2 + [rb.SAME] * 2 + ["slower fused"] * 2 + [rb.SAME]
    assert rows[2]["time ratio"] == pytest.approx(0.995) and rows[0]["band"] == pytest.approx(8.25 / 7.9 * 3.39 / 2.35)
    assert all(r["MACs ratio"] > 1 for r in rows) and rows[5]["MACs ratio"] > 5  # fusing adds multiply-adds
    wide = rb.stage_ratios(stage_runs([0.5, 0.6, 0.995, 0.9, 2.0, 4.0, 1.2], (3, 0.5, 5)))
    assert {r["verdict"] for r in wide} == {rb.SAME}  # the same ratios inside a wide spread: no clear difference


def test_stage_shares_of_time_and_of_multiply_adds():
    shares = rb.stage_shares([run(model="x", stage_ms=[1, 2, 3, 4])])
    assert shares == {"x": {1: pytest.approx(0.2), 2: pytest.approx(0.3)}}  # stem and head count in the whole
    macs = rb.stage_shares(models=("efficientnet_b0",))["efficientnet_b0"]
    assert sorted(macs) == list(range(1, 8)) and 0.9 < sum(macs.values()) < 1


def test_added_layers_by_stage():
    assert rb.added_layers("efficientnet_b7", "efficientnet_b0") == [3, 5, 5, 7, 7, 9, 3]
    assert rb.added_layers("efficientnet_b0", "efficientnet_b0") == [0] * 7
    v2 = rb.added_layers("efficientnetv2_l", "efficientnetv2_s")
    assert v2[-1] == 7 and sum(v2[4:]) > sum(v2[:4])  # V2-L's new stage 7 counts whole; most layers go late


def test_table3_counts_against_the_paper():
    default = {r["row"]: r for r in rb.table3_counts()}
    assert all(abs(default[r]["parameter gap"]) < 0.005 for r in ("No fused", "Fused stage1-5", "Fused stage1-7"))
    assert default["Fused stage1-3"]["parameter gap"] > 0.03  # the one row the default does not reproduce
    k3 = {r["row"]: r for r in rb.table3_counts(kernel=3)}
    assert abs(k3["Fused stage1-3"]["parameter gap"]) < 0.005  # 3x3 kernels reproduce stage1-3 ...
    assert k3["Fused stage1-5"]["parameter gap"] < -0.2  # ... and break stage1-5
    assert all(r["MAC gap"] < -0.5 for r in rb.table3_counts(224))  # 224 px undercounts every row


def test_table3_speed_judges_each_row_against_no_fused():
    names = {row: swap_blocks("efficientnet_b4", st).name for row, st in rb.ROWS.items()}
    speeds = {"No fused": (7.5, 6.9, 7.6), "Fused stage1-3": (8.7, 8.1, 8.9), "Fused stage1-5": (6.7, 6.5, 7.0),
              "Fused stage1-7": (1.9, 1.8, 3)}
    runs = [run(model=names[row], img_s=v) for row, v in speeds.items()]
    rows = {r["row"]: r for r in rb.table3_speed(runs)}
    assert [rows[r]["verdict"] for r in rb.ROWS] == ["", "faster", rb.SAME, "slower"]
    assert rows["Fused stage1-3"]["relative"] == pytest.approx(8.7 / 7.5)
    assert rows["Fused stage1-3"]["paper TPU"] == pytest.approx(362 / 262)


def test_table3_paper_values_agree_with_the_paper_text():
    """§3.2: fusing stages 1-3 trains faster "with a small overhead on parameters and FLOPs"; fusing 1-7
    "significantly increases parameters and FLOPs while also slowing down the training"."""
    none, s13, s17 = (rb.TABLE3[r] for r in ("No fused", "Fused stage1-3", "Fused stage1-7"))
    assert s13[2] > none[2] and s13[3] > none[3] and s13[0] / none[0] < 1.1
    assert s17[0] > 5 * none[0] and s17[1] > 5 * none[1] and s17[2] < s13[2] and s17[3] < s13[3]


def test_b6_sizes_split_activations_from_the_fixed_bytes():
    small, large = rb.b6_sizes((64, 96))
    assert large[rb.MEMORY[0]] > 2 * small[rb.MEMORY[0]] > 0 and large["MACs (G)"] > 2 * small["MACs (G)"]
    assert small[rb.MEMORY[1]] == large[rb.MEMORY[1]] == pytest.approx(12 * small["parameters (M)"] * 1e6 / MIB)
