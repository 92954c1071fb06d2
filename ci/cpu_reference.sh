#!/usr/bin/env bash
# Record every CPU reference result the book shows (profile cpu-reference), from a clean commit:
#   bash ci/cpu_reference.sh                 # every section
#   bash ci/cpu_reference.sh nas transfer    # only these: bottlenecks training nas scaling ablations transfer
# One command per line, each under ~5 minutes on 2 cores. Results go to data/results/*.json via ev2lib.results.save.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
. "$ROOT/ci/setup.sh" >/dev/null  # $PY, and EV2_DATA_DIR for the shared offline CIFAR-10
if ! git diff --quiet HEAD -- ev2lib ci; then
  echo "error: ev2lib/ or ci/ has uncommitted changes: commit first, so the results name the code that made them" >&2
  exit 1
fi
# Resumable: a result is skipped while the code it was recorded with is unchanged (ci/current.py: the module its
# command runs and every ev2lib module that one imports, and ci/requirements.txt), and the training run, the search
# log and the ablation runs continue where they stopped; so the script can be stopped and run again, also after
# committing the results recorded so far or a change to code that other results do not use.
COMMIT="$(git log -1 --format=%H -- ev2lib ci | cut -c1-12)"  # the code's commit: names the runs' caches
SECTIONS="bottlenecks training nas scaling ablations transfer"
ONLY=" ${*:-$SECTIONS} "
for s in $ONLY; do
  [[ " $SECTIONS " == *" $s "* ]] || { echo "error: unknown section '$s'; the sections are: $SECTIONS" >&2; exit 2; }
done
recorded() {  # exit 0: skip NAME, because its $SECTION was not asked for or NAME.json is current
  [[ "$ONLY" == *" $SECTION "* ]] || return 0
  "$PY" "$ROOT/ci/current.py" "$1"
}
SECTION=bottlenecks
# --- bottleneck analysis (issue 4): book/bottlenecks.ipynb and book/fused_mbconv.ipynb (~8 min in all) ---
# Table 2 analogue on CPU: EfficientNet-B6 training cost, memory and largest batch (8 GiB budget) vs image size.
recorded bottlenecks_image_size_cpu || "$PY" -m ev2lib.bench --model efficientnet_b6 --image-size 64 96 128 --batch-size 2 --max-batch --memory-budget-gb 8 --repeats 3 --warmup 1 --no-inference --device cpu --save bottlenecks_image_size_cpu --profile cpu-reference
# Depthwise vs fused: per-stage forward+backward time of EfficientNet-B4 with MBConv everywhere vs Fused-MBConv everywhere.
recorded bottlenecks_stage_times_cpu || "$PY" -m ev2lib.bench --model efficientnet_b4 --fused-stages none 1-7 --image-size 96 --batch-size 2 --stage-times --repeats 3 --warmup 1 --no-inference --device cpu --save bottlenecks_stage_times_cpu --profile cpu-reference
# Equal vs non-uniform scaling: per-stage time of V1 B0/B2/B4/B7 and V2 S/M/L at one size.
recorded bottlenecks_scaling_cpu || "$PY" -m ev2lib.bench --model efficientnet_b0 efficientnet_b2 efficientnet_b4 efficientnet_b7 efficientnetv2_s efficientnetv2_m efficientnetv2_l --image-size 64 --batch-size 2 --stage-times --repeats 3 --warmup 1 --no-inference --device cpu --save bottlenecks_scaling_cpu --profile cpu-reference
# Table 3 on CPU: EfficientNet-B4 with MBConv -> Fused-MBConv in stages none / 1-3 / 1-5 / 1-7.
recorded fused_mbconv_table3_cpu || "$PY" -m ev2lib.bench --model efficientnet_b4 --fused-stages none 1-3 1-5 1-7 --image-size 96 --batch-size 2 --repeats 3 --warmup 1 --no-inference --device cpu --save fused_mbconv_table3_cpu --profile cpu-reference
SECTION=training
# --- training engine (issue 5): book/training.ipynb (~10 min of training on 2 idle cores) ---
# The CPU preset on all of CIFAR-10 (shared offline archive via EV2_DATA_DIR), 4 epochs, amp auto (bf16 where native).
recorded train_cifar10_cpu || "$PY" -m ev2lib.train --profile cpu-reference --data cifar10 --progress false --out runs/cpu-reference-train-$COMMIT --save-result train_cifar10_cpu
# V1 B0-B7 and V2 B0-B3/S/M/L: parameters and training throughput at one small image size (~3 min).
SECTION=scaling
recorded scaling_throughput_cpu || "$PY" -m ev2lib.bench --model efficientnet_b0 efficientnet_b1 efficientnet_b2 efficientnet_b3 efficientnet_b4 efficientnet_b5 efficientnet_b6 efficientnet_b7 efficientnetv2_b0 efficientnetv2_b1 efficientnetv2_b2 efficientnetv2_b3 efficientnetv2_s efficientnetv2_m efficientnetv2_l --image-size 64 --batch-size 4 --repeats 3 --warmup 1 --no-inference --threads 1 --device cpu --save scaling_throughput_cpu --profile cpu-reference
# --- NAS (issues 7, 11), the ablations (issue 11) and transfer learning (issue 13): two one-thread processes side by
# side, so that every timed run shares the machine with exactly one other (~3.2 h of the ~3.5 h). Each command is resumable
# at this commit: finished runs are kept in runs/ and skipped on a rerun. Each result file records its wall time.
# Process A (~3.2 h, as measured at 2053b2f): Tables 12 + 13 (progressive vs a baseline tuned over three regularization
#   levels on validation; adaptive vs constant regularization; 3 seeds; 7 cells, 21 runs of 4-5.5 min: ~85 min), then
#   the 50-trial NAS random search with nas.PROXIES["cpu-reference"] (4,000 images, 8 epochs, trained and scored at
#   16 px on 5,000 held-out training images, never the test split; 30-130 s a trial, ~65 min), then its validity: 8 of
#   the search's architectures from across its reward range train again with nas.LONG_PROXIES, for Kendall's tau
#   between the proxy's ranking and a longer training's (~40 min).
# Process B (~3.2 h): Table 5 (3 sizes x RandAugment 0/5/10/15, 2 seeds; 24 runs of 2.5-5.3 min: ~88 min) and Table 7
#   (V1-shaped vs V2-shaped at matched parameters: the V1-shaped runs, ~16.5 min each; the V2-shaped ones are Table
#   12's), then the proxy's noise (the backbone and two random architectures, 5 seeds each, ~14 min), then transfer
#   learning (book/transfer.ipynb: pretrain on CIFAR-10 classes 0-4, fine-tuned vs from-scratch on classes 5-9 at
#   250 / 1,000 / 5,000 images; ~37 min).
# The whole script takes about 3.5 h on 2 cores: the regime the ablations need (10,000 images, 70% test accuracy)
# costs that; it is resumable, so it can be spread over several sittings.
{ SECTION=ablations
  { recorded ablations_table12_cpu && recorded ablations_table13_cpu; } || "$PY" -m ev2lib.ablations --table 12 13 --profile cpu-reference --threads 1 --cache runs/ablations --save
  SECTION=nas
  recorded nas_search_cifar10 || "$PY" -m ev2lib.nas --profile cpu-reference --trials 50 --log runs/nas-cpu-reference-$COMMIT.jsonl --save nas_search_cifar10
  recorded nas_proxy_validity_cifar10 || "$PY" -m ev2lib.nas --profile cpu-reference --validity --architectures 8 --log runs/nas-cpu-reference-$COMMIT.jsonl --cache runs/nas-validity-cpu-reference-$COMMIT.jsonl --save nas_proxy_validity_cifar10
} & process_a=$!
{ SECTION=ablations
  { recorded ablations_table5_cpu && recorded ablations_table7_cpu; } || "$PY" -m ev2lib.ablations --table 5 7 --profile cpu-reference --threads 1 --cache runs/ablations --save
  SECTION=nas
  recorded nas_proxy_noise_cifar10 || "$PY" -m ev2lib.nas --profile cpu-reference --noise --seeds 5 --noise-random 2 --cache runs/nas-noise-cpu-reference-$COMMIT.jsonl --save nas_proxy_noise_cifar10
  SECTION=transfer
  recorded transfer_cifar10_cpu || "$PY" -m ev2lib.transfer --profile cpu-reference --threads 1 --cache runs/transfer --save
} & process_b=$!
wait "$process_a"; wait "$process_b"
