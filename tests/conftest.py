"""Shared fixtures: the reference module (from the solution notebooks) and random RNN problems."""

from __future__ import annotations

import os

import numpy as np
import pytest

from autograder.reference import load_reference
from autograder.secret import PUBLIC_EXAMPLE_SECRET, SECRET_ENV

# The suite grades with the kit's public example secret, whatever this shell or checkout holds (CI has none); its
# subprocesses inherit it. Tests of a missing or different secret set their own.
os.environ[SECRET_ENV] = PUBLIC_EXAMPLE_SECRET


@pytest.fixture(scope="session")
def ref():
    return load_reference()


def rnn_problem(seed: int, N: int, T: int, D: int, H: int, scale: float = 0.5) -> dict:
    """A random float64 RNN problem with a non-zero h0 and direct gradients dh on every step."""
    rng = np.random.default_rng(seed)
    return {
        "x": rng.standard_normal((N, T, D)),
        "h0": rng.standard_normal((N, H)),
        "Wx": rng.standard_normal((D, H)) * scale,
        "Wh": rng.standard_normal((H, H)) * scale / np.sqrt(H),
        "b": rng.standard_normal(H) * 0.1,
        "dh": rng.standard_normal((N, T, H)),
    }


# (N, T, D, H): N >= 2, D != H, T = 1 and T > 10
RNN_SHAPES = [(2, 1, 3, 4), (3, 2, 5, 2), (2, 12, 4, 6), (4, 17, 6, 3)]
