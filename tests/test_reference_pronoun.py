"""Part 5: the reference agreement data, one-hot encoding and gradient ratio, against independent computations."""

from __future__ import annotations

import numpy as np
import pytest
import torch


def test_agreement_data_layout_and_determinism(ref):
    tokens, labels = ref.make_agreement_data(500, 7, seed=3)
    assert tokens.shape == (500, 9) and tokens.dtype == np.int64 and labels.dtype == np.int64
    n_names = len(ref.NAMES)
    assert set(np.unique(tokens[:, 0])) == set(range(n_names))
    assert set(np.unique(tokens[:, 1:-1])) <= set(range(n_names, n_names + len(ref.FILLERS)))
    assert np.all(tokens[:, -1] == ref.VOCAB.index(ref.QUERY))
    np.testing.assert_array_equal(labels, tokens[:, 0] >= n_names // 2)
    again = ref.make_agreement_data(np.int64(500), 7, seed=3)
    np.testing.assert_array_equal(tokens, again[0])
    assert not np.array_equal(tokens, ref.make_agreement_data(500, 7, seed=4)[0])
    assert ref.make_agreement_data(3, 0)[0].shape == (3, 2)


@pytest.mark.parametrize("args", [(0, 3), (4, -1), (2.0, 3), (4, 1.5), (True, 2), ("3", 2)])
def test_agreement_data_rejects_bad_arguments(ref, args):
    with pytest.raises(ValueError):
        ref.make_agreement_data(*args)


def test_one_hot(ref):
    tokens = np.array([[0, 3, 1], [2, 2, 0]])
    x = ref.one_hot(tokens, 4)
    assert x.dtype == np.float64 and x.shape == (2, 3, 4)
    np.testing.assert_array_equal(x, np.eye(4)[tokens])
    for bad in (np.array([[0, 4]]), np.array([[-1, 0]]), np.array([[0.0, 1.0]]), np.array([[True, False]])):
        with pytest.raises(ValueError):
            ref.one_hot(bad, 4)
    np.testing.assert_array_equal(ref.one_hot([[0, 3, 1], [2, 2, 0]], 4), x)  # a nested list of ints is accepted


@pytest.mark.parametrize("vocab_size", [0, -2, True, 2.5, "4", None])
def test_one_hot_rejects_a_vocab_size_that_is_not_a_positive_integer(ref, vocab_size):
    with pytest.raises(ValueError):
        ref.one_hot(np.array([[0, 1]]), vocab_size)


def torch_input_gradients(x, h0, Wx, Wh, b, dout, k2=None):
    """dL/dx for a loss sum(h[:, -1] * dout), with the state detached k2 steps before the end when k2 is given."""
    xt = torch.tensor(x, requires_grad=True)
    h = torch.tensor(h0)
    T = x.shape[1]
    for t in range(T):
        if k2 is not None and t == T - k2:
            h = h.detach()
        h = torch.tanh(xt[:, t] @ torch.tensor(Wx) + h @ torch.tensor(Wh) + torch.tensor(b))
    (h * torch.tensor(dout)).sum().backward()
    return xt.grad.numpy()


@pytest.mark.parametrize("k2", [None, 1, 3, 6, 7, 20])
def test_antecedent_ratio_equals_torch(ref, k2):
    rng = np.random.default_rng(5)
    tokens, _ = ref.make_agreement_data(3, 5, seed=1)  # T = 7
    x = ref.one_hot(tokens, len(ref.VOCAB))
    H = 6
    args = (x, rng.standard_normal((3, H)) * 0.3, rng.standard_normal((x.shape[2], H)) * 0.5,
            rng.standard_normal((H, H)) / np.sqrt(H), rng.standard_normal(H) * 0.1, rng.standard_normal((3, H)))
    dx = torch_input_gradients(*args, k2=k2)
    want = np.linalg.norm(dx[:, 0]) / np.linalg.norm(dx[:, -1])
    got = ref.antecedent_gradient_ratio(*args, k2=k2)
    assert isinstance(got, float)
    assert got == pytest.approx(want, rel=1e-10, abs=0)
    if k2 is not None and k2 < x.shape[1]:
        assert got == 0.0
