"""More of ``jax.random``'s samplers, on the keys and helpers of :mod:`._random`.

Each sampler follows the algorithm of ``jax/_src/random/core.py`` (JAX 0.10, default 32-bit
mode) on the same bits, so the same key, shape and dtype give JAX's numbers: bit for bit for
``rademacher``; equal in practice for ``geometric``, ``binomial`` and ``multinomial`` (integer
results of float tests, which differ only if a value falls within an ulp of a bound); within a
few ulps where a
transcendental function (``log``, ``exp``, ``tan``, ``pow``, ``sqrt``, ``erfinv``) or a
factorisation (``orthogonal``'s QR) is evaluated by torch instead of XLA. The samplers built on
gamma draws (``t``, ``chisquare``, ``f``, ``generalized_normal``, ``ball``) go through
:func:`._random._gamma`, so they compile under ``jit`` without graph breaks (the rejection loop
is one custom operator) and are differentiable in their parameters by implicit
reparameterisation, as JAX's.

# NOTE [extra samplers' dtypes]
# As the other samplers here (NOTE [JAX's default dtypes] in _random.py): float results default
# to the floating dtype of a tensor parameter, else ``torch.get_default_dtype()``; integer results
# (``rademacher``, ``geometric``) default to int32. ``rademacher``'s coin is a float uniform
# compared with 0.5, as JAX's ``bernoulli(key, 0.5)`` is: float64 when the result is int64 or
# float64 (the stream of JAX with ``jax_enable_x64``, as ``randint``'s int64), else the default
# dtype. ``geometric`` and ``binomial`` draw their uniforms in ``p``'s floating dtype, as JAX.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch

from . import _prng, _torch_hooks
from ._errors import describe, raise_type, raise_value
from ._random import (
    Shape,
    _any,
    _as_dtype,
    _check_any_key,
    _check_broadcast,
    _default_shape,
    _float_dtype,
    _float_param,
    _fma,
    _gamma,
    _int_dtype,
    _normal,
    _one_param_args,
    _param_dtype,
    _per_key,
    _split,
    _to_front,
    _uniform,
)

__all__ = [
    "rademacher",
    "cauchy",
    "lognormal",
    "chisquare",
    "t",
    "f",
    "pareto",
    "weibull_min",
    "rayleigh",
    "maxwell",
    "double_sided_maxwell",
    "wald",
    "triangular",
    "geometric",
    "generalized_normal",
    "ball",
    "orthogonal",
    "binomial",
    "multinomial",
]


def _const(value: float, like: torch.Tensor) -> torch.Tensor:
    """A constant in ``like``'s dtype, as JAX's ``lax._const`` (rounded to the dtype first)."""
    return torch.tensor(value, dtype=like.dtype, device=like.device)


def _fused(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` rounded once, as XLA's fused multiply-add (float32/float64), differentiable."""
    plain = a * b + c
    if plain.dtype not in (torch.float32, torch.float64):
        return plain
    fused = _fma(a.detach(), b.detach(), c.detach())
    if plain.requires_grad or _torch_hooks.current_level() is not None:
        return fused + (plain - plain.detach())
    return fused


def _coin_signs(k: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """JAX's ``rademacher``: ``2 * bernoulli(key, 0.5) - 1`` in ``dtype``.

    The coin is a uniform of JAX's default float: float64 for 64-bit results (JAX with
    ``jax_enable_x64``), else the default dtype (NOTE [extra samplers' dtypes]).
    """
    coin = torch.float64 if dtype in (torch.int64, torch.float64) else torch.get_default_dtype()
    heads = _uniform(k, shape, coin) < 0.5
    return (2 * heads.to(dtype) - 1).to(dtype)


def _rademacher_dtype(call: str, dtype: Any) -> torch.dtype:
    dt = torch.int32 if dtype is None else _as_dtype(call, dtype)
    if dt == torch.bool or dt.is_complex or dt in (torch.uint16, torch.uint32, torch.uint64):
        raise_type(
            call,
            "dtype must be a signed integer or floating dtype",
            "torch.int32 (the default), another signed integer dtype, uint8 or a float dtype",
            str(dt),
            "Pass dtype=torch.int32, or a float dtype such as torch.float32 for float signs.",
        )
    return dt


def _check_index(call: str, name: str, value: Any) -> int:
    """A static non-negative integer (a Python int or a 0-d integer tensor)."""
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        value = int(value)
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise_type(
            call,
            f"{name} must be a non-negative integer",
            "a Python int such as 3",
            describe(value),
            f"Pass {name} as an int, e.g. {name}=3.",
        )
    return int(value)


# ---------------------------------------------------------------------------------------------
# Discrete: rademacher, geometric


def rademacher(key: torch.Tensor, shape: Shape = (), dtype: Any = None) -> torch.Tensor:
    """Random signs, -1 or +1 with equal probability: ``jax.random.rademacher``, bit for bit.

    ``2 * bernoulli(key, 0.5, shape) - 1``, as JAX.

    Args:
        key: a single key.
        shape: the output shape.
        dtype: the result's dtype: ``torch.int32`` by default (JAX's default mode), another
            signed integer dtype, ``torch.uint8`` or a float dtype. ``torch.int64`` and
            ``torch.float64`` give the numbers of JAX with ``jax_enable_x64`` (float64 coins).

    Returns:
        A tensor of ``shape`` whose entries are -1 or 1.

    Example:
        >>> from functorch_utils import random
        >>> random.rademacher(random.key(0), (6,))
        tensor([-1, -1,  1,  1, -1,  1], dtype=torch.int32)
    """
    call = "random.rademacher(key, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _rademacher_dtype(call, dtype)
    return _coin_signs(k, _prng.check_shape(call, shape), dt)


def geometric(
    key: torch.Tensor, p: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Geometric(p) draws, the number of trials up to the first success: ``jax.random.geometric``.

    ``floor(log(u) / log1p(-p)) + 1`` with ``u`` uniform in ``p``'s floating dtype (``u == 0``
    counts as 1, as JAX). Values equal JAX's except where the quotient rounds across an integer
    (torch's ``log`` vs XLA's: an ulp apart).

    Args:
        key: a single key.
        p: success probability in ``(0, 1]``, a float or a tensor.
        shape: the output shape (default ``p``'s shape); ``p`` broadcasts to it.
        dtype: an integer dtype (default ``torch.int32``).

    Returns:
        Integers ``>= 1`` of ``shape``.

    Example:
        >>> from functorch_utils import random
        >>> random.geometric(random.key(0), 0.3, (6,))
        tensor([1, 1, 4, 3, 2, 6], dtype=torch.int32)
    """
    call = "random.geometric(key, p, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _int_dtype(call, dtype)
    if isinstance(p, torch.Tensor) and p.is_floating_point():
        pdt = p.dtype
    else:
        pdt = torch.get_default_dtype()
    pt = _float_param(call, "p", p, pdt, k.device)
    shape_t = _default_shape(call, shape, pt)
    u = _uniform(k, shape_t, pdt)
    u = torch.where(u == 0, torch.ones_like(u), u)
    g = torch.floor(torch.log(u) / torch.log1p(-pt).broadcast_to(shape_t)) + 1
    return g.to(dt)


# ---------------------------------------------------------------------------------------------
# Continuous, from uniform draws


def cauchy(key: torch.Tensor, shape: Shape = (), dtype: Any = None) -> torch.Tensor:
    """Standard Cauchy draws, ``tan(pi * (u - 0.5))``: ``jax.random.cauchy``.

    ``u`` is uniform in ``[eps, 1)`` (bit for bit JAX's); ``tan`` is torch's, within an ulp or
    two of XLA's (more near the poles, where ``tan`` is ill-conditioned).

    Args:
        key: a single key.
        shape: the output shape.
        dtype: a float dtype (default ``torch.get_default_dtype()``).

    Example:
        >>> from functorch_utils import random
        >>> random.cauchy(random.key(0), (3,))
        tensor([ 6.0275, 14.8379, -0.5817])
    """
    call = "random.cauchy(key, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _float_dtype(call, dtype)
    u = _uniform(k, _prng.check_shape(call, shape), dt, torch.finfo(dt).eps, 1.0)
    return torch.tan(_const(math.pi, u) * (u - _const(0.5, u)))


def pareto(
    key: torch.Tensor, b: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Pareto(b) draws on ``[1, inf)``, ``exp(exponential / b)``: ``jax.random.pareto``.

    Args:
        key: a single key.
        b: the shape parameter, positive (a float or a tensor; differentiable).
        shape: the output shape (default ``b``'s shape).
        dtype: a float dtype (default: ``b``'s floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.pareto(random.key(0), 3.0, (3,))
        tensor([2.6735, 3.6007, 1.1441])
    """
    call = "random.pareto(key, b, shape, dtype)"
    k, dt, bt, shape_t = _one_param_args(call, key, "b", b, shape, dtype)
    e = -torch.log1p(-_uniform(k, shape_t, dt))
    return torch.exp(e / bt)


def weibull_min(
    key: torch.Tensor, scale: Any, concentration: Any, shape: Shape = (), dtype: Any = None
) -> torch.Tensor:
    """Weibull draws, ``(-log1p(-u)) ** (1 / concentration) * scale``: ``jax.random.weibull_min``.

    As JAX, ``shape`` is the shape of the uniform draws and the result is its broadcast with the
    parameters' shapes.

    Args:
        key: a single key.
        scale: the scale parameter, positive (differentiable).
        concentration: the concentration (shape) parameter, positive (differentiable).
        shape: the shape of the draws (default ``()``).
        dtype: a float dtype (default: the parameters' floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.weibull_min(random.key(0), 1.0, 2.0, (3,))
        tensor([1.7176, 1.9605, 0.6355])
    """
    call = "random.weibull_min(key, scale, concentration, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _param_dtype(call, dtype, scale, concentration)
    st = _float_param(call, "scale", scale, dt, k.device)
    ct = _float_param(call, "concentration", concentration, dt, k.device)
    u = _uniform(k, _prng.check_shape(call, shape), dt)
    return torch.pow(-torch.log1p(-u), 1.0 / ct) * st


def rayleigh(
    key: torch.Tensor, scale: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Rayleigh(scale) draws, ``scale * sqrt(-2 log u)``: ``jax.random.rayleigh``.

    Args:
        key: a single key.
        scale: the scale parameter, positive (differentiable).
        shape: the output shape (default ``scale``'s shape).
        dtype: a float dtype (default: ``scale``'s floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.rayleigh(random.key(0), 1.0, (3,))
        tensor([0.3279, 0.2081, 1.4844])
    """
    call = "random.rayleigh(key, scale, shape, dtype)"
    k, dt, st, shape_t = _one_param_args(call, key, "scale", scale, shape, dtype)
    u = _uniform(k, shape_t, dt)
    return st.broadcast_to(shape_t) * torch.sqrt(torch.log(u) * _const(-2.0, u))


def triangular(
    key: torch.Tensor,
    left: Any,
    mode: Any,
    right: Any,
    shape: Shape | None = None,
    dtype: Any = None,
) -> torch.Tensor:
    """Triangular(left, mode, right) draws by the inverse CDF: ``jax.random.triangular``.

    Args:
        key: a single key.
        left: the lower limit.
        mode: the peak, ``left <= mode <= right``.
        right: the upper limit, greater than ``left``.
        shape: the output shape (default: the parameters' broadcast shape).
        dtype: a float dtype (default: the parameters' floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.triangular(random.key(0), 0.0, 0.5, 2.0, (3,))
        tensor([1.6038, 1.7465, 0.5847])
    """
    call = "random.triangular(key, left, mode, right, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _param_dtype(call, dtype, left, mode, right)
    lo = _float_param(call, "left", left, dt, k.device)
    md = _float_param(call, "mode", mode, dt, k.device)
    hi = _float_param(call, "right", right, dt, k.device)
    shape_t = _default_shape(call, shape, lo, md, hi)
    lo, md, hi = (x.broadcast_to(shape_t) for x in (lo, md, hi))
    fc = (md - lo) / (hi - lo)
    u = _uniform(k, shape_t, dt)
    out1 = lo + torch.sqrt(u * (hi - lo) * (md - lo))
    out2 = hi - torch.sqrt((1 - u) * (hi - lo) * (hi - md))
    return torch.where(u < fc, out1, out2)


# ---------------------------------------------------------------------------------------------
# Continuous, from normal draws


def lognormal(
    key: torch.Tensor, sigma: Any = 1.0, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Log-normal draws, ``exp(sigma * normal)``: ``jax.random.lognormal``.

    Args:
        key: a single key.
        sigma: the standard deviation of the underlying normal (default 1; differentiable).
        shape: the output shape (default ``sigma``'s shape).
        dtype: a float or complex dtype (default: ``sigma``'s floating dtype, else the default
            dtype); complex draws exponentiate JAX's complex normal.

    Example:
        >>> from functorch_utils import random
        >>> random.lognormal(random.key(0), 0.5, (3,))
        tensor([2.2509, 2.7528, 0.8051])
    """
    call = "random.lognormal(key, sigma, shape, dtype)"
    k = _check_any_key(call, key)
    if dtype is not None and _as_dtype(call, dtype).is_complex:
        dt = _as_dtype(call, dtype)
    else:
        dt = _param_dtype(call, dtype, sigma)
    st = _float_param(call, "sigma", sigma, dt, k.device)
    shape_t = _default_shape(call, shape, st)
    return torch.exp(_normal(k, shape_t, dt) * st)


def maxwell(key: torch.Tensor, shape: Shape = (), dtype: Any = None) -> torch.Tensor:
    """One-sided Maxwell draws, the norm of three standard normals: ``jax.random.maxwell``.

    Args:
        key: a single key.
        shape: the output shape (the normals have ``shape + (3,)``).
        dtype: a float dtype (default ``torch.get_default_dtype()``).

    Example:
        >>> from functorch_utils import random
        >>> random.maxwell(random.key(0), (3,))
        tensor([2.6311, 0.9910, 0.9649])
    """
    call = "random.maxwell(key, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _float_dtype(call, dtype)
    return _maxwell(k, _prng.check_shape(call, shape), dt)


def _maxwell(k: torch.Tensor, shape: tuple[int, ...], dt: torch.dtype) -> torch.Tensor:
    z = _normal(k, (*shape, 3), dt)
    return torch.sqrt((z * z).sum(-1))


def double_sided_maxwell(
    key: torch.Tensor, loc: Any, scale: Any, shape: Shape = (), dtype: Any = None
) -> torch.Tensor:
    """Double-sided Maxwell draws, ``sign * maxwell * scale + loc``: as JAX's.

    As ``jax.random.double_sided_maxwell``, the draws have shape ``shape + params_shape``
    where ``params_shape`` is the broadcast shape of ``loc`` and ``scale``; with ``shape=()``
    JAX takes ``params_shape + params_shape`` (kept here for equal numbers).

    Args:
        key: a single key.
        loc: the centre (differentiable).
        scale: the scale (differentiable).
        shape: the shape prepended to the parameters' shape.
        dtype: a float dtype (default: the parameters' floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.double_sided_maxwell(random.key(0), 0.0, 1.0, (3,))
        tensor([ 1.5457,  1.5741, -2.0825])
    """
    call = "random.double_sided_maxwell(key, loc, scale, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _param_dtype(call, dtype, loc, scale)
    lt = _float_param(call, "loc", loc, dt, k.device)
    st = _float_param(call, "scale", scale, dt, k.device)
    shape_t = _prng.check_shape(call, shape)
    try:
        params_shape = tuple(torch.broadcast_shapes(lt.shape, st.shape))
    except RuntimeError:
        raise_value(
            call,
            "loc and scale do not broadcast together",
            "parameters of broadcastable shapes",
            f"shapes {tuple(lt.shape)} and {tuple(st.shape)}",
            "Give them shapes that broadcast, e.g. a scalar and a tensor.",
        )
    if not shape_t:
        shape_t = params_shape
    shape_t = shape_t + params_shape
    maxwell_key, sign_key = _split(k, (2,)).unbind(-2)
    m = _maxwell(maxwell_key, shape_t, dt)
    sign = _coin_signs(sign_key, shape_t, dt)
    return sign * m * st + lt


def wald(
    key: torch.Tensor, mean: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Wald (inverse Gaussian) draws with unit shape: ``jax.random.wald``.

    Michael, Schucany and Haas' transformation of a normal and a uniform draw, as JAX.

    Args:
        key: a single key.
        mean: the mean, positive (differentiable).
        shape: the output shape (default ``mean``'s shape).
        dtype: a float dtype (default: ``mean``'s floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.wald(random.key(0), 1.0, (3,))
        tensor([0.3806, 0.4157, 0.4811])
    """
    call = "random.wald(key, mean, shape, dtype)"
    k, dt, mt, shape_t = _one_param_args(call, key, "mean", mean, shape, dtype)
    k1, k2 = _split(k, (2,)).unbind(-2)
    mt = mt.broadcast_to(shape_t)
    v = _normal(k1, shape_t, dt)
    z = _uniform(k2, shape_t, dt)
    y = v * v
    y_sq = y * y
    mean_sq = mt * mt
    # XLA contracts both multiply-adds into fused ones (closest to JAX's numbers, measured)
    sqrt_term = torch.sqrt(_fused(4 * mt, y, mean_sq * y_sq))
    x = _fused(-(mt / 2), sqrt_term, mt + mean_sq * y / 2)
    return torch.where(z <= mt / (mt + x), x, mean_sq / x)


# ---------------------------------------------------------------------------------------------
# From gamma draws: chisquare, t, f, generalized_normal, ball


def chisquare(
    key: torch.Tensor, df: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Chi-square(df) draws, ``2 * exp(loggamma(df / 2))``: ``jax.random.chisquare``.

    Differentiable in ``df`` (implicit reparameterisation of the gamma draw, as JAX); under
    ``jit`` the gamma rejection loop is one custom operator (no graph break).

    Args:
        key: a single key.
        df: degrees of freedom, positive.
        shape: the output shape (default ``df``'s shape).
        dtype: a float dtype (default: ``df``'s floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.chisquare(random.key(0), 3.0, (3,))
        tensor([2.2051, 2.4900, 1.4557])
    """
    call = "random.chisquare(key, df, shape, dtype)"
    k, _, dft, shape_t = _one_param_args(call, key, "df", df, shape, dtype)
    return _chisquare(k, dft, shape_t)


def _chisquare(k: torch.Tensor, df: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    two = _const(2.0, df)
    log_g = _gamma(k, df / two, shape, log_space=True)
    return torch.exp(log_g) * two


def t(key: torch.Tensor, df: Any, shape: Shape | None = None, dtype: Any = None) -> torch.Tensor:
    """Student's t(df) draws, ``normal * sqrt((df/2) / gamma(df/2))``: ``jax.random.t``.

    Args:
        key: a single key.
        df: degrees of freedom, positive (differentiable).
        shape: the output shape (default ``df``'s shape).
        dtype: a float dtype (default: ``df``'s floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.t(random.key(0), 5.0, (3,))
        tensor([ 0.7589, -2.0559, -1.2818])
    """
    call = "random.t(key, df, shape, dtype)"
    k, dt, dft, shape_t = _one_param_args(call, key, "df", df, shape, dtype)
    key_n, key_g = _split(k, (2,)).unbind(-2)
    n = _normal(key_n, shape_t, dt)
    half_df = dft / _const(2.0, dft)
    g = _gamma(key_g, half_df, shape_t, log_space=False)
    return n * torch.sqrt(half_df / g)


def f(
    key: torch.Tensor, dfnum: Any, dfden: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """F(dfnum, dfden) draws, a ratio of scaled chi-square draws: ``jax.random.f``.

    Args:
        key: a single key.
        dfnum: the numerator's degrees of freedom, positive (differentiable).
        dfden: the denominator's degrees of freedom, positive (differentiable).
        shape: the output shape (default: the parameters' broadcast shape).
        dtype: a float dtype (default: the parameters' floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.f(random.key(0), 4.0, 6.0, (3,))
        tensor([2.3246, 0.3095, 0.2259])
    """
    call = "random.f(key, dfnum, dfden, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _param_dtype(call, dtype, dfnum, dfden)
    num_t = _float_param(call, "dfnum", dfnum, dt, k.device)
    den_t = _float_param(call, "dfden", dfden, dt, k.device)
    shape_t = _default_shape(call, shape, num_t, den_t)
    key_dfd, key_dfn = _split(k, (2,)).unbind(-2)  # JAX's order
    chi2_num = _chisquare(key_dfn, num_t, shape_t)
    chi2_den = _chisquare(key_dfd, den_t, shape_t)
    return (chi2_num / num_t) / (chi2_den / den_t)


def generalized_normal(
    key: torch.Tensor, p: Any, shape: Shape = (), dtype: Any = None
) -> torch.Tensor:
    """Generalized normal draws, density ``exp(-|x|**p)``: ``jax.random.generalized_normal``.

    ``sign * gamma(1/p) ** (1/p)``, as JAX (``p = 2`` is a normal of variance 1/2, ``p = 1`` a
    Laplace). Differentiable in ``p``.

    Args:
        key: a single key.
        p: the shape parameter, positive (a float, or a tensor that broadcasts to ``shape``).
        shape: the output shape.
        dtype: a float dtype (default: ``p``'s floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.generalized_normal(random.key(0), 2.0, (3,))
        tensor([ 0.9543,  0.0902, -1.1525])
    """
    call = "random.generalized_normal(key, p, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _param_dtype(call, dtype, p)
    pt = _float_param(call, "p", p, dt, k.device)
    shape_t = _prng.check_shape(call, shape)
    _check_broadcast(call, shape_t, pt)
    return _generalized_normal(k, pt, shape_t, dt)


def _generalized_normal(
    k: torch.Tensor, p: torch.Tensor, shape: tuple[int, ...], dt: torch.dtype
) -> torch.Tensor:
    k_gamma, k_sign = _split(k, (2,)).unbind(-2)
    inv_p = 1 / p
    g = _gamma(k_gamma, inv_p, shape, log_space=False)
    r = _coin_signs(k_sign, shape, dt)
    return r * torch.pow(g, inv_p)


def ball(
    key: torch.Tensor, d: int, p: Any = 2, shape: Shape = (), dtype: Any = None
) -> torch.Tensor:
    """Points drawn uniformly from the unit ``p``-norm ball in ``d`` dimensions: as JAX's ``ball``.

    Barthe, Guédon, Mendelson and Naor's method: generalized normal draws scaled by
    ``(sum |g|**p + exponential) ** (1/p)``, as ``jax.random.ball``.

    Args:
        key: a single key.
        d: the dimension, a non-negative int.
        p: the norm's exponent (default 2), positive; differentiable.
        shape: the batch shape; the result has shape ``shape + (d,)``.
        dtype: a float dtype (default: ``p``'s floating dtype, else the default dtype).

    Example:
        >>> from functorch_utils import random
        >>> random.ball(random.key(0), 3, shape=(2,))
        tensor([[ 0.9172,  0.3927,  0.0117],
                [-0.8614,  0.3168, -0.0629]])
    """
    call = "random.ball(key, d, p, shape, dtype)"
    k = _check_any_key(call, key)
    dim = _check_index(call, "d", d)
    dt = _param_dtype(call, dtype, p)
    pt = _float_param(call, "p", p, dt, k.device)
    if pt.ndim != 0:
        raise_value(
            call,
            "p must be a scalar",
            "a float or a 0-d tensor",
            describe(pt),
            "Use vmap for a batch of exponents.",
        )
    shape_t = _prng.check_shape(call, shape)
    k1, k2 = _split(k, (2,)).unbind(-2)
    g = _generalized_normal(k1, pt, (*shape_t, dim), dt)
    e = -torch.log1p(-_uniform(k2, shape_t, dt))
    return g / torch.pow(torch.pow(torch.abs(g), pt).sum(-1) + e, 1 / pt)[..., None]


# ---------------------------------------------------------------------------------------------
# orthogonal


def orthogonal(
    key: torch.Tensor, n: int, shape: Shape = (), dtype: Any = None, m: int | None = None
) -> torch.Tensor:
    """Haar-random orthogonal (or unitary, for complex dtypes) matrices: ``jax.random.orthogonal``.

    The QR decomposition of a normal matrix with the signs of ``R``'s diagonal moved into ``Q``
    (Mezzadri's method), as JAX. For ``m != n`` the result is semi-orthogonal: orthonormal rows
    when ``n <= m``, orthonormal columns when ``m <= n``. Values equal JAX's up to the rounding
    of the QR decomposition (LAPACK here and in JAX on CPU, but not the same calls).

    Args:
        key: a single key.
        n: the number of rows.
        shape: batch dimensions of the result.
        dtype: a float or complex dtype (default ``torch.get_default_dtype()``).
        m: the number of columns (default ``n``).

    Returns:
        A tensor of shape ``shape + (n, m)``.

    Example:
        >>> import torch
        >>> from functorch_utils import random
        >>> q = random.orthogonal(random.key(0), 3)
        >>> torch.allclose(q @ q.T, torch.eye(3), atol=1e-6)
        True
    """
    call = "random.orthogonal(key, n, shape, dtype, m)"
    k = _check_any_key(call, key)
    rows = _check_index(call, "n", n)
    cols = rows if m is None else _check_index(call, "m", m)
    dt = torch.get_default_dtype() if dtype is None else _as_dtype(call, dtype)
    if not (dt.is_floating_point or dt.is_complex):
        raise_value(
            call,
            "dtype must be a float or complex dtype",
            "torch.float32, torch.float64, torch.complex64 or torch.complex128",
            str(dt),
            "Pass a float dtype (complex dtypes give unitary matrices).",
        )
    shape_t = _prng.check_shape(call, shape)
    z = _normal(k, (*shape_t, max(rows, cols), min(rows, cols)), dt)
    q, r = torch.linalg.qr(z)
    d = torch.diagonal(r, dim1=-2, dim2=-1)
    x = q * torch.sgn(d).unsqueeze(-2)
    return x.mT if rows < cols else x


# ---------------------------------------------------------------------------------------------
# binomial and multinomial
#
# NOTE [binomial's loops]
# JAX's binomial (after TensorFlow's) draws by inversion (a sum of geometric draws) where
# ``count * q <= 10`` and by BTRS, Hormann's transformed rejection, elsewhere; both loops run on
# the same key over the whole array, with placeholder parameters where the other method is
# used, and the result is selected per element. As poisson's (NOTE [rejection loops] in
# _random.py): the inversion loop leaves finished elements unchanged, so it runs all elements
# (and all vmap members) together; BTRS keeps the *last* accepted draw, so each vmap member stops
# updating when its own elements are accepted, as JAX's batched while loop does. Under jit and
# eval_shape (``_torch_hooks.shapes_only``) both loops are one custom operator with a fake
# implementation and a vmap rule.

_STIRLING_TAIL = (
    0.0810614667953272,
    0.0413406959554092,
    0.0276779256849983,
    0.02079067210376509,
    0.0166446911898211,
    0.0138761288230707,
    0.0118967099458917,
    0.0104112652619720,
    0.00925546218271273,
    0.00833056343336287,
)


def _stirling_approx_tail(k: torch.Tensor) -> torch.Tensor:
    """log(k!) minus its Stirling approximation: a table below 10, the series above."""
    table = torch.tensor(_STIRLING_TAIL, dtype=k.dtype, device=k.device)
    use_table = k <= 9
    k = k.clamp(0.0, 9.0)
    kp1sq = (k + 1) * (k + 1)
    approx = (1.0 / 12 - (1.0 / 360 - 1.0 / 1260 / kp1sq) / kp1sq) / (k + 1)
    index = torch.floor(k).nan_to_num(0.0).long()  # NaN only where the table is not used
    return torch.where(use_table, table[index], approx)


def _binomial_inversion(k: torch.Tensor, count: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    shape = tuple(prob.shape)
    log1minusprob = torch.log1p(-prob)
    num_geom = torch.zeros_like(prob)
    geom_sum = torch.zeros_like(prob)
    key = k
    while _any(geom_sum <= count):
        sub, key = _split(key, (2,)).unbind(-2)
        num_geom = torch.where(geom_sum <= count, num_geom + 1, num_geom)
        u = _uniform(sub, shape, prob.dtype)
        geom_sum = geom_sum + torch.ceil(torch.log(u) / log1minusprob)
    return num_geom - 1


def _btrs(k: torch.Tensor, count: torch.Tensor, prob: torch.Tensor) -> torch.Tensor:
    shape = tuple(prob.shape)
    stddev = torch.sqrt(count * prob * (1 - prob))
    b = 1.15 + 2.53 * stddev
    a = -0.0873 + 0.0248 * b + 0.01 * prob
    c = count * prob + 0.5
    v_r = 0.92 - 4.2 / b
    r = prob / (1 - prob)
    alpha = (2.83 + 5.1 / b) * stddev
    m = torch.floor((count + 1) * prob)
    tail_m = _stirling_approx_tail(m) + _stirling_approx_tail(count - m)
    k_out = torch.full_like(prob, -1.0)
    accepted = torch.zeros(shape, dtype=torch.bool, device=prob.device)
    key = k
    while _any(~accepted):
        running = (~accepted).any()  # per vmap member (NOTE [binomial's loops])
        key, sk0, sk1 = _split(key, (3,)).unbind(-2)
        u = _uniform(sk0, shape, prob.dtype) - 0.5
        v = _uniform(sk1, shape, prob.dtype)
        us = 0.5 - torch.abs(u)
        accept1 = (us >= 0.07) & (v <= v_r)
        kk = torch.floor((2 * a / us + b) * u + c)
        reject = (kk < 0) | (kk > count)
        v = torch.log(v * alpha / (a / (us * us) + b))
        ub = (
            (m + 0.5) * torch.log((m + 1) / (r * (count - m + 1)))
            + (count + 1) * torch.log((count - m + 1) / (count - kk + 1))
            + (kk + 0.5) * torch.log(r * (count - kk + 1) / (kk + 1))
            + tail_m
            - _stirling_approx_tail(kk)
            - _stirling_approx_tail(count - kk)
        )
        accept = (accept1 | (~reject & (v <= ub))) & running
        k_out = torch.where(accept, kk, k_out)
        accepted = accepted | accept
    return k_out


def _binomial_loops(
    k: torch.Tensor,
    count_inv: torch.Tensor,
    q: torch.Tensor,
    count_btrs: torch.Tensor,
    q_btrs: torch.Tensor,
) -> torch.Tensor:
    """Both methods' draws, stacked: ``[inversion, btrs]`` (NOTE [binomial's loops])."""
    return torch.stack([_binomial_inversion(k, count_inv, q), _btrs(k, count_btrs, q_btrs)])


@torch.library.custom_op("functorch_utils::binomial_loops", mutates_args=())
def _binomial_op(
    keys: torch.Tensor,
    count_inv: torch.Tensor,
    q: torch.Tensor,
    count_btrs: torch.Tensor,
    q_btrs: torch.Tensor,
) -> torch.Tensor:
    # each vmap member's loops on their own (NOTE [binomial's loops])
    out = _per_key(_binomial_loops, keys, count_inv, q, count_btrs, q_btrs, out_axis=1)
    return out.reshape(2, *q.shape)


@_binomial_op.register_fake
def _(
    keys: torch.Tensor,
    count_inv: torch.Tensor,
    q: torch.Tensor,
    count_btrs: torch.Tensor,
    q_btrs: torch.Tensor,
) -> torch.Tensor:
    return q.new_empty((2, *q.shape))


@_binomial_op.register_vmap
def _(info: Any, in_dims: Any, keys: torch.Tensor, *params: torch.Tensor) -> Any:
    b = info.batch_size
    args = [_to_front(x, d, b) for x, d in zip((keys, *params), in_dims)]
    return _binomial_op(*args), 1


def _binomial(
    k: torch.Tensor, count: torch.Tensor, prob: torch.Tensor, shape: tuple[int, ...]
) -> torch.Tensor:
    """JAX's ``_binomial`` in ``prob``'s dtype; ``count`` and ``prob`` broadcast to ``shape``."""
    count = count.broadcast_to(shape)
    prob = prob.broadcast_to(shape)
    p_lt_half = prob < 0.5
    q = torch.where(p_lt_half, prob, 1.0 - prob)
    count_nan_or_neg = torch.isnan(count) | (count < 0.0)
    count_inf = torch.isinf(count)
    q_is_nan = torch.isnan(q)
    q_l_0 = q < 0.0
    q = torch.where(q_is_nan | q_l_0, torch.full_like(q, 0.01), q)
    use_inversion = count_nan_or_neg | (count * q <= 10.0)
    count = torch.floor(count)
    count_inv = torch.where(use_inversion, count, torch.zeros_like(count))
    # JAX's BTRS never accepts for n = inf and p in {0, 1} (its parameters are NaN: JAX's loop
    # does not end); those elements come out inf below whatever BTRS draws, so they take the
    # placeholder parameters too.
    placeholder = use_inversion | (count_inf & (q == 0))
    count_btrs = torch.where(placeholder, torch.full_like(count, 1e4), count)
    q_btrs = torch.where(placeholder, torch.full_like(q, 0.5), q)
    loops = _binomial_op if _torch_hooks.shapes_only() else _binomial_loops
    inv, btrs = loops(k, count_inv, q, count_btrs, q_btrs).unbind(0)
    samples = torch.where(use_inversion, inv, btrs)
    invalid = q_l_0 | q_is_nan | count_nan_or_neg
    samples = torch.where(invalid, torch.full_like(samples, math.nan), samples)
    samples = torch.where(count_inf & ~invalid, torch.full_like(samples, math.inf), samples)
    keep = p_lt_half | count_nan_or_neg | q_is_nan | count_inf
    return torch.where(keep, samples, count - samples)


def binomial(
    key: torch.Tensor, n: Any, p: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Binomial(n, p) draws, as floats: ``jax.random.binomial``.

    JAX's (and TensorFlow's) algorithm: inversion by geometric draws where ``n * min(p, 1-p)
    <= 10``, Hormann's BTRS rejection sampler elsewhere, both in ``p``'s floating dtype. Values
    equal JAX's except, rarely, where a rejection test lands within an ulp of its bound (torch's
    ``log`` vs XLA's). ``n`` is floored; NaN or negative ``n`` and NaN or negative ``p`` give
    NaN, infinite ``n`` gives inf, as JAX (also for ``p`` 0 or 1, where JAX's loop never
    ends). Under ``jit`` the loops are one custom operator (no graph break). Not differentiable
    (JAX's is not either).

    Args:
        key: a single key.
        n: the number of trials (a float, an int or a tensor).
        p: the success probability in ``[0, 1]``.
        shape: the output shape (default: the broadcast shape of ``n`` and ``p``).
        dtype: a float dtype for the result (default: ``p``'s floating dtype, else the default
            dtype).

    Example:
        >>> import torch
        >>> from functorch_utils import random
        >>> random.binomial(random.key(0), torch.tensor([5.0, 50.0, 1000.0]), 0.3)
        tensor([  2.,  13., 281.])
    """
    call = "random.binomial(key, n, p, shape, dtype)"
    k = _check_any_key(call, key)
    pdt = _param_dtype(call, None, p)
    dt = _param_dtype(call, dtype, p)
    pt = _float_param(call, "p", p, pdt, k.device).detach()
    nt = _float_param(call, "n", n, pdt, k.device).detach()
    shape_t = _default_shape(call, shape, nt, pt)
    return _binomial(k, nt, pt, shape_t).to(dt)


def multinomial(
    key: torch.Tensor,
    n: Any,
    p: Any,
    *,
    shape: Shape | None = None,
    dtype: Any = None,
    unroll: int | bool = 1,
) -> torch.Tensor:
    """Multinomial(n, p) counts, by successive binomial draws: ``jax.random.multinomial``.

    For each outcome ``i`` in turn, ``binomial(remaining, p[i] / sum(p[i:]))`` with its own key
    (``split(key, len(p))``), as JAX's scan.

    Args:
        key: a single key.
        n: the number of trials; broadcasts to ``shape[:-1]``.
        p: the outcome probabilities along the last axis.
        shape: the result's shape *including* the outcome axis, as JAX's code uses it (default
            ``p``'s shape); ``p`` broadcasts to it.
        dtype: a float dtype (default: the floating dtype of ``n`` or ``p``, else the default
            dtype).
        unroll: accepted for JAX's signature (the loop here is a Python loop).

    Returns:
        Counts of ``shape``, summing to ``n`` along the last axis.

    Example:
        >>> import torch
        >>> from functorch_utils import random
        >>> random.multinomial(random.key(0), 100.0, torch.tensor([0.2, 0.3, 0.5]))
        tensor([14., 25., 61.])
    """
    call = "random.multinomial(key, n, p, shape, dtype, unroll)"
    k = _check_any_key(call, key)
    cdt = _param_dtype(call, None, p, n)
    dt = _param_dtype(call, dtype, p, n)
    pt = _float_param(call, "p", p, cdt, k.device).detach()
    nt = _float_param(call, "n", n, cdt, k.device).detach()
    if pt.ndim < 1:
        raise_value(
            call,
            "p must have an outcome axis",
            "shape (..., k)",
            describe(pt),
            "Pass the probabilities of the k outcomes, e.g. torch.tensor([0.2, 0.8]).",
        )
    if shape is None:
        shape_t = tuple(pt.shape)
    else:
        shape_t = _prng.check_shape(call, shape)
        if len(shape_t) < 1:
            raise_value(
                call,
                "shape must include the outcome axis",
                f"a shape ending in {pt.shape[-1]}",
                repr(shape_t),
                "JAX's multinomial takes the full shape: append the number of outcomes.",
            )
        _check_broadcast(call, shape_t, pt)
    _check_broadcast(call, shape_t[:-1], nt)
    remainder = nt.broadcast_to(shape_t[:-1])
    probs = torch.movedim(pt.broadcast_to(shape_t), -1, 0)
    remaining = torch.flip(torch.cumsum(torch.flip(probs, (0,)), 0), (0,))
    ratios = probs / torch.where(remaining == 0, torch.ones_like(remaining), remaining)
    keys = _split(k, (shape_t[-1],))
    counts = []
    for i in range(shape_t[-1]):
        ratio = ratios[i].clip(0, 1)
        count = _binomial(keys[i], remainder, ratio, shape_t[:-1])
        remainder = remainder - count
        counts.append(count)
    out = torch.stack(counts, -1) if counts else torch.zeros(shape_t, dtype=cdt, device=k.device)
    return out.to(dt)
