"""Calibrate the ablation regime: one fixed-size CIFAR-10 run of the cpu-reference ablation profile at a given
number of epochs, large image size, regularization level and model, printed as one JSON line (validation, test and
un-augmented training accuracy, training seconds, the validation curve). Not a result: it informs the profile.

    python ci/calibrate_ablations.py EPOCHS SIZE LEVEL SEED [MODEL]
    python ci/calibrate_ablations.py 30 24 medium 0                  # a level of the profile
    python ci/calibrate_ablations.py 30 24 '[5, 0, 0]' 0             # (RandAugment, mixup, dropout)
"""
import json
import sys
import tempfile

import torch

from ev2lib import ablations
from ev2lib.progressive import fixed_schedule

if len(sys.argv) not in (5, 6):
    sys.exit(__doc__)
torch.set_num_threads(1)
epochs, size, level, seed = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
model = sys.argv[5] if len(sys.argv) == 6 else None
p = ablations.get_profile("cpu-reference", epochs=epochs, sizes=(16, (16 + size) // 8 * 4, size))
ra, mix, drop = p.levels[level] if level in p.levels else json.loads(level)
with tempfile.TemporaryDirectory() as out:
    r = ablations.run_cell(fixed_schedule(epochs, size, randaug=ra, mixup=mix, dropout=drop), p, seed, out, size,
                           model=model)
print(json.dumps({"model": r["model"], "params": r["params"], "epochs": epochs, "size": size, "level": level,
                  "seed": seed, **{k: r[k] for k in ("val_acc", "test_acc", "train_acc", "train_seconds")},
                  "val_curve": [round(h["val_acc"], 3) for h in r["history"]]}))
