"""Finite-difference numerics: steps, references, tolerances, kinks, the matmul-precision pin.

Every number here is explained, with the measurements behind it, in the testing guide
(``docs/testing.md``, "The numbers"); the comments name the section they come from. The scheme
is NOTE [the finite-difference scheme] below, the references NOTE [references].
"""

from __future__ import annotations

import math
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from ._report import ComplexStepWarning, NonDifferentiablePointError, label_text

__all__ = [
    "COMPLEX_STEP",
    "EPS64",
    "REFERENCES",
    "Reference",
    "RefDerivative",
    "Stencil",
    "as_tuple",
    "check_kink",
    "check_reference",
    "default_rtol",
    "complex_step",
    "eps_of",
    "finite_difference_step",
    "highest_matmul_precision",
    "make_reference",
    "norm",
    "pair",
    "random_unit",
    "raise_unstable",
    "ref_dtype",
    "reference_derivative",
    "rtol_of",
    "same_bits",
    "stencil",
    "step",
    "step_how",
    "tolerance_parts",
    "unstable",
    "vec",
]

Tensor = torch.Tensor

REFERENCES = ("central", "richardson", "complex_step", "same_dtype")
COMPLEX_STEP = 1e-20  # docs/testing.md, "The numbers": complex step
EPS64 = torch.finfo(torch.float64).eps


# ---------------------------------------------------------------------------------------------
# dtypes, vectors and pairings


def eps_of(dtype: torch.dtype) -> float:
    """Machine epsilon of a dtype (of its real part for complex dtypes)."""
    return float(torch.finfo(dtype.to_real() if dtype.is_complex else dtype).eps)


def ref_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the reference runs in: float64, or complex128 for complex inputs."""
    return torch.complex128 if dtype.is_complex else torch.float64


def vec(outs: Sequence[Tensor]) -> Tensor:
    """All output leaves as one float64 (or complex128) vector."""
    if not outs:
        return torch.zeros(0, dtype=torch.float64)
    dt = torch.complex128 if any(o.is_complex() for o in outs) else torch.float64
    return torch.cat([o.detach().reshape(-1).to(dt) for o in outs])


def norm(t: Tensor) -> float:
    return float(torch.linalg.vector_norm(t)) if t.numel() else 0.0


# NOTE [complex pairing]
# The contract follows JAX for complex numbers (grad of a real function of z is the conjugate
# of torch's), so the cotangent of ``functorch_utils.vjp`` pairs with a tangent bilinearly:
# Re sum(u * J v) == Re sum(vjp(u) * v). For torch's convention this would be Re vdot.
# The two coincide for real tensors.
def pair(a: Tensor, b: Tensor) -> float:
    """The real pairing under which a VJP is the adjoint of a JVP (NOTE [complex pairing])."""
    if not a.numel():
        return 0.0
    return float(torch.sum(a * b).real)


def same_bits(a: Sequence[Tensor], b: Sequence[Tensor]) -> bool:
    """Whether two tuples of tensors are bitwise equal (NaNs in the same places count as equal)."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if x.shape != y.shape or x.dtype != y.dtype:
            return False
        xn, yn = torch.isnan(x), torch.isnan(y)
        if not torch.equal(xn, yn) or not torch.equal(x[~xn], y[~yn]):
            return False
    return True


def random_unit(x: Tensor, gen: torch.Generator) -> Tensor:
    """A random unit direction shaped like ``x``, exactly representable in ``x``'s dtype."""
    v = torch.randn(x.shape, dtype=ref_dtype(x.dtype), generator=gen)
    v = v / torch.linalg.vector_norm(v)
    return v.to(x.dtype).to(ref_dtype(x.dtype))


def as_tuple(out: Any, what: str, call: str) -> tuple[Tensor, ...]:
    if not isinstance(out, (tuple, list)):
        raise AssertionError(f"{call}: {what} returned {type(out).__name__}; expected a tuple.")
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# The matmul-precision pin.
#
# NOTE [matmul precision under threads]
# TF32 matmuls made vmap-vs-loop differ by thousands of eps on an H100 (docs/testing.md, "The
# numbers": matmul precision), so every check runs at "highest" float32 matmul precision. The
# setting is process-wide: with several threads checking at once, a thread that saved the
# setting while another had already pinned it would "restore" "highest" for good. So the pin is
# shared: the first thread in saves the setting and pins it, the last one out restores the
# value the first one found. Nested checks in one thread count like threads.

_PRECISION_LOCK = threading.Lock()
_precision_users = 0
_precision_saved = "highest"


@contextmanager
def highest_matmul_precision() -> Iterator[None]:
    """Runs the body at "highest" float32 matmul precision; restores the setting found exactly."""
    global _precision_users, _precision_saved
    with _PRECISION_LOCK:
        if _precision_users == 0:
            _precision_saved = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("highest")
        _precision_users += 1
    try:
        yield
    finally:
        with _PRECISION_LOCK:
            _precision_users -= 1
            if _precision_users == 0:
                torch.set_float32_matmul_precision(_precision_saved)


# ---------------------------------------------------------------------------------------------
# Steps and tolerances (docs/testing.md, "The numbers": steps, rtol table, tolerance terms)
#
# NOTE [the finite-difference scheme]
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
# - Kinks: one-sided slopes whose gap does not shrink when h halves raise
#   NonDifferentiablePointError instead of giving a wrong verdict.


def _power_of_two(eps_ref: float, power: float, scale: float) -> float:
    return float(2.0 ** round(math.log2(eps_ref**power * max(1.0, float(scale)))))


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

    Example:
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
    eps_ref = eps_of(dtype) if reference == "same_dtype" else EPS64
    return _power_of_two(eps_ref, 1 / 5 if reference == "richardson" else 1 / 3, scale)


def step(x: Tensor, eps_ref: float, eps: float | None, kind: str = "central") -> float:
    """The step for leaf ``x``: ``eps`` as given, else the scheme's power of two."""
    if eps is not None:
        return float(eps)
    scale = max(1.0, float(x.abs().max())) if x.numel() else 1.0
    return _power_of_two(eps_ref, 1 / 5 if kind == "richardson" else 1 / 3, scale)


def rtol_of(dtype: torch.dtype, reference: str = "central") -> float:
    """Default relative tolerance of the tested dtype (docs/testing.md, "The numbers": rtol)."""
    real = dtype.to_real() if dtype.is_complex else dtype
    if real == torch.float64:
        return {"richardson": 1e-8, "complex_step": 1e-10}.get(reference, 1e-6)
    if real == torch.float32:
        return {"richardson": 1e-5, "complex_step": 1e-5}.get(reference, 2e-4)
    return 4 * torch.finfo(real).eps


# ---------------------------------------------------------------------------------------------
# The reference function: f, upcast to float64 where it can be


@dataclass
class Reference:
    """``fun`` at the points ``xs`` the reference differences around, and the rounding levels."""

    fun: Callable[..., tuple[Tensor, ...]]
    xs: tuple[Tensor, ...]
    f0: tuple[Tensor, ...]  # fun(*xs)
    eps_ref: float  # epsilon of the reference
    eps_d: float  # epsilon of the tested dtype
    fallback: bool  # could not be upcast: differenced in the tested dtype
    outs_d: tuple[Tensor, ...]  # the outputs in the tested dtype
    same_dtype: bool = False  # reference="same_dtype"

    @property
    def loosened(self) -> bool:
        return self.fallback or self.same_dtype

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


def _upcast(
    fun: Callable[..., Any], xs: tuple[Tensor, ...], outs_d: tuple[Tensor, ...], call: str
) -> tuple[tuple[Tensor, ...], tuple[Tensor, ...]] | None:
    """``(xs64, fun(*xs64))`` when ``fun`` runs in float64 with outputs like ``outs_d``, else None."""
    xs64 = tuple(x.to(ref_dtype(x.dtype)) for x in xs)
    try:
        f0 = as_tuple(fun(*xs64), "the function", call)
    except Exception:  # not dtype-polymorphic: fall back to the tested dtype
        return None
    ok = len(f0) == len(outs_d) and all(
        eps_of(o.dtype) <= EPS64 and o.shape == od.shape for o, od in zip(f0, outs_d)
    )
    return (xs64, f0) if ok else None


def make_reference(
    fun: Callable[..., Any], xs: tuple[Tensor, ...], call: str, reference: str = "central"
) -> Reference:
    outs_d = as_tuple(fun(*xs), "the function", call)
    eps_d = max([eps_of(x.dtype) for x in xs] + [eps_of(o.dtype) for o in outs_d])
    if reference == "same_dtype":
        return Reference(fun, xs, outs_d, eps_d, eps_d, False, outs_d, same_dtype=True)
    need_upcast = any(eps_of(x.dtype) > EPS64 for x in xs)
    if need_upcast:
        up = _upcast(fun, xs, outs_d, call)
        if up is not None:
            return Reference(fun, up[0], up[1], EPS64, eps_d, False, outs_d)
    return Reference(fun, xs, outs_d, eps_d, eps_d, need_upcast, outs_d)


def check_reference(ref: Reference, out_names: Sequence[str], call: str) -> None:
    """The reference is deterministic (bitwise) and finite at the checked point."""
    again = as_tuple(ref.fun(*ref.xs), "the function", call)
    if not same_bits(ref.f0, again):
        raise AssertionError(
            f"{call}: non-deterministic function: two evaluations at the same inputs "
            "differ bitwise, so finite differences cannot check its derivatives. Fix the "
            "randomness (seed it inside the function, or pass the noise in as an argument)."
        )
    for name, o in zip(out_names, ref.f0):
        if not torch.isfinite(o).all():
            raise ValueError(
                f"{call}: the output {name} is not finite at the checked point; expected "
                "finite values, got NaN or inf. Check the function at a point where it is finite."
            )


# ---------------------------------------------------------------------------------------------
# The stencil: f around x along one direction of one input leaf


@dataclass
class Stencil:
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


def stencil(ref: Reference, i: int, v: Tensor, h: float, name: str, call: str) -> Stencil:
    x = ref.xs[i]
    v = v.to(x.dtype)

    def at(t: float) -> Tensor:
        xs = list(ref.xs)
        xs[i] = x + t * v
        return vec(as_tuple(ref.fun(*xs), "the function", call))

    if torch.equal(x + h * v, x) or torch.equal(x - h * v, x):
        raise ValueError(
            f"{call}: the finite-difference step h={h:.3g} is below the resolution of "
            f"{name} (dtype {x.dtype}, max |x| {float(x.abs().max()):.3g}); expected x + h*v != x, "
            "got x + h*v == x. Upcast the input to float64 (or pass a larger eps)."
        )
    return Stencil(h, vec(ref.f0), at(h), at(-h), at(h / 2), at(-h / 2), at)


# ---------------------------------------------------------------------------------------------
# Kinks (docs/testing.md, "The numbers": kink rule)


def check_kink(st: Stencil, ref: Reference, name: str, label: str, call: str) -> None:
    """Raises when the one-sided slopes differ far beyond the noise and do not close as h halves."""
    h = st.h
    gap = norm(st.fp - 2 * st.f0 + st.fm) / h
    gap_half = norm(st.fp2 - 2 * st.f0 + st.fm2) / (h / 2)
    scale = max(norm(st.fp2), norm(st.f0), norm(st.fm2), norm(st.fp), norm(st.fm))
    noise_half = 4 * ref.eps_ref * scale / (h / 2)
    if gap_half > 1e3 * noise_half and gap_half > 0.75 * gap:
        raise NonDifferentiablePointError(
            f"{call}: {label_text(label)}: the function is not differentiable at the "
            f"checked point along {name}: one-sided slopes differ by {gap:.3g} at step "
            f"h={h:.3g} and by {gap_half:.3g} at h/2 (a smooth function's gap halves). "
            "Move the point away from kinks and ties (e.g. relu or abs at 0, max with ties)."
        )


def unstable(st: Stencil, dist: Callable[[Tensor, Tensor], float], err: float) -> bool:
    """Whether the finite differences fail to converge like h**2 (a kink inside the stencil).

    Smooth functions give D(h) - D(h/2) = 4 (D(h/2) - D(h/4)) to leading order. A kink between
    h/4 and h from x breaks that ratio; it only matters if the estimates move by a fair part of
    the error being reported.
    """
    d1, d2, d4 = st.d, st.d_half, st.d_quarter()
    return dist(d2, d4) > 0.5 * dist(d1, d2) and dist(d1, d4) > 0.1 * err


def raise_unstable(label: str, name: str, st: Stencil, call: str) -> None:
    raise NonDifferentiablePointError(
        f"{call}: {label_text(label)}: the finite differences along {name} do not "
        f"converge (step h={st.h:.3g} and h/2 disagree by more than the error): a kink or "
        "discontinuity lies within the stencil. Move the point away from kinks and ties."
    )


# ---------------------------------------------------------------------------------------------
# Tolerance terms (docs/testing.md, "The numbers": tolerance terms)


def tolerance_parts(
    rtol: float,
    scale: float,
    st: Stencil,
    ref: Reference,
    u_norm: float,
    x: Tensor,
    atol: float | None,
    reference: str = "central",
) -> dict[str, float]:
    """The parts of the tolerance, by name (the truncation part is added by the caller)."""
    h = st.h
    x_inf = max(1.0, float(x.abs().max())) if x.numel() else 1.0
    parts = {
        f"relative (rtol {rtol:.3g} * scale {scale:.3g})": rtol * scale,
        "FD rounding": 10 * ref.eps_ref * u_norm * max(norm(st.fp), norm(st.fm)) / h,
        "dtype rounding": 10 * ref.eps_d * u_norm * norm(st.f0) / x_inf,
    }
    if reference == "complex_step":  # no subtraction, so no finite-difference rounding
        del parts["FD rounding"]
    elif reference == "richardson":  # R = (4 D(h/2) - D(h)) / 3 carries ~3x the rounding of D(h)
        parts["FD rounding"] *= 3
    if atol:
        parts["atol"] = float(atol)
    return parts


def default_rtol(ref: Reference, dtypes: Sequence[torch.dtype], reference: str) -> float:
    """The rtol of the loosest tested dtype; 4x the central one when the reference is loosened."""
    if ref.loosened:
        return 4 * max(rtol_of(d, "central") for d in dtypes)
    return max(rtol_of(d, reference) for d in dtypes)


# ---------------------------------------------------------------------------------------------
# The reference derivative along v: central, Richardson or a guarded complex step
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


def complex_step(ref: Reference, i: int, v: Tensor) -> tuple[Tensor | None, str]:
    """``Im F(x + i t v) / t`` along input ``i`` (all inputs complex128), or why it failed."""
    t = COMPLEX_STEP
    xs = []
    for j, x in enumerate(ref.xs):
        x64 = x.to(torch.float64)
        im = t * v.to(torch.float64) if j == i else torch.zeros_like(x64)
        xs.append(torch.complex(x64, im))
    try:
        outs = as_tuple(ref.fun(*xs), "the function", "complex step")
    except Exception as e:  # not complex-safe (relu, clamp, comparisons, dtype-pinned weights)
        return None, f"the function failed on complex input ({type(e).__name__}: {e})"
    if len(outs) != len(ref.f0) or any(o.shape != r.shape for o, r in zip(outs, ref.f0)):
        return None, "the function's outputs changed shape on complex input"
    # A real output leaf did not see the imaginary perturbation (or dropped it, as .real and
    # abs() do): its complex-step derivative is 0, which the central cross-check then judges.
    parts = [
        (o.imag / t if o.is_complex() else torch.zeros(o.shape)).to(torch.float64) for o in outs
    ]
    return vec(parts), ""


@dataclass
class RefDerivative:
    d: Tensor  # the reference derivative along v (flat float64 vector)
    trunc: Tensor | None  # its truncation estimate, a vector like d
    trunc_factor: float
    reference: str  # the reference actually used (after a complex-step fallback)


def reference_derivative(
    st: Stencil,
    ref: Reference,
    i: int,
    v: Tensor,
    reference: str,
    dist: Callable[[Tensor, Tensor], float],
    guard_tol: Callable[[Tensor], float],
    where: str,
) -> RefDerivative:
    """The reference derivative; ``where`` ("<call>: <check>", "<leaf>") heads the warning."""
    if reference == "richardson" and not ref.loosened:
        delta = (st.d_half - st.d) / 3
        return RefDerivative(st.d_half + delta, delta, 1.0, "richardson")
    central = RefDerivative(st.d, st.d - st.d_half, 2.0, "central")
    if reference != "complex_step":
        return central
    cs, why = complex_step(ref, i, v)
    if cs is not None and cs.shape == st.d.shape:
        gap = dist(cs, st.d)
        tol = guard_tol(cs)
        if gap <= tol:
            return RefDerivative(cs, None, 0.0, "complex_step")
        why = (
            f"it disagrees with a central difference by {gap:.3g} > {tol:.3g} (the code is not "
            "holomorphic: conj(), abs(), .real)"
        )
    warnings.warn(
        f"{where}: {why}; using central differences for this leaf.",
        ComplexStepWarning,
        stacklevel=5,
    )
    return central


def step_how(reference: str, st: Stencil, ref: Reference) -> str:
    """How the reference was computed, for a failure report."""
    how = {
        "central": "central differences",
        "richardson": "Richardson extrapolation of central differences at h and h/2",
        "complex_step": f"complex step t = {COMPLEX_STEP:g}, guarded by central differences",
        "same_dtype": "central differences",
    }[reference]
    return f"step h = 2**{round(math.log2(st.h))} ({st.h:.3g}), {how}; {ref.describe()}"
