"""The training engine: exact resume after SIGKILL, atomic checkpoints, DDP equal to one process, every config field
used, precision, EMA, optimizer and LR schedule, and one-line errors."""
import dataclasses
import math
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import ENV, read_log, train_subprocess

from ev2lib import recipe
from ev2lib import train as T
from ev2lib.errors import ConfigError, TrainingError, WeightsError
from ev2lib.recipe import RMSpropTF, lr_factor, param_groups
from ev2lib.train import make_config, train

PY = sys.executable
# A tiny deterministic run: generated data, 16 px, 8 steps per epoch.
TINY = dict(data="synthetic:256", image_size=16, batch_size=32, epochs=2, lr=0.05, progress=False, deterministic=True,
            log_every=1, eval_subset=64)


def _cli(args, out, cmd=(PY, "-m", "ev2lib.train")):
    flags = [x for k, v in TINY.items() for x in ("--" + k.replace("_", "-"), str(v).lower())]
    return subprocess.run([*cmd, *flags, "--out", str(out), *args], capture_output=True, text=True, env=ENV, timeout=300)


def _same_weights(a, b) -> bool:
    a, b = (torch.load(p, weights_only=True)["model"] for p in (a, b))
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path):
    fields = {**TINY, "ckpt_every": 3, "ema_decay": 0.9, "randaug_magnitude": 5, "mixup_alpha": 0.2}
    ref = train_subprocess({**fields, "out": str(tmp_path / "ref")})
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = train_subprocess({**fields, "out": str(tmp_path / "run")}, kill_at=11)
    assert killed.returncode == -signal.SIGKILL  # killed in epoch 2 (steps 9-16), after the step-9 checkpoint
    assert T.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 9
    resumed = train_subprocess({**fields, "out": str(tmp_path / "run")})
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert any(r.get("event") == "resume" and r["step"] == 9 for r in read_log(tmp_path / "run"))
    for name in ("model.pt", "model_ema.pt"):  # the weights and their EMA
        assert _same_weights(tmp_path / "ref" / name, tmp_path / "run" / name), name


def test_checkpoint_interrupted_while_writing_keeps_the_previous(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    T.save_checkpoint(path, {"model": {"w": torch.ones(3)}, "step": 1})

    def dies_halfway(obj, f):  # write some bytes, then the process "dies"
        f.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", dies_halfway)
    with pytest.raises(KeyboardInterrupt):
        T.save_checkpoint(path, {"model": {"w": torch.zeros(3)}, "step": 2})
    monkeypatch.undo()
    state = T.load_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["model"]["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary file left behind


def test_corrupt_checkpoint_is_one_line_error(tmp_path):
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "checkpoint.pt").write_bytes(b"not a checkpoint at all")
    r = _cli(["--max-steps", "2"], tmp_path / "run")
    assert r.returncode == 2 and r.stderr.startswith("error: checkpoint") and "corrupt, truncated" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    assert (tmp_path / "run" / "checkpoint.pt").read_bytes() == b"not a checkpoint at all"  # nothing overwritten


def test_mismatched_checkpoint_is_one_line_error(tmp_path):
    assert _cli(["--max-steps", "2"], tmp_path / "run").returncode == 0
    r = _cli(["--max-steps", "2", "--batch-size", "16"], tmp_path / "run")
    assert r.returncode == 2 and "was written for batch_size=32" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_nan_loss_stops_with_clear_message_and_keeps_last_good_checkpoint(tmp_path):
    cfg = make_config("smoke", **{**TINY, "lr": 1e30, "ckpt_every": 1, "out": str(tmp_path / "nan")})
    with pytest.raises(TrainingError, match=r"(loss became nan|NaN/inf).*last good checkpoint"):
        train(cfg)
    state = T.load_checkpoint(tmp_path / "nan" / "checkpoint.pt")
    assert state["step"] >= 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


@pytest.mark.slow
def test_torchrun_two_processes_equal_one_process_with_augmentation_on(tmp_path):
    """2-process gloo DDP with RandAugment, mixup and CutMix on trains on the pixels and labels of one process.

    BatchNorm normalises each process's batch by itself (SyncBatchNorm needs a GPU), so the one-process run splits
    its batch the same way (``micro_batches=2``, gradients accumulated). Dropout and stochastic depth are off:
    their masks are drawn per process."""
    args = ["--max-steps", "8", "--batch-size", "64", "--dropout", "0", "--drop-path-rate", "0", "--amp", "none",
            "--randaug-magnitude", "10", "--mixup-alpha", "0.8", "--cutmix-alpha", "1.0"]
    one = _cli([*args, "--micro-batches", "2"], tmp_path / "one")
    assert one.returncode == 0, one.stderr[-2000:]
    two = _cli(args, tmp_path / "two", cmd=(str(Path(PY).parent / "torchrun"), "--nproc_per_node=2",
                                            "--master-port=29533", "-m", "ev2lib.train"))
    assert two.returncode == 0, two.stderr[-2000:]
    l1 = [r["loss"] for r in read_log(tmp_path / "one") if "loss" in r]
    l2 = [r["loss"] for r in read_log(tmp_path / "two") if "loss" in r]
    assert len(l1) == len(l2) == 8
    assert max(abs(a - b) for a, b in zip(l1, l2)) < 1e-4, (l1, l2)
    w1, w2 = (torch.load(tmp_path / d / "model.pt", weights_only=True)["model"] for d in ("one", "two"))
    for k, v in w1.items():
        if "running" not in k and v.is_floating_point():  # BN running statistics: rank 0's alone under DDP
            assert torch.allclose(v, w2[k], rtol=1e-4, atol=1e-5), k


def test_rmsprop_tf_matches_timm():
    from timm.optim import RMSpropTF as TimmRMSpropTF

    torch.manual_seed(0)
    x, y = torch.randn(64, 8), torch.randn(64, 1)
    models = [torch.nn.Linear(8, 1) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    start = models[0].weight.detach().clone()
    opts = [RMSpropTF(models[0].parameters(), lr=0.01, rho=0.9, momentum=0.9, eps=1e-3, weight_decay=1e-4),
            TimmRMSpropTF(models[1].parameters(), lr=0.01, alpha=0.9, momentum=0.9, eps=1e-3, weight_decay=1e-4)]
    for _ in range(20):
        for m, opt in zip(models, opts):
            opt.zero_grad()
            torch.nn.functional.mse_loss(m(x), y).backward()
            opt.step()
    assert (models[0].weight - start).abs().max() > 1e-3  # it trained
    for a, b in zip(models[0].parameters(), models[1].parameters()):
        assert torch.allclose(a, b, rtol=1e-5, atol=1e-7)


def test_rmsprop_and_exponential_decay_through_the_loop(tmp_path):
    cfg = make_config("smoke", **{**TINY, "optimizer": "rmsprop", "lr": 0.01, "lr_schedule": "exponential",
                                  "warmup_epochs": 0.25, "decay_rate": 0.5, "decay_epochs": 0.5, "out": str(tmp_path)})
    seen = []

    class Spy:
        def on_step_end(self, run):
            seen.append((run.step, run.optimizer.param_groups[0]["lr"], type(run.optimizer).__name__))

    train(cfg, callbacks=[Spy()])
    assert all(opt == "RMSpropTF" for _, _, opt in seen) and len(seen) == 16
    for step, lr, _ in seen:  # after step s the optimizer holds the LR of step s
        assert lr == pytest.approx(0.01 * lr_factor(step, cfg, 8))
    assert seen[-1][1] == pytest.approx(0.01 * 0.5 ** 4)  # staircase: x0.5 every 4 steps from step 0; 16 = 4 x 4


def test_ema_follows_the_weights_with_its_decay(tmp_path):
    cfg = make_config("smoke", **{**TINY, "ema_decay": 0.8, "max_steps": 6, "out": str(tmp_path)})
    snapshots, ema = [], {}

    class Spy:
        def on_step_end(self, run):
            snapshots.append({k: v.detach().clone() for k, v in run.model.named_parameters()})
            ema.update({k: v.detach().clone() for k, v in run.ema.module.named_parameters()})

    train(cfg, callbacks=[Spy()])
    expected = dict(snapshots[0])  # the first update copies the weights; then ema = d * ema + (1 - d) * w
    for snap in snapshots[1:]:
        expected = {k: 0.8 * expected[k] + 0.2 * snap[k] for k in expected}
    assert all(torch.allclose(ema[k], expected[k], atol=1e-6) for k in expected)
    assert not torch.allclose(ema["classifier.1.weight"], snapshots[-1]["classifier.1.weight"])


@pytest.mark.parametrize("amp,dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16), ("none", torch.float32)])
def test_mixed_precision_runs_the_forward_in_that_dtype(tmp_path, amp, dtype):
    cfg = make_config("smoke", **{**TINY, "amp": amp, "max_steps": 3, "out": str(tmp_path)})
    seen = []

    class Spy:
        def on_step_end(self, run):
            if not seen:
                run.model.features[1].register_forward_hook(lambda m, i, o: seen.append(o.dtype))

    summary = train(cfg, callbacks=[Spy()])
    assert seen and seen[0] == dtype and summary["config"]["amp"] == amp
    assert all(math.isfinite(r["loss"]) for r in read_log(tmp_path) if "loss" in r)


def test_amp_auto_picks_bf16_only_where_the_cpu_runs_it(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(recipe, "cpu_has_native_bf16", lambda: True)
    assert recipe.resolve_amp("auto", cpu) == "bf16"
    monkeypatch.setattr(recipe, "cpu_has_native_bf16", lambda: False)
    assert recipe.resolve_amp("auto", cpu) == "none" and recipe.resolve_amp("bf16", cpu) == "bf16"
    with pytest.raises(ConfigError, match="amp must be"):
        recipe.resolve_amp("fp8", cpu)


# Each field, changed from the TINY run's value, must change the first steps' losses / learning rates or the
# evaluation; a change that raises instead fails the test. Some fields only act under another setting: both runs
# get that setting. "init" starts from a checkpoint of the base run (made in the test).
CHANGES = {
    "model": ("efficientnetv2_cifar_half", {}),
    "data": ("synthetic:512", {}), "epochs": (3, {}), "batch_size": (16, {}), "micro_batches": (2, {}),
    "image_size": (24, {}), "eval_size": (24, {}), "crop": ("rrc", {}), "augment_on": ("device", {}), "optimizer": ("rmsprop", {}), "lr": (0.1, {}),
    "momentum": (0.5, {}), "nesterov": (False, {}), "weight_decay": (0.05, {}), "lr_schedule": ("constant", {}),
    "warmup_epochs": (0.5, {}), "decay_rate": (0.5, {"lr_schedule": "exponential", "decay_epochs": 0.5}),
    "decay_epochs": (0.5, {"lr_schedule": "exponential"}), "label_smoothing": (0.3, {}), "ema_decay": (0.9, {}),
    "dropout": (0.5, {}), "drop_path_rate": (0.3, {}), "randaug_magnitude": (5.0, {}), "mixup_alpha": (0.5, {}),
    "randaug_fixed_side": (64, {"randaug_magnitude": 10.0}),
    "cutmix_alpha": (1.0, {}), "amp": ("fp16", {}), "grad_clip": (0.1, {}), "train_subset": (64, {}),
    "val_images": (32, {}),
    "eval_subset": (32, {}), "max_steps": (5, {}), "eval_every": (2, {}), "seed": (1, {}),
    "init": ("<checkpoint>", {}),
    "freeze": ("0-2", {}), "classes": ("0-4", {}), "steps": (5, {}), "cutout": (0.5, {}),
}
NO_EFFECT = {  # fields that cannot change the numbers, and why
    "out": "where files go", "progress": "the tqdm bar", "log_every": "how often steps are logged",
    "ckpt_every": "how often checkpoints are written (resume is tested bit-identical)",
    "channels_last": "memory layout only, the same arithmetic", "compile": "the same graph, compiled",
    "deterministic": "picks deterministic kernels; the CPU kernels used here already are",
    "num_workers": "worker processes for file datasets; in-memory data has none",
    "device": "'auto' and 'cpu' are the same device on a machine without a GPU (a missing one: its own test)",
}


def _signature(fields, tmp_path, name):
    cfg = make_config("smoke", **{**TINY, "data": "synthetic:128", "deterministic": False, **fields,
                                  "out": str(tmp_path / name)})
    train(cfg)
    return [(r.get("step"), r.get("loss"), r.get("lr"), r.get("test_acc"), r.get("test_loss"), r.get("ema_test_acc"))
            for r in read_log(tmp_path / name) if "loss" in r or r.get("event") == "eval"]


@pytest.mark.slow
def test_no_train_config_field_is_silently_ignored(tmp_path):
    fields = {f.name for f in dataclasses.fields(T.TrainConfig)}
    assert fields == set(CHANGES) | set(NO_EFFECT), "a new TrainConfig field needs an entry in CHANGES or NO_EFFECT"
    base_cache, unused = {}, []
    for name, (value, context) in CHANGES.items():
        key = tuple(sorted(context.items()))
        if key not in base_cache:
            base_cache[key] = _signature(context, tmp_path, f"base{len(base_cache)}")
        if value == "<checkpoint>":
            value = str(tmp_path / "base0" / "model.pt")  # the base run's weights, for a new classifier
        if _signature({**context, name: value}, tmp_path, name) == base_cache[key]:
            unused.append(name)
    assert not unused, f"fields that change nothing: {unused}"


def test_lr_schedules():
    cfg = make_config("smoke", epochs=10, warmup_epochs=1, lr_schedule="exponential", decay_rate=0.97, decay_epochs=2.4)
    assert lr_factor(0, cfg, 10) == 0 and lr_factor(5, cfg, 10) == 0.5
    assert lr_factor(10, cfg, 10) == 1.0 and lr_factor(24, cfg, 10) == pytest.approx(0.97)  # counts from step 0
    assert lr_factor(99, cfg, 10) == pytest.approx(0.97 ** 4)
    cos = make_config("smoke", epochs=10, warmup_epochs=0, lr_schedule="cosine")
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


def test_progressive_schedule_sets_each_phase_and_checkpoint_records_it(tmp_path):
    from ev2lib.progressive import ProgressiveSchedule

    schedule = ProgressiveSchedule(2, 2, image_size=(16, 24), randaug=(0, 5), mixup=(0, 0.2), dropout=(0.1, 0.2),
                                   size_multiple=4)
    seen = []

    class Spy:
        def on_epoch_end(self, run, metrics):
            seen.append((run.data.augmentation, run.model.dropout, metrics["phase"]["index"]))

    cfg = make_config("smoke", **{**TINY, "data": "synthetic:128", "epochs": 2, "out": str(tmp_path)})
    train(cfg, progressive=schedule, callbacks=[Spy()])
    for (aug, dropout, index), phase in zip(seen, schedule.phases()):
        assert index == phase.index and dropout == pytest.approx(phase.dropout)
        assert (aug["image_size"], aug["randaug_magnitude"], aug["mixup_alpha"]) == pytest.approx(
            (phase.image_size, phase.randaug_magnitude, phase.mixup_alpha))
    assert len(seen) == 2 and seen[1][0]["image_size"] == 24
    assert T.load_checkpoint(tmp_path / "checkpoint.pt")["phase"]["image_size"] == 24


def test_missing_checkpoint_is_one_line_error(tmp_path):
    with pytest.raises(WeightsError, match="does not exist"):
        T.load_checkpoint(tmp_path / "nope.pt")


def test_validation_split_is_scored_every_epoch_and_test_only_at_the_end(tmp_path):
    cfg = make_config("smoke", **{**TINY, "data": "synthetic:160", "val_images": 32, "out": str(tmp_path)})
    history = train(cfg)["history"]
    assert [("val_acc" in h, "test_acc" in h) for h in history] == [(True, False), (True, True)]


# ----------------------------------------------------------------------------------------------------------
# Resuming: every rank's random state, and the training time


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _torchrun(fields, tmp_path, kill_at=None):
    """``train(make_config("smoke", **fields))`` on 2 gloo processes; each kills itself after step ``kill_at``."""
    child = tmp_path / "child.py"
    child.write_text(_CHILD_DDP)
    import json

    cmd = [str(Path(PY).parent / "torchrun"), "--nproc_per_node=2", f"--master-port={_free_port()}", str(child),
           json.dumps({**fields, "kill_at": kill_at})]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=300)


_CHILD_DDP = """
import json, os, sys, torch
from ev2lib.train import make_config, train
args = json.loads(sys.argv[1])
kill_at = args.pop("kill_at")

class KillAt:
    def on_step_end(self, run):
        if run.step == kill_at:
            os.kill(os.getpid(), 9)

torch.set_num_threads(1)
train(make_config("smoke", **args), callbacks=[KillAt()] if kill_at else [])
"""


@pytest.mark.slow
def test_ddp_with_dropout_killed_and_resumed_equals_the_uninterrupted_run_bit_for_bit(tmp_path):
    """Two processes with dropout and stochastic depth on: after a SIGKILL and a rerun, every weight (and every BN
    statistic) equals the uninterrupted two-process run's. Each rank resumes its own random state: restored from
    rank 0's, the ranks would draw the same masks after the resume and the weights would differ."""
    fields = {**TINY, "batch_size": 64, "epochs": 3, "ckpt_every": 3, "dropout": 0.5, "drop_path_rate": 0.5,
              "amp": "none", "randaug_magnitude": 5}
    ref = _torchrun({**fields, "out": str(tmp_path / "ref")}, tmp_path)
    assert ref.returncode == 0, ref.stderr[-3000:]
    killed = _torchrun({**fields, "out": str(tmp_path / "run")}, tmp_path, kill_at=7)
    assert killed.returncode != 0 and T.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["step"] == 6
    assert len(T.load_checkpoint(tmp_path / "run" / "checkpoint.pt")["rng"]) == 2  # one random state per rank
    resumed = _torchrun({**fields, "out": str(tmp_path / "run")}, tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert any(r.get("event") == "resume" and r["step"] == 6 for r in read_log(tmp_path / "run"))
    assert _same_weights(tmp_path / "ref" / "model.pt", tmp_path / "run" / "model.pt")


@pytest.mark.slow
def test_training_time_adds_up_across_a_resume(tmp_path):
    fields = {**TINY, "epochs": 4, "data": "synthetic:512", "ckpt_every": 0}
    ref = train_subprocess({**fields, "out": str(tmp_path / "ref")})
    assert ref.returncode == 0, ref.stderr[-2000:]
    killed = train_subprocess({**fields, "out": str(tmp_path / "run")}, kill_at=50)  # in the last of 4 epochs
    assert killed.returncode == -signal.SIGKILL
    assert train_subprocess({**fields, "out": str(tmp_path / "run")}).returncode == 0
    t_ref, t_run = (read_log(tmp_path / d)[-2]["train_seconds"] for d in ("ref", "run"))
    assert read_log(tmp_path / "run")[-2]["event"] == "eval"
    assert 0.6 < t_run / t_ref < 1.67, (t_run, t_ref)  # counted only after the resume it would be ~0.25


# ----------------------------------------------------------------------------------------------------------
# One line for what cannot run


def test_a_device_this_machine_lacks_is_one_line(tmp_path):
    for device in ("cuda", "cuda:1", "tpu"):
        if device.startswith("cuda") and torch.cuda.device_count() > int(device.partition(":")[2] or 0):
            continue
        r = _cli(["--device", device, "--max-steps", "1"], tmp_path / device.replace(":", ""))
        assert r.returncode == 2 and r.stderr.startswith("error: ") and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert not (tmp_path / device.replace(":", "") / "checkpoint.pt").exists()  # nothing trained


def test_a_schedule_and_a_conflicting_explicit_value_are_one_line(tmp_path):
    r = _cli(["--progressive", "paper", "--randaug-magnitude", "5", "--dropout", "0.1"], tmp_path / "a")
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
    assert "sets randaug_magnitude, dropout per phase" in r.stderr and "--randaug-magnitude --dropout" in r.stderr
    r = _cli(["--progressive", "official", "--dropout", "0.1", "--epochs", "4"], tmp_path / "b")  # official: fixed dropout
    assert r.returncode == 2 and "sets dropout per phase" in r.stderr


def test_steps_drive_the_schedule_over_the_run_they_make(tmp_path):
    """``--steps`` past ``--epochs`` epochs: the schedule spans the run's own epochs (30 steps of 8 an epoch: 4)."""
    r = _cli(["--progressive", "paper", "--progressive-sizes", "16", "24", "--steps", "30", "--epochs", "1"],
             tmp_path / "run")
    assert r.returncode == 0, r.stderr[-2000:]
    sizes = [e["phase"]["image_size"] for e in read_log(tmp_path / "run") if e.get("event") == "eval"]
    assert sizes == [16, 16, 24, 24], sizes  # Algorithm 1 over 4 epochs, sizes rounded to multiples of 8
    assert read_log(tmp_path / "run")[-2]["step"] == 30
