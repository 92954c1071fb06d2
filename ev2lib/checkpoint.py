"""Training checkpoints: everything the next step depends on (weights, optimizer, LR schedule, EMA, grad scaler,
every random state, the counters), written atomically so a crash never leaves half a file, and read with
``weights_only=True`` so a checkpoint cannot run code. :mod:`ev2lib.train` writes one per epoch (and every
``ckpt_every`` steps); rerunning the same command resumes from it bit for bit.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from .errors import WeightsError
from .files import atomic_write, load_torch


def rng_state() -> dict:
    """This process's random states (torch CPU and CUDA, NumPy, Python), as tensors and plain Python."""
    _, keys, pos, has_gauss, gauss = np.random.get_state()
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
    """Write a training checkpoint atomically (:func:`ev2lib.files.atomic_write`)."""
    return atomic_write(path, lambda f: torch.save(state, f))


def load_checkpoint(path: str | Path, config: dict | None = None) -> dict:
    """Read a training checkpoint safely; with ``config``, refuse one of another model, dataset or batch size."""
    state = load_torch(path)
    if not isinstance(state, dict) or "model" not in state or "step" not in state:
        raise WeightsError(f"{path} is not an ev2lib training checkpoint (it lacks 'model' and 'step')")
    saved = state.get("config", {})
    for key in ("model", "data", "batch_size", "num_classes", "world_size"):
        if config and key in saved and key in config and saved[key] != config[key]:
            raise WeightsError(f"checkpoint {path} was written for {key}={saved[key]!r}, this run has "
                               f"{key}={config[key]!r}: use another --out folder, or the same settings to resume")
    return state
