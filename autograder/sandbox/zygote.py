"""Zygotes: warm parents, each in its own sandbox, that have imported the course's libraries (never student code,
references or graders) and fork a fresh student process per request (see worker.py's zygote section)."""

from __future__ import annotations

import atexit
import concurrent.futures
import marshal
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

from autograder.files import remove_tree
from autograder.sandbox.bwrap import _bwrap_command, _bwrap_setup
from autograder.sandbox.channel import _Output, _OutputPipe
from autograder.sandbox.launch import _preexec, install_student_files
from autograder.sandbox import policy
from autograder.sandbox.limits import SandboxLimits
from autograder.sandbox.policy import isolation_policy
from autograder.sandbox.policy import PYTHON, SANDBOX_WORKER, STUDENT_FILES, ZYGOTE_START_TIMEOUT
from autograder.sandbox.procfs import _children, _python_of

class _Zygote:
    """A warm parent in its own sandbox that has imported the course's libraries (never student code, references
    or graders) and forks a fresh student process per request; see worker.py's zygote section.

    Under bubblewrap, one zygote's scratch folder (shown at SANDBOX_HOME) holds one student's work folder at a
    time, so a zygote is leased to one Sandbox at a time (_lease_zygote). It starts from a long-lived thread
    (_STARTER): bwrap's --die-with-parent is tied to the thread that started it.
    """

    def __init__(self, level: str, preload: tuple[str, ...], env: dict[str, str], greet: bool = True):
        """`greet=False` (the warm parent's zygotes, see prestart): return once it is started, without waiting for
        its imports (greet() waits), and send its output to a file instead of a reader thread, since the process
        that starts it is then forked."""
        self.owner = os.getpid()  # only this process stops it (workers forked from the warm parent share it)
        self.level = level
        self.preload = preload
        self.base_env = dict(env)  # what a replacement is started with
        self.key = _zygote_key(level, preload, env)
        self.scratch = Path(tempfile.mkdtemp(prefix="agsb-zygote-"))
        home = "/tmp" if level == "bubblewrap" else str(self.scratch)
        env = dict(env, HOME=home, TMPDIR=home)
        self.log = _Output(65536)
        self.lock = threading.Lock()
        config = {"prefix": sys.prefix, "exec_prefix": sys.exec_prefix, "path": policy._child_path(),
                  "preload": list(preload)}
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        if greet:
            out_r, out_w = os.pipe()
        else:
            out_r, self.log_file = -1, self.scratch.with_name(self.scratch.name + ".log")
            out_w = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        fds: tuple[int, ...] = ()
        try:
            if level == "bubblewrap":
                os.chmod(self.scratch, 0o711)  # nobody must reach the work folder inside, no one list it
                rules = isolation_policy(SandboxLimits(), level, self.base_env, seccomp=_bwrap_setup()[1])
                argv, fds = _bwrap_command(rules, self.scratch, STUDENT_FILES, zygote=True)
                argv += [PYTHON, "-I", "-S", SANDBOX_WORKER]
            else:
                argv = [PYTHON, "-I", "-S", str(install_student_files(self.scratch))]
            argv += ["--zygote", str(theirs.fileno()), marshal.dumps(config).hex()]
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w,
                                         pass_fds=(theirs.fileno(), *fds), close_fds=True, cwd="/", env=env,
                                         start_new_session=True, preexec_fn=_preexec([]))
        except BaseException:
            if out_r >= 0:
                os.close(out_r)
            self.control.close()
            shutil.rmtree(self.scratch, ignore_errors=True)
            raise
        finally:
            for fd in (out_w, theirs.fileno(), *fds):
                os.close(fd)
            theirs.detach()
        self.pidfd = os.pidfd_open(self.proc.pid)  # its liveness, for every process that shares it
        self.out = _OutputPipe(out_r, self.log) if out_r >= 0 else None
        if greet:
            self.greet()

    def greet(self) -> None:
        """Waits for the zygote's imports to end ("ready"); raises RuntimeError (after closing it) if they fail."""
        try:
            if self._line(ZYGOTE_START_TIMEOUT) != b"ready":
                raise RuntimeError("it did not greet")
            self.host_pid = _python_of(self.proc.pid, self.level)  # the zygote's python, as this machine numbers it
        except Exception as exc:
            output = self.log.text() if self.out is not None else _tail(self.log_file)
            self.close()
            raise RuntimeError(f"the zygote did not start ({exc}); its output: {output[-1500:]!r}") from None

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
        return not select.select([self.pidfd], [], [], 0)[0]  # a pidfd is readable once the process has ended

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
        if os.getpid() != self.owner:
            return  # a worker forked from the warm parent: the parent stops the zygotes it started
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError, AttributeError):
            pass
        if hasattr(self, "proc"):
            self.proc.wait()
        self.control.close()
        if getattr(self, "out", None) is not None:
            self.out.close()
        if hasattr(self, "pidfd"):
            os.close(self.pidfd)
            del self.pidfd
        remove_tree(self.scratch)
        for extra in (getattr(self, "log_file", None), getattr(self, "claim_file", None)):
            if extra is not None:
                extra.unlink(missing_ok=True)


def _tail(path: Path) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - 4096))
            return f.read().decode(errors="replace")
    except OSError:
        return ""


_STARTER = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="zygote-starter")
_idle_zygotes: dict[tuple, list[_Zygote]] = {}
_all_zygotes: list[_Zygote] = []
_zygote_lock = threading.Lock()
_zygote_trouble: str | None = None  # why warm starts are off in this process, once a zygote failed to start
_starting: dict[tuple, concurrent.futures.Future] = {}  # zygotes being started ahead of need (start_early)


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


def start_early(level: str, preload: tuple[str, ...], env: dict[str, str]) -> None:
    """Starts a zygote in the background, so that the first Sandbox finds it (half) ready: a grading worker calls
    this first, then loads the reference and collects the graders meanwhile. Does nothing where warm starts are
    off, or when one is already on its way."""
    if not warm_available(level):
        return
    key = _zygote_key(level, preload, env)
    with _zygote_lock:
        if key not in _starting and not _idle_zygotes.get(key):
            _starting[key] = _STARTER.submit(_Zygote, level, preload, env)


_prestarted: list[_Zygote] = []  # the warm parent's zygotes, one for each grading worker it will fork
_claims: list[int] = []  # in a worker: the locked claim file of the pre-started zygote it took


def prestart(level: str, preload: tuple[str, ...], env: dict[str, str], count: int) -> None:
    """In the warm parent (autograder/warm_parent.py), before its own imports: starts `count` zygotes, whose
    imports then run beside the parent's. greet_prestarted() waits for them; each worker forked from the parent
    takes one for itself (claim_prestarted)."""
    if not warm_available(level):
        return
    for _ in range(count):
        zygote = _Zygote(level, preload, env, greet=False)
        zygote.claim_file = zygote.scratch.with_name(zygote.scratch.name + ".claim")
        zygote.claim_file.touch(mode=0o600)
        _prestarted.append(zygote)
        _all_zygotes.append(zygote)


def greet_prestarted() -> list[str]:
    """In the warm parent, after its imports: waits for its zygotes; returns why any failed (those are dropped,
    and the workers without one start their own)."""
    problems = []
    for zygote in list(_prestarted):
        try:
            zygote.greet()
        except RuntimeError as exc:
            problems.append(str(exc))
            _prestarted.remove(zygote)
    return problems


def claim_prestarted(level: str, preload: tuple[str, ...], env: dict[str, str]) -> bool:
    """In a grading worker forked from the warm parent: takes a pre-started zygote no other worker has taken (an
    exclusive lock on its claim file, held for this worker's life: a worker that dies frees it) and makes it this
    process's idle zygote. False if none is left (the worker then starts its own)."""
    import fcntl

    key = _zygote_key(level, preload, env)
    for zygote in _prestarted:
        if zygote.key != key or not zygote.alive() or getattr(zygote, "host_pid", None) is None:
            continue
        fd = os.open(zygote.claim_file, os.O_RDONLY | os.O_CLOEXEC)  # this process's own open file: its own lock
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        _claims.append(fd)
        with _zygote_lock:
            _idle_zygotes.setdefault(key, []).append(zygote)
        return True
    return False


def _lease_zygote(level: str, preload: tuple[str, ...], env: dict[str, str]) -> _Zygote:
    key = _zygote_key(level, preload, env)
    with _zygote_lock:
        early = _starting.pop(key, None)
        idle = _idle_zygotes.setdefault(key, [])
        while idle:
            zygote = idle.pop()
            if zygote.alive():
                if early is not None:
                    _starting[key] = early  # not needed now: the next lease takes it
                return zygote
            zygote.close()
    zygote = (early or _STARTER.submit(_Zygote, level, preload, env)).result()  # a failure raises here, as before
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
