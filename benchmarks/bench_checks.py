"""False-failure and catch rates of derivative checkers on one corpus.

The same correct functions and planted bugs (custom rules a little wrong) go through
``functorch_utils.testing.check_grads`` (central and Richardson references),
``torch.autograd.gradcheck`` with its defaults (float64 and float32 inputs) and, when jax is
importable, ``jax.test_util.check_grads`` (its defaults). Each cell is the fraction of draws
flagged: for correct functions that is the false-failure rate (want 0), for planted bugs the catch
rate (want 1). Inputs: 1-50 element vectors, N(0, 2^2), one draw per seed.

    .venv/bin/python benchmarks/bench_checks.py [--seeds 100]
"""

from __future__ import annotations

import argparse
import warnings
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from functorch_utils.testing import NonDifferentiablePointError, check_grads

# ---------------------------------------------------------------------------------------------
# corpus: (name, f(x) in torch, f(x) in jax or None, factor on the derivative); factor 1 is correct


def _torch_fun(kind: str, factor: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """sin / tanh-MLP / logsumexp whose backward and forward rules scale the derivative."""

    class Scaled(torch.autograd.Function):
        @staticmethod
        def forward(x: torch.Tensor) -> torch.Tensor:
            return _torch_base(kind, x)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.save_for_backward(inputs[0])
            ctx.save_for_forward(inputs[0])

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return factor * _torch_deriv(kind, x) * g

        @staticmethod
        def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return factor * _torch_deriv(kind, x) * t

    def f(x: torch.Tensor) -> torch.Tensor:
        return Scaled.apply(x)

    return f


def _torch_base(kind: str, x: torch.Tensor) -> torch.Tensor:
    if kind == "sin":
        return torch.sin(x)
    if kind == "tanh_mlp":
        w = torch.tensor([0.5, 1.0, 1.5], dtype=x.dtype)
        return torch.tanh(x[:, None] * w).sum(-1) ** 2
    return torch.logsumexp(torch.stack([x, 0.5 * x**2]), 0)


def _torch_deriv(kind: str, x: torch.Tensor) -> torch.Tensor:
    """The (elementwise) derivative of ``_torch_base``, written out: no nested AD in the rules."""
    if kind == "sin":
        return torch.cos(x)
    if kind == "tanh_mlp":
        w = torch.tensor([0.5, 1.0, 1.5], dtype=x.dtype)
        th = torch.tanh(x[:, None] * w)
        return 2 * th.sum(-1) * ((1 - th**2) * w).sum(-1)
    p = torch.softmax(torch.stack([x, 0.5 * x**2]), 0)
    return p[0] + p[1] * x


CASES = [
    ("correct", 1.0, "float64"),
    ("correct", 1.0, "float32"),
    ("0.1% off", 1.001, "float64"),
    ("1% off", 1.01, "float32"),
    ("0.1% off", 1.001, "float32"),
    ("sign flip", -1.0, "float64"),
    ("sign flip", -1.0, "float32"),
]
KINDS = ["sin", "tanh_mlp", "logsumexp"]


def _draw(seed: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 51, (), generator=gen))
    return (2 * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype)


def ours(reference: str) -> Callable[[Callable[..., Any], torch.Tensor, int], bool]:
    def run(f: Callable[..., Any], x: torch.Tensor, seed: int) -> bool:
        try:
            check_grads(f, (x,), seed=seed, reference=reference)
        except NonDifferentiablePointError:
            return True
        except AssertionError:
            return True
        return False

    return run


def gradcheck(f: Callable[..., Any], x: torch.Tensor, seed: int) -> bool:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # float32 inputs warn
        try:
            ok = torch.autograd.gradcheck(
                f, (x.clone().requires_grad_(),), raise_exception=False, check_forward_ad=True
            )
        except Exception:
            return True
    return not ok


def _jax_runner() -> Callable[[Callable[..., Any], torch.Tensor, int], bool] | None:
    try:
        import jax
        import jax.numpy as jnp
        from jax.test_util import check_grads as jax_check_grads
    except ImportError:
        return None
    jax.config.update("jax_enable_x64", True)

    def base(kind: str, x: Any) -> Any:
        if kind == "sin":
            return jnp.sin(x)
        if kind == "tanh_mlp":
            w = jnp.asarray([0.5, 1.0, 1.5], dtype=x.dtype)
            return (jnp.tanh(x[:, None] * w).sum(-1)) ** 2
        return jax.nn.logsumexp(jnp.stack([x, 0.5 * x**2]), 0)

    def make(kind: str, factor: float) -> Any:
        @jax.custom_jvp
        def f(x: Any) -> Any:
            return base(kind, x)

        @f.defjvp
        def rule(primals: Any, tangents: Any) -> Any:
            (x,), (t,) = primals, tangents
            y, jt = jax.jvp(lambda z: base(kind, z), (x,), (t,))
            return y, factor * jt

        return f

    def run(f: Callable[..., Any], x: torch.Tensor, seed: int) -> bool:
        kind, factor = f.__bench__  # type: ignore[attr-defined]
        jf = make(kind, factor)
        try:
            jax_check_grads(jf, (jnp.asarray(x.numpy()),), order=1, modes=("fwd", "rev"))
        except AssertionError:
            return True
        return False

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=100)
    args = parser.parse_args()
    checkers: dict[str, Callable[[Callable[..., Any], torch.Tensor, int], bool]] = {
        "ours central": ours("central"),
        "ours richardson": ours("richardson"),
        "gradcheck": gradcheck,
    }
    jax_run = _jax_runner()
    if jax_run is not None:
        checkers["jax check_grads"] = jax_run
    header = f"| case | dtype | {' | '.join(checkers)} |"
    print(
        f"{args.seeds} seeds x {len(KINDS)} functions ({', '.join(KINDS)}) per row; "
        "fraction flagged (correct rows: false failures; others: catch rate)"
    )
    if jax_run is None:
        print("(jax not importable: its column is skipped)")
    print(header)
    print("|" + "---|" * (2 + len(checkers)))
    for case, factor, dt in CASES:
        dtype = getattr(torch, dt)
        rates = []
        for run in checkers.values():
            flagged = 0
            total = 0
            for kind in KINDS:
                f = _torch_fun(kind, factor)
                f.__bench__ = (kind, factor)  # type: ignore[attr-defined]
                for seed in range(args.seeds):
                    flagged += run(f, _draw(seed, dtype), seed)
                    total += 1
            rates.append(flagged / total)
        print(f"| {case} | {dt} | " + " | ".join(f"{r:.2f}" for r in rates) + " |")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
