"""Reference results (``data/results/``): every committed file is valid, a smoke run can never write one, and
save -> load round-trips with provenance."""
from __future__ import annotations

import json
import re
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
    from ev2lib import ablations, nas, train, transfer

    for name, registry in (("train.PROFILES", train.PROFILES), ("nas.PROXIES", nas.PROXIES),
                           ("ablations.PROFILES", ablations.PROFILES), ("transfer.SCALES", transfer.SCALES),
                           ("transfer.EXPERIMENTS", transfer.EXPERIMENTS)):
        assert set(registry) == set(results.PROFILES), f"{name} has {sorted(registry)}, not {results.PROFILES}"


def ablation_problems(record: dict) -> list[str]:
    """What an ablation result must show to count (issue 11): enough data, seeds, a validation split for every
    choice, a regime where the best configuration is good, and intervals on the paired differences."""
    d, problems = record["data"], []
    prof, table = d["profile"], d["table"]
    if prof["train_subset"] and prof["train_subset"] < 10000:
        problems.append(f"trains on {prof['train_subset']} images (< 10,000)")
    if not prof.get("val_images"):
        problems.append("no validation split: choices would be made on the test split")
    seeds = {len(c["runs"]) for c in d["cells"]}
    if min(seeds) < (2 if table == 5 else 3):
        problems.append(f"{min(seeds)} seeds per cell (Table 5 needs 2, the others 3)")
    if max(c["test_acc_mean"] for c in d["cells"]) < 0.70:
        problems.append("the best configuration is below 70% test accuracy: not a regime that can show the effect")
    # A paired comparison that has no pairs (progressive never reached the baseline's accuracy) is an outcome,
    # not a missing interval; every comparison that has pairs needs its interval.
    paired = [v for v in d["summary"].values() if isinstance(v, dict) and v.get("values")]
    if table != 5 and (not paired or any(v.get("ci95") is None for v in paired)):
        problems.append("paired differences without 95% intervals")
    return problems


ABLATIONS = sorted(p.stem for p in RESULTS.glob("ablations_table*.json"))


@pytest.mark.parametrize("name", ABLATIONS or ["(none recorded yet)"])
def test_ablation_results_meet_the_standard(name):
    if not ABLATIONS:
        pytest.skip("no ablation result recorded yet (bash ci/cpu_reference.sh)")
    assert ablation_problems(results.load(name, directory=RESULTS)) == []


def test_the_ablation_standard_rejects_the_old_underfit_grid():
    """Negative control: the first CPU grid (2,000 images, no validation split, 20-34% accuracy) fails."""
    cell = {"runs": [{"seed": s} for s in range(3)], "test_acc_mean": 0.34}
    old = {"data": {"table": 12, "profile": {"train_subset": 2000}, "cells": [cell],
                    "summary": {"acc_diff": {"mean": 0.05, "std": 0.03, "n": 3, "values": [0.1, 0.02, 0.03]}}}}
    assert len(ablation_problems(old)) == 4


def transfer_problems(record: dict) -> list[str]:
    """What the offline transfer experiment must show to count (issue 13): both methods at three or more target
    sizes, each with its learning rate chosen on a validation split, three seeds, paired intervals."""
    d, problems = record["data"], []
    if not d["experiment"].get("val_images"):
        problems.append("no validation split: the learning rates would be chosen on the test split")
    sizes = {c["size"] for c in d["cells"]}
    if len(sizes) < 3 or {(m, s) for m in ("fine-tuned", "scratch") for s in sizes} != {(c["method"], c["size"]) for c in d["cells"]}:
        problems.append("not both methods at three or more target sizes")
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
    """Negative control: what the smoke profile produces (one size, one seed, one learning rate) fails."""
    from ev2lib.transfer import summarize_transfer

    cells = [{"method": m, "size": 128, "lr": 1e-3, "tuning": [{}], "runs": [{"seed": 0, "test_acc": a}],
              "test_acc": {"mean": a, "ci95": None, "n": 1}} for m, a in (("fine-tuned", 0.5), ("scratch", 0.4))]
    smoke = {"data": {"experiment": {"val_images": 500}, "cells": cells, "summary": summarize_transfer(cells)}}
    assert len(transfer_problems(smoke)) == 4


def _current_module():
    import importlib.util

    spec = importlib.util.spec_from_file_location("ci_current", ROOT / "ci" / "current.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_reference_script_knows_which_code_each_result_depends_on():
    current = _current_module()
    ablation = current.imported_modules("ablations")
    assert {"ablations", "train", "data", "model", "progressive", "files", "results", "__init__"} <= ablation
    assert not {"nas", "bench", "book"} & ablation  # a change to the search leaves the ablations current
    assert set(current.PLUMBING) == {"results", "errors"}  # imported, but they label and store, not compute
    assert {"nas", "bench", "train", "model"} <= current.imported_modules("nas")


def test_a_result_is_current_until_the_code_it_ran_changes(tmp_path, monkeypatch):
    import subprocess

    current = _current_module()
    monkeypatch.setenv("EV2_RESULTS_DIR", str(tmp_path))
    path = results.save("summary_probe", {"x": 1}, config={}, profile="cpu-reference",
                        command="python -m ev2lib.summary efficientnetv2_s")
    record = json.loads(path.read_text())

    def recorded_at(*rev):
        sha = subprocess.run(["git", *rev], cwd=ROOT, capture_output=True, text=True).stdout.split()[0]
        record["provenance"]["git_commit"] = sha
        path.write_text(json.dumps(record))

    recorded_at("rev-parse", "HEAD")
    assert current.stale_because("summary_probe") is None  # recorded at HEAD: nothing changed since
    recorded_at("rev-list", "--max-parents=0", "HEAD")  # the first commit: the summary code changed since
    why = current.stale_because("summary_probe")
    assert why and ("ev2lib/summary.py" in why or "not in this repository" in why), why
    assert "not in" in current.stale_because("no_such_result")


def test_hardware_says_thread_for_one_thread_also_in_older_records(tmp_path, monkeypatch):
    monkeypatch.setenv("EV2_RESULTS_DIR", str(tmp_path))
    path = results.save("thread_probe", {"x": 1}, config={}, profile="cpu-reference", command="python -m ev2lib.bench")
    record = json.loads(path.read_text())
    record["provenance"]["hardware"] = "Intel(R) Xeon(R) Processor (1 threads)"  # as hardware() wrote it before
    path.write_text(json.dumps(record))
    assert results.load("thread_probe")["provenance"]["hardware"] == "Intel(R) Xeon(R) Processor (1 thread)"
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert results.hardware("cpu")[0].endswith("(1 thread)")
    finally:
        torch.set_num_threads(threads)


def test_comments_and_docstrings_alone_leave_a_result_current():
    current = _current_module()
    before = 'def lr(step):\n    """Peak 0.4."""\n    return 0.4 * step  # linear warmup\n'
    reworded = '"""The schedule."""\ndef lr(step):\n    """Peak 0.4, §5.1."""\n    # warm up linearly\n    return 0.4 * step\n'
    assert current.code_of(reworded) == current.code_of(before)
    assert current.code_of(before.replace("0.4 * step", "0.2 * step")) != current.code_of(before)
    assert current.code_of(before.replace('"""Peak 0.4."""', "x = 1")) != current.code_of(before)


def test_only_the_runtime_pins_make_a_result_stale():
    current = _current_module()
    before = "torch==2.14.1\ntorchvision==0.29.1\nnumpy==2.4.6\ntqdm==4.70.1\njupyter-book==1.0.4.post1\n"
    assert current.runtime_pins(before) == {"torch": "torch==2.14.1", "torchvision": "torchvision==0.29.1",
                                            "numpy": "numpy==2.4.6", "tqdm": "tqdm==4.70.1"}
    book_tooling = before.replace("jupyter-book==1.0.4.post1", "jupyter-book==1.0.5") + "sphinx-mathjax-offline==0.0.2\n"
    assert current.runtime_pins(book_tooling) == current.runtime_pins(before)
    assert current.runtime_pins(before.replace("torch==2.14.1", "torch==2.15.0")) != current.runtime_pins(before)
    assert set(current.RUNTIME) == {"torch", "torchvision", "numpy", "tqdm"}
    deps = re.search(r"^dependencies = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.M | re.S).group(1)
    assert {re.split(r"[<>=\[ ]", d.strip().strip('"'))[0] for d in deps.split(",") if d.strip()} == set(current.RUNTIME)
