"""The GPU kit (ci/gpu_book.sh, ci/gpu_book.py): what CI can check without a GPU. The plan and its budgets, a
section run end to end in rehearsal (smoke results written only into a folder marked as a rehearsal's), the packed
archive, and one clear line when there is no GPU. The full rehearsal (a fresh venv, every section, the chapters)
is `bash ci/gpu_book.sh OUT --rehearse` (~4 min here), run before any GPU time is spent."""
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from ev2lib import fast_path, results
from ev2lib.data import shared_cifar10_path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ci"))
import gpu_book  # noqa: E402


def test_default_plan_is_the_priority_within_one_ten_minute_call():
    chosen = gpu_book.plan(None, gpu_book.DEFAULT_MINUTES, rehearse=False)
    # Table 12 and V1 vs V2 are held (their colab regime failed its gate on the GPU) and run only when named
    assert [s.name for s in chosen] == ["fast_path", "tables_2_3"]  # stage_times would pass 9 minutes
    assert sum(s.budget for s in chosen) <= gpu_book.DEFAULT_MINUTES * 60 <= 9 * 60
    # a section already current costs nothing: with the fast path recorded, the next one fits too
    recorded = gpu_book.plan(None, gpu_book.DEFAULT_MINUTES, False, is_current=lambda s: s.name == "fast_path")
    assert [s.name for s in recorded] == ["fast_path", "tables_2_3", "stage_times"]
    assert {s.name for s in gpu_book.SECTIONS if s.held} == {"table12", "v1_v2"}
    assert [s.name for s in gpu_book.plan(["v1_v2", "table12"], 9, False)] == ["table12", "v1_v2"]  # named: run
    assert set(gpu_book.ESTIMATES) == set(gpu_book.NAMES)  # every budget says what it rests on
    assert [s.name for s in gpu_book.SECTIONS] == ["fast_path", "table12", "v1_v2", "tables_2_3", "stage_times"]
    assert [s.name for s in gpu_book.plan(["tables_2_3", "fast_path"], 6, False)] == ["fast_path", "tables_2_3"]
    assert len(gpu_book.plan(None, 6, rehearse=True)) == len(gpu_book.SECTIONS)
    with pytest.raises(SystemExit, match="unknown section"):
        gpu_book.plan(["tables_9"], 6, False)


def test_the_budgets_and_the_held_sections_rest_on_the_first_gpu_run():
    """data/gpu_kit/2026-12-04-h200: what the kit wrote on an H200, and the 9 Table 12 runs it finished."""
    import statistics

    from ev2lib.ablations import get_profile
    first = ROOT / "data" / "gpu_kit" / "2026-12-04-h200"
    kit, budget = json.loads((first / "kit.json").read_text()), {s.name: s.budget for s in gpu_book.SECTIONS}
    fast = next(s for s in kit["sections"] if s["section"] == "fast_path")
    assert kit["device"] == "NVIDIA H200" and fast["status"] == "ok" and fast["seconds"] < budget["fast_path"]
    runs = [json.loads(p.read_text()) for p in sorted((first / "table12").glob("*.json"))]
    assert 12 * statistics.fmean(r["wall_seconds"] for r in runs) < budget["table12"]  # its 12 runs fit
    bare = [r for r in runs if len(r["schedule"]) == 1 and not r["schedule"][0]["randaug_magnitude"]
            and not r["schedule"][0]["dropout"]]  # the unregularized fixed size, one run a seed
    assert len(bare) == 2 and all(r["train_acc"] < get_profile("colab").min_train_acc for r in bare)  # the gate fails
    why = gpu_book.REGIME_FAILS_GATE
    regularized = [r["val_acc"] for r in runs if len(r["schedule"]) == 1 and r not in bare]  # fixed size, levels 1-3
    assert all(f"{100 * r[k]:.0f}%" in why for r in bare for k in ("train_acc", "val_acc"))  # the reason says so
    assert f"level {100 * min(regularized):.0f}-{100 * max(regularized):.0f}%" in why


def test_every_section_saves_what_it_promises_on_the_gpu():
    for s in gpu_book.SECTIONS:
        saved = {a for cmd in s.gpu for a in cmd[cmd.index("--save") + 1:cmd.index("--save") + 2]}
        named = {n for n in s.results if not n.startswith("ablations_")}
        assert named <= saved, f"{s.name}: results {named - saved} are never saved by its commands"
        assert all("colab" in cmd for cmd in s.gpu) and all("smoke" in cmd for cmd in s.rehearse)
        assert [c[:2] for c in s.gpu] == [c[:2] for c in s.rehearse]  # the same modules
        assert len(s.gpu) == len(s.rehearse), f"{s.name}: the rehearsal must run the same commands"


@pytest.mark.slow
@pytest.mark.skipif(shared_cifar10_path() is None, reason="the kit carries the CIFAR-10 archive; set EV2_DATA_DIR "
                    "to the folder of cifar10_jpeg.npz (the pre-flight without it: the next test)")
def test_the_rehearsal_preflights_and_an_interrupted_section_keeps_what_finished(tmp_path):
    """``bash ci/gpu_book.sh OUT --rehearse`` in this environment: the pre-flight's findings in kit.json, fast_path
    complete, then Table 12 interrupted (SIGTERM, as a time limit sends) once its first run has finished, whatever
    this machine's speed: the section says so, the finished runs and the log are in the archive."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PY": sys.executable}
    with open(tmp_path / "stdout.txt", "w") as stdout:
        proc = subprocess.Popen(["bash", str(ROOT / "ci" / "gpu_book.sh"), str(tmp_path / "out"), "--rehearse",
                                 "--sections", "fast_path", "table12"], stdout=stdout, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + 300
        while not list((tmp_path / "out" / "runs").rglob("*.json")) and proc.poll() is None:
            assert time.monotonic() < deadline, "no ablation run finished within 300 s"
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=120) == 1, (tmp_path / "stdout.txt").read_text()[-3000:]
    out = tmp_path / "out"
    kit = json.loads((out / "kit.json").read_text())
    pre = kit["preflight"]
    assert pre["missing"] == [] and pre["torch"] and pre["data"] in (True, False) and pre["compile"] is None
    assert [(s["section"], s["status"]) for s in kit["sections"]] == [("fast_path", "ok"), ("table12", "interrupted")]
    assert kit["sections"][0]["results"] == ["fast_path_gpu"] and kit["sections"][1]["results"] == []
    assert "[gpu_book] table12: interrupted after" in (out / "log.txt").read_text()
    with tarfile.open(out / "gpu_book.tar.gz") as tar:
        names = set(tar.getnames())
    finished = {f"runs/{p.relative_to(out / 'runs')}" for p in (out / "runs").rglob("*.json")}
    assert {"results/fast_path_gpu.json", "results/REHEARSAL", "log.txt", "kit.json"} <= names
    assert finished and finished <= names
    record = json.loads((out / "results" / "fast_path_gpu.json").read_text())
    assert record["profile"] == "smoke" and record["provenance"]["device_type"] == "cpu"
    assert set(record["data"]["runs"]) == {name for name, *_ in fast_path.SETTINGS} and record["data"]["complete"]
    with pytest.raises(results.ResultsError, match="smoke"):  # outside the rehearsal's folder it is no result
        results.validate(record)


def test_a_command_past_its_budget_is_cut_off_and_what_it_printed_is_logged():
    lines = []
    cmd = [sys.executable, "-c", "import time; print('step 1', flush=True); time.sleep(30)"]
    status, seconds = gpu_book.run(cmd, 2, lines.append, dict(os.environ))
    assert status == "cut off" and 2 <= seconds < 20
    assert "step 1" in lines[-1] and lines[-1].endswith("[gpu_book] cut off after 2 s")
    assert gpu_book.run([sys.executable, "-c", "raise SystemExit(3)"], 30, lines.append, dict(os.environ))[0] == \
        "failed (exit 3)"


def test_the_preflight_names_what_a_bare_machine_lacks(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "EV2_DATA_DIR": str(tmp_path / "nowhere")}
    found = gpu_book.preflight(tmp_path, env, rehearse=True)
    assert found["data"] is False and any("CIFAR-10 archive" in m for m in found["missing"])
    proc = subprocess.run([sys.executable, str(ROOT / "ci" / "gpu_book.py"), str(tmp_path / "out"), "--rehearse"],
                          capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode != 0 and proc.stderr.strip().startswith("error: pre-flight: missing the CIFAR-10 archive")
    assert json.loads((tmp_path / "out" / "kit.json").read_text())["sections"] == []  # nothing ran


def test_without_a_gpu_the_kit_says_to_rehearse(tmp_path):
    proc = subprocess.run([sys.executable, str(ROOT / "ci" / "gpu_book.py"), str(tmp_path)], capture_output=True,
                          text=True, env={**os.environ, "CUDA_VISIBLE_DEVICES": ""}, timeout=120)
    assert proc.returncode != 0 and "--rehearse" in proc.stderr and proc.stderr.strip().count("\n") == 0


def test_chapter_times_accumulate_into_the_result_the_run_box_reads(tmp_path):
    gpu_book.record_chapter_time(tmp_path, "bottlenecks", 61.04, "colab", "cpu")
    gpu_book.record_chapter_time(tmp_path, "fused_mbconv", 30.0, "colab", "cpu")
    gpu_book.record_chapter_time(tmp_path, "bottlenecks", 75.0, "colab", "cpu")  # a rerun replaces its own time
    record = results.load("book_times_gpu", directory=tmp_path)
    assert record["data"]["chapters"] == {"bottlenecks": 75.0, "fused_mbconv": 30.0} and record["profile"] == "colab"
    assert [s.name for s in gpu_book.SECTIONS if s.reuses_runs] == ["v1_v2"]  # its chapter reuses the trained runs
