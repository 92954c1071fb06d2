#!/usr/bin/env bash
# Record every CPU reference result the book shows (profile cpu-reference), from a clean commit:
#   bash ci/cpu_reference.sh                 # every section
#   bash ci/cpu_reference.sh nas transfer    # only these: bench training ablations nas transfer
# Results go to data/results/*.json via ev2lib.results.save, each with its command, config, commit, code digests and
# wall time. Resumable: a result is skipped while it is current (ci/current.py: the code its command runs is
# unchanged), and the training run, the search log and the ablation and transfer runs continue where they stopped,
# so the script can be stopped and run again, also after committing the results recorded so far.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. "$ROOT/ci/setup.sh" >/dev/null  # $PY, and EV2_DATA_DIR for the shared offline CIFAR-10
if ! git diff --quiet HEAD -- ev2lib ci; then
  echo "error: ev2lib/ or ci/ has uncommitted changes: commit first, so the results name the code that made them" >&2
  exit 1
fi
SECTIONS="bench training ablations nas transfer"
ONLY=" ${*:-$SECTIONS} "
for s in $ONLY; do
  [[ " $SECTIONS " == *" $s "* ]] || { echo "error: unknown section '$s'; the sections are: $SECTIONS" >&2; exit 2; }
done
recorded() {  # exit 0: skip NAME, because its $SECTION was not asked for or NAME.json is current
  [[ "$ONLY" == *" $SECTION "* ]] || return 0
  "$PY" "$ROOT/ci/current.py" "$1"
}
BENCH=(--repeats 3 --warmup 1 --no-inference --device cpu --profile cpu-reference)
# --- 1. Alone on the machine (~15 min): the measurements of speed, which another process would disturb. ---
SECTION=bench
# Table 2 analogue: EfficientNet-B6 training cost, memory and largest batch (8 GiB budget) vs image size.
recorded bottlenecks_image_size_cpu || "$PY" -m ev2lib.bench --model efficientnet_b6 --image-size 64 96 128 --batch-size 2 --max-batch --memory-budget-gb 8 "${BENCH[@]}" --save bottlenecks_image_size_cpu
# Depthwise vs fused: per-stage forward+backward time of EfficientNet-B4, MBConv everywhere vs Fused-MBConv everywhere.
recorded bottlenecks_stage_times_cpu || "$PY" -m ev2lib.bench --model efficientnet_b4 --fused-stages none 1-7 --image-size 96 --batch-size 2 --stage-times "${BENCH[@]}" --save bottlenecks_stage_times_cpu
# Equal vs non-uniform scaling: per-stage time of V1 B0/B2/B4/B7 and V2 S/M/L at one size.
recorded bottlenecks_scaling_cpu || "$PY" -m ev2lib.bench --model efficientnet_b0 efficientnet_b2 efficientnet_b4 efficientnet_b7 efficientnetv2_s efficientnetv2_m efficientnetv2_l --image-size 64 --batch-size 2 --stage-times "${BENCH[@]}" --save bottlenecks_scaling_cpu
# Table 3: EfficientNet-B4 with MBConv -> Fused-MBConv in stages none / 1-3 / 1-5 / 1-7.
recorded fused_mbconv_table3_cpu || "$PY" -m ev2lib.bench --model efficientnet_b4 --fused-stages none 1-3 1-5 1-7 --image-size 96 --batch-size 2 "${BENCH[@]}" --save fused_mbconv_table3_cpu
# V1 B0-B7 and V2 B0-B3/S/M/L: parameters and training throughput at one small image size, one thread.
recorded scaling_throughput_cpu || "$PY" -m ev2lib.bench --model efficientnet_b0 efficientnet_b1 efficientnet_b2 efficientnet_b3 efficientnet_b4 efficientnet_b5 efficientnet_b6 efficientnet_b7 efficientnetv2_b0 efficientnetv2_b1 efficientnetv2_b2 efficientnetv2_b3 efficientnetv2_s efficientnetv2_m efficientnetv2_l --image-size 64 --batch-size 4 --threads 1 "${BENCH[@]}" --save scaling_throughput_cpu
SECTION=training
# The training engine's CPU preset on all of CIFAR-10, 4 epochs, amp auto (bf16 where native), both cores.
recorded train_cifar10_cpu || "$PY" -m ev2lib.train --profile cpu-reference --data cifar10 --progress false --out runs/cpu-reference-train --save-result train_cifar10_cpu
# --- 2. Two one-thread processes side by side (~3.3 h): every run shares the machine with exactly one other; the
# ablations time a run by its CPU seconds, which the neighbour cannot stretch. Finished runs are kept in runs/.
# Process A: Table 12 (the tuning over four levels that every table starts with, its gate, Algorithm 1 to the tuned
#   level, the equal-time arm), Table 13, Table 7's V1-shaped runs, then the 50-trial NAS search and its validity.
# Process B: the recorded calibration of the regime, transfer learning, Table 5 (after A's tuning: it waits for
#   Table 12's record), then the NAS proxy's noise.
{ SECTION=ablations
  # Table 12 with 5 seeds: its gate (L* above no regularization, a 95 % interval above 0) did not resolve with 3
  recorded ablations_table12_cpu || "$PY" -m ev2lib.ablations --table 12 --profile cpu-reference --seeds 0 1 2 3 4 --threads 1 --cache runs/ablations --save
  { recorded ablations_table13_cpu && recorded ablations_table7_cpu; } || "$PY" -m ev2lib.ablations --table 13 7 --profile cpu-reference --threads 1 --cache runs/ablations --save
  SECTION=nas
  recorded nas_search_cifar10 || "$PY" -m ev2lib.search --profile cpu-reference --trials 50 --log runs/nas-cpu-reference.jsonl --save nas_search_cifar10
  recorded nas_proxy_validity_cifar10 || "$PY" -m ev2lib.search --profile cpu-reference --validity --architectures 8 --log runs/nas-cpu-reference.jsonl --cache runs/nas-validity-cpu-reference.jsonl --save nas_proxy_validity_cifar10
} & process_a=$!
{ SECTION=ablations
  recorded ablations_calibration_cpu || "$PY" -m ev2lib.ablations --calibrate --profile cpu-reference --threads 1 --cache runs/ablations --save
  SECTION=transfer
  recorded transfer_cifar10_cpu || "$PY" -m ev2lib.transfer --profile cpu-reference --threads 1 --cache runs/transfer --save
  SECTION=ablations
  if ! recorded ablations_table5_cpu; then
    while kill -0 "$process_a" 2>/dev/null && ! "$PY" "$ROOT/ci/current.py" ablations_table12_cpu 2>/dev/null; do sleep 30; done
    "$PY" -m ev2lib.ablations --table 5 --profile cpu-reference --threads 1 --cache runs/ablations --save
  fi
  SECTION=nas
  recorded nas_proxy_noise_cifar10 || "$PY" -m ev2lib.search --profile cpu-reference --noise --seeds 5 --noise-random 2 --cache runs/nas-noise-cpu-reference.jsonl --save nas_proxy_noise_cifar10
} & process_b=$!
wait "$process_a"; wait "$process_b"
