"""Calibrate a NAS proxy: seed-to-seed noise against the spread across architectures (the backbone and random ones
of the search space), for one candidate ProxyTask. Prints one line per architecture and a JSON summary. Not a result:
it informs nas.PROXIES.

    python ci/calibrate_nas_proxy.py IMAGE_SIZE TRAIN_IMAGES EPOCHS [RANDOM_ARCHITECTURES SEEDS VAL_IMAGES]
    python ci/calibrate_nas_proxy.py 16 4000 8 7 2 5000
"""
import json
import math
import random
import statistics
import sys

import torch

from ev2lib import nas

if len(sys.argv) not in (4, 7):
    sys.exit(__doc__)
size, images, epochs = map(int, sys.argv[1:4])
n_random, seeds, val = map(int, sys.argv[4:7]) if len(sys.argv) == 7 else (7, 2, 5000)
torch.set_num_threads(1)
space = nas.search_space(width=0.5)
proxy = nas.ProxyTask(train_images=images, val_images=val, eval_images=200, image_size=size, epochs=epochs,
                      batch_size=64)
rng = random.Random("calibrate")
archs = []
for cfg in [space.backbone] + [space.build(space.sample(rng), name=f"random_{i}") for i in range(n_random)]:
    acc = [r["accuracy"] for r in nas.proxy_noise(cfg, proxy, range(seeds))]
    archs.append({"architecture": cfg.name, "accuracy": acc, "std": statistics.stdev(acc)})
    print(archs[-1], flush=True)
noise = math.sqrt(statistics.fmean(a["std"] ** 2 for a in archs))
spread = statistics.stdev(a["accuracy"][0] for a in archs)  # one seed per architecture, as a search sees them
print(json.dumps({"proxy": [size, images, epochs, val], "seed_std": noise, "spread_one_seed": spread,
                  "ratio": spread / noise}))
