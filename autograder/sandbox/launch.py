"""Starting a process for the sandbox: what runs in the forked child before exec (rlimits, death with the
grader, joining the student's cgroup)."""

from __future__ import annotations

import ctypes
import os
import resource
import signal
from pathlib import Path

from autograder.sandbox.policy import STUDENT_FILES


_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _preexec(rlimits: list[tuple[int, int]], join: tuple[str, ...] = ()):
    """Runs in the forked child before exec: rlimits (inherited by bwrap, setpriv, python, descendants), soft =
    hard, so student code cannot raise them (and cannot catch SIGXCPU to go on); death with the grader; and the
    student's cgroup, joined by writing 0 to each of its `join` files (so everything it starts is counted)."""
    def setup():
        for procs in join:
            with open(procs, "w") as f:
                f.write("0")
        for res, value in rlimits:
            resource.setrlimit(res, (value, value))
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # die if the grader dies

    return setup


def install_student_files(folder: Path) -> Path:
    """Writes the student side (STUDENT_FILES) read-only into `folder`, for the process level, where no bubblewrap
    shows it at /sandbox; returns the path of worker.py, the one python runs."""
    for name, source in STUDENT_FILES.items():
        path = Path(folder) / name
        path.write_bytes(source)
        os.chmod(path, 0o444)
    return Path(folder) / "worker.py"
