"""The GPU kit (ci/gpu_book.sh, ci/gpu_book.py): what CI can check without a GPU. The plan and its budgets, a
section run end to end in rehearsal (smoke results written only into a folder marked as a rehearsal's), the packed
archive, and one clear line when there is no GPU. The full rehearsal (a fresh venv, every section, the chapters)
is `bash ci/gpu_book.sh OUT --rehearse` (~4 min here), run before any GPU time is spent."""
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from ev2lib import fast_path, results

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "ci"))
import gpu_book  # noqa: E402


def test_default_plan_is_the_issue_priority_within_six_h100_minutes():
    chosen = gpu_book.plan(None, gpu_book.DEFAULT_MINUTES, rehearse=False)
    assert [s.name for s in chosen] == ["fast_path", "table12", "v1_v2"]
    assert sum(s.budget for s in chosen) <= 6 * 60 < sum(s.budget for s in gpu_book.SECTIONS)
    assert [s.name for s in gpu_book.SECTIONS] == ["fast_path", "table12", "v1_v2", "tables_2_3", "stage_times"]
    assert [s.name for s in gpu_book.plan(["tables_2_3", "fast_path"], 6, False)] == ["fast_path", "tables_2_3"]
    assert len(gpu_book.plan(None, 6, rehearse=True)) == len(gpu_book.SECTIONS)
    with pytest.raises(SystemExit, match="unknown section"):
        gpu_book.plan(["tables_9"], 6, False)


def test_every_section_saves_what_it_promises_on_the_gpu():
    for s in gpu_book.SECTIONS:
        saved = {a for cmd in s.gpu for a in cmd[cmd.index("--save") + 1:cmd.index("--save") + 2]}
        named = {n for n in s.results if not n.startswith("ablations_")}
        assert named <= saved, f"{s.name}: results {named - saved} are never saved by its commands"
        assert all("colab" in cmd for cmd in s.gpu) and all("smoke" in cmd for cmd in s.rehearse)
        assert len(s.gpu) == len(s.rehearse), f"{s.name}: the rehearsal must run the same commands"


def test_a_rehearsed_section_packs_its_results_log_and_status(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, str(ROOT / "ci" / "gpu_book.py"), str(tmp_path), "--rehearse",
                           "--sections", "fast_path"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    kit = json.loads((tmp_path / "kit.json").read_text())
    assert kit["profile"] == "smoke" and [(s["section"], s["status"], s["results"]) for s in kit["sections"]] == [
        ("fast_path", "ok", ["fast_path_gpu"])]
    with tarfile.open(tmp_path / "gpu_book.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"results/fast_path_gpu.json", "results/REHEARSAL", "log.txt", "kit.json"} <= names
    record = json.loads((tmp_path / "results" / "fast_path_gpu.json").read_text())
    assert record["profile"] == "smoke" and record["provenance"]["device_type"] == "cpu"
    assert set(record["data"]["runs"]) == {name for name, *_ in fast_path.SETTINGS}
    with pytest.raises(results.ResultsError, match="smoke"):  # outside the rehearsal's folder it is no result
        results.validate(record)


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
