"""The ablation grid runner (paper Tables 5, 12, 13): cells, paired summaries, a tiny real run, saved records."""
import json
import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ev2lib import results
from ev2lib.ablations import PROFILES, cells, get_profile, main, result_name, run_table, save_table, summarize, to_frame
from ev2lib.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
# Generated data, 8-12 px, 4 steps per epoch: a table in a few seconds.
TINY = dict(data="synthetic:128", train_subset=0, eval_subset=32, batch_size=32, epochs=2, sizes=(8, 12, 12),
            num_phases=2, seeds=(0, 1), eval_every=1)


@pytest.fixture(autouse=True)
def one_thread():
    """One intra-op thread: tiny models on a shared 2-core machine run several times faster so."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_cells_follow_the_paper_tables():
    p = PROFILES["cpu-reference"]
    t5 = cells(5, p)
    assert [c[1] for c in t5] == [{"image_size": s, "randaug": m} for s in p.sizes for m in p.magnitudes]
    for _, coords, sched in t5:
        st = sched.phases()
        assert len(st) == 1 and st[0].image_size == coords["image_size"] and st[0].randaug_magnitude == coords["randaug"]
    (pname, _, prog), (fname, _, fixed) = cells(12, p)
    assert prog.phases()[0].image_size == p.sizes[0] and prog.phases()[-1].image_size == p.sizes[-1]
    assert fixed.num_phases == 1 and fixed.phase(0).image_size == p.sizes[-1]
    assert fixed.phase(0).randaug_magnitude == p.reg_end["randaug"] == prog.phases()[-1].randaug_magnitude
    t13 = {name: sched for name, _, sched in cells(13, p)}
    assert set(t13) == {"progressive + adaptive", "progressive resize", "random resize + adaptive", "random resize"}
    const = t13["progressive resize"].phases()
    assert {s.randaug_magnitude for s in const} == {p.reg_end["randaug"]} and {s.dropout for s in const} == {p.reg_end["dropout"]}
    assert [s.image_size for s in const] == [s.image_size for s in t13["progressive + adaptive"].phases()]
    rr, rc = t13["random resize + adaptive"].phases(), t13["random resize"].phases()
    assert [s.image_size for s in rr] == [s.image_size for s in rc] and len(rr) == p.epochs // p.random_every
    lo, hi = p.sizes[0], p.sizes[-1]
    for s in rr:  # adaptive: regularization follows the sampled size
        t = (s.image_size - lo) / (hi - lo)
        assert s.randaug_magnitude == pytest.approx(p.reg_start["randaug"] + t * (p.reg_end["randaug"] - p.reg_start["randaug"]), abs=1e-5)
    assert cells(12, p)[0][0] == cells(13, p)[0][0]  # the shared run
    with pytest.raises(ConfigError, match="table must be one of"):
        cells(7, p)


def _cell(name, accs, secs, seeds=(0, 1, 2), **coords):
    return {"name": name, "coords": coords, "acc_mean": sum(accs) / len(accs),
            "runs": [{"seed": s, "acc": a, "train_seconds": t, "wall_seconds": t + 1} for s, a, t in zip(seeds, accs, secs)]}


def test_summaries_are_paired_over_seeds():
    s12 = summarize(12, [_cell("progressive + adaptive", [0.80, 0.82, 0.84], [5, 6, 7]),
                         _cell("fixed 32 px", [0.79, 0.80, 0.81], [10, 10, 14])])
    ratio, diff = s12["time_ratio_progressive_over_fixed"], s12["acc_diff_progressive_minus_fixed"]
    assert ratio["values"] == pytest.approx([0.5, 0.6, 0.5]) and ratio["mean"] == pytest.approx(1.6 / 3)
    assert diff["values"] == pytest.approx([0.01, 0.02, 0.03]) and diff["std"] == pytest.approx(0.01)
    assert ratio["n"] == 3
    s13 = summarize(13, [_cell("progressive + adaptive", [0.8, 0.8], [1, 1], seeds=(0, 1)),
                         _cell("progressive resize", [0.7, 0.9], [1, 1], seeds=(1, 2))])  # only seed 1 is shared
    assert s13["acc_gain_adaptive_progressive"]["values"] == pytest.approx([0.1])
    assert "acc_gain_adaptive_random" not in s13
    s5 = summarize(5, [_cell("a", [0.5], [1], image_size=16, randaug=2), _cell("b", [0.6], [1], image_size=16, randaug=6),
                       _cell("c", [0.7], [1], image_size=32, randaug=2), _cell("d", [0.6], [1], image_size=32, randaug=10)])
    assert s5["best_magnitude"] == {"16": 6, "32": 2}


def test_run_table_tiny_grid_record_shape_and_save(tmp_path):
    cache = {}
    rec = run_table(12, "smoke", out=tmp_path / "runs", cache=cache, progress=False, **TINY)
    assert rec["table"] == 12 and len(rec["cells"]) == 2
    for cell in rec["cells"]:
        assert [r["seed"] for r in cell["runs"]] == [0, 1]
        for r in cell["runs"]:
            assert 0 <= r["acc"] <= 1 and r["train_seconds"] > 0 and r["wall_seconds"] >= r["train_seconds"]
            assert len(r["history"]) == 2
        assert math.isfinite(cell["acc_std"]) and cell["acc_mean"] == pytest.approx(sum(r["acc"] for r in cell["runs"]) / 2)
    prog = rec["cells"][0]
    assert [h["image_size"] for h in prog["runs"][0]["history"]] == [8, 12]  # the phases were applied
    assert rec["summary"]["time_ratio_progressive_over_fixed"]["n"] == 2
    # Table 13 reuses Table 12's progressive runs (same cache): identical numbers, no second training.
    n_runs = len(cache)
    rec13 = run_table(13, "smoke", out=tmp_path / "runs", cache=cache, progress=False, **TINY)
    assert len(cache) == n_runs + 2 and rec13["cells"][0]["runs"] == prog["runs"]
    assert set(to_frame(rec13).columns) >= {"cell", "acc mean", "acc std", "train s mean", "train s std"}
    path = save_table(rec, "cpu-reference", "python -m ev2lib.ablations --table 12 (test)", directory=tmp_path)
    assert path.name == result_name(12) + ".json"
    loaded = results.load(path.stem, directory=tmp_path)
    assert loaded["profile"] == "cpu-reference" and loaded["data"]["cells"][0]["name"] == "progressive + adaptive"
    with pytest.raises(results.ResultsError, match="smoke"):
        save_table(rec, "smoke", "x", directory=tmp_path)


def test_table5_scores_each_cell_at_its_own_size(tmp_path):
    rec = run_table(5, "smoke", out=tmp_path, progress=False, **{**TINY, "seeds": (0,)})
    assert [c["coords"]["image_size"] for c in rec["cells"]] == [8, 8]
    run = rec["cells"][0]["runs"][0]
    assert 0 <= run["acc"] <= 1 and "acc_at_12px" in run
    assert set(rec["summary"]["best_magnitude"]) == {"8"}


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
