"""Reference results (``data/results/``): every committed file is valid, a smoke run can never write one, and
save -> load round-trips with provenance."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ev2lib import results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "data" / "results"


def test_every_committed_result_is_valid():
    assert RESULTS.is_dir(), "data/results/ is the home of reference results; it must exist"
    problems = []
    for path in sorted(RESULTS.iterdir()):
        if path.name.startswith("."):
            continue
        if path.suffix == ".csv":  # a table that a JSON record with provenance describes
            if not path.with_suffix(".json").exists():
                problems.append(f"{path.name}: a CSV needs {path.stem}.json with its provenance")
            continue
        if path.suffix != ".json":
            problems.append(f"{path.name}: only .json records (and .csv tables beside them) belong here")
            continue
        try:
            record = results.load(path.stem, directory=RESULTS)
        except (results.ResultsError, ValueError) as e:
            problems.append(f"{path.name}: {e}")
            continue
        if record["name"] != path.stem:
            problems.append(f"{path.name}: its name field is {record['name']!r}")
        if record["profile"] == "smoke":
            problems.append(f"{path.name}: a smoke run is never a result")
    assert not problems, "\n".join(problems)


def test_smoke_records_go_only_into_a_rehearsal_folder(tmp_path):
    (tmp_path / results.REHEARSAL).write_text("rehearsal\n")
    path = results.save("fast_path_gpu", {"a": [1]}, config={}, command="python -m x", profile="smoke",
                        directory=tmp_path)
    assert json.loads(path.read_text())["profile"] == "smoke" and results.is_rehearsal(tmp_path)
    with pytest.raises(results.ResultsError, match="profile 'smoke'"):  # read as a result, it is not one
        results.validate(json.loads(path.read_text()))
    assert not (ROOT / "data" / "results" / results.REHEARSAL).exists(), "data/results must never be a rehearsal folder"


def test_save_refuses_smoke(tmp_path):
    with pytest.raises(results.ResultsError, match="smoke"):
        results.save("x", {"a": [1]}, config={}, command="python -m x", profile="smoke", directory=tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(results.ResultsError, match="smoke"):  # nor into the repository's folder
        results.save("never_written", {"a": [1]}, config={}, command="python -m x", profile="smoke")
    assert not (RESULTS / "never_written.json").exists()


def test_round_trip_in_tmp_dir(tmp_path):
    data = {"epoch": [1, 2], "top1": [0.1, 0.2]}
    path = results.save("demo", data, config={"lr": 0.1}, command="python -m ev2lib.demo --epochs 2",
                        profile="cpu-reference", directory=tmp_path)
    assert path == tmp_path / "demo.json"
    record = results.load("demo", directory=tmp_path)
    assert record["data"] == data and record["profile"] == "cpu-reference" and record["config"] == {"lr": 0.1}
    prov = record["provenance"]
    assert prov["device_type"] in ("cpu", "cuda") and prov["versions"]["torch"]
    assert results.list_results(tmp_path) == ["demo"]
    cap = results.caption(record)
    assert "profile cpu-reference" in cap and prov["hardware"] in cap


@pytest.mark.parametrize("breakage", ["missing", "profile", "command", "commit"])
def test_validate_rejects_bad_records(tmp_path, breakage):
    results.save("r", {"v": [1]}, config={}, command="cmd", profile="colab", directory=tmp_path)
    record = json.loads((tmp_path / "r.json").read_text())
    if breakage == "missing":
        del record["provenance"]
    elif breakage == "profile":
        record["profile"] = "smoke"
    elif breakage == "command":
        record["command"] = " "
    else:
        record["provenance"]["git_commit"] = "abc"
    with pytest.raises(results.ResultsError):
        results.validate(record)
    (tmp_path / "r.json").write_text("{not json")
    with pytest.raises(results.ResultsError, match="not valid JSON"):
        results.load("r", directory=tmp_path)


def test_results_folder_comes_from_argument_environment_or_the_nearest_data_results(tmp_path, monkeypatch):
    monkeypatch.delenv("EV2_RESULTS_DIR", raising=False)
    (tmp_path / "repo" / "data" / "results").mkdir(parents=True)
    (tmp_path / "repo" / "book").mkdir()
    monkeypatch.chdir(tmp_path / "repo" / "book")
    assert results.results_dir() == (tmp_path / "repo" / "data" / "results").resolve()
    monkeypatch.setenv("EV2_RESULTS_DIR", str(tmp_path / "elsewhere"))
    assert results.results_dir() == tmp_path / "elsewhere" and results.results_dir(tmp_path) == tmp_path
    with pytest.raises(results.ResultsError, match="set EV2_RESULTS_DIR"):
        results.load("absent")


@pytest.mark.slow
def test_a_regular_install_finds_the_reference_results_from_the_book_folder(tmp_path):
    """``pip install .`` (not editable) puts no repository path in the library: run from book/, it still finds
    data/results, as a chapter does."""
    import os
    import shutil
    import subprocess
    import sys

    src, site = tmp_path / "src", tmp_path / "site"  # build from a copy: no build/ folder in the checkout
    shutil.copytree(ROOT / "ev2lib", src / "ev2lib", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, src / name)
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(site), str(src)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    env = {k: v for k, v in os.environ.items() if k not in ("EV2_RESULTS_DIR", "PYTHONPATH")}
    code = ("import ev2lib, pathlib; from ev2lib import results; "
            "assert pathlib.Path(ev2lib.__file__).parent.parent.name == 'site', ev2lib.__file__; "
            "print(results.load('train_cifar10_cpu')['name'])")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT / "book", env={**env, "PYTHONPATH": str(site)},
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stdout.strip() == "train_cifar10_cpu", r.stderr[-2000:]


def test_every_profile_registry_uses_the_same_names():
    from ev2lib import ablations, proxy, recipe, train, transfer

    for name, registry in (("train.PROFILES", train.PROFILES), ("proxy.PROXIES", proxy.PROXIES),
                           ("proxy.LONG_PROXIES", proxy.LONG_PROXIES),
                           ("ablations.PROFILES", ablations.PROFILES), ("recipe.SCALES", recipe.SCALES),
                           ("transfer.EXPERIMENTS", transfer.EXPERIMENTS)):
        assert set(registry) == set(results.PROFILES), f"{name} has {sorted(registry)}, not {results.PROFILES}"


def ablation_problems(record: dict) -> list[str]:
    """What an ablation result must show to count (issue 23): recorded from committed code, a validation split,
    three seeds a cell, its calibration gate (the unregularized fixed-size run fits its training images, a tuned
    level that is not the weakest), paired intervals; Table 12's progressive run ends at the tuned level, Table 13
    holds the time-averaged control and draws random sizes per seed."""
    d, problems = record["data"], []
    prof, table, summary = d["profile"], d["table"], d["summary"]
    if record["provenance"]["git_dirty"]:
        problems.append("recorded from uncommitted code (git_dirty)")
    if not prof.get("val_images"):
        problems.append("no validation split: choices would be made on the test split")
    if min(len(c["runs"]) for c in d["cells"]) < 3:
        problems.append("fewer than 3 seeds in a cell")
    gate = summary.get("gate") or {}
    fit = (gate.get("unregularized_train_acc") or {}).get("mean")
    if fit is None or fit < prof["min_train_acc"] or prof["min_train_acc"] < 0.95:
        problems.append(f"the unregularized fixed-size run reaches {fit} training accuracy (< 0.95): it underfits")
    levels = list(prof["levels"])
    if gate.get("tuned_level") not in levels[1:]:
        problems.append(f"tuned level {gate.get('tuned_level')!r} is the weakest (or unknown): nothing to ramp to")
    if table == 12 and summary.get("progressive_ends_at") != prof["levels"].get(gate.get("tuned_level")):
        problems.append("Table 12's progressive run does not end at the tuned baseline's regularization")
    if table == 13:
        if "test_acc_diff_adaptive_minus_time_averaged" not in summary:
            problems.append("Table 13 lacks the time-averaged control")
        if len({tuple(s) for s in summary.get("random_sizes", {}).values()}) < 2:
            problems.append("random resize uses one size sequence for every seed")
    pairs = [v for v in summary.values() if isinstance(v, dict) and v.get("values")]
    if table != 5 and (not pairs or any(v.get("ci95") is None for v in pairs)):
        problems.append("paired differences without 95% intervals")
    return problems


ABLATIONS = sorted(p.stem for p in RESULTS.glob("ablations_table*.json"))


@pytest.mark.parametrize("name", ABLATIONS or ["(none recorded yet)"])
def test_ablation_results_meet_the_standard(name):
    if not ABLATIONS:
        pytest.skip("no ablation result recorded yet (bash ci/cpu_reference.sh)")
    assert ablation_problems(results.load(name, directory=RESULTS)) == []


def test_the_ablation_standard_rejects_the_designs_issue_23_found():
    """Negative controls: the 10,000-image grid that underfit (training accuracy 0.82, tuned level "none") and
    whose progressive run ended at the strong level, recorded from a dirty tree, and a Table 13 without the
    control whose random sizes were one sequence for every seed."""
    levels = {"none": [0, 0.0, 0.0], "light": [5, 0.0, 0.1], "strong": [15, 0.2, 0.3]}
    runs = [{"seed": s} for s in range(3)]
    diff = {"mean": -0.14, "ci95": [-0.2, -0.1], "n": 3, "values": [-0.1, -0.15, -0.17]}
    gate = {"unregularized_train_acc": {"mean": 0.82}, "tuned_level": "none"}
    old = {"provenance": {"git_dirty": True},
           "data": {"table": 12, "profile": {"val_images": 2000, "levels": levels, "min_train_acc": 0.95},
                    "cells": [{"runs": runs}], "summary": {"gate": gate, "progressive_ends_at": [15, 0.2, 0.3],
                                                             "test_acc_diff_progressive_minus_tuned": diff}}}
    assert len(ablation_problems(old)) == 4
    good_gate = {"unregularized_train_acc": {"mean": 1.0}, "tuned_level": "light"}
    t13 = {"provenance": {"git_dirty": False},
           "data": {"table": 13, "profile": {"val_images": 2000, "levels": levels, "min_train_acc": 0.95},
                    "cells": [{"runs": runs}], "summary": {"gate": good_gate, "test_acc_gain_adaptive_random": diff,
                                                             "random_sizes": {"0": [16, 32], "1": [16, 32]}}}}
    assert ablation_problems(t13) == ["Table 13 lacks the time-averaged control",
                                      "random resize uses one size sequence for every seed"]
    t13["data"]["summary"].update(test_acc_diff_adaptive_minus_time_averaged=diff, random_sizes={"0": [16], "1": [32]})
    assert ablation_problems(t13) == []


def transfer_problems(record: dict) -> list[str]:
    """What the offline transfer experiment must show to count (issues 13, 23): both methods at three or more target
    sizes and a scratch arm with more steps at the largest, each with its learning rate chosen on a validation split,
    three seeds, paired intervals."""
    from ev2lib.transfer import LONG

    d, problems = record["data"], []
    if not d["experiment"].get("val_images"):
        problems.append("no validation split: the learning rates would be chosen on the test split")
    sizes, cells = {c["size"] for c in d["cells"]}, {(c["method"], c["size"]) for c in d["cells"]}
    if len(sizes) < 3 or not {(m, s) for m in ("fine-tuned", "scratch") for s in sizes} <= cells:
        problems.append("not both methods at three or more target sizes")
    if (LONG, max(sizes)) not in cells or not d["summary"]["test_acc_gain_finetuned_minus_longer_scratch"]:
        problems.append(f"no {LONG!r} arm at the largest size: the gain cannot be told from the budget")
    if min(c["test_acc"]["n"] for c in d["cells"]) < 3:
        problems.append("fewer than 3 finished seeds per cell")
    if any(len(c["tuning"]) < 2 for c in d["cells"]):
        problems.append("a learning rate not tuned (a grid of one)")
    gains = d["summary"]["test_acc_gain_finetuned_minus_scratch"]
    if len(gains) < len(sizes) or any(v["ci95"] is None for v in gains.values()):
        problems.append("paired differences without 95% intervals")
    return problems


TRANSFER = sorted(p.stem for p in RESULTS.glob("transfer_*.json"))


@pytest.mark.parametrize("name", TRANSFER or ["(none recorded yet)"])
def test_transfer_results_meet_the_standard(name):
    if not TRANSFER:
        pytest.skip("no transfer result recorded yet (bash ci/cpu_reference.sh)")
    assert transfer_problems(results.load(name, directory=RESULTS)) == []


def test_the_transfer_standard_rejects_a_smoke_shaped_run():
    """Negative control: what the smoke profile produces (one size, one seed, one learning rate, no longer scratch
    arm) fails."""
    from ev2lib.transfer import summarize_transfer

    cells = [{"method": m, "size": 128, "lr": 1e-3, "tuning": [{}], "runs": [{"seed": 0, "test_acc": a}],
              "test_acc": {"mean": a, "ci95": None, "n": 1}} for m, a in (("fine-tuned", 0.5), ("scratch", 0.4))]
    smoke = {"data": {"experiment": {"val_images": 500}, "cells": cells, "summary": summarize_transfer(cells)}}
    assert len(transfer_problems(smoke)) == 5


def _current_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ci_current", ROOT / "ci" / "current.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_code_of_a_result_is_the_modules_its_command_imports_without_plumbing():
    ablation = set(results.code_digests("ablations"))
    assert {"ablations", "train", "data", "augment", "model", "progressive", "stats"} <= ablation
    assert not {"search", "nas", "proxy", "book", "report", "results", "errors", "__init__"} & ablation  # not run by it
    assert {"search", "proxy", "nas", "bench", "train", "model"} <= set(results.code_digests("search"))
    assert results.command_module("python -m ev2lib.ablations --table 12 --save") == "ablations"


def test_the_code_of_a_module_is_written_alike_by_every_python():
    # 3.11's ast.dump: 3.12 would add type_params=[] to the function, 3.13 drop the empty lists
    assert results.code_of("def f(x):\n    'doc'\n    return x  # comment\n") == (
        "Module(body=[FunctionDef(name='f', args=arguments(posonlyargs=[], args=[arg(arg='x')], kwonlyargs=[], "
        "kw_defaults=[], defaults=[]), body=[Return(value=Name(id='x', ctx=Load()))], decorator_list=[])], "
        "type_ignores=[])")


def _other_pythons():
    """Other CPython 3.9+ interpreters on this machine (pyenv's, or python3.N on the PATH)."""
    import glob
    import shutil

    found = {*glob.glob(os.path.expanduser("~/.pyenv/versions/3.*/bin/python3")),
             *filter(None, (shutil.which(f"python3.{n}") for n in range(9, 15)))}
    mine = f"{sys.version_info[0]}.{sys.version_info[1]}"
    by_version = {}
    for exe in sorted(found):
        v = subprocess.run([exe, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"], capture_output=True,
                           text=True).stdout.strip()
        if v and v != mine and tuple(map(int, v.split("."))) >= (3, 9):
            by_version.setdefault(v, exe)
    return by_version


def test_a_result_recorded_on_another_python_is_current_here():
    """The GPU machine and Colab run Python 3.12; the code digests they record must match this Python's."""
    pythons = _other_pythons()
    if not pythons:
        pytest.skip("no other Python on this machine")
    # code_of alone, from results.py's source (the other interpreter has no torch to import ev2lib with)
    script = ("import ast, hashlib, json, sys, pathlib\n"
              "src = pathlib.Path(sys.argv[1]).read_text()\n"
              "fn = next(n for n in ast.parse(src).body if isinstance(n, ast.FunctionDef) and n.name == 'code_of')\n"
              "ns = {'ast': ast, 'sys': sys}\n"
              "exec(compile(ast.Module(body=[fn], type_ignores=[]), 'code_of', 'exec'), ns)\n"
              "print(json.dumps({p.stem: hashlib.sha256(ns['code_of'](p.read_text()).encode()).hexdigest()[:16]\n"
              "                  for p in sorted(pathlib.Path(sys.argv[2]).glob('*.py'))}))\n")
    here = {p.stem: hashlib.sha256(results.code_of(p.read_text()).encode()).hexdigest()[:16]
            for p in sorted((ROOT / "ev2lib").glob("*.py"))}
    for version, exe in pythons.items():
        proc = subprocess.run([exe, "-c", script, str(ROOT / "ev2lib" / "results.py"), str(ROOT / "ev2lib")],
                              capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        there = json.loads(proc.stdout)
        assert there == here, f"Python {version} digests differ in {sorted(m for m in here if there.get(m) != here[m])}"


def _package_copy(tmp_path):
    import shutil

    shutil.copytree(ROOT / "ev2lib", tmp_path / "ev2lib", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path / "ev2lib"


def test_a_result_is_current_until_the_code_it_ran_changes(tmp_path, monkeypatch):
    package = _package_copy(tmp_path)
    monkeypatch.setenv("EV2_RESULTS_DIR", str(tmp_path / "results"))
    record = results.load(results.save("probe", {"x": 1}, config={}, profile="cpu-reference",
                                       command="python -m ev2lib.summary efficientnetv2_s").stem)
    assert set(record["provenance"]["code"]) == {"summary", "model", "blocks", "configs", "scaling", "weights"}
    assert results.stale_modules(record, package) == []
    source = (package / "model.py").read_text()
    (package / "model.py").write_text(source.replace('"""The network builder', '"""Reworded: the builder', 1)
                                      + "\n# a comment\n")
    assert results.stale_modules(record, package) == []  # comments and docstrings are not code
    (package / "model.py").write_text(source.replace("stride=s.stride", "stride=s.stride  # same", 1)
                                      .replace("idx += 1", "idx += 2", 1))
    assert results.stale_modules(record, package) == ["model"]
    (package / "book.py").write_text("x = 1\n")  # display code: no run imports it
    assert results.stale_modules(record, package) == ["model"]
    legacy = {**record, "provenance": {k: v for k, v in record["provenance"].items() if k != "code"}}
    assert "summary" in results.stale_modules(legacy, package)  # recorded without digests: always stale


def test_run_caches_follow_the_same_rule(tmp_path):
    package = _package_copy(tmp_path)
    before = results.code_digests("ablations", package)
    (package / "book.py").write_text("y = 2\n")
    assert results.code_digests("ablations", package) == before  # display code changes no cached run
    (package / "augment.py").write_text((package / "augment.py").read_text().replace("PAD = 4", "PAD = 2"))
    assert results.code_digests("ablations", package)["augment"] != before["augment"]


def test_current_also_checks_the_runtime_pins_of_a_cpu_reference(tmp_path, monkeypatch):
    current = _current_module()
    pins = "torch==2.14.1\ntorchvision==0.29.1\nnumpy==2.4.6\ntqdm==4.70.1\njupyter-book==1.0.4.post1\n"
    assert current.runtime_pins(pins) == {"torch": "2.14.1", "torchvision": "0.29.1", "numpy": "2.4.6"}
    monkeypatch.setenv("EV2_RESULTS_DIR", str(tmp_path))
    path = results.save("pinned", {"x": 1}, config={}, profile="cpu-reference", command="python -m ev2lib.summary")
    assert current.stale_because("pinned") is None  # the venv runs the pins
    record = json.loads(path.read_text())
    record["provenance"]["versions"]["torch"] = "2.9.0+cpu"
    path.write_text(json.dumps(record))
    assert "torch 2.9.0+cpu -> 2.14.1" in current.stale_because("pinned")
    assert "not in the results folder" in current.stale_because("no_such_result")


def test_provenance_names_the_checkout_of_the_package_wherever_the_results_go(tmp_path, monkeypatch):
    """The GPU kit writes into OUT outside the checkout: the commit is still the checkout's, and a copy of the
    package outside any checkout records "unknown", which validate refuses."""
    import subprocess

    monkeypatch.chdir(tmp_path)
    path = results.save("outside", {"x": 1}, config={}, profile="colab", command="python -m ev2lib.summary",
                        directory=tmp_path / "OUT" / "results")
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    assert json.loads(path.read_text())["provenance"]["git_commit"] == head
    record = json.loads(path.read_text())
    record["provenance"]["git_commit"] = "unknown"
    with pytest.raises(results.ResultsError, match="not a commit"):
        results.validate(record)


def test_git_dirty_ignores_results_and_notebooks_but_not_the_code(tmp_path):
    import shutil
    import subprocess

    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "ev2lib", repo / "ev2lib", ignore=shutil.ignore_patterns("__pycache__"))
    (repo / "data" / "results").mkdir(parents=True)
    (repo / "data" / "results" / "old.json").write_text("{}")
    git = lambda *a: subprocess.run(["git", "-C", str(repo), *a], capture_output=True, text=True, check=True)  # noqa: E731
    git("init", "-q")
    git("-c", "user.email=a@b", "-c", "user.name=a", "add", ".")
    git("-c", "user.email=a@b", "-c", "user.name=a", "commit", "-qm", "x")
    code = ("import sys; sys.path.insert(0, sys.argv[1]); from ev2lib import results; "
            "print(results.git_dirty(), results.git_commit()[:7])")
    run = lambda: subprocess.run([sys.executable, "-c", code, str(repo)], capture_output=True, text=True)  # noqa: E731
    import sys

    (repo / "data" / "results" / "old.json").write_text('{"new": 1}')  # a recording's own earlier write
    assert run().stdout.split()[0] == "False"
    (repo / "ev2lib" / "stats.py").write_text((repo / "ev2lib" / "stats.py").read_text() + "\nX = 1\n")
    assert run().stdout.split()[0] == "True"
