"""Finite-difference checks of derivatives: ``check_grads``, ``check_jvp``, ``check_vjp``.

The scheme (reference, step, tolerance, kinks) is NOTE [the finite-difference scheme] in
``_numerics.py``; the numbers behind it are in ``docs/testing.md`` ("The numbers"). Here: the
forward check (a JVP along a random unit tangent against the reference derivative), the reverse
check (the adjoint identity ``<u, J v> = <J^T u, v>``), and the public functions that adapt a
user's function to flat problems (``_problem.py``) and recurse to higher orders.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from functorch_utils._errors import fun_name, message

from ._numerics import (
    RefDerivative,
    Reference,
    Stencil,
    check_kink,
    check_reference,
    default_rtol,
    highest_matmul_precision,
    make_reference,
    norm,
    pair,
    raise_unstable,
    random_unit,
    ref_dtype,
    reference_derivative,
    stencil,
    step,
    step_how,
    tolerance_parts,
    unstable,
    vec,
)
from ._problem import (
    FlatJvp,
    FlatVjp,
    Options,
    Problem,
    adapt,
    args_flat_up_to,
    fwd_problem,
    options,
    rev_problem,
    transform_jvp,
    transform_vjp,
    zero_none,
)
from ._report import DerivativeCheckError, NonDifferentiablePointError, failure, label_text

__all__ = ["check_grads", "check_jvp", "check_vjp"]

Tensor = torch.Tensor


# ---------------------------------------------------------------------------------------------
# Shared steps of the two checks


def _setup(prob: Problem, opts: Options) -> tuple[Reference, torch.Generator]:
    ref = make_reference(prob.fun, prob.xs, opts.call, opts.reference)
    if not prob.out_names:
        prob.out_names = [f"out leaf {k}" for k in range(len(ref.outs_d))]
    check_reference(ref, prob.out_names, opts.call)
    return ref, torch.Generator().manual_seed(opts.seed)


def _leaf_step(prob: Problem, ref: Reference, i: int, opts: Options) -> float:
    richardson = opts.reference == "richardson" and not ref.loosened
    eps = prob.eps[i] if prob.eps and prob.eps[i] is not None else opts.eps
    return step(ref.xs[i], ref.eps_ref, eps, "richardson" if richardson else "central")


def _parts(
    prob: Problem,
    ref: Reference,
    opts: Options,
    rd: RefDerivative,
    st: Stencil,
    i: int,
    scale: float,
    u_norm: float,
    size: Callable[[Tensor], float],
) -> dict[str, float]:
    """The tolerance's parts for one leaf; ``size`` measures the truncation estimate."""
    if opts.rtol is not None:
        rtol = float(opts.rtol)
    else:
        dtypes = [x.dtype for x in prob.xs] + [o.dtype for o in ref.outs_d]
        rtol = default_rtol(ref, dtypes, rd.reference)
    parts = tolerance_parts(rtol, scale, st, ref, u_norm, ref.xs[i], opts.atol, rd.reference)
    if rd.trunc is not None:
        parts["truncation"] = rd.trunc_factor * size(rd.trunc)
    return parts


def _guard_parts(st: Stencil, ref: Reference, i: int, scale: float, u_norm: float, opts: Options,
                 trunc: float) -> float:  # fmt: skip
    """The central tolerance a complex-step derivative must agree with the central one to."""
    parts = tolerance_parts(1e-6, scale, st, ref, u_norm, ref.xs[i], opts.atol)
    return sum(parts.values()) + 2 * trunc


def _fail(label: str, name: str, what: str, err: float, parts: dict[str, float], ad: float,
          ref_val: float, st: Stencil | None, ref: Reference, opts: Options, reference: str,
          extra: str = "") -> DerivativeCheckError:  # fmt: skip
    kind = "complex-step" if reference == "complex_step" else "finite-difference"
    after = [f"derivative {ad:.6g} vs {kind} reference {ref_val:.6g}"]
    after += [extra] if extra else []
    after += [step_how(reference, st, ref)] if st is not None else []
    return failure(
        opts.call,
        label_text(label),
        name,
        err=err,
        parts=parts,
        seed=opts.seed,
        headline=f"for input {name}",
        before=[what],
        after=after,
        derivative=ad,
        reference_value=ref_val,
        reference=reference,
        step=None if st is None else st.h,
        err_msg=opts.err_msg,
    )


def _check_primal(
    label: str, out_ad: Sequence[Tensor], ref: Reference, prob: Problem, opts: Options
) -> None:
    """The primal output a transform returns must be the function's."""
    call = opts.call
    if len(out_ad) != len(ref.outs_d):
        raise AssertionError(
            f"{call}: {label_text(label)}: the transform returned {len(out_ad)} output "
            f"leaves; expected {len(ref.outs_d)} like the function."
        )
    for name, a, b in zip(prob.out_names, out_ad, ref.outs_d):
        if a.shape != b.shape:
            raise AssertionError(
                f"{call}: {label_text(label)}: primal output {name} has shape "
                f"{tuple(a.shape)}; expected {tuple(b.shape)} like the function."
            )
    err = norm(vec(out_ad) - vec(ref.outs_d))
    scale = norm(vec(ref.outs_d))
    dtypes = [x.dtype for x in prob.xs] + [o.dtype for o in ref.outs_d]
    rtol = float(opts.rtol) if opts.rtol is not None else default_rtol(ref, dtypes, opts.reference)
    tol = (rtol + 10 * ref.eps_d) * scale + float(opts.atol or 0.0)
    if not err <= tol:
        raise AssertionError(
            f"{call}: {label_text(label)}: the primal output differs from the function's "
            f"output; error {err:.6g} > tolerance {tol:.6g}."
        )


def _complex_step_where(opts: Options, label: str, name: str) -> str:
    return f"{opts.call}: {label_text(label)}: reference='complex_step' is not usable for {name}"


# ---------------------------------------------------------------------------------------------
# Forward mode: the JVP along a random unit tangent against the reference derivative


def _jvp_tangent(prob: Problem, ref: Reference, jvp: FlatJvp, ts: tuple[Tensor, ...],
                 label: str, opts: Options) -> Tensor:  # fmt: skip
    out_ad, t_ad = jvp(prob.xs, ts)
    out_ad, t_ad = tuple(out_ad), zero_none(tuple(t_ad), ref.outs_d)
    _check_primal(label, out_ad, ref, prob, opts)
    for oname, t, o in zip(prob.out_names, t_ad, ref.outs_d):
        if t.shape != o.shape:
            raise AssertionError(
                f"{opts.call}: {label_text(label)}: tangent output {oname} has shape "
                f"{tuple(t.shape)}; expected {tuple(o.shape)} like the primal output."
            )
    return vec(t_ad)


def _worst_output(prob: Problem, ref: Reference, ad: Tensor, d: Tensor) -> str:
    sizes = [o.numel() for o in ref.outs_d]
    if len(sizes) <= 1:
        return ""
    errs = [norm(a - b) for a, b in zip(ad.split(sizes), d.split(sizes))]
    k = max(range(len(errs)), key=errs.__getitem__)
    return f"worst output leaf: {prob.out_names[k]} (error {errs[k]:.3g})"


def _check_jvp_leaf(prob: Problem, ref: Reference, jvp: FlatJvp, i: int, v: Tensor, label: str,
                    opts: Options) -> None:  # fmt: skip
    name, x = prob.names[i], prob.xs[i]
    st = stencil(ref, i, v, _leaf_step(prob, ref, i, opts), name, opts.call)
    check_kink(st, ref, name, label, opts.call)
    ts = tuple(v.to(x.dtype) if j == i else torch.zeros_like(y) for j, y in enumerate(prob.xs))
    ad = _jvp_tangent(prob, ref, jvp, ts, label, opts)

    def dist(a: Tensor, b: Tensor) -> float:
        return norm(a - b)

    def guard(cs: Tensor) -> float:
        scale = max(norm(cs), norm(st.d))
        return _guard_parts(st, ref, i, scale, 1.0, opts, norm(st.d - st.d_half))

    where = _complex_step_where(opts, label, name)
    rd = reference_derivative(st, ref, i, v, opts.reference, dist, guard, where)
    err = dist(ad, rd.d)
    parts = _parts(prob, ref, opts, rd, st, i, max(norm(ad), norm(rd.d)), 1.0, norm)
    if err <= sum(parts.values()):
        return
    if rd.reference != "complex_step" and unstable(st, dist, err):
        raise_unstable(label, name, st, opts.call)
    what = "JVP along a random unit tangent v vs the reference: |JVP - REF|"
    extra = _worst_output(prob, ref, ad, rd.d)
    raise _fail(label, name, what, err, parts, norm(ad), norm(rd.d), st, ref, opts,
                rd.reference, extra)  # fmt: skip


def check_jvp_flat(prob: Problem, jvp: FlatJvp, label: str, opts: Options) -> None:
    ref, gen = _setup(prob, opts)
    for i, x in enumerate(prob.xs):
        if x.numel():
            _check_jvp_leaf(prob, ref, jvp, i, random_unit(x, gen), label, opts)


# ---------------------------------------------------------------------------------------------
# Reverse mode: the adjoint identity <u, J v> = <J^T u, v>, v along the computed J^T u


def _random_cotangent(ref: Reference, gen: torch.Generator) -> tuple[Tensor, tuple[Tensor, ...]]:
    """A random unit cotangent: as one float64 vector, and as output leaves in the tested dtype."""
    us_ref = [torch.randn(o.shape, dtype=ref_dtype(o.dtype), generator=gen) for o in ref.outs_d]
    total = norm(vec(us_ref))
    us_d = tuple((u / total).to(o.dtype) for u, o in zip(us_ref, ref.outs_d))
    return vec(us_d), us_d


def _cotangents(prob: Problem, ref: Reference, vjp: FlatVjp, us: tuple[Tensor, ...], label: str,
                opts: Options) -> tuple[Tensor, ...]:  # fmt: skip
    out_ad, vjp_fn = vjp(*prob.xs)
    _check_primal(label, tuple(out_ad), ref, prob, opts)
    cts = vjp_fn(us)
    if not isinstance(cts, (tuple, list)) or len(cts) != len(prob.xs):
        raise AssertionError(
            f"{opts.call}: {label_text(label)}: the VJP function returned "
            f"{type(cts).__name__}; expected a tuple of {len(prob.xs)} cotangents, one per input."
        )
    return zero_none(tuple(cts), prob.xs)


def _cotangent_vec(w: Tensor, x: Tensor, name: str, label: str, ref: Reference,
                   opts: Options) -> Tensor:  # fmt: skip
    """``J^T u`` for one leaf in the reference dtype; its shape must be the input's."""
    if w.shape != x.shape:
        raise AssertionError(
            f"{opts.call}: {label_text(label)}: the cotangent for {name} has shape "
            f"{tuple(w.shape)}; expected {tuple(x.shape)} like the input."
        )
    floating = w.is_floating_point() or w.is_complex()
    w64 = w.detach().to(ref_dtype(w.dtype) if floating else torch.float64)
    w_norm = norm(w64)
    if not math.isfinite(w_norm):
        what = "the cotangent J^T u is not finite"
        raise _fail(label, name, what, math.inf, {}, w_norm, 0.0, None, ref, opts, opts.reference)
    return w64


def _direction(w64: Tensor, x: Tensor, gen: torch.Generator) -> Tensor:
    """``v`` along ``J^T u`` (conjugated for the bilinear pairing, NOTE [complex pairing])."""
    w_norm = norm(w64)
    if w_norm == 0:
        return random_unit(x, gen)
    v = (w64.conj() if w64.is_complex() else w64) / w_norm
    return v.to(ref_dtype(x.dtype))


def _check_vjp_leaf(prob: Problem, ref: Reference, i: int, u: Tensor, w: Tensor,
                    gen: torch.Generator, label: str, opts: Options) -> None:  # fmt: skip
    name, x, call = prob.names[i], prob.xs[i], opts.call
    w64 = _cotangent_vec(w, x, name, label, ref, opts)
    v = _direction(w64, x, gen)
    h = _leaf_step(prob, ref, i, opts)
    # v along J^T u does not move the elements whose cotangent is 0 (relu and abs at 0 have
    # a zero derivative there), so kinks are looked for along a random direction as well.
    check_kink(stencil(ref, i, random_unit(x, gen), h, name, call), ref, name, label, call)
    st = stencil(ref, i, v, h, name, call)
    check_kink(st, ref, name, label, call)
    vv = v.to(x.dtype).to(v.dtype)  # the direction actually differenced
    ad, u_norm = pair(w64, vv), norm(u)

    def dist(a: Tensor, b: Tensor) -> float:
        return abs(pair(u, a) - pair(u, b))

    def guard(cs: Tensor) -> float:
        a, b = pair(u, cs), pair(u, st.d)
        scale = max(abs(a), abs(b))
        return _guard_parts(st, ref, i, scale, u_norm, opts, abs(b - pair(u, st.d_half)))

    where = _complex_step_where(opts, label, name)
    rd = reference_derivative(st, ref, i, vv, opts.reference, dist, guard, where)
    ref_val = pair(u, rd.d)
    err = abs(ad - ref_val)
    size = lambda t: abs(pair(u, t))  # noqa: E731
    parts = _parts(prob, ref, opts, rd, st, i, max(abs(ad), abs(ref_val)), u_norm, size)
    if err <= sum(parts.values()):
        return
    if rd.reference != "complex_step" and unstable(st, dist, err):
        raise_unstable(label, name, st, call)
    what = "adjoint identity <u, J v> (reference) vs <J^T u, v> (VJP), random unit u, v along J^T u"
    raise _fail(label, name, what, err, parts, ad, ref_val, st, ref, opts, rd.reference)


def check_vjp_flat(prob: Problem, vjp: FlatVjp, label: str, opts: Options) -> None:
    ref, gen = _setup(prob, opts)
    if not ref.outs_d or not any(o.numel() for o in ref.outs_d):
        return
    u, us = _random_cotangent(ref, gen)
    cts = _cotangents(prob, ref, vjp, us, label, opts)
    for i, x in enumerate(prob.xs):
        if x.numel():
            _check_vjp_leaf(prob, ref, i, u, cts[i], gen, label, opts)


# ---------------------------------------------------------------------------------------------
# Public checks


def _on_kink(on_kink: str, body: Callable[[], None]) -> None:
    try:
        body()
    except NonDifferentiablePointError:
        if on_kink != "reject":
            raise
        import hypothesis  # only when asked: importing the testing package never does

        hypothesis.reject()


@highest_matmul_precision()
def check_jvp(
    f: Callable[..., Any],
    f_jvp: Callable[[tuple[Any, ...], tuple[Any, ...]], tuple[Any, Any]],
    args: Sequence[Any],
    atol: float | None = None,
    rtol: float | None = None,
    eps: Any = None,
    err_msg: str = "",
    *,
    seed: int = 0,
    reference: str = "central",
    on_kink: str = "raise",
) -> None:
    """Checks a JVP function against central finite differences of ``f``.

    ``f_jvp(primals, tangents)`` must return ``(f(*primals), tangent_out)``, like
    ``functools.partial(functorch_utils.jvp, f)``. Each floating input leaf is checked on its own
    along a random unit tangent; other leaves (ints, strings) are passed through unchanged (with
    zero tangents). See :func:`check_grads` for the scheme and the tolerance.

    Args:
        f: The function, taking ``*args``.
        f_jvp: The JVP function under test.
        args: Tuple of positional arguments of ``f``, each a pytree of tensors.
        atol: Extra absolute tolerance added to the computed tolerance.
        rtol: Relative tolerance; by default from the dtype (1e-6 float64, 2e-4 float32,
            ``4*eps`` for float16/bfloat16).
        eps: Finite-difference step; by default ``eps_ref**(1/3) * max(1, |x|_inf)`` rounded to a
            power of two.
        err_msg: Text put at the top of a failure report.
        seed: Seed of the random directions.
        reference: ``"central"``, ``"richardson"``, ``"complex_step"`` or ``"same_dtype"``.
        on_kink: ``"raise"`` (default) or ``"reject"`` (``hypothesis.reject()`` at a kink).

    Raises:
        AssertionError: The JVP disagrees with the finite differences (the report names the check,
            the input leaf, the error and the parts of the tolerance).
        NonDifferentiablePointError: ``f`` has a kink at ``args``.

    Example:
        >>> import functools, torch
        >>> import functorch_utils
        >>> from functorch_utils.testing import check_jvp
        >>> x = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
        >>> check_jvp(torch.sin, functools.partial(functorch_utils.jvp, torch.sin), (x,))
        >>> def bad_jvp(primals, tangents):
        ...     return torch.sin(primals[0]), 1.001 * torch.cos(primals[0]) * tangents[0]
        >>> check_jvp(torch.sin, bad_jvp, (x,))
        Traceback (most recent call last):
        functorch_utils.testing.DerivativeCheckError: check_jvp(sin, f_jvp, args): JVP (forward mode) check failed for input args[0]...
    """
    call = f"check_jvp({fun_name(f)}, f_jvp, args)"
    opts = options(call, atol, rtol, eps, seed, err_msg, reference, on_kink)
    a, prob, sel = adapt(call, f, args, eps, reference)

    def jvp(xs: tuple[Tensor, ...], ts: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], ...]:
        res = f_jvp(a.rebuild(xs), a.rebuild_tangent(ts))
        if not isinstance(res, (tuple, list)) or len(res) != 2:
            raise AssertionError(
                f"{call}: f_jvp returned {type(res).__name__}; expected a pair "
                "(primal_out, tangent_out)."
            )
        return sel.select(res[0]), sel.select_like(res[1], "tangent output")

    _on_kink(on_kink, lambda: check_jvp_flat(prob, jvp, "JVP", opts))


@highest_matmul_precision()
def check_vjp(
    f: Callable[..., Any],
    f_vjp: Callable[..., tuple[Any, Callable[[Any], Any]]],
    args: Sequence[Any],
    atol: float | None = None,
    rtol: float | None = None,
    eps: Any = None,
    err_msg: str = "",
    *,
    seed: int = 0,
    reference: str = "central",
    on_kink: str = "raise",
) -> None:
    """Checks a VJP function against finite differences of ``f`` (adjoint identity).

    ``f_vjp(*args)`` must return ``(f(*args), vjp_fn)`` with ``vjp_fn(ct)`` a tuple of
    cotangents, one per argument, like ``functools.partial(functorch_utils.vjp, f)``. With a
    random unit cotangent ``u`` and, for each floating input leaf, ``v`` along the computed
    ``J^T u``, it checks ``<u, J v>`` (central differences) against ``<J^T u, v>``. See
    :func:`check_grads` for the tolerance.

    Args:
        f: The function, taking ``*args``.
        f_vjp: The VJP function under test.
        args: Tuple of positional arguments of ``f``, each a pytree of tensors.
        atol: Extra absolute tolerance added to the computed tolerance.
        rtol: Relative tolerance; by default from the dtype.
        eps: Finite-difference step; by default chosen from the dtype and ``|x|_inf``.
        err_msg: Text put at the top of a failure report.
        seed: Seed of the random directions.
        reference: ``"central"``, ``"richardson"``, ``"complex_step"`` or ``"same_dtype"``.
        on_kink: ``"raise"`` (default) or ``"reject"`` (``hypothesis.reject()`` at a kink).

    Raises:
        AssertionError: The VJP disagrees with the finite differences.
        NonDifferentiablePointError: ``f`` has a kink at ``args``.

    Example:
        >>> import functools, torch
        >>> import functorch_utils
        >>> from functorch_utils.testing import check_vjp
        >>> x = torch.linspace(-1.0, 1.0, 5, dtype=torch.float64)
        >>> check_vjp(torch.tanh, functools.partial(functorch_utils.vjp, torch.tanh), (x,))
        >>> def bad_vjp(x):
        ...     return torch.tanh(x), lambda ct: (-ct * (1 - torch.tanh(x) ** 2),)
        >>> check_vjp(torch.tanh, bad_vjp, (x,))
        Traceback (most recent call last):
        functorch_utils.testing.DerivativeCheckError: check_vjp(tanh, f_vjp, args): VJP (reverse mode) check failed for input args[0]...
    """
    call = f"check_vjp({fun_name(f)}, f_vjp, args)"
    opts = options(call, atol, rtol, eps, seed, err_msg, reference, on_kink)
    a, prob, sel = adapt(call, f, args, eps, reference)

    def vjp(*xs: Tensor) -> tuple[tuple[Tensor, ...], Callable[[tuple[Tensor, ...]], Any]]:
        res = f_vjp(*a.rebuild(xs))
        if not isinstance(res, (tuple, list)) or len(res) != 2 or not callable(res[1]):
            raise AssertionError(
                f"{call}: f_vjp returned {type(res).__name__}; expected a pair "
                "(primal_out, vjp_fn)."
            )
        out, fn = res

        def flat_fn(us: tuple[Tensor, ...]) -> tuple[Any, ...]:
            cts = fn(sel.rebuild_cotangent(us))
            if not isinstance(cts, (tuple, list)):
                raise AssertionError(
                    f"{call}: vjp_fn returned {type(cts).__name__}; expected a tuple of "
                    f"{a.count} cotangents, one per argument."
                )
            return args_flat_up_to(a, cts, call, "VJP")

        return sel.select(out), flat_fn

    _on_kink(on_kink, lambda: check_vjp_flat(prob, vjp, "VJP", opts))


def _check_modes(call: str, order: Any, modes: Any) -> tuple[str, ...]:
    if isinstance(order, bool) or not isinstance(order, int):
        raise TypeError(
            f"{call}: order must be an int; expected an int >= 1, got {type(order).__name__} "
            f"{order!r}."
        )
    if order < 1:
        raise ValueError(f"{call}: order must be positive; expected an int >= 1, got {order}.")
    if isinstance(modes, str):
        modes = (modes,)
    bad = [m for m in modes if m not in ("fwd", "rev")]
    if bad or not modes:
        raise ValueError(
            f"{call}: unknown modes; expected a non-empty subset of ('fwd', 'rev'), got "
            f"{tuple(modes)!r}."
        )
    return tuple(modes)


def _check_jvp_of(prob: Problem, label: str, opts: Options) -> None:
    """The forward check of ``prob``; a refused jvp of jvp says how to check without it."""
    try:
        check_jvp_flat(prob, transform_jvp(prob.fun), label, opts)
    except TypeError as e:
        if prob.forward_levels == 0:
            raise
        raise TypeError(
            message(
                opts.call,
                f"{label_text(label)}: forward-over-forward differentiation (jvp of jvp) of f "
                "failed",
                "f to support two nested forward-mode levels",
                f"TypeError: {e}",
                "A custom_jvp rule supports one forward level only; check it at higher orders "
                "in reverse mode: check_grads(f, args, order=2, modes=('rev',)).",
            )
        ) from e


def _check_orders(prob: Problem, order: int, modes: tuple[str, ...], opts: Options,
                  prefix: str = "") -> None:  # fmt: skip
    """JAX's recursion: the JVP and VJP functions of ``prob`` checked at ``order - 1``."""
    if "fwd" in modes:
        label = f"JVP of {prefix}" if prefix else "JVP"
        _check_jvp_of(prob, label, opts)
        if order > 1:
            _check_orders(fwd_problem(prob), order - 1, modes, opts, label)
    if "rev" in modes:
        label = f"VJP of {prefix}" if prefix else "VJP"
        check_vjp_flat(prob, transform_vjp(prob.fun), label, opts)
        if order > 1:
            _check_orders(rev_problem(prob), order - 1, modes, opts, label)


@highest_matmul_precision()
def check_grads(
    f: Callable[..., Any],
    args: Sequence[Any],
    order: int = 1,
    modes: Sequence[str] = ("fwd", "rev"),
    atol: float | None = None,
    rtol: float | None = None,
    eps: Any = None,
    *,
    seed: int = 0,
    reference: str = "central",
    on_kink: str = "raise",
) -> None:
    """Checks ``functorch_utils.jvp``/``vjp`` of ``f`` against finite differences, up to ``order``.

    JAX's ``check_grads`` with an honest tolerance. For every floating input leaf and each mode:

    - ``"fwd"``: the JVP along a random unit tangent ``v`` against the central difference
      ``D(h) = (f(x+hv) - f(x-hv)) / 2h``;
    - ``"rev"``: the adjoint identity ``<u, J v> = <J^T u, v>`` with a random unit cotangent ``u``
      and ``v`` along the computed ``J^T u``.

    Orders above 1 recurse as JAX does: the JVP function ``(primals, tangents) -> jvp(f, ...)``
    and the function ``x -> vjp(f, x)[1](f(x))`` are checked at order ``order - 1``, giving
    "JVP of JVP", "VJP of JVP", "JVP of VJP" and "VJP of VJP" at order 2. A ``custom_jvp`` rule
    supports one forward-mode level only, so a function holding one is checked at order 2 and
    above with ``modes=("rev",)`` (the ``TypeError`` for ``"fwd"`` says so).

    The finite-difference reference runs in float64 (float32/16/bf16 inputs are upcast; a function
    that cannot run in float64 is differenced in its own dtype with a 4x looser rtol), with
    ``h = eps_ref**(1/3) * max(1, |x|_inf)`` rounded to a power of two. A check passes when
    ``err = |AD - REF| <= tol`` with::

        tol = rtol * max(|AD|, |REF|)
            + 10 * eps_ref * max(|f(x+hv)|, |f(x-hv)|) / h
            + 2 * |D(h) - D(h/2)|
            + 10 * eps_d * |f(x)| / max(1, |x|_inf)
            + atol

    ``rtol`` defaults to 1e-6 (float64), 2e-4 (float32) and ``4*eps`` (float16, bfloat16: these
    only catch errors of a few percent). Integer and other non-float leaves are left alone; Python
    floats are checked as 0-d tensors of the default dtype. Matmuls run at "highest" float32
    precision during the check, and the setting found is restored afterwards, also when several
    threads check at once. The numbers are explained in ``docs/testing.md``.

    Args:
        f: The function, taking ``*args`` and returning a pytree of tensors.
        args: Tuple of positional arguments, each a pytree of tensors.
        order: Highest derivative order checked (1 or more).
        modes: Which of ``"fwd"`` and ``"rev"`` to check.
        atol: Extra absolute tolerance added to the computed tolerance.
        rtol: Relative tolerance overriding the dtype's default.
        eps: Finite-difference step overriding the default (used as given, as in JAX).
        seed: Seed of the random directions (reported on failure).
        reference: ``"central"``, ``"richardson"``, ``"complex_step"`` or ``"same_dtype"``.
        on_kink: ``"raise"`` (default) or ``"reject"`` (``hypothesis.reject()`` at a kink).

    Raises:
        AssertionError: A derivative disagrees with finite differences, or ``f`` is not
            deterministic. The report names the check (e.g. "order 2: VJP of VJP"), the input
            leaf (e.g. ``args[0]['w']``), the error, the tolerance and its parts, and the seed.
        NonDifferentiablePointError: ``f`` is not differentiable at ``args`` (a kink).
        TypeError: ``f`` is not callable, ``args`` is not a tuple, an option has the wrong type,
            or ``f`` refuses forward-over-forward differentiation at order 2 and above (a
            ``custom_jvp``: pass ``modes=("rev",)``).
        ValueError: Bad ``order``/``modes``, no floating leaves, a non-finite output, or a step
            below the resolution of an input's dtype.

    Example:
        >>> import torch
        >>> from functorch_utils.testing import check_grads
        >>> def f(params, x):
        ...     return torch.tanh(x @ params["w"] + params["b"]).sum()
        >>> params = {"w": torch.randn(3, 2), "b": torch.zeros(2)}
        >>> check_grads(f, (params, torch.randn(4, 3)), order=2)
    """
    call = f"check_grads({fun_name(f)}, args)"
    checked = _check_modes(call, order, modes)
    opts = options(call, atol, rtol, eps, seed, "", reference, on_kink)
    _, prob, _ = adapt(call, f, args, eps, reference)
    _on_kink(on_kink, lambda: _check_orders(prob, order, checked, opts))
