"""``taylor_test``: convergence rate of the Taylor remainder, no step size to choose.

Why it works, and the rate that decides: NOTE [taylor test] below.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

import functorch_utils
from functorch_utils._errors import fun_name
from functorch_utils._pytree import leaf_names, partition

from ._numerics import EPS64, eps_of, highest_matmul_precision, norm, ref_dtype, vec
from ._problem import is_float_tensor
from ._report import DerivativeCheckError

__all__ = ["TaylorResult", "taylor_test"]

Tensor = torch.Tensor
_FlatFn = Callable[..., tuple[Tensor, ...]]


@dataclass(frozen=True)
class TaylorResult:
    """The outcome of :func:`taylor_test`.

    Attributes:
        steps: The steps ``h`` of the ladder (halving).
        residuals: The Taylor remainder at each step.
        rates: ``log2(r(h) / r(h/2))`` between consecutive usable rungs.
        median_rate: The median of ``rates`` (``inf`` when the remainder is at rounding level).
        expected_rate: ``order + 1``.
        min_rate: The median rate needed to pass.
        passed: Whether ``median_rate >= min_rate``.

    Example:
        >>> import torch
        >>> from functorch_utils.testing import taylor_test
        >>> res = taylor_test(lambda x: torch.sin(x).sum(), torch.ones(3, dtype=torch.float64))
        >>> res.passed, res.expected_rate, round(res.median_rate)
        (True, 2, 2)
    """

    steps: tuple[float, ...]
    residuals: tuple[float, ...]
    rates: tuple[float, ...]
    median_rate: float
    expected_rate: int
    min_rate: float
    passed: bool

    def __str__(self) -> str:
        rows = [f"  h = {h:.3g}: remainder {r:.3g}" for h, r in zip(self.steps, self.residuals)]
        rates = ", ".join(f"{q:.2f}" for q in self.rates) or "none (remainder at rounding level)"
        return "\n".join([*rows, f"  rates: {rates}; median {self.median_rate:.2f}"])


TaylorResult.__module__ = "functorch_utils.testing"


@dataclass
class _Problem:
    """``f`` as a function of the floating tensor leaves of ``x``, along the direction ``vs``."""

    call: str
    g: _FlatFn  # floating leaves of x -> floating tensor leaves of f's output
    xs: tuple[Tensor, ...]
    names: list[str]
    order: int
    use_rev: bool = False
    vs: tuple[Tensor, ...] = ()


def _flat(
    call: str, f: Callable[[Any], Any], x: Any
) -> tuple[_FlatFn, tuple[Tensor, ...], list[str]]:
    picked, part = partition(x, is_float_tensor)
    if not picked:
        raise ValueError(
            f"{call}: x has no floating-point tensor leaves; expected at least one, got none."
        )
    names = leaf_names(x, "x")

    def g(*zs: Tensor) -> tuple[Tensor, ...]:
        outs, _ = partition(f(part.combine(list(zs))), is_float_tensor)
        return tuple(outs)

    return g, tuple(t.detach() for t in picked), [names[k] for k in part.picked]


def _given_direction(x: Any, v: Any, xs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    _, part = partition(x, is_float_tensor)
    leaves = [v] if part.spec is None else part.spec.flatten_up_to(v)
    return tuple(torch.as_tensor(leaves[k]).to(t.dtype) for k, t in zip(part.picked, xs))


def _random_direction(xs: tuple[Tensor, ...], seed: int) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    vs64 = [torch.randn(t.shape, dtype=torch.float64, generator=gen) for t in xs]
    total = math.sqrt(sum(float((w**2).sum()) for w in vs64)) or 1.0
    return tuple((w / total).to(t.dtype) for w, t in zip(vs64, xs))


def _along_gradient(p: _Problem) -> tuple[Tensor, ...]:
    """The unit direction along the computed gradient, where a wrong gradient shows most."""
    out, fn = functorch_utils.vjp(p.g, *p.xs)
    raw = fn(tuple(torch.ones_like(o) for o in out))
    cts = [torch.zeros_like(t) if c is None else c for c, t in zip(raw, p.xs)]
    total = math.sqrt(sum(float((c.double() ** 2).sum()) for c in cts))
    if not (math.isfinite(total) and total > 0):
        return p.vs
    return tuple((c.double() / total).to(t.dtype) for c, t in zip(cts, p.xs))


def _ladder(call: str, xs: tuple[Tensor, ...], steps: Sequence[float] | None) -> tuple[float, ...]:
    scale = max(1.0, *(float(t.abs().max()) for t in xs if t.numel()))
    if steps is None:
        return tuple(scale * 2.0**-k for k in range(1, 17))
    hs = tuple(float(h) for h in steps)
    if len(hs) < 3 or any(not (h > 0) for h in hs):
        raise ValueError(
            f"{call}: steps must be at least three positive numbers; expected e.g. "
            f"[0.5, 0.25, 0.125], got {steps!r}."
        )
    return hs


# ---------------------------------------------------------------------------------------------
# The Taylor terms: f(x) and the directional derivatives D^j f(x)[v, ..., v]


def _directional(h: _FlatFn, vs: tuple[Tensor, ...], use_rev: bool) -> _FlatFn:
    """``z -> D h(z)[vs]``: a VJP with ones dotted with ``vs`` (scalar h), or a JVP along ``vs``."""
    if use_rev:

        def d_rev(*zs: Tensor) -> tuple[Tensor, ...]:
            out, fn = functorch_utils.vjp(h, *zs)
            cts = fn(tuple(torch.ones_like(o) for o in out))
            terms = ((c * w).sum() for c, w in zip(cts, vs) if c is not None)
            return (sum(terms, torch.zeros((), dtype=out[0].dtype)),)

        return d_rev

    def d_fwd(*zs: Tensor) -> tuple[Tensor, ...]:
        _, tout = functorch_utils.jvp(h, zs, vs)
        return tuple(tout)

    return d_fwd


def _derivative_terms(p: _Problem, xs: tuple[Tensor, ...], vs: tuple[Tensor, ...]) -> list[Tensor]:
    """``D^j f(x)[v, ..., v]`` for ``j = 1..order``, each a flat vector (a scalar in rev mode)."""
    terms, h = [], p.g
    for _ in range(p.order):
        h = _directional(h, vs, p.use_rev)
        t = vec(h(*xs)).reshape(-1)
        terms.append(t.sum().reshape(1) if p.use_rev else t)
    return terms


def _float64_point(
    p: _Problem, f0: Tensor
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...], Tensor] | None:
    """``(xs64, vs64, f(xs64))`` when ``f`` accepts float64 inputs, else None."""
    xs64 = tuple(t.to(ref_dtype(t.dtype)) for t in p.xs)
    vs64 = tuple(w.to(t.dtype) for w, t in zip(p.vs, xs64))
    try:
        outs = p.g(*xs64)
    except Exception:  # not dtype-polymorphic
        return None
    base = vec(outs)
    wide = (torch.float64, torch.complex128)
    if base.shape != f0.shape or not all(o.dtype in wide for o in outs):
        return None
    return xs64, vs64, base


def _term_errors(p: _Problem, terms: list[Tensor], point64: tuple[Any, ...] | None) -> list[float]:
    """Rounding of each derivative term: eps-based, plus its distance to the float64 terms.

    A wrong rule is wrong in both dtypes, so the distance is only rounding.
    """
    eps_d = max(eps_of(t.dtype) for t in p.xs)
    errs = [10 * eps_d * norm(t) for t in terms]
    if point64 is None or eps_d <= EPS64:
        return errs
    try:
        terms64 = _derivative_terms(p, point64[0], point64[1])
    except Exception:  # float64 derivatives unavailable: keep the eps-based estimate
        return errs
    return [e + 10 * norm(t - t64) for e, t, t64 in zip(errs, terms, terms64)]


# ---------------------------------------------------------------------------------------------
# The remainders along the ladder, and the verdict
#
# NOTE [taylor test]
# With the derivatives right, r(h) = |f(x+hv) - sum_{j<=k} h^j/j! D^j f(x)[v,...,v]| shrinks like
# h^(k+1); a derivative wrong by a relative d leaves a term d*h^k/k! |D^k|, so the rate drops to k
# once h is small enough. The median of the rates over a ladder of halving steps separates the two
# (docs/testing.md, "The numbers": Taylor rate; median >= 1.8 for k = 1 separates correct from
# 3 %-wrong gradients). Rungs whose remainder is at the rounding floor are left out; if every rung
# is there, f is a polynomial of degree <= k along v and the test passes. f is evaluated in
# float64 when it can be (inputs upcast); the derivatives run in the input dtype.


def _remainders(g: _FlatFn, xs: tuple[Tensor, ...], vs: tuple[Tensor, ...], f0: Tensor,
                terms: list[Tensor], errs: list[float], hs: tuple[float, ...],
                eps_ref: float) -> tuple[list[float], list[float]]:  # fmt: skip
    """The remainder at each step, and its rounding floor."""
    f_norm = norm(f0)
    residuals, floors = [], []
    for h in hs:
        fh = vec(g(*(a + h * w for a, w in zip(xs, vs))))
        approx, size = f0.clone(), 0.0
        for j, (t, e) in enumerate(zip(terms, errs), start=1):
            c = h**j / math.factorial(j)
            approx = approx + c * t
            size += c * e
        residuals.append(norm(fh - approx))
        floors.append(100 * eps_ref * max(f_norm, norm(fh)) + size)
    return residuals, floors


def _result(hs: tuple[float, ...], residuals: list[float], floors: list[float], order: int,
            min_rate: float) -> TaylorResult:  # fmt: skip
    usable = [k for k in range(len(hs)) if residuals[k] > floors[k]]
    rates = [
        math.log2(residuals[a] / residuals[b]) / math.log2(hs[a] / hs[b])
        for a, b in itertools.pairwise(usable)
    ]
    median = statistics.median(rates) if rates else math.inf
    if len(usable) == 1:  # a single rung above the floor: no rate; trust the floor
        median = math.inf
    return TaylorResult(
        steps=hs,
        residuals=tuple(residuals),
        rates=tuple(rates),
        median_rate=median,
        expected_rate=order + 1,
        min_rate=min_rate,
        passed=median >= min_rate,
    )


def _run(
    p: _Problem, v: Any, x: Any, seed: int, mode: str, hs: tuple[float, ...]
) -> tuple[list[float], list[float]]:
    """Directions, terms and remainders (at "highest" matmul precision)."""
    f0_d = p.g(*p.xs)
    size = sum(o.numel() for o in f0_d)
    if mode == "rev" and size != 1:
        raise ValueError(
            f"{p.call}: mode='rev' needs a scalar output; expected one element, got {size}. "
            "Use mode='fwd'."
        )
    p.use_rev = mode == "rev" or (mode == "auto" and size == 1)
    p.vs = _random_direction(p.xs, seed) if v is None else _given_direction(x, v, p.xs)
    if v is None and p.use_rev and p.order == 1:
        p.vs = _along_gradient(p)
    f0 = vec(f0_d)
    terms = _derivative_terms(p, p.xs, p.vs)
    point64 = _float64_point(p, f0)
    errs = _term_errors(p, terms, point64)
    if point64 is None:
        eps_ref = max(eps_of(t.dtype) for t in p.xs)
        return _remainders(p.g, p.xs, p.vs, f0, terms, errs, hs, eps_ref)
    xs64, vs64, f0_64 = point64
    return _remainders(p.g, xs64, vs64, f0_64, terms, errs, hs, EPS64)


def taylor_test(
    f: Callable[[Any], Any],
    x: Any,
    v: Any = None,
    order: int = 1,
    *,
    steps: Sequence[float] | None = None,
    min_rate: float | None = None,
    mode: str = "auto",
    seed: int = 0,
) -> TaylorResult:
    """Checks the derivatives of ``f`` at ``x`` by the convergence rate of the Taylor remainder.

    ``r(h) = |f(x + h v) - sum_{j <= order} h^j / j! D^j f(x)[v, ..., v]|`` must shrink like
    ``h^(order + 1)`` over a ladder of halving steps ``h`` (``2^-1 ... 2^-16`` times
    ``max(1, |x|_inf)`` by default). No finite-difference step has to be chosen: the median of
    the observed rates decides (at least ``order + 0.8`` by default; 1.8 for gradients, which
    separates correct gradients from gradients 3 % off). Derivatives are computed with
    ``functorch_utils`` (``vjp`` for scalar outputs, ``jvp`` otherwise) in the input's dtype;
    ``f`` itself is evaluated in float64 when it accepts float64 inputs.

    Args:
        f: Function of one argument (a tensor or a pytree of tensors).
        x: The point.
        v: The direction, shaped like ``x``; by default, for a gradient (scalar output,
            ``order=1``) the unit direction along the computed gradient, otherwise a random unit
            direction from ``seed``.
        order: The highest derivative checked (1: gradient, 2: also the Hessian along ``v``).
        steps: The ladder of steps, largest first (at least three).
        min_rate: Median rate needed to pass; by default ``order + 0.8``.
        mode: ``"rev"`` (scalar outputs only), ``"fwd"``, or ``"auto"`` (rev for scalar outputs).
        seed: Seed of the random direction.

    Returns:
        A :class:`TaylorResult` with the steps, remainders and rates.

    Raises:
        DerivativeCheckError: The median rate is below ``min_rate``; the message lists each
            step's remainder and rate, and ``.report`` is the :class:`TaylorResult`.
        ValueError: Bad ``order``, ``mode`` or ``steps``, or ``mode="rev"`` with a non-scalar
            output.

    Example:
        >>> import torch
        >>> from functorch_utils import custom_vjp
        >>> from functorch_utils.testing import taylor_test
        >>> x = torch.linspace(-1.0, 1.0, 4, dtype=torch.float64)
        >>> taylor_test(lambda x: (x**3).sum(), x, order=2).passed
        True
        >>> @custom_vjp
        ... def square(x):
        ...     return x**2
        >>> square.defvjp(lambda x: (x**2, x), lambda x, g: (2.06 * x * g,))  # 3 % off
        >>> taylor_test(lambda x: square(x).sum(), x)
        Traceback (most recent call last):
        functorch_utils.testing.DerivativeCheckError: taylor_test(<lambda>, x): the Taylor remainder of order 1 shrinks like h^1.0...
    """
    call = f"taylor_test({fun_name(f)}, x)"
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"{call}: order must be an int >= 1; expected 1 or more, got {order!r}.")
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"{call}: unknown mode; expected 'auto', 'fwd' or 'rev', got {mode!r}.")
    g, xs, names = _flat(call, f, x)
    p = _Problem(call, g, xs, names, order)
    hs = _ladder(call, xs, steps)
    with highest_matmul_precision():
        residuals, floors = _run(p, v, x, seed, mode, hs)
    res = _result(
        hs, residuals, floors, order, order + 0.8 if min_rate is None else float(min_rate)
    )
    if not res.passed:
        wrong = "gradient" if order == 1 else f"derivative of order {order} (or a lower one)"
        raise DerivativeCheckError(
            f"{call}: the Taylor remainder of order {order} shrinks like h^{res.median_rate:.1f}; "
            f"expected h^{order + 1} (median rate >= {res.min_rate:g}), so the {wrong} along v "
            f"is wrong. Leaves: {', '.join(names)}; direction seed {seed}.\n" + str(res),
            res,
        )
    return res
