"""What student code can do wrong, as the grader sees it: each is charged to the test that made the call."""

from __future__ import annotations

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
