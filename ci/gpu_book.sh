#!/usr/bin/env bash
# The GPU kit: record the book's GPU results in one short call, on a machine with one CUDA GPU and torch installed
# and no network (issue 12). Sections run in priority order under their own budgets (ci/gpu_book.py has the plan).
#   bash ci/gpu_book.sh OUT                          # the sections not yet current that fit 9 minutes (one 10-minute call)
#   bash ci/gpu_book.sh OUT --sections table12 v1_v2 # others, later (a section current at this commit is skipped)
#   bash ci/gpu_book.sh OUT --rehearse               # on a CPU: the same path, smoke profile, fresh venv, no network
#   PY=.venv/bin/python bash ci/gpu_book.sh OUT --rehearse --sections table12   # rehearse in an existing environment
# Before: `bash ci/gpu_wheels.sh` (the wheels, in .gpu_kit/wheels) and, for a machine without the dataset, CIFAR-10's
# archive at .gpu_kit/data/cifar10_jpeg.npz. Carry .gpu_kit (under 64 MiB) with the checkout. After: OUT holds
# results/, notebooks/, log.txt, kit.json and gpu_book.tar.gz; copy OUT/results/*_gpu.json into data/results.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:?usage: bash ci/gpu_book.sh OUT [--rehearse] [--sections NAME ...] [--minutes M]}"
shift
REHEARSE=0
for a in "$@"; do [ "$a" = "--rehearse" ] && REHEARSE=1; done
WHEELS="${GPU_KIT_WHEELS:-$ROOT/.gpu_kit/wheels}"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
if [ -z "${EV2_DATA_DIR:-}" ]; then  # the offline CIFAR-10: carried with the kit, else the shared folder beside it
  for d in "$ROOT/.gpu_kit/data" "$ROOT/shared/data" "$ROOT/../shared/data"; do
    if [ -f "$d/cifar10_jpeg.npz" ]; then export EV2_DATA_DIR="$(cd "$d" && pwd)"; break; fi
  done
fi
missing() {  # one line naming what pip could not find in the wheel folder
  echo "error: the wheel folder $1 lacks $(grep -o 'for [A-Za-z0-9_.-]*' "$OUT/pip.err" | head -1 | cut -c5-): run \`bash ci/gpu_wheels.sh\` where pip reaches an index" >&2
  exit 1
}
if [ "$REHEARSE" = 1 ] && [ -n "${PY:-}" ]; then
  echo "[gpu_book] rehearsal in the existing environment of $PY (no fresh virtual environment)"
elif [ "$REHEARSE" = 1 ]; then
  [ -d "$WHEELS/local" ] || { echo "error: no $WHEELS/local: run \`bash ci/gpu_wheels.sh\` first" >&2; exit 1; }
  echo "[gpu_book] rehearsal: a fresh virtual environment in $OUT/venv"
  rm -rf "$OUT/venv"
  python3 -m venv "$OUT/venv"
  PY="$OUT/venv/bin/python"
  # torch and torchvision at the pins of ci/requirements.txt, from pip's own sources (local wheels here).
  "$PY" -m pip install -q $(grep -E '^(torch|torchvision)==' "$ROOT/ci/requirements.txt") 2> >(grep -v "is ignored" >&2)
  "$PY" -m pip install -q --no-index --find-links "$WHEELS/local" -r "$ROOT/ci/gpu_kit.txt" "matplotlib>=3.5" \
    "seaborn>=0.11" "pandas>=1.3" "tqdm>=4.60" 2> "$OUT/pip.err" || missing "$WHEELS/local"
else
  PY="${PY:-python3}"
  "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
    echo "error: no CUDA GPU visible to $PY; on a CPU rehearse with \`bash ci/gpu_book.sh OUT --rehearse\`" >&2; exit 1; }
  "$PY" -c "import sys; sys.exit(0 if sys.version_info[:2] == (3, 12) else 1)" || {
    echo "error: $PY is Python $("$PY" -c 'import platform; print(platform.python_version())'), the kit's wheels are for 3.12: run \`bash ci/gpu_wheels.sh\` for it (--python-version)" >&2; exit 1; }
  [ -d "$WHEELS/cp312" ] || { echo "error: no $WHEELS/cp312: run \`bash ci/gpu_wheels.sh\` and carry .gpu_kit" >&2; exit 1; }
  "$PY" -m pip install -q --no-index --find-links "$WHEELS/cp312" -r "$ROOT/ci/gpu_kit.txt" 2> "$OUT/pip.err" \
    || missing "$WHEELS/cp312"
fi
export PIP_NO_INDEX=1  # from here on nothing is fetched
"$PY" -m ipykernel install --prefix "$OUT/jupyter" --name python3 >/dev/null
export JUPYTER_PATH="$OUT/jupyter/share/jupyter"
exec "$PY" "$ROOT/ci/gpu_book.py" "$OUT" "$@"
