"""Zygotes: warm parents, each in its own sandbox, that have imported the course's libraries (never student code,
references or graders) and fork a fresh student process per request (see worker.py's zygote section)."""

from __future__ import annotations

import atexit
import concurrent.futures
import marshal
import os
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
        config = {"prefix": sys.prefix, "exec_prefix": sys.exec_prefix, "path": policy._child_path(),
                  "preload": list(preload)}
        self.control, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        out_r, out_w = os.pipe()
        fds: tuple[int, ...] = ()
        try:
            if level == "bubblewrap":
                os.chmod(self.scratch, 0o755)  # nobody must reach the work folder inside
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
