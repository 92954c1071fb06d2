"""Training checkpoints: written atomically, loaded with ``weights_only=True``, resumed exactly.

A checkpoint holds everything the next step depends on: model, optimizer, LR scheduler, EMA, grad scaler, the
random states (torch, CUDA, NumPy, Python), the data order (seed, epoch, step in epoch, the epoch's sample order),
the progressive-learning stage and the step. It is written to ``<name>.tmp`` and renamed over the old file
(``os.replace`` is atomic on POSIX and Windows), so a run killed while writing leaves the previous checkpoint whole.
"""
from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import torch

from .errors import WeightsError
from .weights import load_checkpoint as load_weights_file


def rng_state() -> dict:
    """Every random state a training step may draw from, as tensors and plain Python (``weights_only``-safe)."""
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state = {"torch": torch.get_rng_state(), "numpy": [torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
             "python": [version, list(py_state), py_gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state(("MT19937", keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, py_state, py_gauss = state["python"]
    random.setstate((version, tuple(py_state), py_gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, flushed, then renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Read a training checkpoint safely (:func:`ev2lib.weights.load_checkpoint`: ``weights_only=True``, one-line
    errors for a missing or damaged file) and check that it is one."""
    state = load_weights_file(path)
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise WeightsError(f"{path} is not an ev2lib training checkpoint (it lacks 'model' and 'step')")
    return state


def check_compatible(state: dict, config: dict, path) -> None:
    """Refuse to resume from a checkpoint of another model, dataset or batch size, in one line."""
    saved = state.get("config", {})
    for key in ("model", "data", "batch_size", "num_classes"):
        if key in saved and key in config and saved[key] != config[key]:
            raise WeightsError(f"checkpoint {path} was written for {key}={saved[key]!r}, this run has {key}={config[key]!r}: "
                               f"use another --out folder, or the same settings to resume")
