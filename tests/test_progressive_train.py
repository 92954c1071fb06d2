"""Progressive learning through the training loop: a run killed (SIGKILL) inside stage 2 of 3 and resumed ends
bit-identical to an uninterrupted run, in the right stage (paper §4.2, Algorithm 1; ev2lib.train checkpoints)."""
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ev2lib import checkpoint as ckpt

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
# 3 stages over 3 epochs of 8 steps: stage 2 (1-based, as in the paper) is epoch 1 = steps 9-16. Every setting
# moves: size 12 -> 16 -> 20, RandAugment 0 -> 3 -> 6, mixup and CutMix 0 -> 0.2 -> 0.4, dropout 0.1 -> 0.2 -> 0.3.
SCRIPT = """
import sys, torch
from ev2lib.progressive import ProgressiveSchedule
from ev2lib.train import make_config, train
torch.set_num_threads(1)
schedule = ProgressiveSchedule(3, 3, image_size=(12, 20), randaug=(0, 6), mixup=(0, 0.4), cutmix=(0, 0.4),
                               dropout=(0.1, 0.3), size_multiple=4)
cfg = make_config("smoke", data="synthetic:128", image_size=20, batch_size=16, epochs=3, lr=0.05, warmup_epochs=0.5,
                  train_subset=0, eval_subset=32, ckpt_every=4, log_every=1, progress=False, deterministic=True,
                  out=sys.argv[1])
train(cfg, schedule=schedule)
"""


def _run(out, kill_at=None):
    env = {**ENV, "EV2_KILL_AT_STEP": str(kill_at)} if kill_at else ENV
    return subprocess.run([sys.executable, "-c", SCRIPT, str(out)], capture_output=True, text=True, env=env, timeout=300)


def _log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


@pytest.mark.slow  # ~15 s of CPU for three short runs; ~30-60 s wall on a busy 2-core machine
def test_progressive_run_killed_in_stage_2_resumes_bit_identical(tmp_path):
    ref = _run(tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = _run(tmp_path / "run", kill_at=14)
    assert killed.returncode == -signal.SIGKILL
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 12  # the last checkpoint, mid-epoch inside stage 2
    assert state["stage"]["image_size"] == 16 and state["stage"]["randaug_magnitude"] == 3
    assert abs(state["stage"]["mixup_alpha"] - 0.2) < 1e-9 and abs(state["stage"]["dropout"] - 0.2) < 1e-9
    resumed = _run(tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert any(r.get("event") == "resume" and r["step"] == 12 for r in _log(tmp_path / "run"))
    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    # The same losses step by step after the resume, and the same stages per epoch.
    ref_loss = {r["step"]: r["loss"] for r in _log(tmp_path / "ref") if "loss" in r}
    run_loss = {r["step"]: r["loss"] for r in _log(tmp_path / "run") if "loss" in r}
    assert all(run_loss[s] == ref_loss[s] for s in range(13, 25))
    ref_hist = ckpt.load_checkpoint(tmp_path / "ref" / "checkpoint.pt")["history"]
    run_hist = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["history"]
    assert [h["stage"]["image_size"] for h in run_hist] == [12, 16, 20]
    assert [h["test_acc"] for h in run_hist] == [h["test_acc"] for h in ref_hist]


def test_scaled_maps_a_schedule_onto_small_images():
    from ev2lib.progressive import RandomResizeSchedule, paper_schedule

    paper = paper_schedule("efficientnetv2_s")
    small = paper.scaled(image_size=(16, 32), total_epochs=8, size_multiple=4)
    assert [s.image_size for s in small.stages()] == [16, 20, 28, 32]  # 21.3 and 26.7 rounded to multiples of 4
    assert [s.randaug_magnitude for s in small.stages()] == [s.randaug_magnitude for s in paper.stages()]
    assert [s.dropout for s in small.stages()] == [s.dropout for s in paper.stages()]
    assert [(s.start_epoch, s.end_epoch) for s in small.stages()] == [(0, 2), (2, 4), (4, 6), (6, 8)]
    rr = RandomResizeSchedule(16, (128, 256), every=4, adaptive=False, randaug=(5, 15), seed=1).scaled((16, 32), 8, 4)
    assert isinstance(rr, RandomResizeSchedule) and rr.num_stages == 2 and not rr.adaptive
    assert all(16 <= s.image_size <= 32 and s.image_size % 4 == 0 and s.randaug_magnitude == 15 for s in rr.stages())
