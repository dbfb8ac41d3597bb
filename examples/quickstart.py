"""Quickstart: gradients, per-sample gradients, batched Jacobians, a Hessian and an HVP.

Every result is printed and checked against central finite differences computed in float64
(and the per-sample gradients also against a Python loop). The script exits non-zero if a check
fails. It runs in a few seconds on a CPU:

    python examples/quickstart.py
"""

from __future__ import annotations

import sys

import torch

import functorch_utils as fu
from functorch_utils.flatten_util import ravel_pytree
from functorch_utils.tree_util import tree_map

# JAX's vmap: pytree in_axes, named axes, composes with every transform
vmap = fu.vmap

torch.manual_seed(0)


# ---------------------------------------------------------------------------------------------
# checking helpers: central differences in float64 and an explicit tolerance


def check(name: str, got: torch.Tensor, want: torch.Tensor, rtol: float, atol: float) -> None:
    """Print the error of ``got`` against ``want`` and fail loudly if it is over tolerance."""
    got64, want64 = got.detach().double(), want.detach().double()
    err = (got64 - want64).abs().max().item()
    tol = atol + rtol * want64.abs().max().item()
    status = "ok" if err <= tol else "FAILED"
    print(f"    check {name}: max |error| = {err:.2e} (tolerance {tol:.2e}) {status}")
    if not err <= tol:  # not `assert`: the check must also run under `python -O`
        raise AssertionError(f"{name}: max |error| {err:.3e} > tolerance {tol:.3e}")


def fd_gradient(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Gradient of scalar ``f`` at the 1-d float64 vector ``x`` by central differences."""
    g = torch.empty_like(x)
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = h
        g[i] = (f(x + e) - f(x - e)) / (2 * h)
    return g


def fd_jacobian(f, x: torch.Tensor, h: float = 1e-6) -> torch.Tensor:
    """Jacobian (out.shape + x.shape) of ``f`` at the 1-d float64 vector ``x``."""
    cols = []
    for i in range(x.numel()):
        e = torch.zeros_like(x)
        e[i] = h
        cols.append((f(x + e) - f(x - e)) / (2 * h))
    return torch.stack(cols, dim=-1)


def fd_hessian(f, x: torch.Tensor, h: float = 1e-4) -> torch.Tensor:
    """Hessian of scalar ``f`` at the 1-d float64 vector ``x`` from function values only."""
    n = x.numel()
    H = torch.empty(n, n, dtype=x.dtype)
    eye = torch.eye(n, dtype=x.dtype) * h
    for i in range(n):
        for j in range(n):
            ei, ej = eye[i], eye[j]
            H[i, j] = (f(x + ei + ej) - f(x + ei - ej) - f(x - ei + ej) + f(x - ei - ej)) / (
                4 * h * h
            )
    return H


def as64(tree):
    return tree_map(lambda t: t.detach().double(), tree)


# ---------------------------------------------------------------------------------------------
# a tiny MLP whose parameters are a dict (any pytree works: dicts, tuples, dataclasses, ...)


def init_params(n_in: int = 3, n_hidden: int = 8, n_out: int = 2) -> dict[str, torch.Tensor]:
    return {
        "w1": torch.randn(n_in, n_hidden) / n_in**0.5,
        "b1": torch.zeros(n_hidden),
        "w2": torch.randn(n_hidden, n_out) / n_hidden**0.5,
        "b2": torch.zeros(n_out),
    }


def net(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """One input ``x`` of shape (3,) (or a batch (B, 3)) to outputs of shape (2,) (or (B, 2))."""
    h = torch.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Mean squared error; works for one example or a batch."""
    return ((net(params, x) - y) ** 2).sum(-1).mean()


def main() -> None:
    params = init_params()
    B = 6
    xs = torch.randn(B, 3)
    ys = torch.randn(B, 2)

    # 1. Gradient of a pytree-parameterised loss: the gradient has the structure of `params`.
    print("1. grad of the loss with respect to a dict of parameters")
    grads = fu.grad(loss)(params, xs, ys)
    for k, g in grads.items():
        print(f"    d loss / d {k}: shape {tuple(g.shape)}, norm {g.norm():.4f}")
    flat64, unravel = ravel_pytree(as64(params))
    fd = fd_gradient(lambda v: loss(unravel(v), xs.double(), ys.double()), flat64)
    check("grad vs finite differences", ravel_pytree(grads)[0], fd, rtol=1e-4, atol=1e-6)

    # 2. Per-sample gradients: vmap the single-example gradient over the batch, not the params.
    print("2. per-sample gradients with vmap(grad(loss), in_axes=(None, 0, 0))")
    per_sample = vmap(fu.grad(loss), (None, 0, 0))(params, xs, ys)
    for k, g in per_sample.items():
        print(f"    {k}: shape {tuple(g.shape)} (batch first)")
    looped = [fu.grad(loss)(params, xs[i], ys[i]) for i in range(B)]  # the slow way
    for k in params:
        check(
            f"per-sample d/d {k} vs Python loop",
            per_sample[k],
            torch.stack([g[k] for g in looped]),
            rtol=1e-5,
            atol=1e-6,
        )
    fd_per_sample = torch.stack(
        [
            fd_gradient(lambda v, i=i: loss(unravel(v), xs[i].double(), ys[i].double()), flat64)
            for i in range(B)
        ]
    )
    got = torch.stack([ravel_pytree({k: g[i] for k, g in per_sample.items()})[0] for i in range(B)])
    check("per-sample grads vs finite differences", got, fd_per_sample, rtol=1e-4, atol=1e-6)
    # The mean of the per-sample gradients is the batch gradient.
    mean = tree_map(lambda g: g.mean(0), per_sample)
    check(
        "mean per-sample grad vs batch grad",
        ravel_pytree(mean)[0],
        ravel_pytree(grads)[0],
        1e-5,
        1e-6,
    )

    # 3. A batch of Jacobians of the network's output with respect to its input.
    print("3. batched input Jacobians with vmap(jacrev(net, argnums=1), in_axes=(None, 0))")
    jacs = vmap(fu.jacrev(net, argnums=1), (None, 0))(params, xs)
    print(f"    jacobians: shape {tuple(jacs.shape)} = (batch, out, in)")
    p64 = as64(params)
    fd_jacs = torch.stack([fd_jacobian(lambda x: net(p64, x), xs[i].double()) for i in range(B)])
    check("jacobians vs finite differences", jacs, fd_jacs, rtol=1e-4, atol=1e-6)
    jacs_fwd = vmap(fu.jacfwd(net, argnums=1), (None, 0))(params, xs)
    check("jacrev vs jacfwd", jacs, jacs_fwd, 1e-5, 1e-6)

    # 4. A Hessian: second derivative of one example's loss with respect to its input.
    print("4. hessian of the loss with respect to one input")
    H = fu.hessian(loss, argnums=1)(params, xs[0], ys[0])
    print(f"    hessian: shape {tuple(H.shape)}\n{H}")
    fd_H = fd_hessian(lambda x: loss(p64, x, ys[0].double()), xs[0].double())
    check("hessian vs finite differences", H, fd_H, rtol=1e-4, atol=1e-5)
    check("hessian is symmetric", H, H.T, 1e-5, 1e-6)

    # 5. A Hessian-vector product with respect to the parameters, without forming the Hessian:
    #    forward-over-reverse, jvp of the gradient. The tangent is a pytree like `params`
    #    (same structure, shapes and dtypes).
    print("5. Hessian-vector product jvp(grad(loss), (params,), (v,))")
    v = tree_map(torch.randn_like, params)

    def grad_params(p):
        return fu.grad(loss)(p, xs, ys)

    g, hv = fu.jvp(grad_params, (params,), (v,))
    for k, t in hv.items():
        print(f"    (H v)[{k}]: shape {tuple(t.shape)}, norm {t.norm():.4f}")
    v64, h = ravel_pytree(as64(v))[0], 1e-5

    def grad64(vec):
        return ravel_pytree(fu.grad(loss)(unravel(vec), xs.double(), ys.double()))[0]

    fd_hv = (grad64(flat64 + h * v64) - grad64(flat64 - h * v64)) / (2 * h)
    check("hvp vs finite differences of the gradient", ravel_pytree(hv)[0], fd_hv, 1e-4, 1e-6)
    check(
        "jvp primal output is the gradient", ravel_pytree(g)[0], ravel_pytree(grads)[0], 1e-6, 1e-7
    )

    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"CHECK FAILED: {e}", file=sys.stderr)
        sys.exit(1)
