#!/usr/bin/env bash
# Set up everything the README commands need, from nothing but Python 3.9+ and pip:
# a virtual environment in .venv with the pinned requirements and ev2lib (editable), the python3 kernel, and
# (as root with apt, e.g. CI) Debian's Chromium for the browser test. Idempotent: a second run only checks.
# Source it (`. ci/setup.sh`) to get $PY, $EV2_DATA_DIR and $EV2_RESULTS_DIR.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EV2_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
stamp="$VENV/.ev2-requirements"
quiet() { "$@" 2> >(grep -v "is ignored: it is neither a file nor a directory" >&2); }
if [ ! -x "$PY" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
fi
if ! cmp -s "$ROOT/ci/requirements.txt" "$stamp" 2>/dev/null; then
  echo "[setup] installing pinned requirements (ci/requirements.txt)"
  quiet "$PY" -m pip install -q --upgrade pip
  quiet "$PY" -m pip install -q -r "$ROOT/ci/requirements.txt"
  cp "$ROOT/ci/requirements.txt" "$stamp"
fi
quiet "$PY" -m pip install -q --no-deps -e "$ROOT" >/dev/null
"$PY" -m ipykernel install --sys-prefix --name python3 >/dev/null
if ! command -v chromium >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Debian's chromium for the browser test"
    apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
  else
    echo "[setup] note: no chromium; the browser test needs it (Debian/Ubuntu: sudo apt-get install chromium)"
  fi
fi
# Where ev2lib finds data and reference results (the library itself knows nothing of this repository's layout):
# the shared offline CIFAR-10 beside the checkout when it is there, and this checkout's data/results.
if [ -z "${EV2_DATA_DIR:-}" ] && [ -f "$ROOT/../shared/data/cifar10_jpeg.npz" ]; then
  EV2_DATA_DIR="$(cd "$ROOT/../shared/data" && pwd)"
fi
export EV2_RESULTS_DIR="${EV2_RESULTS_DIR:-$ROOT/data/results}"
export PY EV2_DATA_DIR="${EV2_DATA_DIR:-}"
