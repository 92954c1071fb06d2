#!/usr/bin/env bash
# Record every GPU reference number that book/bottlenecks.ipynb and book/fused_mbconv.ipynb plot, on one CUDA GPU,
# offline, in under 8 minutes; results go to data/results/*_gpu.json (ev2lib.results.save, profile colab).
#   bash ci/gpu_reference.sh            # then commit data/results/*_gpu.json
# The chapters show these automatically once the files exist (until then they show the *_cpu references).
# bf16 autocast + channels_last: the fast setting on current GPUs (pytorch-implementations.md §4).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PY:-$ROOT/.venv/bin/python}"
"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'error: no CUDA GPU visible; this script records GPU references')"
GPU="--device cuda --dtype bf16 --channels-last --repeats 10 --warmup 3"
start=$SECONDS
# Table 2: EfficientNet-B6 throughput at batch 12 and at the largest batch that fits, and that batch, vs image size.
"$PY" -m ev2lib.bench --model efficientnet_b6 --image-size 256 320 380 448 512 --batch-size 12 max --max-batch --max-batch-limit 512 --no-inference $GPU --save bottlenecks_image_size_gpu --profile colab
echo "[gpu_reference] image sizes done at $((SECONDS - start)) s"
# Depthwise vs fused: per-stage forward+backward time of B4 all-MBConv vs all-Fused-MBConv at B4's size.
"$PY" -m ev2lib.bench --model efficientnet_b4 --fused-stages none 1-7 --image-size 380 --batch-size 32 --stage-times --no-inference $GPU --save bottlenecks_stage_times_gpu --profile colab
echo "[gpu_reference] stage times done at $((SECONDS - start)) s"
# Equal vs non-uniform scaling: per-stage time of V1 B0/B2/B4/B7 and V2 S/M/L, each at its own training size.
"$PY" -m ev2lib.bench --model efficientnet_b0 efficientnet_b2 efficientnet_b4 efficientnet_b7 efficientnetv2_s efficientnetv2_m efficientnetv2_l --batch-size 16 --stage-times $GPU --save bottlenecks_scaling_gpu --profile colab
echo "[gpu_reference] scaling done at $((SECONDS - start)) s"
# Table 3: EfficientNet-B4 at 380 with MBConv -> Fused-MBConv in stages none / 1-3 / 1-5 / 1-7.
"$PY" -m ev2lib.bench --model efficientnet_b4 --fused-stages none 1-3 1-5 1-7 --image-size 380 --batch-size 32 $GPU --save fused_mbconv_table3_gpu --profile colab
echo "[gpu_reference] all done in $((SECONDS - start)) s"

# ==================================================================================================================
# --- progressive learning ablations (issue 6): book/ablations.ipynb ---------------------------------------------
# Tables 5, 12 and 13 at CIFAR scale, colab profile: 3,000 shared-archive images upsampled to 32/48/64 px, 8 epochs,
# 3 seeds, bf16 (~8 min; host-side RandAugment bounds it). Writes data/results/ablations_table{5,12,13}_gpu.json,
# which the chapter shows instead of the *_cpu references.
start=$SECONDS
"$PY" -m ev2lib.ablations --table 12 13 5 --profile colab --save
echo "[gpu_reference] progressive ablations done in $((SECONDS - start)) s"
