"""ev2lib.fast_path: the three settings it compares are what it says, and the ratios are of their medians."""
import subprocess
import sys

import pytest
import torch

from ev2lib import fast_path


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_settings_compare_like_with_like():
    by_name = {name: rest for name, *rest in fast_path.SETTINGS}
    assert by_name["ev2lib"] == ["ev2lib", "bf16", True, True]
    assert by_name["torchvision eager fp32"] == ["torchvision", "fp32", False, False]
    assert by_name["torchvision, same settings"][1:] == by_name["ev2lib"][1:]  # only the implementation differs
    n = {impl: sum(p.numel() for p in fast_path.build(impl).parameters()) for impl in ("ev2lib", "torchvision")}
    assert n["ev2lib"] == n["torchvision"] == 21_458_488


def test_tiny_run_on_cpu_reports_every_setting_and_median_ratios():
    rec = fast_path.fast_path(batch_size=2, image_size=32, device="cpu", repeats=2, warmup=1, compile=False)
    assert list(rec["runs"]) == [name for name, *_ in fast_path.SETTINGS]
    med = {k: r["train_img_s"]["median"] for k, r in rec["runs"].items()}
    assert rec["ratios"]["ev2lib / torchvision eager fp32"] == pytest.approx(med["ev2lib"] / med["torchvision eager fp32"])
    assert rec["ratios"]["ev2lib / torchvision, same settings"] == pytest.approx(
        med["ev2lib"] / med["torchvision, same settings"])
    assert all(r["compile"] is False and r["compile_seconds"] == 0.0 for r in rec["runs"].values())
    assert rec["runs"]["ev2lib"]["dtype"] == "bf16" and rec["runs"]["torchvision eager fp32"]["dtype"] == "fp32"
    d = rec["data"]  # the input pipeline's share: its time over its time plus the ev2lib step's
    step = 2 / med["ev2lib"]
    assert d["share_of_ev2lib_step"] == pytest.approx(d["seconds"]["median"] / (d["seconds"]["median"] + step))
    assert d["batch_size"] == 2 and d["image_size"] == 32 and 0 < d["share_of_ev2lib_step"] < 1


def test_data_time_times_the_augmentation_it_names(monkeypatch):
    from ev2lib import device_augment

    seen = []
    real = device_augment.augment_batch
    monkeypatch.setattr(device_augment, "augment_batch", lambda x, seed, **kw: seen.append((x.shape, kw)) or real(x, seed, **kw))
    out = fast_path.data_time(batch_size=8, image_size=48, device="cpu", repeats=3, warmup=1, pool=64)
    assert len(seen) == 4 and seen[0][0] == (8, 3, 32, 32)  # warm-up + 3 timed batches of 32 px sources
    assert seen[0][1] == {"image_size": 48, "crop": "rrc", "randaug_magnitude": 10}
    assert out["seconds"]["median"] > 0


def test_save_without_a_gpu_profile_is_one_clear_line():
    r = subprocess.run([sys.executable, "-m", "ev2lib.fast_path", "--device", "cpu", "--save", "x"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "--profile colab or full" in r.stderr
