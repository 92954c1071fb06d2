"""Is a reference result current? ``python ci/current.py NAME`` exits 0 when ``data/results/NAME.json`` was
recorded from code that HEAD still has, and 1 (with one line saying why) when ci/cpu_reference.sh must record it
again.

"The code" of a result is the module its command runs (``python -m ev2lib.X``) and every ev2lib module that module
imports, directly or inside a function, followed through the package's own import statements, except the plumbing
that labels and stores a result without computing it (:data:`PLUMBING`: ``results``, ``errors``); plus the pinned
versions (ci/requirements.txt) of the packages ev2lib runs on (:data:`RUNTIME`): a new pin of the book's tooling or
of a test-only package leaves every result current. A change to the NAS search leaves the ablations' results current, so a
reference run stopped in one session and continued after a commit in another records only what the change touched.
A change to comments or docstrings alone is no change of code (:func:`code_of` compares syntax trees).
"""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "ev2lib"
RUNTIME = ("torch", "torchvision", "numpy", "tqdm")  # pyproject.toml's dependencies: what a measurement runs on
PLUMBING = ("results", "errors")  # provenance, saving, exceptions: a change there changes no measured value


def runtime_pins(text: str) -> dict[str, str]:
    """``{package: pinned line}`` of the :data:`RUNTIME` packages in a requirements file's text."""
    pins = {}
    for line in text.splitlines():
        name = line.split("#")[0].split("==")[0].split(">=")[0].strip().lower()
        if name in RUNTIME:
            pins[name] = line.split("#")[0].strip()
    return pins


def imported_modules(module: str) -> set[str]:
    """ev2lib modules (file stems) that ``module`` needs: itself, ``__init__`` and everything they import."""
    todo, seen = [module, "__init__"], set()
    while todo:
        name = todo.pop()
        if name in seen or not (PACKAGE / f"{name}.py").exists():
            continue
        seen.add(name)
        for node in ast.walk(ast.parse((PACKAGE / f"{name}.py").read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level == 1 or (node.module or "").startswith("ev2lib")):
                base = (node.module or "").removeprefix("ev2lib").lstrip(".")
                # "from .train import x" -> train; "from . import results" -> results
                todo += [base.split(".")[0]] if base else [alias.name for alias in node.names]
            elif isinstance(node, ast.Import):
                todo += [a.name.split(".")[1] for a in node.names if a.name.startswith("ev2lib.")]
    return seen


def code_of(source: str) -> str:
    """What a module computes: its syntax tree without docstrings (comments never reach the tree)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


def code_changed(path: str, commit: str) -> bool:
    """Whether ``path`` at HEAD differs from ``path`` at ``commit`` in more than comments and docstrings."""
    then, now = (subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ROOT, capture_output=True, text=True)
                 for rev in (commit, "HEAD"))
    if then.returncode != 0 or now.returncode != 0:
        return True  # added or removed since
    try:
        return code_of(then.stdout) != code_of(now.stdout)
    except SyntaxError:
        return True


def stale_because(name: str) -> str | None:
    """None if the result ``name`` is current, else why it must be recorded again."""
    from ev2lib import results
    from ev2lib.errors import ResultsError

    try:
        record = results.load(name)
    except ResultsError as e:
        return str(e)
    words = record["command"].split()
    if "-m" not in words or not words[words.index("-m") + 1].startswith("ev2lib."):
        return f"its command {record['command']!r} does not run an ev2lib module"
    module = words[words.index("-m") + 1].split(".", 1)[1]
    paths = [f"ev2lib/{m}.py" for m in sorted(imported_modules(module) - set(PLUMBING))]
    commit = record["provenance"]["git_commit"]
    diff = subprocess.run(["git", "diff", "--name-only", commit, "HEAD", "--", *paths], cwd=ROOT,
                          capture_output=True, text=True)
    if diff.returncode != 0:
        return f"its commit {commit[:12]} is not in this repository"
    changed = [path for path in diff.stdout.split() if code_changed(path, commit)]
    then = subprocess.run(["git", "show", f"{commit}:ci/requirements.txt"], cwd=ROOT, capture_output=True, text=True)
    now = (ROOT / "ci" / "requirements.txt").read_text()
    if runtime_pins(then.stdout) != runtime_pins(now):
        changed.append("the pins of " + "/".join(RUNTIME) + " in ci/requirements.txt")
    return f"{', '.join(changed)} changed since {commit[:12]}" if changed else None


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python ci/current.py RESULT_NAME  (a file name in data/results, without .json)")
    why = stale_because(sys.argv[1])
    if why:
        print(f"[cpu_reference] recording {sys.argv[1]}: {why}", file=sys.stderr)
    sys.exit(1 if why else 0)
