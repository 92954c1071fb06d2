#!/usr/bin/env bash
# Set up everything the README commands need, from nothing but Python 3.9+ and pip:
# a virtual environment in .venv with the pinned requirements and ev2lib (editable), and the python3 kernel.
# Idempotent: a second run only checks. Source it (`. ci/setup.sh`) to get $PY.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${EV2_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
stamp="$VENV/.ev2-requirements"
if [ ! -x "$PY" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
fi
if ! cmp -s "$ROOT/ci/requirements.txt" "$stamp" 2>/dev/null; then
  echo "[setup] installing pinned requirements (ci/requirements.txt)"
  "$PY" -m pip install -q --upgrade pip
  "$PY" -m pip install -q -r "$ROOT/ci/requirements.txt"
  cp "$ROOT/ci/requirements.txt" "$stamp"
fi
"$PY" -m pip install -q --no-deps -e "$ROOT"
"$PY" -m ipykernel install --sys-prefix --name python3 >/dev/null
export PY
