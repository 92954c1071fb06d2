#!/usr/bin/env bash
# Download every wheel the GPU kit (ci/gpu_book.sh) installs, so that the kit never needs a package index:
#   bash ci/gpu_wheels.sh          # -> .gpu_kit/wheels/cp312 and .gpu_kit/wheels/local (an ignored folder)
#
# cp312: for the GPU machine (CPython 3.12, manylinux x86-64), what it lacks to execute chapters with papermill:
#        papermill, ipykernel, ipywidgets and everything they need (ci/gpu_kit.txt), a few MB that travel with the
#        checkout. torch, torchvision, numpy, pandas, matplotlib, seaborn and tqdm are taken from the machine.
# local: for this machine's Python, the rehearsal's fresh virtual environment (ci/gpu_book.sh --rehearse): what the
#        chapters import and the kit's own packages. The rehearsal takes torch and torchvision (the pins of
#        ci/requirements.txt) from pip's own sources, local wheels on this project's machines. An older pin was tried:
#        the local torch 2.13.0+cpu wheel has no matching CPU torchvision here (0.28.0 fails to load its operators).
# Run it where pip reaches a package index (this project's machines: the registries); the kit itself never does.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${1:-$ROOT/.gpu_kit/wheels}"
PY="${PY:-$ROOT/.venv/bin/python}"
[ -x "$PY" ] || PY=python3
KIT="$ROOT/ci/gpu_kit.txt"
mkdir -p "$OUT/cp312" "$OUT/local"
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }

echo "[gpu_wheels] cp312 (the GPU machine): $(grep -v '^#' "$KIT" | xargs)"
quiet "$PY" -m pip download --quiet --dest "$OUT/cp312" --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
  --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -r "$KIT" "aiohttp>=3.9"
# (aiohttp: papermill needs it on Python 3.12, a marker pip evaluates with this machine's Python, so it is named.)
# The lent machines and Colab have these (two versions of one package stop an install); the kit's pre-flight checks
# that they import, rather than assume it.
for have in numpy pandas matplotlib seaborn tqdm torch torchvision pillow; do
  rm -f "$OUT/cp312/${have}"-[0-9]*.whl "$OUT/cp312/${have^}"-[0-9]*.whl
done

echo "[gpu_wheels] local ($("$PY" -c 'import sys; print(sys.version.split()[0])')): the chapters' imports, the kit"
quiet "$PY" -m pip download --quiet --dest "$OUT/local" --only-binary=:all: -r "$KIT" \
  "matplotlib>=3.5" "seaborn>=0.11" "pandas>=1.3" "tqdm>=4.60" "numpy>=1.23"

for d in cp312 local; do
  dups=$(ls "$OUT/$d" | sed -E 's/-[0-9].*//' | tr 'A-Z-' 'a-z_' | sort | uniq -d)
  if [ -n "$dups" ]; then echo "error: two versions of $dups in $OUT/$d: delete the folder and rerun" >&2; exit 1; fi
  echo "[gpu_wheels] $OUT/$d: $(ls "$OUT/$d" | wc -l) wheels, $(du -sh "$OUT/$d" | cut -f1)"
done
