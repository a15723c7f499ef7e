"""Part 4: truncated BPTT. TBPTT(k1, k2) is graded on the student's own forward cache for k1 < k2, k1 = k2 and
k = T, plus the ValueError cases; torch_truncated_grads against the reference's TBPTT(k, k) weight gradients."""

from __future__ import annotations

import numpy as np
import pytest

from autograder.vocabulary import (Case, GradingFailure, call, expect_array, expect_array_any, expect_raises,
                               expect_unmodified, unpack)
from autograder.graders.conftest import (GRADS, check_each, check_unchanged_and_right, collect, forward_args,
                                         reference_cache, rnn_problem, state_candidates, student_forward)
from autograder.pytest_plugin import graded

T = 12


@pytest.fixture(scope="session")
def tbptt_cases(context) -> list[Case]:
    rng = context.rng("tbptt")
    shapes = [(2, T, 3, 4), (3, T, 5, 2)]
    return [Case(f"case {i} (N={N}, T={t}, D={D}, H={H})", rnn_problem(rng, N, t, D, H, scale=0.9))
            for i, (N, t, D, H) in enumerate(shapes, 1)]


def tbptt_results(student, ref, cases, k1, k2, tol):
    """Per case: (the five gradients, [the acceptable expected five], dh as the student's code left it)."""
    def run(case):
        h, cache = student_forward(student, case, "rnn_backward_truncated")
        dh = case.inputs["dh"]
        result, after = call(student.rnn_backward_truncated.echo, dh, cache, k1, k2, case=case)
        got = unpack(result, GRADS, "rnn_backward_truncated", case)
        x, h0, Wx, Wh, b = forward_args(case)
        wants = [ref.rnn_backward_truncated(dh, reference_cache(x, h0, Wx, Wh, states), k1, k2)
                 for states in state_candidates(h, ref.rnn_forward(x, h0, Wx, Wh, b)[0], case, tol)]
        return got, wants, after[0]

    labelled = [Case(f"{case.label}, k1={k1}, k2={k2}", case.inputs) for case in cases]
    return collect(labelled, run)


def check_all_outputs(results, tol):
    """All five outputs of every case; a failure lists every wrong output of the first failing case."""
    def check(case, out):
        got, wants, _ = out
        wrong = []
        for index, name in enumerate(GRADS):
            try:
                expect_array_any(got[index], [w[index] for w in wants], name, case, tol)
            except GradingFailure as exc:
                wrong.append(str(exc))
        if wrong:
            raise GradingFailure("; ".join(wrong))

    check_each(results, check)


@graded("rnn_backward_truncated", "k1 < k2: chunks of {k1}, each backpropagated {k2} steps")
@pytest.mark.parametrize("k1,k2", [(3, 5), (2, 7), (1, 4)])
def test_k1_below_k2(student, ref, tbptt_cases, tol, k1, k2):
    check_all_outputs(tbptt_results(student, ref, tbptt_cases, k1, k2, tol), tol)


@graded("rnn_backward_truncated", "k1 = k2 = {k} (the detach idiom)")
@pytest.mark.parametrize("k", [1, 4])
def test_k1_equals_k2(student, ref, tbptt_cases, tol, k):
    check_all_outputs(tbptt_results(student, ref, tbptt_cases, k, k, tol), tol)


@graded("rnn_backward_truncated", "k1 = k2 = T is full BPTT; numpy integers accepted")
def test_full(student, ref, tbptt_cases, tol):
    check_all_outputs(tbptt_results(student, ref, tbptt_cases, np.int64(T), np.int32(T), tol), tol)


@graded("rnn_backward_truncated", "k1 = 2, k2 = 6: right gradients, dh left unchanged")
def test_tbptt_unmodified(student, ref, tbptt_cases, tol):
    check_unchanged_and_right(tbptt_results(student, ref, tbptt_cases, 2, 6, tol), lambda case: case.inputs["dh"],
                              "dh", "rnn_backward_truncated", GRADS, tol)


@graded("rnn_backward_truncated", "raises ValueError for k1 > k2, k1 = 0, T % k1 != 0 and non-integer k "
        "(counts once the valid-input tests pass)", error_handling=True)
def test_value_errors(student, tbptt_cases):
    case = tbptt_cases[0]
    _, cache = student_forward(student, case, "rnn_backward_truncated")
    for k1, k2 in [(4, 2), (0, 3), (5, 5), (2.0, 4), (3, "6")]:
        expect_raises(student.rnn_backward_truncated, (case.inputs["dh"], cache, k1, k2), "ValueError",
                      f"rnn_backward_truncated with k1={k1!r}, k2={k2!r}", case)


@graded("torch_truncated_grads", "dWx, dWh, db for k = {k} equal TBPTT(k, k)")
@pytest.mark.parametrize("k", [1, np.int64(3), 12])
def test_torch_grads(student, ref, tbptt_cases, tol, k):
    for case in tbptt_cases:
        args = (*forward_args(case), case.inputs["dh"])
        got = unpack(call(student.torch_truncated_grads, *args, k, case=case), ["dWx", "dWh", "db"],
                     "torch_truncated_grads", case)
        want = ref.torch_truncated_grads(*args, k)
        for name, g, w in zip(["dWx", "dWh", "db"], got, want):
            expect_array(g, w, name, Case(f"{case.label}, k={k}"), tol)


@graded("torch_truncated_grads", "k = 4: right gradients, inputs left unchanged")
def test_torch_unmodified(student, ref, tbptt_cases, tol):
    for case in tbptt_cases:
        args = (*forward_args(case), case.inputs["dh"])
        result, after = call(student.torch_truncated_grads.echo, *args, 4, case=case)
        expect_unmodified(after[:6], list(args), ["x", "h0", "Wx", "Wh", "b", "dh"], "torch_truncated_grads", case)
        got = unpack(result, ["dWx", "dWh", "db"], "torch_truncated_grads", case)
        for name, g, w in zip(["dWx", "dWh", "db"], got, ref.torch_truncated_grads(*args, 4)):
            expect_array(g, w, name, Case(f"{case.label}, k=4"), tol)


@graded("torch_truncated_grads", "raises ValueError when T % k != 0 and for a non-integer k "
        "(counts once the valid-input tests pass)", error_handling=True)
def test_torch_value_error(student, tbptt_cases):
    case = tbptt_cases[0]
    for k in (5, 2.0, 0):
        expect_raises(student.torch_truncated_grads, (*forward_args(case), case.inputs["dh"], k), "ValueError",
                      f"torch_truncated_grads with k={k!r} and T=12", case)
