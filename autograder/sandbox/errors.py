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


class RuleBroken(StudentError):
    """A function under the by-hand rule (course.yml's by_hand) called torch autograd; `entry` says how."""

    def __init__(self, function: str, entry: str):
        super().__init__(f"{function} must compute the gradient by hand: torch autograd was called ({entry}), "
                         "which this assignment does not allow inside it")
        self.function = function
        self.entry = entry
