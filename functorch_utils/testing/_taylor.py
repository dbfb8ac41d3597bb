"""``taylor_test``: convergence rate of the Taylor remainder, no step size to choose.

# NOTE [taylor test]
# With the derivatives right, r(h) = |f(x+hv) - sum_{j<=k} h^j/j! D^j f(x)[v,...,v]| shrinks like
# h^(k+1); a derivative wrong by a relative d leaves a term d*h^k/k! |D^k|, so the rate drops to k
# once h is small enough. The median of the rates over a ladder of halving steps separates the two
# (TESTING.md: median >= 1.8 for k = 1 separates correct from 3 %-wrong gradients). Rungs whose
# remainder is at the rounding floor are left out; if every rung is there, f is a polynomial of
# degree <= k along v and the test passes. f is evaluated in float64 when it can be (inputs
# upcast); the derivatives run in the input dtype.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optree
import torch

import functorch_utils

from ._check import DerivativeCheckError, _highest_matmul_precision
from ._tree import flatten, leaf_paths

__all__ = ["TaylorResult", "taylor_test"]

Tensor = torch.Tensor


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

    Examples:
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


def _flat_vec(outs: Sequence[Any]) -> Tensor:
    ts = [o for o in outs if isinstance(o, Tensor) and (o.is_floating_point() or o.is_complex())]
    if not ts:
        return torch.zeros(0, dtype=torch.float64)
    dt = torch.complex128 if any(t.is_complex() for t in ts) else torch.float64
    return torch.cat([t.detach().reshape(-1).to(dt) for t in ts])


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

    Examples:
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
    call = f"taylor_test({getattr(f, '__name__', type(f).__name__)}, x)"
    if isinstance(order, bool) or not isinstance(order, int) or order < 1:
        raise ValueError(f"{call}: order must be an int >= 1; expected 1 or more, got {order!r}.")
    if mode not in ("auto", "fwd", "rev"):
        raise ValueError(f"{call}: unknown mode; expected 'auto', 'fwd' or 'rev', got {mode!r}.")
    leaves, spec = flatten(x)
    fidx = [
        k
        for k, t in enumerate(leaves)
        if isinstance(t, Tensor) and (t.is_floating_point() or t.is_complex())
    ]
    if not fidx:
        raise ValueError(
            f"{call}: x has no floating-point tensor leaves; expected at least one, got none."
        )
    xs = tuple(leaves[k].detach() for k in fidx)
    if v is None:
        gen = torch.Generator().manual_seed(seed)
        vs64 = [torch.randn(t.shape, dtype=torch.float64, generator=gen) for t in xs]
        norm = math.sqrt(sum(float((w**2).sum()) for w in vs64)) or 1.0
        vs = tuple((w / norm).to(t.dtype) for w, t in zip(vs64, xs))
    else:
        v_leaves = spec.flatten_up_to(v)
        vs = tuple(torch.as_tensor(v_leaves[k]).to(xs[i].dtype) for i, k in enumerate(fidx))
    scale = max(1.0, *(float(t.abs().max()) for t in xs if t.numel()))
    hs = (
        tuple(float(h) for h in steps)
        if steps is not None
        else tuple(scale * 2.0**-k for k in range(1, 17))
    )
    if len(hs) < 3 or any(not (h > 0) for h in hs):
        raise ValueError(
            f"{call}: steps must be at least three positive numbers; expected e.g. "
            f"[0.5, 0.25, 0.125], got {steps!r}."
        )
    min_rate = order + 0.8 if min_rate is None else float(min_rate)

    def g(*zs: Tensor) -> tuple[Tensor, ...]:
        ls = list(leaves)
        for k, z in zip(fidx, zs):
            ls[k] = z
        out = f(optree.tree_unflatten(spec, ls))
        outs, _ = flatten(out)
        return tuple(
            o for o in outs if isinstance(o, Tensor) and (o.is_floating_point() or o.is_complex())
        )

    with _highest_matmul_precision():
        f0 = g(*xs)
        scalar = sum(o.numel() for o in f0) == 1
        if mode == "rev" and not scalar:
            raise ValueError(
                f"{call}: mode='rev' needs a scalar output; expected one element, got "
                f"{sum(o.numel() for o in f0)}. Use mode='fwd'."
            )
        use_rev = mode == "rev" or (mode == "auto" and scalar)
        if v is None and use_rev and order == 1:
            # Along the computed gradient the first-order term is as large as it gets, so a
            # wrong gradient shows most (a random v can be nearly orthogonal to it).
            out, fn = functorch_utils.vjp(g, *xs)
            cts = [
                c if c is not None else torch.zeros_like(t)
                for c, t in zip(fn(tuple(torch.ones_like(o) for o in out)), xs)
            ]
            norm_g = math.sqrt(sum(float((c.double() ** 2).sum()) for c in cts))
            if math.isfinite(norm_g) and norm_g > 0:
                vs = tuple((c.double() / norm_g).to(t.dtype) for c, t in zip(cts, xs))

        def directional(h: Callable[..., tuple[Tensor, ...]]) -> Callable[..., tuple[Tensor, ...]]:
            if use_rev:

                def d_rev(*zs: Tensor) -> tuple[Tensor, ...]:
                    out, fn = functorch_utils.vjp(h, *zs)
                    cts = fn(tuple(torch.ones_like(o) for o in out))
                    total = sum(
                        ((c * w).sum() for c, w in zip(cts, vs) if c is not None),
                        torch.zeros((), dtype=out[0].dtype),
                    )
                    return (total,)

                return d_rev

            def d_fwd(*zs: Tensor) -> tuple[Tensor, ...]:
                _, tout = functorch_utils.jvp(h, zs, vs)
                return tuple(tout)

            return d_fwd

        terms = [_flat_vec(f0)]
        h_fun: Callable[..., tuple[Tensor, ...]] = g
        for _ in range(order):
            h_fun = directional(h_fun)
            terms.append(_flat_vec(h_fun(*xs)).reshape(-1))
        if use_rev:  # the directional derivatives are scalars; f(x) may be a 1-element tensor
            terms = [terms[0], *(t.sum().reshape(1) for t in terms[1:])]

        # f in float64 when it accepts it (the remainder is then free of float32 rounding)
        xs64 = tuple(t.to(torch.complex128 if t.is_complex() else torch.float64) for t in xs)
        vs64t = tuple(w.to(t.dtype) for w, t in zip(vs, xs64))
        try:
            base = _flat_vec(g(*xs64))
            ok = base.shape == terms[0].shape and all(
                o.dtype in (torch.float64, torch.complex128) for o in g(*xs64)
            )
        except Exception:  # not dtype-polymorphic
            ok = False
        at_xs, at_vs = (xs64, vs64t) if ok else (xs, vs)
        eps_ref = torch.finfo(torch.float64).eps if ok else _eps(xs)
        eps_d = _eps(xs)
        # Rounding of the derivatives under test: against the same derivatives in float64 where
        # f runs there (a wrong rule is wrong in both dtypes, so only rounding remains).
        errs = [10 * eps_d * float(torch.linalg.vector_norm(t)) for t in terms[1:]]
        if ok and eps_d > eps_ref:
            try:
                h64: Callable[..., tuple[Tensor, ...]] = g
                vs_d = vs
                vs = vs64t
                for j in range(order):
                    h64 = directional(h64)
                    t64 = _flat_vec(h64(*xs64)).reshape(-1)
                    if use_rev:
                        t64 = t64.sum().reshape(1)
                    errs[j] += 10 * float(torch.linalg.vector_norm(terms[j + 1] - t64))
            except Exception:  # float64 derivatives unavailable: keep the eps-based estimate
                pass
            finally:
                vs = vs_d
        if ok:
            terms[0] = base
        f_norm = float(torch.linalg.vector_norm(terms[0]))

        residuals, floors = [], []
        for h in hs:
            fh = _flat_vec(g(*(a + h * w for a, w in zip(at_xs, at_vs))))
            approx = terms[0].clone()
            size = 0.0
            for j, t in enumerate(terms[1:], start=1):
                c = h**j / math.factorial(j)
                approx = approx + c * t
                size += c * errs[j - 1]
            residuals.append(float(torch.linalg.vector_norm(fh - approx)))
            fh_norm = float(torch.linalg.vector_norm(fh))
            floors.append(100 * eps_ref * max(f_norm, fh_norm) + size)

    usable = [k for k in range(len(hs)) if residuals[k] > floors[k]]
    rates = []
    for a, b in itertools.pairwise(usable):
        rates.append(math.log2(residuals[a] / residuals[b]) / math.log2(hs[a] / hs[b]))
    median = statistics.median(rates) if rates else math.inf
    if len(usable) == 1:  # a single rung above the floor: no rate; trust the floor
        median = math.inf
    res = TaylorResult(
        steps=hs,
        residuals=tuple(residuals),
        rates=tuple(rates),
        median_rate=median,
        expected_rate=order + 1,
        min_rate=min_rate,
        passed=median >= min_rate,
    )
    if not res.passed:
        names = leaf_paths(x, "x")
        wrong = "gradient" if order == 1 else f"derivative of order {order} (or a lower one)"
        raise DerivativeCheckError(
            f"{call}: the Taylor remainder of order {order} shrinks like h^{median:.1f}; "
            f"expected h^{order + 1} (median rate >= {min_rate:g}), so the {wrong} along v is "
            f"wrong. Leaves: {', '.join(names[k] for k in fidx)}; direction seed {seed}.\n"
            + str(res),
            res,
        )
    return res


def _eps(xs: Sequence[Tensor]) -> float:
    return max(float(torch.finfo(t.dtype).eps) for t in xs)
