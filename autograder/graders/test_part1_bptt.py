"""Part 1: BPTT for a tanh RNN. One test per output, so one wrong gradient costs only its own points (and the
points of the test that asks for right outputs with the inputs left unchanged). Backward passes are graded at the
true states, or at the student's own forward states when those follow the true recurrence (conftest.py)."""

from __future__ import annotations

import pytest

from autograder.vocabulary import call, expect_array, expect_array_any, expect_unmodified, unpack
from autograder.graders.conftest import (GRADS, check_each, check_unchanged_and_right, collect, forward_args,
                                         reference_cache, state_candidates, student_forward)
from autograder.pytest_plugin import graded

STEP_INPUTS = ["x", "prev_h", "Wx", "Wh", "b"]
STEP_GRADS = ["dx", "dprev_h", "dWx", "dWh", "db"]


def step_args(case):
    x, h0, Wx, Wh, b = forward_args(case)
    return x[:, 0], h0, Wx, Wh, b


@pytest.fixture(scope="session")
def step_backward_results(student, ref, rnn_cases):
    """Per case: (the five gradients, [the expected five gradients], dnext_h as the student's code left it). The
    expected gradients are the reference's at the true next_h: one step from the given prev_h leaves nothing to
    choose, so the student's cache is right only if their forward's next_h is."""
    def run(case):
        args = step_args(case)
        _, cache = unpack(call(student.rnn_step_forward, *args, case=case), ["next_h", "cache"],
                          "rnn_step_forward", case)
        dnext = case.inputs["dh"][:, 0]
        result, after = call(student.rnn_step_backward.echo, dnext, cache, case=case)
        got = unpack(result, STEP_GRADS, "rnn_step_backward", case)
        x, prev_h, Wx, Wh, _ = args
        want = ref.rnn_step_backward(dnext, (x, prev_h, Wx, Wh, ref.rnn_step_forward(*args)[0]))
        return got, [want], after[0]

    return collect(rnn_cases, run)


@pytest.fixture(scope="session")
def backward_results(student, ref, tol, rnn_cases):
    def run(case):
        h, cache = student_forward(student, case, "rnn_backward")
        result, after = call(student.rnn_backward.echo, case.inputs["dh"], cache, case=case)
        got = unpack(result, GRADS, "rnn_backward", case)
        x, h0, Wx, Wh, b = forward_args(case)
        wants = [ref.rnn_backward(case.inputs["dh"], reference_cache(x, h0, Wx, Wh, states))
                 for states in state_candidates(h, ref.rnn_forward(x, h0, Wx, Wh, b)[0], case, tol)]
        return got, wants, after[0]

    return collect(rnn_cases, run)


@graded("rnn_step_forward", "next_h on random inputs")
def test_step_forward(student, ref, rnn_cases, tol):
    for case in rnn_cases:
        next_h, _ = unpack(call(student.rnn_step_forward, *step_args(case), case=case), ["next_h", "cache"],
                           "rnn_step_forward", case)
        expect_array(next_h, ref.rnn_step_forward(*step_args(case))[0], "next_h", case, tol)


@graded("rnn_step_forward", "right next_h, inputs left unchanged")
def test_step_forward_unmodified(student, ref, rnn_cases, tol):
    case = rnn_cases[-1]
    result, after = call(student.rnn_step_forward.echo, *step_args(case), case=case)
    next_h, _ = unpack(result, ["next_h", "cache"], "rnn_step_forward", case)
    expect_unmodified(after, list(step_args(case)), STEP_INPUTS, "rnn_step_forward", case)
    expect_array(next_h, ref.rnn_step_forward(*step_args(case))[0], "next_h", case, tol)


@graded("rnn_step_backward", "{name} on random inputs, with your own forward cache")
@pytest.mark.parametrize("index,name", list(enumerate(STEP_GRADS)))
def test_step_backward(step_backward_results, tol, index, name):
    check_each(step_backward_results,
               lambda case, out: expect_array_any(out[0][index], [w[index] for w in out[1]], name, case, tol))


@graded("rnn_step_backward", "right gradients, dnext_h left unchanged", points=1.0)
def test_step_backward_unmodified(step_backward_results, tol):
    check_unchanged_and_right(step_backward_results, lambda case: case.inputs["dh"][:, 0], "dnext_h",
                              "rnn_step_backward", STEP_GRADS, tol)


@graded("rnn_forward", "h on random sequences (non-zero h0, T = 1 and T > 10)")
def test_forward(student, ref, rnn_cases, tol):
    for case in rnn_cases:
        h, _ = unpack(call(student.rnn_forward, *forward_args(case), case=case), ["h", "cache"], "rnn_forward", case)
        expect_array(h, ref.rnn_forward(*forward_args(case))[0], "h", case, tol)


@graded("rnn_forward", "right h, inputs left unchanged")
def test_forward_unmodified(student, ref, rnn_cases, tol):
    case = rnn_cases[-1]
    result, after = call(student.rnn_forward.echo, *forward_args(case), case=case)
    h, _ = unpack(result, ["h", "cache"], "rnn_forward", case)
    expect_unmodified(after, list(forward_args(case)), ["x", "h0", "Wx", "Wh", "b"], "rnn_forward", case)
    expect_array(h, ref.rnn_forward(*forward_args(case))[0], "h", case, tol)


@graded("rnn_backward", "{name} on random sequences, with your own forward cache")
@pytest.mark.parametrize("index,name", list(enumerate(GRADS)))
def test_backward(backward_results, tol, index, name):
    check_each(backward_results,
               lambda case, out: expect_array_any(out[0][index], [w[index] for w in out[1]], name, case, tol))


@graded("rnn_backward", "right gradients, dh left unchanged", points=2.0)
def test_backward_unmodified(backward_results, tol):
    check_unchanged_and_right(backward_results, lambda case: case.inputs["dh"], "dh", "rnn_backward", GRADS, tol)
