"""The GPU kit's plan and runner (ci/gpu_book.sh installs what it needs, then runs this).

    python ci/gpu_book.py OUT                       # on one CUDA GPU: the sections that fit DEFAULT_MINUTES
    python ci/gpu_book.py OUT --sections table12 v1_v2
    python ci/gpu_book.py OUT --rehearse            # the identical path on the CPU, smoke sizes (never results)

A *section* is a few commands that record ``*_gpu`` results with ``ev2lib.results.save`` (provenance names the GPU),
then, where it has one, its chapter executed with papermill in the ``colab`` profile, which shows them. Sections run
in priority order, each under its own time budget (seconds on an H100; a killed section is marked and the next one
starts); what finished is kept when a later one is cut off, and a section whose results are current at this commit
(ci/current.py) is skipped. Everything lands in ``OUT``: ``results/`` (the result files), ``notebooks/`` (executed
chapters), ``log.txt`` and ``kit.json`` (what ran, how long, how it ended), packed into ``OUT/gpu_book.tar.gz``.

The rehearsal runs the same sections with the smoke profile on the CPU, writes into a results folder marked as a
rehearsal (``ev2lib.results`` refuses smoke results anywhere else) and needs no network.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MINUTES = 6.0  # what runs by default: sections whose budgets add up to this fit, so a rerun fits 15 min


@dataclass(frozen=True)
class Section:
    name: str
    what: str
    budget: float  # seconds on an H100 (the commands and the chapter together): estimates until a GPU run's kit.json
    # says what each took. fast_path compiles V2-S twice; v1_v2 trains only the V1-shaped runs (the V2-shaped ones are
    # table12's, in the same run cache)
    gpu: tuple  # commands (argument lists after "python"), with {cache} for the section's run cache
    rehearse: tuple  # the same commands at smoke sizes on the CPU
    results: tuple = ()  # result names the commands write
    chapters: tuple = ()  # book/<slug>.ipynb executed with the profile afterwards
    rehearse_budget: float = 300.0  # seconds on 2 CPU cores
    reuses_runs: bool = False  # its chapter reuses the runs the commands trained: its time is not a reader's


BENCH = ("--repeats", "10", "--warmup", "3", "--no-inference", "--device", "cuda", "--dtype", "bf16", "--channels-last")
BENCH_CPU = ("--repeats", "1", "--warmup", "1", "--no-inference", "--device", "cpu", "--batch-size", "2")
SECTIONS = (
    Section("fast_path", "EfficientNetV2-S training step: ev2lib vs torchvision (bf16, channels_last, compile)", 150,
            gpu=(("-m", "ev2lib.fast_path", "--save", "fast_path_gpu", "--profile", "colab"),),
            rehearse=(("-m", "ev2lib.fast_path", "--device", "cpu", "--batch-size", "2", "--image-size", "32",
                       "--no-compile", "--repeats", "2", "--warmup", "1", "--save", "fast_path_gpu", "--profile",
                       "smoke"),),
            results=("fast_path_gpu",)),
    Section("table12", "progressive learning vs a tuned fixed-size baseline, time to accuracy (Table 12)", 150,
            gpu=(("-m", "ev2lib.ablations", "--table", "12", "--profile", "colab", "--cache", "{cache}", "--save"),),
            rehearse=(("-m", "ev2lib.ablations", "--table", "12", "--profile", "smoke", "--cache", "{cache}",
                       "--save"),),
            results=("ablations_table12_gpu",)),
    Section("v1_v2", "V1-shaped vs V2-shaped network, time to accuracy (Table 7, Figure 1)", 60,
            gpu=(("-m", "ev2lib.ablations", "--table", "7", "--profile", "colab", "--cache", "{cache}", "--save"),),
            rehearse=(("-m", "ev2lib.ablations", "--table", "7", "--profile", "smoke", "--cache", "{cache}",
                       "--save"),),
            results=("ablations_table7_gpu",), chapters=("ablations",), reuses_runs=True),
    Section("tables_2_3", "image size and Fused-MBConv on the GPU (Tables 2 and 3)", 120,
            gpu=(("-m", "ev2lib.bench", "--model", "efficientnet_b6", "--image-size", "256", "320", "380", "448", "512",
                  "--batch-size", "12", "max", "--max-batch", "--max-batch-limit", "512", *BENCH, "--save",
                  "bottlenecks_image_size_gpu", "--profile", "colab"),
                 ("-m", "ev2lib.bench", "--model", "efficientnet_b4", "--fused-stages", "none", "1-3", "1-5", "1-7",
                  "--image-size", "380", "--batch-size", "32", *BENCH, "--save", "fused_mbconv_table3_gpu",
                  "--profile", "colab")),
            rehearse=(("-m", "ev2lib.bench", "--model", "efficientnet_b6", "--image-size", "64", "96", *BENCH_CPU,
                       "--save", "bottlenecks_image_size_gpu", "--profile", "smoke"),
                      ("-m", "ev2lib.bench", "--model", "efficientnet_b4", "--fused-stages", "none", "1-3", "1-5",
                       "1-7", "--image-size", "64", *BENCH_CPU, "--save", "fused_mbconv_table3_gpu", "--profile", "smoke")),
            results=("bottlenecks_image_size_gpu", "fused_mbconv_table3_gpu"), chapters=("bottlenecks", "fused_mbconv")),
    Section("stage_times", "per-stage time: depthwise vs fused, equal vs non-uniform scaling (§3.2)", 120,
            gpu=(("-m", "ev2lib.bench", "--model", "efficientnet_b4", "--fused-stages", "none", "1-7", "--image-size",
                  "380", "--batch-size", "32", "--stage-times", *BENCH, "--save", "bottlenecks_stage_times_gpu",
                  "--profile", "colab"),
                 ("-m", "ev2lib.bench", "--model", "efficientnet_b0", "efficientnet_b2", "efficientnet_b4",
                  "efficientnet_b7", "efficientnetv2_s", "efficientnetv2_m", "efficientnetv2_l", "--batch-size", "16",
                  "--stage-times", *BENCH, "--save", "bottlenecks_scaling_gpu", "--profile", "colab")),
            rehearse=(("-m", "ev2lib.bench", "--model", "efficientnet_b4", "--fused-stages", "none", "1-7",
                       "--image-size", "64", "--stage-times", *BENCH_CPU, "--save", "bottlenecks_stage_times_gpu",
                       "--profile", "smoke"),
                      ("-m", "ev2lib.bench", "--model", "efficientnet_b0", "efficientnetv2_s", "--image-size", "64",
                       "--stage-times", *BENCH_CPU, "--save", "bottlenecks_scaling_gpu", "--profile", "smoke")),
            results=("bottlenecks_stage_times_gpu", "bottlenecks_scaling_gpu"), chapters=("bottlenecks",)),
)
NAMES = tuple(s.name for s in SECTIONS)


def plan(sections: list[str] | None, minutes: float, rehearse: bool) -> list[Section]:
    """The sections to run, in priority order: the named ones, else every section while the budgets fit
    ``minutes`` (a rehearsal runs every section: its budgets are its own)."""
    if sections:
        bad = [s for s in sections if s not in NAMES]
        if bad:
            raise SystemExit(f"error: unknown section(s) {bad}; the sections are: {' '.join(NAMES)}")
        return [s for s in SECTIONS if s.name in sections]
    if rehearse:
        return list(SECTIONS)
    chosen, total = [], 0.0
    for s in SECTIONS:
        if total + s.budget <= minutes * 60:
            chosen.append(s)
            total += s.budget
    return chosen


def current(names) -> bool:
    """True when every result of ``names`` is current at this commit (ci/current.py)."""
    return bool(names) and all(subprocess.run([sys.executable, str(ROOT / "ci" / "current.py"), n], cwd=ROOT,
                                              capture_output=True).returncode == 0 for n in names)


def run(cmd: list[str], budget: float, log, env) -> tuple[str, float]:
    """Run ``cmd`` under ``budget`` seconds; return (status, seconds): "ok", "failed (exit N)" or "cut off"."""
    t0 = time.perf_counter()
    log(f"$ {' '.join(cmd)}  (budget {budget:.0f} s)")
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=max(budget, 1), capture_output=True, text=True)
        log(proc.stdout[-4000:] + proc.stderr[-4000:])
        status = "ok" if proc.returncode == 0 else f"failed (exit {proc.returncode})"
    except subprocess.TimeoutExpired:
        status = "cut off"
    return status, time.perf_counter() - t0


def record_chapter_time(results_dir: Path, chapter: str, seconds: float, profile: str, device: str) -> None:
    """Add one executed chapter's wall time to ``book_times_gpu`` in ``results_dir`` (what each chapter's "run it"
    box shows, ev2lib.book.run_box), keeping the chapters recorded before."""
    sys.path.insert(0, str(ROOT))
    from ev2lib import results

    try:
        chapters = results.load("book_times_gpu", directory=results_dir)["data"]["chapters"]
    except results.ResultsError:
        chapters = {}
    chapters[chapter] = round(seconds, 1)
    results.save("book_times_gpu", {"chapters": chapters}, config={"profile": profile},
                 command=f"python ci/gpu_book.py (papermill book/<chapter>.ipynb -p profile {profile})",
                 profile=profile, device=device, directory=results_dir)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python ci/gpu_book.py", description=__doc__.split("\n")[0])
    p.add_argument("out", help="folder for the results, executed notebooks, log and archive")
    p.add_argument("--sections", nargs="+", default=None, help=f"any of: {' '.join(NAMES)}")
    p.add_argument("--minutes", type=float, default=DEFAULT_MINUTES, help="H100 minutes of sections to run")
    p.add_argument("--rehearse", action="store_true", help="the same path on the CPU with the smoke profile")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    (out / "results").mkdir(parents=True, exist_ok=True)
    (out / "notebooks").mkdir(exist_ok=True)
    if args.rehearse:
        (out / "results" / "REHEARSAL").write_text("smoke results of ci/gpu_book.py --rehearse: never results\n")
    import torch

    if not args.rehearse and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU visible; on a CPU run `bash ci/gpu_book.sh OUT --rehearse`")
    env = {**os.environ, "EV2_RESULTS_DIR": str(out / "results"), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    logfile = (out / "log.txt").open("a")

    def log(text):
        print(text, flush=True)
        logfile.write(text + "\n")
        logfile.flush()

    profile, kit = ("smoke" if args.rehearse else "colab"), []
    device = "cpu (rehearsal)" if args.rehearse else torch.cuda.get_device_name()
    log(f"[gpu_book] {device}; profile {profile}; sections {[s.name for s in plan(args.sections, args.minutes, args.rehearse)]}")
    for s in plan(args.sections, args.minutes, args.rehearse):
        if not args.rehearse and current(s.results):
            kit.append({"section": s.name, "status": "skipped: current at this commit", "seconds": 0.0})
            continue
        budget, t0, status = (s.rehearse_budget if args.rehearse else s.budget), time.perf_counter(), "ok"
        before = {p.name: p.stat().st_mtime for p in (out / "results").glob("*.json")}
        for cmd in (s.rehearse if args.rehearse else s.gpu):
            left = budget - (time.perf_counter() - t0)
            argv_ = [sys.executable, *[c.format(cache=str(out / "runs")) for c in cmd]]
            status, _ = run(argv_, left, log, env)
            if status != "ok":
                break
        for ch in s.chapters if status == "ok" else ():
            left = budget - (time.perf_counter() - t0)
            nb = out / "notebooks" / f"{ch}.ipynb"
            status, secs = run([sys.executable, "-m", "papermill", str(ROOT / "book" / f"{ch}.ipynb"), str(nb), "-k",
                                "python3", "-p", "profile", profile, "-p", "cache", str(out / "runs"),  # the sections' runs
                                "--cwd", str(ROOT / "book")], left, log, env)
            if status != "ok":
                break
            if not s.reuses_runs:  # what the chapter's "run it" box shows as its time on this GPU
                record_chapter_time(out / "results", ch, secs, profile, "cpu" if args.rehearse else "cuda")
        kit.append({"section": s.name, "what": s.what, "status": status, "seconds": time.perf_counter() - t0,
                    "budget": budget, "results": sorted(p.stem for p in (out / "results").glob("*.json")
                                                        if before.get(p.name) != p.stat().st_mtime)})
        log(f"[gpu_book] {s.name}: {status} in {kit[-1]['seconds']:.0f} s of {budget:.0f}")
    (out / "kit.json").write_text(json.dumps({"device": device, "profile": profile, "sections": kit}, indent=1))
    logfile.close()
    with tarfile.open(out / "gpu_book.tar.gz", "w:gz") as tar:
        for sub in ("results", "notebooks", "log.txt", "kit.json"):
            tar.add(out / sub, arcname=sub)
    print(f"[gpu_book] packed {out / 'gpu_book.tar.gz'}")
    return 0 if all(k["status"] == "ok" or k["status"].startswith("skipped") for k in kit) else 1


if __name__ == "__main__":
    sys.exit(main())
