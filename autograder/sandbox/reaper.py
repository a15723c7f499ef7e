"""No student process outlives its grading, even where nothing but process separation is available.

A process that double-forks and calls setsid() leaves its process group and session, and one that re-execs with a
clean environment loses the sandbox's marker; its parent exits and it is re-parented. To the grading process, not
to init: a process that starts cold student processes becomes a child subreaper (PR_SET_CHILD_SUBREAPER), so every
orphan of a student comes back to it as a child. After a student, `kill_orphans` kills and reaps those children.

Which children are the student's: not one this process started for itself (`trusted`: the student launchers and
zygotes it started, registered as they start), and limited as a student is. A student process cannot shed its
hard RLIMIT_CPU (only lower it), while the grader's own children keep the grader's limit (normally none).
"""

from __future__ import annotations

import ctypes
import os
import signal
import threading
import time

_PR_SET_CHILD_SUBREAPER = 36
_lock = threading.Lock()
_trusted: set[int] = set()
_subreaper = False


def become_subreaper() -> bool:
    """Makes this process the subreaper of every process it starts; True where the kernel allows it (Linux)."""
    global _subreaper
    with _lock:
        if not _subreaper:
            try:
                _subreaper = ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0
            except (OSError, AttributeError):
                _subreaper = False
        return _subreaper


def trusted(pid: int) -> None:
    """A child this process started on purpose (never killed as an orphan)."""
    with _lock:
        _trusted.add(pid)


def untrusted(pid: int) -> None:
    with _lock:
        _trusted.discard(pid)


def _children() -> list[int]:
    found = []
    try:
        for tid in os.listdir("/proc/self/task"):
            with open(f"/proc/self/task/{tid}/children") as f:
                found += [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        pass
    return found


def _cpu_hard_limit(pid: int) -> float | None:
    """The hard RLIMIT_CPU of a process in seconds (inf: unlimited), None if it cannot be read."""
    try:
        with open(f"/proc/{pid}/limits") as f:
            for line in f:
                if line.startswith("Max cpu time"):
                    hard = line.split()[4]
                    return float("inf") if hard == "unlimited" else float(hard)
    except (OSError, ValueError, IndexError):
        pass
    return None


def student_orphans(cpu_seconds: int) -> list[int]:
    """Children of this process that a student started: not trusted, and CPU-limited as students are."""
    with _lock:
        trusted_now = set(_trusted)
    orphans = []
    for pid in _children():
        if pid in trusted_now:
            continue
        limit = _cpu_hard_limit(pid)
        if limit is not None and limit <= cpu_seconds:
            orphans.append(pid)
    return orphans


def kill_orphans(cpu_seconds: int, timeout: float = 5.0) -> int:
    """SIGKILLs and reaps the student orphans that came back to this process until none is left (a dying one may
    have just re-parented more); returns how many there were. Only the pids found are waited for: other
    children's exit statuses belong to whoever started them."""
    if not _subreaper:
        return 0
    deadline = time.monotonic() + timeout
    killed: set[int] = set()
    seen: set[int] = set()
    while True:
        orphans = student_orphans(cpu_seconds)
        for pid in orphans:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed.add(pid)
            seen.add(pid)
        for pid in list(killed):
            try:
                if os.waitpid(pid, os.WNOHANG)[0] == pid:
                    killed.discard(pid)
            except ChildProcessError:
                killed.discard(pid)
        if not orphans and not killed:
            return len(seen)
        if time.monotonic() > deadline:
            raise RuntimeError(f"{len(killed) or len(orphans)} process(es) of the student could not be killed")
        time.sleep(0.005)
