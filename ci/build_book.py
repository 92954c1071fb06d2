"""Execute every chapter of the book with papermill, then build the HTML with Jupyter Book 1.

    python ci/build_book.py --profile smoke            # what CI and `bash ci/book.sh` run
    python ci/build_book.py --profile colab --chapters book/anatomy --no-html

1. Stage the book in ``_build/book_exec/`` (the same layout as the repository: ``_config.yml``, ``_toc.yml``,
   ``_static/`` (the book's CSS), ``book/``, plus a copy of ``ev2lib/`` so ``../ev2lib/...`` literalinclude paths
   resolve).
2. Execute every notebook listed in ``_toc.yml`` with ``papermill -k python3 -p profile <profile>``, working
   directory = the staged ``book/``, each under a wall-clock budget (a killed chapter fails the build), and report
   a table of chapter, profile, seconds. An executed notebook with an error output fails the build with the
   chapter's name and the failing cell; papermill's ``injected-parameters`` cell is retagged ``remove-cell`` (plumbing: every live
   number's caption names the profile).
3. ``jupyter-book build _build/book_exec --all -W -n --keep-going`` (execution off): any warning fails.

Exit status 0 and the path of ``index.html`` on success; 1 and a one-line reason per failure otherwise.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parent.parent
# Wall-clock seconds per chapter (papermill start to finish, kernel start included).
BUDGETS = {"smoke": 180, "colab": 3600, "full": 24 * 3600}
PROFILES = tuple(BUDGETS)


class BookError(Exception):
    """A chapter or the build failed; the message says which and why."""


def toc_files(toc_path: Path) -> list[str]:
    """Every ``file:`` entry of a Jupyter Book 1 ``_toc.yml`` (root first, in reading order), without suffix."""
    toc = yaml.safe_load(toc_path.read_text()) or {}
    out = [toc["root"]] if "root" in toc else []

    def walk(node):
        if isinstance(node, dict):
            if "file" in node:
                out.append(str(node["file"]))
            for key in ("chapters", "parts", "sections"):
                walk(node.get(key))
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(toc)
    return [str(Path(f).with_suffix("")) if Path(f).suffix in (".ipynb", ".md") else f for f in out]


def chapters(root: Path) -> list[str]:
    """The notebooks (``book/<slug>.ipynb``, relative to ``root``) listed in ``root/_toc.yml``, in order."""
    return [f + ".ipynb" for f in toc_files(root / "_toc.yml") if (root / (f + ".ipynb")).exists()]


def stage(root: Path, out: Path) -> None:
    """Copy the book's sources into ``out`` with the repository's layout (a fresh copy each time)."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(root / name, out / name)
    ignore = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", "_build")
    if (root / "_static").is_dir():  # the book's own CSS (Jupyter Book loads every .css file there)
        shutil.copytree(root / "_static", out / "_static", ignore=ignore)
    for f in toc_files(root / "_toc.yml"):  # every folder that holds a page (normally just book/)
        top = Path(f).parts[0] if len(Path(f).parts) > 1 else None
        if top and not (out / top).exists():
            shutil.copytree(root / top, out / top, ignore=ignore)
    for f in toc_files(root / "_toc.yml"):  # top-level pages, if any
        for suffix in (".md", ".ipynb"):
            src = root / (f + suffix)
            if src.exists() and not (out / (f + suffix)).exists():
                shutil.copy2(src, out / (f + suffix))
    if (root / "ev2lib").is_dir():  # literalinclude ../ev2lib/<module>.py from book/
        shutil.copytree(root / "ev2lib", out / "ev2lib", ignore=ignore)


ANSI = re.compile(r"\x1b\[[0-9;]*m")
ADDED_BY_PAPERMILL = ("injected-parameters", "papermill-error-cell-tag")


def _failing_cell(nb):
    """(index in the source notebook, cell, error output) of the first cell with an error, or None."""
    index = -1
    for cell in nb.cells:
        if any(t in cell.metadata.get("tags", []) for t in ADDED_BY_PAPERMILL):
            continue  # cells papermill added: not in the chapter's source
        index += 1
        for o in cell.get("outputs", []):
            if o.get("output_type") == "error":
                return index, cell, o
    return None


def _failing_line(cell, error) -> str:
    """The source line the traceback points at in the failing cell (IPython marks it ``---->``)."""
    for frame in error.get("traceback", []):
        for line in ANSI.sub("", frame).splitlines():
            m = re.match(r"\s*----> ?(\d+)\s?(.*)", line)
            if m:
                return m.group(2).strip()
    src = [line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    return src[-1].strip() if src else ""


def check_executed(path: Path, chapter: str) -> None:
    """Raise :class:`BookError` naming ``chapter`` and its failing cell if the executed notebook has an error."""
    nb = nbformat.read(path, as_version=4)
    hit = _failing_cell(nb)
    if hit is None:
        return
    i, cell, o = hit
    raise BookError(f"chapter {chapter} failed in cell {i} (In [{cell.get('execution_count')}], counting cells from 0 "
                    f"in the source notebook) at `{_failing_line(cell, o)}`: {o.get('ename')}: {o.get('evalue')}")


def retag_parameters(path: Path) -> None:
    """Remove papermill's ``injected-parameters`` cell from the page, like the chapter's own parameters cell (the
    captions of live numbers name the profile)."""
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        tags = cell.metadata.get("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            cell.metadata["tags"] = tags + ["remove-cell"]
    nbformat.write(nb, path)


def execute(chapter: str, out: Path, profile: str, budget: float, log=print, params: dict | None = None,
            dst: Path | None = None, env: dict | None = None) -> float:
    """Run one chapter (``out / chapter``) with papermill in a subprocess killed, with its kernel, after ``budget``
    seconds; the executed copy replaces it (or goes to ``dst``). ``params``: further papermill parameters. Returns
    its wall time; a failure raises :class:`BookError` naming the failing cell. The GPU kit runs chapters with it."""
    src, dst = out / chapter, dst or out / chapter
    executed = dst.with_suffix(".executed.ipynb")
    env = dict(env or os.environ)
    if env.pop("MPLBACKEND", None):
        log("[book] MPLBACKEND unset for execution (it silently drops inline figures)")
    cmd = [sys.executable, "-m", "papermill", str(src), str(executed), "-k", "python3", "--cwd", str(src.parent),
           "-p", "profile", profile, *[a for k, v in (params or {}).items() for a in ("-p", k, v)],
           "--no-progress-bar", "--log-output"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    try:
        logs, _ = proc.communicate(timeout=budget)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # papermill and its kernel
        proc.communicate()
        raise BookError(f"chapter {chapter} exceeded its time budget of {budget:.0f} s (profile {profile})") from None
    seconds = time.perf_counter() - t0
    if executed.exists():
        check_executed(executed, chapter)  # names the failing cell
    if proc.returncode != 0 or not executed.exists():
        tail = "\n".join(logs.strip().splitlines()[-15:])
        raise BookError(f"chapter {chapter} failed (papermill exit {proc.returncode}):\n{tail}")
    os.replace(executed, dst)
    retag_parameters(dst)
    return seconds


def report(rows: list[tuple[str, str, float | None, str]], budget: float) -> str:
    """The per-chapter time table: chapter, profile, seconds, budget, status."""
    lines = [f"| {'chapter':<28} | {'profile':<7} | {'seconds':>7} | {'budget':>6} | status |",
             f"|{'-' * 30}|{'-' * 9}|{'-' * 9}|{'-' * 8}|--------|"]
    for chapter, profile, seconds, status in rows:
        s = f"{seconds:7.1f}" if seconds is not None else "      -"
        lines.append(f"| {chapter:<28} | {profile:<7} | {s} | {budget:>6.0f} | {status} |")
    return "\n".join(lines)


def build_html(out: Path, log=print) -> Path:
    """``jupyter-book build`` with warnings as errors on the staged (executed) book; return index.html."""
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(out), "--all", "-W", "-n", "--keep-going"]
    log("[book] " + " ".join(cmd))
    env = dict(os.environ)
    env.pop("MPLBACKEND", None)
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        text = proc.stdout + proc.stderr
        warnings = [line for line in text.splitlines() if "WARNING" in line or "ERROR" in line]
        detail = "\n".join(warnings[:30]) or "\n".join(text.strip().splitlines()[-30:])
        raise BookError(f"jupyter-book build failed (exit {proc.returncode}):\n{detail}")
    index = out / "_build" / "html" / "index.html"
    if not index.exists():
        raise BookError(f"jupyter-book build succeeded but {index} is missing")
    return index


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python ci/build_book.py", description=__doc__.split("\n")[0])
    p.add_argument("--profile", default="smoke", choices=PROFILES, help="papermill parameter `profile`")
    p.add_argument("--root", type=Path, default=ROOT, help="folder with _toc.yml, _config.yml and book/")
    p.add_argument("--out", type=Path, default=None, help="staging folder (default: <root>/_build/book_exec)")
    p.add_argument("--chapters", nargs="*", default=None, help="only these chapters (e.g. book/anatomy)")
    p.add_argument("--budget", type=float, default=None, help="seconds per chapter (default: by profile)")
    p.add_argument("--jobs", type=int, default=1, help="chapters executed at once (CI's tests: 2, one per core)")
    p.add_argument("--no-html", action="store_true", help="execute only; skip jupyter-book build")
    args = p.parse_args(argv)
    root = args.root.resolve()
    out = (args.out or root / "_build" / "book_exec").resolve()
    budget = args.budget or BUDGETS[args.profile]

    listed = chapters(root)
    missing = [f for f in toc_files(root / "_toc.yml")
               if not (root / (f + ".ipynb")).exists() and not (root / (f + ".md")).exists()]
    if missing:
        print(f"error: _toc.yml lists pages that do not exist: {', '.join(missing)}", file=sys.stderr)
        return 1
    if args.chapters:
        wanted = {str(Path(c).with_suffix("")) for c in args.chapters}
        unknown = wanted - {c[:-6] for c in listed}
        if unknown:
            print(f"error: not chapters in _toc.yml: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 1
        listed = [c for c in listed if c[:-6] in wanted]

    stage(root, out)
    env = dict(os.environ)
    if args.jobs > 1:  # kernels side by side share the cores instead of each spinning on all of them
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.jobs)))

    def run_one(chapter):
        print(f"[book] executing {chapter} (profile {args.profile}, budget {budget:.0f} s)", flush=True)
        t0 = time.perf_counter()
        try:
            return (chapter, args.profile, execute(chapter, out, args.profile, budget, env=env), "ok"), None
        except BookError as e:
            print(f"[book] FAILED: {e}", flush=True)
            return (chapter, args.profile, time.perf_counter() - t0, "FAILED"), str(e)

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # each chapter runs in its own papermill process
        done = list(pool.map(run_one, listed))
    rows, failures = [row for row, _ in done], [e for _, e in done if e]
    table = report(rows, budget)
    print(table)
    (out / "timings.json").write_text(json.dumps(
        [{"chapter": c, "profile": pr, "seconds": round(s, 1), "budget": budget,
          "status": st} for c, pr, s, st in rows], indent=1) + "\n")
    if failures:
        print("error: " + "\nerror: ".join(failures), file=sys.stderr)
        return 1
    if args.no_html:
        print(f"[book] executed notebooks are in {out}")
        return 0
    t0 = time.perf_counter()
    try:
        index = build_html(out)
    except BookError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(f"[book] HTML built in {time.perf_counter() - t0:.1f} s, zero warnings")
    print(f"[book] open {index}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
