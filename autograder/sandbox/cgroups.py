"""A resource group (cgroup) per student: memory, the number of processes and CPU, counted over everything the
student starts, together. Without one, the limits are per process (RLIMIT_DATA, RLIMIT_NPROC), four processes of
a student could each use the whole memory allowance, and sixty spinning processes could starve a classmate graded
at the same time. With one, each student gets at most one CPU and an equal share when CPUs are scarce.

    group = StudentGroup.create(memory_bytes=2 << 30, processes=64, cpus=1)   # None where none can be made here
    group.procs          # files to write "0" to, from a forked child, to join the group before exec
    group.add(pid); group.oom_kills(); group.close()

Both cgroup versions: v2 (one tree, most current distributions) and v1 (a tree per controller, as on these
machines). Groups can be made by root, under /sys/fs/cgroup; a normal user gets none (no delegation is assumed),
and `support()` says why, so the CLI and results can say which limits applied.
"""

from __future__ import annotations

import functools
import os
import secrets
import time
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
PARENT = "autograder"  # every student group lives below this one
HEADROOM = 512 * 2**20  # the interpreter and libraries a cold-started student loads itself, on top of the allowance
CPU_PERIOD_US = 100_000  # the quota is `cpus` periods per period
V1_CONTROLLERS = ("memory", "pids", "cpu")  # the order of StudentGroup.dirs under v1


@functools.cache
def support() -> tuple[str | None, str]:
    """("v2" or "v1", where) when per-student groups can be made here, else (None, why not)."""
    if os.environ.get("AUTOGRADER_CGROUPS", "1").strip() == "0":
        return None, "turned off by AUTOGRADER_CGROUPS=0"
    if not ROOT.is_dir():
        return None, "no /sys/fs/cgroup"
    if os.geteuid() != 0:
        return None, "the grader is not root (no delegated cgroup is used)"
    try:
        if (ROOT / "cgroup.controllers").is_file():
            controllers = (ROOT / "cgroup.controllers").read_text().split()
            if not {"memory", "pids", "cpu"} <= set(controllers):
                return None, f"cgroup v2 without the memory, pids and cpu controllers ({' '.join(controllers)})"
            parent = ROOT / PARENT
            parent.mkdir(exist_ok=True)
            (ROOT / "cgroup.subtree_control").write_text("+memory +pids +cpu")
            (parent / "cgroup.subtree_control").write_text("+memory +pids +cpu")
            return "v2", str(parent)
        for controller in V1_CONTROLLERS:
            if not (ROOT / controller / "cgroup.procs").is_file():
                return None, f"cgroup v1 without the {controller} controller"
            (ROOT / controller / PARENT).mkdir(exist_ok=True)
        return "v1", str(ROOT / "memory" / PARENT)
    except OSError as exc:
        return None, f"cannot make cgroups here ({exc})"


class StudentGroup:
    def __init__(self, version: str, dirs: list[Path]):
        self.version = version
        self.dirs = dirs  # v2: one; v1: one per V1_CONTROLLERS
        self.procs = [str(d / "cgroup.procs") for d in dirs]  # a forked child writes "0" to each to join

    @classmethod
    def create(cls, memory_bytes: int, processes: int, cpus: int = 1) -> "StudentGroup | None":
        """A new, empty group of at most memory_bytes, processes and cpus; None where none can be made."""
        version, _ = support()
        if version is None:
            return None
        name = f"{os.getpid()}-{secrets.token_hex(6)}"
        limit, pids, quota = str(memory_bytes), str(processes), str(cpus * CPU_PERIOD_US)
        if version == "v2":
            dirs = [ROOT / PARENT / name]
            settings = [(dirs[0] / "memory.max", limit, False), (dirs[0] / "memory.swap.max", "0", True),
                        (dirs[0] / "pids.max", pids, False), (dirs[0] / "cpu.max", f"{quota} {CPU_PERIOD_US}", False)]
        else:
            dirs = [ROOT / controller / PARENT / name for controller in V1_CONTROLLERS]
            settings = [(dirs[0] / "memory.limit_in_bytes", limit, False),
                        (dirs[0] / "memory.memsw.limit_in_bytes", limit, True),  # no swapping around the limit
                        (dirs[1] / "pids.max", pids, False),
                        (dirs[2] / "cpu.cfs_period_us", str(CPU_PERIOD_US), False),
                        (dirs[2] / "cpu.cfs_quota_us", quota, False)]
        made = []
        try:
            for d in dirs:
                d.mkdir()
                made.append(d)
            for path, value, optional in settings:
                try:
                    path.write_text(value)
                except OSError:
                    if not optional:
                        raise
        except OSError:
            for d in made:
                _rmdir(d)
            return None
        return cls(version, dirs)

    def add(self, pid: int) -> None:
        for procs in self.procs:
            with open(procs, "w") as f:
                f.write(str(pid))

    def oom_kills(self) -> int:
        """How many processes of the group the kernel killed for its memory limit."""
        name = "memory.events" if self.version == "v2" else "memory.oom_control"
        try:
            for line in (self.dirs[0] / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        except (OSError, ValueError):
            pass
        return 0

    def peak_bytes(self) -> int | None:
        name = "memory.peak" if self.version == "v2" else "memory.max_usage_in_bytes"
        try:
            return int((self.dirs[0] / name).read_text())
        except (OSError, ValueError):
            return None

    def kill_all(self, timeout: float = 5.0) -> None:
        """Kills every process in the group, whatever it did to leave its session or parent, and waits until the
        group is empty; RuntimeError if it cannot be emptied. v2: cgroup.kill (Linux 5.14+). Otherwise (v1, older
        v2): pids.max = 0 first, so that no process of the group can fork any more (what freezing it is for), then
        SIGKILL every pid in cgroup.procs until none is left."""
        import signal

        procs = self.dirs[0] / "cgroup.procs"
        kill_file = self.dirs[0] / "cgroup.kill"
        if self.version == "v2" and kill_file.exists():
            try:
                kill_file.write_text("1")
            except OSError:
                pass
        pids_dir = self.dirs[0] if self.version == "v2" else self.dirs[V1_CONTROLLERS.index("pids")]
        try:
            (pids_dir / "pids.max").write_text("0")
        except OSError:
            pass
        deadline = time.monotonic() + timeout
        while True:
            try:
                pids = [int(p) for p in procs.read_text().split()]
            except (OSError, ValueError):
                return  # the group is gone
            if not pids:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{len(pids)} process(es) of the student are still in its cgroup {self.dirs[0]} "
                                   "after SIGKILL")
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            time.sleep(0.005)

    def close(self) -> None:
        """Removes the group (its processes are gone by now; a straggler is given a moment)."""
        for d in self.dirs:
            _rmdir(d)


def _rmdir(path: Path) -> None:
    for _ in range(50):
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:  # EBUSY: a process of the group is still exiting
            time.sleep(0.02)
