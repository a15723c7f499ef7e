"""Part 2: how the gradient decays. hidden_grad_norms is graded on the student's own forward cache; the bound on
matrices whose spectral radius and largest singular value differ; the horizon on curves built to trip the usual
off-by-one and ratio mistakes."""

from __future__ import annotations

import numpy as np
import pytest

from autograder.vocabulary import Case, call, expect_array, expect_array_any, expect_int, expect_unmodified
from autograder.graders.conftest import (check_each, check_unchanged_and_right, collect, forward_args,
                                         reference_cache, state_candidates, student_forward)
from autograder.pytest_plugin import graded


def expected_norms(ref, case, h, dh, tol) -> list[np.ndarray]:
    x, h0, Wx, Wh, b = forward_args(case)
    return [ref.hidden_grad_norms(dh, reference_cache(x, h0, Wx, Wh, states))
            for states in state_candidates(h, ref.rnn_forward(x, h0, Wx, Wh, b)[0], case, tol)]


def norms_results(student, ref, cases, make_dh, tol):
    """Per case: ((norms,), [(expected norms,)], dh as the student's code left it)."""
    def run(case):
        h, cache = student_forward(student, case, "hidden_grad_norms")
        dh = make_dh(case)
        got, after = call(student.hidden_grad_norms.echo, dh, cache, case=case)
        return (got,), [(want,) for want in expected_norms(ref, case, h, dh, tol)], after[0]

    return collect(cases, run)


def last_step_only(case):
    dh = np.zeros_like(case.inputs["dh"])
    dh[:, -1] = case.inputs["dh"][:, -1]
    return dh


@pytest.fixture(scope="session")
def all_steps_results(student, ref, rnn_cases, tol):
    return norms_results(student, ref, rnn_cases, lambda case: case.inputs["dh"], tol)


@graded("hidden_grad_norms", "norms with losses at every step (direct plus carried gradient)")
def test_norms_all_steps(all_steps_results, tol):
    check_each(all_steps_results,
               lambda case, out: expect_array_any(out[0][0], [w[0] for w in out[1]], "norms", case, tol))


@graded("hidden_grad_norms", "norms with a loss on the last step only")
def test_norms_last_step(student, ref, rnn_cases, tol):
    results = norms_results(student, ref, rnn_cases, last_step_only, tol)
    check_each(results, lambda case, out: expect_array_any(out[0][0], [w[0] for w in out[1]], "norms", case, tol))


@graded("hidden_grad_norms", "right norms, dh left unchanged", points=1.0)
def test_norms_unmodified(all_steps_results, tol):
    check_unchanged_and_right(all_steps_results, lambda case: case.inputs["dh"], "dh", "hidden_grad_norms", ["norms"],
                              tol)


def non_normal_matrices(rng) -> list[Case]:
    """Matrices whose spectral radius is well below their largest singular value (and one symmetric control)."""
    cases = []
    for i, (H, T, gamma) in enumerate([(2, 1, 1.0), (3, 7, 1.0), (4, 12, 0.25), (5, 9, 1.0)], 1):
        upper = np.triu(rng.standard_normal((H, H)), 1) * 2.0  # nilpotent part: eigenvalues come from the diagonal
        Wh = np.diag(rng.uniform(0.3, 0.6, H)) + upper
        cases.append(Case(f"case {i} (H={H}, T={T}, gamma={gamma}, non-normal Wh)", {"Wh": Wh, "T": T, "gamma": gamma}))
    S = rng.standard_normal((3, 3))
    cases.append(Case("case 5 (H=3, T=6, gamma=1.0, symmetric Wh)", {"Wh": (S + S.T) / 2, "T": 6, "gamma": 1.0}))
    return cases


@graded("jacobian_norm_bound", "bound for several Wh (largest singular value, not spectral radius), T and gamma")
def test_bound(student, ref, context, tol):
    for case in non_normal_matrices(context.rng("bound")):
        p = case.inputs
        got = call(student.jacobian_norm_bound, p["Wh"], p["T"], p["gamma"], case=case)
        expect_array(got, ref.jacobian_norm_bound(p["Wh"], p["T"], p["gamma"]), "bound", case, tol)


@graded("jacobian_norm_bound", "right bound, Wh left unchanged")
def test_bound_unmodified(student, ref, context, tol):
    case = non_normal_matrices(context.rng("bound"))[3]
    p = case.inputs
    result, after = call(student.jacobian_norm_bound.echo, p["Wh"], p["T"], p["gamma"], case=case)
    expect_unmodified(after[:1], [p["Wh"]], ["Wh"], "jacobian_norm_bound", case)
    expect_array(result, ref.jacobian_norm_bound(p["Wh"], p["T"], p["gamma"]), "bound", case, tol)


@graded("jacobian_norm_bound", "gamma defaults to 1 (tanh)")
def test_bound_default_gamma(student, ref, context, tol):
    case = non_normal_matrices(context.rng("bound"))[1]
    got = call(student.jacobian_norm_bound, case.inputs["Wh"], case.inputs["T"], case=case)
    expect_array(got, ref.jacobian_norm_bound(case.inputs["Wh"], case.inputs["T"]), "bound", case, tol)


def horizon_cases(rng) -> list[Case]:
    decay = 10.0 ** -np.arange(8)[::-1]  # norms[T-1-k] / norms[T-1] = 10**-k
    bumpy = np.array([1e-9, 5.0, 0.5, 2.0])  # only the step 3 back is below 1e-3
    scaled = np.array([2e-3, 2e-2, 0.5, 3.0]) * 7  # ratio 6.7e-4 at k = 3 only after dividing by norms[T-1] = 21
    flat = rng.uniform(0.5, 2.0, 6)  # never below: T
    return [
        Case("a geometric curve", {"norms": decay, "threshold": 1e-3}),
        Case("a geometric curve with threshold 0.05", {"norms": decay, "threshold": 0.05}),
        Case("a curve that dips and recovers", {"norms": bumpy, "threshold": 1e-3}),
        Case("a curve whose last value is not 1", {"norms": scaled, "threshold": 1e-3}),
        Case("a curve that never falls below the threshold", {"norms": flat, "threshold": 1e-3}),
        Case("a single step (T = 1)", {"norms": np.array([2.5]), "threshold": 1e-3}),
        Case("a ratio exactly at the threshold (not below)", {"norms": np.array([0.25, 0.5, 1.0]), "threshold": 0.25}),
    ]


@graded("effective_horizon", "horizon on curves with a clear answer, the no-answer case (T) and T = 1")
def test_horizon(student, ref, context):
    for case in horizon_cases(context.rng("horizon")):
        p = case.inputs
        expect_int(call(student.effective_horizon, p["norms"], p["threshold"], case=case),
                   ref.effective_horizon(p["norms"], p["threshold"]), "the horizon", case)


@graded("effective_horizon", "the threshold defaults to 1e-3")
def test_horizon_default(student, ref):
    norms = 10.0 ** -np.arange(6)[::-1]
    case = Case("a geometric curve, default threshold")
    expect_int(call(student.effective_horizon, norms, case=case), ref.effective_horizon(norms), "the horizon", case)


@graded("effective_horizon", "right horizon, norms left unchanged")
def test_horizon_unmodified(student, ref, context):
    case = horizon_cases(context.rng("horizon"))[3]  # norms[T-1] is not 1: dividing in place changes the array
    p = case.inputs
    result, after = call(student.effective_horizon.echo, p["norms"], p["threshold"], case=case)
    expect_unmodified(after[:1], [p["norms"]], ["norms"], "effective_horizon", case)
    expect_int(result, ref.effective_horizon(p["norms"], p["threshold"]), "the horizon", case)
