"""The ablation runner (paper Tables 5, 7, 12, 13): the gate, Algorithm 1 ending where the tuned baseline is, the
equal-time arm, the time-averaged control, random sizes per seed, runs shared through the cache, saved records."""
import subprocess
import sys
from pathlib import Path

import pytest

from ev2lib import ablations, results
from ev2lib.ablations import PROFILES, get_profile, main, result_name, run_table, save_table
from ev2lib.data import shared_cifar10_path
from ev2lib.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# Generated data, 8-12 px, 3 steps per epoch: a table in a few seconds.
TINY = dict(data="synthetic:160", train_subset=0, val_images=32, eval_subset=32, batch_size=32, epochs=4,
            sizes=(8, 12, 12), pixel_side=12, num_phases=2, seeds=(0, 1), table5_seeds=(0,), random_every=1)

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def _fake_run(val=None):
    """run_cell without training: validation accuracy from ``val(schedule)``, times from the pixels it would see."""
    def run(schedule, p, seed, out, eval_size, progress=False, model=None, fixed_side=0):
        phases = schedule.phases()
        t = sum((ph.end_epoch - ph.start_epoch) * ph.image_size ** 2 for ph in phases) / 100
        acc = val(phases[-1]) if val else 0.5
        hist = [{"epoch": ph.end_epoch, "val_acc": acc * ph.end_epoch / schedule.total_epochs, "image_size":
                 ph.image_size, "train_seconds": t, "train_cpu_seconds": t} for ph in phases]
        return {"seed": seed, "val_acc": acc + 0.001 * seed, "test_acc": acc, "train_acc": 0.99 if not
                phases[-1].randaug_magnitude else 0.7, "params": 1, "epochs": schedule.total_epochs,
                "train_seconds": t, "train_cpu_seconds": t, "wall_seconds": t, "history": hist, "model": model,
                "schedule": [ph.as_dict() for ph in phases]}
    return run


def test_the_cpu_profile_tunes_over_four_levels_from_none_in_a_regime_that_can_overfit():
    p = PROFILES["cpu-reference"]
    assert list(p.levels)[0] == "none" and p.levels["none"] == (0, 0.0, 0.0) and len(p.levels) >= 4
    assert p.val_images > 0 and len(p.seeds) >= 3 and len(p.table5_seeds) >= 3 and p.min_train_acc >= 0.95
    assert max(ra for ra, _, _ in p.levels.values()) == 15  # Table 6: RandAugment 5 -> 15 (V2-S)
    assert p.pixel_side == p.sizes[-1]


def test_table12_ends_algorithm_1_at_the_tuned_level_and_adds_an_equal_time_arm(monkeypatch):
    monkeypatch.setattr(ablations, "run_cell", _fake_run(lambda ph: 0.6 if ph.randaug_magnitude == 5 else 0.5))
    rec = run_table(12, "cpu-reference", progress=False, seeds=(0, 1, 2))
    s, cells = rec["summary"], {c["name"]: c for c in rec["cells"]}
    assert s["tuned_level"] == "light" and s["gate"]["tuned_level"] == "light"  # best on validation, not weakest
    assert s["progressive_ends_at"] == list(PROFILES["cpu-reference"].levels["light"])
    prog = cells["progressive + adaptive"]["runs"][0]["schedule"]
    assert (prog[0]["randaug_magnitude"], prog[0]["image_size"]) == (0, 16) and prog[-1]["image_size"] == 32
    ratio = s["train_time_ratio_progressive_over_tuned"]["mean"]  # the pixels it sees, in the fake
    equal = next(c for n, c in cells.items() if n.endswith("equal time"))
    assert equal["runs"][0]["epochs"] == s["equal_time_epochs"] == round(100 * ratio)
    assert s["test_acc_diff_progressive_minus_tuned"]["n"] == 3 and s["time"] == "train_cpu_seconds"
    assert s["gate"]["passed"] and s["gate"]["unregularized_train_acc"]["mean"] == pytest.approx(0.99)


def test_the_gate_fails_where_the_network_does_not_fit_or_regularization_does_not_help(monkeypatch):
    monkeypatch.setattr(ablations, "run_cell", _fake_run(lambda ph: 0.5))  # every level the same on validation
    gate = run_table(12, "cpu-reference", progress=False)["summary"]["gate"]
    assert not gate["passed"]
    underfit = _fake_run(lambda ph: 0.6 if ph.randaug_magnitude else 0.5)

    def run(*a, **k):
        out = underfit(*a, **k)
        return {**out, "train_acc": 0.8}

    monkeypatch.setattr(ablations, "run_cell", run)
    gate = run_table(12, "cpu-reference", progress=False)["summary"]["gate"]
    assert gate["tuned_level"] != "none" and not gate["passed"]  # helps, but the network never fit its images


def test_table13_holds_constant_time_averaged_and_per_seed_random_sizes(monkeypatch):
    monkeypatch.setattr(ablations, "run_cell", _fake_run(lambda ph: 0.6 if ph.randaug_magnitude >= 5 else 0.5))
    p = get_profile("cpu-reference")
    rec = run_table(13, p, progress=False)
    s, cells = rec["summary"], {c["name"]: c for c in rec["cells"]}
    top = p.levels[s["tuned_level"]]
    const = cells["progressive resize"]["runs"][0]["schedule"]
    assert {(ph["randaug_magnitude"], ph["mixup_alpha"], ph["dropout"]) for ph in const} == {top}
    avg = ablations.time_averaged(ablations.adaptive(p, s["tuned_level"]))
    control = cells["progressive resize, time-averaged level"]["runs"][0]["schedule"]
    assert {(ph["randaug_magnitude"], ph["mixup_alpha"], ph["dropout"]) for ph in control} == {avg}
    assert 0 < avg[0] < top[0]  # the adaptive arm's average: less than the constant arm's
    sizes = s["random_sizes"]
    assert len({tuple(v) for v in sizes.values()}) == 3  # every seed its own sequence
    assert {16, 32} <= {x for v in sizes.values() for x in v}  # both ends of the range are drawn
    assert "test_acc_gain_adaptive_random" in s and set(s["test_acc_diff_minus_tuned"]) == {
        c["name"] for c in rec["cells"] if c["coords"].get("resize") != "none"}


def test_table5_crosses_sizes_magnitudes_and_both_translate_units(monkeypatch):
    seen = []
    fake = _fake_run()
    monkeypatch.setattr(ablations, "run_cell", lambda *a, **k: seen.append((a[4], k["fixed_side"])) or fake(*a, **k))
    p = get_profile("cpu-reference")
    rec = run_table(5, p, progress=False)
    grid = [c for c in rec["cells"] if "image_size" in c["coords"]]
    assert len(grid) == len(p.sizes) * (1 + 2 * (len(p.magnitudes) - 1))  # magnitude 0 once, the others twice
    assert {(c["coords"]["translate"], len(c["runs"])) for c in grid} == {("none", 3), ("relative", 3), ("pixels", 3)}
    assert (16, 32) in seen and (16, 0) in seen  # official pixels: those of a 32 px image, also at 16 px
    assert set(rec["summary"]["best_magnitude_on_val"]) == {"relative", "pixels"}


def test_a_tiny_real_grid_trains_once_shares_runs_through_the_cache_and_saves(tmp_path):
    r12 = run_table(12, "smoke", cache=tmp_path / "cache", progress=False, **TINY)
    runs = {(c["name"], run["seed"]) for c in r12["cells"] for run in c["runs"]}
    assert len(runs) == 8 and r12["trained_this_call"] <= 8  # 2 levels + progressive + equal time (may equal a
    # tuning run when the times round to every epoch), 2 seeds each
    for run in (run for c in r12["cells"] for run in c["runs"]):
        assert 0 <= run["test_acc"] <= 1 and 0 <= run["train_acc"] <= 1 and run["train_cpu_seconds"] > 0
    prog = next(c for c in r12["cells"] if c["name"] == "progressive + adaptive")
    assert [h["image_size"] for h in prog["runs"][0]["history"]] == [8, 8, 12, 12]  # the phases were applied
    again = run_table(13, "smoke", cache=tmp_path / "cache", progress=False, **TINY)
    shared = next(c for c in again["cells"] if c["name"] == "progressive + adaptive")
    assert shared["runs"] == prog["runs"] and again["trained_this_call"] <= 8  # at most its 4 new cells x 2 seeds
    assert run_table(12, "smoke", cache=tmp_path / "cache", progress=False, **TINY)["trained_this_call"] == 0
    path = save_table(r12, "cpu-reference", "python -m ev2lib.ablations --table 12 (test)", directory=tmp_path)
    assert path.name == result_name(12) + ".json" and results.load(path.stem, directory=tmp_path)["data"]["table"] == 12
    with pytest.raises(results.ResultsError, match="smoke"):
        save_table(r12, "smoke", "x", directory=tmp_path)


def test_calibration_records_the_gate_of_each_candidate_regime(monkeypatch):
    monkeypatch.setattr(ablations, "run_cell", _fake_run(lambda ph: 0.6 if ph.randaug_magnitude else 0.5))
    rec = ablations.calibrate("cpu-reference", progress=False)  # the profile's regime, and twice the images
    assert [(c["train_subset"], c["epochs"]) for c in rec["candidates"]] == [(1000, 100), (2000, 100)]
    assert rec["chosen"] == [1000, 100]
    assert all(len(c["cells"]) == 2 and len(c["cells"][0]["runs"]) == 2 for c in rec["candidates"])
    assert rec["candidates"][0]["gate"]["passed"] and result_name("calibration", "cpu") == "ablations_calibration_cpu"


def test_table7_trains_v1_at_the_tuned_level_and_pairs_it_with_v2(monkeypatch):
    models = []
    fake = _fake_run(lambda ph: 0.6 if ph.randaug_magnitude == 5 else 0.5)
    monkeypatch.setattr(ablations, "run_cell", lambda *a, **k: models.append(k["model"]) or fake(*a, **k))
    p = get_profile("cpu-reference")
    rec = run_table(7, p, progress=False)
    assert [c["coords"]["shape"] for c in rec["cells"]] == ["V1", "V2", "V2"] and p.v1_model in models
    v1 = rec["cells"][0]["runs"][0]["schedule"][0]
    assert (v1["randaug_magnitude"], v1["mixup_alpha"], v1["dropout"]) == p.levels[rec["summary"]["tuned_level"]]
    assert rec["summary"]["test_acc_diff_v2_progressive_minus_v1"]["n"] == 3


def test_cli_errors_are_one_line():
    r = subprocess.run([sys.executable, "-m", "ev2lib.ablations", "--table", "8"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "--table must be among" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for args, msg in ((["--table", "5", "--save"], "smoke run is never saved"),
                      (["--table", "5", "--profile", "huge"], "unknown ablation profile")):
        with pytest.raises(ConfigError, match=msg):
            main(args)
    with pytest.raises(ConfigError, match="unknown ablation setting"):
        get_profile("smoke", bogus=1)


def test_v1_and_v2_cifar_presets_match_in_parameters_not_in_blocks():
    from ev2lib import get_config
    from ev2lib.summary import count_params

    p = PROFILES["cpu-reference"]
    v1, v2 = get_config(p.v1_model), get_config(p.model)
    n1, n2 = count_params(v1, num_classes=10), count_params(v2, num_classes=10)
    assert abs(n1 / n2 - 1) < 0.05, (n1, n2)
    assert {s.block for s in v1.stages} == {"mbconv"} and all(s.se_ratio == 0.25 for s in v1.stages)
    assert v2.stages[0].block == "fused"  # the V2 shape: Fused-MBConv early
    assert (v1.stem_stride, v1.total_stride, v1.head_channels) == (v2.stem_stride, v2.total_stride, v2.head_channels)
    assert "not from the paper" in v1.source


@pytest.mark.slow
def test_the_chapter_finds_the_runs_the_command_made(tmp_path):
    """The GPU kit trains a table with `python -m ev2lib.ablations ... --cache DIR`, then executes the chapter from
    book/ with that cache: the chapter trains nothing (the cache's name depends on the code, not the folder)."""
    import os

    env = {**os.environ, "PYTHONPATH": str(ROOT), "EV2_RESULTS_DIR": str(tmp_path / "results")}
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "REHEARSAL").write_text("a rehearsal's folder\n")
    cache = tmp_path / "runs"
    cmd = [sys.executable, "-m", "ev2lib.ablations", "--table", "12", "--profile", "smoke", "--threads", "1",
           "--cache", str(cache), "--save"]
    cmd += [] if shared_cifar10_path() else ["--data", "synthetic:512"]  # offline, as the chapter's smoke run
    assert subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600).returncode == 0
    out = tmp_path / "executed.ipynb"
    proc = subprocess.run([sys.executable, "-m", "papermill", str(ROOT / "book" / "ablations.ipynb"), str(out), "-k",
                           "python3", "-p", "profile", "smoke", "-p", "cache", str(cache), "-p", "tables", "12",
                           "--cwd", str(ROOT / "book")], env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = out.read_text()
    assert "Tables 12: 0 runs trained now" in shown and "runs trained now" in shown
