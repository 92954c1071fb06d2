"""Shared helpers: a training run in a subprocess that a test can SIGKILL at a chosen step, and one-thread torch.

Fault injection lives here, not in the library: the child process passes ``ev2lib.train.train`` a callback that
kills its own process after the given step.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
_CHILD = """
import json, os, sys, torch
from ev2lib.progressive import ProgressiveSchedule
from ev2lib.train import make_config, train
args = json.loads(sys.argv[1])
kill_at, prog = args.pop("kill_at", None), args.pop("progressive", None)

class KillAt:
    def on_step_end(self, run):
        if run.step == kill_at:
            os.kill(os.getpid(), 9)

torch.set_num_threads(1)
train(make_config("smoke", **args), progressive=ProgressiveSchedule(**prog) if prog else None,
      callbacks=[KillAt()] if kill_at else [])
"""


def train_subprocess(fields: dict, kill_at: int | None = None, progressive: dict | None = None):
    """Run ``train(make_config("smoke", **fields))`` in a child process, killed with SIGKILL after step ``kill_at``."""
    args = {**fields, "kill_at": kill_at, "progressive": progressive}
    return subprocess.run([sys.executable, "-c", _CHILD, json.dumps(args)], capture_output=True, text=True, env=ENV,
                          timeout=300)


def read_log(out) -> list[dict]:
    return [json.loads(line) for line in (Path(out) / "log.jsonl").read_text().splitlines()]


@pytest.fixture
def one_thread():
    """One intra-op thread: tiny models on a shared 2-core machine run several times faster so."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)
