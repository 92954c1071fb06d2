"""Progressive learning through the training loop: a run killed (SIGKILL) inside phase 2 of 3 and resumed ends
bit-identical to an uninterrupted run, in the right phase (paper §4.2, Algorithm 1; ev2lib.train checkpoints)."""
import signal

import pytest
import torch
from conftest import read_log, train_subprocess

from ev2lib.train import load_checkpoint

# 3 phases over 3 epochs of 8 steps: phase 2 (1-based, as in the paper) is epoch 1 = steps 9-16. Every setting
# moves: size 12 -> 16 -> 20, RandAugment 0 -> 3 -> 6, mixup and CutMix 0 -> 0.2 -> 0.4, dropout 0.1 -> 0.2 -> 0.3.
SCHEDULE = dict(num_phases=3, total_epochs=3, image_size=(12, 20), randaug=(0, 6), mixup=(0, 0.4), cutmix=(0, 0.4),
                dropout=(0.1, 0.3), size_multiple=4)
FIELDS = dict(data="synthetic:128", image_size=20, batch_size=16, epochs=3, lr=0.05, warmup_epochs=0.5,
              train_subset=0, eval_subset=32, ckpt_every=4, log_every=1, progress=False, deterministic=True)


@pytest.mark.slow  # ~15 s of CPU for three short runs; ~30-60 s wall on a busy 2-core machine
def test_progressive_run_killed_in_phase_2_resumes_bit_identical(tmp_path):
    ref = train_subprocess({**FIELDS, "out": str(tmp_path / "ref")}, progressive=SCHEDULE)
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = train_subprocess({**FIELDS, "out": str(tmp_path / "run")}, kill_at=14, progressive=SCHEDULE)
    assert killed.returncode == -signal.SIGKILL
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 12  # the last checkpoint, mid-epoch inside phase 2
    assert state["phase"]["image_size"] == 16 and state["phase"]["randaug_magnitude"] == 3
    assert abs(state["phase"]["mixup_alpha"] - 0.2) < 1e-9 and abs(state["phase"]["dropout"] - 0.2) < 1e-9
    resumed = train_subprocess({**FIELDS, "out": str(tmp_path / "run")}, progressive=SCHEDULE)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert any(r.get("event") == "resume" and r["step"] == 12 for r in read_log(tmp_path / "run"))
    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)["model"]
    b = torch.load(tmp_path / "run" / "model.pt", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The same losses step by step after the resume, and the same phases per epoch.
    ref_loss = {r["step"]: r["loss"] for r in read_log(tmp_path / "ref") if "loss" in r}
    run_loss = {r["step"]: r["loss"] for r in read_log(tmp_path / "run") if "loss" in r}
    assert all(run_loss[s] == ref_loss[s] for s in range(13, 25))
    ref_hist = load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["history"]
    run_hist = load_checkpoint(tmp_path / "run" / "checkpoint.pt")["history"]
    assert [h["phase"]["image_size"] for h in run_hist] == [12, 16, 20]
    assert [h["test_acc"] for h in run_hist] == [h["test_acc"] for h in ref_hist]


def test_scaled_maps_a_schedule_onto_small_images():
    from ev2lib.progressive import RandomResizeSchedule, paper_schedule

    paper = paper_schedule("efficientnetv2_s")
    small = paper.scaled(image_size=(16, 32), total_epochs=8, size_multiple=4)
    assert [s.image_size for s in small.phases()] == [16, 20, 28, 32]  # 21.3 and 26.7 rounded to multiples of 4
    assert [s.randaug_magnitude for s in small.phases()] == [s.randaug_magnitude for s in paper.phases()]
    assert [s.dropout for s in small.phases()] == [s.dropout for s in paper.phases()]
    assert [(s.start_epoch, s.end_epoch) for s in small.phases()] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    rr = RandomResizeSchedule(16, (128, 256), every=4, adaptive=False, randaug=(5, 15), seed=1).scaled((16, 32), 8, 4)
    assert isinstance(rr, RandomResizeSchedule) and rr.num_phases == 2 and not rr.adaptive
    assert all(16 <= s.image_size <= 32 and s.image_size % 4 == 0 and s.randaug_magnitude == 15 for s in rr.phases())
