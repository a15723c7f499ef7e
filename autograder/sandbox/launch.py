"""Starting a process for the sandbox: what runs in the forked child before exec (rlimits, death with the
grader, joining the student's cgroup)."""

from __future__ import annotations

import ctypes
import functools
import os
import resource
import signal
import sys
from pathlib import Path

from autograder.sandbox.policy import STUDENT_FILES


_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _preexec(rlimits: list[tuple[int, int]], join: tuple[str, ...] = (), uid: int | None = None):
    """Runs in the forked child before exec: rlimits (inherited by bwrap, setpriv, python, descendants), soft =
    hard, so student code cannot raise them (and cannot catch SIGXCPU to go on); death with the grader; the
    student's cgroup, joined by writing 0 to each of its `join` files (so everything it starts is counted); and,
    at the process level as root, the drop to an unprivileged `uid` (its own group, none other, no way back), so
    that the student cannot write the results or signal the grader."""
    def setup():
        for procs in join:
            with open(procs, "w") as f:
                f.write("0")
        for res, value in rlimits:
            resource.setrlimit(res, (value, value))
        if uid is not None:
            _become(uid)
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # die if the grader dies (after the uid change,
            if uid is not None:                                       # which clears it)
                _prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)

    return setup


def _become(uid: int) -> None:
    """This (forked) process becomes `uid` and its own group, with no other group: leaving uid 0 clears every
    capability, with no way back."""
    os.setgroups([])
    os.setresgid(uid, uid, uid)
    os.setresuid(uid, uid, uid)


@functools.cache
def unprivileged_can_run_python(uid: int) -> str | None:
    """None when `uid` can run this interpreter and import what the student side imports (the Python installation
    and virtualenv, its import path); else which folder it cannot enter. Checked once, in a child that becomes
    `uid` (os.access then answers for it)."""
    from autograder.sandbox import policy

    paths = [p for p in (os.path.realpath(sys.executable), *policy._python_dirs(), *policy._child_path())
             if os.path.exists(p)]  # here, as we see them: for uid a folder it cannot enter does not exist
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(read)
            _become(uid)
            bad = next((p for p in paths if not os.access(p, os.R_OK | os.X_OK)), "")
            os.write(write, bad.encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as f:
        bad = f.read().decode()
    os.waitpid(pid, 0)
    return bad or None


def install_student_files(folder: Path) -> Path:
    """Writes the student side (STUDENT_FILES) read-only into `folder`, for the process level, where no bubblewrap
    shows it at /sandbox; returns the path of worker.py, the one python runs."""
    for name, source in STUDENT_FILES.items():
        path = Path(folder) / name
        path.write_bytes(source)
        os.chmod(path, 0o444)
    return Path(folder) / "worker.py"
