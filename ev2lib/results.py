"""Reference results with provenance: the only numbers the rendered book shows that this run did not compute.

A result is one JSON file in ``data/results/<name>.json``::

    {"schema_version": 1, "name": ..., "profile": "colab" | "full" | "cpu-reference", "command": ...,
     "config": {...}, "provenance": {git_commit, git_dirty, date, hardware, device_type, versions}, "data": {...}}

``save`` refuses a ``smoke`` profile (smoke runs prove the code works; they are never results) except in a folder
marked as a rehearsal's (a file named :data:`REHEARSAL` in it: ci/gpu_book.py --rehearse writes its smoke records
there), ``validate`` checks a record, ``load`` reads one.

Where: the ``directory`` argument, else ``$EV2_RESULTS_DIR``, else ``data/results`` in the current folder or the
nearest parent folder that has one (so a chapter run from ``book/`` finds the repository's ``data/results``).
"""
from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from .errors import ResultsError
from .files import atomic_write

SCHEMA_VERSION = 1
# The profile names every registry in ev2lib uses (training, NAS proxies, ablations, chapters' parameters):
# smoke (CPU, offline, minutes: never a result), cpu-reference (a CPU run at the largest scale that fits),
# colab (one GPU), full (paper scale).
PROFILES = ("smoke", "cpu-reference", "colab", "full")
RESULT_PROFILES = PROFILES[1:]
REQUIRED_PROVENANCE = ("git_commit", "git_dirty", "date", "hardware", "device_type", "versions")
REHEARSAL = "REHEARSAL"  # a file of this name marks a rehearsal's results folder: smoke records may go there only


def results_dir(directory: str | Path | None = None) -> Path:
    """The results folder: ``directory``, else ``$EV2_RESULTS_DIR``, else the nearest ``data/results`` at or above
    the current folder (``./data/results`` if there is none, for :func:`save` to create)."""
    if directory or os.environ.get("EV2_RESULTS_DIR"):
        return Path(directory or os.environ["EV2_RESULTS_DIR"])
    here = Path.cwd().resolve()
    return next((d / "data" / "results" for d in (here, *here.parents) if (d / "data" / "results").is_dir()),
                here / "data" / "results")


def hardware(device: str | None = None) -> tuple[str, str]:
    """(description, "cuda" | "cpu") of the device a measurement ran on, e.g. ("NVIDIA H100 80GB HBM3", "cuda")."""
    import torch

    if (device is None and torch.cuda.is_available()) or (device or "").startswith("cuda"):
        return torch.cuda.get_device_name(), "cuda"
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"{model} ({threads} thread{'s' if threads != 1 else ''})", "cpu"


def _git(*args, cwd=None) -> str:
    try:
        return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit(cwd: str | Path | None = None) -> str:
    """The commit of the git checkout at ``cwd`` (default: the current folder), or "unknown" outside one."""
    return _git("rev-parse", "HEAD", cwd=cwd) or "unknown"


def code_commit(cwd: str | Path | None = None, paths=("ev2lib", "ci")) -> str:
    """The last commit that changed the code (``paths``) of the checkout at ``cwd``: results and caches keyed by it
    stay valid while only results, notebooks or prose are committed."""
    return _git("log", "-1", "--format=%H", "--", *paths, cwd=cwd) or "unknown"


def provenance(device: str | None = None, cwd: str | Path | None = None) -> dict:
    """Where, when and with what a result was produced (the commit of the git checkout at ``cwd``)."""
    import torch
    import torchvision

    from . import __version__

    desc, kind = hardware(device)
    versions = {"python": platform.python_version(), "torch": torch.__version__,
                "torchvision": torchvision.__version__, "ev2lib": __version__}
    if kind == "cuda":
        versions["cuda"] = torch.version.cuda
        versions["cudnn"] = torch.backends.cudnn.version()
    return {"git_commit": git_commit(cwd),
            "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no", cwd=cwd)),
            "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "hardware": desc, "device_type": kind, "versions": versions}


def is_rehearsal(directory: str | Path | None = None) -> bool:
    """True when the results folder (:func:`results_dir`) is marked as a rehearsal's (:data:`REHEARSAL`)."""
    return (results_dir(directory) / REHEARSAL).is_file()


def validate(record: dict, name: str | None = None, rehearsal: bool = False) -> dict:
    """Check a result record's schema; raise :class:`ResultsError` naming the first problem. ``rehearsal``: a
    smoke record, in a rehearsal's folder."""
    where = name or record.get("name", "result")
    for key in ("schema_version", "name", "profile", "command", "config", "provenance", "data"):
        if key not in record:
            raise ResultsError(f"{where}: missing field {key!r}")
    if record["schema_version"] != SCHEMA_VERSION:
        raise ResultsError(f"{where}: schema_version {record['schema_version']} is not {SCHEMA_VERSION}")
    if record["profile"] not in (PROFILES if rehearsal else RESULT_PROFILES):
        raise ResultsError(f"{where}: profile {record['profile']!r} is not a result profile {RESULT_PROFILES}")
    if not isinstance(record["command"], str) or not record["command"].strip():
        raise ResultsError(f"{where}: 'command' must say how to reproduce the result")
    if not isinstance(record["config"], dict) or not isinstance(record["data"], dict) or not record["data"]:
        raise ResultsError(f"{where}: 'config' must be a dict and 'data' a non-empty dict")
    prov = record["provenance"]
    for key in REQUIRED_PROVENANCE:
        if key not in prov:
            raise ResultsError(f"{where}: provenance lacks {key!r}")
    if len(str(prov["git_commit"])) < 7:
        raise ResultsError(f"{where}: provenance git_commit {prov['git_commit']!r} is not a commit")
    _dt.datetime.fromisoformat(prov["date"])
    if prov["device_type"] not in ("cpu", "cuda"):
        raise ResultsError(f"{where}: device_type must be 'cpu' or 'cuda'")
    for lib in ("python", "torch"):
        if lib not in prov["versions"]:
            raise ResultsError(f"{where}: provenance versions lack {lib!r}")
    return record


def save(name: str, data: dict, *, config: dict, command: str, profile: str, device: str | None = None,
         directory: str | Path | None = None) -> Path:
    """Write ``<results dir>/<name>.json`` atomically with provenance. A ``smoke`` profile is refused, except in a
    rehearsal's folder (:func:`is_rehearsal`)."""
    out_dir = results_dir(directory)
    rehearsal = is_rehearsal(out_dir)
    if profile == "smoke" and not rehearsal:
        raise ResultsError("a smoke run is never saved as a result: rerun with a cpu-reference, colab or full profile")
    record = {"schema_version": SCHEMA_VERSION, "name": name, "profile": profile, "command": command,
              "config": config, "provenance": provenance(device, cwd=out_dir if out_dir.is_dir() else None), "data": data}
    validate(json.loads(json.dumps(record)), name, rehearsal=rehearsal)
    return atomic_write(out_dir / f"{name}.json", json.dumps(record, indent=1) + "\n")


def load(name: str, directory: str | Path | None = None) -> dict:
    """Read and validate the result ``name`` from the results folder (:func:`results_dir`); a rehearsal's folder
    also yields its smoke records, so a rehearsal's chapters show what it recorded."""
    path = results_dir(directory) / f"{name}.json"
    if not path.exists():
        raise ResultsError(f"result {name!r} is not in {path.parent}: set EV2_RESULTS_DIR to the data/results folder "
                           f"of a checkout of the book's repository")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path} is not valid JSON ({e}); restore it with git checkout") from None
    record = validate(record, name, rehearsal=is_rehearsal(directory))
    p = record["provenance"]  # results recorded before 2026-11-28 say "(1 threads)"; hardware() now says "(1 thread)"
    p["hardware"] = str(p["hardware"]).replace("(1 threads)", "(1 thread)")
    return record


def list_results(directory: str | Path | None = None) -> list[str]:
    """Names of the results in the results folder."""
    return sorted(p.stem for p in results_dir(directory).glob("*.json"))


def caption(record: dict) -> str:
    """A one-line provenance caption for figures: hardware, profile, commit and date."""
    p = record["provenance"]
    return (f"reference: {p['hardware']}, profile {record['profile']}, commit {p['git_commit'][:7]}, "
            f"{p['date'][:10]}")


if __name__ == "__main__":
    bad = 0
    for n in list_results():
        try:
            load(n)
            print(f"ok   {n}")
        except (ResultsError, ValueError) as e:
            bad += 1
            print(f"FAIL {n}: {e}")
    sys.exit(1 if bad else 0)
