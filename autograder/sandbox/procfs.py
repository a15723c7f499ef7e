"""What /proc says about processes: children, descendants, CPU time, and the stray processes of a sandbox."""

from __future__ import annotations

import os
import signal
import time

from autograder.sandbox.policy import MARKER_VAR


def _python_of(pid: int, level: str) -> int:
    """The python process started as `pid`: itself, or under bubblewrap bwrap -> its pid-1 reaper -> python
    (-1 if it cannot be found)."""
    if level == "bubblewrap":
        for _ in range(2):
            pid = (_children(pid) or [-1])[0]
    return pid


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except (OSError, ValueError):
        return []


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of a live process, 0.0 if it cannot be read."""
    if pid <= 0:
        return 0.0
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


def _signal_name(sig: int) -> str:
    try:
        return signal.Signals(sig).name
    except ValueError:
        return str(sig)


def _proc_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _descendants(root: int) -> list[int]:
    """All processes below root, from /proc's parent links (before a kill breaks them)."""
    children: dict[int, list[int]] = {}
    for pid in _proc_pids():
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                stat = f.read()
            ppid = int(stat[stat.rindex(b")") + 2:].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _kill_marked(marker: str, timeout: float = 5.0) -> None:
    """SIGKILLs every live process whose initial environment carries this sandbox's marker, until none is left."""
    needle = f"{MARKER_VAR}={marker}".encode()
    deadline = time.monotonic() + timeout
    while True:
        found = False
        for pid in _proc_pids():
            try:
                with open(f"/proc/{pid}/environ", "rb") as f:
                    environ = f.read()
            except OSError:  # gone, or a zombie, or not ours
                continue
            if needle in environ.split(b"\0"):
                found = True
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
        if not found or time.monotonic() > deadline:
            return
        time.sleep(0.01)
