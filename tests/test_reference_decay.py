"""Part 2: hidden_grad_norms, jacobian_norm_bound and effective_horizon of the reference."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import RNN_SHAPES, rnn_problem


def random_orthogonal(H: int, rng) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((H, H)))
    return q * np.sign(np.diag(r))


def last_step_loss(p: dict) -> np.ndarray:
    dh = np.zeros_like(p["dh"])
    dh[:, -1] = p["dh"][:, -1]
    return dh


@pytest.mark.parametrize("N,T,D,H", RNN_SHAPES)
def test_hidden_grad_norms_equal_torch_state_gradients(ref, N, T, D, H):
    p = rnn_problem(20 + T, N, T, D, H)
    _, cache = ref.rnn_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
    norms = ref.hidden_grad_norms(p["dh"], cache)

    xt, Wx, Wh, b = (torch.tensor(p[k]) for k in ("x", "Wx", "Wh", "b"))
    h, states = torch.tensor(p["h0"], requires_grad=True), []
    for t in range(T):
        h = torch.tanh(xt[:, t] @ Wx + h @ Wh + b)
        h.retain_grad()
        states.append(h)
    sum(((s * torch.tensor(p["dh"][:, t])).sum() for t, s in enumerate(states))).backward()
    expected = np.array([np.linalg.norm(s.grad.numpy()) for s in states])

    assert norms.shape == (T,) and norms.dtype == np.float64
    np.testing.assert_allclose(norms, expected, rtol=1e-10)


@pytest.mark.parametrize("rho", [0.5, 0.9, 1.0, 1.3])
@pytest.mark.parametrize("T", [1, 6, 15])
def test_identity_activation_gives_exact_geometric_decay(ref, rho, T):
    """With the activation replaced by the identity and Wh = rho * Q, norms[t] / norms[T-1] = rho**(T-1-t).

    The reference's step cache records the step's output h_t and takes tanh'(a) = 1 - h_t**2 from it; recording
    h_t = 0 turns every step's Jacobian into Wh.T, i.e. the backward pass of a linear (identity-activation) RNN.
    """
    rng = np.random.default_rng(int(rho * 100) + T)
    N, D, H = 3, 2, 5
    p = rnn_problem(T, N, T, D, H)
    Wh = rho * random_orthogonal(H, rng)
    _, cache = ref.rnn_forward(p["x"], p["h0"], p["Wx"], Wh, p["b"])
    linear_cache = [(x, prev_h, Wx, Wh_, np.zeros_like(next_h)) for x, prev_h, Wx, Wh_, next_h in cache]
    norms = ref.hidden_grad_norms(last_step_loss(p), linear_cache)
    np.testing.assert_allclose(norms / norms[-1], rho ** np.arange(T - 1, -1, -1.0), rtol=1e-12)
    np.testing.assert_allclose(ref.jacobian_norm_bound(Wh, T), rho ** np.arange(T - 1, -1, -1.0), rtol=1e-12)


@pytest.mark.parametrize("sigma", [0.6, 1.0, 1.5, 3.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tanh_norm_ratios_stay_under_the_bound(ref, sigma, seed):
    rng = np.random.default_rng(seed)
    N, T, D, H = 4, 25, 3, 6
    p = rnn_problem(seed, N, T, D, H)
    Wh = rng.standard_normal((H, H))
    Wh *= sigma / np.linalg.norm(Wh, 2)
    _, cache = ref.rnn_forward(p["x"], p["h0"], p["Wx"], Wh, p["b"])
    norms = ref.hidden_grad_norms(last_step_loss(p), cache)
    bound = ref.jacobian_norm_bound(Wh, T)
    assert np.all(norms / norms[-1] <= bound * (1 + 1e-12))


def test_bound_uses_largest_singular_value_not_spectral_radius(ref):
    Wh = np.array([[0.5, 2.0], [0.0, 0.5]])  # eigenvalues 0.5, 0.5; largest singular value about 2.13
    sigma = np.linalg.svd(Wh, compute_uv=False)[0]
    assert max(abs(np.linalg.eigvals(Wh))) == pytest.approx(0.5)
    for gamma in (1.0, 0.25):
        bound = ref.jacobian_norm_bound(Wh, 7, gamma)
        np.testing.assert_allclose(bound, (gamma * sigma) ** np.arange(6, -1, -1.0), rtol=1e-13)
        assert bound.shape == (7,) and bound[-1] == 1.0


@pytest.mark.parametrize("norms,threshold,expected", [
    ([1e-5, 1e-4, 1e-2, 1.0], 1e-3, 2),       # 1e-2 at k = 1 is not below, 1e-4 at k = 2 is
    ([0.5, 0.9, 1.0], 1e-3, 3),               # never below: T
    ([1.0], 1e-3, 1),                         # T = 1: no k in 1..0, so T
    ([2e-3, 1e-3, 0.5, 1.0], 1e-2, 2),        # smallest k wins
    ([1e-9, 5.0, 0.5, 2.0], 1e-3, 3),        # non-monotone: k counts steps back from T-1
    ([0.0, 0.0, 3.0], 1e-3, 1),
])
def test_effective_horizon(ref, norms, threshold, expected):
    got = ref.effective_horizon(np.array(norms), threshold)
    assert got == expected and isinstance(got, int)
