"""Part 1: every reference gradient equals torch autograd (float64, rtol 1e-10) and central differences."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import RNN_SHAPES, rnn_problem

NAMES = ["x", "h0", "Wx", "Wh", "b"]


def torch_rnn_grads(x, h0, Wx, Wh, b, dh):
    """Gradients of sum(h * dh) by torch autograd, written independently of the reference."""
    params = [torch.tensor(a, dtype=torch.float64, requires_grad=True) for a in (x, h0, Wx, Wh, b)]
    xt, h, Wxt, Wht, bt = params
    states = []
    for t in range(x.shape[1]):
        h = torch.tanh(xt[:, t] @ Wxt + h @ Wht + bt)
        states.append(h)
    loss = (torch.stack(states, dim=1) * torch.tensor(dh)).sum()
    loss.backward()
    return torch.stack(states, dim=1).detach().numpy(), [p.grad.numpy() for p in params]


def central_difference(f, arrays, which, dout, eps=1e-6):
    """d sum(f(*arrays) * dout) / d arrays[which], by central differences on a copy."""
    arrays = [a.copy() for a in arrays]
    target = arrays[which]
    grad = np.zeros_like(target)
    for i in np.ndindex(target.shape):
        old = target[i]
        target[i] = old + eps
        plus = np.sum(f(*arrays) * dout)
        target[i] = old - eps
        minus = np.sum(f(*arrays) * dout)
        target[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad


@pytest.mark.parametrize("N,T,D,H", RNN_SHAPES)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rnn_backward_equals_torch_autograd(ref, seed, N, T, D, H):
    p = rnn_problem(seed, N, T, D, H)
    h, cache = ref.rnn_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
    grads = ref.rnn_backward(p["dh"], cache)
    torch_h, torch_grads = torch_rnn_grads(**p)
    np.testing.assert_allclose(h, torch_h, rtol=1e-12, atol=1e-14)
    for name, got, want in zip(NAMES, grads, torch_grads):
        assert got.shape == want.shape, name
        assert got.dtype == np.float64, name
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13, err_msg=f"d{name}")


@pytest.mark.parametrize("N,T,D,H", RNN_SHAPES)
def test_rnn_backward_equals_central_differences(ref, N, T, D, H):
    p = rnn_problem(10 + T, N, T, D, H)
    arrays = [p[name] for name in NAMES]
    grads = ref.rnn_backward(p["dh"], ref.rnn_forward(*arrays)[1])
    forward = lambda *a: ref.rnn_forward(*a)[0]
    for which, (name, got) in enumerate(zip(NAMES, grads)):
        numeric = central_difference(forward, arrays, which, p["dh"])
        np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8, err_msg=f"d{name}")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("N,D,H", [(2, 3, 4), (5, 4, 2)])
def test_rnn_step_backward_equals_torch_and_central_differences(ref, seed, N, D, H):
    p = rnn_problem(seed, N, 1, D, H)
    x = p["x"][:, 0]
    arrays = [x, p["h0"], p["Wx"], p["Wh"], p["b"]]
    dnext = p["dh"][:, 0]
    next_h, cache = ref.rnn_step_forward(*arrays)
    grads = ref.rnn_step_backward(dnext, cache)
    torch_h, torch_grads = torch_rnn_grads(x[:, None], p["h0"], p["Wx"], p["Wh"], p["b"], dnext[:, None])
    np.testing.assert_allclose(next_h, torch_h[:, 0], rtol=1e-12, atol=1e-14)
    step = lambda *a: ref.rnn_step_forward(*a)[0]
    for which, (name, got, want) in enumerate(zip(NAMES, grads, torch_grads)):
        want = want[:, 0] if name == "x" else want
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13, err_msg=f"d{name} vs torch")
        numeric = central_difference(step, arrays, which, dnext)
        np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8, err_msg=f"d{name} vs central differences")


def test_reference_does_not_mutate_inputs(ref):
    p = rnn_problem(3, 3, 5, 4, 6)
    copies = {k: v.copy() for k, v in p.items()}
    _, cache = ref.rnn_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
    ref.rnn_backward(p["dh"], cache)
    ref.hidden_grad_norms(p["dh"], cache)
    ref.rnn_backward_truncated(p["dh"], cache, 1, 2)
    for k in p:
        np.testing.assert_array_equal(p[k], copies[k], err_msg=k)
