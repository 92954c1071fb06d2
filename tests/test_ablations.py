"""The ablation grid runner (paper Tables 5, 12, 13): cells, choices on validation, paired intervals, time to
accuracy, a tiny real run, resuming from finished runs, saved records."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ev2lib import ablations, results
from ev2lib.ablations import PROFILES, cells, get_profile, interval, main, result_name, run_table, save_table, summarize
from ev2lib.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# Generated data, 8-12 px, 3 steps per epoch: a table in a few seconds.
TINY = dict(data="synthetic:160", train_subset=0, val_images=32, eval_subset=32, batch_size=32, epochs=2,
            sizes=(8, 12, 12), num_phases=2, seeds=(0, 1), table5_seeds=(0,))


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny models on a shared 2-core machine run several times faster so."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_cells_follow_the_paper_tables():
    p = PROFILES["cpu-reference"]
    assert p.train_subset >= 10000 and p.val_images > 0 and len(p.seeds) >= 3 and len(p.table5_seeds) >= 2
    t5 = cells(5, p)
    assert [c[1] for c in t5] == [{"image_size": s, "randaug": m} for s in p.sizes for m in p.magnitudes]
    for _, coords, sched in t5:
        (ph,) = sched.phases()
        assert ph.image_size == coords["image_size"] and ph.randaug_magnitude == coords["randaug"]
    t12 = cells(12, p)
    prog, fixed = t12[0][2], [c for c in t12 if c[0].startswith("fixed")]
    assert prog.phases()[0].image_size == p.sizes[0] and prog.phases()[-1].image_size == p.sizes[-1]
    assert len(fixed) == len(p.levels) >= 3  # the baseline is tuned over at least three levels
    for (_, coords, sched), level in zip(fixed, p.levels.values()):
        (ph,) = sched.phases()
        assert ph.image_size == p.sizes[-1] and (ph.randaug_magnitude, ph.mixup_alpha, ph.dropout) == level
    t13 = {name: sched for name, _, sched in cells(13, p)}
    const, strong = t13["progressive resize"].phases(), p.levels["strong"]
    assert {(s.randaug_magnitude, s.mixup_alpha, s.dropout) for s in const} == {strong}
    assert [s.image_size for s in const] == [s.image_size for s in t13["progressive + adaptive"].phases()]
    rr, rc = t13["random resize + adaptive"].phases(), t13["random resize"].phases()
    assert [s.image_size for s in rr] == [s.image_size for s in rc] and len(rr) == -(-p.epochs // p.random_every)
    assert t12[0][0] == cells(13, p)[0][0]  # the shared run
    with pytest.raises(ConfigError, match="table must be one of"):
        cells(7, p)


def _run(seed, val, test, secs, curve=None):
    history = [{"epoch": i + 1, "val_acc": a, "train_seconds": t} for i, (a, t) in enumerate(curve or [(val, secs)])]
    return {"seed": seed, "val_acc": val, "test_acc": test, "train_seconds": secs, "wall_seconds": secs + 1,
            "history": history}


def _cell(name, runs, **coords):
    return {"name": name, "coords": coords, "runs": runs,
            "val_acc_mean": sum(r["val_acc"] for r in runs) / len(runs)}


def test_interval_is_the_student_t_interval():
    ci = interval([0.01, 0.02, 0.03])
    assert ci["mean"] == pytest.approx(0.02) and ci["ci95"] == pytest.approx([0.02 - 4.303 * 0.01 / 3 ** 0.5,
                                                                              0.02 + 4.303 * 0.01 / 3 ** 0.5])
    assert interval([0.5])["ci95"] is None


def test_table12_tunes_the_baseline_on_validation_and_reports_test():
    prog = _cell("progressive + adaptive", [_run(s, 0.70, 0.69, 60, [(0.5, 20), (0.66, 40), (0.70, 60)]) for s in (0, 1, 2)])
    weak = _cell("fixed 32 px, weak", [_run(s, 0.60, 0.75, 100) for s in (0, 1, 2)])  # best on test, worst on val
    strong = _cell("fixed 32 px, strong", [_run(s, v, t, 100, [(0.6, 50), (v, 100)])
                                           for s, v, t in ((0, 0.64, 0.60), (1, 0.66, 0.61), (2, 0.68, 0.62))])
    s12 = summarize(12, [prog, weak, strong])
    assert s12["tuned_baseline"] == "fixed 32 px, strong"  # chosen on validation, never on test
    assert s12["test_acc_diff_progressive_minus_tuned"]["values"] == pytest.approx([0.09, 0.08, 0.07])
    assert s12["train_time_ratio_progressive_over_tuned"]["mean"] == pytest.approx(0.6)
    # Baseline reaches its final val accuracy (0.64 / 0.66 / 0.68) after 100 s; progressive after 40 / 40 / 60 s.
    speed = s12["speedup_to_tuned_accuracy"]
    assert speed["values"] == pytest.approx([2.5, 2.5, 100 / 60]) and speed["seeds_never_reached"] == 0
    slow = _cell("progressive + adaptive", [_run(s, 0.5, 0.5, 60) for s in (0, 1, 2)])
    assert summarize(12, [slow, strong])["speedup_to_tuned_accuracy"]["seeds_never_reached"] == 3


def test_table13_and_table5_summaries():
    s13 = summarize(13, [_cell("progressive + adaptive", [_run(0, 0.8, 0.8, 1), _run(1, 0.8, 0.8, 1)]),
                         _cell("progressive resize", [_run(1, 0.7, 0.7, 1), _run(2, 0.9, 0.9, 1)])])
    assert s13["test_acc_gain_adaptive_progressive"]["values"] == pytest.approx([0.1])  # only seed 1 is paired
    assert "test_acc_gain_adaptive_random" not in s13
    s5 = summarize(5, [_cell("a", [_run(0, 0.5, 0.9, 1)], image_size=16, randaug=5),
                       _cell("b", [_run(0, 0.6, 0.1, 1)], image_size=16, randaug=10),
                       _cell("c", [_run(0, 0.7, 0.1, 1)], image_size=32, randaug=5),
                       _cell("d", [_run(0, 0.6, 0.9, 1)], image_size=32, randaug=15)])
    assert s5["best_magnitude_on_val"] == {"16": 10, "32": 5}


def test_run_table_tiny_grid_resumes_from_finished_runs_and_saves(tmp_path, monkeypatch):
    calls = []
    real = ablations.run_cell
    monkeypatch.setattr(ablations, "run_cell", lambda *a, **k: calls.append(a[2]) or real(*a, **k))
    rec = run_table(12, "smoke", cache=tmp_path / "cache", progress=False, **TINY)
    assert rec["table"] == 12 and len(rec["cells"]) == 2 and len(calls) == 4  # 2 cells x 2 seeds
    for cell in rec["cells"]:
        for r in cell["runs"]:
            assert 0 <= r["test_acc"] <= 1 and 0 <= r["train_acc"] <= 1 and r["wall_seconds"] >= r["train_seconds"] > 0
            assert [h["epoch"] for h in r["history"]] == [1, 2] and all("val_acc" in h for h in r["history"])
    assert [h["image_size"] for h in rec["cells"][0]["runs"][0]["history"]] == [8, 12]  # the phases were applied
    assert rec["wall_seconds"] == pytest.approx(sum(r["wall_seconds"] for c in rec["cells"] for r in c["runs"]))
    # Table 13 reuses Table 12's progressive runs; a rerun of Table 12 trains nothing.
    rec13 = run_table(13, "smoke", cache=tmp_path / "cache", progress=False, **TINY)
    assert len(calls) == 6 and rec13["cells"][0]["runs"] == rec["cells"][0]["runs"]
    assert run_table(12, "smoke", cache=tmp_path / "cache", progress=False, **TINY)["cells"] == rec["cells"]
    assert len(calls) == 6
    path = save_table(rec, "cpu-reference", "python -m ev2lib.ablations --table 12 (test)", directory=tmp_path)
    assert path.name == result_name(12) + ".json"
    assert results.load(path.stem, directory=tmp_path)["data"]["cells"][0]["name"] == "progressive + adaptive"
    with pytest.raises(results.ResultsError, match="smoke"):
        save_table(rec, "smoke", "x", directory=tmp_path)


def test_table5_scores_each_cell_at_its_own_size(tmp_path, monkeypatch):
    sizes = []
    real = ablations.run_cell
    monkeypatch.setattr(ablations, "run_cell", lambda *a, **k: sizes.append(a[4]) or real(*a, **k))
    rec = run_table(5, "smoke", progress=False, **TINY)
    assert [c["coords"]["image_size"] for c in rec["cells"]] == [8, 8] and sizes == [8, 8]
    assert set(rec["summary"]["best_magnitude_on_val"]) == {"8"}


def test_cli_errors_are_one_line():
    r = subprocess.run([sys.executable, "-m", "ev2lib.ablations", "--table", "7"], capture_output=True, text=True,
                       cwd=ROOT, timeout=120)
    assert r.returncode == 2 and "--table must be among" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    for args, msg in ((["--table", "5", "--save"], "smoke run is never saved"),
                      (["--table", "5", "--profile", "huge"], "unknown ablation profile")):
        with pytest.raises(ConfigError, match=msg):
            main(args)
    with pytest.raises(ConfigError, match="unknown ablation setting"):
        get_profile("smoke", bogus=1)
