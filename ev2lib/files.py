"""Files on disk, written so that a crash never leaves a half-written one: the one atomic writer, JSON lines, a
JSON cache of finished runs, and the one safe reader of PyTorch files (``weights_only=True``).

An atomic write goes to ``<name>.<pid>.tmp`` in the same folder, is flushed and fsynced, then renamed over the
target (``os.replace`` is atomic on POSIX and Windows): a reader sees the old file or the new one, never a part.
"""
from __future__ import annotations

import json
import os
import pickle
import zipfile
from pathlib import Path

from .errors import WeightsError


def atomic_write(path: str | Path, content) -> Path:
    """Write ``content`` (bytes, str, or a function ``f -> None`` writing to a binary file) to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            if callable(content):
                content(f)
            else:
                f.write(content.encode() if isinstance(content, str) else content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def append_jsonl(path: str | Path, record: dict, sync: bool = False) -> None:
    """Append one JSON line; ``sync=True`` fsyncs it (a crash then tears at most this last line)."""
    with open(path, "a") as f:
        f.write(json.dumps(record) + "\n")
        if sync:
            f.flush()
            os.fsync(f.fileno())


def read_jsonl(path: str | Path) -> list[dict]:
    """The records of a JSON-lines file, in order (blank lines skipped)."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def json_cache(path: str | Path | None, compute):
    """``compute()``'s JSON-able result, written atomically to ``path`` and read back by later calls instead of
    computing it again: how the ablation and transfer runners continue where they stopped. ``None`` always computes."""
    if path is not None and Path(path).exists():
        return json.loads(Path(path).read_text())
    result = compute()
    if path is not None:
        atomic_write(path, json.dumps(result))
    return result


def load_torch(path: str | Path, map_location="cpu"):
    """``torch.load(path, weights_only=True)`` with one-line errors for a missing or corrupt file."""
    import torch
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise WeightsError(f"checkpoint {path} does not exist") from None
    except (RuntimeError, OSError, pickle.UnpicklingError, EOFError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"checkpoint {path} is corrupt, truncated or not a PyTorch weights file ({first[:120]}): "
                           f"delete it and download or save it again") from None


def jsonl_cache(path: str | Path | None, key: str, compute):
    """``compute()``'s JSON-able result, or the one already appended to the JSON-lines file ``path`` under ``key``
    (so a stopped run of many computations continues where it stopped). A torn line is ignored: that computation
    runs again. ``None`` always computes."""
    if path is None:
        return compute()
    path = Path(path)
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if isinstance(rec, dict) and rec.get("key") == key:
            return rec["result"]
    result = compute()
    path.parent.mkdir(parents=True, exist_ok=True)
    append_jsonl(path, {"key": key, "result": result}, sync=True)
    return result
