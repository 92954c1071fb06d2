#!/usr/bin/env python
"""ev2lib's EfficientNetV2-S training step vs torchvision's ``efficientnet_v2_s``, on CPU, in the same process.

    .venv/bin/python ci/bench_vs_torchvision.py [--image-size 128] [--batch-size 8] [--rounds 5]

Both models get a random batch of the same shape, the same SGD step (ev2lib.bench.make_train_step) and are timed in
interleaved rounds (ev2lib, torchvision, ev2lib, ...), so drifting machine load hits both alike. Prints the median
step time of each and the ratio torchvision / ev2lib (> 1: ev2lib is faster). Not a test: timings are noisy.
"""
import argparse
import statistics
import sys

import torch
import torchvision

from ev2lib import create_model
from ev2lib.bench import make_train_step, time_calls
from ev2lib.summary import count_params


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--image-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    p.add_argument("--steps", type=int, default=3, help="timed steps per model per round")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    models = {"ev2lib": create_model("efficientnetv2_s"), "torchvision": torchvision.models.efficientnet_v2_s()}
    n = {k: count_params(m) for k, m in models.items()}
    assert n["ev2lib"] == n["torchvision"], n  # the same network, parameter for parameter
    steps = {k: make_train_step(m, args.batch_size, args.image_size) for k, m in models.items()}
    for s in steps.values():  # warm-up, untimed
        s(), s()
    times = {k: [] for k in models}
    for r in range(args.rounds):
        for k, s in (steps.items() if r % 2 == 0 else reversed(steps.items())):
            times[k] += time_calls(s, repeats=args.steps, warmup=0)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"EfficientNetV2-S training step on CPU ({torch.get_num_threads()} threads), batch {args.batch_size}, "
          f"{args.image_size}x{args.image_size}, {args.rounds} interleaved rounds x {args.steps} steps, {n['ev2lib']:,} params")
    for k, v in times.items():
        print(f"  {k:<12} median {1000 * med[k]:7.1f} ms/step  (min {1000 * min(v):.1f}, max {1000 * max(v):.1f})  "
              f"{args.batch_size / med[k]:.1f} img/s")
    ratio = med["torchvision"] / med["ev2lib"]
    print(f"ratio torchvision/ev2lib step time: {ratio:.3f} ({'ev2lib at least as fast' if ratio >= 0.97 else 'ev2lib SLOWER'}"
          f"; within +-3% counts as equal)")
    return ratio


if __name__ == "__main__":
    main()
    sys.exit(0)
