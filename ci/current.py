"""Is a reference result current? ``python ci/current.py NAME`` exits 0 when ``data/results/NAME.json`` was
recorded from the code this checkout has, and 1 (with one line saying why) when ci/cpu_reference.sh must record it
again.

The rule is ev2lib's own (:func:`ev2lib.results.stale_modules`): a result is current while the code it ran is
unchanged, each module compared without comments and docstrings, and the same rule names the caches of finished
runs. This script adds what the library cannot know, the repository's pins: a CPU reference is also stale when the
packages a measurement runs on (:data:`RUNTIME`, pyproject.toml's dependencies) are pinned in ci/requirements.txt at
other versions than the ones it recorded. A new pin of the book's tooling or of a test-only package changes nothing.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUNTIME = ("torch", "torchvision", "numpy")  # pyproject.toml's dependencies that compute (tqdm draws a bar)


def runtime_pins(text: str) -> dict[str, str]:
    """``{package: version}`` of the :data:`RUNTIME` packages pinned (``==``) in a requirements file's text."""
    pins = {}
    for line in text.splitlines():
        name, _, version = line.split("#")[0].strip().partition("==")
        if name.strip().lower() in RUNTIME and version:
            pins[name.strip().lower()] = version.strip()
    return pins


def stale_because(name: str, directory=None) -> str | None:
    """None if the result ``name`` is current, else why it must be recorded again."""
    from ev2lib import results
    from ev2lib.errors import ResultsError

    try:
        record = results.load(name, directory)
    except ResultsError as e:
        return str(e)
    if results.command_module(record["command"]) is None:
        return f"its command {record['command']!r} does not run an ev2lib module"
    changed = results.stale_modules(record)
    if record["provenance"]["device_type"] == "cpu":
        have = record["provenance"]["versions"]
        pins = runtime_pins((ROOT / "ci" / "requirements.txt").read_text())
        changed += [f"{lib} {have.get(lib)} -> {pin} (ci/requirements.txt)" for lib, pin in pins.items()
                    if lib in have and str(have[lib]).split("+")[0] != pin]
    return f"changed since {record['provenance']['git_commit'][:12]}: {', '.join(changed)}" if changed else None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python ci/current.py RESULT_NAME  (a file name in data/results, without .json)")
    why = stale_because(sys.argv[1])
    if why:
        print(f"[current] {sys.argv[1]}: {why}", file=sys.stderr)
    sys.exit(1 if why else 0)
