"""The training engine: exact resume after SIGKILL, atomic checkpoints, DDP on CPU, optimizer/schedule, bad input."""
import json
import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ev2lib import checkpoint as ckpt
from ev2lib.errors import ConfigError, WeightsError
from ev2lib.train import RMSpropTF, TrainingError, lr_factor, make_config, param_groups, train

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
# A tiny deterministic run: generated data, 16 px, 8 steps per epoch.
TINY = ["--data", "synthetic:256", "--image-size", "16", "--batch-size", "32", "--epochs", "2", "--lr", "0.05",
        "--progress", "false", "--deterministic", "true", "--log-every", "1", "--eval-subset", "64"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _run(args, out, env=None, cmd=(PY, "-m", "ev2lib.train")):
    return subprocess.run([*cmd, *TINY, "--out", str(out), *args], capture_output=True, text=True, env=env or ENV,
                          timeout=240)


def _log(out):
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    ref = _run(["--ckpt-every", "3"], tmp_path / "ref")
    assert ref.returncode == 0, ref.stderr
    killed = _run(["--ckpt-every", "3"], tmp_path / "run", env={**ENV, "EV2_KILL_AT_STEP": "11"})
    assert killed.returncode == -signal.SIGKILL  # killed in epoch 2 (steps 9-16), after the step-9 checkpoint
    assert ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 9
    resumed = _run(["--ckpt-every", "3"], tmp_path / "run")
    assert resumed.returncode == 0, resumed.stderr
    assert any(r.get("event") == "resume" and r["step"] == 9 for r in _log(tmp_path / "run"))
    a = torch.load(tmp_path / "ref" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "run" / "model.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    state = ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert state["step"] == 16 and {"optimizer", "scheduler", "ema", "scaler", "rng", "data_order"} <= set(state)


def test_checkpoint_interrupted_while_writing_keeps_the_previous(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    ckpt.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})

    def dies_halfway(obj, f):  # write some bytes, then the process "dies"
        f.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    monkeypatch.setattr(ckpt.torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "step": 2})
    monkeypatch.undo()
    state = ckpt.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    ckpt.save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "step": 2})  # the stale .tmp is simply overwritten
    assert ckpt.load_checkpoint(path)["step"] == 2


def test_corrupt_checkpoint_is_one_line_error(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(WeightsError, match="corrupt, truncated"):
        ckpt.load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    r = _run(["--max-steps", "2"], tmp_path / "run")
    assert r.returncode == 2 and r.stderr.startswith("error: checkpoint") and len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == b"not a checkpoint at all"  # nothing overwritten


def test_mismatched_checkpoint_is_one_line_error(tmp_path):
    assert _run(["--max-steps", "2"], tmp_path / "run").returncode == 0
    r = _run(["--max-steps", "2", "--model", "efficientnetv2_b0"], tmp_path / "run")
    assert r.returncode == 2 and "was written for model='efficientnetv2_cifar'" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path):
    cfg = make_config("smoke", data="synthetic:256", image_size=16, batch_size=32, epochs=2, lr=1e30, ckpt_every=1,
                      progress=False, out=str(tmp_path / "nan"))
    with pytest.raises(TrainingError, match=r"(loss became nan|NaN/inf).*last good checkpoint"):
        train(cfg)
    state = ckpt.load_checkpoint(tmp_path / "nan" / "checkpoint.pt")
    assert state["step"] >= 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_torchrun_two_processes_matches_one_process(tmp_path):
    # Dropout off so that only BatchNorm statistics (computed per process) can differ.
    args = ["--max-steps", "8", "--lr", "0.02", "--data", "synthetic:512", "--batch-size", "64", "--dropout", "0",
            "--drop-path-rate", "0"]
    one = _run(args, tmp_path / "one")
    assert one.returncode == 0, one.stderr
    two = _run(args, tmp_path / "two", cmd=(str(Path(PY).parent / "torchrun"), "--nproc_per_node=2",
                                            "--master-port=29533", "-m", "ev2lib.train"))
    assert two.returncode == 0, two.stderr[-2000:]
    l1 = [r["loss"] for r in _log(tmp_path / "one") if "loss" in r]
    l2 = [r["loss"] for r in _log(tmp_path / "two") if "loss" in r]
    assert len(l1) == len(l2) == 8
    # Same init, same global batches with the same augmented pixels: the curves have the same shape.
    assert abs(l1[0] - l2[0]) < 0.1
    assert sum(l1[-3:]) / 3 < l1[0] - 1.0 and sum(l2[-3:]) / 3 < l2[0] - 1.0
    assert max(abs(a - b) for a, b in zip(l1, l2)) < 0.3
    assert next(r for r in _log(tmp_path / "two") if r.get("event") == "eval")["step"] == 8


def test_rmsprop_tf_semantics():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = RMSpropTF([p], lr=0.1, rho=0.9, momentum=0.9, eps=1e-3)
    ms, mom, w = torch.ones(2), torch.zeros(2), p.detach().clone()
    for g in (torch.tensor([0.5, 1.0]), torch.tensor([-1.0, 2.0])):
        p.grad = g.clone()
        opt.step()
        ms = 0.9 * ms + 0.1 * g * g  # starts at 1
        mom = 0.9 * mom + 0.1 * g / torch.sqrt(ms + 1e-3)  # eps inside the root, lr inside the buffer
        w = w - mom
    assert torch.allclose(p.detach(), w)


def test_lr_schedules():
    cfg = make_config("smoke", epochs=10, warmup_epochs=1, schedule="exponential", decay_rate=0.97, decay_epochs=2.4)
    assert lr_factor(0, cfg, 10) == 0 and lr_factor(5, cfg, 10) == 0.5
    assert lr_factor(10, cfg, 10) == 1.0 and lr_factor(24, cfg, 10) == pytest.approx(0.97)  # counts from step 0
    assert lr_factor(99, cfg, 10) == pytest.approx(0.97 ** 4)
    cos = make_config("smoke", epochs=10, warmup_epochs=0, schedule="cosine")
    assert lr_factor(50, cos, 10) == pytest.approx(0.5) and lr_factor(100, cos, 10) == pytest.approx(0.0)


def test_weight_decay_excludes_bn_and_biases():
    from ev2lib import create_model

    m = create_model("efficientnetv2_cifar", num_classes=10)
    decay, no_decay = param_groups(m, 1e-5)
    bn = {id(x) for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d) for x in mod.parameters()}
    assert bn <= {id(x) for x in no_decay["params"]} and not bn & {id(x) for x in decay["params"]}
    assert id(m.classifier[1].bias) in {id(x) for x in no_decay["params"]}
    assert id(m.classifier[1].weight) in {id(x) for x in decay["params"]}


def test_bad_config_is_one_line_error():
    with pytest.raises(ConfigError, match="unknown profile"):
        make_config("huge")
    with pytest.raises(ConfigError, match="unknown TrainConfig"):
        make_config("smoke", learning_rate=1)
    r = subprocess.run([PY, "-m", "ev2lib.train", "--data", "imagenet21k", "--out", "/tmp/unused"],
                       capture_output=True, text=True, env=ENV, timeout=120)
    assert r.returncode == 2 and r.stderr.startswith("error: unknown dataset 'imagenet21k'")


def test_progressive_schedule_hook_sets_stage_and_checkpoint_records_it(tmp_path):
    class Schedule:  # what issue 6's progressive learning passes in
        def settings_at(self, epoch):
            return {"image_size": 16 + 8 * epoch, "dropout": 0.1 * (epoch + 1), "randaug_magnitude": 5 * epoch,
                    "mixup_alpha": 0.2 * epoch, "cutmix_alpha": 0.0}

    seen = []

    class Spy:
        def on_epoch_end(self, epoch, metrics, model):
            seen.append((metrics["stage"]["image_size"], model.dropout))

    cfg = make_config("smoke", data="synthetic:128", image_size=16, batch_size=32, epochs=2, progress=False,
                      eval_subset=64, out=str(tmp_path / "prog"))
    train(cfg, schedule=Schedule(), callbacks=[Spy()])
    assert seen == [(16, pytest.approx(0.1)), (24, pytest.approx(0.2))]
    stage = ckpt.load_checkpoint(tmp_path / "prog" / "checkpoint.pt")["stage"]
    assert stage["epoch"] == 1 and stage["image_size"] == 24 and stage["mixup_alpha"] == pytest.approx(0.2)
