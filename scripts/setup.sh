#!/usr/bin/env bash
# Set up this checkout on a fresh machine; safe to run again (it only installs what is missing).
#  - bubblewrap, for the grading sandbox, where apt-get is available (as root); without it grading falls back
#    to process isolation and says so
#  - Debian's chromium, for the test that opens the feedback pages in a headless browser
#  - a Python 3.11 virtual environment in .venv with the kit and its pinned dependencies (torch==2.13.0, CPU)
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v bwrap >/dev/null 2>&1 || missing+=(bubblewrap)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
if [ ${#missing[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null; } \
      || echo "setup: warning: could not install ${missing[*]}; without bubblewrap grading uses process isolation only" >&2
  else
    echo "setup: note: ${missing[*]} not installed and apt-get is not usable here; without bubblewrap grading uses process isolation only" >&2
  fi
fi

PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PYTHON="$candidate"; break
    fi
  done
fi
[ -n "$PYTHON" ] || { echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
log=$(mktemp)
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' >"$log" 2>&1; then
  grep -v "is ignored: it is neither" "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"
.venv/bin/python -c 'import torch, nbgrader, numpy; print(f"setup: ready (torch {torch.__version__}, numpy {numpy.__version__})")'
touch .venv/.setup-done
