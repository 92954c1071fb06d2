"""ev2lib.report.transfer: the rows and sentences of the Transfer learning chapter, each checked against hand arithmetic
and against a record where the answer is the other one."""
from ev2lib import results
from ev2lib.report import transfer as rt
from ev2lib.stats import interval
from ev2lib.transfer import LONG, summarize_transfer

EXPERIMENT = {"model": "efficientnetv2_cifar_half", "source_classes": "0-4", "target_classes": "5-9",
              "pretrain_epochs": 10, "sizes": [250, 5000], "steps": 500, "batch_size": 64,
              "finetune_lrs": [0.0005, 0.002, 0.008], "scratch_lrs": [0.004, 0.016, 0.064], "seeds": [0, 1, 2]}


def _cell(method, size, lr, accs, steps=None):
    runs = [{"method": method, "size": size, "lr": lr, "seed": s, "test_acc": a} for s, a in enumerate(accs)]
    return {"method": method, "size": size, "lr": lr, "runs": runs, "test_acc": interval(accs),
            **({"steps": steps} if steps else {})}


def _record(small_gain=0.14, large_gain=0.10, longer=None, old=False):
    """A record with a fine-tuning gain per seed of about ``small_gain`` at 250 images and ``large_gain`` at 5,000;
    ``longer``: the gain over the longer scratch arm (None: a record without that arm); ``old``: no "steps" in cells."""
    spread = (-0.01, 0.0, 0.012)
    cells = []
    for size, gain, lrs in ((250, small_gain, (0.002, 0.016)), (5000, large_gain, (0.008, 0.004))):
        cells += [_cell("fine-tuned", size, lrs[0], [0.8 + d for d in spread], None if old else 500),
                  _cell("scratch", size, lrs[1], [0.8 - gain + d * d for d in spread], None if old else 500)]
    if longer is not None:
        cells.append(_cell(LONG, 5000, 0.016, [0.8 - longer + d / 2 for d in spread], 2000))
    e = {**EXPERIMENT, **({} if old else {"long_scratch": 4})}
    return {"experiment": e, "cells": cells, "summary": summarize_transfer(cells),
            "source": {"val_acc": 0.8467, "test_acc": 0.849, "checkpoint": "/tmp/machine/source/checkpoint.pt"}}


def test_recipes_mark_exactly_the_settings_where_paper_and_code_differ():
    rows = {r["setting"]: r for r in rt.recipes()}
    differ = {s for s, r in rows.items() if r["differs"] == "yes"}
    assert differ == {"learning-rate schedule", "warmup epochs", "weight decay", "label smoothing", "EMA decay",
                      "dropout", "drop path rate"}
    assert rows["steps"]["the paper (§5.3)"] == "10,000" and rows["steps"]["differs"] == ""
    assert rows["learning rate"]["the official code"] == "0.001" and rows["dropout"]["the paper (§5.3)"] == \
        "(the model's own)"


def test_table9_flowers_is_its_train_and_validation_splits():
    t = rt.TABLE9
    assert len({len(v) for v in t.values()}) == 1
    flowers = t["dataset"].index("Flowers")
    assert t["train"][flowers] == 2 * 10 * t["classes"][flowers]  # 10 train + 10 val images a class


def test_cells_give_epochs_interval_and_the_grid_edge():
    rows = {(r["method"], r["target images"]): r for r in rt.cells(_record(longer=0.05))}
    assert rows[("fine-tuned", 250)]["epochs"] == 128.0 and rows[("scratch", 5000)]["epochs"] == 6.4
    assert rows[(LONG, 5000)]["epochs"] == 25.6  # 4 x 500 steps of 64 images over 5,000
    assert rows[("fine-tuned", 5000)]["grid edge"] == "top" and rows[("scratch", 5000)]["grid edge"] == "bottom"
    assert rows[("fine-tuned", 250)]["grid edge"] == "" and rows[("scratch", 250)]["grid edge"] == ""
    r = rows[("fine-tuned", 250)]
    lo, hi = (100 * v for v in interval([0.79, 0.8, 0.812])["ci95"])
    assert abs(r["test accuracy (%)"] - 80.0667) < 1e-3 and r["95% interval (%)"] == f"{lo:.1f} to {hi:.1f}"
    one = {**_record(), "experiment": {**EXPERIMENT, "finetune_lrs": [0.002]}}
    assert rt.cells(one)[0]["grid edge"] == ""  # a one-rate grid has no edge to be at
    assert rt.cells(_record(old=True))[1]["epochs"] == 128.0  # an older record without "steps" in its cells


def test_gains_give_the_verdict_their_interval_allows():
    text = rt.gains(_record(longer=0.05))
    assert text[0].startswith("at 250 images, +14.") and text[0].endswith("3 seeds: fine-tuning better")
    assert "4× the steps (25.6 epochs)" in text[-1] and text[-1].endswith("fine-tuning better")
    assert rt.gains(_record(longer=0.0))[-1].endswith("no clear difference")
    assert rt.gains(_record(large_gain=-0.05))[1].endswith("scratch better")
    old = rt.gains(_record(old=True))[-1]
    assert "not recorded yet" in old and "6.4 epochs" in old


def test_overlap_says_whether_the_gain_changes_with_size():
    assert "overlap: 3 seeds" in rt.overlap(_record(small_gain=0.14, large_gain=0.135))
    apart = rt.overlap(_record(small_gain=0.14, large_gain=0.05))
    assert "do not overlap: it is larger at 250 images" in apart
    assert "larger at 5,000" in rt.overlap(_record(small_gain=0.05, large_gain=0.14))
    single = {**_record(), "summary": {"test_acc_gain_finetuned_minus_scratch": {"128": interval([0.1])}}}
    assert rt.overlap(single) == ""


def test_findings_name_the_grid_edges_and_never_a_path():
    items = rt.findings(_record())
    assert "84.7% validation and 84.9% test" in items[0]
    assert items[-1].startswith("The learning rate") and "fine-tuned at 5,000 images (its top)" in items[-1]
    assert "scratch at 5,000 images (its bottom)" in items[-1] and "250 images" not in items[-1]
    inner = {**_record(), "experiment": {**EXPERIMENT, "long_scratch": 4, "finetune_lrs": [0.0005, 0.002, 0.008, 0.03],
                                         "scratch_lrs": [0.001, 0.004, 0.016, 0.064]}}
    assert rt.findings(inner)[-1] == ""  # no chosen rate at an edge: no sentence
    assert not any("/tmp" in i for i in items)


def test_the_committed_reference_reads_with_or_without_the_longer_arm():
    ref = results.reference("transfer_cifar10")
    if ref is None:
        return
    items = rt.findings(ref["data"])
    assert "not recorded yet" in items[1] or "× the steps" in items[1]
    assert not any(ref["data"]["source"].get("checkpoint", "?") in i for i in items)
