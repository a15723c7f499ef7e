"""Part 4: truncated BPTT of the reference, against full BPTT and independent torch computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import rnn_problem

ARGS = ("x", "h0", "Wx", "Wh", "b")


def torch_tbptt(p: dict, k1: int, k2: int):
    """TBPTT(k1, k2) by brute force in torch: for each chunk end tau, rebuild the graph from the state after step
    max(tau - k2, 0), treated as a leaf, forward to tau, and backpropagate the chunk's losses."""
    x, Wx, Wh, b, dh = (torch.tensor(p[k]) for k in ("x", "Wx", "Wh", "b", "dh"))
    grads = {name: torch.zeros_like(a) for name, a in zip(("x", "Wx", "Wh", "b"), (x, Wx, Wh, b))}
    dh0 = torch.zeros(p["h0"].shape, dtype=torch.float64)
    T = x.shape[1]
    with torch.no_grad():  # the forward states, as constants
        h, states = torch.tensor(p["h0"]), [torch.tensor(p["h0"])]
        for t in range(T):
            h = torch.tanh(x[:, t] @ Wx + h @ Wh + b)
            states.append(h)
    for tau in range(k1, T + 1, k1):
        j = max(tau - k2, 0)
        xs, Wxs, Whs, bs = (a.clone().requires_grad_() for a in (x, Wx, Wh, b))
        start = states[j].clone().requires_grad_()
        h, loss = start, 0.0
        for t in range(j, tau):
            h = torch.tanh(xs[:, t] @ Wxs + h @ Whs + bs)
            if t >= tau - k1:
                loss = loss + (h * dh[:, t]).sum()
        loss.backward()
        for name, leaf in zip(("x", "Wx", "Wh", "b"), (xs, Wxs, Whs, bs)):
            grads[name] += leaf.grad
        if j == 0:
            dh0 += start.grad
    return [grads["x"].numpy(), dh0.numpy(), grads["Wx"].numpy(), grads["Wh"].numpy(), grads["b"].numpy()]


@pytest.mark.parametrize("T", [1, 4, 12])
def test_tbptt_T_T_equals_full_bptt(ref, T):
    p = rnn_problem(T, 3, T, 4, 5)
    _, cache = ref.rnn_forward(*(p[k] for k in ARGS))
    full = ref.rnn_backward(p["dh"], cache)
    for k2 in (T, T + 3):
        for got, want in zip(ref.rnn_backward_truncated(p["dh"], cache, T, k2), full):
            np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("T,k1,k2", [(12, 3, 3), (12, 1, 1), (12, 2, 5), (12, 4, 12), (12, 6, 7), (9, 3, 20),
                                     (12, 12, 12), (1, 1, 1), (10, 1, 4)])
def test_tbptt_equals_brute_force_torch(ref, T, k1, k2):
    p = rnn_problem(T + k1 + k2, 2, T, 3, 4, scale=0.9)
    _, cache = ref.rnn_forward(*(p[k] for k in ARGS))
    got = ref.rnn_backward_truncated(p["dh"], cache, np.int64(k1), k2)
    for name, g, want in zip(("dx", "dh0", "dWx", "dWh", "db"), got, torch_tbptt(p, k1, k2)):
        np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-13, err_msg=name)


@pytest.mark.parametrize("k", [1, 2, 3, 6])
def test_tbptt_k_k_equals_torch_detach_idiom(ref, k):
    p = rnn_problem(40 + k, 3, 6, 4, 5, scale=0.8)
    _, cache = ref.rnn_forward(*(p[k_] for k_ in ARGS))
    _, _, dWx, dWh, db = ref.rnn_backward_truncated(p["dh"], cache, k, k)
    torch_grads = ref.torch_truncated_grads(*(p[k_] for k_ in ARGS), p["dh"], k)
    for got, want in zip((dWx, dWh, db), torch_grads):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)
        assert isinstance(want, np.ndarray) and want.dtype == np.float64
    for got, want in zip(torch_grads, torch_tbptt(p, k, k)[2:]):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13)


@pytest.mark.parametrize("k1,k2", [(0, 1), (2, 1), (5, 5), (2.0, 4), (2, 4.0), (True, 2), ("2", 4), (-2, 2), (None, 2)])
def test_tbptt_rejects_bad_k(ref, k1, k2):
    p = rnn_problem(0, 2, 6, 3, 4)
    _, cache = ref.rnn_forward(*(p[k] for k in ARGS))
    with pytest.raises(ValueError):
        ref.rnn_backward_truncated(p["dh"], cache, k1, k2)


@pytest.mark.parametrize("k", [0, 4, 2.0, -3, "3"])
def test_torch_truncated_grads_rejects_bad_k(ref, k):
    p = rnn_problem(0, 2, 6, 3, 4)
    with pytest.raises(ValueError):
        ref.torch_truncated_grads(*(p[k_] for k_ in ARGS), p["dh"], k)
