"""The graders' vocabulary: a few checks that compare what a student's function returned with the reference and
fail with a message the student can act on. Messages say which output is wrong, in which case and how (shape,
dtype, NaN, relative error), never the expected numbers.

A test reads like the spec:

    got = call(student.rnn_backward, dh, cache, case=case)
    expect_array(got[3], want[3], "dWh", case)
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

import numpy as np

from autograder.sandbox import Handle, MissingFunction, RuleBroken, StudentError, StudentException


class GradingFailure(AssertionError):
    """A test failed because of the submission; the message is shown to the student."""


@dataclass
class Tolerance:
    rtol: float = 1e-7
    atol: float = 1e-10


@dataclass
class Case:
    """One hidden input of a test: its label describes it without giving values away."""

    label: str
    inputs: dict = field(default_factory=dict)

    def __str__(self) -> str:
        return self.label


def _where(case) -> str:
    return f" in {case}" if case is not None else ""


# A number standing on its own (not part of a name like h0 or a version like 2.13.0).
_NUMBER = re.compile(r"(?<![\w.])[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?(?![\w.])")


def shorten_numbers(text: str, digits: int = 3) -> str:
    """`text` with every number longer than `digits` significant digits rounded to that many ('0.1234567891' ->
    '0.123', '1.5e-07' stays). For messages echoed from student code (their exceptions), which may print the
    hidden inputs: the feedback page must not reveal them at full precision. Integers of up to 6 digits (shapes,
    indices, counts) are kept as they are."""
    def short(match: re.Match) -> str:
        token = match.group(0)
        if re.fullmatch(r"[-+]?\d{1,6}", token):
            return token
        try:
            value = float(token)
        except ValueError:
            return token
        shorter = f"{value:.{digits}g}"
        return shorter if len(shorter) < len(token) else token

    return _NUMBER.sub(short, text)


def call(function, *args, case=None, **kwargs):
    """Call a student function through the sandbox; any failure of the call becomes a GradingFailure. The message
    of an exception the student's code raised is echoed with its numbers shortened (shorten_numbers)."""
    try:
        return function(*args, **kwargs)
    except MissingFunction:
        raise GradingFailure(f"{function.name} is not defined in your submission") from None
    except RuleBroken as exc:
        raise GradingFailure(str(exc)) from None
    except StudentException as exc:
        raise GradingFailure(f"{function.name} raised {exc.type_name}{_where(case)}: "
                             f"{shorten_numbers(exc.message)}") from None
    except StudentError as exc:
        raise GradingFailure(f"{function.name}{_where(case)}: {exc}") from None


def describe(value) -> str:
    """What a returned value is, for a message: 'an array of dtype int64 and shape (3,)', 'a Foo object'."""
    if isinstance(value, Handle):
        name = f"{value.type_name} object"
    elif isinstance(value, np.ndarray):
        return f"an array of dtype {value.dtype} and shape {value.shape}"
    else:
        name = type(value).__name__
    return f"{'an' if name[:1].lower() in 'aeiou' else 'a'} {name}"


def unpack(value, names: list[str], function: str, case=None) -> tuple:
    """A returned tuple with one entry per name, e.g. (dx, dh0, dWx, dWh, db)."""
    if not isinstance(value, (tuple, list)) or len(value) != len(names):
        raise GradingFailure(f"{function} must return a tuple ({', '.join(names)}); it returned {describe(value)}"
                             f"{_where(case)}")
    return tuple(value)


def expect_array(got, want: np.ndarray, what: str, case=None, tol: Tolerance = Tolerance()) -> None:
    """`got` is a float ndarray of want's shape, NaN/inf exactly where want has them, and close to it elsewhere."""
    if not isinstance(got, np.ndarray):
        raise GradingFailure(f"{what}{_where(case)}: expected a numpy array, got {describe(got)}")
    if got.dtype.kind != "f":
        raise GradingFailure(f"{what}{_where(case)}: expected a float array, got dtype {got.dtype}")
    if got.shape != want.shape:
        raise GradingFailure(f"{what}{_where(case)}: wrong shape {got.shape}, expected {want.shape}")
    got = got.astype(np.float64)
    for label, test in (("NaN", np.isnan), ("infinite", np.isinf)):
        if not np.array_equal(test(got), test(want)):
            extra = int(np.sum(test(got) & ~test(want)))
            raise GradingFailure(f"{what}{_where(case)}: has {label} values where it should not"
                                 if extra else f"{what}{_where(case)}: misses {label} values it should have")
    finite = np.isfinite(want)
    if np.any(np.isinf(want)) and not np.array_equal(got[np.isinf(want)], want[np.isinf(want)]):
        raise GradingFailure(f"{what}{_where(case)}: infinite values of the wrong sign")
    a, b = got[finite], want[finite]
    if not np.allclose(a, b, rtol=tol.rtol, atol=tol.atol):
        if not np.any(b):  # a relative error to zero means nothing
            raise GradingFailure(f"{what}{_where(case)}: expected exactly 0.0 everywhere, got non-zero values "
                                 f"(largest magnitude {np.max(np.abs(a)):.1e})")
        rel = np.max(np.abs(a - b) / np.maximum(np.abs(b), tol.atol)) if a.size else 0.0
        raise GradingFailure(f"{what}{_where(case)} differs from the expected value "
                             f"(largest relative error {rel:.1e})")


def expect_array_any(got, wants: list[np.ndarray], what: str, case=None, tol: Tolerance = Tolerance()) -> None:
    """Like expect_array, passing when `got` matches any of the acceptable answers (the first one is the one a
    failure message is about)."""
    for want in wants[1:]:
        try:
            expect_array(got, want, what, case, tol)
            return
        except GradingFailure:
            pass
    expect_array(got, wants[0], what, case, tol)


def expect_float(got, want: float, what: str, case=None, tol: Tolerance = Tolerance()) -> None:
    if isinstance(got, (bool, np.bool_)) or not isinstance(got, (float, int, np.floating, np.integer)):
        raise GradingFailure(f"{what}{_where(case)}: expected a float, got {describe(got)}")
    got, want = float(got), float(want)
    if math.isnan(want) or math.isnan(got):
        if math.isnan(want) != math.isnan(got):
            raise GradingFailure(f"{what}{_where(case)}: {'is NaN' if math.isnan(got) else 'should be NaN'}")
        return
    if math.isinf(want) or math.isinf(got):
        if got != want:
            raise GradingFailure(f"{what}{_where(case)}: {'is' if math.isinf(got) else 'should be'} infinite")
        return
    if not math.isclose(got, want, rel_tol=tol.rtol, abs_tol=tol.atol):
        if want == 0.0:  # a relative error to zero means nothing
            raise GradingFailure(f"{what}{_where(case)}: expected exactly 0.0, got {got:.1e}")
        rel = abs(got - want) / max(abs(want), tol.atol)
        raise GradingFailure(f"{what}{_where(case)} differs from the expected value (relative error {rel:.1e})")


def expect_int(got, want: int, what: str, case=None) -> None:
    """An integer (Python or numpy; not a bool, not a float) equal to want."""
    if isinstance(got, (bool, np.bool_)) or not isinstance(got, (int, np.integer)):
        raise GradingFailure(f"{what}{_where(case)}: expected an int, got {describe(got)}")
    if got != want:
        raise GradingFailure(f"{what}{_where(case)} is not the expected value")


def expect_raises(function, args: tuple, exception: str, what: str, case=None) -> None:
    """The student function raises `exception` (a builtin exception name, e.g. "ValueError") for these args."""
    try:
        result = function(*args)
    except StudentException as exc:
        if exc.type_name != exception:
            raise GradingFailure(f"{what}: raised {exc.type_name} instead of {exception}{_where(case)}") from None
        return
    except MissingFunction:
        raise GradingFailure(f"{getattr(function, 'name', what)} is not defined in your submission") from None
    except StudentError as exc:
        raise GradingFailure(f"{what}{_where(case)}: {exc}") from None
    raise GradingFailure(f"{what}: should raise {exception}{_where(case)} but returned {describe(result)}")


def expect_unmodified(after: list, before: list, names: list[str], function: str, case=None) -> None:
    """Inputs echoed back after the call are bit-identical to what was sent."""
    for name, a, b in zip(names, after, before):
        same = (np.array_equal(a, b, equal_nan=True) if isinstance(b, np.ndarray) and isinstance(a, np.ndarray)
                else a == b)
        if not same:
            raise GradingFailure(f"{function} modified its input {name}{_where(case)}; return new arrays instead")
