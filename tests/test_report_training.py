"""ev2lib.report.training: the sentences and tables of the Training and Progressive learning chapters, each
checked against hand arithmetic and against a case where the answer is the other one."""
import dataclasses
import re

from ev2lib.progressive import ProgressiveSchedule, fixed_schedule, official_schedule, paper_schedule
from ev2lib.recipe import make_config
from ev2lib.report import training as rt


def test_schedule_end_is_the_papers_last_learning_rate():
    end = 0.97 ** 145  # 350 epochs: floor(349.99 / 2.4) = 145 decays after the 5-epoch warm-up
    text = rt.schedule_end()
    assert f"{0.256 * end:.4f}" in text and f"{100 * end:.2f}%" in text and "350 epochs" in text
    assert "0.0000" in rt.schedule_end("smoke")  # a cosine schedule ends at zero: a different sentence


def test_left_out_names_what_a_config_switches_off():
    full = dataclasses.asdict(make_config("full"))
    assert rt.left_out(full) == ["mixup"]  # the full profile trains at one size without mixup
    assert rt.left_out({**full, "mixup_alpha": 0.2}) == []
    cpu = dataclasses.asdict(make_config("cpu-reference"))
    assert rt.left_out(cpu) == ["RMSProp", "the exponential decay", "the EMA", "RandAugment", "mixup"]


def _history(cpu=None):
    h = [{"epoch": e, "step": 16 * e, "test_acc": a, "train_seconds": 8.0 * e} for e, a in ((1, 0.2), (2, 0.25))]
    if cpu:
        h[-1]["train_cpu_seconds"] = cpu
    return h


def test_run_words_states_size_and_result_from_the_record():
    cfg = dataclasses.asdict(make_config("smoke"))
    text = rt.run_words(cfg, _history(), "shared CIFAR-10 JPEG archive /some/machine/cifar10_jpeg.npz")
    assert "2,048 training images" in text and "2 epochs, 32 steps of 128" in text
    assert "20.0%, 25.0% after each epoch" in text and "25.0% test accuracy" in text and "0.50 s a step" in text
    assert "/some" not in text and "CPU min" not in text and "(shared CIFAR-10 JPEG archive)" in text
    assert "every training image (CIFAR-10) for" in rt.run_words({**cfg, "train_subset": 0}, _history(), "CIFAR-10")
    assert "(1.5 CPU min)" in rt.run_words(cfg, _history(cpu=90.0), "CIFAR-10")


def test_phase_frame_has_readable_headers_and_the_codes_sizes():
    df = rt.phase_frame(["efficientnetv2_s", "efficientnetv2_m"])
    assert not [c for c in df.columns if re.search(r"[a-z]_[a-z]", c)], list(df.columns)
    official = df[(df["variant"] == "V2-S") & (df["schedule"] == "official code")]
    assert official["image size (px)"].tolist() == [171, 214, 257, 300] and official["phase"].tolist() == [1, 2, 3, 4]
    paper = df[(df["variant"] == "V2-M") & (df["schedule"] == "paper Table 6")]
    assert paper["image size (px)"].tolist()[0] == 128 and paper["dropout rate"].tolist()[-1] == 0.4


def test_differences_list_only_what_differs():
    s = paper_schedule("efficientnetv2_s")
    assert rt.differences("efficientnetv2_s", s, s) == []  # the same schedule twice: nothing to say
    m = rt.differences("efficientnetv2_m")
    assert "CutMix 0 → 0.2 (paper: no CutMix)" in m and m[-1] == "dropout 0.3 throughout (paper: 0.1 → 0.4)"
    assert not any("mixup" in d and "CutMix" not in d for d in m)  # V2-M's mixup ramps 0 → 0.2 in both
    assert rt.words(ProgressiveSchedule(2, 4, (16, 32), dropout=None))[-1] == "dropout unchanged"


def test_pixel_share():
    assert rt.pixel_share(fixed_schedule(10, 32)) == 1.0  # one size throughout: every pixel of the last size
    s = paper_schedule("efficientnetv2_s")
    hand = (87 * 128**2 + 88 * 184**2 + 87 * 240**2 + 88 * 300**2) / (350 * 300**2)
    assert abs(rt.pixel_share(s) - hand) < 1e-12 and rt.pixel_share(s) < rt.pixel_share(official_schedule())


def _fast_path(ours=(1432.0, 1520.0, 1657.0), eager=(1125.0, 1132.0, 1146.0), same=(1462.0, 1554.0, 1604.0), share=0.12):
    def run(q, amp, cl, comp, first):
        return {"precision": amp, "channels_last": cl, "compile": comp, "first_step_seconds": first,
                "train_img_s": dict(zip(("q25", "median", "q75"), q))}
    runs = {"ev2lib": run(ours, "bf16", True, True, 100.0), "torchvision eager": run(eager, "fp32, convolutions in "
            "TF32", False, False, 0.5), "torchvision, same settings": run(same, "bf16", True, True, 83.0)}
    return {"data": {"batch_size": 128, "image_size": 224, "runs": runs, "data": {"seconds": {"median": 0.0116},
            "share_of_ev2lib_step": share}, "goals": {"ev2lib / torchvision eager": 2.0,
            "ev2lib / torchvision, same settings": 1.0, "data share of the ev2lib step": 0.1},
            "ratios": {"ev2lib / torchvision eager": ours[1] / eager[1],
                       "ev2lib / torchvision, same settings": ours[1] / same[1]}}}


def test_fast_path_words_follow_the_ratios_goals_and_spreads():
    text = rt.fast_path_words(_fast_path())
    assert "1,520 images/s, 1.34× torchvision's eager step in fp32, convolutions in TF32 (faster; goal 2×, not met)" in text
    assert "0.98× torchvision's network under the same settings (no faster or slower: the interquartile ranges overlap; goal 1×)" in text
    assert "11.6 ms a batch, 12.0% of the ev2lib step (goal under 10%, not met)" in text and "first step 100 s" in text
    other = rt.fast_path_words(_fast_path(ours=(2900.0, 3000.0, 3100.0), same=(3200.0, 3300.0, 3400.0), share=0.05))
    assert "2.65× torchvision's eager step" in other and "(faster; goal 2×, met)" in other
    assert "0.91× torchvision's network under the same settings (slower;" in other and "(goal under 10%, met)" in other


def test_the_recorded_fast_path_reads_as_a_table():
    from ev2lib import results
    record = results.reference("fast_path")
    if record is None:
        import pytest
        pytest.skip("no fast_path result recorded")
    df = rt.fast_path_frame(record)
    assert list(df["setting"]) == ["ev2lib, bf16, channels last, compiled", "torchvision, fp32, convolutions in TF32, "
                                   "eager", "torchvision, bf16, channels last, compiled"]
    assert list(df.columns) == ["images/s", "IQR", "setting"] and df["images/s"].gt(0).all()
    assert f"{record['data']['ratios']['ev2lib / torchvision eager']:.2f}×" in rt.fast_path_words(record)
