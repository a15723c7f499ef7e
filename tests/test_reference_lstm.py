"""Part 7: every reference LSTM function equals torch autograd (float64, rtol 1e-10) and central differences, on cases
with a non-zero h0 (and prev_c for the step), N >= 2, D != H, T = 1 and T > 10; the grader's own torch values agree
with torch.nn.LSTM (whose gate blocks are ordered i, f, g, o: reordered here); no function changes its inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from autograder.graders.conftest import torch_lstm
from test_reference_bptt import central_difference

NAMES = ["x", "h0", "Wx", "Wh", "b"]
# (N, T, D, H): N >= 2, D != H, T = 1 and T > 10
LSTM_SHAPES = [(2, 1, 3, 4), (3, 2, 5, 2), (2, 12, 4, 3)]


def lstm_problem(seed: int, N: int, T: int, D: int, H: int) -> dict:
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((N, T, D)),
        "h0": rng.standard_normal((N, H)),
        "Wx": rng.standard_normal((D, 4 * H)) * 0.5,
        "Wh": rng.standard_normal((H, 4 * H)) * 0.5,
        "b": rng.standard_normal(4 * H) * 0.5,
        "dh": rng.standard_normal((N, T, H)),
        "c0": rng.standard_normal((N, H)),
        "dc": rng.standard_normal((N, H)),
    }


def independent_torch_grads(x, h0, Wx, Wh, b, dh):
    """sum(h * dh) through torch.nn.LSTM in float64, its weights set from ours: the reference's formulas are the
    contract's, not only those of torch_lstm."""
    N, T, D = x.shape
    H = h0.shape[1]
    blocks = [slice(0, H), slice(H, 2 * H), slice(3 * H, 4 * H), slice(2 * H, 3 * H)]  # torch's i, f, g, o from ours
    order = np.concatenate([np.arange(4 * H)[s] for s in blocks])
    lstm = torch.nn.LSTM(D, H, batch_first=True).double()
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(torch.from_numpy(Wx[:, order].T))
        lstm.weight_hh_l0.copy_(torch.from_numpy(Wh[:, order].T))
        lstm.bias_ih_l0.copy_(torch.from_numpy(b[order]))
        lstm.bias_hh_l0.zero_()
    xt = torch.tensor(x, requires_grad=True)
    h0t = torch.tensor(h0[None], requires_grad=True)
    out, _ = lstm(xt, (h0t, torch.zeros(1, N, H, dtype=torch.float64)))
    (out * torch.from_numpy(dh)).sum().backward()
    inverse = np.argsort(order)
    return out.detach().numpy(), [xt.grad.numpy(), h0t.grad.numpy()[0],
                                  lstm.weight_ih_l0.grad.numpy().T[:, inverse],
                                  lstm.weight_hh_l0.grad.numpy().T[:, inverse],
                                  lstm.bias_ih_l0.grad.numpy()[inverse]]


@pytest.mark.parametrize("N,T,D,H", LSTM_SHAPES)
@pytest.mark.parametrize("seed", [0, 1])
def test_lstm_backward_equals_torch_autograd(ref, seed, N, T, D, H):
    p = lstm_problem(seed, N, T, D, H)
    args = [p[name] for name in NAMES]
    h, cache = ref.lstm_forward(*args)
    grads = ref.lstm_backward(p["dh"], cache)
    zeros = np.zeros((N, H))
    grader_h, _, g = torch_lstm(p["x"], p["h0"], zeros, p["Wx"], p["Wh"], p["b"], p["dh"], zeros)
    for torch_h, torch_grads in [independent_torch_grads(*args, p["dh"]), (grader_h, [g[0], g[1], g[3], g[4], g[5]])]:
        np.testing.assert_allclose(h, torch_h, rtol=1e-12, atol=1e-14)
        for name, got, want in zip(NAMES, grads, torch_grads):
            assert got.shape == want.shape and got.dtype == np.float64, name
            np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13, err_msg=f"d{name}")


@pytest.mark.parametrize("N,T,D,H", LSTM_SHAPES)
def test_lstm_backward_equals_central_differences(ref, N, T, D, H):
    p = lstm_problem(10 + T, N, T, D, H)
    arrays = [p[name] for name in NAMES]
    grads = ref.lstm_backward(p["dh"], ref.lstm_forward(*arrays)[1])
    forward = lambda *a: ref.lstm_forward(*a)[0]
    for which, (name, got) in enumerate(zip(NAMES, grads)):
        numeric = central_difference(forward, arrays, which, p["dh"])
        np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8, err_msg=f"d{name}")


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("N,D,H", [(2, 3, 4), (5, 4, 2)])
def test_lstm_step_equals_torch_and_central_differences(ref, seed, N, D, H):
    """One step with a non-zero prev_c and gradients on both outputs."""
    p = lstm_problem(seed, N, 1, D, H)
    arrays = [p["x"][:, 0], p["h0"], p["c0"], p["Wx"], p["Wh"], p["b"]]
    next_h, next_c, cache = ref.lstm_step_forward(*arrays)
    grads = ref.lstm_step_backward(p["dh"][:, 0], p["dc"], cache)
    torch_h, torch_c, torch_grads = torch_lstm(p["x"], p["h0"], p["c0"], p["Wx"], p["Wh"], p["b"], p["dh"], p["dc"])
    np.testing.assert_allclose(next_h, torch_h[:, 0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(next_c, torch_c, rtol=1e-12, atol=1e-14)
    torch_grads[0] = torch_grads[0][:, 0]
    both = lambda *a: np.concatenate(ref.lstm_step_forward(*a)[:2], axis=1)
    dboth = np.concatenate([p["dh"][:, 0], p["dc"]], axis=1)
    for which, (name, got, want) in enumerate(zip(["x", "prev_h", "prev_c", "Wx", "Wh", "b"], grads, torch_grads)):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-13, err_msg=f"d{name} vs torch")
        numeric = central_difference(both, arrays, which, dboth)
        np.testing.assert_allclose(got, numeric, rtol=1e-6, atol=1e-8, err_msg=f"d{name} vs central differences")


def test_lstm_initial_cell_state_is_zero_and_bias_sets_the_forget_gate(ref):
    """With zero weights the gates are sigmoid(b): c_1 = sigmoid(b_i) tanh(b_g) from c_0 = 0, then
    c_2 = sigmoid(b_f) c_1 + sigmoid(b_i) tanh(b_g); exact values, not only agreement with torch."""
    N, T, D, H = 2, 2, 3, 2
    b = np.array([0.3, -0.2, 1.5, 2.0, -1.0, 0.4, 0.7, -0.6])
    h, _ = ref.lstm_forward(np.ones((N, T, D)), np.full((N, H), 0.5), np.zeros((D, 4 * H)), np.zeros((H, 4 * H)), b)
    s = lambda z: 1.0 / (1.0 + np.exp(-z))
    c1 = s(b[:2]) * np.tanh(b[6:])
    c2 = s(b[2:4]) * c1 + c1
    np.testing.assert_allclose(h[0], [s(b[4:6]) * np.tanh(c1), s(b[4:6]) * np.tanh(c2)], rtol=1e-14)


def test_reference_lstm_does_not_mutate_inputs(ref):
    p = lstm_problem(3, 3, 5, 4, 6)
    copies = {k: v.copy() for k, v in p.items()}
    _, _, cache = ref.lstm_step_forward(p["x"][:, 0], p["h0"], p["c0"], p["Wx"], p["Wh"], p["b"])
    ref.lstm_step_backward(p["dh"][:, 0], p["dc"], cache)
    _, cache = ref.lstm_forward(p["x"], p["h0"], p["Wx"], p["Wh"], p["b"])
    ref.lstm_backward(p["dh"], cache)
    for k in p:
        np.testing.assert_array_equal(p[k], copies[k], err_msg=k)
