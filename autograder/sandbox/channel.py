"""The framed channel to a student process, as the grader reads it: replies within a deadline, the process's end
noticed while waiting, and its stdout/stderr drained into a capped buffer by a thread."""

from __future__ import annotations

import os
import select
import threading

from autograder.sandbox.policy import TRUNCATED


class _Died(Exception):
    """The child ended (or closed its reply pipe); the text says how."""


class _TimedOut(Exception):
    pass


class _MalformedReply(Exception):
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
