"""A student process, as the grader holds it: the request/reply channel, how it ended, and how to kill everything it
started. StudentProcess is what the Sandbox uses: ColdProcess starts one from scratch (bwrap [+ setpriv] + python,
or python alone); WarmProcess has one forked by a zygote, whose keeper reports how it ended and kills it."""

from __future__ import annotations

import errno
import json
import marshal
import os
import secrets
import select
import signal
import subprocess
import time
from dataclasses import dataclass

from autograder.sandbox import reaper
from autograder.sandbox.student import wire
from autograder.sandbox.cgroups import StudentGroup
from autograder.sandbox.channel import _Died, _MalformedReply, _Output, _OutputPipe, _TimedOut
from autograder.sandbox.launch import _preexec
from autograder.sandbox.limits import SandboxLimits
from autograder.sandbox.policy import MAX_HEADER
from autograder.sandbox.procfs import _cpu_seconds, _descendants, _kill_marked, _python_of, _signal_name
from autograder.sandbox.zygote import _Zygote


class StudentProcess:
    """One student process as the grader holds it: the request/reply pipes, how it ended (`returncode`, `dead`,
    `rusage`), and how to kill everything it started. A subclass starts it (__init__), waits for it (_reap) and
    kills it (kill); `liveness` is a descriptor that becomes readable when it has ended (-1: poll instead)."""

    warm = False  # forked by a zygote rather than started with bwrap/python

    def __init__(self, limits: SandboxLimits, level: str, marker: str, generation: int, output: _Output,
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
        self.worker_pid = -1  # the python worker's pid on the host (found after the greeting; warm: unknown)
        self.returncode: int | None = None  # its exit code once reaped (negative: killed by that signal)
        self.req_w = self.rep_r = self.liveness = -1
        self.op_cpu = self.op_start = 0.0  # worker CPU time and clock when the current operation began

    # ---- request / reply ----
    def await_greeting(self, timeout: float) -> None:
        """The worker's first message, sent before any student code runs."""
        reply, _ = self._read_frame(time.monotonic() + timeout)
        if reply.get("status") != "ready" or reply.get("id") != 0:
            raise _MalformedReply("the worker did not greet")
        self._found_worker()

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
            raise _MalformedReply("the reply does not answer the request")
        return reply, payload

    def _wait(self, fd: int, event: int, deadline: float) -> None:
        """Waits until fd is ready, raising _TimedOut at the deadline and _Died if the process ends first."""
        poller = select.poll()
        poller.register(fd, event)
        if self.liveness >= 0:
            poller.register(self.liveness, select.POLLIN)
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _TimedOut
            slice_ms = remaining * 1000 if self.liveness >= 0 else min(remaining * 1000, 50)
            ready = dict(poller.poll(max(1, int(slice_ms))))
            if ready.get(fd):
                return  # readable, writable or hung up: the read/write tells which
            if ready.get(self.liveness) or (self.liveness < 0 and self._reap(0) is not None):
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
            raise _MalformedReply("the reply stream is not in the sandbox format")
        if header_len > MAX_HEADER:  # before reading or parsing any of it: a header is small, data goes in buffers
            raise _MalformedReply(f"the reply header announces {header_len} bytes, over the limit of {MAX_HEADER}")
        if wire.FRAME_SIZE + header_len + payload_len > self.limits.reply_bytes:
            raise _MalformedReply(f"the reply announces {header_len + payload_len} bytes, over the limit of "
                           f"{self.limits.reply_bytes}")
        header_bytes = self._read_exact(header_len, deadline)
        payload = memoryview(self._read_exact(payload_len, deadline))
        try:
            header = json.loads(header_bytes.decode("ascii"))
        except (UnicodeDecodeError, ValueError, RecursionError) as exc:
            raise _MalformedReply(f"the reply header is not valid JSON ({type(exc).__name__})") from None
        if type(header) is not dict:
            raise _MalformedReply("the reply header is not an object")
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

    def _found_worker(self) -> None:
        """After the greeting: note the worker's pid on this machine, where it can be known."""

    def _reap(self, timeout: float) -> int | None:
        """Waits up to `timeout` for the process to end; its exit code, or None while it lives."""
        raise NotImplementedError

    def kill(self) -> None:
        """Kills the process and everything it started, and releases the pipes; safe to call twice."""
        raise NotImplementedError

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

class ColdProcess(StudentProcess):
    """A student process started from scratch: python, under bwrap [+ setpriv] or alone."""

    def __init__(self, argv: list[str], extra_fds: tuple[int, ...], config: dict, env: dict[str, str], cwd: str,
                 limits: SandboxLimits, level: str, marker: str, generation: int, output: _Output,
                 group: StudentGroup | None = None, rlimits: list[tuple[int, int]] = (), uid: int | None = None):
        """`uid`: at the process level as root, the unprivileged user the student runs as (bubblewrap's command
        line does its own drop)."""
        super().__init__(limits, level, marker, generation, output, group)
        if level == "process":
            reaper.become_subreaper()  # what the student leaves behind comes back here, to be killed
        req_r, self.req_w = os.pipe()
        self.rep_r, rep_w = os.pipe()
        out_r, out_w = os.pipe()
        try:
            self.proc = subprocess.Popen(
                argv + [str(req_r), str(rep_w), marshal.dumps(config).hex()],
                stdin=subprocess.DEVNULL, stdout=out_w, stderr=out_w, pass_fds=(req_r, rep_w, *extra_fds),
                close_fds=True,
                cwd=cwd, env=env, start_new_session=True,
                preexec_fn=_preexec(rlimits, tuple(group.procs) if group is not None else (), uid))
            reaper.trusted(self.proc.pid)
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
            self.liveness = os.pidfd_open(self.proc.pid)
        except (AttributeError, OSError):
            self.liveness = -1  # no pidfds: poll in short slices instead

    def _found_worker(self) -> None:
        self.worker_pid = _python_of(self.proc.pid, self.level)

    def _reap(self, timeout: float) -> int | None:
        """Waits for the direct child with wait4 (for its rusage); its exit code, or None if it is alive."""
        if self.returncode is not None:
            return self.returncode
        deadline = time.monotonic() + timeout
        while True:
            try:
                pid, status, self.rusage = os.wait4(self.proc.pid, os.WNOHANG)
            except ChildProcessError:
                self.returncode = self.returncode if self.returncode is not None else -255
                return self.returncode
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
                return self.returncode
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.005)

    def kill(self) -> None:
        """Kills the child's whole process tree and releases everything; safe to call twice."""
        if self.req_w < 0:
            return
        if self.returncode is None:
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
        # the pid namespace is already dying; this waits until it is really empty. Without it, a daemon that
        # re-executed with a clean environment has no marker, but it came back to us (reaper.py): kill it too.
        _kill_marked(self.marker)
        if self.level == "process":
            reaper.untrusted(self.proc.pid)
            reaper.kill_orphans(self.limits.cpu_seconds)
        for fd in (self.req_w, self.rep_r, self.liveness):
            if fd >= 0:
                os.close(fd)
        self.req_w = self.rep_r = self.liveness = -1
        self.out.close()


class WarmProcess(StudentProcess):
    """A student process forked by a zygote. Its keeper reports how it ended on the status pipe (which also
    serves as its liveness descriptor) and kills it, and everything it started, when the kill pipe closes."""

    warm = True

    def __init__(self, zygote: _Zygote, request: dict, limits: SandboxLimits, level: str, generation: int,
                 output: _Output, group: StudentGroup | None = None):
        super().__init__(limits, level, "", generation, output, group)
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
        self.liveness = self.status_r  # readable once the student process has ended
        self._status = b""

    def _reap(self, timeout: float) -> int | None:
        """Reads the keeper's report: `exit STATUS UTIME STIME MAXRSS` (or `error ...` if it could not start)."""
        if self.returncode is not None:
            return self.returncode
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
            self.returncode = -int(signal.SIGKILL)
            return self.returncode
        self.returncode = os.waitstatus_to_exitcode(status)
        self.rusage = _Usage(utime, stime, maxrss)
        return self.returncode

    def kill(self) -> None:
        if self.req_w < 0:
            return
        if self.returncode is None and self.dead is None:
            self.dead = "killed by the grader"
        os.close(self.kill_w)  # the keeper kills the student and all it started, then reports
        self._reap(timeout=5.0)
        self._drain_status(timeout=5.0)
        if self.keeper >= 0:  # and it exits right after: wait for that too, so that nothing is left at all
            select.select([self.keeper], [], [], 5.0)
            os.close(self.keeper)
        if self.level == "process":  # a keeper killed by its student (same uid) leaves orphans: they come here
            reaper.kill_orphans(self.limits.cpu_seconds)
        for fd in (self.req_w, self.rep_r, self.status_r):
            os.close(fd)
        self.req_w = self.rep_r = self.status_r = self.liveness = self.kill_w = self.keeper = -1
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
class _Usage:
    ru_utime: float
    ru_stime: float
    ru_maxrss: int
