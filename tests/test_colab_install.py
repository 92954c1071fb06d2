"""The chapters' Colab install (``pip install -e ev2book[chapters]``) changes nothing but ev2lib on a runtime that
holds older packages than this project pins (Colab's own: matplotlib 3.7, seaborn 0.12, pandas 1.5, numpy 1.26,
ipywidgets 7, ipykernel 6), and the chapter helpers work with ipywidgets 7 as with 8.

The older packages are real: pip installs them (from the package registry, ~500 MB with their dependencies, cached
in ``_build/colab_like/``) into a folder that goes first on ``PYTHONPATH``, in front of this environment's torch and
torchvision. pip's resolver then sees exactly what such a runtime holds; ``--dry-run --report`` says what an install
would add or change, without doing it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OLDER = ("matplotlib==3.7.1", "seaborn==0.12.2", "pandas==1.5.3", "numpy==1.26.4", "ipywidgets==7.7.1",
         "ipykernel==6.17.1")
FOLDER = ROOT / "_build" / "colab_like"

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def older_env() -> dict:
    """Environment variables under which Python sees the older packages first."""
    done = FOLDER / ".installed"
    if not done.exists() or done.read_text() != "\n".join(OLDER):
        proc = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(FOLDER), "--upgrade",
                               *OLDER], capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.fail("could not install the older packages from the package registry (needed to resolve the "
                        f"Colab install against them): {proc.stderr.strip().splitlines()[-1:]}")
        done.write_text("\n".join(OLDER))
    return {**os.environ, "PYTHONPATH": str(FOLDER)}


def _would_install(env: dict, *extra: str) -> list[str]:
    """Names pip would install or change for the chapters' install (plus ``extra`` requirements)."""
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--quiet", "--report", "-",
                           "-e", f"{ROOT}[chapters]", *extra], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return sorted(item["metadata"]["name"].lower() for item in json.loads(proc.stdout)["install"])


def test_the_older_packages_are_what_python_sees(older_env):
    code = ("import matplotlib, seaborn, pandas, numpy, ipywidgets, ipykernel; print(matplotlib.__version__, "
            "seaborn.__version__, pandas.__version__, numpy.__version__, ipywidgets.__version__, ipykernel.__version__)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=older_env).stdout.split()
    assert out == [p.split("==")[1] for p in OLDER]


def test_chapters_install_changes_nothing_but_ev2lib(older_env):
    assert _would_install(older_env) == ["ev2lib"]


def test_the_check_sees_a_requirement_colab_does_not_meet(older_env):
    # Negative control: a lower bound above the older packages would replace them, and the check says so.
    assert _would_install(older_env, "matplotlib>=3.8", "ipywidgets>=8") == ["ev2lib", "ipywidgets", "matplotlib",
                                                                             "widgetsnbextension"]


def test_the_chapters_install_cell_installs_the_chapters_extra():
    import nbformat

    for nb_path in sorted((ROOT / "book").glob("*.ipynb")):
        install = nbformat.read(nb_path, as_version=4).cells[2].source
        assert '"ev2book[chapters]"' in install and "[book]" not in install, nb_path.name


def test_chapter_helpers_work_with_ipywidgets_7(older_env):
    code = """
import ipywidgets, matplotlib
matplotlib.use("Agg")
from ev2lib import book
seen = []
w = book.explorer(lambda n, name: seen.append((n, name)), n=(1, 5), name=["a", "b"])
book.style()
fig, axes = book.subplots(3)
print(ipywidgets.__version__, seen[-1], len(axes))
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=older_env, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "7.7.1 (3, 'a') 3"
