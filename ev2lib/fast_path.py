"""The fast path: how fast ev2lib trains EfficientNetV2-S on one accelerator, next to torchvision's V2-S (§1, §3.2).

Every row times the loop's own :func:`ev2lib.train.train_step` on the same batch: ``ev2lib`` (bf16, channels_last,
``torch.compile``), ``torchvision eager`` (fp32 as a reader first runs it; ``precision`` says whether TF32) and
``torchvision, same settings``. Rows are built, compiled and warmed up untimed, then timed *interleaved*, one step of
each in turn, so a drift of the machine touches all alike; the input pipeline is timed beside them.

    python -m ev2lib.fast_path --device cuda --save fast_path_gpu --profile colab
"""
from __future__ import annotations

import argparse
import sys
import time

import torch

from .bench import spread, time_calls
from .errors import ConfigError, cli_main
from .model import SCRATCH_NORMALIZATION, Normalize, create_model
from .recipe import make_config
from .train import make_run, resolve_device, train_step

SETTINGS = (  # name, implementation, amp, channels_last, compile
    ("ev2lib", "ev2lib", "bf16", True, True),
    ("torchvision eager", "torchvision", "none", False, False),
    ("torchvision, same settings", "torchvision", "bf16", True, True),
)
GOALS = {"ev2lib / torchvision eager": 2.0, "ev2lib / torchvision, same settings": 1.0,
         "data share of the ev2lib step": 0.10}


def build(implementation: str, num_classes: int = 1000) -> torch.nn.Module:
    """EfficientNetV2-S from ``"ev2lib"`` or ``"torchvision"``, randomly initialised (no download), normalising its
    input the same way (torchvision's gets ev2lib's :class:`~ev2lib.model.Normalize`)."""
    if implementation == "ev2lib":
        return create_model("efficientnetv2_s", num_classes=num_classes)
    if implementation == "torchvision":
        import torchvision

        model = torchvision.models.efficientnet_v2_s(weights=None, num_classes=num_classes)
        model.normalize = Normalize(SCRATCH_NORMALIZATION)
        return model
    raise ConfigError(f"implementation must be 'ev2lib' or 'torchvision', got {implementation!r}")


def _step(implementation: str, amp: str, channels_last: bool, compile: bool, batch_size: int, image_size: int,
          device: torch.device):
    """A closure running one :func:`ev2lib.train.train_step` of this setting on a fixed batch."""
    torch.manual_seed(0)
    cfg = make_config("smoke", amp=amp, channels_last=channels_last, compile=compile, lr=0.01, warmup_epochs=0,
                      lr_schedule="constant", label_smoothing=0.1, batch_size=batch_size)
    run = make_run(cfg, build(implementation), device)
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (batch_size, 3, image_size, image_size), dtype=torch.uint8, generator=g).to(device)
    y = torch.randint(0, 1000, (batch_size,), generator=g).to(device)
    return lambda: train_step(run, x, y)


def fast_path(batch_size: int = 128, image_size: int = 224, device: str | None = None, repeats: int = 20,
              warmup: int = 5, compile: bool = True, on_progress=None) -> dict:
    """Every setting of :data:`SETTINGS` (``compile=False`` drops torch.compile from all), warmed up one by one,
    then timed interleaved; ``on_progress(partial record)`` after each warm-up (what a run cut off keeps)."""
    dev = resolve_device(device or "auto")
    steps, runs = {}, {}
    for name, impl, amp, cl, comp in SETTINGS:
        t0 = time.perf_counter()
        steps[name] = _step(impl, amp, cl, comp and compile, batch_size, image_size, dev)
        first = time_calls(steps[name], repeats=1, warmup=0, device=dev)[0]  # compiles, if asked to
        time_calls(steps[name], repeats=0, warmup=warmup, device=dev)
        runs[name] = {"implementation": impl, "amp": amp, "channels_last": cl, "compile": comp and compile,
                      "batch_size": batch_size, "image_size": image_size, "first_step_seconds": first,
                      "warmup_seconds": time.perf_counter() - t0, "times": []}
        if on_progress:
            on_progress({"device": str(dev), "complete": False, "runs": {k: {**r, "times": None} for k, r in runs.items()}})
    for _ in range(repeats):  # interleaved: one timed step of each setting in turn
        for name, step in steps.items():
            runs[name]["times"] += time_calls(step, repeats=1, warmup=0, device=dev)
    for r in runs.values():
        r["train_img_s"] = spread([batch_size / t for t in r.pop("times")])
    tf32 = dev.type == "cuda" and torch.backends.cudnn.allow_tf32  # cuDNN's default for fp32 convolutions
    for r in runs.values():
        r["precision"] = r["amp"] if r["amp"] != "none" else "fp32, convolutions in TF32" if tf32 else "fp32"
    med = {name: r["train_img_s"]["median"] for name, r in runs.items()}
    data = data_time(batch_size, image_size, dev, repeats, warmup)
    data["share_of_ev2lib_step"] = data["seconds"]["median"] / (data["seconds"]["median"] + batch_size / med["ev2lib"])
    return {"device": str(dev), "batch_size": batch_size, "image_size": image_size, "compile": compile, "runs": runs,
            "data": data, "goals": GOALS, "complete": True,
            "ratios": {"ev2lib / torchvision eager": med["ev2lib"] / med["torchvision eager"],
                       "ev2lib / torchvision, same settings": med["ev2lib"] / med["torchvision, same settings"]}}


def data_time(batch_size: int, image_size: int, device, repeats: int = 20, warmup: int = 3,
              source_size: int = 32, pool: int = 4096) -> dict:
    """Seconds per batch of the device-resident input pipeline: pick ``batch_size`` of ``pool`` uint8
    (3, source_size, source_size) images on ``device`` (CIFAR-10 kept on the GPU), random resized crop to
    ``image_size``, flip, RandAugment 10, then mixup (alpha 0.8) on half the batch and CutMix (1.0) on the other."""
    from .augment import augment_batch, mix_batch
    from .data import synthetic
    xs, ys = (t.to(device) for t in synthetic(pool, 1000, source_size, seed=0))
    step = iter(range(10**9))

    def batch():
        i = next(step)
        b = torch.randint(pool, (batch_size,), generator=torch.Generator().manual_seed(i)).to(device)
        x = augment_batch(xs[b], i, image_size=image_size, crop="rrc", randaug_magnitude=10)
        return mix_batch(x, ys[b], 1000, 0.8, 1.0, seed=i)

    times = time_calls(batch, repeats=repeats, warmup=warmup, device=device)
    return {"seconds": spread(times), "batch_size": batch_size, "image_size": image_size, "source_size": source_size,
            "augmentation": "rrc + flip + RandAugment 10 + mixup 0.8 / CutMix 1.0"}


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
    command = "python -m ev2lib.fast_path " + " ".join(sys.argv[1:] if argv is None else argv)

    def save(rec):
        from . import results
        return results.save(args.save, rec, config=vars(args), command=command, profile=args.profile,
                            device=rec["device"])

    rec = fast_path(args.batch_size, args.image_size, args.device, args.repeats, args.warmup, not args.no_compile,
                    on_progress=save if args.save else None)
    for name, r in rec["runs"].items():
        print(f"{name:28s} {r['train_img_s']['median']:10.1f} img/s  (first step {r['first_step_seconds']:.1f} s)")
    print(f"input pipeline {rec['data']['seconds']['median'] * 1e3:.1f} ms a batch: "
          f"{100 * rec['data']['share_of_ev2lib_step']:.1f}% of the ev2lib step (goal under 10%)")
    for k, v in rec["ratios"].items():
        print(f"{k}: {v:.2f}x (goal {rec['goals'][k]:.1f}x)")
    if args.save:
        print("saved", save(rec))
    return rec


if __name__ == "__main__":
    cli_main(main)
