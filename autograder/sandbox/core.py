"""The Sandbox: student code loaded into a child process, and calls into it (see the package docstring).

Its ~400 lines are one object's life: preparing the student's folder and policy, starting (warm or cold) and
loading units, calls with their failure modes, and releasing everything; the mechanisms live in the modules
beside it."""

from __future__ import annotations

import os
import secrets
import shutil
import sys
import tempfile
import threading
import time
import warnings
import weakref
import errno
from pathlib import Path
from typing import Any

from autograder.files import remove_tree
from autograder.sandbox import cgroups, policy, uids
from autograder.sandbox import zygote as zygotes
from autograder.sandbox.bwrap import _bwrap_command, _bwrap_setup, isolation_level
from autograder.sandbox.cgroups import StudentGroup
from autograder.sandbox.channel import _Died, _MalformedReply, _Output, _TimedOut
from autograder.sandbox.codec import _cap_text, _Decoder, _encode_arg, _seconds
from autograder.sandbox.errors import (InvalidResult, MissingFunction, RuleBroken, StudentCrashed, StudentError,
                                       StudentException, StudentTimeout)
from autograder.sandbox.limits import LoadUnit, SandboxLimits
from autograder.sandbox.policy import (DEFAULT_PRELOAD, MARKER_VAR, MAX_HEADER, MAX_TYPE_NAME, NOBODY, PYTHON,
                                       SANDBOX_SUBMITTED, SANDBOX_WORKDIR, SANDBOX_WORKER, START_TIMEOUT,
                                       STUDENT_FILES, isolation_policy)
from autograder.sandbox.launch import install_student_files, unprivileged_can_run_python
from autograder.sandbox.process import ColdProcess, StudentProcess, WarmProcess
from autograder.sandbox.zygote import _lease_zygote, _return_zygote, _Zygote, warm_available

def base_environment() -> dict[str, str]:
    """The student's environment before HOME, TMPDIR and the sandbox's marker (also the key of its zygote)."""
    venv_bin = os.path.join(sys.prefix, "bin")
    return {"PATH": f"{venv_bin}:/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8", "MPLBACKEND": "Agg",
            "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "AUTOGRADER": "1"}


def start_early(preload: tuple[str, ...] = DEFAULT_PRELOAD) -> None:
    """Gets this process's first zygote going: a grading worker calls it at its start, before the slow work it can
    overlap with. A worker forked from the warm parent takes one of the parent's zygotes (zygote.claim_prestarted);
    otherwise one starts in the background (zygote.start_early)."""
    if not zygotes.claim_prestarted(isolation_level(), tuple(preload), base_environment()):
        zygotes.start_early(isolation_level(), tuple(preload), base_environment())


def prestart_zygotes(preload: tuple[str, ...], count: int) -> None:
    """The warm parent's zygotes, one per grading worker it will fork (zygote.prestart)."""
    zygotes.prestart(isolation_level(), tuple(preload), base_environment(), count)


class _Resources:
    """What a Sandbox must release; also run by a finalizer if a Sandbox is dropped without close()."""

    def __init__(self):
        self.child: StudentProcess | None = None
        self.private_dir: str | None = None
        self.zygote: _Zygote | None = None  # leased for this sandbox's life
        self.moved: tuple[Path, Path] | None = None  # (the caller's work folder, where it is meanwhile)
        self.group: StudentGroup | None = None  # the student's cgroup, for all its processes
        self.uid: uids.UidLease | None = None  # at the process level as root: the student's own uid

    def close(self) -> None:
        if self.child is not None:
            self.child.kill()
            self.child = None
        trouble = None
        if self.group is not None:  # everything still in it is the student's, whatever it did: kill it all
            try:
                self.group.kill_all()
            except RuntimeError as exc:
                trouble = exc
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
        if self.uid is not None:  # every process of it is gone: what it left in /tmp goes, then the uid is free
            self.uid.release()
            self.uid = None
        if trouble is not None:  # after the rest is released: the caller fails this student with a grader error
            raise trouble


class Sandbox:
    """Student code loaded into a child process; `call` runs one of its functions."""

    def __init__(self, workdir: Path, units: list[LoadUnit], limits: SandboxLimits | None = None,
                 env: dict[str, str] | None = None, preload: tuple[str, ...] = DEFAULT_PRELOAD,
                 warm: bool | None = None, deadline: float = float("inf"), by_hand: tuple[str, ...] = ()):
        """`preload`: libraries a zygote imports once for all students (with `warm`, the default where
        warm_available(): student processes are forked from it instead of started from scratch). `deadline`
        (time.monotonic()): loading the units, and loading them again after a crash, stops there; the units
        not loaded by then are reported. `by_hand`: functions that may not use torch autograd while they run
        (student/guard.py): wherever the student's code calls them, and in every call_by_hand."""
        self.workdir = Path(workdir).resolve()
        self.units = list(units)
        self.limits = limits or SandboxLimits()
        self.extra_env = dict(env or {})
        self.isolation = isolation_level()
        self.preload = tuple(preload)
        self.by_hand = tuple(by_hand)
        self.rule_breaks: dict[str, str] = {}  # function -> how it called autograd (its first call that did)
        self.warm = warm_available(self.isolation) if warm is None else (warm and warm_available(self.isolation))
        self.student_seconds = 0.0  # wall time spent waiting for student code (loading units and calls)
        self.restarts = 0
        self._reports: dict[int, dict] = {}
        self._skip: set[int] = set()
        # Student functions whose call timed out: the grader's proxy (pytest_plugin.Student) calls them no more,
        # so one infinite loop costs one call limit. Kept here because it belongs to this student.
        self.hung: set[str] = set()
        self.timeouts = 0  # calls and units that ran past their wall-clock limit
        self.deadline = deadline
        self._generation = 0
        self._started = False
        self._open = False  # between a successful __enter__ and close()
        self._lock = threading.RLock()
        self._output = _Output(self.limits.output_bytes)
        self._marker = secrets.token_hex(16)
        self._identity = object()  # what Handles remember of their sandbox
        self._resources = _Resources()
        self._finalizer = weakref.finalize(self, self._resources.close)

    # ---- public API ----
    @property
    def memory_scope(self) -> str:
        """How the memory and process limits applied to this student, for the results."""
        if self._resources.group is not None:
            return (f"per student: {self.limits.memory_mb} MB, {self.limits.processes} processes and one CPU for all "
                    f"its processes together (cgroup {self._resources.group.version})")
        return (f"per process: {self.limits.memory_mb} MB each (RLIMIT_DATA; no cgroup: {cgroups.support()[1]})")

    @property
    def zygote_source(self) -> str | None:
        """Where this sandbox's zygote came from: "warm parent" (started by the warm parent beside its own imports,
        autograder/warm_parent.py), "this process", or None (a cold start)."""
        zygote = self._resources.zygote
        if zygote is None:
            return None
        return "this process" if zygote.owner == os.getpid() else "warm parent"

    @property
    def load_report(self) -> list[dict]:
        """One entry per unit of the student's that failed to load (raised, timed out, crashed), in unit order."""
        return [dict(self._reports[i]) for i in sorted(self._reports) if self._reports[i]["kind"] != "helper"]

    def output(self) -> str:
        """Student stdout+stderr so far (all processes of this sandbox), capped at output_bytes."""
        child = self._resources.child
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
                self._resources.group = StudentGroup.create(**dict(self.policy.cgroup))
                self._resources.child = self._start_and_load()
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
            moved = self._resources.moved
            self._resources.close()
            if moved is not None:
                self.workdir = moved[0]

    def call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """Calls the student's function `name`; plain results come back as data, the rest as Handles."""
        return self.call_by_hand(None, name, *args, **kwargs)

    def call_by_hand(self, function: str | None, name: str, *args: Any, **kwargs: Any) -> Any:
        """As call(), with the by-hand rule for `function` (None: no rule) in force while `name` runs: `name` is
        `function` or a helper calling it. A call that used autograd raises RuleBroken, even if the student's
        code caught the guard's error, and is remembered in rule_breaks."""
        with self._lock:
            if not self._open:
                raise RuntimeError("the Sandbox is not open (use it in a with statement)")
            child = self._resources.child
            if child is None:  # the last one timed out or crashed: start afresh, reload the units
                child = self._resources.child = self._start_and_load()
            buffers: list[bytes] = []
            request = {"op": "call", "name": name,
                       "args": [_encode_arg(a, buffers, self._identity, child.generation) for a in args],
                       "kwargs": [[k, _encode_arg(v, buffers, self._identity, child.generation)]
                                  for k, v in kwargs.items()]}
            if function is not None:
                request["by_hand"] = function
            what = f"{name}()"
            # Failures are raised as fresh exceptions carrying a message only, never with the exception that
            # found them as their context: its frames hold what the student sent (up to reply_bytes), and a
            # grader may keep the exception for a while.
            failure: StudentError | None = None
            started = time.monotonic()
            try:
                reply, payload = child.request(request, buffers, self.limits.call_timeout)
            except _TimedOut:
                self.timeouts += 1
                failure = StudentTimeout(f"{what} timed out after {_seconds(self.limits.call_timeout)}")
            except _Died as died:
                failure = StudentCrashed(f"{what} ended the student process: {died}")
            except _MalformedReply as bad:
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
                    return _Decoder(reply, payload, self._identity, child.generation,
                                    self.limits.reply_bytes).value(reply["value"])
                except InvalidResult as exc:
                    failure = InvalidResult(str(exc))
                del reply, payload
                self._discard_child()  # a child that writes malformed replies is not trusted again
                raise failure
            error = self._failure(what, reply, function)
            if isinstance(error, InvalidResult) and status != "toolarge":
                self._discard_child()
            raise error

    # ---- internals ----
    def _failure(self, what: str, reply: dict, function: str | None = None) -> StudentError:
        """The exception for a reply that is not a value."""
        status = reply.get("status")
        if status == "forbidden" and function is not None:  # the function is ours; how it broke the rule is theirs
            entry = _cap_text(reply.get("entry"), 100) or "?"
            self.rule_breaks.setdefault(function, entry)
            return RuleBroken(function, entry)
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
        base_env = base_environment()
        if self.warm:
            try:
                self._resources.zygote = _lease_zygote(self.isolation, self.preload, base_env)
            except RuntimeError as exc:  # e.g. a container that refuses the zygote's capabilities
                zygotes._zygote_trouble = str(exc)  # warm starts stay off in this process
                warnings.warn(f"warm sandboxes are off in this process: {exc}", RuntimeWarning, stacklevel=2)
                self.warm = False
        if self.isolation == "bubblewrap":
            if self.warm:
                self._move_workdir_into(self._resources.zygote)
            if os.geteuid() == 0:
                _chown_tree(self.workdir, NOBODY, NOBODY)  # the student runs as nobody and writes here
                os.chmod(self.workdir, 0o700)  # on the host, no other user reads it
            self._cwd = "/"  # bwrap --chdir takes the student to SANDBOX_WORKDIR
            home = tmp = "/tmp"  # a private tmpfs
            self._workdir_inside = SANDBOX_WORKDIR
        else:
            # Private HOME, TMPDIR and a copy of the worker (bubblewrap needs none: it has its own /tmp and
            # reads the worker from a memory file).
            as_root = os.geteuid() == 0  # then the student runs as a uid of its own (policy.setuid, uids.py)
            private = Path(tempfile.mkdtemp(prefix="agsb-", dir=_enterable_temp() if as_root else None))
            self._resources.private_dir = str(private)
            worker = install_student_files(private)
            (private / "home").mkdir()
            (private / "tmp").mkdir()
            if as_root:  # its files go with it
                problem = unprivileged_can_run_python(NOBODY)  # as for any user who is not root
                if problem is not None:
                    raise RuntimeError(
                        f"process isolation as root runs students as unprivileged users, who cannot enter {problem} "
                        "to run this Python; grading them as root would let them rewrite the results. Use a Python "
                        "installed outside /root (e.g. /usr/bin/python3.11 for the virtualenv: "
                        "PYTHON=/usr/bin/python3.11 bash scripts/setup.sh), or install bubblewrap.")
                os.chmod(private, 0o755)  # python lists the folder of worker.py to import its neighbours
                self._move_workdir_to(private / "work")
                self._resources.uid = uids.lease()
                student = self._resources.uid.uid
                for folder in (self.workdir, private / "home", private / "tmp"):
                    _chown_tree(folder, student, student)
                    os.chmod(folder, 0o700)  # no other user (another student) reads them
            self._process_argv = [PYTHON, "-I", "-S", str(worker)]
            self._cwd = str(self.workdir)
            home, tmp = str(private / "home"), str(private / "tmp")
            self._workdir_inside = str(self.workdir)
        # python -S: the worker takes the import path from here (see worker._setup_paths).
        self.policy = isolation_policy(self.limits, self.isolation, {**base_env, **self.extra_env},
                                       seccomp=_bwrap_setup()[1],
                                       uid=self._resources.uid.uid if self._resources.uid is not None else NOBODY)
        self._config = {"prefix": sys.prefix, "exec_prefix": sys.exec_prefix, "path": policy._child_path(),
                        "reply_limit": self.limits.reply_bytes, "preload": list(self.preload),
                        "memory_bytes": self.policy.memory_bytes, "by_hand": list(self.by_hand),
                        "copy_from": SANDBOX_SUBMITTED if self.isolation == "bubblewrap" else None}
        self._env = {**dict(self.policy.environment), "HOME": home, "TMPDIR": tmp, MARKER_VAR: self._marker}

    def _move_workdir_into(self, zygote: _Zygote) -> None:
        """A zygote shows its scratch folder at SANDBOX_HOME: the work folder goes there while the sandbox is open
        (and back in close())."""
        self._move_workdir_to(zygote.scratch / "work")

    def _move_workdir_to(self, inside: Path) -> None:
        """The work folder moves to `inside` while the sandbox is open, and back in close()."""
        shutil.rmtree(inside, ignore_errors=True)  # a leftover of a sandbox that did not close cleanly
        _move_tree(self.workdir, inside)
        original = self._resources.moved[0] if self._resources.moved is not None else self.workdir
        self._resources.moved = (original, inside)
        self.workdir = inside

    def _new_child(self) -> StudentProcess:
        if self.warm:
            zygote = self._resources.zygote
            if not zygote.alive():  # it should not end (no student code runs in it): start another
                zygote = _lease_zygote(zygote.level, zygote.preload, zygote.base_env)
                if self._resources.moved is not None:
                    self._move_workdir_into(zygote)
                self._resources.zygote.close()
                self._resources.zygote = zygote
            rules = self.policy  # the keeper applies it to the student it forks (worker.py)
            bubblewrap = rules.level == "bubblewrap"
            request = {"rlimits": rules.resource_limits(), "memory_bytes": rules.memory_bytes,
                       "uid": rules.uid if rules.setuid else None, "cwd": self._workdir_inside, "env": self._env,
                       "reply_limit": self.limits.reply_bytes, "namespaces": bubblewrap,
                       "by_hand": list(self.by_hand),
                       "tmp_bytes": rules.tmpfs_size(rules.workdir) if bubblewrap else 0,
                       "under_tmp": [d for d in rules.read_only if d.startswith("/tmp/")]}
            return WarmProcess(zygote, request, self.limits, self.isolation, self._generation, self._output,
                              self._resources.group)
        if self.isolation != "bubblewrap":
            return ColdProcess(self._process_argv, (), self._config, self._env, self._cwd, self.limits, self.isolation,
                          self._marker, self._generation, self._output, self._resources.group,
                          self.policy.resource_limits(), self.policy.uid if self.policy.setuid else None)
        argv, fds = _bwrap_command(self.policy, self.workdir, STUDENT_FILES)
        try:
            return ColdProcess(argv + [PYTHON, "-I", "-S", SANDBOX_WORKER], fds, self._config, self._env,
                          self._cwd, self.limits, self.isolation, self._marker, self._generation, self._output,
                          self._resources.group, self.policy.resource_limits())
        finally:
            for fd in fds:
                os.close(fd)

    def _spawn(self) -> StudentProcess:
        """Starts a child and waits for its greeting (no student code has run yet)."""
        self._generation += 1
        if self._generation > 1:
            self.restarts += 1
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.1
        while True:
            seen = len(self._output.data)
            child = self._new_child()
            self._resources.child = child  # so that close() kills it even if start-up fails
            try:
                child.await_greeting(max(deadline - time.monotonic(), 1.0))
                return child
            except (_TimedOut, _Died, _MalformedReply) as exc:
                child.kill()
                self._resources.child = None
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

    def _start_and_load(self) -> StudentProcess:
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
                except _MalformedReply as bad:
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
        if unit.kind == "helper":
            return unit.file
        return f"{unit.file} (cell {unit.index})"

    def _report(self, i: int, unit: LoadUnit, error: str, tb: str) -> None:
        if i not in self._reports:  # a reload repeats the first load's errors: report each unit once
            self._reports[i] = {"file": unit.file, "index": unit.index, "kind": unit.kind, "error": error,
                                "traceback": tb}

    def _discard_child(self) -> None:
        if self._resources.child is not None:
            self._resources.child.kill()
            self._resources.child = None

    def __repr__(self) -> str:
        return f"<Sandbox {self.workdir} isolation={self.isolation} restarts={self.restarts}>"


def _enterable_temp() -> str:
    """The temporary folder (TMPDIR's, else /tmp, else /var/tmp) that every user may enter down to itself: at the
    process level as root the student, a uid of its own, must reach its private folder there."""
    for candidate in (tempfile.gettempdir(), "/tmp", "/var/tmp"):
        path = Path(candidate).resolve()
        try:
            if all(os.stat(p).st_mode & 0o001 for p in (path, *path.parents)):
                return str(path)
        except OSError:
            continue
    raise RuntimeError("no temporary folder that an unprivileged student can enter (TMPDIR, /tmp, /var/tmp)")


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
