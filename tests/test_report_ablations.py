"""ev2lib.report.ablations: the sentences follow the records' intervals, never the other way round."""
import pytest

from ev2lib import ablations
from ev2lib.report import ablations as ra
from test_ablations import _fake_run


@pytest.fixture
def records(monkeypatch):
    """Table 12, 13, 5 and 7 records of the CPU profile, trained by a fake whose accuracy the test sets."""
    def make(val):
        monkeypatch.setattr(ablations, "run_cell", _fake_run(val))
        return {t: {"data": ablations.run_table(t, "cpu-reference", progress=False), "profile": "cpu-reference",
                    "provenance": {"hardware": "a CPU (1 thread)", "git_commit": "abcdef1", "git_dirty": False,
                                   "date": "2026-12-03", "device_type": "cpu"}} for t in ablations.TABLES}
    return make


def _jitter(level):  # the light level helps; seeds differ a little, so intervals are real
    return lambda ph: (0.6 if ph.randaug_magnitude == level else 0.5)


def test_the_gate_and_table12_say_what_the_record_holds(records):
    refs = records(_jitter(5))
    gate = ra.gate(refs[12]["data"]["summary"])
    assert gate.endswith("passes.") and "light" in gate and "99.0%" in gate and "higher in 3 of 3 seeds" in gate
    s = ra.table12(refs[12]["data"]["summary"])
    assert "both arms end at light" in s and "Paper:" in s
    refs_none = records(lambda ph: 0.5)  # no level helps: the gate fails, and says so
    assert ra.gate(refs_none[12]["data"]["summary"]).endswith("fails.")


def test_a_difference_inside_the_noise_is_no_clear_difference():
    iv = {"mean": 0.004, "ci95": [-0.01, 0.018], "n": 3, "values": [0.0, 0.01, 0.002]}
    assert ra._versus(iv).startswith("not clearly apart")
    assert ra._versus({**iv, "mean": 0.02, "ci95": [0.01, 0.03]}).startswith("below progressive learning")
    assert ra._versus({**iv, "mean": -0.02, "ci95": [-0.03, -0.01]}).startswith("above progressive learning")


def test_table5_says_whether_the_chosen_magnitude_grows_with_the_size():
    grows = {"best_magnitude_on_val": {"relative": {"16": 5, "24": 10, "32": 15}, "pixels": {"16": 0, "24": 0, "32": 0}}}
    s = ra.table5(grows)
    assert "relative Translate/Cutout: 5 at 16 px, 10 at 24 px, 15 at 32 px (grows with the size)" in s
    assert "pixels Translate/Cutout: 0 at 16 px, 0 at 24 px, 0 at 32 px (does not grow with the size)" in s


def test_findings_cover_every_table_and_say_when_one_is_missing(records):
    refs = records(_jitter(5))
    found = ra.findings(refs)
    assert len(found) == 5 and found[0].startswith("Without regularization")
    assert [f.split("**")[1] for f in found[1:]] == ["Table 12", "Table 13", "Table 5", "Table 7"]
    missing = ra.findings({**refs, 13: None})
    assert "**Table 13:** no reference recorded yet." in missing
    assert ra.measured_on(refs) == "a CPU (1 thread) (profile cpu-reference)"


def test_frames_and_curves_read_the_cells(records):
    refs = records(_jitter(5))
    f = ra.frame(refs[12]["data"])
    assert list(f.columns)[-1] == "training time (CPU seconds)" and f["seeds"].tolist() == [3] * len(f)
    assert not any("_" in c for c in f.columns)  # headers a reader can scan
    grid = ra.table5_grid(refs[5]["data"], "pixels")
    assert list(grid.columns) == [16, 24, 32] and list(grid.index) == [0, 5, 10, 15]
    t, v = ra.curve(refs[7]["data"]["cells"][0], "train_cpu_seconds")
    assert len(t) == len(v) > 0 and t == sorted(t)
