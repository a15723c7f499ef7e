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
from dataclasses import dataclass
from pathlib import Path

from autograder.sandbox.student import wire
from autograder.sandbox.limits import SandboxLimits

NOBODY = 65534
SANDBOX_HOME = "/home/student"  # a zygote's scratch folder, inside bubblewrap
SANDBOX_WORKDIR = SANDBOX_HOME + "/work"  # the student's work folder inside bubblewrap: a tmpfs of its own
SANDBOX_TMP = "/tmp"
SANDBOX_SUBMITTED = SANDBOX_HOME + "/submitted"  # a cold student's files, read-only, copied into SANDBOX_WORKDIR
# What a zygote (root inside bubblewrap) keeps: new mount/IPC namespaces and tmpfs mounts per student (SYS_ADMIN),
# becoming nobody (SETUID, SETGID), emptying the bounding set (SETPCAP), killing the student's processes (KILL).
ZYGOTE_CAPS = ("CAP_SYS_ADMIN", "CAP_SETUID", "CAP_SETGID", "CAP_SETPCAP", "CAP_KILL")
DEFAULT_PRELOAD = ("numpy",)  # what a zygote imports by default (course.yml's `preload` for grading)
ZYGOTE_START_TIMEOUT = 120.0  # importing torch on a loaded machine
SANDBOX_WORKER = "/sandbox/worker.py"  # beside it, the other STUDENT_FILES
MARKER_VAR = "AUTOGRADER_SANDBOX_ID"  # per-sandbox environment marker, used to find stray processes
MAX_TEXT = 4096  # cap on error messages and tracebacks from the child
MAX_TYPE_NAME = 100
MAX_STR = 1 << 20  # cap on one string inside a returned value
MAX_NDIM = 32
MAX_HEADER = wire.MAX_HEADER  # a reply's JSON header (arrays travel as raw buffers beside it)
TRUNCATED = "\n[... output truncated ...]\n"
START_TIMEOUT = 30.0  # the child must say hello within this (python start-up, before any student code)
# The student side, put read-only into every sandbox (standard library only): name -> source.
STUDENT_FILES = {name: (Path(wire.__file__).parent / name).read_bytes()
                 for name in ("wire.py", "worker.py", "keeper.py", "guard.py")}
# This interpreter by an absolute, normalised path: started as ../venv/bin/python, sys.executable keeps the "..",
# which does not exist inside bubblewrap.
PYTHON = os.path.abspath(sys.executable)


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


# ------------------------------------------------------------------------------------------- the policy
@dataclass(frozen=True)
class IsolationPolicy:
    """What the sandbox enforces, as data: read it here in one screen. Built by isolation_policy() from the limits
    and the isolation level; applied by bwrap.py (the command line), launch.py (before exec), the keeper in
    worker.py (each warm student's namespaces, tmpfs and identity) and cgroups.py.

    At the "process" level (no bubblewrap) the rlimits, memory limits, environment and cgroup apply, and as root the
    drop to `uid`; the grading process is the subreaper of the student's processes (reaper.py)."""
    level: str  # "bubblewrap" or "process"
    user_namespace: bool  # the grader is not root: bubblewrap maps its uid to `uid` in a user namespace of its own
    uid: int  # the student's uid inside (nobody)
    setuid: bool  # as root: the student process becomes `uid` (in a user namespace it already is)
    namespaces: tuple[str, ...]  # new for each sandbox (and for each warm student: mount, ipc, pid)
    read_only: tuple[str, ...]  # bound read-only at the same path; nothing else of the machine is there
    tmpfs: tuple[tuple[str, int], ...]  # (path, bytes): empty, size-capped, the student's own
    workdir: str  # the student's working directory: its files, copied into a tmpfs
    zygote_capabilities: tuple[str, ...]  # kept by zygotes and keepers; the student keeps none
    seccomp: bool  # deny seccomp.DENIED and new user namespaces (where this kernel takes the filter)
    rlimits: tuple[tuple[str, int], ...]  # per process, soft = hard
    memory_bytes: int  # beyond the preloaded libraries: RLIMIT_DATA, 2 x as RLIMIT_AS, and the cgroup's base
    cgroup: tuple[tuple[str, int], ...]  # per student, where one can be made: memory, processes, CPUs
    environment: tuple[tuple[str, str], ...]  # the student's environment (HOME, TMPDIR and the marker are added)

    def tmpfs_size(self, path: str) -> int:
        return dict(self.tmpfs)[path]

    def resource_limits(self) -> list[tuple[int, int]]:
        """The rlimits as (resource, value) for setrlimit, never above this process's own hard limits."""
        capped = []
        for name, value in self.rlimits:
            res = getattr(resource, name)
            hard = resource.getrlimit(res)[1]
            capped.append((res, value if hard == resource.RLIM_INFINITY else min(value, hard)))
        return capped


def isolation_policy(limits: SandboxLimits, level: str, environment: dict[str, str],
                     seccomp: bool = False, uid: int = NOBODY) -> IsolationPolicy:
    """The policy for one student's sandbox. `uid`: nobody, or at the process level as root one of its own
    (uids.py: students graded at the same time must not share one without namespaces between them)."""
    from autograder.sandbox.cgroups import HEADROOM

    as_root = os.geteuid() == 0
    return IsolationPolicy(
        level=level,
        user_namespace=level == "bubblewrap" and not as_root,
        uid=uid,
        setuid=as_root,  # at the process level too: a student running as root could rewrite the results
        # As root, every namespace but the user one: a user namespace made by root maps only uid 0, so the student
        # could not become nobody, and RLIMIT_NPROC would not apply.
        namespaces=(("ipc", "pid", "net", "uts", "cgroup") if as_root else ("user", "ipc", "pid", "net", "uts", "cgroup"))
        if level == "bubblewrap" else (),
        read_only=("/usr", "/etc", *_python_dirs()) if level == "bubblewrap" else (),
        tmpfs=((SANDBOX_TMP, limits.disk_bytes), ("/dev/shm", max(limits.disk_bytes // 4, 2**20)),
               (SANDBOX_WORKDIR, limits.disk_bytes)) if level == "bubblewrap" else (),
        workdir=SANDBOX_WORKDIR if level == "bubblewrap" else "",
        zygote_capabilities=ZYGOTE_CAPS if level == "bubblewrap" else (),
        seccomp=seccomp and level == "bubblewrap",
        # Memory is limited by the student process itself, relative to what its preloaded libraries map
        # (worker._limit_memory): bwrap, setpriv and python's own start need no memory limit.
        rlimits=(("RLIMIT_CPU", limits.cpu_seconds), ("RLIMIT_FSIZE", limits.file_bytes),
                 ("RLIMIT_NOFILE", limits.open_files), ("RLIMIT_NPROC", limits.processes), ("RLIMIT_CORE", 0)),
        memory_bytes=limits.memory_mb * 2**20,
        cgroup=(("memory_bytes", limits.memory_mb * 2**20 + HEADROOM), ("processes", limits.processes),
                ("cpus", 1)),
        environment=tuple(sorted(environment.items())),
    )
