#!/usr/bin/env bash
# The README's test command: set up, then run every test (unit tests, chapters in the smoke profile,
# the book build and the browser check of the built HTML). Extra arguments go to pytest.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/ci/setup.sh"
cd "$ROOT"
"$PY" -m pytest "$@"
