#!/usr/bin/env bash
# Set up this checkout on a fresh machine; safe to run again (it only installs what is missing).
#  - bubblewrap, for the grading sandbox, where apt-get is available (as root); without it grading falls back
#    to process isolation and says so
#  - Debian's chromium, for the test that opens the feedback pages in a headless browser
#  - a Python 3.11 virtual environment in .venv with the kit and its pinned dependencies (torch==2.13.0, its CPU-only
#    build unless AUTOGRADER_TORCH=default: see below)
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

# Without bubblewrap, a grader running as root runs students as nobody, who must be able to run the virtualenv's
# Python: as root, prefer a Python 3.11 that nobody can run (root's own may live under /root, mode 0700).
nobody_runs() { [ "$(id -u)" != 0 ] || ! command -v setpriv >/dev/null 2>&1 \
  || setpriv --reuid=65534 --regid=65534 --clear-groups /bin/sh -c 'exec "$0" -c ""' "$1" >/dev/null 2>&1; }
PYTHON="${PYTHON:-}"
if [ -z "$PYTHON" ]; then
  fallback=""
  for candidate in python3.11 python3 /usr/bin/python3.11 /usr/local/bin/python3.11; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info[:2] != (3, 11))' 2>/dev/null; then
      path=$(command -v "$candidate")
      if nobody_runs "$path"; then PYTHON="$path"; break; fi
      fallback="${fallback:-$path}"
    fi
  done
  PYTHON="${PYTHON:-$fallback}"
fi
[ -n "$PYTHON" ] || { echo "setup: Python 3.11 is required (set PYTHON=/path/to/python3.11)" >&2; exit 1; }

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
if ! nobody_runs "$(readlink -f .venv/bin/python)"; then
  echo "setup: note: nobody cannot run .venv's Python ($(readlink -f .venv/bin/python)): without bubblewrap, grading as" \
       "root will refuse to run students (install a Python 3.11 outside /root and remove .venv)" >&2
fi
log=$(mktemp)

# torch: the CPU-only build by default (about 200 MB; the default build from the package index is the CUDA one,
# several GB, which grading does not use). AUTOGRADER_TORCH=cpu (default) tries, in order, a CPU wheel that pip
# already knows of (its find-links or indexes), then torch's CPU wheel index, then falls back to the package
# index's default build with a warning; AUTOGRADER_TORCH=default takes the package index's build directly.
# Either build grades correctly (the canary checks it before every grading run).
TORCH_VERSION=2.13.0
TORCH_CPU_INDEX="${AUTOGRADER_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}"
pip_quiet() { .venv/bin/python -m pip install --quiet --disable-pip-version-check "$@" >>"$log" 2>&1; }
if ! .venv/bin/python -c "import torch, sys; sys.exit(torch.__version__.split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  case "${AUTOGRADER_TORCH:-cpu}" in
    cpu)
      pip_quiet "torch==$TORCH_VERSION+cpu" \
        || pip_quiet --timeout 30 --retries 1 --index-url "$TORCH_CPU_INDEX" "torch==$TORCH_VERSION+cpu" \
        || { echo "setup: warning: torch's CPU-only build could not be installed (no local wheel, $TORCH_CPU_INDEX" \
                  "not reachable); installing the package index's default build of torch $TORCH_VERSION instead" >&2
             pip_quiet "torch==$TORCH_VERSION"; } ;;
    default) pip_quiet "torch==$TORCH_VERSION" ;;
    *) echo "setup: AUTOGRADER_TORCH must be cpu or default, not '$AUTOGRADER_TORCH'" >&2; exit 1 ;;
  esac || { cat "$log" >&2; rm -f "$log"; exit 1; }
fi
if ! .venv/bin/python -m pip install --quiet --disable-pip-version-check -e '.[dev]' >"$log" 2>&1; then
  grep -v "is ignored: it is neither" "$log" >&2; rm -f "$log"; exit 1
fi
rm -f "$log"
.venv/bin/python -c 'import torch, nbgrader, numpy; build = "CUDA " + torch.version.cuda if torch.version.cuda else "CPU-only"
print(f"setup: ready (torch {torch.__version__}, {build} build; numpy {numpy.__version__})")'
touch .venv/.setup-done
