"""The limits a Sandbox is given, and the units of student code it loads."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SandboxLimits:
    call_timeout: float = 10.0  # wall clock for one call, seconds
    unit_timeout: float = 60.0  # wall clock for loading one cell or file (an `import torch` on a busy machine)
    memory_mb: int = 2048  # what student code may use beyond the preloaded libraries (see _limit_memory)
    cpu_seconds: int = 120  # RLIMIT_CPU per process (soft = hard, so it cannot be caught)
    output_bytes: int = 262144  # student stdout+stderr kept
    file_bytes: int = 64 * 2**20  # RLIMIT_FSIZE: largest file the student may write
    disk_bytes: int = 256 * 2**20  # size of each tmpfs the student writes to: its work folder, /tmp (/dev/shm: 1/4)
    open_files: int = 256  # RLIMIT_NOFILE
    processes: int = 256  # RLIMIT_NPROC, counted over all processes of uid 65534 on the machine
    reply_bytes: int = 64 * 2**20  # largest reply accepted from the child


@dataclass(frozen=True)
class LoadUnit:
    file: str  # file name relative to the work folder, e.g. "1_bptt.ipynb"
    index: int | None  # notebook code-cell number, None for a whole .py module
    source: str
    kind: str  # "cell", "module", or "helper": the grader's own code, loaded after the student's and never
    # reported as the student's (load_report leaves it out)
