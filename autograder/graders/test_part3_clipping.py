"""Part 3: gradient clipping. The inputs sit where the usual mistakes show: a total norm right at the threshold
(the 1e-6 eps), arrays of very different norms (per-array vs global), p = inf and p = 1, NaN and inf entries,
inputs changed in place, and the norm returned after clipping instead of before."""

from __future__ import annotations

import math

import numpy as np
import pytest

from autograder.vocabulary import (Case, GradingFailure, Tolerance, call, describe, expect_array, expect_float,
                               expect_raises)
from autograder.pytest_plugin import graded


@pytest.fixture
def tol() -> Tolerance:
    """Tighter than the course default: clipping is a few exact float operations, and the 1e-6 eps changes results
    by only about 1e-6 / total_norm, which the default rtol of 1e-7 could miss for large norms."""
    return Tolerance(rtol=1e-10, atol=1e-14)


def grad_arrays(rng, total: float | None = None) -> list[np.ndarray]:
    """Three arrays whose norms differ by orders of magnitude; optionally scaled to a given global 2-norm."""
    grads = [rng.standard_normal((4, 3)) * 3.0, rng.standard_normal((3, 3)) * 0.05, rng.standard_normal(3) * 0.7]
    if total is not None:
        scale = total / np.sqrt(sum(np.sum(g * g) for g in grads))
        grads = [g * scale for g in grads]
    return grads


def expect_list(got, want: list, what: str, case, tol) -> None:
    if not isinstance(got, (list, tuple)) or len(got) != len(want):
        raise GradingFailure(f"{what} in {case}: expected a list of {len(want)} arrays, got {describe(got)}")
    for i, (g, w) in enumerate(zip(got, want)):
        expect_array(g, w, f"{what}[{i}]", case, tol)


def clip_norm_case(student, ref, case, tol, check_norm=True, check_arrays=True):
    p = case.inputs
    args = (p["grads"], p["max_norm"], p.get("norm_type", 2.0))
    got = call(student.clip_grad_norm, *args, case=case)
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise GradingFailure(f"clip_grad_norm must return (clipped, total_norm); it returned {describe(got)}")
    want = ref.clip_grad_norm(*args)
    if check_norm:
        expect_float(got[1], want[1], "total_norm", case, tol)
    if check_arrays:
        expect_list(got[0], want[0], "clipped", case, tol)


def norm_cases(rng, norm_type: float, where: str) -> list[Case]:
    cases = []
    for i in range(1, 3):
        grads = grad_arrays(rng)
        total = float(np.linalg.norm(np.concatenate([g.ravel() for g in grads]), norm_type))
        max_norm = {"above": total / rng.uniform(3, 20), "below": total * rng.uniform(1.5, 3), "at": total}[where]
        cases.append(Case(f"case {i} ({len(grads)} arrays of different norms, p={norm_type}, total norm {where} "
                          "max_norm)", {"grads": grads, "max_norm": max_norm, "norm_type": norm_type}))
    return cases


@graded("clip_grad_norm", "total_norm is the p-norm of all arrays together, before clipping")
def test_total_norm(student, ref, context, tol):
    for case in norm_cases(context.rng("clip total"), 2.0, "above"):
        clip_norm_case(student, ref, case, tol, check_arrays=False)


@graded("clip_grad_norm", "above the threshold: one common factor for all arrays (global clipping)")
def test_clip_above(student, ref, context, tol):
    for case in norm_cases(context.rng("clip above"), 2.0, "above"):
        clip_norm_case(student, ref, case, tol)


@graded("clip_grad_norm", "a total norm exactly at max_norm still scales by max_norm / (total + 1e-6)")
def test_clip_at_threshold(student, ref, context, tol):
    rng = context.rng("clip at")
    for i, total in enumerate([1.0, 0.8], 1):  # near 1, where the eps changes the result by about 1e-6
        case = Case(f"case {i} (total norm at max_norm)", {"grads": grad_arrays(rng, total), "max_norm": total})
        clip_norm_case(student, ref, case, tol)


@graded("clip_grad_norm", "below the threshold the arrays are unchanged")
def test_clip_below(student, ref, context, tol):
    for case in norm_cases(context.rng("clip below"), 2.0, "below"):
        clip_norm_case(student, ref, case, tol)


@graded("clip_grad_norm", "norm_type=inf (largest absolute entry)")
def test_clip_inf(student, ref, context, tol):
    for case in norm_cases(context.rng("clip inf"), math.inf, "above"):
        clip_norm_case(student, ref, case, tol)


@graded("clip_grad_norm", "norm_type=1")
def test_clip_p1(student, ref, context, tol):
    for case in norm_cases(context.rng("clip p1"), 1.0, "above"):
        clip_norm_case(student, ref, case, tol)


@graded("clip_grad_norm", "NaN and inf entries give what torch gives")
def test_clip_nonfinite(student, ref, context, tol):
    rng = context.rng("clip nonfinite")
    for i, (bad, p) in enumerate([(np.nan, 2.0), (np.inf, 2.0), (np.inf, math.inf)], 1):
        grads = grad_arrays(rng)
        grads[1][0, 1] = bad
        case = Case(f"case {i} (an entry is {bad}, p={p})", {"grads": grads, "max_norm": 1.0, "norm_type": p})
        clip_norm_case(student, ref, case, tol)


@graded("clip_grad_norm", "error_if_nonfinite=True raises RuntimeError on a non-finite total norm (counts once the "
        "valid-input tests pass)", error_handling=True)
def test_clip_error_if_nonfinite(student, context):
    grads = grad_arrays(context.rng("clip error"))
    grads[0][1, 1] = np.nan
    case = Case("a gradient with a NaN entry and error_if_nonfinite=True")
    expect_raises(lambda *a: student.clip_grad_norm(*a, error_if_nonfinite=True), (grads, 1.0, 2.0), "RuntimeError",
                  "clip_grad_norm", case)


# A stub that returns ([], 0.0) for an empty list and raises otherwise passes this test: it counts as error
# handling does, only once the valid-input tests pass (it earned a raise-only stub 0.5 points).
@graded("clip_grad_norm", "an empty list gives ([], 0.0) (counts once the valid-input tests pass)",
        error_handling=True)
def test_clip_empty(student):
    case = Case("an empty list")
    got = call(student.clip_grad_norm, [], 1.0, case=case)
    if not isinstance(got, (tuple, list)) or len(got) != 2 or list(got[0]) != [] or got[1] != 0.0:
        raise GradingFailure("clip_grad_norm([], 1.0) must return ([], 0.0)")


def expect_inputs_unchanged(student, ref, tol, function: str, grads: list, *rest) -> None:
    """The function returns the right arrays (points for leaving inputs alone are not points for doing nothing)
    and the arrays it was given are bit-identical afterwards."""
    sent = [g.copy() for g in grads]
    case = Case("three arrays, clipping active")
    result, after = call(getattr(student, function).echo, grads, *rest, case=case)
    if not isinstance(after, list) or not isinstance(after[0], (list, tuple)) or len(after[0]) != len(sent):
        raise GradingFailure(f"{function} changed its input list grads; return a new list instead")
    for i, (a, b) in enumerate(zip(after[0], sent)):
        if not (isinstance(a, np.ndarray) and np.array_equal(a, b, equal_nan=True)):
            raise GradingFailure(f"{function} modified its input grads[{i}]; return new arrays instead")
    want = getattr(ref, function)(sent, *rest)
    if function == "clip_grad_norm":
        if not isinstance(result, (tuple, list)) or len(result) != 2:
            raise GradingFailure(f"clip_grad_norm must return (clipped, total_norm); it returned {describe(result)}")
        result, want = result[0], want[0]
    expect_list(result, want, "clipped", case, tol)


@graded("clip_grad_norm", "right result, input arrays left unchanged")
def test_clip_norm_unmodified(student, ref, tol, context):
    expect_inputs_unchanged(student, ref, tol, "clip_grad_norm", grad_arrays(context.rng("clip unmodified")), 0.1)


@graded("clip_grad_value", "entries clipped to [-clip_value, clip_value], NaN kept, as torch")
def test_clip_value(student, ref, context, tol):
    rng = context.rng("clip value")
    for i, clip_value in enumerate([0.1, 1.0, 50.0], 1):
        grads = grad_arrays(rng)
        grads[2][1] = np.nan
        case = Case(f"case {i} (clip_value={clip_value}, one NaN entry)")
        expect_list(call(student.clip_grad_value, grads, clip_value, case=case),
                    ref.clip_grad_value(grads, clip_value), "clipped", case, tol)


@graded("clip_grad_value", "right result, input arrays left unchanged")
def test_clip_value_unmodified(student, ref, tol, context):
    expect_inputs_unchanged(student, ref, tol, "clip_grad_value", grad_arrays(context.rng("value unmodified")), 0.1)


@graded("clip_grad_norm_per_array", "each array by its own 2-norm (Keras clipnorm), arrays of different norms")
def test_per_array(student, ref, context, tol):
    rng = context.rng("per array")
    for i, max_norm in enumerate([0.5, 0.08], 1):  # some arrays above, some below their own threshold
        grads = grad_arrays(rng)
        case = Case(f"case {i} (3 arrays of different norms, max_norm={max_norm})")
        expect_list(call(student.clip_grad_norm_per_array, grads, max_norm, case=case),
                    ref.clip_grad_norm_per_array(grads, max_norm), "clipped", case, tol)


@graded("clip_grad_norm_per_array", "arrays under max_norm are unchanged")
def test_per_array_below(student, ref, context, tol):
    grads = grad_arrays(context.rng("per array below"))
    case = Case("3 arrays all under max_norm=100")
    expect_list(call(student.clip_grad_norm_per_array, grads, 100.0, case=case),
                ref.clip_grad_norm_per_array(grads, 100.0), "clipped", case, tol)


@graded("clip_grad_norm_per_array", "right result, input arrays left unchanged")
def test_per_array_unmodified(student, ref, tol, context):
    expect_inputs_unchanged(student, ref, tol, "clip_grad_norm_per_array", grad_arrays(context.rng("per unmodified")),
                            0.1)
