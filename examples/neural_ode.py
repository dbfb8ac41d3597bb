"""A neural ODE: fixed-step RK4 in `lax.scan`, trained with `value_and_grad`, batched with `vmap`.

The state is a pytree (a dict ``{"pos": ..., "vel": ...}``), the vector field a small MLP whose
parameters are a dict, and the integrator four Runge-Kutta stages per step inside
`functorch_utils.lax.scan`, which returns the final state and the whole trajectory. Gradients
flow back through every step like through the Python loop the scan stands for.

1. A linear vector field ``dx/dt = A x``: the RK4 solution against the exact
   ``torch.linalg.matrix_exp(t A) x0``, and its gradient with respect to ``A`` against the
   gradient of the exact solution.
2. The neural ODE's gradient with respect to its parameters against central finite differences
   in float64.
3. `vmap` over a batch of initial conditions (the trajectories and the per-example gradients)
   against a Python loop.
4. A few steps of gradient descent with `value_and_grad`, fitting the neural ODE to trajectories
   of a damped oscillator: the loss must go down.

    python examples/neural_ode.py

Exits non-zero if a check fails.
"""

from __future__ import annotations

import sys

import torch

import functorch_utils as fu
from functorch_utils import lax
from functorch_utils.flatten_util import ravel_pytree
from functorch_utils.tree_util import tree_map

torch.manual_seed(0)
DT = torch.float64
T_END, STEPS = 2.0, 40


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


# ---------------------------------------------------------------------------------------------
# the integrator: RK4 over any pytree state, one `scan` step per time step


def axpy(a, x, y):
    """``y + a * x`` leaf by leaf over two states of the same structure."""
    return tree_map(lambda xi, yi: yi + a * xi, x, y)


def rk4_step(field, params, state, h: float):
    k1 = field(params, state)
    k2 = field(params, axpy(h / 2, k1, state))
    k3 = field(params, axpy(h / 2, k2, state))
    k4 = field(params, axpy(h, k3, state))
    incr = tree_map(lambda a, b, c, d: (a + 2 * b + 2 * c + d) / 6, k1, k2, k3, k4)
    return axpy(h, incr, state)


def odeint(field, params, state0, t_end: float = T_END, steps: int = STEPS):
    """Integrate ``d state / dt = field(params, state)`` from 0 to ``t_end``.

    Returns the final state and the trajectory (the state after every step, stacked on axis 0).
    """
    h = t_end / steps

    def body(state, _):
        new = rk4_step(field, params, state, h)
        return new, new

    return lax.scan(body, state0, None, length=steps)


# ---------------------------------------------------------------------------------------------
# the vector fields: a linear one with a closed-form solution, and a small MLP


def linear_field(params, state):
    x = torch.stack([state["pos"], state["vel"]], -1)
    dx = x @ params["A"].T
    return {"pos": dx[..., 0], "vel": dx[..., 1]}


def init_mlp(hidden: int = 16, dtype=torch.float32):
    return {
        "w1": torch.randn(2, hidden, dtype=dtype) / 2**0.5,
        "b1": torch.zeros(hidden, dtype=dtype),
        "w2": torch.randn(hidden, 2, dtype=dtype) * 0.1 / hidden**0.5,
        "b2": torch.zeros(2, dtype=dtype),
    }


def mlp_field(params, state):
    x = torch.stack([state["pos"], state["vel"]], -1)
    h = torch.tanh(x @ params["w1"] + params["b1"])
    dx = h @ params["w2"] + params["b2"]
    return {"pos": dx[..., 0], "vel": dx[..., 1]}


def trajectory_loss(params, state0, target):
    """Mean squared distance of the trajectory from ``target`` (a state stacked over steps)."""
    _, traj = odeint(mlp_field, params, state0)
    return sum(((traj[k] - target[k]) ** 2).mean() for k in traj)


def as_state(x: torch.Tensor):
    return {"pos": x[..., 0], "vel": x[..., 1]}


def main() -> None:
    # 1. linear field: RK4 in scan against the matrix exponential, value and gradient
    print("1. dx/dt = A x integrated by RK4 in lax.scan, against matrix_exp(t A) x0")
    a = torch.tensor([[0.0, 1.0], [-4.0, -0.5]], dtype=DT)  # a damped oscillator
    x0 = torch.tensor([1.0, 0.0], dtype=DT)
    final, traj = odeint(linear_field, {"A": a}, as_state(x0))
    exact = torch.linalg.matrix_exp(T_END * a) @ x0
    got = torch.stack([final["pos"], final["vel"]])
    check("final state vs matrix_exp", got, exact, rtol=0, atol=1e-5)
    # RK4 is fourth order: halving the step divides the error by about 2**4 = 16
    fine = odeint(linear_field, {"A": a}, as_state(x0), steps=2 * STEPS)[0]
    err_fine = (torch.stack([fine["pos"], fine["vel"]]) - exact).abs().max()
    ratio = ((got - exact).abs().max() / err_fine).item()
    status = "ok" if 12 < ratio < 20 else "FAILED"
    print(f"    check error ratio for half the step: {ratio:.1f} (want about 16) {status}")
    if not 12 < ratio < 20:
        raise AssertionError(f"RK4 order: error ratio {ratio:.2f} for half the step, want ~16")
    times = torch.arange(1, STEPS + 1, dtype=DT) * (T_END / STEPS)
    exact_traj = torch.linalg.matrix_exp(times[:, None, None] * a) @ x0
    check(
        "trajectory vs matrix_exp", torch.stack([traj["pos"], traj["vel"]], -1), exact_traj, 0, 1e-5
    )

    def final_pos_rk4(a_):
        return odeint(linear_field, {"A": a_}, as_state(x0))[0]["pos"]

    def final_pos_exact(a_):
        return (torch.linalg.matrix_exp(T_END * a_) @ x0)[0]

    check(
        "d final pos / dA vs gradient of matrix_exp",
        fu.grad(final_pos_rk4)(a),
        fu.grad(final_pos_exact)(a),
        rtol=0,
        atol=1e-5,
    )

    # 2. neural field: gradient through the scan against central finite differences in float64
    print("2. gradient of the neural ODE's loss against finite differences (float64)")
    params64 = init_mlp(hidden=8, dtype=DT)
    x0s = torch.randn(4, 2, dtype=DT)
    state0 = as_state(x0s)  # four initial conditions at once: the fields broadcast over a batch
    exact_b = torch.linalg.matrix_exp(times[:, None, None] * a) @ x0s.T  # (steps, 2, examples)
    tgt_steps = {"pos": exact_b[:, 0], "vel": exact_b[:, 1]}  # (steps, examples): as scan stacks
    target = {k: v.T.contiguous() for k, v in tgt_steps.items()}  # (examples, steps): for vmap
    grads = fu.grad(trajectory_loss)(params64, state0, tgt_steps)
    flat, unravel = ravel_pytree(params64)
    fd = fd_gradient(lambda v: trajectory_loss(unravel(v), state0, tgt_steps), flat)
    print(f"    {flat.numel()} parameters, loss {trajectory_loss(params64, state0, tgt_steps):.4f}")
    check("grad vs finite differences", ravel_pytree(grads)[0], fd, rtol=1e-6, atol=1e-9)

    # 3. vmap over initial conditions: each example is one unbatched state
    print("3. vmap over initial conditions against a Python loop")
    vmap_solve = fu.vmap(lambda p, s: odeint(mlp_field, p, s), in_axes=(None, 0))
    final_b, traj_b = vmap_solve(params64, state0)
    looped = [odeint(mlp_field, params64, as_state(x0)) for x0 in x0s]  # the slow way
    for k in ("pos", "vel"):
        check(f"final {k}", final_b[k], torch.stack([f[k] for f, _ in looped]), 1e-12, 1e-12)
        check(f"trajectory {k}", traj_b[k], torch.stack([t[k] for _, t in looped]), 1e-12, 1e-12)
    per_example = fu.vmap(fu.grad(trajectory_loss), in_axes=(None, 0, 0))(params64, state0, target)
    looped_grads = [
        fu.grad(trajectory_loss)(params64, as_state(x0s[i]), {k: v[i] for k, v in target.items()})
        for i in range(x0s.shape[0])
    ]
    for k in params64:
        check(
            f"per-example d loss / d {k}",
            per_example[k],
            torch.stack([g[k] for g in looped_grads]),
            1e-10,
            1e-12,
        )

    # 4. training: plain gradient descent with value_and_grad, in float32
    print("4. fitting the neural ODE to damped-oscillator trajectories with value_and_grad")
    params = init_mlp(hidden=16)
    state0_32 = tree_map(lambda t: t.float(), state0)
    tgt_32 = tree_map(lambda t: t.float(), tgt_steps)
    step = fu.value_and_grad(trajectory_loss)
    lr, losses = 0.1, []
    for it in range(30):
        value, g = step(params, state0_32, tgt_32)
        losses.append(value.item())
        params = tree_map(lambda p, gp: p - lr * gp, params, g)
        if it % 10 == 0:
            print(f"    step {it:2d}: loss {value.item():.5f}")
    final_loss = trajectory_loss(params, state0_32, tgt_32).item()
    print(f"    after {len(losses)} steps: loss {final_loss:.5f} (from {losses[0]:.5f})")
    if not final_loss < 0.25 * losses[0]:
        raise AssertionError(f"training: loss {final_loss:.4f} not below 1/4 of {losses[0]:.4f}")
    print("    check loss down by a factor 4 or more: ok")

    print("all checks passed")


if __name__ == "__main__":
    try:
        main()
    except AssertionError as e:
        print(f"CHECK FAILED: {e}", file=sys.stderr)
        sys.exit(1)
