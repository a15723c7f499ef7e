"""Inputs shared by the graders: random RNN problems drawn per student (context.rng), and the bridge from a
student's forward states to the reference's backward, so that a backward pass is graded on the student's own
forward (a forward bug is charged to the forward only)."""

from __future__ import annotations

import numpy as np
import pytest

from autograder.checks import Case, GradingFailure, call, unpack

GRADS = ["dx", "dh0", "dWx", "dWh", "db"]

# (N, T, D, H): batches of 2 or more, D != H, a single step and sequences longer than 10.
RNN_SHAPES = [(2, 1, 3, 5), (3, 6, 4, 2), (2, 13, 5, 3)]


def rnn_problem(rng, N, T, D, H, scale=0.6) -> dict:
    return {
        "x": rng.standard_normal((N, T, D)),
        "h0": rng.standard_normal((N, H)) * 0.5,  # non-zero: an off-by-one in time shows
        "Wx": rng.standard_normal((D, H)) * scale,
        "Wh": rng.standard_normal((H, H)) * scale / np.sqrt(H) * 1.5,
        "b": rng.standard_normal(H) * 0.2,
        "dh": rng.standard_normal((N, T, H)),
    }


def rnn_label(i, N, T, D, H) -> str:
    return f"case {i} (N={N}, T={T}, D={D}, H={H})"


@pytest.fixture(scope="session")
def rnn_cases(context) -> list[Case]:
    rng = context.rng("rnn sequences")
    return [Case(rnn_label(i, *shape), rnn_problem(rng, *shape)) for i, shape in enumerate(RNN_SHAPES, 1)]


def forward_args(case: Case) -> tuple:
    p = case.inputs
    return p["x"], p["h0"], p["Wx"], p["Wh"], p["b"]


def reference_cache(x, h0, Wx, Wh, h) -> list:
    """The reference's rnn_forward cache (see 1_bptt.ipynb: one (x_t, h_{t-1}, Wx, Wh, h_t) per step) built from
    given states, so the reference backward runs at exactly the states the student's forward produced."""
    return [(x[:, t], h0 if t == 0 else h[:, t - 1], Wx, Wh, h[:, t]) for t in range(x.shape[1])]


def student_forward(student, case: Case, purpose: str):
    """(h, cache) from the student's rnn_forward; a failure says that `purpose` could not be graded because of it."""
    try:
        h, cache = unpack(call(student.rnn_forward, *forward_args(case), case=case), ["h", "cache"], "rnn_forward",
                          case)
    except GradingFailure as exc:
        raise GradingFailure(f"{purpose} could not be graded because rnn_forward failed: {exc}") from None
    return h, cache


def usable_or(got, fallback: np.ndarray) -> np.ndarray:
    """The student's forward output when usable (an array of the right shape, finite), else the reference's."""
    if isinstance(got, np.ndarray) and got.shape == fallback.shape and np.all(np.isfinite(got)):
        return got.astype(np.float64)
    return fallback


def state_candidates(got, reference_states: np.ndarray) -> list[np.ndarray]:
    """The states at which a backward pass may rightly be evaluated: the student's own forward output first (their
    cache normally holds those), then the true states (a forward that returns wrong h but caches the right
    states). A backward is right if it is right at either, so a forward bug is charged to the forward only."""
    own = usable_or(got, reference_states)
    return [own] if own is reference_states or np.array_equal(own, reference_states) else [own, reference_states]


def collect(cases, run) -> list:
    """[(case, outputs or the GradingFailure of that case)]: per-output tests share one set of student calls."""
    results = []
    for case in cases:
        try:
            results.append((case, run(case)))
        except GradingFailure as exc:
            results.append((case, exc))
    return results


def check_each(results, check) -> None:
    for case, outcome in results:
        if isinstance(outcome, GradingFailure):
            raise outcome
        check(case, outcome)
