"""On demand (not part of the tests): the reference numpy BPTT against torch autograd on the CPU, at course sizes.

    .venv/bin/python benchmarks/bench_reference.py [--repeats 30]

Both run interleaved in one process on the same inputs (float64); the script prints the median time of each and
the ratio reference / torch (issue 6's target: at most 1.5).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from autograder.reference import load_reference

SIZES = [(4, 20, 8, 16), (32, 50, 16, 64), (64, 100, 32, 128)]  # (N, T, D, H)


def torch_bptt(x, h0, Wx, Wh, b, dh):
    params = [torch.tensor(a, requires_grad=True) for a in (x, h0, Wx, Wh, b)]
    xt, h, Wxt, Wht, bt = params
    states = []
    for t in range(x.shape[1]):
        h = torch.tanh(xt[:, t] @ Wxt + h @ Wht + bt)
        states.append(h)
    torch.stack(states, dim=1).backward(torch.tensor(dh))
    return [p.grad for p in params]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    torch.set_num_threads(1)
    ref = load_reference()
    print(f"torch {torch.__version__}, numpy {np.__version__}, 1 torch thread; medians of {args.repeats} runs")
    print(f"{'N, T, D, H':>18}  {'reference (ms)':>14}  {'torch (ms)':>10}  {'ratio':>6}")
    for N, T, D, H in SIZES:
        rng = np.random.default_rng(0)
        x, h0 = rng.standard_normal((N, T, D)), rng.standard_normal((N, H))
        Wx, Wh = rng.standard_normal((D, H)) * 0.3, rng.standard_normal((H, H)) / np.sqrt(H)
        b, dh = rng.standard_normal(H), rng.standard_normal((N, T, H))
        numpy_times, torch_times = [], []
        for _ in range(args.repeats):  # interleaved, so machine noise hits both alike
            start = time.perf_counter()
            _, cache = ref.rnn_forward(x, h0, Wx, Wh, b)
            ref.rnn_backward(dh, cache)
            numpy_times.append(time.perf_counter() - start)
            start = time.perf_counter()
            torch_bptt(x, h0, Wx, Wh, b, dh)
            torch_times.append(time.perf_counter() - start)
        a, t = statistics.median(numpy_times), statistics.median(torch_times)
        print(f"{str((N, T, D, H)):>18}  {a * 1e3:14.2f}  {t * 1e3:10.2f}  {a / t:6.2f}")


if __name__ == "__main__":
    main()
