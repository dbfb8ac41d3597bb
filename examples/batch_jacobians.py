"""Batched Jacobians of a small network: `vmap(jacrev(f))` and `vmap(jacfwd(f))`.

For a network `f: R^6 -> R^4` and a batch of 16 inputs, the Jacobian of every example at once,
in reverse mode (`jacrev`: one VJP per output, best for few outputs) and forward mode (`jacfwd`:
one JVP per input, best for few inputs). Both are checked against a loop of
`torch.autograd.functional.jacobian` and, for one example, against central finite differences.
Also the Jacobian of the outputs with respect to the *parameters*, per example, with
`functionalize`.

    python examples/batch_jacobians.py

Exits non-zero if a check fails.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
from torch import nn

import functorch_utils as fu
from functorch_utils.nn import functionalize

torch.manual_seed(0)


def main() -> int:
    net = nn.Sequential(nn.Linear(6, 32), nn.Tanh(), nn.Linear(32, 32), nn.GELU(), nn.Linear(32, 4))
    net = net.double()
    params, apply = functionalize(net)
    xs = torch.randn(16, 6, dtype=torch.float64)

    def f(x):  # one example in, one example out
        return apply(params, x)

    failures = []

    def check(name, got, want, tol):
        err = (got - want).abs().max().item()
        status = "ok" if err <= tol else "FAILED"
        print(f"  {name}: shape {tuple(got.shape)}, max |error| = {err:.2e} {status}")
        if err > tol:
            failures.append(name)

    def timed(fn):  # (result, median seconds of 5 calls after 2 warm-up calls)
        fn()
        fn()
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            out = fn()
            times.append(time.perf_counter() - t0)
        return out, statistics.median(times)

    j_rev, t_rev = timed(lambda: fu.vmap(fu.jacrev(f))(xs))
    j_fwd, t_fwd = timed(lambda: fu.vmap(fu.jacfwd(f))(xs))
    loop, t_loop = timed(
        lambda: torch.stack([torch.autograd.functional.jacobian(net, x) for x in xs])
    )
    print(
        f"vmap(jacrev) {t_rev * 1e3:.1f} ms, vmap(jacfwd) {t_fwd * 1e3:.1f} ms, "
        f"loop {t_loop * 1e3:.1f} ms (medians of 5 calls after 2 warm-up calls)"
    )

    check("vmap(jacrev) vs loop", j_rev, loop, 1e-12)
    check("vmap(jacfwd) vs loop", j_fwd, loop, 1e-12)

    # central differences for example 0
    h = 1e-6
    x0 = xs[0]
    cols = []
    for i in range(x0.numel()):
        e = torch.zeros_like(x0)
        e[i] = h
        cols.append((f(x0 + e) - f(x0 - e)) / (2 * h))
    check("jacrev vs finite differences (example 0)", j_rev[0], torch.stack(cols, -1), 1e-8)

    # per-example Jacobian with respect to the parameters: a dict of (B, 4, *param.shape)
    j_params = fu.vmap(fu.jacrev(apply), in_axes=(None, 0))(params, xs)
    w = j_params["4.weight"]  # d out / d (last layer's weight)
    hidden = nn.Sequential(*list(net)[:4])(xs).detach()  # input to the last layer
    # out_k = sum_j W[k, j] h_j + b_k, so d out_k / d W[k', j] = delta(k, k') h_j
    want = torch.einsum("kl,bj->bklj", torch.eye(4, dtype=torch.float64), hidden)
    check("vmap(jacrev) w.r.t. the last layer's weight vs closed form", w, want, 1e-12)

    print("OK" if not failures else f"FAILED: {failures}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
