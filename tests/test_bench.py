"""ev2lib.bench: timing against known durations, statistics, memory and batch search, the CLI."""
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from ev2lib import bench, create_model, results
from ev2lib.errors import ConfigError
from ev2lib.summary import count_macs, count_params


def test_time_calls_measures_known_durations_and_skips_warmup():
    calls = []

    def fn():  # warm-up calls are slow (0.08 s), timed calls 0.02 s: a timed warm-up would show
        time.sleep(0.08 if len(calls) < 2 else 0.02)
        calls.append(1)

    times = bench.time_calls(fn, repeats=4, warmup=2)
    assert len(times) == 4 and len(calls) == 6
    assert all(0.02 <= t < 0.06 for t in times), times


def test_spread_of_known_values():
    s = bench.spread([1.0, 2.0, 3.0, 4.0, 100.0])
    assert s == {"median": 3.0, "q25": 2.0, "q75": 4.0, "min": 1.0, "max": 100.0}
    assert bench.spread([5.0]) == {"median": 5.0, "q25": 5.0, "q75": 5.0, "min": 5.0, "max": 5.0}


class _Sleep(nn.Module):
    def __init__(self, seconds):
        super().__init__()
        self.seconds, self.weight = seconds, nn.Parameter(torch.ones(1))

    def forward(self, x):
        time.sleep(self.seconds)
        return x * self.weight


def test_stage_times_attributes_time_to_the_right_stage():
    model = nn.Module()
    model.features = nn.Sequential(_Sleep(0.01), _Sleep(0.05), _Sleep(0.025))
    ms = bench.stage_times(model, 8, batch_size=2, repeats=3)
    assert len(ms) == 3
    for got, slept in zip(ms, (10, 50, 25)):
        assert slept <= got < slept + 20, ms


def test_train_step_updates_weights():
    model = create_model("efficientnetv2_cifar", num_classes=10)
    before = model.classifier[1].weight.detach().clone()
    bench.make_train_step(model, 2, 32)()
    assert not torch.equal(before, model.classifier[1].weight)


def test_benchmark_reports_what_it_measured(monkeypatch):
    """Known step times in, the exact img/s statistics, memory estimate and largest batch out."""
    step_times = iter([[0.5, 0.25, 1.0], [0.1, 0.1, 0.1], [0.004, 0.002, 0.003]])  # train, infer, latency
    monkeypatch.setattr(bench, "time_calls", lambda fn, repeats, warmup, device: next(step_times))
    model = create_model("efficientnetv2_cifar", num_classes=10)
    per_image, fixed = bench.cpu_memory_estimate(model, 32)
    r = bench.benchmark(model, 32, 2, repeats=3, warmup=1, find_max_batch=True, memory_budget=fixed + 5 * per_image)
    assert r.train_img_s == {"median": 4.0, "q25": 3.0, "q75": 6.0, "min": 2.0, "max": 8.0}  # 2 images / [0.5, 0.25, 1]
    assert r.infer_img_s["median"] == pytest.approx(20.0) and r.latency_ms["median"] == pytest.approx(3.0)
    assert r.peak_memory_bytes == fixed + 2 * per_image and r.memory_kind.startswith("cpu estimate")
    assert r.max_batch == 5
    assert (r.params, r.macs) == (count_params(model), count_macs(model, 32))
    assert "train 4.0 img/s (IQR 3.0-6.0, min 2.0, max 8.0); infer 20.0 img/s, latency 3.00 ms" in r.line()
    assert "largest batch 5" in r.line()


def test_max_batch_search_is_bounded_and_exact():
    model = create_model("efficientnetv2_cifar", num_classes=10)
    per_image, fixed = bench.cpu_memory_estimate(model, 32)
    assert per_image > 0 and fixed == 3 * 4 * count_params(model)
    budget = fixed + 37 * per_image
    assert bench.max_batch_size(model, 32, memory_budget=budget) == 37  # the largest that fits, exactly
    assert bench.max_batch_size(model, 32, memory_budget=budget - 1) == 36
    assert bench.max_batch_size(model, 32, memory_budget=budget, limit=16) == 16
    assert bench.max_batch_size(model, 32, memory_budget=fixed) == 0


def test_cpu_memory_estimate_scales_with_image_area():
    model = create_model("efficientnetv2_cifar", num_classes=10)
    small, _ = bench.cpu_memory_estimate(model, 32)
    large, _ = bench.cpu_memory_estimate(model, 64)
    assert large == pytest.approx(4 * small, rel=0.02)  # activations grow with H x W


def test_bad_dtype_and_tiny_image():
    with pytest.raises(ConfigError):
        bench.benchmark("efficientnetv2_cifar", 32, 2, dtype="fp8")
    with pytest.raises(ValueError):
        bench.benchmark("efficientnetv2_s", 16, 1)


def test_cli_saves_a_valid_record(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("EV2_RESULTS_DIR", str(tmp_path))
    runs = bench.main(["--model", "efficientnetv2_cifar", "--image-size", "32", "--batch-size", "2", "--repeats", "2",
                       "--warmup", "1", "--no-inference", "--device", "cpu", "--fused-stages", "none", "3-4",
                       "--save", "t", "--profile", "cpu-reference"])
    assert [r["model"] for r in runs] == ["efficientnetv2_cifar", "efficientnetv2_cifar_fused3-4"]
    assert "train" in capsys.readouterr().out
    rec = results.load("t", directory=tmp_path)
    assert rec["data"]["runs"] == runs  # every measured number survives the JSON round trip
    assert rec["profile"] == "cpu-reference" and rec["command"].startswith("python -m ev2lib.bench")


def test_cli_errors_are_one_line():
    p = subprocess.run([sys.executable, "-m", "ev2lib.bench", "--model", "nope", "--device", "cpu"],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and p.stderr.strip().startswith("error: unknown model") and "Traceback" not in p.stderr
    with pytest.raises(ConfigError, match="--profile"):
        bench.main(["--save", "x", "--device", "cpu"])
    with pytest.raises(ConfigError, match="--batch-size"):
        bench.main(["--batch-size", "0", "--device", "cpu"])


def test_every_kind_of_out_of_memory_failure_means_the_batch_does_not_fit():
    from ev2lib.bench import is_out_of_memory

    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert is_out_of_memory(RuntimeError("cuDNN error: CUDNN_STATUS_ALLOC_FAILED"))
    assert is_out_of_memory(RuntimeError("GET was unable to find an engine to execute this computation"))
    assert not is_out_of_memory(RuntimeError("Expected all tensors to be on the same device"))
    assert not is_out_of_memory(ValueError("out of memory"))  # not a runtime failure of the step


def test_a_t4_measures_in_fp16_and_an_ampere_gpu_in_bf16(monkeypatch):
    """The chapters' precision is the training loop's: a GPU of compute capability 7.5 (a T4) emulates bf16, so
    fp16; from 8.0 on, bf16 (torch.cuda.is_bf16_supported would say yes to both, counting emulation)."""
    from ev2lib import bench

    for capability, want in (((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")):
        native = capability >= (8, 0)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, c=capability: c)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True, n=native: n or including_emulation)
        assert bench.precision("cuda") == want, capability
    monkeypatch.setattr("ev2lib.recipe.cpu_has_native_bf16", lambda: False)
    assert bench.precision("cpu") == "fp32"
