"""The ablation grid runner (paper Tables 5, 7, 12, 13): cells, choices on validation, paired intervals, time to
accuracy, a tiny real run, resuming from finished runs, saved records."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import ev2lib.train
from ev2lib import ablations, results
from ev2lib.ablations import PROFILES, cells, get_profile, main, result_name, run_table, save_table, summarize
from ev2lib.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# Generated data, 8-12 px, 3 steps per epoch: a table in a few seconds.
TINY = dict(data="synthetic:160", train_subset=0, val_images=32, eval_subset=32, batch_size=32, epochs=2,
            sizes=(8, 12, 12), num_phases=2, seeds=(0, 1), table5_seeds=(0,))


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


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
        cells(8, p)


def _run(seed, val, test, secs, curve=None):
    history = [{"epoch": i + 1, "val_acc": a, "train_seconds": t} for i, (a, t) in enumerate(curve or [(val, secs)])]
    return {"seed": seed, "val_acc": val, "test_acc": test, "train_seconds": secs, "wall_seconds": secs + 1,
            "history": history}


def _cell(name, runs, **coords):
    return {"name": name, "coords": coords, "runs": runs,
            "val_acc_mean": sum(r["val_acc"] for r in runs) / len(runs)}


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
    assert "test_acc_gain_adaptive_random" not in s13 and "tuned_baseline" not in s13
    # With the fixed-size reference rows: the baseline is tuned on validation, each resize row is compared to it.
    rows13 = [_cell("progressive + adaptive", [_run(s, 0.70, 0.66 + s / 100, 1) for s in (0, 1, 2)],
                    resize="progressive", adaptive=True),
              _cell("random resize", [_run(s, 0.60, 0.50, 1) for s in (0, 1, 2)], resize="random", adaptive=False),
              _cell("fixed 32 px, weak", [_run(s, 0.72, 0.70, 1) for s in (0, 1, 2)], resize="none", level="weak"),
              _cell("fixed 32 px, strong", [_run(s, 0.65, 0.90, 1) for s in (0, 1, 2)], resize="none", level="strong")]
    s13 = summarize(13, rows13)
    assert s13["tuned_baseline"] == "fixed 32 px, weak"  # best on validation, not on test
    assert s13["test_acc_diff_progressive_adaptive_minus_tuned"]["values"] == pytest.approx([-0.04, -0.03, -0.02])
    assert s13["test_acc_diff_random_constant_minus_tuned"]["mean"] == pytest.approx(-0.20)
    assert not any("none" in k for k in s13)
    s5 = summarize(5, [_cell("a", [_run(0, 0.5, 0.9, 1)], image_size=16, randaug=5),
                       _cell("b", [_run(0, 0.6, 0.1, 1)], image_size=16, randaug=10),
                       _cell("c", [_run(0, 0.7, 0.1, 1)], image_size=32, randaug=5),
                       _cell("d", [_run(0, 0.6, 0.9, 1)], image_size=32, randaug=15)])
    assert s5["best_magnitude_on_val"] == {"16": 10, "32": 5}


def test_tables_share_equal_runs_and_only_those():
    """Table 5's large size without RandAugment is Table 12's weak baseline, Table 7's V2-shaped cells are Table 12's
    runs: one cache file each. Every other cell is a run of its own."""
    p = PROFILES["cpu-reference"]

    def keys(table):
        return {name: ablations.run_key(c.get("model", p.model), sch, c.get("image_size", p.sizes[-1]), 0)
                for name, c, sch in cells(table, p)}

    k5, k12, k13, k7 = keys(5), keys(12), keys(13), keys(7)
    assert k5[f"size {p.sizes[-1]}, RandAugment 0"] == k12[f"fixed {p.sizes[-1]} px, weak"]
    assert k7["V2-shaped, progressive + adaptive"] == k12["progressive + adaptive"] == k13["progressive + adaptive"]
    assert k7[f"V2-shaped, fixed {p.sizes[-1]} px, {p.table7_level}"] == k12[f"fixed {p.sizes[-1]} px, {p.table7_level}"]
    every = [k for d in (k5, k12, k13, k7) for k in d.values()]
    assert [k13[f"fixed {p.sizes[-1]} px, {lv}"] for lv in p.levels] == [k12[f"fixed {p.sizes[-1]} px, {lv}"]
                                                                         for lv in p.levels]  # Table 13's reference
    assert len(set(every)) == len(every) - 7  # exactly the seven shared runs above
    assert ablations.run_key(p.model, cells(12, p)[0][2], 32, 1) != k12["progressive + adaptive"]  # seeds differ


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
    assert [(s.expansion, s.kernel) for s in v1.stages] == [(1, 3), (6, 3), (6, 5), (6, 3), (6, 5), (6, 5), (6, 3)]
    assert (v1.stem_stride, v1.total_stride, v1.head_channels) == (v2.stem_stride, v2.total_stride, v2.head_channels)
    assert (v1.dropout, v1.drop_path_rate, v1.bn_eps, v1.bn_momentum) == (v2.dropout, v2.drop_path_rate, v2.bn_eps,
                                                                         v2.bn_momentum)  # only the shape differs
    assert "not from the paper" in v1.source


def test_table7_cells_train_their_own_models(tmp_path, monkeypatch):
    p = PROFILES["cpu-reference"]
    t7 = cells(7, p)
    assert [(c["shape"], c["progressive"], c["model"]) for _, c, _ in t7] == [
        ("V1", False, p.v1_model), ("V2", True, p.model), ("V2", False, p.model)]
    (v1_phase,), (v2_phase,) = t7[0][2].phases(), t7[2][2].phases()
    assert v1_phase == v2_phase and v1_phase.image_size == p.sizes[-1]  # the same recipe
    assert (v1_phase.randaug_magnitude, v1_phase.mixup_alpha, v1_phase.dropout) == p.levels[p.table7_level]
    assert [s.as_dict() for s in t7[1][2].phases()] == [s.as_dict() for s in cells(12, p)[0][2].phases()]
    # run_table hands each cell's model to run_cell, and run_cell hands it to train().
    seen, configs = [], []
    monkeypatch.setattr(ablations, "run_cell", lambda *a, **k: seen.append(k["model"]) or _run(a[2], 0.5, 0.5, 1.0))
    rec = run_table(7, "smoke", cache=tmp_path, progress=False, **TINY)
    assert seen == [p.v1_model, p.model] * 2  # smoke: V1 and V2 progressive, 2 seeds (seed-major)
    assert len({f.name for f in tmp_path.rglob("*.json")}) == 4  # a distinct cached run per model and seed
    assert [c["coords"]["model"] for c in rec["cells"]] == [p.v1_model, p.model]
    monkeypatch.undo()  # the real run_cell, with train() replaced: the config it trains names the cell's model

    def fake_train(cfg, progressive=None, callbacks=()):
        configs.append(cfg)
        return {"config": {"amp": "fp32"}, "history": [{"epoch": 1, "val_acc": 0.1, "test_acc": 0.1, "test_loss": 2.0,
                                                         "train_seconds": 1.0}]}

    monkeypatch.setattr(ev2lib.train, "train", fake_train)
    prof = get_profile("smoke")
    assert ablations.run_cell(t7[0][2], prof, 0, tmp_path / "v1", 16, model=prof.v1_model)["model"] == prof.v1_model
    assert ablations.run_cell(t7[0][2], prof, 0, tmp_path / "v2", 16)["model"] == prof.model
    assert [c.model for c in configs] == [prof.v1_model, prof.model]
    monkeypatch.undo()  # a real tiny run records the model it trained and its parameters
    real = run_table(7, "smoke", progress=False, **{**TINY, "seeds": (0,)})
    assert [(r["model"], r["params"]) for c in real["cells"] for r in c["runs"]] == [
        (p.v1_model, real["summary"]["params"][p.v1_model]), (p.model, real["summary"]["params"][p.model])]
    assert real["summary"]["params"][p.model] == 279546  # efficientnetv2_cifar_half, 10 classes


def test_table7_summary_pairs_v2_with_v1():
    v1 = _cell("V1-shaped, fixed 32 px, medium", [dict(_run(s, 0.60, t, 200, [(0.5, 100), (0.60, 200)]), params=280)
                                                  for s, t in ((0, 0.60), (1, 0.62), (2, 0.64))],
               model="v1", shape="V1", progressive=False)
    prog = _cell("V2-shaped, progressive + adaptive",
                 [dict(_run(s, 0.66, 0.66, 80, [(0.55, 40), (0.62, 80)]), params=279) for s in (0, 1, 2)],
                 model="v2", shape="V2", progressive=True)
    fixed = _cell("V2-shaped, fixed 32 px, medium", [dict(_run(s, 0.58, 0.65, 100), params=279) for s in (0, 1)],
                  model="v2", shape="V2", progressive=False)
    s7 = summarize(7, [v1, prog, fixed])
    assert s7["params"] == {"v1": 280, "v2": 279}
    assert s7["test_acc_diff_v2_progressive_minus_v1"]["values"] == pytest.approx([0.06, 0.04, 0.02])
    assert s7["train_time_ratio_v2_progressive_over_v1"]["mean"] == pytest.approx(0.4)
    # V1 reaches its final val accuracy 0.60 after 200 s; V2 progressive after 80 s: 2.5x faster to accuracy.
    assert s7["speedup_v2_progressive_to_v1_accuracy"]["values"] == pytest.approx([2.5] * 3)
    assert s7["test_acc_diff_v2_minus_v1"]["values"] == pytest.approx([0.05, 0.03])  # only seeds 0 and 1 paired
    assert s7["speedup_v2_to_v1_accuracy"]["seeds_never_reached"] == 2 and s7["speedup_v2_to_v1_accuracy"]["n"] == 0
    assert summarize(7, [prog]) == {} and "test_acc_diff_v2_minus_v1" not in summarize(7, [v1, prog])
