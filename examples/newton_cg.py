"""Newton's method with Hessian-vector products and conjugate gradients (Newton-CG).

The Hessian is never formed: each Newton step solves `H p = -g` by conjugate gradients, and CG
only needs products `H v`, which `functorch_utils.hvp` gives at about the cost of two gradients.

1. A quadratic `f(x) = 1/2 x^T A x - b^T x` (A symmetric positive definite): one exact Newton
   step from anywhere lands on the closed-form minimum `x* = A^{-1} b`.
2. A smooth strictly convex non-quadratic function with a known minimum `c`,
   `f(x) = sum log cosh(M (x - c)) + lam/2 |x - c|^2`, solved by damped Newton-CG (backtracking
   line search): converges to `c` quadratically.

    python examples/newton_cg.py

Exits non-zero if a check fails.
"""

from __future__ import annotations

import sys

import torch

import functorch_utils as fu

torch.manual_seed(0)
DT = torch.float64


def conjugate_gradient(matvec, b, tol=1e-12, max_iter=200):
    """Solve matvec(x) = b for symmetric positive definite matvec."""
    x = torch.zeros_like(b)
    r = b.clone()
    p = r.clone()
    rs = r @ r
    for it in range(max_iter):
        ap = matvec(p)
        alpha = rs / (p @ ap)
        x = x + alpha * p
        r = r - alpha * ap
        rs_new = r @ r
        if rs_new.sqrt() <= tol * b.norm():
            return x, it + 1
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x, max_iter


def newton_cg(f, x, steps=20, tol=1e-12):
    for k in range(steps):
        g = fu.grad(f)(x)
        gnorm = g.norm().item()
        if gnorm <= tol:
            print(f"    step {k:2d}: f = {f(x).item():.3e}, |grad| = {gnorm:.2e}: converged")
            break
        p, iters = conjugate_gradient(lambda v, x=x: fu.hvp(f, (x,), (v,))[1], -g)
        print(
            f"    step {k:2d}: f = {f(x).item():.3e}, |grad| = {gnorm:.2e}, {iters} CG iterations"
        )
        t = 1.0  # backtracking (Armijo) line search; full steps near the minimum
        while f(x + t * p) > f(x) + 1e-4 * t * (g @ p) and t > 1e-8:
            t *= 0.5
        x = x + t * p
    return x


def main() -> int:
    failures = []
    n = 20

    # 1. quadratic: closed form
    q = torch.randn(n, n, dtype=DT)
    a = q @ q.T + n * torch.eye(n, dtype=DT)
    b = torch.randn(n, dtype=DT)

    def quadratic(x):
        return 0.5 * x @ a @ x - b @ x

    print("quadratic, one Newton-CG step from x0 = 0:")
    x0 = torch.zeros(n, dtype=DT)
    g = fu.grad(quadratic)(x0)
    p, iters = conjugate_gradient(lambda v: fu.hvp(quadratic, (x0,), (v,))[1], -g)
    x1 = x0 + p
    closed = torch.linalg.solve(a, b)
    err = (x1 - closed).abs().max().item()
    print(f"    CG iterations {iters}; max |x1 - A^-1 b| = {err:.2e}")
    if err > 1e-9:
        failures.append("quadratic")

    # the HVP against the explicit Hessian, for one direction
    v = torch.randn(n, dtype=DT)
    err_hvp = (fu.hvp(quadratic, (x0,), (v,))[1] - a @ v).abs().max().item()
    print(f"    max |hvp - A v| = {err_hvp:.2e}")
    if err_hvp > 1e-10:
        failures.append("hvp")

    # 2. non-quadratic with known minimum c
    m = torch.randn(n, n, dtype=DT)
    c = torch.randn(n, dtype=DT)
    lam = 0.1

    def logcosh(x):
        z = m @ (x - c)
        return torch.log(torch.cosh(z)).sum() + 0.5 * lam * ((x - c) ** 2).sum()

    print("log-cosh problem, damped Newton-CG from x0 = 0:")
    x = newton_cg(logcosh, torch.zeros(n, dtype=DT))
    err = (x - c).abs().max().item()
    print(f"    max |x - c| = {err:.2e} (c is the known minimum)")
    if err > 1e-8:
        failures.append("logcosh")

    print("OK" if not failures else f"FAILED: {failures}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
