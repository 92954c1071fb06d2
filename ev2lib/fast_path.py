"""The fast path: how fast ev2lib trains EfficientNetV2-S on one accelerator, next to torchvision's V2-S.

The paper's headline is training speed (§1, Figure 1; §3.2 names the settings that decide it on an accelerator:
image size, the operators' use of the hardware, and the batch). A reproduction should train at least as fast as
the reference PyTorch implementation. Three settings of the same training step (forward, cross-entropy, backward,
SGD with momentum; :func:`ev2lib.bench.make_train_step`) are measured side by side, in one process on one device,
on the same batch of random images:

* ``ev2lib``: ev2lib's ``efficientnetv2_s`` with bf16 autocast, channels_last and ``torch.compile`` (what
  ``ev2lib.train`` runs with ``amp="bf16"``, ``channels_last=True``, ``compile=True``);
* ``torchvision eager fp32``: torchvision's ``efficientnet_v2_s`` as a reader first runs it;
* ``torchvision, same settings``: torchvision's with the same three settings as ev2lib's.

The input pipeline is measured beside them (:func:`data_time`): a batch of 32 px uint8 images already on the
device, augmented as the training recipe does (random resized crop to the step's size, flip, RandAugment 10,
mixup + CutMix; :mod:`ev2lib.device_augment`). Its time over (its time + the ev2lib step's) is the data share of a
training step (issue 12's goal: under 10 % on the GPU).

The ratios of their median throughputs are the result (issue 12's goals: at least 2.0x the eager torchvision step and
at least 1.0x torchvision with the same settings). ``torch.compile`` spends its time in the first steps: that time is
reported on its own (``compile_seconds``) and never enters a throughput.

    python -m ev2lib.fast_path --device cuda --save fast_path_gpu --profile colab
    python -m ev2lib.fast_path --device cpu --batch-size 2 --image-size 64 --no-compile   # a check that it runs
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from .bench import DTYPES, make_train_step, spread, time_calls
from .errors import ConfigError, cli_main

SETTINGS = (  # name, implementation, dtype, channels_last, compile
    ("ev2lib", "ev2lib", "bf16", True, True),
    ("torchvision eager fp32", "torchvision", "fp32", False, False),
    ("torchvision, same settings", "torchvision", "bf16", True, True),
)


def build(implementation: str, num_classes: int = 1000) -> torch.nn.Module:
    """EfficientNetV2-S from ``"ev2lib"`` or ``"torchvision"``, randomly initialised (no download)."""
    if implementation == "ev2lib":
        from . import create_model

        return create_model("efficientnetv2_s", num_classes=num_classes)
    if implementation == "torchvision":
        import torchvision

        return torchvision.models.efficientnet_v2_s(weights=None, num_classes=num_classes)
    raise ConfigError(f"implementation must be 'ev2lib' or 'torchvision', got {implementation!r}")


def measure(implementation: str, dtype: str, channels_last: bool, compile: bool, batch_size: int, image_size: int,
            device: str, repeats: int = 20, warmup: int = 5) -> dict:
    """Training throughput of one setting: images/s over ``repeats`` timed steps after ``warmup`` untimed ones, and
    the seconds of the first step (where ``torch.compile`` compiles)."""
    if dtype not in DTYPES:
        raise ConfigError(f"dtype must be one of {list(DTYPES)}, got {dtype!r}")
    torch.manual_seed(0)
    model = build(implementation).to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    net = torch.compile(model) if compile else model
    step = make_train_step(net, batch_size, image_size, dtype=dtype, channels_last=channels_last)
    if torch.device(device).type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    first = time_calls(step, repeats=1, warmup=0, device=device)[0]  # compiles, if asked to
    times = time_calls(step, repeats=repeats, warmup=max(warmup - 1, 0), device=device)
    img_s = spread([batch_size / t for t in times])
    out = {"implementation": implementation, "dtype": dtype, "channels_last": channels_last, "compile": compile,
           "batch_size": batch_size, "image_size": image_size, "train_img_s": img_s,
           "first_step_seconds": first, "compile_seconds": max(first - batch_size / img_s["median"], 0.0) if compile else 0.0}
    if torch.device(device).type == "cuda":
        out["peak_memory_bytes"] = torch.cuda.max_memory_allocated(device)
    del step, net, model
    if torch.device(device).type == "cuda":
        torch.cuda.empty_cache()
    return out


def data_time(batch_size: int, image_size: int, device: str, repeats: int = 20, warmup: int = 3,
              source_size: int = 32, pool: int = 4096) -> dict:
    """Seconds per batch of the device-resident input pipeline: pick ``batch_size`` of ``pool`` uint8
    (3, source_size, source_size) images on ``device`` (CIFAR-10 kept on the GPU), random resized crop to
    ``image_size``, flip, RandAugment 10, then mixup (alpha 0.8) on half the batch and CutMix (1.0) on the other."""
    from . import device_augment
    from .data import synthetic

    xs, ys = (t.to(device) for t in synthetic(pool, 1000, source_size, seed=0))
    step = iter(range(10**9))

    def batch():
        i = next(step)
        b = torch.randint(pool, (batch_size,), generator=torch.Generator().manual_seed(i)).to(device)
        x = device_augment.augment_batch(xs[b], i, image_size=image_size, crop="rrc", randaug_magnitude=10)
        return device_augment.mix_batch(x, ys[b], 1000, 0.8, 1.0, seed=i)

    times = time_calls(batch, repeats=repeats, warmup=warmup, device=device)
    return {"seconds": spread(times), "batch_size": batch_size, "image_size": image_size, "source_size": source_size,
            "augmentation": "rrc + flip + RandAugment 10 + mixup 0.8 / CutMix 1.0"}


def fast_path(batch_size: int = 128, image_size: int = 224, device: str | None = None, repeats: int = 20,
              warmup: int = 5, compile: bool = True) -> dict:
    """Measure every setting of :data:`SETTINGS` (``compile=False`` drops torch.compile from all of them) and the
    ratios of their median training throughputs."""
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    runs = {}
    for name, impl, dtype, cl, comp in SETTINGS:
        t0 = time.perf_counter()
        runs[name] = measure(impl, dtype, cl, comp and compile, batch_size, image_size, device, repeats, warmup)
        runs[name]["wall_seconds"] = time.perf_counter() - t0
    med = {name: r["train_img_s"]["median"] for name, r in runs.items()}
    data = data_time(batch_size, image_size, device, repeats, warmup)
    step_s = batch_size / med["ev2lib"]
    data["share_of_ev2lib_step"] = data["seconds"]["median"] / (data["seconds"]["median"] + step_s)
    return {"device": device, "batch_size": batch_size, "image_size": image_size, "compile": compile, "runs": runs,
            "data": data,
            "ratios": {"ev2lib / torchvision eager fp32": med["ev2lib"] / med["torchvision eager fp32"],
                       "ev2lib / torchvision, same settings": med["ev2lib"] / med["torchvision, same settings"]},
            "goals": {"ev2lib / torchvision eager fp32": 2.0, "ev2lib / torchvision, same settings": 1.0,
                      "data share of the ev2lib step": 0.10}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m ev2lib.fast_path", description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--image-size", type=int, default=224)
    p.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--no-compile", action="store_true", help="drop torch.compile from every setting")
    p.add_argument("--save", default=None, help="write <results>/NAME.json (needs --profile colab or full)")
    p.add_argument("--profile", default=None, choices=["smoke", "colab", "full"],
                   help="smoke is saved only into a rehearsal's results folder (ci/gpu_book.py --rehearse)")
    args = p.parse_args(argv)
    if args.save and not args.profile:
        raise ConfigError("--save needs --profile colab or full (a GPU measurement)")
    rec = fast_path(args.batch_size, args.image_size, args.device, args.repeats, args.warmup, not args.no_compile)
    for name, r in rec["runs"].items():
        print(f"{name:28s} {r['train_img_s']['median']:10.1f} img/s  (first step {r['first_step_seconds']:.1f} s, "
              f"compile {r['compile_seconds']:.1f} s)")
    print(f"input pipeline {rec['data']['seconds']['median'] * 1e3:.1f} ms a batch: "
          f"{100 * rec['data']['share_of_ev2lib_step']:.1f}% of the ev2lib step (goal under 10%)")
    for k, v in rec["ratios"].items():
        print(f"{k}: {v:.2f}x (goal {rec['goals'][k]:.1f}x)")
    if args.save:
        from . import results

        command = "python -m ev2lib.fast_path " + " ".join(sys.argv[1:] if argv is None else argv)
        print("saved", results.save(args.save, rec, config=vars(args), command=command, profile=args.profile,
                                    device=rec["device"]))
    return rec


if __name__ == "__main__":
    cli_main(main)
