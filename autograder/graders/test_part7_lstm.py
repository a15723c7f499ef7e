"""Part 7: the LSTM, by hand (CS231n's conventions: Wx (D, 4H), Wh (H, 4H), b (4H,), gates i, f, o, g, initial
cell state zero). One test per output, as in Part 1, so one wrong gradient costs only its own points (and the points
of the test that asks for right outputs with the inputs left unchanged).

The expected values are computed here, in the trusted grading process, by torch autograd in float64 on the contract's
formulas (not by the reference notebook; tests/test_reference_lstm.py checks that the two agree). Backward functions
are called with the cache of the student's own forward and graded against the gradients of the true LSTM on the
grader's inputs: unlike the RNN (conftest.state_candidates), the LSTM's forward has no free initial state to accept
(h0 is given and the cell state starts at zero by contract), so any forward bug also costs the backward passes that
receive its cache."""

from __future__ import annotations

import numpy as np
import pytest

from autograder.vocabulary import Case, GradingFailure, call, expect_array, expect_unmodified, unpack
from autograder.graders.conftest import check_each, check_unchanged_and_right, collect, torch_lstm
from autograder.pytest_plugin import graded

STEP_INPUTS = ["x", "prev_h", "prev_c", "Wx", "Wh", "b"]
STEP_GRADS = ["dx", "dprev_h", "dprev_c", "dWx", "dWh", "db"]
INPUTS = ["x", "h0", "Wx", "Wh", "b"]
GRADS = ["dx", "dh0", "dWx", "dWh", "db"]

# (N, T, D, H): batches of 2 or more, D != H, a single step and a sequence longer than 10.
LSTM_SHAPES = [(2, 1, 3, 5), (3, 6, 4, 2), (2, 12, 5, 3)]


def lstm_problem(rng, N, T, D, H) -> dict:
    """Gate pre-activations of size about 1 (no gate saturated), a non-zero h0, and a non-zero previous cell state
    and cell-state gradient for the single-step tests (where a forget gate applied to the wrong state shows)."""
    return {
        "x": rng.standard_normal((N, T, D)),
        "h0": rng.standard_normal((N, H)) * 0.5,
        "c0": rng.standard_normal((N, H)),  # the step tests' prev_c; the sequence starts from zero (contract)
        "Wx": rng.standard_normal((D, 4 * H)) * 0.7 / np.sqrt(D),
        "Wh": rng.standard_normal((H, 4 * H)) * 0.9 / np.sqrt(H),
        "b": rng.standard_normal(4 * H) * 0.3,
        "dh": rng.standard_normal((N, T, H)),
        "dc": rng.standard_normal((N, H)),  # the step tests' dnext_c
    }


@pytest.fixture(scope="session")
def lstm_cases(context) -> list[Case]:
    rng = context.rng("lstm sequences")
    return [Case(f"case {i} (N={N}, T={T}, D={D}, H={H})", lstm_problem(rng, N, T, D, H))
            for i, (N, T, D, H) in enumerate(LSTM_SHAPES, 1)]


def step_args(case: Case) -> tuple:
    p = case.inputs
    return p["x"][:, 0], p["h0"], p["c0"], p["Wx"], p["Wh"], p["b"]


def forward_args(case: Case) -> tuple:
    p = case.inputs
    return p["x"], p["h0"], p["Wx"], p["Wh"], p["b"]


@pytest.fixture(scope="session")
def lstm_truth(lstm_cases) -> dict:
    """Per case label: the step's (next_h, next_c, six gradients) and the sequence's (h, five gradients)."""
    truth = {}
    for case in lstm_cases:
        p = case.inputs
        x, prev_h, prev_c, Wx, Wh, b = step_args(case)
        next_h, next_c, g = torch_lstm(x[:, None], prev_h, prev_c, Wx, Wh, b, p["dh"][:, :1], p["dc"])
        step_grads = [g[0][:, 0], g[1], g[2], g[3], g[4], g[5]]
        N, H = prev_h.shape
        h, _, g = torch_lstm(p["x"], p["h0"], np.zeros((N, H)), Wx, Wh, b, p["dh"], np.zeros((N, H)))
        truth[case.label] = {"next_h": next_h[:, 0], "next_c": next_c, "step_grads": step_grads,
                             "h": h, "grads": [g[0], g[1], g[3], g[4], g[5]]}
    return truth


@pytest.fixture(scope="session")
def lstm_step_backward_results(student, lstm_cases, lstm_truth):
    """Per case: (the six gradients, [the expected six], (dnext_h, dnext_c) as the student's code left them)."""
    def run(case):
        try:
            _, _, cache = unpack(call(student.lstm_step_forward, *step_args(case), case=case),
                                 ["next_h", "next_c", "cache"], "lstm_step_forward", case)
        except GradingFailure as exc:
            raise GradingFailure(f"lstm_step_backward could not be graded because lstm_step_forward failed: {exc}") \
                from None
        dnext_h, dnext_c = case.inputs["dh"][:, 0], case.inputs["dc"]
        result, after = call(student.lstm_step_backward.echo, dnext_h, dnext_c, cache, case=case)
        got = unpack(result, STEP_GRADS, "lstm_step_backward", case)
        return got, [lstm_truth[case.label]["step_grads"]], after[:2]

    return collect(lstm_cases, run)


@pytest.fixture(scope="session")
def lstm_backward_results(student, lstm_cases, lstm_truth):
    def run(case):
        try:
            _, cache = unpack(call(student.lstm_forward, *forward_args(case), case=case), ["h", "cache"],
                              "lstm_forward", case)
        except GradingFailure as exc:
            raise GradingFailure(f"lstm_backward could not be graded because lstm_forward failed: {exc}") from None
        result, after = call(student.lstm_backward.echo, case.inputs["dh"], cache, case=case)
        got = unpack(result, GRADS, "lstm_backward", case)
        return got, [lstm_truth[case.label]["grads"]], after[0]

    return collect(lstm_cases, run)


def step_outputs(student, case):
    return unpack(call(student.lstm_step_forward, *step_args(case), case=case), ["next_h", "next_c", "cache"],
                  "lstm_step_forward", case)


@graded("lstm_step_forward", "next_h on random inputs (non-zero prev_c)")
def test_step_forward_h(student, lstm_cases, lstm_truth, tol):
    for case in lstm_cases:
        expect_array(step_outputs(student, case)[0], lstm_truth[case.label]["next_h"], "next_h", case, tol)


@graded("lstm_step_forward", "next_c on random inputs (non-zero prev_c)")
def test_step_forward_c(student, lstm_cases, lstm_truth, tol):
    for case in lstm_cases:
        expect_array(step_outputs(student, case)[1], lstm_truth[case.label]["next_c"], "next_c", case, tol)


@graded("lstm_step_forward", "right next_h and next_c, inputs left unchanged", points=0.5)
def test_step_forward_unmodified(student, lstm_cases, lstm_truth, tol):
    case = lstm_cases[-1]
    result, after = call(student.lstm_step_forward.echo, *step_args(case), case=case)
    next_h, next_c, _ = unpack(result, ["next_h", "next_c", "cache"], "lstm_step_forward", case)
    expect_unmodified(after, list(step_args(case)), STEP_INPUTS, "lstm_step_forward", case)
    expect_array(next_h, lstm_truth[case.label]["next_h"], "next_h", case, tol)
    expect_array(next_c, lstm_truth[case.label]["next_c"], "next_c", case, tol)


@graded("lstm_step_backward", "{name} on random inputs, with your own forward cache")
@pytest.mark.parametrize("index,name", list(enumerate(STEP_GRADS)))
def test_step_backward(lstm_step_backward_results, tol, index, name):
    check_each(lstm_step_backward_results,
               lambda case, out: expect_array(out[0][index], out[1][0][index], name, case, tol))


@graded("lstm_step_backward", "right gradients, dnext_h and dnext_c left unchanged", points=0.5)
def test_step_backward_unmodified(lstm_step_backward_results, tol):
    check_unchanged_and_right(lstm_step_backward_results, lambda case: [case.inputs["dh"][:, 0], case.inputs["dc"]],
                              ["dnext_h", "dnext_c"], "lstm_step_backward", STEP_GRADS, tol)


@graded("lstm_forward", "h on random sequences (non-zero h0, zero initial cell state, T = 1 and T > 10)")
def test_forward(student, lstm_cases, lstm_truth, tol):
    for case in lstm_cases:
        h, _ = unpack(call(student.lstm_forward, *forward_args(case), case=case), ["h", "cache"], "lstm_forward", case)
        expect_array(h, lstm_truth[case.label]["h"], "h", case, tol)


@graded("lstm_forward", "right h, inputs left unchanged")
def test_forward_unmodified(student, lstm_cases, lstm_truth, tol):
    case = lstm_cases[-1]
    result, after = call(student.lstm_forward.echo, *forward_args(case), case=case)
    h, _ = unpack(result, ["h", "cache"], "lstm_forward", case)
    expect_unmodified(after, list(forward_args(case)), INPUTS, "lstm_forward", case)
    expect_array(h, lstm_truth[case.label]["h"], "h", case, tol)


@graded("lstm_backward", "{name} on random sequences, with your own forward cache")
@pytest.mark.parametrize("index,name", list(enumerate(GRADS)))
def test_backward(lstm_backward_results, tol, index, name):
    check_each(lstm_backward_results,
               lambda case, out: expect_array(out[0][index], out[1][0][index], name, case, tol))


@graded("lstm_backward", "right gradients, dh left unchanged", points=2.0)
def test_backward_unmodified(lstm_backward_results, tol):
    check_unchanged_and_right(lstm_backward_results, lambda case: case.inputs["dh"], "dh", "lstm_backward", GRADS, tol)
