"""The one place where student code runs: a child process, under bubblewrap where available, with rlimits.

The trusted grader holds reference values and hidden tests, so student code never runs in its process.
A `Sandbox` starts a child (autograder/sandbox_worker.py), loads the student's code units into one
namespace, and executes calls on request. Only plain data comes back (arrays of bool/int/float, numbers,
strings), re-built here from validated bytes, never unpickled; tuples and lists are rebuilt item by item;
any other object stays in the child and is represented by a `Handle` that later calls can pass back.

    with Sandbox(workdir, units, SandboxLimits(call_timeout=10)) as sb:
        h, cache = sb.call("rnn_forward", x, h0, Wx, Wh, b)     # cache may be a Handle
        grads = sb.call("rnn_backward", dh, cache)

Isolation levels (`isolation_level()`):
- "bubblewrap": new pid/net/ipc/uts namespaces; a filesystem that shows only /usr, /etc, the Python
  installation and virtualenv (read-only), a private /tmp and the student's work folder; the student runs
  as nobody (uid 65534) without capabilities, under a small seccomp filter (no user namespaces, bpf,
  io_uring, keyrings). The repository, other students and the grader's output are not visible, the network
  is unreachable, and when the sandbox ends every process in it dies.
- "process": no bubblewrap (a laptop, macOS, a container without namespaces): a separate process and the
  same rlimits, but the student can read what the grader's user can read. The caller should say so.

Warm starts (`warm_available()`, on by default where possible): instead of starting python (and numpy, torch...)
for every student, a Sandbox leases a zygote (_Zygote: one per process and library set, itself sandboxed) that
has imported the `preload` libraries once and forks each student process through a keeper, which gives it a
fresh /tmp, mount and IPC namespaces, nobody's uid and the rlimits, and kills all it started at the end; see the
zygote section of sandbox_worker.py. A student process is thus as fresh and as isolated as a cold one.

Calls on one Sandbox are serialized by a lock. The child is told to die with its parent through
PR_SET_PDEATHSIG (and bwrap --die-with-parent), which the kernel ties to the *thread* that started it: use a
Sandbox in a thread that outlives it (the main thread, or a pool thread), not in a short-lived thread.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import ctypes
import errno
import functools
import json
import marshal
import os
import resource
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from autograder import cgroups
from autograder import sandbox_worker as wire  # wire-format constants only; the worker runs elsewhere
from autograder.cgroups import StudentGroup
from autograder.files import remove_tree

__all__ = ["Sandbox", "LoadUnit", "Handle", "SandboxLimits", "StudentError", "StudentException",
           "StudentTimeout", "StudentCrashed", "MissingFunction", "InvalidResult", "isolation_level"]

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


# ---------------------------------------------------------------------------------------------- errors
class StudentError(Exception):
    """Something the student's code did; the grader charges it to the test that made the call."""


class StudentException(StudentError):
    """The student's function (or unit) raised; type_name e.g. "ValueError"."""

    def __init__(self, type_name: str, message: str, traceback: str):
        super().__init__(f"{type_name}: {message}" if message else type_name)
        self.type_name = type_name
        self.message = message
        self.traceback = traceback


class StudentTimeout(StudentError):
    """A call ran past its wall-clock limit; the student process was killed."""


class StudentCrashed(StudentError):
    """The student process died (signal, os._exit, rlimit, closed pipes) during a call."""


class MissingFunction(StudentError):
    """The requested name is not defined in the student's namespace, or is not callable."""


class InvalidResult(StudentError):
    """The child sent back something malformed or too large; never a value."""


# ------------------------------------------------------------------------------------------- data types
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
    kind: str  # "cell" or "module"


class Handle:
    """An object that stays in the student process (a cache, an odd return value); pass it back to `call`."""

    __slots__ = ("type_name", "id", "_owner", "_generation")

    def __init__(self, type_name: str, id: int, owner: object, generation: int):
        self.type_name = type_name  # reported by the child: untrusted text
        self.id = id
        self._owner = owner  # the sandbox's identity token (not the Sandbox: a Handle must not keep it alive)
        self._generation = generation

    def __repr__(self) -> str:
        return f"<Handle #{self.id} to a student object of type {self.type_name!r}>"


# ------------------------------------------------------------------------------------ isolation level
def isolation_level() -> str:
    """ "bubblewrap" if bubblewrap really works here (checked once), else "process".

    AUTOGRADER_ISOLATION=process forces the process level; AUTOGRADER_ISOLATION=bubblewrap makes a missing
    bubblewrap an error instead of a silent downgrade.
    """
    wanted = os.environ.get("AUTOGRADER_ISOLATION", "").strip().lower()
    if wanted == "process":
        return "process"
    problem = _bwrap_problem()
    if problem is None:
        return "bubblewrap"
    if wanted == "bubblewrap":
        raise RuntimeError(f"AUTOGRADER_ISOLATION=bubblewrap, but bubblewrap does not work here: {problem}")
    return "process"


def _bwrap_problem() -> str | None:
    """None if bubblewrap works here, else why not (checked once)."""
    return _bwrap_setup()[0]


@functools.cache
def _bwrap_setup() -> tuple[str | None, bool]:
    """(problem, seccomp): runs bubblewrap with the real flags on a trivial Python command, with the seccomp
    filter and, if that fails (a kernel without seccomp filters), without it."""
    if not sys.platform.startswith("linux"):
        return "not Linux", False
    if shutil.which("bwrap") is None:
        return "bwrap is not installed", False
    if not hasattr(os, "memfd_create"):
        return "os.memfd_create is missing", False
    if os.geteuid() == 0 and shutil.which("setpriv") is None:
        return "setpriv is not installed", False
    package = Path(__file__).resolve().parent
    for d in _python_dirs():
        if package.is_relative_to(d):
            return (f"the Python installation {d} contains the autograder package; it cannot be shown to "
                    f"students"), False
    if _seccomp_program() is not None and _probe(seccomp=True) is None:
        return None, True
    return _probe(seccomp=False), False


def _probe(seccomp: bool) -> str | None:
    with tempfile.TemporaryDirectory(prefix="agsb-probe-") as work:
        check = f"import os, sys; sys.exit(0 if os.getuid() == {NOBODY} or {os.geteuid() != 0} else 1)"
        argv, fds = _bwrap_command(Path(work), b"", 2**20, seccomp)
        try:
            run = subprocess.run(argv + [PYTHON, "-I", "-S", "-c", check], stdin=subprocess.DEVNULL,
                                 capture_output=True, timeout=30, env={"PATH": "/usr/bin:/bin"}, pass_fds=fds)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"bwrap failed to run: {exc}"
        finally:
            for fd in fds:
                os.close(fd)
        if run.returncode != 0:
            return f"bwrap exited with status {run.returncode}: {run.stderr.decode(errors='replace')[:500]}"
    return None


def _data_fd(data: bytes) -> int:
    """A file descriptor to read `data` from, for bwrap --ro-bind-data (no temporary file on disk)."""
    fd = os.memfd_create("agsb-data")  # close-on-exec: only the child it is passed to gets it
    os.write(fd, data)
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


# ------------------------------------------------------------------------------------------- seccomp
# A small seccomp filter for bubblewrap (--seccomp), assembled here to need no library. The student has no
# capabilities, but could still create a user namespace (the usual first step of kernel privilege escalations)
# or reach rarely needed kernel interfaces; these calls fail with EPERM instead. Threads, fork, numpy and torch
# are unaffected (glibc falls back from clone3, which the filter cannot inspect, to clone).
_X86_64_SYSCALLS = {"clone": 56, "unshare": 272, "clone3": 435, "add_key": 248, "request_key": 249,
                    "keyctl": 250, "perf_event_open": 298, "bpf": 321, "userfaultfd": 323,
                    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427}
_DENIED = ("add_key", "request_key", "keyctl", "perf_event_open", "bpf", "userfaultfd", "io_uring_setup",
           "io_uring_enter", "io_uring_register")
CLONE_NEWUSER = 0x10000000


@functools.cache
def _seccomp_program() -> bytes | None:
    """Classic BPF for seccomp on x86-64 (other machines get no filter); bytes of struct sock_filter[]."""
    if os.uname().machine != "x86_64":
        return None
    nr = _X86_64_SYSCALLS
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP|JEQ/JGE/JSET|K, BPF_RET|K
    allow, kill = 0x7FFF0000, 0x80000000  # SECCOMP_RET_ALLOW, SECCOMP_RET_KILL_PROCESS
    eperm, enosys = 0x00050000 | errno.EPERM, 0x00050000 | errno.ENOSYS  # SECCOMP_RET_ERRNO | errno
    # (code, jump-if-true label, jump-if-false label, k); labels are resolved to relative offsets below.
    program = [
        (ld, None, None, 4),  # seccomp_data.arch
        (jeq, "next", "kill", 0xC000003E),  # AUDIT_ARCH_X86_64; any other ABI (i386, x32 below) is killed
        (ld, None, None, 0),  # seccomp_data.nr
        (jge, "kill", "next", 0x40000000),  # x32 syscall numbers
        (jeq, "flags", "next", nr["unshare"]),
        (jeq, "flags", "next", nr["clone"]),
        (jeq, "enosys", "next", nr["clone3"]),
        *[(jeq, "eperm", "next", nr[name]) for name in _DENIED],
        (ret, None, None, allow),
        ("flags", ld, None, None, 16),  # args[0], low 32 bits: the clone/unshare flags
        (jset, "eperm", "allow", CLONE_NEWUSER),
        ("allow", ret, None, None, allow),
        ("eperm", ret, None, None, eperm),
        ("enosys", ret, None, None, enosys),
        ("kill", ret, None, None, kill),
    ]
    labels, rows = {}, []
    for i, row in enumerate(program):
        if isinstance(row[0], str):
            labels[row[0]] = i
            row = row[1:]
        rows.append(row)
    out = bytearray()
    for i, (code, jt, jf, k) in enumerate(rows):
        offset = [0 if j in (None, "next") else labels[j] - i - 1 for j in (jt, jf)]
        out += code.to_bytes(2, "little") + bytes(offset) + k.to_bytes(4, "little")
    return bytes(out)


@functools.cache
def _tool(name: str) -> str:
    return shutil.which(name) or name


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


# bwrap's root is a tmpfs; in a user namespace (a grader that is not root) the student owns it and could fill it,
# or leave files there for the next student of a zygote: read-only, like everything not bound writable. Last, once
# every mount point exists.
_READ_ONLY_ROOT = ["--remount-ro", "/"]


def _bwrap_command(workdir: Path, worker_source: bytes, tmp_bytes: int,
                   with_seccomp: bool, zygote: bool = False) -> tuple[list[str], tuple[int, ...]]:
    """bwrap [+ setpriv] command prefix: an allow-list filesystem, no network, drop to nobody.

    For a zygote, `workdir` appears at SANDBOX_HOME instead, and the zygote keeps only the capabilities it needs to
    give each student fresh mount and pid namespaces and then drop them (and, as root, become nobody): ZYGOTE_CAPS,
    held as root, or for a normal user inside bubblewrap's user namespace.
    Also returns the file descriptors bwrap reads (the worker's source, the seccomp filter): pass them to one
    child (bwrap reads them to the end), then close them."""
    worker_fd = _data_fd(worker_source)  # becomes a read-only /sandbox/worker.py (--ro-bind-data)
    seccomp = _seccomp_program() if with_seccomp else None
    fds = (worker_fd,) if seccomp is None else (worker_fd, _data_fd(seccomp))
    argv = [_tool("bwrap")]
    if os.geteuid() == 0:
        # Every namespace but the user one: a user namespace created by root maps only uid 0, so setpriv could
        # not become nobody, and RLIMIT_NPROC would not apply. As root, bwrap needs no user namespace.
        argv += ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try"]
    else:
        argv += ["--unshare-all", "--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY)]
    if seccomp is not None:
        argv += ["--seccomp", str(fds[1])]
    argv += ["--die-with-parent", "--new-session", "--hostname", "sandbox",
             "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        path = "/" + name
        if os.path.islink(path):  # merged /usr (Debian 12): recreate the symlinks
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev",
             "--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp",
             "--perms", "1777", "--size", str(max(tmp_bytes // 4, 2**20)), "--tmpfs", "/dev/shm"]
    made = {"/", "/usr", "/etc", "/tmp", "/dev", "/proc"}

    def parents(path: str) -> list[str]:
        # bwrap creates missing parents with mode 0700, which nobody cannot cross: create them 0755 first.
        out = []
        for parent in reversed(Path(path).parents):
            p = str(parent)
            if p not in made:
                made.add(p)
                out += ["--perms", "0755", "--dir", p]
        return out

    for d in _python_dirs():
        argv += parents(d) + ["--ro-bind", d, d]
    argv += parents(SANDBOX_WORKER) + ["--perms", "0444", "--ro-bind-data", str(worker_fd), SANDBOX_WORKER]
    if zygote:
        argv += parents(SANDBOX_HOME) + ["--bind", str(workdir), SANDBOX_HOME, "--chdir", "/"]
        for cap in ZYGOTE_CAPS:
            argv += ["--cap-add", cap]
        return argv + _READ_ONLY_ROOT + ["--"], fds
    # The student's files read-only, and its work folder a tmpfs of tmp_bytes (the worker copies them in before
    # any student code): what it writes is capped in size and never reaches the host's disk.
    argv += parents(SANDBOX_WORKDIR) + ["--ro-bind", str(workdir), SANDBOX_SUBMITTED,
                                        "--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", SANDBOX_WORKDIR,
                                        "--chdir", SANDBOX_WORKDIR]
    argv += _READ_ONLY_ROOT
    if os.geteuid() == 0:
        argv += ["--", _tool("setpriv"), f"--reuid={NOBODY}", f"--regid={NOBODY}",
                 "--clear-groups", "--inh-caps=-all", "--bounding-set=-all", "--no-new-privs"]
    else:
        argv += ["--"]
    return argv, fds


# -------------------------------------------------------------------------------------- child process
_PR_SET_PDEATHSIG = 1
try:
    _prctl = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux
    _prctl = None


def _rlimits(limits: SandboxLimits) -> list[tuple[int, int]]:
    """(resource, value) pairs for the student process, never above this process's own hard limits."""
    # Memory limits are set by the student process itself, relative to what its preloaded libraries map
    # (sandbox_worker._limit_memory): bwrap, setpriv and python's own start need none.
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


def _preexec(limits: SandboxLimits | None, join: tuple[str, ...] = ()):
    """Runs in the forked child before exec: rlimits (inherited by bwrap, setpriv, python, descendants), soft =
    hard, so student code cannot raise them (and cannot catch SIGXCPU to go on); death with the grader; and the
    student's cgroup, joined by writing 0 to each of its `join` files (so everything it starts is counted)."""
    capped = _rlimits(limits) if limits is not None else []

    def setup():
        for procs in join:
            with open(procs, "w") as f:
                f.write("0")
        for res, value in capped:
            resource.setrlimit(res, (value, value))
        if _prctl is not None:
            _prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)  # die if the grader dies

    return setup


class _Died(Exception):
    """The child ended (or closed its reply pipe); the text says how."""


class _TimedOut(Exception):
    pass


class _Garbage(Exception):
    """The reply stream was not a well-formed frame."""


class _Output:
    """Student stdout+stderr of all processes of one Sandbox, capped; drained by a thread per process."""

    def __init__(self, cap: int):
        self.cap = cap
        self.data = bytearray()
        self.truncated = False
        self.lock = threading.Lock()

    def add(self, chunk: bytes) -> None:
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.truncated = True
            chunk = chunk[:max(room, 0)]
        self.data += chunk

    def text(self) -> str:
        with self.lock:
            text = self.data.decode("utf-8", errors="replace")
            return text + TRUNCATED if self.truncated else text


class _OutputPipe:
    """The read end of one child's output pipe, pumped by a daemon thread (and on demand by output())."""

    def __init__(self, fd: int, sink: _Output):
        self.fd = fd
        self.sink = sink
        self.stop = threading.Event()
        os.set_blocking(fd, False)
        self.thread = threading.Thread(target=self._run, name="sandbox-output", daemon=True)
        self.thread.start()

    def pump(self) -> bool:
        """Reads what is available now (up to 1 MB); False once the pipe is at EOF or closed."""
        with self.sink.lock:
            for _ in range(16):
                if self.fd < 0:
                    return False
                try:
                    chunk = os.read(self.fd, 1 << 16)
                except BlockingIOError:
                    return True
                except OSError:
                    chunk = b""
                if not chunk:
                    os.close(self.fd)
                    self.fd = -1
                    return False
                self.sink.add(chunk)  # beyond the cap it is read and dropped, so the child never blocks
            return True

    def _run(self) -> None:
        poller = select.poll()
        poller.register(self.fd, select.POLLIN)
        while True:
            if poller.poll(200) and not self.pump():
                return
            if self.stop.is_set():  # the processes are killed: do not wait for an EOF that a stray may hold up
                with self.sink.lock:
                    if self.fd >= 0:
                        os.close(self.fd)
                        self.fd = -1
                return

    def close(self) -> None:
        self.pump()
        self.stop.set()
        self.thread.join(timeout=2)


class _Child:
    """One student process: its pipes, its handles' generation, and how to kill everything it started."""

    warm = False  # forked by a zygote (_WarmChild) rather than started with bwrap/python

    def __init__(self, argv: list[str], extra_fds: tuple[int, ...], config: dict, env: dict[str, str], cwd: str,
                 limits: SandboxLimits, level: str, marker: str, generation: int, output: _Output,
                 group: StudentGroup | None = None):
        self._state(limits, level, marker, generation, output, group)
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                argv + [str(req_r), str(rep_w), marshal.dumps(config).hex()],
                stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, pass_fds=(req_r, rep_w, *extra_fds),
                close_fds=True,
                cwd=cwd, env=env, start_new_session=True,
                preexec_fn=_preexec(limits, tuple(group.procs) if group is not None else ()))
        except BaseException:
            for fd in (self.req_w, self.rep_r, out_r):
                os.close(fd)
            raise
        finally:
            for fd in (req_r, rep_w, out_w):  # the child's ends: only the child may hold them
                os.close(fd)
        os.set_blocking(self.req_w, False)
        os.set_blocking(self.rep_r, False)
        self.out = _OutputPipe(out_r, output)
        try:
            self.pidfd = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self.pidfd = -1  # no pidfds: poll in short slices instead

    def _state(self, limits: SandboxLimits, level: str, marker: str, generation: int, output: _Output,
               group: StudentGroup | None) -> None:
        self.group = group  # the student's cgroup, shared by all its processes (None: per-process limits only)
        self.oom_kills = group.oom_kills() if group is not None else 0  # the group's count before this child
        self.limits = limits
        self.level = level
        self.marker = marker
        self.generation = generation
        self.output = output
        self.dead: str | None = None  # how it ended, once it has
        self.rusage = None
        self.worker_pid = -1  # the python worker's pid on the host (found after the greeting)
        self.op_cpu = self.op_start = 0.0  # worker CPU time and clock when the current operation began

    # ---- request / reply ----
    def await_greeting(self, timeout: float) -> None:
        """The worker's first message, sent before any student code runs."""
        reply, _ = self._read_frame(time.monotonic() + timeout)
        if reply.get("status") != "ready" or reply.get("id") != 0:
            raise _Garbage("the worker did not greet")
        if not self.warm:  # a warm child's parent is its keeper, not this process: its pid stays unknown (-1)
            self.worker_pid = _python_of(self.proc.pid, self.level)

    def request(self, header: dict, buffers: list[bytes], timeout: float) -> tuple[dict, memoryview]:
        self.op_start = time.monotonic()
        self.op_cpu = _cpu_seconds(self.worker_pid)
        deadline = self.op_start + timeout
        rid = secrets.randbits(62)
        header = dict(header, id=rid, buffers=[len(b) for b in buffers])
        data = marshal.dumps(header)  # requests come from us: the worker loads them without checks
        parts = [wire.pack_frame(len(data), sum(header["buffers"])), data, *buffers]
        if len(data) + sum(header["buffers"]) < 1 << 20:
            parts = [b"".join(parts)]  # one write: each write to a pipe may cost a context switch
        for part in parts:
            self._write(part, deadline)
        reply, payload = self._read_frame(deadline)
        if reply.get("id") != rid:
            raise _Garbage("the reply does not answer the request")
        return reply, payload

    def _wait(self, fd: int, event: int, deadline: float) -> None:
        """Waits until fd is ready, raising _TimedOut at the deadline and _Died if the process ends first."""
        poller = select.poll()
        poller.register(fd, event)
        if self.pidfd >= 0:
            poller.register(self.pidfd, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _TimedOut
            slice_ms = remaining * 1000 if self.pidfd >= 0 else min(remaining * 1000, 50)
            ready = dict(poller.poll(max(1, int(slice_ms))))
            if ready.get(fd):
                return  # readable, writable or hung up: the read/write tells which
            if ready.get(self.pidfd) or (self.pidfd < 0 and self.proc.poll() is not None):
                raise _Died(self._ended())

    def _write(self, data: bytes, deadline: float) -> None:
        view = memoryview(data)
        while view:
            self._wait(self.req_w, select.POLLOUT, deadline)
            try:
                view = view[os.write(self.req_w, view[:1 << 20]):]
            except BlockingIOError:
                continue
            except OSError as exc:  # EPIPE: nobody reads requests any more
                raise _Died(self._ended(f"closed its request pipe ({errno.errorcode.get(exc.errno, exc)})"))

    def _read_exact(self, n: int, deadline: float) -> bytearray:
        buf = bytearray(n)
        view = memoryview(buf)
        got = 0
        while got < n:
            self._wait(self.rep_r, select.POLLIN, deadline)
            try:
                k = os.readv(self.rep_r, [view[got:got + (1 << 20)]])
            except BlockingIOError:
                continue
            if k == 0:
                raise _Died(self._ended("closed its reply pipe"))
            got += k
        return buf

    def _read_frame(self, deadline: float) -> tuple[dict, memoryview]:
        magic, header_len, payload_len = wire.unpack_frame(self._read_exact(wire.FRAME_SIZE, deadline))
        if magic != wire.MAGIC:
            raise _Garbage("the reply stream is not in the sandbox format")
        if header_len > MAX_HEADER:  # before reading or parsing any of it: a header is small, data goes in buffers
            raise _Garbage(f"the reply header announces {header_len} bytes, over the limit of {MAX_HEADER}")
        if wire.FRAME_SIZE + header_len + payload_len > self.limits.reply_bytes:
            raise _Garbage(f"the reply announces {header_len + payload_len} bytes, over the limit of "
                           f"{self.limits.reply_bytes}")
        header_bytes = self._read_exact(header_len, deadline)
        payload = memoryview(self._read_exact(payload_len, deadline))
        try:
            header = json.loads(header_bytes.decode("ascii"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _Garbage(f"the reply header is not valid JSON ({type(exc).__name__})") from None
        if type(header) is not dict:
            raise _Garbage("the reply header is not an object")
        return header, payload

    # ---- ending ----
    def _ended(self, how: str | None = None) -> str:
        """Describes how the child ended (waiting briefly for it if it only closed its pipes)."""
        if self.dead is None:
            code = self._reap(timeout=0.5 if how else 5.0)
            if code is None:
                self.dead = how or "stopped answering"
            else:
                self.dead = self._describe(code)
        return self.dead

    def _reap(self, timeout: float) -> int | None:
        """Waits for the direct child with wait4 (for its rusage); its exit code, or None if it is alive."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, status, self.rusage = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:
                self.proc.returncode = self.proc.returncode if self.proc.returncode is not None else -255
                return self.proc.returncode
            if pid:
                self.proc.returncode = os.waitstatus_to_exitcode(status)
                return self.proc.returncode
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)

    def _describe(self, code: int) -> str:
        sig = -code if code < 0 else None
        if sig is None and self.level == "bubblewrap" and not self.warm and 128 < code < 128 + signal.NSIG:
            sig = code - 128  # bwrap reports a signalled child as 128 + signal
        how = f"killed by signal {_signal_name(sig)}" if sig else f"exited with status {code}"
        limits = self.limits
        if sig in (signal.SIGKILL, signal.SIGXCPU):
            # RLIMIT_CPU ends a process with SIGKILL. Under bubblewrap wait4 does not see the worker's CPU
            # time, so also estimate it: the CPU time it had when the operation began plus the time since.
            cpu = self.op_cpu + (time.monotonic() - self.op_start)
            if self.rusage is not None:
                cpu = max(cpu, self.rusage.ru_utime + self.rusage.ru_stime)
            if cpu >= 0.9 * limits.cpu_seconds:  # rusage can read a little under the kernel's own count
                return f"used up its CPU time limit ({limits.cpu_seconds} s; {how})"
        if self.rusage is not None and self.rusage.ru_maxrss >= 0.9 * limits.memory_mb * 1024:
            return f"ran out of memory (limit {limits.memory_mb} MB; {how})"
        if self.group is not None and self.group.oom_kills() > self.oom_kills:
            return f"ran out of memory (limit {limits.memory_mb} MB for all its processes together; {how})"
        tail = bytes(self.output.data[-4096:])
        if sig in (signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGKILL) and any(
                m in tail for m in (b"MemoryError", b"Cannot allocate memory", b"bad_alloc", b"out of memory")):
            return f"ran out of memory (limit {limits.memory_mb} MB; {how})"
        return how

    def kill(self) -> None:
        """Kills the child's whole process tree and releases everything; safe to call twice."""
        if self.req_w < 0:
            return
        if self.proc.returncode is None:
            strays = _descendants(self.proc.pid) if self.level == "process" else []
            for pid in [self.proc.pid] + strays:
                try:
                    os.killpg(pid, signal.SIGKILL) if pid == self.proc.pid else os.kill(pid, signal.SIGKILL)
                except (ProcessLookupError, PermissionError):
                    pass
            if self.dead is None:
                self.dead = "killed by the grader"
            self._reap(timeout=5.0)
        # Setsid'd daemons and double forks left the process group: find them by their marker. In bubblewrap
        # the pid namespace is already dying; this waits until it is really empty.
        _kill_marked(self.marker)
        for fd in (self.req_w, self.rep_r, self.pidfd):
            if fd >= 0:
                os.close(fd)
        self.req_w = self.rep_r = self.pidfd = -1
        self.out.close()


# ------------------------------------------------------------------------------------------------ zygotes
class _Zygote:
    """A warm parent in its own sandbox that has imported the course's libraries (never student code, references
    or graders) and forks a fresh student process per request; see sandbox_worker.py's zygote section.

    Under bubblewrap, one zygote's scratch folder (shown at SANDBOX_HOME) holds one student's work folder at a
    time, so a zygote is leased to one Sandbox at a time (_lease_zygote). It starts from a long-lived thread
    (_STARTER): bwrap's --die-with-parent is tied to the thread that started it.
    """

    def __init__(self, level: str, preload: tuple[str, ...], env: dict[str, str]):
        self.level = level
        self.preload = preload
        self.base_env = dict(env)  # what a replacement is started with
        self.key = _zygote_key(level, preload, env)
        self.scratch = Path(tempfile.mkdtemp(prefix="agsb-zygote-"))
        home = "/tmp" if level == "bubblewrap" else str(self.scratch)
        env = dict(env, HOME=home, TMPDIR=home)
        self.log = _Output(65536)
        self.lock = threading.Lock()
        config = {"prefix": sys.prefix, "exec_prefix": sys.exec_prefix, "path": _child_path(),
                  "preload": list(preload)}
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        fds: tuple[int, ...] = ()
        try:
            if level == "bubblewrap":
                os.chmod(self.scratch, 0o755)  # nobody must reach the work folder inside
                argv, fds = _bwrap_command(self.scratch, WORKER_SOURCE, 2**26, _bwrap_setup()[1], zygote=True)
                argv += [PYTHON, "-I", "-S", SANDBOX_WORKER]
            else:
                worker = self.scratch / "worker.py"
                worker.write_bytes(WORKER_SOURCE)
                worker.chmod(0o444)
                argv = [PYTHON, "-I", "-S", str(worker)]
            argv += ["--zygote", str(theirs.fileno()), marshal.dumps(config).hex()]
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                                         pass_fds=(theirs.fileno(), *fds), close_fds=True, cwd="/", env=env,
                                         start_new_session=True, preexec_fn=_preexec(None))
        except BaseException:
            os.close(out_r)
            self.control.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise
        finally:
            for fd in (out_w, theirs.fileno(), *fds):
                os.close(fd)
            theirs.detach()
        self.out = _OutputPipe(out_r, self.log)
        try:
            if self._line(ZYGOTE_START_TIMEOUT) != b"ready":
                raise RuntimeError("it did not greet")
            self.host_pid = _python_of(self.proc.pid, level)  # the zygote's python, as this machine numbers it
        except Exception as exc:
            self.close()
            raise RuntimeError(f"the zygote did not start ({exc}); its output: {self.log.text()[-1500:]!r}") from None

    def _line(self, timeout: float) -> bytes:
        self.control.settimeout(timeout)
        data = b""
        while not data.endswith(b"\n"):
            chunk = self.control.recv(64)
            if not chunk:
                raise RuntimeError(f"it ended ({self.proc.poll()})")
            data += chunk
        return data.strip()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def fork(self, request: dict, fds: list[int]) -> tuple[int, int]:
        """Asks for a student process with these pipes (request, reply, output, status, kill); returns a pidfd of
        its keeper, which becomes readable when everything of the student is gone, and the keeper's pid on this
        machine. The keeper waits for one byte on the kill pipe before it forks the student."""
        with self.lock:
            socket.send_fds(self.control, [marshal.dumps(request)], fds)
            inner = int(self._line(30.0))  # the keeper's pid in the zygote's pid namespace
            for pid in _children(self.host_pid):
                try:
                    with open(f"/proc/{pid}/status") as f:
                        nspid = next((line.split()[1:] for line in f if line.startswith("NSpid:")), [])
                    if nspid and int(nspid[-1]) == inner:
                        return os.pidfd_open(pid), pid
                except (OSError, ValueError):
                    continue
            raise RuntimeError(f"the keeper (pid {inner} in the zygote) cannot be found")

    def close(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AttributeError):
            pass
        if hasattr(self, "proc"):
            self.proc.wait()
        self.control.close()
        if hasattr(self, "out"):
            self.out.close()
        remove_tree(self.scratch)


_STARTER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="zygote-starter")
_idle_zygotes: dict[tuple, list[_Zygote]] = {}
_all_zygotes: list[_Zygote] = []
_zygote_lock = threading.Lock()
_zygote_trouble: str | None = None  # why warm starts are off in this process, once a zygote failed to start


def warm_available(level: str) -> bool:
    """Whether sandboxes here fork from a zygote: Linux with pidfds (where a zygote then fails to start, e.g.
    user namespaces are disabled for a normal user, _prepare turns warm starts off and says so).
    AUTOGRADER_WARM=0 turns it off (each student process then starts from scratch)."""
    if os.environ.get("AUTOGRADER_WARM", "1").strip() == "0" or _zygote_trouble is not None:
        return False
    if not sys.platform.startswith("linux") or not hasattr(os, "pidfd_open") or not hasattr(socket, "send_fds"):
        return False
    return level in ("process", "bubblewrap")  # not root: the zygote holds its capabilities in a user namespace


def _zygote_key(level: str, preload: tuple[str, ...], env: dict[str, str]) -> tuple:
    return level, preload, tuple(sorted(env.items()))


def _lease_zygote(level: str, preload: tuple[str, ...], env: dict[str, str]) -> _Zygote:
    key = _zygote_key(level, preload, env)
    with _zygote_lock:
        idle = _idle_zygotes.setdefault(key, [])
        while idle:
            zygote = idle.pop()
            if zygote.alive():
                return zygote
            zygote.close()
    zygote = _STARTER.submit(_Zygote, level, preload, env).result()
    with _zygote_lock:
        _all_zygotes.append(zygote)
    return zygote


def _return_zygote(zygote: _Zygote) -> None:
    with _zygote_lock:
        _idle_zygotes.setdefault(zygote.key, []).append(zygote)


@atexit.register
def _close_zygotes() -> None:
    for zygote in _all_zygotes:
        zygote.close()


class _WarmChild(_Child):
    """A student process forked by a zygote. Its keeper reports how it ended on the status pipe (which also
    serves as its pidfd in _wait) and kills it, and everything it started, when the kill pipe closes."""

    warm = True

    def __init__(self, zygote: _Zygote, request: dict, limits: SandboxLimits, level: str, generation: int,
                 output: _Output, group: StudentGroup | None = None):
        self._state(limits, level, "", generation, output, group)
        self.proc = _KeptProcess()
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        self.status_r, status_w = os.pipe()
        kill_r, self.kill_w = os.pipe()
        theirs = [req_r, rep_w, out_w, status_w, kill_r]
        try:
            self.keeper, keeper_pid = zygote.fork(request, theirs)
            if group is not None:
                group.add(keeper_pid)  # before it forks the student: everything the student starts is counted
            os.write(self.kill_w, b"g")  # the keeper waits for this before it forks the student
        except BaseException:
            for fd in (self.req_w, self.rep_r, out_r, self.status_r, self.kill_w):
                os.close(fd)
            raise
        finally:
            for fd in theirs:
                os.close(fd)
        os.set_blocking(self.req_w, False)
        os.set_blocking(self.rep_r, False)
        os.set_blocking(self.status_r, False)
        self.out = _OutputPipe(out_r, output)
        self.pidfd = self.status_r  # readable once the student process has ended
        self._status = b""

    def _reap(self, timeout: float) -> int | None:
        """Reads the keeper's report: `exit STATUS UTIME STIME MAXRSS` (or `error ...` if it could not start)."""
        if self.proc.returncode is not None:
            return self.proc.returncode
        deadline = time.monotonic() + timeout
        while b"\n" not in self._status:
            try:
                chunk = os.read(self.status_r, 4096)
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    return None
                select.select([self.status_r], [], [], max(0.0, deadline - time.monotonic()))
                continue
            if not chunk:
                break
            self._status += chunk[:4096]
        words = self._status.split(b"\n")[0].decode(errors="replace").split()
        try:
            status, utime, stime, maxrss = int(words[1]), float(words[2]), float(words[3]), int(words[4])
            assert words[0] == "exit"
        except (AssertionError, IndexError, ValueError):
            self.dead = self.dead or ("could not start: " + " ".join(words[1:])[:500] if words[:1] == ["error"]
                                      else "its keeper ended without a report")
            self.proc.returncode = -int(signal.SIGKILL)
            return self.proc.returncode
        self.proc.returncode = os.waitstatus_to_exitcode(status)
        self.rusage = _Usage(utime, stime, maxrss)
        return self.proc.returncode

    def kill(self) -> None:
        if self.req_w < 0:
            return
        if self.proc.returncode is None and self.dead is None:
            self.dead = "killed by the grader"
        os.close(self.kill_w)  # the keeper kills the student and all it started, then reports
        self._reap(timeout=5.0)
        self._drain_status(timeout=5.0)
        if self.keeper >= 0:  # and it exits right after: wait for that too, so that nothing is left at all
            select.select([self.keeper], [], [], 5.0)
            os.close(self.keeper)
        for fd in (self.req_w, self.rep_r, self.status_r):
            os.close(fd)
        self.req_w = self.rep_r = self.status_r = self.pidfd = self.kill_w = self.keeper = -1
        self.out.close()

    def _drain_status(self, timeout: float) -> None:
        """Waits for the status pipe's end of file: the keeper has killed everything and exited."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if not os.read(self.status_r, 4096):
                    return
            except BlockingIOError:
                select.select([self.status_r], [], [], max(0.0, deadline - time.monotonic()))


@dataclass
class _KeptProcess:
    """Stands in for a Popen: the zygote's keeper, not this process, is the student process's parent."""
    returncode: int | None = None
    pid: int = -1

    def poll(self) -> int | None:
        return self.returncode


@dataclass
class _Usage:
    ru_utime: float
    ru_stime: float
    ru_maxrss: int


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


# ----------------------------------------------------------------------------------------- encoding
def _encode_arg(value: Any, buffers: list[bytes], owner: object, generation: int, depth: int = 0) -> Any:
    """Request arguments: plain data and Handles of this sandbox's current process."""
    if depth > wire.MAX_DEPTH:
        raise ValueError("arguments are nested too deeply")
    if isinstance(value, Handle):
        if value._owner is not owner:
            raise ValueError(f"{value!r} belongs to a different sandbox")
        if value._generation != generation:
            raise StudentError(f"the student object {value.type_name!r} was lost when the student process was "
                               f"restarted (after an earlier timeout or crash)")
        return {"t": "h", "id": value.id}
    if value is None or type(value) in (bool, str):
        return value
    if isinstance(value, np.ndarray):
        dtype = _wire_dtype(value.dtype)
        buffers.append(np.ascontiguousarray(value, dtype=dtype).tobytes())
        return {"t": "nd", "dtype": dtype.str, "shape": list(value.shape), "b": len(buffers) - 1}
    if isinstance(value, np.generic):
        dtype = _wire_dtype(value.dtype)
        buffers.append(np.asarray(value, dtype=dtype).tobytes())
        return {"t": "sc", "dtype": dtype.str, "b": len(buffers) - 1}
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, (tuple, list)):
        return {"t": "tuple" if isinstance(value, tuple) else "list",
                "v": [_encode_arg(v, buffers, owner, generation, depth + 1) for v in value]}
    if isinstance(value, dict):
        if not all(type(k) is str for k in value):
            raise TypeError("dicts passed to student code must have str keys")
        return {"t": "dict", "v": [[k, _encode_arg(v, buffers, owner, generation, depth + 1)]
                                   for k, v in value.items()]}
    raise TypeError(f"cannot pass a {type(value).__name__} to student code")


def _wire_dtype(dtype: np.dtype) -> np.dtype:
    if dtype.kind in "biuf" and dtype.byteorder == ">":
        dtype = dtype.newbyteorder("<")
    if dtype.str not in wire.DTYPES:
        raise TypeError(f"cannot pass arrays of dtype {dtype} to student code")
    return dtype


class _Decoder:
    """Rebuilds a reply value from untrusted JSON and bytes; anything unexpected is InvalidResult."""

    def __init__(self, header: dict, payload: memoryview, owner: object, generation: int):
        sizes = header.get("buffers")
        if type(sizes) is not list or not all(type(n) is int and n >= 0 for n in sizes) \
                or sum(sizes) != len(payload):
            raise InvalidResult("the reply's buffer table does not match its payload")
        self.buffers, offset = [], 0
        for n in sizes:
            self.buffers.append(payload[offset:offset + n])
            offset += n
        self.owner = owner
        self.generation = generation

    def value(self, node: Any) -> Any:
        try:
            return self._value(node, 0)
        except InvalidResult:
            raise
        except (TypeError, ValueError, OverflowError, MemoryError, RecursionError) as exc:  # e.g. absurd shapes
            raise InvalidResult(f"malformed value in the reply ({type(exc).__name__})") from None

    def _value(self, node: Any, depth: int) -> Any:
        if depth > wire.MAX_DEPTH:
            raise InvalidResult("the result is nested too deeply")
        t = type(node)
        if node is None or t is bool or t is int or t is float:
            return node
        if t is str:
            if len(node) > MAX_STR:
                raise InvalidResult("the result holds an overlong string")
            return node
        if t is not dict:
            raise InvalidResult(f"unexpected {t.__name__} in the reply")
        tag = node.get("t")
        if tag in ("tuple", "list") and node.keys() == {"t", "v"} and type(node["v"]) is list:
            items = [self._value(v, depth + 1) for v in node["v"]]
            return tuple(items) if tag == "tuple" else items
        if tag == "nd" and node.keys() == {"t", "dtype", "shape", "b"}:
            shape = node["shape"]
            if type(shape) is not list or len(shape) > MAX_NDIM or not all(type(d) is int and d >= 0 for d in shape):
                raise InvalidResult("bad array shape in the reply")
            dtype, data = self._dtype_and_buffer(node)
            count = 1
            for d in shape:
                count *= d
            if count * dtype.itemsize != len(data):
                raise InvalidResult("array bytes do not match the array's shape")
            # A fresh, writable array owned by this process.
            return np.frombuffer(data, dtype=dtype, count=count).reshape(shape).copy() if count \
                else np.empty(shape, dtype=dtype)
        if tag == "sc" and node.keys() == {"t", "dtype", "b"}:
            dtype, data = self._dtype_and_buffer(node)
            if len(data) != dtype.itemsize:
                raise InvalidResult("scalar bytes do not match its dtype")
            return np.frombuffer(data, dtype=dtype, count=1)[0]
        if tag == "h" and node.keys() == {"t", "id", "type"} and type(node["id"]) is int \
                and type(node["type"]) is str:
            return Handle(node["type"][:MAX_TYPE_NAME], node["id"], self.owner, self.generation)
        raise InvalidResult("malformed value in the reply")

    def _dtype_and_buffer(self, node: dict) -> tuple[np.dtype, memoryview]:
        if type(node["dtype"]) is not str or node["dtype"] not in wire.DTYPES:
            raise InvalidResult(f"dtype {str(node['dtype'])[:20]!r} is not allowed in a reply")
        index = node["b"]
        if type(index) is not int or not 0 <= index < len(self.buffers):
            raise InvalidResult("bad buffer reference in the reply")
        return np.dtype(node["dtype"]), self.buffers[index]


def _cap_text(value: Any, cap: int = MAX_TEXT) -> str:
    text = value if type(value) is str else ""
    return text if len(text) <= cap else text[:cap] + " [...]"


def _seconds(t: float) -> str:
    return f"{t:g} s"


# ------------------------------------------------------------------------------------------- sandbox
class _Resources:
    """What a Sandbox must release; also run by a finalizer if a Sandbox is dropped without close()."""

    def __init__(self):
        self.child: _Child | None = None
        self.private_dir: str | None = None
        self.zygote: _Zygote | None = None  # leased for this sandbox's life
        self.moved: tuple[Path, Path] | None = None  # (the caller's work folder, where it is meanwhile)
        self.group: StudentGroup | None = None  # the student's cgroup, for all its processes

    def close(self) -> None:
        if self.child is not None:
            self.child.kill()
            self.child = None
        if self.group is not None:  # empty now: every process of the student is gone
            self.group.close()
            self.group = None
        if self.moved is not None:  # every student process is gone: give the folder back
            _move_tree(self.moved[1], self.moved[0])
            self.moved = None
        if self.zygote is not None:
            _return_zygote(self.zygote)
            self.zygote = None
        if self.private_dir is not None:
            remove_tree(self.private_dir)
            self.private_dir = None


class Sandbox:
    """Student code loaded into a child process; `call` runs one of its functions."""

    def __init__(self, workdir: Path, units: list[LoadUnit], limits: SandboxLimits | None = None,
                 env: dict[str, str] | None = None, preload: tuple[str, ...] = DEFAULT_PRELOAD,
                 warm: bool | None = None, deadline: float = float("inf")):
        """`preload`: libraries a zygote imports once for all students (with `warm`, the default where
        warm_available(): student processes are forked from it instead of started from scratch). `deadline`
        (time.monotonic()): loading the units, and loading them again after a crash, stops there; the units
        not loaded by then are reported."""
        self.workdir = Path(workdir).resolve()
        self.units = list(units)
        self.limits = limits or SandboxLimits()
        self.extra_env = dict(env or {})
        self.isolation = isolation_level()
        self.preload = tuple(preload)
        self.warm = warm_available(self.isolation) if warm is None else (warm and warm_available(self.isolation))
        self.student_seconds = 0.0  # wall time spent waiting for student code (loading units and calls)
        self.restarts = 0
        self._reports: dict[int, dict] = {}
        self._skip: set[int] = set()
        self._hung: set[str] = set()  # functions whose call timed out: not called again
        self.timeouts = 0  # calls and units that ran past their wall-clock limit
        self.deadline = deadline
        self._generation = 0
        self._started = False
        self._open = False  # between a successful __enter__ and close()
        self._lock = threading.RLock()
        self._output = _Output(self.limits.output_bytes)
        self._marker = secrets.token_hex(16)
        self._identity = object()  # what Handles remember of their sandbox
        self._res = _Resources()
        self._finalizer = weakref.finalize(self, self._res.close)

    # ---- public API ----
    @property
    def memory_scope(self) -> str:
        """How the memory and process limits applied to this student, for the results."""
        if self._res.group is not None:
            return (f"per student: {self.limits.memory_mb} MB, {self.limits.processes} processes and one CPU for all "
                    f"its processes together (cgroup {self._res.group.version})")
        return (f"per process: {self.limits.memory_mb} MB each (RLIMIT_DATA; no cgroup: {cgroups.support()[1]})")

    @property
    def load_report(self) -> list[dict]:
        """One entry per unit that failed to load (raised, timed out, crashed), in unit order."""
        return [dict(self._reports[i]) for i in sorted(self._reports)]

    def output(self) -> str:
        """Student stdout+stderr so far (all processes of this sandbox), capped at output_bytes."""
        child = self._res.child
        if child is not None and child.out.fd >= 0:
            child.out.pump()
        return self._output.text()

    def __enter__(self) -> "Sandbox":
        with self._lock:
            if self._started:
                raise RuntimeError("a Sandbox can be entered only once")
            self._started = True
            try:
                self._prepare()
                self._res.group = StudentGroup.create(self.limits.memory_mb * 2**20, self.limits.processes)
                self._res.child = self._start_and_load()
            except BaseException:
                self.close()
                raise
            self._open = True
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        """Kills every process of the sandbox and removes its private files."""
        with self._lock:
            self._open = False
            moved = self._res.moved
            self._res.close()
            if moved is not None:
                self.workdir = moved[0]

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Calls the student's function `name`; plain results come back as data, the rest as Handles."""
        with self._lock:
            if not self._open:
                raise RuntimeError("the Sandbox is not open (use it in a with statement)")
            child = self._res.child
            if child is None:  # the last one timed out or crashed: start afresh, reload the units
                child = self._res.child = self._start_and_load()
            buffers: list[bytes] = []
            request = {"op": "call", "name": name,
                       "args": [_encode_arg(a, buffers, self._identity, child.generation) for a in args],
                       "kwargs": [[k, _encode_arg(v, buffers, self._identity, child.generation)]
                                  for k, v in kwargs.items()]}
            what = f"{name}()"
            if name in self._hung:  # an infinite loop costs one call timeout, not one per test
                raise StudentTimeout(f"{what} was not called again: it timed out earlier "
                                     f"(after {_seconds(self.limits.call_timeout)})")
            # Failures are raised as fresh exceptions carrying a message only, never with the exception that
            # found them as their context: its frames hold what the student sent (up to reply_bytes), and a
            # grader may keep the exception for a while.
            failure: StudentError | None = None
            started = time.monotonic()
            try:
                reply, payload = child.request(request, buffers, self.limits.call_timeout)
            except _TimedOut:
                self._hung.add(name)
                self.timeouts += 1
                failure = StudentTimeout(f"{what} timed out after {_seconds(self.limits.call_timeout)}")
            except _Died as died:
                failure = StudentCrashed(f"{what} ended the student process: {died}")
            except _Garbage as bad:
                failure = InvalidResult(f"{what} sent back a malformed reply: {bad}")
            except BaseException:  # interrupted mid-request (e.g. a signal): its reply would be out of step
                self._discard_child()
                raise
            finally:
                self.student_seconds += time.monotonic() - started
            if failure is not None:
                self._discard_child()
                raise failure
            status = reply.get("status")
            if status == "ok" and "value" in reply:
                try:
                    return _Decoder(reply, payload, self._identity, child.generation).value(reply["value"])
                except InvalidResult as exc:
                    failure = InvalidResult(str(exc))
                del reply, payload
                self._discard_child()  # a child that writes malformed replies is not trusted again
                raise failure
            error = self._failure(what, reply)
            if isinstance(error, InvalidResult) and status != "toolarge":
                self._discard_child()
            raise error

    # ---- internals ----
    def _failure(self, what: str, reply: dict) -> StudentError:
        """The exception for a reply that is not a value."""
        status = reply.get("status")
        if status == "raised":
            return StudentException(_cap_text(reply.get("type"), MAX_TYPE_NAME) or "?",
                                    _cap_text(reply.get("message")), _cap_text(reply.get("traceback")))
        if status == "missing":
            return MissingFunction(f"{what[:-2][:200]} {_cap_text(reply.get('reason'), 200)}")
        if status == "toolarge" and type(reply.get("size")) is int:
            return InvalidResult(f"{what} returned {reply['size']} bytes, over the limit of {self.limits.reply_bytes} "
                                 f"(or a value whose description is over {MAX_HEADER} bytes: return numpy arrays "
                                 "rather than long lists)")
        if status == "badrequest":
            return StudentError(f"{what}: {_cap_text(reply.get('message'), 200)}")
        return InvalidResult(f"{what} sent back a malformed reply")

    def _prepare(self) -> None:
        if not self.workdir.is_dir():
            raise FileNotFoundError(f"work folder {self.workdir} does not exist")
        venv_bin = os.path.join(sys.prefix, "bin")
        base_env = {"PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
                    "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "AUTOGRADER": "1"}
        if self.warm:
            global _zygote_trouble
            try:
                self._res.zygote = _lease_zygote(self.isolation, self.preload, base_env)
            except RuntimeError as exc:  # e.g. a container that refuses the zygote's capabilities
                _zygote_trouble = str(exc)
                warnings.warn(f"warm sandboxes are off in this process: {exc}", RuntimeWarning, stacklevel=2)
                self.warm = False
        if self.isolation == "bubblewrap":
            if self.warm:
                self._move_workdir_into(self._res.zygote)
            if os.geteuid() == 0:
                _chown_tree(self.workdir, NOBODY, NOBODY)  # the student runs as nobody and writes here
            self._cwd = "/"  # bwrap --chdir takes the student to SANDBOX_WORKDIR
            home = tmp = "/tmp"  # a private tmpfs
            self._workdir_inside = SANDBOX_WORKDIR
        else:
            # Private HOME, TMPDIR and a copy of the worker (bubblewrap needs none: it has its own /tmp and
            # reads the worker from a memory file).
            private = Path(tempfile.mkdtemp(prefix="agsb-"))
            self._res.private_dir = str(private)
            worker = private / "worker.py"
            worker.write_bytes(WORKER_SOURCE)
            worker.chmod(0o444)
            (private / "home").mkdir()
            (private / "tmp").mkdir()
            self._process_argv = [PYTHON, "-I", "-S", str(worker)]
            self._cwd = str(self.workdir)
            home, tmp = str(private / "home"), str(private / "tmp")
            self._workdir_inside = str(self.workdir)
        # python -S: the worker takes the import path from here (see sandbox_worker._setup_paths).
        self._config = {"prefix": sys.prefix, "exec_prefix": sys.exec_prefix, "path": _child_path(),
                        "reply_limit": self.limits.reply_bytes, "preload": list(self.preload),
                        "memory_bytes": self.limits.memory_mb * 2**20,
                        "copy_from": SANDBOX_SUBMITTED if self.isolation == "bubblewrap" else None}
        self._env = {**base_env, "HOME": home, "TMPDIR": tmp, **self.extra_env, MARKER_VAR: self._marker}

    def _move_workdir_into(self, zygote: _Zygote) -> None:
        """A zygote shows its scratch folder at SANDBOX_HOME: the work folder goes there while the sandbox is open
        (and back in close())."""
        inside = zygote.scratch / "work"
        shutil.rmtree(inside, ignore_errors=True)  # a leftover of a sandbox that did not close cleanly
        _move_tree(self.workdir, inside)
        original = self._res.moved[0] if self._res.moved is not None else self.workdir
        self._res.moved = (original, inside)
        self.workdir = inside

    def _new_child(self) -> _Child:
        if self.warm:
            zygote = self._res.zygote
            if not zygote.alive():  # it should not end (no student code runs in it): start another
                zygote = _lease_zygote(zygote.level, zygote.preload, zygote.base_env)
                if self._res.moved is not None:
                    self._move_workdir_into(zygote)
                self._res.zygote.close()
                self._res.zygote = zygote
            bubblewrap = self.isolation == "bubblewrap"
            request = {"rlimits": _rlimits(self.limits), "memory_bytes": self.limits.memory_mb * 2**20, "uid": NOBODY if bubblewrap and os.geteuid() == 0 else None,
                       "cwd": self._workdir_inside, "env": self._env, "reply_limit": self.limits.reply_bytes,
                       "namespaces": bubblewrap, "tmp_bytes": self.limits.disk_bytes,
                       "under_tmp": [d for d in _python_dirs() if d.startswith("/tmp/")]}
            return _WarmChild(zygote, request, self.limits, self.isolation, self._generation, self._output,
                              self._res.group)
        if self.isolation != "bubblewrap":
            return _Child(self._process_argv, (), self._config, self._env, self._cwd, self.limits, self.isolation,
                          self._marker, self._generation, self._output, self._res.group)
        argv, fds = _bwrap_command(self.workdir, WORKER_SOURCE, self.limits.disk_bytes, _bwrap_setup()[1])
        try:
            return _Child(argv + [PYTHON, "-I", "-S", SANDBOX_WORKER], fds, self._config, self._env,
                          self._cwd, self.limits, self.isolation, self._marker, self._generation, self._output,
                          self._res.group)
        finally:
            for fd in fds:
                os.close(fd)

    def _spawn(self) -> _Child:
        """Starts a child and waits for its greeting (no student code has run yet)."""
        self._generation += 1
        if self._generation > 1:
            self.restarts += 1
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.1
        while True:
            seen = len(self._output.data)
            child = self._new_child()
            self._res.child = child  # so that close() kills it even if start-up fails
            try:
                child.await_greeting(max(deadline - time.monotonic(), 1.0))
                return child
            except (_TimedOut, _Died, _Garbage) as exc:
                child.kill()
                self._res.child = None
                said = bytes(self._output.data[seen:])
                if isinstance(exc, _Died) and b"Resource temporarily unavailable" in said \
                        and time.monotonic() + delay < deadline:
                    # RLIMIT_NPROC counts all processes of uid 65534, so another student's fork bomb can use
                    # it up for a moment (until its call times out): wait rather than fail this student.
                    time.sleep(delay)
                    delay = min(2 * delay, 2.0)
                    continue
                raise RuntimeError(f"the student process did not start ({type(exc).__name__.strip('_')}: "
                                   f"{exc}); its output: {said[-1000:].decode(errors='replace')!r}") from None

    def _start_and_load(self) -> _Child:
        """Starts a child and loads every unit not known to hang or crash; restarts after each such unit."""
        while True:
            child = self._spawn()
            for i, unit in enumerate(self.units):
                if i in self._skip:
                    continue
                left = self.deadline - time.monotonic()
                if left <= 0:  # the whole submission's time is used up: the rest is not loaded
                    self._skip.add(i)
                    self._report(i, unit, "TimeoutError: not loaded: the time limit for the whole submission was "
                                          "used up while loading", "")
                    continue
                request = {"op": "load", "source": unit.source, "filename": self._unit_filename(unit),
                           "kind": unit.kind}
                failure = None
                started = time.monotonic()
                limit = min(self.limits.unit_timeout, left)
                try:
                    reply, _ = child.request(request, [], limit)
                except _TimedOut:
                    self.timeouts += 1
                    failure = (f"TimeoutError: ran longer than {_seconds(round(limit, 1))}"
                               + ("" if limit == self.limits.unit_timeout else ", when the time limit for the whole "
                                  "submission was used up") + "; skipped")
                except _Died as died:
                    failure = f"ProcessCrashed: {died}; skipped"
                except _Garbage as bad:
                    failure = f"InvalidResult: {bad}; skipped"
                except BaseException:  # e.g. KeyboardInterrupt: never keep a half-loaded child
                    self._discard_child()
                    raise
                finally:
                    self.student_seconds += time.monotonic() - started
                if failure is not None:
                    self._skip.add(i)
                    self._report(i, unit, failure, "")
                    self._discard_child()
                    break
                if reply.get("status") == "raised":
                    self._report(i, unit, f"{_cap_text(reply.get('type'), MAX_TYPE_NAME)}: "
                                          f"{_cap_text(reply.get('message'))}", _cap_text(reply.get("traceback")))
                elif reply.get("status") != "ok":
                    self._skip.add(i)
                    self._report(i, unit, "InvalidResult: malformed reply; skipped", "")
                    self._discard_child()
                    break
            else:
                return child

    def _unit_filename(self, unit: LoadUnit) -> str:
        if unit.kind == "module":
            return os.path.join(self._workdir_inside, unit.file)
        return f"{unit.file} (cell {unit.index})"

    def _report(self, i: int, unit: LoadUnit, error: str, tb: str) -> None:
        if i not in self._reports:  # a reload repeats the first load's errors: report each unit once
            self._reports[i] = {"file": unit.file, "index": unit.index, "kind": unit.kind, "error": error,
                                "traceback": tb}

    def _discard_child(self) -> None:
        if self._res.child is not None:
            self._res.child.kill()
            self._res.child = None

    def __repr__(self) -> str:
        return f"<Sandbox {self.workdir} isolation={self.isolation} restarts={self.restarts}>"


def _move_tree(source: Path, dest: Path) -> None:
    """Renames a folder, or copies it (symlinks as links) and removes the original across file systems."""
    try:
        os.rename(source, dest)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        shutil.copytree(source, dest, symlinks=True)
        shutil.rmtree(source)


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    """chown -R without following symlinks (a student's symlink must not hand over the file it points to)."""
    os.chown(root, uid, gid, follow_symlinks=False)
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            os.chown(os.path.join(dirpath, name), uid, gid, follow_symlinks=False)
