"""ev2lib.fast_path: every row times the training loop's own step, the settings are what they say, and the rows
are timed interleaved after their warm-up."""
import subprocess
import sys

import pytest

from ev2lib import fast_path

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def test_settings_compare_like_with_like():
    by_name = {name: rest for name, *rest in fast_path.SETTINGS}
    assert by_name["ev2lib"] == ["ev2lib", "bf16", True, True]
    assert by_name["torchvision eager"] == ["torchvision", "none", False, False]
    assert by_name["torchvision, same settings"][1:] == by_name["ev2lib"][1:]  # only the implementation differs
    n = {impl: sum(p.numel() for p in fast_path.build(impl).parameters()) for impl in ("ev2lib", "torchvision")}
    assert n["ev2lib"] == n["torchvision"] == 21_458_488


def test_every_row_times_the_loops_train_step_interleaved(monkeypatch):
    calls = []
    real = fast_path.train_step

    def spy(run, x, y):
        calls.append((type(run.model).__module__.split(".")[0], run.config["amp"], run.cfg.channels_last, x.dtype))
        return real(run, x, y)

    monkeypatch.setattr(fast_path, "train_step", spy)
    rec = fast_path.fast_path(batch_size=2, image_size=32, device="cpu", repeats=3, warmup=1, compile=False)
    assert list(rec["runs"]) == [name for name, *_ in fast_path.SETTINGS]
    assert calls[:2] == [("ev2lib", "bf16", True, calls[0][3])] * 2  # first step, then the warm-up, row by row
    assert calls[4][:3] == ("torchvision", "bf16", True) and calls[2][:3] == ("torchvision", "none", False)
    timed = calls[6:]
    assert len(timed) == 9 and [c[:3] for c in timed[:3]] == [c[:3] for c in timed[3:6]]  # rows alternate
    assert {c[0] for c in timed[:3]} == {"ev2lib", "torchvision"} and all(str(c[3]) == "torch.uint8" for c in calls)
    med = {k: r["train_img_s"]["median"] for k, r in rec["runs"].items()}
    assert rec["ratios"]["ev2lib / torchvision eager"] == pytest.approx(med["ev2lib"] / med["torchvision eager"])
    assert all(r["compile"] is False for r in rec["runs"].values())
    assert [r["precision"] for r in rec["runs"].values()] == ["bf16", "fp32", "bf16"]  # no TF32 on a CPU


def test_data_time_times_the_augmentation_it_names(monkeypatch):
    from ev2lib import augment

    seen = []
    real = augment.augment_batch
    monkeypatch.setattr(augment, "augment_batch", lambda x, seed, **kw: seen.append((x.shape, kw)) or real(x, seed, **kw))
    out = fast_path.data_time(batch_size=8, image_size=48, device="cpu", repeats=3, warmup=1, pool=64)
    assert len(seen) == 4 and seen[0][0] == (8, 3, 32, 32)  # warm-up + 3 timed batches of 32 px sources
    assert seen[0][1] == {"image_size": 48, "crop": "rrc", "randaug_magnitude": 10}
    assert out["augmentation"].startswith("rrc + flip + RandAugment 10")


def test_save_without_a_gpu_profile_is_one_clear_line():
    r = subprocess.run([sys.executable, "-m", "ev2lib.fast_path", "--device", "cpu", "--save", "x"],
                       capture_output=True, text=True)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "--profile colab or full" in r.stderr
