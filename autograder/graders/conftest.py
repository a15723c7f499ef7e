"""Inputs shared by the graders: random RNN problems drawn per student (context.rng), and the states at which a
backward-type function (rnn_step_backward, rnn_backward, hidden_grad_norms, rnn_backward_truncated) is graded; and
torch_lstm, the LSTM's expected values (Part 7), shared with the kit's tests.

Backward-type functions earn points only for the gradients of the true RNN on the grader's inputs and parameters.
They are called with the cache of the student's own forward; the expected values are the reference's at the true
states, or at the student's own forward states when those are states of the true recurrence (state_candidates):
then a forward that starts from a wrong initial state is charged to the forward once. States the recurrence does not
give (a forward that returns saturated states, where every gradient vanishes, or other states on a later call) are
never used: the backward is then graded against the true states."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autograder.vocabulary import Case, GradingFailure, call, expect_array_any, expect_unmodified, unpack

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


def follows_the_recurrence(got, x, h0, Wx, Wh, b, tol) -> bool:
    """Whether `got` (what the student's rnn_forward returned as h) are states of the true RNN on the grader's inputs
    and parameters: a finite float array of h's shape with h[:, t] = tanh(x[:, t] @ Wx + h[:, t-1] @ Wh + b) for every
    t >= 1 (within the tolerance), and h[:, 0] reachable in one such step from some initial state whose entries are
    no larger in magnitude than max(1, max |h0|). So only the initial state may differ from the grader's (a forward
    that starts from zeros instead of h0); no state can be picked freely, e.g. saturated so that tanh' and every
    expected gradient vanish."""
    N, T, _ = x.shape
    H = Wh.shape[0]
    if not isinstance(got, np.ndarray) or got.dtype.kind != "f" or got.shape != (N, T, H):
        return False
    got = got.astype(np.float64)
    if not np.all(np.isfinite(got)) or np.any(np.abs(got) >= 1.0):
        return False
    for t in range(1, T):
        if not np.allclose(got[:, t], np.tanh(x[:, t] @ Wx + got[:, t - 1] @ Wh + b), rtol=tol.rtol, atol=tol.atol):
            return False
    # h[:, 0] = tanh(x0 Wx + p Wh + b) with |p| <= c entrywise puts the pre-activation within c * sum_i |Wh[i, j]|.
    c = max(1.0, float(np.max(np.abs(h0))))
    reach = c * np.sum(np.abs(Wh), axis=0)
    gap = np.abs(np.arctanh(got[:, 0]) - (x[:, 0] @ Wx + b))
    return bool(np.all(gap <= reach * (1 + 1e-9) + 1e-9))


def state_candidates(got, reference_states: np.ndarray, case: Case, tol) -> list[np.ndarray]:
    """The states at which the reference evaluates what a backward-type function must return for `case`: the true
    states, and the student's own forward output when it differs from them but follows the recurrence
    (follows_the_recurrence). A backward is right if it is right at either."""
    x, h0, Wx, Wh, b = forward_args(case)
    if not follows_the_recurrence(got, x, h0, Wx, Wh, b, tol):
        return [reference_states]
    own = got.astype(np.float64)
    return [reference_states] if np.array_equal(own, reference_states) else [reference_states, own]


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


def check_unchanged_and_right(results, sent, input_name: str | list[str], function: str, names: list[str],
                              tol) -> None:
    """For collect() results whose outcome is (outputs, [acceptable expected outputs], the input `input_name` as the
    student's code left it, or the inputs of a list of names): in every case the input is bit-identical to what was
    sent (`sent(case)`; checked first, a changed input being the likely cause of anything else) and every output is
    right."""
    several = not isinstance(input_name, str)

    def check(case, out):
        got, wants, after = out
        expect_unmodified(list(after) if several else [after], list(sent(case)) if several else [sent(case)],
                          list(input_name) if several else [input_name], function, case)
        for index, name in enumerate(names):
            expect_array_any(got[index], [w[index] for w in wants], name, case, tol)

    check_each(results, check)


def torch_lstm(x, h0, c0, Wx, Wh, b, dh, dc_last):
    """The LSTM of the contract run by torch in float64: returns (h (N, T, H), c_T, gradients of
    L = sum(h * dh) + sum(c_T * dc_last) with respect to x, h0, c0, Wx, Wh, b), all numpy."""
    with torch.enable_grad():
        params = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, h0, c0, Wx, Wh, b)]
        xt, h, c, Wxt, Wht, bt = params
        H = h0.shape[1]
        states = []
        for t in range(x.shape[1]):
            a = xt[:, t] @ Wxt + h @ Wht + bt
            i, f, o = torch.sigmoid(a[:, :H]), torch.sigmoid(a[:, H:2 * H]), torch.sigmoid(a[:, 2 * H:3 * H])
            c = f * c + i * torch.tanh(a[:, 3 * H:])
            h = o * torch.tanh(c)
            states.append(h)
        h_all = torch.stack(states, dim=1)
        loss = (h_all * torch.from_numpy(dh)).sum() + (c * torch.from_numpy(dc_last)).sum()
        loss.backward()
    return h_all.detach().numpy(), c.detach().numpy(), [p.grad.numpy() for p in params]
