"""Where things are inside the sandbox and what each process may use: the facts that the mechanism modules
(bwrap.py, launch.py, zygote.py, and the student side in worker.py) apply.

Paths inside bubblewrap: the worker at SANDBOX_WORKER; a zygote's scratch folder at SANDBOX_HOME; the student's
work folder at SANDBOX_WORKDIR (a tmpfs of its own; a cold student's files are first shown read-only at
SANDBOX_SUBMITTED and copied in). Per process, soft = hard: CPU time, file size, open files, processes, no core
files (rlimits below); memory is limited by the student process itself relative to what its preloaded libraries
map (worker._limit_memory), and per student by its cgroup where one can be made (cgroups.py).
"""

from __future__ import annotations

import functools
import os
import resource
import sys
from pathlib import Path

from autograder.sandbox import worker as wire
from autograder.sandbox.limits import SandboxLimits

NOBODY = 65534
SANDBOX_HOME = "/home/student"  # a zygote's scratch folder, inside bubblewrap
SANDBOX_WORKDIR = SANDBOX_HOME + "/work"  # the student's work folder inside bubblewrap: a tmpfs of its own
SANDBOX_SUBMITTED = SANDBOX_HOME + "/submitted"  # a cold student's files, read-only, copied into SANDBOX_WORKDIR
# What a zygote (root inside bubblewrap) keeps: new mount/IPC namespaces and tmpfs mounts per student (SYS_ADMIN),
# becoming nobody (SETUID, SETGID), emptying the bounding set (SETPCAP), killing the student's processes (KILL).
ZYGOTE_CAPS = ("CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_KILL")
DEFAULT_PRELOAD = ("numpy",)  # what a zygote imports by default (course.yml's `preload` for grading)
ZYGOTE_START_TIMEOUT = 120.0  # importing torch on a loaded machine
SANDBOX_WORKER = "/sandbox/worker.py"
MARKER_VAR = "AUTOGRADER_SANDBOX_ID"  # per-sandbox environment marker, used to find stray processes
MAX_TEXT = 4096  # cap on error messages and tracebacks from the child
MAX_TYPE_NAME = 100
MAX_STR = 1 << 20  # cap on one string inside a returned value
MAX_NDIM = 32
MAX_HEADER = wire.MAX_HEADER  # a reply's JSON header (arrays travel as raw buffers beside it)
TRUNCATED = "\n[... output truncated ...]\n"
START_TIMEOUT = 30.0  # the child must say hello within this (python start-up, before any student code)
WORKER_SOURCE = Path(wire.__file__).read_bytes()
# This interpreter by an absolute, normalised path: started as ../venv/bin/python, sys.executable keeps the "..",
# which does not exist inside bubblewrap.
PYTHON = os.path.abspath(sys.executable)


def _rlimits(limits: SandboxLimits) -> list[tuple[int, int]]:
    """(resource, value) pairs for the student process, never above this process's own hard limits."""
    # Memory limits are set by the student process itself, relative to what its preloaded libraries map
    # (worker._limit_memory): bwrap, setpriv and python's own start need none.
    wanted = [(resource.RLIMIT_CPU, limits.cpu_seconds),
              (resource.RLIMIT_FSIZE, limits.file_bytes), (resource.RLIMIT_NOFILE, limits.open_files),
              (resource.RLIMIT_NPROC, limits.processes), (resource.RLIMIT_CORE, 0)]
    capped = []
    for res, value in wanted:
        hard = resource.getrlimit(res)[1]
        if hard != resource.RLIM_INFINITY:
            value = min(value, hard)
        capped.append((res, value))
    return capped


@functools.cache
def _python_dirs() -> tuple[str, ...]:
    """The Python installation and virtualenv to show read-only inside the sandbox (not under /usr)."""
    dirs = {sys.prefix, sys.exec_prefix, sys.base_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.realpath(sys.executable))}
    dirs = sorted(os.path.abspath(d) for d in dirs)
    keep: list[str] = []
    for d in dirs:
        if d.startswith(("/usr/", "/etc/")) or d in ("/usr", "/etc"):
            continue
        if not any(d == k or d.startswith(k + "/") for k in keep):
            keep.append(d)
    return tuple(keep)


def _child_path() -> list[str]:
    """This interpreter's import path, restricted to the Python installation (what the sandbox shows)."""
    roots = _python_dirs() + ("/usr",)
    return [p for p in sys.path
            if os.path.isabs(p) and any(p == r or p.startswith(r + "/") for r in roots)]
