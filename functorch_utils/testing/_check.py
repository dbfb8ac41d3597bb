"""Finite-difference checks of derivatives: ``check_grads``, ``check_jvp``, ``check_vjp``.

# NOTE [the finite-difference scheme]
# The numbers behind every choice here are in ../shared/TESTING.md; in short:
# - The reference is computed in float64: float32/float16/bfloat16 inputs are upcast for the
#   finite differences only (the derivative under test runs in the input dtype). A function that
#   is not dtype-polymorphic (fails in float64, or hands back lower-precision outputs) is
#   differenced in its own dtype with a 4x looser rtol.
# - Central differences D(h) = (f(x+hv) - f(x-hv)) / 2h along random directions, one input leaf
#   at a time (so a failure names the leaf), with h = eps_ref^(1/3) * max(1, |x|_inf) rounded to a
#   power of two.
# - Norms of projected quantities are compared, never elementwise and never scaled by numel:
#       err = |AD - REF|
#       tol = rtol * max(|AD|, |REF|)                        relative part
#           + 10 * eps_ref * max(|f(x+hv)|, |f(x-hv)|) / h   finite-difference rounding floor
#           + 2 * |D(h) - D(h/2)|                            truncation estimate
#           + 10 * eps_d * |f(x)| / max(1, |x|_inf)          rounding floor of the tested dtype
#           + atol
# - Forward mode: JVP along a random unit v against D(h). Reverse mode: the adjoint identity
#   <u, J v> = <J^T u, v> with a random unit cotangent u and v taken ALONG the computed J^T u
#   (a random v makes the scalar shrink like 1/sqrt(n) against the tolerance).
# - Kinks: one-sided slopes whose gap does not shrink when h halves raise
#   NonDifferentiablePointError instead of giving a wrong verdict.
#
# NOTE [references]
# reference="central" is the scheme above. "richardson" takes h = eps_ref^(1/5)*scale and
# R = D(h/2) + (D(h/2) - D(h))/3 (error O(h^4)), with |D(h/2) - D(h)|/3 as its truncation part
# and a tighter rtol. "complex_step" takes Im f(x + i*t*v)/t with t = 1e-20 in complex128: exact
# to rounding for real-analytic code, and at higher orders too, since the problems checked there
# are jvp/vjp of f evaluated at complex points (Im jvp(f, x + i*t*v, w)/t = w^T H v). It is
# guarded: the cheap central difference is computed anyway (for the kink probe), and when the two
# disagree beyond the central tolerance (conj(), abs(), .real are silently not holomorphic) or f
# refuses complex input (relu, clamp, comparisons), the check warns (ComplexStepWarning) and
# uses the central difference for that leaf. "same_dtype" differences in the tested dtype.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import optree
import torch

import functorch_utils

from ._tree import NAMESPACE, flatten, is_float_like, leaf_paths, structure_errors

__all__ = [
    "CheckReport",
    "ComplexStepWarning",
    "DerivativeCheckError",
    "NonDifferentiablePointError",
    "check_grads",
    "check_jvp",
    "check_vjp",
    "finite_difference_step",
]

REFERENCES = ("central", "richardson", "complex_step", "same_dtype")
_COMPLEX_STEP = 1e-20

Tensor = torch.Tensor
_FlatFun = Callable[..., tuple[Tensor, ...]]
_FlatJvp = Callable[[tuple[Tensor, ...], tuple[Tensor, ...]], tuple[tuple[Tensor, ...], ...]]
_FlatVjp = Callable[..., tuple[tuple[Tensor, ...], Callable[[tuple[Tensor, ...]], Any]]]

_EPS64 = torch.finfo(torch.float64).eps


class NonDifferentiablePointError(ValueError):
    """The function is not differentiable at the checked point (a kink, tie or discontinuity).

    Raised by :func:`check_grads`, :func:`check_jvp` and :func:`check_vjp` instead of a verdict on
    the derivative: one-sided finite-difference slopes differ far beyond rounding noise and the gap
    does not shrink when the step is halved. In a hypothesis test, catch it and call
    ``hypothesis.reject()``, or draw inputs away from the kinks.

    Examples:
        >>> import torch
        >>> from functorch_utils.testing import NonDifferentiablePointError, check_grads
        >>> try:
        ...     check_grads(torch.abs, (torch.tensor([0.0, 1.0], dtype=torch.float64),))
        ... except NonDifferentiablePointError as e:
        ...     print(type(e).__name__)
        NonDifferentiablePointError
    """


class ComplexStepWarning(UserWarning):
    """``reference="complex_step"`` could not be trusted for a leaf and central differences were used.

    Emitted when the function refuses complex input (``relu``, ``clamp``, comparisons), returns
    outputs of another shape, or when the complex-step derivative disagrees with a central
    difference beyond its tolerance (``conj()``, ``abs()`` and ``.real`` are not holomorphic).

    Examples:
        >>> import warnings, torch
        >>> from functorch_utils.testing import ComplexStepWarning, check_grads
        >>> x = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64)
        >>> with warnings.catch_warnings(record=True) as w:
        ...     warnings.simplefilter("always", ComplexStepWarning)
        ...     check_grads(torch.relu, (x,), reference="complex_step")
        >>> print(str(w[0].message)[:110])
        check_grads(relu, args): JVP (forward mode): reference='complex_step' is not usable for args[0]: the function
    """


@dataclass(frozen=True)
class CheckReport:
    """What a failed derivative check found; ``DerivativeCheckError.report``.

    Attributes:
        call: The call, e.g. ``"check_grads(f, args)"``.
        check: Which check failed, e.g. ``"VJP (reverse mode)"`` or ``"order 2: VJP of JVP"``.
        leaf: Key path of the input leaf, e.g. ``"args[0]['w']"``.
        error: The error that exceeded the tolerance.
        tolerance: The tolerance (the sum of ``parts``).
        parts: The parts of the tolerance by name (relative, FD rounding, ...).
        derivative: The derivative under test (norm of the JVP, or ``<J^T u, v>``).
        reference_value: The finite-difference (or complex-step) reference for it.
        reference: Which reference was used (``"central"``, ``"richardson"``, ...).
        step: The finite-difference step ``h`` (``None`` where none was used).
        seed: The seed of the random directions.
        message: The full text of the error.

    Examples:
        >>> import torch
        >>> from functorch_utils.testing import DerivativeCheckError, check_vjp
        >>> x = torch.linspace(-1.0, 1.0, 4, dtype=torch.float64)
        >>> def bad_vjp(x):
        ...     return torch.sin(x), lambda ct: (1.01 * ct * torch.cos(x),)
        >>> try:
        ...     check_vjp(torch.sin, bad_vjp, (x,), seed=3)
        ... except DerivativeCheckError as e:
        ...     print(e.report.check, e.report.leaf, e.report.seed, e.report.error > e.report.tolerance)
        VJP (reverse mode) args[0] 3 True
    """

    call: str
    check: str
    leaf: str
    error: float
    tolerance: float
    parts: dict[str, float]
    derivative: float
    reference_value: float
    reference: str
    step: float | None
    seed: int
    message: str

    def __str__(self) -> str:
        return self.message


class DerivativeCheckError(AssertionError):
    """An ``AssertionError`` from a failed check, with the structured report as ``.report``.

    Examples:
        >>> from functorch_utils.testing import DerivativeCheckError
        >>> issubclass(DerivativeCheckError, AssertionError)
        True
    """

    def __init__(self, message: str, report: Any = None) -> None:
        super().__init__(message)
        self.report = report


DerivativeCheckError.__module__ = "functorch_utils.testing"  # its public home, shown in tracebacks


def finite_difference_step(
    dtype: torch.dtype = torch.float64, scale: float = 1.0, reference: str = "central"
) -> float:
    """The finite-difference step ``h`` the checks use for an input of ``dtype`` and ``|x|_inf``.

    ``h = eps_ref**(1/3) * max(1, scale)`` (``eps_ref**(1/5)`` for ``"richardson"``) rounded to a
    power of two, where ``eps_ref`` is float64's epsilon (the reference is upcast) except for
    ``reference="same_dtype"``. The stencil reaches ``x +- h*v`` with ``|v_i| <= 1``, so points at
    least ``h`` away from a kink are checked as smooth: the strategies' margins are derived from it.

    Args:
        dtype: Dtype of the input leaf.
        scale: ``|x|_inf`` of the leaf (values below 1 count as 1).
        reference: One of ``"central"``, ``"richardson"``, ``"complex_step"``, ``"same_dtype"``.

    Returns:
        The step, a power of two times ``max(1, scale)`` rounded.

    Examples:
        >>> import torch
        >>> from functorch_utils.testing import finite_difference_step
        >>> finite_difference_step(torch.float32) == 2.0**-17
        True
        >>> finite_difference_step(torch.float32, reference="richardson") == 2.0**-10
        True
    """
    if reference not in REFERENCES:
        raise ValueError(
            f"finite_difference_step(dtype, scale, reference): unknown reference; expected one of "
            f"{REFERENCES}, got {reference!r}."
        )
    real = dtype.to_real() if dtype.is_complex else dtype
    eps_ref = _eps_of(real) if reference == "same_dtype" else _EPS64
    power = 1 / 5 if reference == "richardson" else 1 / 3
    return float(2.0 ** round(math.log2(eps_ref**power * max(1.0, float(scale)))))


def _rtol_of(dtype: torch.dtype, reference: str = "central") -> float:
    """Default relative tolerance of the tested dtype (TESTING.md)."""
    real = dtype.to_real() if dtype.is_complex else dtype
    if real == torch.float64:
        return {"richardson": 1e-8, "complex_step": 1e-10}.get(reference, 1e-6)
    if real == torch.float32:
        return {"richardson": 1e-5, "complex_step": 1e-5}.get(reference, 2e-4)
    return 4 * torch.finfo(real).eps


def _eps_of(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype).eps)


def _ref_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.complex128 if dtype.is_complex else torch.float64


def _vec(outs: Sequence[Tensor]) -> Tensor:
    """All output leaves as one float64 (or complex128) vector."""
    if not outs:
        return torch.zeros(0, dtype=torch.float64)
    cplx = any(o.is_complex() for o in outs)
    dt = torch.complex128 if cplx else torch.float64
    return torch.cat([o.detach().reshape(-1).to(dt) for o in outs])


def _norm(t: Tensor) -> float:
    return float(torch.linalg.vector_norm(t)) if t.numel() else 0.0


def _pair(a: Tensor, b: Tensor) -> float:
    """The real pairing under which a VJP is the adjoint of a JVP.

    # NOTE [complex pairing]
    # The contract follows JAX for complex numbers (grad of a real function of z is the conjugate
    # of torch's), so the cotangent of ``functorch_utils.vjp`` pairs with a tangent bilinearly:
    # Re sum(u * J v) == Re sum(vjp(u) * v). For torch's convention this would be Re vdot.
    # The two coincide for real tensors.
    """
    if not a.numel():
        return 0.0
    return float(torch.sum(a * b).real)


def _same_bits(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        xn, yn = torch.isnan(x), torch.isnan(y)
        if not torch.equal(xn, yn) or not torch.equal(x[~xn], y[~yn]):
            return False
    return True


@contextmanager
def _highest_matmul_precision() -> Iterator[None]:
    # TF32 matmuls made vmap-vs-loop differ by thousands of eps on an H100 (TESTING.md).
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(old)


@dataclass
class _Problem:
    """A derivative check on flat tuples: ``fun(*xs)`` returns a flat tuple of float tensors."""

    fun: _FlatFun
    xs: tuple[Tensor, ...]
    names: list[str]
    out_names: list[str] = field(default_factory=list)
    eps: list[float | None] = field(default_factory=list)  # per-leaf step overrides


@dataclass
class _Reference:
    fun: _FlatFun
    xs: tuple[Tensor, ...]
    f0: tuple[Tensor, ...]
    eps_ref: float
    eps_d: float
    fallback: bool
    outs_d: tuple[Tensor, ...]

    same_dtype: bool = False

    def describe(self) -> str:
        if self.same_dtype:
            return "reference in the tested dtype (reference='same_dtype'; tolerance loosened)"
        if self.fallback:
            return (
                "reference in the tested dtype (the function is not dtype-polymorphic, so it "
                "could not be upcast to float64; tolerance loosened)"
            )
        upcast = self.eps_d > self.eps_ref
        return "reference in float64" + (" (inputs upcast)" if upcast else "")


@dataclass
class _Options:
    call: str
    atol: float | None
    rtol: float | None
    eps: float | None
    seed: int
    err_msg: str
    reference: str = "central"


def _label_text(label: str) -> str:
    if " of " not in label:
        return {"JVP": "JVP (forward mode)", "VJP": "VJP (reverse mode)"}[label]
    return f"order {label.count(' of ') + 1}: {label}"


def _as_tuple(out: Any, what: str, call: str) -> tuple[Tensor, ...]:
    if not isinstance(out, (tuple, list)):
        raise AssertionError(f"{call}: {what} returned {type(out).__name__}; expected a tuple.")
    return tuple(out)


def _make_reference(prob: _Problem, call: str, reference: str = "central") -> _Reference:
    xs = prob.xs
    outs_d = _as_tuple(prob.fun(*xs), "the function", call)
    if not prob.out_names:
        prob.out_names = [f"out leaf {k}" for k in range(len(outs_d))]
    eps_d = max([_eps_of(x.dtype) for x in xs] + [_eps_of(o.dtype) for o in outs_d])
    if reference == "same_dtype":
        return _Reference(prob.fun, xs, outs_d, eps_d, eps_d, False, outs_d, same_dtype=True)
    need_upcast = any(_eps_of(x.dtype) > _EPS64 for x in xs)
    if need_upcast:
        xs64 = tuple(x.to(_ref_dtype(x.dtype)) for x in xs)
        try:
            f0 = _as_tuple(prob.fun(*xs64), "the function", call)
            ok = len(f0) == len(outs_d) and all(
                _eps_of(o.dtype) <= _EPS64 and o.shape == od.shape for o, od in zip(f0, outs_d)
            )
        except Exception:  # not dtype-polymorphic: fall back to the tested dtype
            ok = False
        if ok:
            return _Reference(prob.fun, xs64, f0, _EPS64, eps_d, False, outs_d)
    eps_ref = max([_eps_of(x.dtype) for x in xs] + [_eps_of(o.dtype) for o in outs_d])
    return _Reference(prob.fun, xs, outs_d, eps_ref, eps_d, need_upcast, outs_d)


def _check_reference(prob: _Problem, ref: _Reference, opts: _Options) -> None:
    again = _as_tuple(ref.fun(*ref.xs), "the function", opts.call)
    if not _same_bits(ref.f0, again):
        raise AssertionError(
            f"{opts.call}: non-deterministic function: two evaluations at the same inputs "
            "differ bitwise, so finite differences cannot check its derivatives. Fix the "
            "randomness (seed it inside the function, or pass the noise in as an argument)."
        )
    for name, o in zip(prob.out_names, ref.f0):
        if not torch.isfinite(o).all():
            raise ValueError(
                f"{opts.call}: the output {name} is not finite at the checked point; expected "
                "finite values, got NaN or inf. Check the function at a point where it is finite."
            )


@dataclass
class _Stencil:
    """Function values around x along one direction of one input leaf."""

    h: float
    f0: Tensor
    fp: Tensor
    fm: Tensor
    fp2: Tensor
    fm2: Tensor
    at: Callable[[float], Tensor]

    @property
    def d(self) -> Tensor:
        return (self.fp - self.fm) / (2 * self.h)

    @property
    def d_half(self) -> Tensor:
        return (self.fp2 - self.fm2) / self.h

    def d_quarter(self) -> Tensor:
        """Only computed when a check fails (two more evaluations)."""
        return (self.at(self.h / 4) - self.at(-self.h / 4)) / (self.h / 2)


def _step(x: Tensor, eps_ref: float, eps: float | None, reference: str = "central") -> float:
    if eps is not None:
        return float(eps)
    scale = max(1.0, float(x.abs().max())) if x.numel() else 1.0
    power = 1 / 5 if reference == "richardson" else 1 / 3
    return float(2.0 ** round(math.log2(eps_ref**power * scale)))


def _random_unit(x: Tensor, gen: torch.Generator) -> Tensor:
    """A random unit direction shaped like ``x``, exactly representable in ``x``'s dtype."""
    v = torch.randn(x.shape, dtype=_ref_dtype(x.dtype), generator=gen)
    v = v / torch.linalg.vector_norm(v)
    return v.to(x.dtype).to(_ref_dtype(x.dtype))


def _stencil(ref: _Reference, i: int, v: Tensor, h: float, name: str, opts: _Options) -> _Stencil:
    x = ref.xs[i]
    v = v.to(x.dtype)

    def at(t: float) -> Tensor:
        xs = list(ref.xs)
        xs[i] = x + t * v
        return _vec(_as_tuple(ref.fun(*xs), "the function", opts.call))

    if torch.equal(x + h * v, x) or torch.equal(x - h * v, x):
        raise ValueError(
            f"{opts.call}: the finite-difference step h={h:.3g} is below the resolution of "
            f"{name} (dtype {x.dtype}, max |x| {float(x.abs().max()):.3g}); expected x + h*v != x, "
            "got x + h*v == x. Upcast the input to float64 (or pass a larger eps)."
        )
    return _Stencil(h, _vec(ref.f0), at(h), at(-h), at(h / 2), at(-h / 2), at)


def _check_kink(st: _Stencil, ref: _Reference, name: str, label: str, opts: _Options) -> None:
    h = st.h
    gap = _norm(st.fp - 2 * st.f0 + st.fm) / h
    gap_half = _norm(st.fp2 - 2 * st.f0 + st.fm2) / (h / 2)
    scale = max(_norm(st.fp2), _norm(st.f0), _norm(st.fm2), _norm(st.fp), _norm(st.fm))
    noise_half = 4 * ref.eps_ref * scale / (h / 2)
    if gap_half > 1e3 * noise_half and gap_half > 0.75 * gap:
        raise NonDifferentiablePointError(
            f"{opts.call}: {_label_text(label)}: the function is not differentiable at the "
            f"checked point along {name}: one-sided slopes differ by {gap:.3g} at step "
            f"h={h:.3g} and by {gap_half:.3g} at h/2 (a smooth function's gap halves). "
            "Move the point away from kinks and ties (e.g. relu or abs at 0, max with ties)."
        )


def _fail(
    *,
    label: str,
    name: str,
    what: str,
    err: float,
    parts: dict[str, float],
    ad: float,
    ref_val: float,
    st: _Stencil | None,
    ref: _Reference,
    opts: _Options,
    extra: str = "",
    reference: str | None = None,
) -> DerivativeCheckError:
    reference = opts.reference if reference is None else reference
    tol = sum(parts.values())
    parts_text = " + ".join(f"{k} {v:.3g}" for k, v in parts.items())
    kind = "complex-step" if reference == "complex_step" else "finite-difference"
    lines = [
        f"{opts.call}: {_label_text(label)} check failed for input {name}.",
        f"  {what}",
        f"  error {err:.6g} > tolerance {tol:.6g} = {parts_text}",
        f"  derivative {ad:.6g} vs {kind} reference {ref_val:.6g}",
    ]
    if extra:
        lines.append(f"  {extra}")
    if st is not None:
        how = {
            "central": "central differences",
            "richardson": "Richardson extrapolation of central differences at h and h/2",
            "complex_step": f"complex step t = {_COMPLEX_STEP:g}, guarded by central differences",
            "same_dtype": "central differences",
        }[reference]
        lines.append(
            f"  step h = 2**{round(math.log2(st.h))} ({st.h:.3g}), {how}; {ref.describe()}"
        )
    lines.append(f"  direction seed {opts.seed}; pass seed=... to try other directions.")
    if opts.err_msg:
        lines.insert(0, opts.err_msg)
    message = "\n".join(lines)
    report = CheckReport(
        call=opts.call,
        check=_label_text(label),
        leaf=name,
        error=err,
        tolerance=tol,
        parts=dict(parts),
        derivative=ad,
        reference_value=ref_val,
        reference=reference,
        step=None if st is None else st.h,
        seed=opts.seed,
        message=message,
    )
    return DerivativeCheckError(message, report)


def _rel_parts(
    rtol: float,
    scale: float,
    st: _Stencil,
    ref: _Reference,
    u_norm: float,
    x: Tensor,
    opts: _Options,
) -> dict[str, float]:
    h = st.h
    x_inf = max(1.0, float(x.abs().max())) if x.numel() else 1.0
    parts = {
        f"relative (rtol {rtol:.3g} * scale {scale:.3g})": rtol * scale,
        "FD rounding": 10 * ref.eps_ref * u_norm * max(_norm(st.fp), _norm(st.fm)) / h,
        "dtype rounding": 10 * ref.eps_d * u_norm * _norm(st.f0) / x_inf,
    }
    if opts.atol:
        parts["atol"] = float(opts.atol)
    return parts


def _rtol(ref: _Reference, prob: _Problem, opts: _Options, reference: str | None = None) -> float:
    if opts.rtol is not None:
        return float(opts.rtol)
    reference = opts.reference if reference is None else reference
    if ref.fallback or ref.same_dtype:
        reference = "central"
    dts = [x.dtype for x in prob.xs] + [o.dtype for o in ref.outs_d]
    rtol = max(_rtol_of(d, reference) for d in dts)
    return 4 * rtol if (ref.fallback or ref.same_dtype) else rtol


def _check_primal(
    label: str, out_ad: Sequence[Tensor], ref: _Reference, prob: _Problem, opts: _Options
) -> None:
    if len(out_ad) != len(ref.outs_d):
        raise AssertionError(
            f"{opts.call}: {_label_text(label)}: the transform returned {len(out_ad)} output "
            f"leaves; expected {len(ref.outs_d)} like the function."
        )
    for name, a, b in zip(prob.out_names, out_ad, ref.outs_d):
        if a.shape != b.shape:
            raise AssertionError(
                f"{opts.call}: {_label_text(label)}: primal output {name} has shape "
                f"{tuple(a.shape)}; expected {tuple(b.shape)} like the function."
            )
    err = _norm(_vec(out_ad) - _vec(ref.outs_d))
    scale = _norm(_vec(ref.outs_d))
    tol = (_rtol(ref, prob, opts) + 10 * ref.eps_d) * scale + float(opts.atol or 0.0)
    if not err <= tol:
        raise AssertionError(
            f"{opts.call}: {_label_text(label)}: the primal output differs from the function's "
            f"output; error {err:.6g} > tolerance {tol:.6g}."
        )


def _unstable(st: _Stencil, dist: Callable[[Tensor, Tensor], float], err: float) -> bool:
    """Whether the finite differences fail to converge like h**2 (a kink inside the stencil).

    Smooth functions give D(h) - D(h/2) = 4 (D(h/2) - D(h/4)) to leading order. A kink between
    h/4 and h from x breaks that ratio; it only matters if the estimates move by a fair part of
    the error being reported.
    """
    d1, d2, d4 = st.d, st.d_half, st.d_quarter()
    return dist(d2, d4) > 0.5 * dist(d1, d2) and dist(d1, d4) > 0.1 * err


def _raise_unstable(label: str, name: str, st: _Stencil, opts: _Options) -> None:
    raise NonDifferentiablePointError(
        f"{opts.call}: {_label_text(label)}: the finite differences along {name} do not "
        f"converge (step h={st.h:.3g} and h/2 disagree by more than the error): a kink or "
        "discontinuity lies within the stencil. Move the point away from kinks and ties."
    )


def _zero_none(ts: Sequence[Any], like: Sequence[Tensor]) -> tuple[Tensor, ...]:
    return tuple(torch.zeros_like(x) if t is None else t for t, x in zip(ts, like))


def _complex_step(ref: _Reference, i: int, v: Tensor) -> tuple[Tensor | None, str]:
    """``Im F(x + i t v) / t`` along input ``i`` (all inputs complex128), or why it failed."""
    t = _COMPLEX_STEP
    xs = []
    for j, x in enumerate(ref.xs):
        x64 = x.to(torch.float64)
        im = t * v.to(torch.float64) if j == i else torch.zeros_like(x64)
        xs.append(torch.complex(x64, im))
    try:
        outs = _as_tuple(ref.fun(*xs), "the function", "complex step")
    except Exception as e:  # not complex-safe (relu, clamp, comparisons, dtype-pinned weights)
        return None, f"the function failed on complex input ({type(e).__name__}: {e})"
    if len(outs) != len(ref.f0) or any(o.shape != r.shape for o, r in zip(outs, ref.f0)):
        return None, "the function's outputs changed shape on complex input"
    # A real output leaf did not see the imaginary perturbation (or dropped it, as .real and
    # abs() do): its complex-step derivative is 0, which the central cross-check then judges.
    parts = [
        (o.imag / t if o.is_complex() else torch.zeros(o.shape)).to(torch.float64) for o in outs
    ]
    return _vec(parts), ""


@dataclass
class _RefDerivative:
    d: Tensor  # the reference derivative along v (flat float64 vector)
    trunc: Tensor | None  # its truncation estimate, a vector like d
    trunc_factor: float
    reference: str  # the reference actually used (after a complex-step fallback)


def _reference_derivative(
    st: _Stencil,
    ref: _Reference,
    i: int,
    v: Tensor,
    name: str,
    label: str,
    opts: _Options,
    dist: Callable[[Tensor, Tensor], float],
    guard_tol: Callable[[Tensor], float],
) -> _RefDerivative:
    if opts.reference == "richardson" and not ref.fallback and not ref.same_dtype:
        delta = (st.d_half - st.d) / 3
        return _RefDerivative(st.d_half + delta, delta, 1.0, "richardson")
    central = _RefDerivative(st.d, st.d - st.d_half, 2.0, "central")
    if opts.reference != "complex_step":
        return central
    cs, why = _complex_step(ref, i, v)
    if cs is not None and cs.shape == st.d.shape:
        gap = dist(cs, st.d)
        tol = guard_tol(cs)
        if gap <= tol:
            return _RefDerivative(cs, None, 0.0, "complex_step")
        why = (
            f"it disagrees with a central difference by {gap:.3g} > {tol:.3g} (the code is not "
            "holomorphic: conj(), abs(), .real)"
        )
    warnings.warn(
        f"{opts.call}: {_label_text(label)}: reference='complex_step' is not usable for {name}: "
        f"{why}; using central differences for this leaf.",
        ComplexStepWarning,
        stacklevel=4,
    )
    return central


def _check_jvp_flat(prob: _Problem, jvp: _FlatJvp, label: str, opts: _Options) -> None:
    ref = _make_reference(prob, opts.call, opts.reference)
    _check_reference(prob, ref, opts)
    gen = torch.Generator().manual_seed(opts.seed)
    for i, x in enumerate(prob.xs):
        if not x.numel():
            continue
        name = prob.names[i]
        v = _random_unit(x, gen)
        h = _step(ref.xs[i], ref.eps_ref, _leaf_eps(prob, i, opts), _step_kind(ref, opts))
        st = _stencil(ref, i, v, h, name, opts)
        _check_kink(st, ref, name, label, opts)
        ts = tuple(v.to(x.dtype) if j == i else torch.zeros_like(y) for j, y in enumerate(prob.xs))
        out_ad, t_ad = jvp(prob.xs, ts)
        out_ad, t_ad = tuple(out_ad), _zero_none(tuple(t_ad), ref.outs_d)
        _check_primal(label, out_ad, ref, prob, opts)
        for oname, t, o in zip(prob.out_names, t_ad, ref.outs_d):
            if t.shape != o.shape:
                raise AssertionError(
                    f"{opts.call}: {_label_text(label)}: tangent output {oname} has shape "
                    f"{tuple(t.shape)}; expected {tuple(o.shape)} like the primal output."
                )
        ad = _vec(t_ad)

        def guard(cs: Tensor, ad: Tensor = ad, st: _Stencil = st, i: int = i) -> float:
            p = _rel_parts(1e-6, max(_norm(cs), _norm(st.d)), st, ref, 1.0, ref.xs[i], opts)
            return sum(p.values()) + 2 * _norm(st.d - st.d_half)

        rd = _reference_derivative(
            st, ref, i, v, name, label, opts, lambda a, b: _norm(a - b), guard
        )
        d = rd.d
        err = _norm(ad - d)
        rtol = _rtol(ref, prob, opts, rd.reference)
        parts = _rel_parts(rtol, max(_norm(ad), _norm(d)), st, ref, 1.0, ref.xs[i], opts)
        _adjust_parts(parts, rd.reference)
        if rd.trunc is not None:
            parts["truncation"] = rd.trunc_factor * _norm(rd.trunc)
        if not err <= sum(parts.values()):
            if rd.reference != "complex_step" and _unstable(st, lambda a, b: _norm(a - b), err):
                _raise_unstable(label, name, st, opts)
            worst = ""
            sizes = [o.numel() for o in ref.outs_d]
            if len(sizes) > 1:
                errs = [_norm(a - b) for a, b in zip(ad.split(sizes), d.split(sizes))]
                k = max(range(len(errs)), key=errs.__getitem__)
                worst = f"worst output leaf: {prob.out_names[k]} (error {errs[k]:.3g})"
            raise _fail(
                label=label,
                name=name,
                what="JVP along a random unit tangent v vs the reference: |JVP - REF|",
                err=err,
                parts=parts,
                ad=_norm(ad),
                ref_val=_norm(d),
                st=st,
                ref=ref,
                opts=opts,
                extra=worst,
                reference=rd.reference,
            )


def _check_vjp_flat(prob: _Problem, vjp: _FlatVjp, label: str, opts: _Options) -> None:
    ref = _make_reference(prob, opts.call, opts.reference)
    _check_reference(prob, ref, opts)
    gen = torch.Generator().manual_seed(opts.seed)
    if not ref.outs_d or not any(o.numel() for o in ref.outs_d):
        return
    us_ref = [torch.randn(o.shape, dtype=_ref_dtype(o.dtype), generator=gen) for o in ref.outs_d]
    total = _norm(_vec(us_ref))
    us_d = tuple((u / total).to(o.dtype) for u, o in zip(us_ref, ref.outs_d))
    u = _vec(us_d)
    u_norm = _norm(u)
    out_ad, vjp_fn = vjp(*prob.xs)
    _check_primal(label, tuple(out_ad), ref, prob, opts)
    cts = vjp_fn(us_d)
    if not isinstance(cts, (tuple, list)) or len(cts) != len(prob.xs):
        raise AssertionError(
            f"{opts.call}: {_label_text(label)}: the VJP function returned "
            f"{type(cts).__name__}; expected a tuple of {len(prob.xs)} cotangents, one per input."
        )
    cts = _zero_none(tuple(cts), prob.xs)
    for i, x in enumerate(prob.xs):
        if not x.numel():
            continue
        name = prob.names[i]
        w = cts[i]
        if w.shape != x.shape:
            raise AssertionError(
                f"{opts.call}: {_label_text(label)}: the cotangent for {name} has shape "
                f"{tuple(w.shape)}; expected {tuple(x.shape)} like the input."
            )
        w64 = w.detach().to(
            _ref_dtype(w.dtype) if w.is_floating_point() or w.is_complex() else torch.float64
        )
        w_norm = _norm(w64)
        if not math.isfinite(w_norm):
            raise _fail(
                label=label, name=name, what="the cotangent J^T u is not finite",
                err=math.inf, parts={}, ad=w_norm, ref_val=0.0, st=None, ref=ref,
                opts=opts,
            )  # fmt: skip
        if w_norm > 0:
            # v along J^T u (conjugated for the bilinear pairing, see NOTE [complex pairing]).
            v = (w64.conj() if w64.is_complex() else w64) / w_norm
            v = v.to(_ref_dtype(x.dtype))
        else:
            v = _random_unit(x, gen)
        h = _step(ref.xs[i], ref.eps_ref, _leaf_eps(prob, i, opts), _step_kind(ref, opts))
        # v along J^T u does not move the elements whose cotangent is 0 (relu and abs at 0 have
        # a zero derivative there), so kinks are looked for along a random direction as well.
        probe = _random_unit(x, gen)
        _check_kink(_stencil(ref, i, probe, h, name, opts), ref, name, label, opts)
        st = _stencil(ref, i, v, h, name, opts)
        _check_kink(st, ref, name, label, opts)
        vv = v.to(x.dtype).to(v.dtype)  # the direction actually differenced

        def proj(d: Tensor) -> float:
            return _pair(u, d)

        ad = _pair(w64, vv)

        def guard(cs: Tensor, st: _Stencil = st, i: int = i) -> float:
            a, b = proj(cs), proj(st.d)
            p = _rel_parts(1e-6, max(abs(a), abs(b)), st, ref, u_norm, ref.xs[i], opts)
            return sum(p.values()) + 2 * abs(b - proj(st.d_half))

        rd = _reference_derivative(
            st, ref, i, vv, name, label, opts, lambda a, b: abs(proj(a) - proj(b)), guard
        )
        ref_val = proj(rd.d)
        err = abs(ad - ref_val)
        rtol = _rtol(ref, prob, opts, rd.reference)
        parts = _rel_parts(rtol, max(abs(ad), abs(ref_val)), st, ref, u_norm, ref.xs[i], opts)
        _adjust_parts(parts, rd.reference)
        if rd.trunc is not None:
            parts["truncation"] = rd.trunc_factor * abs(proj(rd.trunc))
        if not err <= sum(parts.values()):
            if rd.reference != "complex_step" and _unstable(
                st, lambda a, b: abs(proj(a) - proj(b)), err
            ):
                _raise_unstable(label, name, st, opts)
            raise _fail(
                label=label,
                name=name,
                what=(
                    "adjoint identity <u, J v> (reference) vs <J^T u, v> (VJP), "
                    "random unit u, v along J^T u"
                ),
                err=err,
                parts=parts,
                ad=ad,
                ref_val=ref_val,
                st=st,
                ref=ref,
                opts=opts,
                reference=rd.reference,
            )


def _adjust_parts(parts: dict[str, float], reference: str) -> None:
    if reference == "complex_step":  # no subtraction, so no finite-difference rounding
        del parts["FD rounding"]
    elif reference == "richardson":  # R = (4 D(h/2) - D(h)) / 3 carries ~3x the rounding of D(h)
        parts["FD rounding"] *= 3


def _leaf_eps(prob: _Problem, i: int, opts: _Options) -> float | None:
    if prob.eps and prob.eps[i] is not None:
        return prob.eps[i]
    return opts.eps


def _step_kind(ref: _Reference, opts: _Options) -> str:
    if opts.reference == "richardson" and not (ref.fallback or ref.same_dtype):
        return "richardson"
    return "central"


# ---------------------------------------------------------------------------------------------
# Adapting user functions to flat problems.


@dataclass
class _Args:
    """The float leaves of ``args`` as a flat tuple, and how to put them back."""

    spec: optree.PyTreeSpec
    leaves: list[Any]
    float_idx: list[int]
    names: list[str]

    @property
    def xs(self) -> tuple[Tensor, ...]:
        return tuple(self.leaves[k] for k in self.float_idx)

    def rebuild(self, xs: Sequence[Any]) -> tuple[Any, ...]:
        leaves = list(self.leaves)
        for k, x in zip(self.float_idx, xs):
            leaves[k] = x
        return tuple(optree.tree_unflatten(self.spec, leaves))

    def rebuild_tangent(self, ts: Sequence[Any]) -> tuple[Any, ...]:
        leaves = [torch.zeros_like(x) if isinstance(x, Tensor) else x for x in self.leaves]
        for k, t in zip(self.float_idx, ts):
            leaves[k] = t
        return tuple(optree.tree_unflatten(self.spec, leaves))


def _prepare_args(call: str, fun: Any, args: Any, reference: str = "central") -> _Args:
    if not callable(fun):
        raise TypeError(
            f"{call}: f is not callable; expected a function, got {type(fun).__name__}. "
            "Pass the function itself, not the result of calling it."
        )
    if not isinstance(args, (tuple, list)):
        got = (
            f"a tensor of shape {tuple(args.shape)}"
            if isinstance(args, Tensor)
            else type(args).__name__
        )
        raise TypeError(
            f"{call}: args must be a tuple of positional arguments; expected a tuple, got {got}. "
            "Wrap a single argument: (x,)."
        )
    args = tuple(args)
    leaves, spec = flatten(args)
    names = leaf_paths(args, "args")
    leaves = [
        torch.tensor(x, dtype=torch.get_default_dtype())
        if isinstance(x, float)
        else torch.tensor(x, dtype=torch.complex128 if torch.get_default_dtype() == torch.float64 else torch.complex64)
        if isinstance(x, complex)
        else x.detach()
        if isinstance(x, Tensor)
        else x
        for x in leaves
    ]  # fmt: skip
    float_idx = [k for k, x in enumerate(leaves) if is_float_like(x)]
    if not float_idx:
        raise ValueError(
            f"{call}: args has no floating-point leaves; expected at least one float or complex "
            "tensor to differentiate, got none. Pass float inputs (ints are not differentiated)."
        )
    if reference == "complex_step":
        cplx = [
            names[k] for k in float_idx if isinstance(leaves[k], Tensor) and leaves[k].is_complex()
        ]
        if cplx:
            raise ValueError(
                f"{call}: reference='complex_step' needs real inputs; expected float tensors, got "
                f"complex leaves {cplx}. Use reference='central' (or 'richardson') for complex "
                "inputs."
            )
    return _Args(spec, leaves, float_idx, [names[k] for k in float_idx])


class _OutSelector:
    """Picks the float-tensor leaves out of a function's output pytree."""

    def __init__(self, call: str) -> None:
        self.call = call
        self.spec: optree.PyTreeSpec | None = None
        self.float_idx: list[int] = []
        self.names: list[str] = []
        self.leaves: list[Any] = []

    def select(self, out: Any) -> tuple[Tensor, ...]:
        leaves, spec = flatten(out)
        if self.spec is None:
            self.spec = spec
            self.leaves = leaves
            self.float_idx = [
                k
                for k, x in enumerate(leaves)
                if isinstance(x, Tensor) and (x.is_floating_point() or x.is_complex())
            ]
            paths = leaf_paths(out, "out")
            self.names = [paths[k] for k in self.float_idx]
        elif spec != self.spec:
            raise AssertionError(
                f"{self.call}: the output structure changed between calls:\n"
                + structure_errors(optree.tree_unflatten(self.spec, self.leaves), out, "out")
            )
        return tuple(leaves[k] for k in self.float_idx)

    def select_like(self, tree: Any, what: str) -> tuple[Any, ...]:
        assert self.spec is not None
        try:
            subs = self.spec.flatten_up_to(tree)
        except (ValueError, TypeError):
            expected = optree.tree_unflatten(self.spec, self.leaves)
            raise AssertionError(
                f"{self.call}: the {what} does not have the output's structure:\n"
                + structure_errors(expected, tree, what)
            ) from None
        return tuple(subs[k] for k in self.float_idx)

    def rebuild_cotangent(self, us: Sequence[Tensor]) -> Any:
        assert self.spec is not None
        leaves = [torch.zeros_like(x) if isinstance(x, Tensor) else x for x in self.leaves]
        for k, u in zip(self.float_idx, us):
            leaves[k] = u
        return optree.tree_unflatten(self.spec, leaves)


def _flat_problem(call: str, f: Callable[..., Any], a: _Args) -> tuple[_Problem, _OutSelector]:
    sel = _OutSelector(call)

    def flat(*xs: Tensor) -> tuple[Tensor, ...]:
        return sel.select(f(*a.rebuild(xs)))

    prob = _Problem(flat, a.xs, a.names)
    flat(*a.xs)  # fixes the output structure and its names
    prob.out_names = sel.names
    return prob, sel


def _args_flat_up_to(a: _Args, cts: Any, call: str, label: str) -> tuple[Any, ...]:
    expected = optree.tree_unflatten(a.spec, a.leaves)
    got: Any = tuple(cts)
    try:
        subs: list[Any] = a.spec.flatten_up_to(got)
    except (ValueError, TypeError):
        raise AssertionError(
            f"{call}: {_label_text(label)}: the cotangents do not have the structure of args:\n"
            + structure_errors(expected, tuple(cts), "cotangents")
        ) from None
    return tuple(subs[k] for k in a.float_idx)


def _options(
    call: str,
    atol: float | None,
    rtol: float | None,
    eps: Any,
    seed: int,
    err_msg: str,
    reference: str = "central",
    on_kink: str = "raise",
) -> _Options:
    for nm, val in (("atol", atol), ("rtol", rtol), ("eps", eps)):
        if nm == "eps" and not _is_number(val):
            continue  # a per-leaf eps, validated by _resolve_eps
        if val is not None and (isinstance(val, bool) or not isinstance(val, (int, float))):
            raise TypeError(
                f"{call}: {nm} must be a number; expected a float or None, got "
                f"{type(val).__name__} {val!r}."
            )
        if val is not None and not (val >= 0 and math.isfinite(val)):
            raise ValueError(
                f"{call}: {nm} must be finite and non-negative; expected a float >= 0, got {val!r}."
            )
    if eps == 0:
        raise ValueError(f"{call}: eps must be positive; expected a float > 0, got {eps!r}.")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"{call}: seed must be an int; expected an int, got {seed!r}.")
    if reference not in REFERENCES:
        raise ValueError(
            f"{call}: unknown reference; expected one of {REFERENCES}, got {reference!r}."
        )
    if on_kink not in ("raise", "reject"):
        raise ValueError(f"{call}: unknown on_kink; expected 'raise' or 'reject', got {on_kink!r}.")
    glob = float(eps) if _is_number(eps) and eps is not None else None
    return _Options(call, atol, rtol, glob, seed, err_msg, reference)


def _is_number(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _resolve_eps(
    call: str, eps: Any, args: tuple[Any, ...], names: list[str]
) -> list[float | None]:
    """Per-leaf steps from ``eps`` given as a dict by key path or as a pytree prefix of args."""
    if _is_number(eps):
        return []
    if (
        isinstance(eps, dict)
        and eps
        and all(isinstance(k, str) and k.startswith("args") for k in eps)
    ):
        by_path = dict(eps)
    else:
        full: Any = args
        errors = optree.prefix_errors(eps, full, none_is_leaf=True, namespace=NAMESPACE)
        if errors:
            detail = "\n".join(str(e("eps")) for e in errors[:3])
            raise ValueError(
                f"{call}: eps is neither a number, a dict by key path, nor a pytree prefix of "
                f"args; expected e.g. {{'args[0][\\'w\\']': 1e-3}}, got {eps!r}:\n{detail}"
            )
        accessors, leaves, _ = optree.tree_flatten_with_accessor(
            eps, none_is_leaf=True, namespace=NAMESPACE
        )
        by_path = {a.codify("args"): leaf for a, leaf in zip(accessors, leaves)}
    out: list[float | None] = []
    used: set[str] = set()
    for name in names:
        val = None
        for path, leaf in by_path.items():
            if name == path or (name.startswith(path) and name[len(path)] in "[."):
                val = leaf
                used.add(path)
        out.append(val)
    for path, val in by_path.items():
        if not _is_number(val) or (val is not None and not (val > 0 and math.isfinite(val))):
            raise ValueError(
                f"{call}: eps for {path} must be a positive float or None; expected a float "
                f"> 0, got {val!r}."
            )
    unknown = [p for p in by_path if p not in used and isinstance(eps, dict) and p in eps]
    if unknown:
        raise ValueError(
            f"{call}: eps names key paths that are not floating leaves of args; expected some "
            f"of {names}, got {unknown}."
        )
    return [None if v is None else float(v) for v in out]


def _kink_policy(on_kink: str) -> Callable[[Callable[[], None]], None]:
    def run(body: Callable[[], None]) -> None:
        try:
            body()
        except NonDifferentiablePointError:
            if on_kink != "reject":
                raise
            import hypothesis  # only when asked: importing the testing package never does

            hypothesis.reject()

    return run


def _fun_name(f: Any) -> str:
    return str(getattr(f, "__name__", type(f).__name__))


# ---------------------------------------------------------------------------------------------
# Public checks.


@_highest_matmul_precision()
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

    Raises:
        AssertionError: The JVP disagrees with the finite differences (the report names the check,
            the input leaf, the error and the parts of the tolerance).
        NonDifferentiablePointError: ``f`` has a kink at ``args``.

    Examples:
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
    call = f"check_jvp({_fun_name(f)}, f_jvp, args)"
    opts = _options(call, atol, rtol, eps, seed, err_msg, reference, on_kink)
    a = _prepare_args(call, f, args, reference)
    prob, sel = _flat_problem(call, f, a)
    prob.eps = _resolve_eps(call, eps, tuple(args), a.names)

    def jvp(xs: tuple[Tensor, ...], ts: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], ...]:
        res = f_jvp(a.rebuild(xs), a.rebuild_tangent(ts))
        if not isinstance(res, (tuple, list)) or len(res) != 2:
            raise AssertionError(
                f"{call}: f_jvp returned {type(res).__name__}; expected a pair "
                "(primal_out, tangent_out)."
            )
        return sel.select(res[0]), sel.select_like(res[1], "tangent output")

    _kink_policy(on_kink)(lambda: _check_jvp_flat(prob, jvp, "JVP", opts))


@_highest_matmul_precision()
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

    Raises:
        AssertionError: The VJP disagrees with the finite differences.
        NonDifferentiablePointError: ``f`` has a kink at ``args``.

    Examples:
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
    call = f"check_vjp({_fun_name(f)}, f_vjp, args)"
    opts = _options(call, atol, rtol, eps, seed, err_msg, reference, on_kink)
    a = _prepare_args(call, f, args, reference)
    prob, sel = _flat_problem(call, f, a)
    prob.eps = _resolve_eps(call, eps, tuple(args), a.names)

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
                    f"{len(a.spec.children())} cotangents, one per argument."
                )
            return _args_flat_up_to(a, cts, call, "VJP")

        return sel.select(out), flat_fn

    _kink_policy(on_kink)(lambda: _check_vjp_flat(prob, vjp, "VJP", opts))


def _fwd_problem(prob: _Problem) -> _Problem:
    """The JVP function of ``prob`` as a problem of its own (primals and tangents)."""
    n = len(prob.xs)
    g = prob.fun

    def g_fwd(*zs: Tensor) -> tuple[Tensor, ...]:
        out, tout = functorch_utils.jvp(g, tuple(zs[:n]), tuple(zs[n:]))
        return tuple(out) + _zero_none(tuple(tout), tuple(out))

    names = [f"primals {nm}" for nm in prob.names] + [f"tangents {nm}" for nm in prob.names]
    out_names = [f"primal {nm}" for nm in prob.out_names] + [
        f"tangent {nm}" for nm in prob.out_names
    ]
    return _Problem(g_fwd, prob.xs + prob.xs, names, out_names, prob.eps + prob.eps)


def _rev_problem(prob: _Problem) -> _Problem:
    """``x -> vjp(f, x)[1](f(x))`` as a problem of its own, as JAX's check_grads does."""
    g = prob.fun

    def g_rev(*xs: Tensor) -> tuple[Tensor, ...]:
        out, fn = functorch_utils.vjp(g, *xs)
        return _zero_none(tuple(fn(tuple(out))), xs)

    out_names = [f"cotangent {nm}" for nm in prob.names]
    return _Problem(g_rev, prob.xs, list(prob.names), out_names, list(prob.eps))


def _transform_jvp(g: _FlatFun) -> _FlatJvp:
    def jvp(xs: tuple[Tensor, ...], ts: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], ...]:
        out, tout = functorch_utils.jvp(g, xs, ts)
        return tuple(out), tuple(tout)

    return jvp


def _transform_vjp(g: _FlatFun) -> _FlatVjp:
    def vjp(*xs: Tensor) -> tuple[tuple[Tensor, ...], Callable[[tuple[Tensor, ...]], Any]]:
        out, fn = functorch_utils.vjp(g, *xs)
        return tuple(out), fn

    return vjp


@_highest_matmul_precision()
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
    "JVP of JVP", "VJP of JVP", "JVP of VJP" and "VJP of VJP" at order 2.

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
    precision during the check.

    Args:
        f: The function, taking ``*args`` and returning a pytree of tensors.
        args: Tuple of positional arguments, each a pytree of tensors.
        order: Highest derivative order checked (1 or more).
        modes: Which of ``"fwd"`` and ``"rev"`` to check.
        atol: Extra absolute tolerance added to the computed tolerance.
        rtol: Relative tolerance overriding the dtype's default.
        eps: Finite-difference step overriding the default (used as given, as in JAX).
        seed: Seed of the random directions (reported on failure).

    Raises:
        AssertionError: A derivative disagrees with finite differences, or ``f`` is not
            deterministic. The report names the check (e.g. "order 2: VJP of VJP"), the input
            leaf (e.g. ``args[0]['w']``), the error, the tolerance and its parts, and the seed.
        NonDifferentiablePointError: ``f`` is not differentiable at ``args`` (a kink).
        TypeError: ``f`` is not callable, ``args`` is not a tuple, or an option has the wrong type.
        ValueError: Bad ``order``/``modes``, no floating leaves, a non-finite output, or a step
            below the resolution of an input's dtype.

    Examples:
        >>> import torch
        >>> from functorch_utils.testing import check_grads
        >>> def f(params, x):
        ...     return torch.tanh(x @ params["w"] + params["b"]).sum()
        >>> params = {"w": torch.randn(3, 2), "b": torch.zeros(2)}
        >>> check_grads(f, (params, torch.randn(4, 3)), order=2)
    """
    call = f"check_grads({_fun_name(f)}, args)"
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
    opts = _options(call, atol, rtol, eps, seed, "", reference, on_kink)
    a = _prepare_args(call, f, args, reference)
    prob, _ = _flat_problem(call, f, a)
    prob.eps = _resolve_eps(call, eps, tuple(args), a.names)

    def rec(p: _Problem, k: int, prefix: str) -> None:
        if "fwd" in modes:
            label = f"JVP of {prefix}" if prefix else "JVP"
            _check_jvp_flat(p, _transform_jvp(p.fun), label, opts)
            if k > 1:
                rec(_fwd_problem(p), k - 1, label)
        if "rev" in modes:
            label = f"VJP of {prefix}" if prefix else "VJP"
            _check_vjp_flat(p, _transform_vjp(p.fun), label, opts)
            if k > 1:
                rec(_rev_problem(p), k - 1, label)

    _kink_policy(on_kink)(lambda: rec(prob, order, ""))
