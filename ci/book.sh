#!/usr/bin/env bash
# The README's "build the book" command: set up .venv (ci/setup.sh), execute every chapter listed in _toc.yml
# with papermill (profile smoke unless EV2_BOOK_PROFILE says otherwise; per-chapter time budget), then build the
# HTML with Jupyter Book (warnings are errors) and print where it is. Extra arguments go to ci/build_book.py,
# e.g. `bash ci/book.sh --chapters book/anatomy`.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
. "$ROOT/ci/setup.sh"
cd "$ROOT"
unset MPLBACKEND  # it would silently drop every inline figure
"$PY" ci/build_book.py --profile "${EV2_BOOK_PROFILE:-smoke}" "$@"
