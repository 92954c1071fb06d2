"""Reference results with provenance: the only numbers the rendered book shows that this run did not compute.
A result is ``data/results/<name>.json``: schema_version, name, profile, command, config, data and provenance.

**Is a result current?** While the code it ran is unchanged: for ``python -m ev2lib.X``, module ``X`` and every
ev2lib module it imports, less :data:`PLUMBING`, without comments and docstrings (:func:`code_digests` in the
provenance, :func:`stale_modules` to compare, :func:`code_digest` to name run caches). ``save`` refuses a smoke
profile outside a rehearsal's folder. ``git_commit``: the checkout ev2lib is imported from (else
``$EV2_GIT_COMMIT``). The folder: ``directory``, ``$EV2_RESULTS_DIR``, or the nearest ``data/results`` above.
"""
from __future__ import annotations

import ast
import datetime as _dt
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from pathlib import Path

from .errors import ResultsError
from .files import atomic_write

SCHEMA_VERSION = 2  # 2: provenance records the code's digests; 1 (older): a result always stale
# The profile names of every registry in ev2lib: smoke (CPU, minutes, never a result), cpu-reference, colab (one GPU), full.
PROFILES = ("smoke", "cpu-reference", "colab", "full")
RESULT_PROFILES = PROFILES[1:]
REQUIRED_PROVENANCE = ("git_commit", "git_dirty", "date", "hardware", "device_type", "versions")
REHEARSAL = "REHEARSAL"  # a file of this name marks a rehearsal's results folder: smoke records may go there only
PACKAGE = Path(__file__).resolve().parent
# They store, label, raise or display; no measured value depends on them.
PLUMBING = ("__init__", "results", "errors", "files", "book", "report")


# --- The code a result ran ----------------------------------------------------------------------------------------

def code_of(source: str) -> str:
    """What a module computes: its syntax tree without docstrings (comments never reach the tree), written alike by
    every Python, as 3.11's ``ast.dump`` writes it: 3.12 adds ``type_params=[]`` to each function and class, 3.13
    leaves empty fields out. (Otherwise a result recorded on the GPU machine's or Colab's 3.12 reads as stale here.)"""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    text = ast.dump(tree, **({"show_empty": True} if sys.version_info >= (3, 13) else {}))
    return text.replace(", type_params=[]", "")


def imports_of(module: str, package: Path = PACKAGE) -> set[str]:
    """The ev2lib modules that ``module``'s own source imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse((package / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("ev2lib")):
            base = (node.module or "").removeprefix("ev2lib").lstrip(".")
            found |= {base.split(".")[0]} if base else {alias.name for alias in node.names}  # "from . import x"
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("ev2lib.")}
    return {m for m in found if (package / f"{m}.py").exists()}


def imported_modules(module: str, package: Path = PACKAGE) -> set[str]:
    """``module`` and every ev2lib module it needs, followed through :func:`imports_of`."""
    todo, seen = [module], set()
    while todo:
        name = todo.pop()
        if name not in seen and (package / f"{name}.py").exists():
            seen.add(name)
            todo += imports_of(name, package)
    return seen


def code_digests(module: str, package: Path = PACKAGE) -> dict[str, str]:
    """``{module: digest}`` of the code ``module`` runs (:func:`imported_modules` without :data:`PLUMBING`)."""
    return {m: hashlib.sha256(code_of((package / f"{m}.py").read_text()).encode()).hexdigest()[:16]
            for m in sorted(imported_modules(module, package) - set(PLUMBING))}


def code_digest(module: str) -> str:
    """One short name for :func:`code_digests` (the folder of a runner's cached runs)."""
    return hashlib.sha256(json.dumps(code_digests(module), sort_keys=True).encode()).hexdigest()[:12]


def command_module(command: str) -> str | None:
    """``X`` of a command ``python -m ev2lib.X ...``; None for another command."""
    m = re.search(r"-m ev2lib\.(\w+)", command)
    return m.group(1) if m else None


def stale_modules(record: dict, package: Path = PACKAGE) -> list[str]:
    """The modules whose code changed since ``record`` was made (every one it ran, for a record without digests)."""
    recorded = record["provenance"].get("code") or {}
    module = command_module(record["command"])
    if not recorded:
        return sorted(code_digests(module, package)) if module else ["(a record without its code's digests)"]
    now = {m: code_digests(m, package).get(m) for m in recorded if (package / f"{m}.py").exists()}
    return sorted(m for m, digest in recorded.items() if now.get(m) != digest)


# --- Provenance ---------------------------------------------------------------------------------------------------

def results_dir(directory: str | Path | None = None) -> Path:
    """The results folder: ``directory``, else ``$EV2_RESULTS_DIR``, else the nearest ``data/results`` at or above
    the current folder (``./data/results`` if there is none, for :func:`save` to create)."""
    if directory or os.environ.get("EV2_RESULTS_DIR"):
        return Path(directory or os.environ["EV2_RESULTS_DIR"])
    here = Path.cwd().resolve()
    return next((d / "data" / "results" for d in (here, *here.parents) if (d / "data" / "results").is_dir()),
                here / "data" / "results")


def cpu_name() -> str:
    """The CPU's model name, e.g. "Intel(R) Xeon(R) Platinum 8480C"."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def hardware(device: str | None = None) -> tuple[str, str]:
    """(description, "cuda" | "cpu") of the device a measurement ran on, e.g. ("NVIDIA H100 80GB HBM3", "cuda")."""
    import torch
    if (device is None and torch.cuda.is_available()) or (device or "").startswith("cuda"):
        return torch.cuda.get_device_name(), "cuda"
    threads = torch.get_num_threads()
    return f"{cpu_name()} ({threads} thread{'s' if threads != 1 else ''})", "cpu"


def _git(*args) -> str:
    try:
        return subprocess.run(["git", "-C", str(PACKAGE.parent), *args], capture_output=True, text=True,
                              timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def git_commit() -> str:
    """The commit of the checkout ev2lib is imported from; ``$EV2_GIT_COMMIT`` when it is not a git checkout (a
    copy on another machine); "unknown" otherwise, which :func:`validate` refuses."""
    inside = _git("rev-parse", "--show-toplevel")
    if inside and Path(inside).resolve() == PACKAGE.parent:
        return _git("rev-parse", "HEAD") or "unknown"
    return os.environ.get("EV2_GIT_COMMIT", "unknown")


def git_dirty() -> bool:
    """Whether ev2lib's code in its checkout differs from :func:`git_commit` (results and notebooks do not count)."""
    return bool(_git("status", "--porcelain", "--untracked-files=no", "--", PACKAGE.name))


def provenance(device: str | None = None, module: str | None = None) -> dict:
    """Where, when and with what a result was produced; ``module``: the ev2lib module whose code it ran."""
    import numpy
    import torch
    import torchvision
    desc, kind = hardware(device)
    versions = {"python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
                "numpy": numpy.__version__, "ev2lib": sys.modules[__package__].__version__}  # the package is loaded
    out = {"git_commit": git_commit(), "git_dirty": git_dirty(), "code": code_digests(module) if module else {},
           "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"), "hardware": desc,
           "device_type": kind, "versions": versions}
    if kind == "cuda":  # the host decides much of a GPU step's time: name it too
        versions.update(cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
        out["host"] = f"{cpu_name()} ({torch.get_num_threads()} threads)"
        out["tf32"] = {"matmul": torch.backends.cuda.matmul.allow_tf32, "cudnn": torch.backends.cudnn.allow_tf32}
    return out


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
    if record["schema_version"] not in (1, SCHEMA_VERSION):
        raise ResultsError(f"{where}: schema_version {record['schema_version']} is not {SCHEMA_VERSION}")
    if record["profile"] not in (PROFILES if rehearsal else RESULT_PROFILES):
        raise ResultsError(f"{where}: profile {record['profile']!r} is not a result profile {RESULT_PROFILES}")
    if not isinstance(record["command"], str) or not record["command"].strip():
        raise ResultsError(f"{where}: 'command' must say how to reproduce the result")
    if not isinstance(record["config"], dict) or not isinstance(record["data"], dict) or not record["data"]:
        raise ResultsError(f"{where}: 'config' must be a dict and 'data' a non-empty dict")
    prov = record["provenance"]
    for key in REQUIRED_PROVENANCE + (("code",) if record["schema_version"] >= 2 else ()):
        if key not in prov:
            raise ResultsError(f"{where}: provenance lacks {key!r}")
    if not re.fullmatch(r"[0-9a-f]{7,40}", str(prov["git_commit"])):
        raise ResultsError(f"{where}: provenance git_commit {prov['git_commit']!r} is not a commit: record from a git "
                           f"checkout of the book's repository (or set EV2_GIT_COMMIT)")
    try:
        _dt.datetime.fromisoformat(prov["date"])
    except (TypeError, ValueError):
        raise ResultsError(f"{where}: provenance date {prov['date']!r} is not an ISO date") from None
    if prov["device_type"] not in ("cpu", "cuda"):
        raise ResultsError(f"{where}: device_type must be 'cpu' or 'cuda'")
    for lib in ("python", "torch"):
        if lib not in prov["versions"]:
            raise ResultsError(f"{where}: provenance versions lack {lib!r}")
    return record


def save(name: str, data: dict, *, config: dict, command: str, profile: str, device: str | None = None,
         directory: str | Path | None = None) -> Path:
    """Write ``<results dir>/<name>.json`` atomically with provenance (the code of the module ``command`` runs). A
    ``smoke`` profile is refused, except in a rehearsal's folder (:func:`is_rehearsal`)."""
    out_dir = results_dir(directory)
    rehearsal = is_rehearsal(out_dir)
    if profile == "smoke" and not rehearsal:
        raise ResultsError("a smoke run is never saved as a result: rerun with a cpu-reference, colab or full profile")
    record = {"schema_version": SCHEMA_VERSION, "name": name, "profile": profile, "command": command,
              "config": config, "provenance": provenance(device, command_module(command)), "data": data}
    validate(json.loads(json.dumps(record)), name, rehearsal=rehearsal)
    return atomic_write(out_dir / f"{name}.json", json.dumps(record, indent=1) + "\n")


def load(name: str, directory: str | Path | None = None) -> dict:
    """Read and validate the result ``name`` from the results folder (:func:`results_dir`); a rehearsal's folder
    also yields its smoke records, so a rehearsal's chapters show what it recorded."""
    path = results_dir(directory) / f"{name}.json"
    if not path.exists():
        raise ResultsError(f"result {name!r} is not in the results folder: set EV2_RESULTS_DIR to the data/results "
                           f"folder of a checkout of the book's repository")
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ResultsError(f"{path.name} is not valid JSON ({e}); restore it with git checkout") from None
    return validate(record, name, rehearsal=is_rehearsal(directory))


def reference(stem: str, directory: str | Path | None = None) -> dict | None:
    """The recorded reference a chapter shows for ``stem``: ``<stem>_gpu`` where one is recorded, else
    ``<stem>_cpu``, else ``<stem>`` itself; None when none is."""
    for name in (f"{stem}_gpu", f"{stem}_cpu", stem):
        try:
            return load(name, directory)
        except ResultsError:
            continue
    return None


def list_results(directory: str | Path | None = None) -> list[str]:
    """Names of the results in the results folder."""
    return sorted(p.stem for p in results_dir(directory).glob("*.json"))


def caption(record: dict) -> str:
    """A one-line provenance caption: hardware, profile, commit and date (and whether the code was uncommitted)."""
    p = record["provenance"]
    dirty = ", from uncommitted code" if p["git_dirty"] else ""
    return f"{p['hardware']}, profile {record['profile']}, commit {p['git_commit'][:7]}{dirty}, {p['date'][:10]}"
