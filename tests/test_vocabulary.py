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
