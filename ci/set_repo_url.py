"""Propagate the repository URL from ``_config.yml`` (``repository.url`` and ``.branch``) to the places that
need it outside the book build, so a fork changes one setting:

* the ``REPO = "..."`` line of every chapter's guarded install cell (what Colab clones).

The library itself never holds the URL: a chapter on Colab reads reference results from its clone.

    python ci/set_repo_url.py          # rewrite them
    python ci/set_repo_url.py --check  # exit 1 and list what disagrees (tests/test_notebooks.py does the same)
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
REPO_LINE = re.compile(r'^(\s*REPO = )"[^"]*"', re.M)


def repository(root: Path = ROOT) -> tuple[str, str]:
    """(url, branch) from ``_config.yml``, e.g. ("https://github.com/ev2book/efficientnetv2-book", "main")."""
    cfg = yaml.safe_load((root / "_config.yml").read_text())
    repo = cfg.get("repository") or {}
    url = str(repo.get("url", "")).rstrip("/")
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise SystemExit(f"error: _config.yml repository.url {url!r} is not https://github.com/<owner>/<repo>")
    return url, str(repo.get("branch", "main"))


def notebooks(root: Path = ROOT) -> list[Path]:
    return sorted((root / "book").glob("*.ipynb"))


def expected(root: Path = ROOT) -> dict[Path, tuple[re.Pattern, str]]:
    """For each file: the pattern of its URL line and the URL it must hold."""
    url, _ = repository(root)
    return {nb: (REPO_LINE, url) for nb in notebooks(root)}


def mismatches(root: Path = ROOT) -> list[str]:
    """Files whose URL line is missing or differs from ``_config.yml``."""
    bad = []
    for path, (pattern, want) in expected(root).items():
        text = path.read_text()
        if pattern is REPO_LINE:  # notebooks are JSON: the line is inside a string, with escaped quotes
            found = re.findall(r'REPO = \\"([^"\\]*)\\"', text)
        else:
            found = [m.group(0).split('"')[1] for m in pattern.finditer(text)]
        if not found or any(f != want for f in found):
            bad.append(f"{path.relative_to(root)}: {found or 'no URL line'} != {want}")
    return bad


def rewrite(root: Path = ROOT) -> list[Path]:
    """Set every URL line to the ``_config.yml`` value; return the files that changed."""
    changed = []
    for path, (pattern, want) in expected(root).items():
        text = path.read_text()
        if pattern is REPO_LINE:
            new = re.sub(r'(REPO = \\")[^"\\]*(\\")', lambda m: m.group(1) + want + m.group(2), text)
        else:
            new = pattern.sub(lambda m: m.group(1) + f'"{want}"', text)
        if new != text:
            path.write_text(new)
            changed.append(path)
    return changed


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python ci/set_repo_url.py", description=__doc__.split("\n")[0])
    p.add_argument("--check", action="store_true", help="only report files that disagree with _config.yml")
    args = p.parse_args(argv)
    if args.check:
        bad = mismatches()
        for line in bad:
            print(f"mismatch: {line}")
        return 1 if bad else 0
    for path in rewrite():
        print(f"updated {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
