"""Part 3: the reference clipping functions equal torch's and the Keras formula."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch


def grad_list(seed: int, scales=(1.0, 30.0, 0.01)) -> list[np.ndarray]:
    """Several arrays of very different norms (where per-array and global clipping differ)."""
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (4, 4), (4,)]
    return [rng.standard_normal(s) * c for s, c in zip(shapes, scales)]


def torch_clip_norm(grads, max_norm, norm_type, error_if_nonfinite=False):
    params = []
    for g in grads:
        p = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(g, dtype=torch.float64)
        params.append(p)
    total = torch.nn.utils.clip_grad_norm_(params, max_norm, norm_type, error_if_nonfinite=error_if_nonfinite)
    return [p.grad.numpy() for p in params], float(total)


def torch_total_norm(grads, norm_type):
    flat = torch.cat([torch.tensor(g).reshape(-1) for g in grads])
    return float(torch.linalg.vector_norm(flat, norm_type))


@pytest.mark.parametrize("norm_type", [1.0, 2.0, math.inf, 3])
@pytest.mark.parametrize("where", ["below", "at", "above"])
@pytest.mark.parametrize("seed", [0, 1])
def test_clip_grad_norm_equals_torch(ref, norm_type, where, seed):
    grads = grad_list(seed)
    total = torch_total_norm(grads, norm_type)
    max_norm = {"below": total * 2.0, "at": total, "above": total / 7.0}[where]
    originals = [g.copy() for g in grads]
    clipped, total_norm = ref.clip_grad_norm(grads, max_norm, norm_type)
    want, want_total = torch_clip_norm(grads, max_norm, norm_type)
    assert isinstance(total_norm, float)
    assert total_norm == pytest.approx(want_total, rel=1e-12)  # the norm before clipping
    for got, expected, g, original in zip(clipped, want, grads, originals):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=0)
        np.testing.assert_array_equal(g, original)  # inputs untouched
        assert got is not g
    if where == "at":  # torch's eps still scales by max_norm / (max_norm + 1e-6)
        assert not np.allclose(clipped[1], grads[1], rtol=1e-9, atol=0)


def test_clip_grad_norm_on_several_rnn_gradients_is_global(ref):
    grads = grad_list(3)
    clipped, total = ref.clip_grad_norm(grads, 1.0)
    factors = [np.linalg.norm(c) / np.linalg.norm(g) for c, g in zip(clipped, grads)]
    assert np.ptp(factors) < 1e-12  # one common factor: the update keeps its direction
    assert np.sqrt(sum(np.sum(c**2) for c in clipped)) == pytest.approx(1.0, rel=1e-5)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("norm_type", [2.0, math.inf])
def test_clip_grad_norm_non_finite_like_torch(ref, bad, norm_type):
    grads = grad_list(4)
    grads[0][1, 2] = bad
    clipped, total = ref.clip_grad_norm(grads, 1.0, norm_type)
    want, want_total = torch_clip_norm(grads, 1.0, norm_type)
    np.testing.assert_equal(total, want_total)
    for got, expected in zip(clipped, want):
        np.testing.assert_array_equal(got, expected)  # NaN where torch has NaN
    with pytest.raises(RuntimeError):
        torch_clip_norm(grads, 1.0, norm_type, error_if_nonfinite=True)
    with pytest.raises(RuntimeError):
        ref.clip_grad_norm(grads, 1.0, norm_type, error_if_nonfinite=True)


def test_clip_grad_norm_empty_list(ref):
    assert ref.clip_grad_norm([], 1.0) == ([], 0.0)


@pytest.mark.parametrize("clip_value", [0.05, 0.5, 100.0])
def test_clip_grad_value_equals_torch(ref, clip_value):
    grads = grad_list(5)
    grads[1][0, 0] = np.nan
    originals = [g.copy() for g in grads]
    clipped = ref.clip_grad_value(grads, clip_value)
    params = []
    for g in grads:
        p = torch.zeros(g.shape, dtype=torch.float64, requires_grad=True)
        p.grad = torch.tensor(g)
        params.append(p)
    torch.nn.utils.clip_grad_value_(params, clip_value)
    for got, p, g, original in zip(clipped, params, grads, originals):
        np.testing.assert_array_equal(got, p.grad.numpy())
        np.testing.assert_array_equal(g, original)


@pytest.mark.parametrize("max_norm", [0.001, 1.0, 5.0, 1e4])
def test_clip_grad_norm_per_array_is_keras_clipnorm(ref, max_norm):
    grads = grad_list(6)
    originals = [g.copy() for g in grads]
    clipped = ref.clip_grad_norm_per_array(grads, max_norm)
    for got, g, original in zip(clipped, grads, originals):
        l2 = np.sqrt(np.sum(g * g))
        np.testing.assert_allclose(got, g * max_norm / max(l2, max_norm), rtol=1e-14)
        np.testing.assert_array_equal(g, original)
    if max_norm == 1.0:  # arrays of different norms get different factors: the direction changes
        global_clipped, _ = ref.clip_grad_norm(grads, max_norm)
        a = np.concatenate([c.ravel() for c in clipped])
        b = np.concatenate([c.ravel() for c in global_clipped])
        assert a @ b / (np.linalg.norm(a) * np.linalg.norm(b)) < 0.99
