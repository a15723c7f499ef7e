"""The graders' vocabulary (autograder/vocabulary.py): messages that echo student exceptions with shortened numbers, and
say 'expected exactly 0.0' where a relative error would mean nothing. Fast: no sandbox."""

from __future__ import annotations

import numpy as np
import pytest

from autograder.vocabulary import Case, GradingFailure, call, expect_array, expect_float, shorten_numbers
from autograder.sandbox import StudentException


@pytest.mark.parametrize("text,short", [
    ("got 0.123456789012345", "got 0.123"),
    ("array([[ 0.12345678, -1.23456789e-05]])", "array([[ 0.123, -1.23e-05]])"),
    ("x=-3.14159265358979, y=2.", "x=-3.14, y=2"),
    ("seed 1234567890123", "seed 1.23e+12"),
    ("h0 has shape (2, 13, 5), k1=3, T=120000", "h0 has shape (2, 13, 5), k1=3, T=120000"),  # small integers stay
    ("numpy 2.4.6, torch 2.13.0, 1e-3, 0.5, nan, inf, dWh", "numpy 2.4.6, torch 2.13.0, 1e-3, 0.5, nan, inf, dWh"),
])
def test_shorten_numbers(text, short):
    assert shorten_numbers(text) == short


class Raising:
    name = "rnn_backward"

    def __call__(self, *args):
        raise StudentException("ValueError", "bad dh: [[0.8414709848078965, -0.9092974268256817]] at 1.0000000001",
                               "traceback with 0.8414709848078965")


def test_call_echoes_student_exceptions_with_short_numbers():
    with pytest.raises(GradingFailure) as failure:
        call(Raising(), case=Case("case 1 (N=2, T=1, D=3, H=5)"))
    assert str(failure.value) == ("rnn_backward raised ValueError in case 1 (N=2, T=1, D=3, H=5): bad dh: "
                                  "[[0.841, -0.909]] at 1")
    assert "0.8414709848078965" not in str(failure.value)


def test_a_zero_expectation_says_expected_exactly_zero():
    with pytest.raises(GradingFailure) as failure:
        expect_float(0.25, 0.0, "the ratio", Case("case 1, k2=2"))
    assert str(failure.value) == "the ratio in case 1, k2=2: expected exactly 0.0, got 2.5e-01"
    with pytest.raises(GradingFailure) as failure:
        expect_array(np.array([0.0, 3e-3]), np.zeros(2), "dh0", Case("case 2"))
    assert str(failure.value) == "dh0 in case 2: expected exactly 0.0 everywhere, got non-zero values (largest " \
                                 "magnitude 3.0e-03)"
    expect_float(0.0, 0.0, "the ratio")
    expect_float(1e-12, 0.0, "the ratio")  # within atol
    with pytest.raises(GradingFailure, match=r"differs from the expected value \(relative error 2\.0e\+00\)"):
        expect_float(3.0, 1.0, "the ratio")  # non-zero expectations keep the relative error


# ---- every check, passing and failing, with the message a student reads (no expected numbers in it) ----
from autograder.vocabulary import (Tolerance, describe, expect_array_any, expect_int, expect_raises,  # noqa: E402
                                   expect_unmodified, unpack)
from autograder.sandbox import Handle, MissingFunction, StudentTimeout  # noqa: E402

CASE = Case("case 2 (N=3, T=6, D=4, H=2)")


def fails(check, *args, **kwargs) -> str:
    with pytest.raises(GradingFailure) as failure:
        check(*args, **kwargs)
    return str(failure.value)


def test_describe_names_what_came_back():
    assert describe(np.zeros((3,), dtype=np.int64)) == "an array of dtype int64 and shape (3,)"
    assert describe(Handle("Cache", 1, object(), 1)) == "a Cache object"
    assert describe(1.5) == "a float" and describe(None) == "a NoneType"


def test_unpack():
    assert unpack((1, 2), ["dx", "db"], "rnn_step_backward") == (1, 2)
    assert fails(unpack, (1,), ["dx", "db"], "rnn_step_backward", CASE) == \
        "rnn_step_backward must return a tuple (dx, db); it returned a tuple in case 2 (N=3, T=6, D=4, H=2)"


def test_expect_array_each_way_to_be_wrong():
    want = np.array([[1.0, np.nan], [np.inf, 2.0]])
    expect_array(want.copy() * (1 + 1e-12), want, "dWh", CASE, Tolerance(1e-7, 0.0))
    assert "expected a numpy array, got a list" in fails(expect_array, [1.0], want, "dWh", CASE)
    assert "expected a float array, got dtype int64" in fails(expect_array, np.zeros((2, 2), np.int64), want, "dWh")
    assert fails(expect_array, np.zeros((2, 3)), want, "dWh", CASE) == \
        "dWh in case 2 (N=3, T=6, D=4, H=2): wrong shape (2, 3), expected (2, 2)"
    assert "misses NaN values it should have" in fails(expect_array, np.array([[1.0, 0], [np.inf, 2]]), want, "dWh")
    assert "has infinite values where it should not" in fails(expect_array, np.full((2, 2), np.inf), np.ones((2, 2)),
                                                               "dWh")
    message = fails(expect_array, np.array([[1.0, np.nan], [np.inf, 5.0]]), want, "dWh", CASE)
    assert message.startswith("dWh in case 2 (N=3, T=6, D=4, H=2) differs from the expected value")
    assert "2.0" not in message and "5.0" not in message  # never the numbers themselves


def test_expect_array_any_accepts_any_answer_and_speaks_of_the_first():
    first, second = np.full(2, 2.0), np.ones(2)
    expect_array_any(np.ones(2), [first, second], "h")
    assert "differs from the expected value" in fails(expect_array_any, np.full(2, 7.0), [first, second], "h")


def test_expect_int():
    expect_int(np.int64(3), 3, "effective_horizon")
    assert "expected an int, got a bool" in fails(expect_int, True, 1, "effective_horizon")
    assert "expected an int, got a float" in fails(expect_int, 3.0, 3, "effective_horizon")
    assert fails(expect_int, 4, 3, "effective_horizon", CASE) == \
        "effective_horizon in case 2 (N=3, T=6, D=4, H=2) is not the expected value"


class Student:
    def __init__(self, outcome, name="one_hot"):
        self.outcome, self.name = outcome, name

    def __call__(self, *args):
        if isinstance(self.outcome, Exception):
            raise self.outcome
        return self.outcome


def test_expect_raises():
    expect_raises(Student(StudentException("ValueError", "bad", "")), (), "ValueError", "one_hot")
    assert fails(expect_raises, Student(StudentException("TypeError", "bad", "")), (), "ValueError", "one_hot") == \
        "one_hot: raised TypeError instead of ValueError"
    assert fails(expect_raises, Student(MissingFunction("one_hot")), (), "ValueError", "one_hot") == \
        "one_hot is not defined in your submission"
    assert "timed out" in fails(expect_raises, Student(StudentTimeout("one_hot() timed out after 10 s")), (),
                                "ValueError", "one_hot")
    assert fails(expect_raises, Student(np.zeros(2)), (), "ValueError", "one_hot", CASE) == \
        "one_hot: should raise ValueError in case 2 (N=3, T=6, D=4, H=2) but returned an array of dtype float64 " \
        "and shape (2,)"


def test_expect_unmodified():
    before = [np.array([1.0, np.nan]), 3]
    expect_unmodified([np.array([1.0, np.nan]), 3], before, ["dh", "k"], "rnn_backward")
    assert fails(expect_unmodified, [np.array([0.0, np.nan]), 3], before, ["dh", "k"], "rnn_backward", CASE) == \
        "rnn_backward modified its input dh in case 2 (N=3, T=6, D=4, H=2); return new arrays instead"
