"""JAX's ``jax.random`` on torch tensors: keys, ``split``/``fold_in`` and the samplers.

Every sampler follows the algorithm of ``jax/_src/random.py`` (JAX 0.10, default
configuration), on the bits of :mod:`._prng`, so that the same key, shape and dtype give the same
numbers as JAX: bit for bit for keys, bits, integer draws and ``uniform``; within a few ulps where
a transcendental function (``erfinv``, ``log``, ``pow``, ``lgamma``) is evaluated by torch instead
of XLA.

# NOTE [keys are uint32 tensors]
# A key is a ``torch.uint32`` tensor whose last dimension holds the key words: 2 for threefry2x32
# (JAX's raw ``PRNGKey`` layout), 4 for the "rbg" implementations (JAX's rbg layout). A plain
# tensor passes through vmap, torch.compile, pytrees, ``.to(device)`` and ``torch.save`` with no
# registration, and the dtype tells a key from an ordinary tensor (torch code has almost no other
# use for uint32). ``key(seed)`` and ``PRNGKey(seed)`` therefore return the same thing: JAX's
# typed-key scalar has no tensor equivalent that all of torch's machinery would carry.

# NOTE [JAX's default dtypes]
# The defaults follow JAX's default (32-bit) mode, because that is the stream a ported program
# draws: integer draws (randint, poisson, permutation of an int, choice of an int, categorical)
# are int32. Float samplers default to ``torch.get_default_dtype()`` (float32 unless changed);
# float64 draws reproduce JAX with ``jax_enable_x64`` (64 random bits per value).

# NOTE [rejection loops]
# gamma (and beta, dirichlet) and poisson sample by rejection: JAX runs a while loop until every
# element is accepted. Here the loop runs over all elements at once with ``torch.where`` keeping
# finished ones, which gives each element exactly the values of its own loop. The loop's exit
# reads the data (``any()``), which torch.compile cannot trace and fake tensors (``eval_shape``)
# cannot run. So there (``_torch_hooks.shapes_only``) each loop is a custom operator
# (``torch.ops.functorch_utils.*``): one opaque node in the graph, run eagerly when the compiled
# code runs, with a fake (shape-only) implementation for tracing and a vmap rule. These samplers
# compile under fullgraph=True without graph breaks; the loop itself is not fused.
# Under vmap the exit test looks at every batch member (``_torch_hooks.unwrap_all``), and where
# JAX's result depends on the iteration count of the whole array (poisson's rejection branch
# keeps the last accepted draw), each member stops updating when its own elements are done, as
# JAX's batched while loop does. The operators' vmap rules keep both: gamma's loops are
# elementwise (the batch is flattened into the elements), poisson's runs this eager vmap.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, Literal

import numpy as np
import torch

from . import _prng, _torch_hooks
from ._errors import describe, raise_type, raise_value

__all__ = [
    "key",
    "PRNGKey",
    "key_data",
    "wrap_key_data",
    "key_impl",
    "split",
    "fold_in",
    "clone",
    "bits",
    "uniform",
    "normal",
    "randint",
    "truncated_normal",
    "bernoulli",
    "categorical",
    "permutation",
    "choice",
    "gumbel",
    "exponential",
    "laplace",
    "logistic",
    "multivariate_normal",
    "dirichlet",
    "gamma",
    "loggamma",
    "beta",
    "poisson",
]

Shape = Sequence[int]
_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
_MASK32 = 0xFFFFFFFF


# ---------------------------------------------------------------------------------------------
# dtypes and parameters


def _as_dtype(call: str, dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        if isinstance(dtype, str):
            found = getattr(torch, dtype, None)
            if isinstance(found, torch.dtype):
                return found
        np_dtype = np.dtype(dtype)
        return torch.from_numpy(np.zeros(0, dtype=np_dtype)).dtype
    except (TypeError, ValueError):
        pass
    raise_type(call, "dtype is not a dtype", "a torch.dtype such as torch.float32", describe(dtype))


def _float_dtype(call: str, dtype: Any) -> torch.dtype:
    dt = torch.get_default_dtype() if dtype is None else _as_dtype(call, dtype)
    if not dt.is_floating_point:
        raise_value(
            call,
            "dtype must be a floating dtype",
            "torch.float16, torch.bfloat16, torch.float32 or torch.float64",
            str(dt),
        )
    return dt


def _int_dtype(call: str, dtype: Any) -> torch.dtype:
    dt = torch.int32 if dtype is None else _as_dtype(call, dtype)
    if dt not in (torch.int8, torch.int16, torch.int32, torch.int64, torch.uint8):
        raise_type(
            call,
            "dtype must be a signed integer dtype (or uint8)",
            "torch.int8, torch.int16, torch.int32, torch.int64 or torch.uint8",
            str(dt),
        )
    return dt


def _param(x: Any, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A float parameter as a tensor of ``dtype`` on ``device`` (derivatives kept)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.tensor(x, dtype=dtype, device=device)


def _shape_of(x: Any) -> tuple[int, ...]:
    return tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(np.shape(x))


def _check_broadcast(call: str, shape: tuple[int, ...], *params: Any) -> None:
    shapes = [_shape_of(p) for p in params]
    try:
        out = tuple(torch.broadcast_shapes(shape, *shapes))
    except RuntimeError:
        out = None
    if out != shape:
        raise_value(
            call,
            "the parameter shapes do not broadcast to the shape argument",
            f"parameters whose shapes broadcast to {shape}",
            f"shapes {shapes}",
            "Pass shape=None to use the parameters' broadcast shape.",
        )


def _finfo_nmant(dtype: torch.dtype) -> int:
    return {torch.float16: 10, torch.bfloat16: 7, torch.float32: 23, torch.float64: 52}[dtype]


def _any(mask: torch.Tensor) -> bool:
    """Whether any element is set, over every vmap batch member (see NOTE [rejection loops])."""
    return bool(_torch_hooks.unwrap_all(mask).any())


# ---------------------------------------------------------------------------------------------
# Keys


def _check_impl(call: str, impl: Any) -> str:
    if impl is None:
        return "threefry2x32"
    if impl not in _IMPLS:
        raise_value(
            call,
            "impl is not a known PRNG implementation",
            "None, 'threefry2x32', 'rbg' or 'unsafe_rbg'",
            repr(impl),
        )
    return str(impl)


def key(
    seed: int | torch.Tensor,
    *,
    impl: str | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Create a PRNG key from an integer seed: JAX's ``jax.random.key``.

    The key is a ``torch.uint32`` tensor of shape ``(2,)`` (threefry2x32, JAX's raw key layout;
    see the guide's "Keys" section for why there is no typed-key scalar). As in JAX's default
    32-bit mode the key is ``[0, seed mod 2**32]``: negative seeds wrap (``-1`` gives
    ``[0, 4294967295]``) and seeds of 2**32 or more keep their low 32 bits.

    Args:
        seed: a Python int or a 0-d integer tensor (under ``vmap``, a batch of seeds).
        impl: ``None`` or ``"threefry2x32"`` for JAX's streams; ``"rbg"`` or ``"unsafe_rbg"``
            for keys of shape ``(4,)`` whose samplers draw from torch's native generator, faster
            and not stream-compatible with JAX (see the guide's "Speed" section).
        device: where the key lives (keyword-only, not in JAX); samples are drawn on the key's
            device. A tensor seed keeps its device.

    Returns:
        The key tensor.

    Example:
        >>> from functorch_utils import random
        >>> random.key(42)
        tensor([ 0, 42], dtype=torch.uint32)
        >>> random.key(-1)
        tensor([         0, 4294967295], dtype=torch.uint32)
    """
    call = "random.key(seed)"
    impl = _check_impl(call, impl)
    k = _prng.seed_key(call, seed, device)
    if impl != "threefry2x32":
        k = torch.cat([k, k], dim=-1)
    return k


def PRNGKey(
    seed: int | torch.Tensor,
    *,
    impl: str | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Create a PRNG key from an integer seed: JAX's legacy ``jax.random.PRNGKey``.

    Identical to :func:`key` here: both give JAX's raw ``uint32[2]`` key data.

    Example:
        >>> from functorch_utils import random
        >>> random.PRNGKey(0)
        tensor([0, 0], dtype=torch.uint32)
    """
    return key(seed, impl=impl, device=device)


def key_data(keys: torch.Tensor) -> torch.Tensor:
    """The raw ``uint32`` words of a key or a batch of keys, shape ``(..., 2)``.

    Keys are their own data here, so this returns ``keys`` itself (checked).

    Example:
        >>> from functorch_utils import random
        >>> random.key_data(random.split(random.key(0), 2))
        tensor([[1797259609, 2579123966],
                [ 928981903, 3453687069]], dtype=torch.uint32)
    """
    return _check_any_key("random.key_data(keys)", keys, allow_batched=True)


def wrap_key_data(key_bits_array: torch.Tensor, *, impl: str | None = None) -> torch.Tensor:
    """Turn raw key data (``uint32``, last dimension 2, or 4 for rbg) into keys.

    Example:
        >>> import torch
        >>> from functorch_utils import random
        >>> k = random.wrap_key_data(torch.tensor([0, 42], dtype=torch.uint32))
        >>> bool((k == random.key(42)).all())
        True
    """
    call = "random.wrap_key_data(key_bits_array)"
    impl = _check_impl(call, impl)
    width = 2 if impl == "threefry2x32" else 4
    if (
        not isinstance(key_bits_array, torch.Tensor)
        or key_bits_array.dtype != _prng.KEY_DTYPE
        or key_bits_array.ndim == 0
        or key_bits_array.shape[-1] != width
    ):
        raise_type(
            call,
            f"key data for {impl} must be a uint32 tensor whose last dimension is {width}",
            f"a torch.uint32 tensor of shape (..., {width})",
            describe(key_bits_array),
            "Convert words given as int64 values in [0, 2**32) with .to(torch.uint32).",
        )
    return key_bits_array


def key_impl(keys: torch.Tensor) -> str:
    """The implementation of a key: ``"threefry2x32"`` or ``"rbg"``.

    Example:
        >>> from functorch_utils import random
        >>> random.key_impl(random.key(0)), random.key_impl(random.key(0, impl="rbg"))
        ('threefry2x32', 'rbg')
    """
    k = _check_any_key("random.key_impl(keys)", keys, allow_batched=True)
    return "threefry2x32" if k.shape[-1] == 2 else "rbg"


def _check_any_key(call: str, k: Any, *, allow_batched: bool = False) -> torch.Tensor:
    """A threefry key (last dim 2) or an rbg key (last dim 4)."""
    if isinstance(k, torch.Tensor) and k.dtype == _prng.KEY_DTYPE and k.ndim and k.shape[-1] == 4:
        if not allow_batched and k.ndim != 1:
            _prng.check_key(call, k[..., :2])  # the same "single key" error
        return k
    return _prng.check_key(call, k, allow_batched=allow_batched)


def _halves(k: torch.Tensor) -> list[torch.Tensor]:
    return [k] if k.shape[-1] == 2 else [k[..., :2], k[..., 2:]]


def _split(k: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    parts = [_prng.split_words(h, shape) for h in _halves(k)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def split(key: torch.Tensor, num: int | Shape = 2) -> torch.Tensor:
    """Split a key into ``num`` new keys (a new leading axis), as ``jax.random.split``.

    Args:
        key: a single key.
        num: the number of keys, or a tuple for a shape of keys.

    Returns:
        Keys of shape ``(num, 2)`` (or ``(*num, 2)``).

    Example:
        >>> from functorch_utils import random
        >>> k1, k2 = random.split(random.key(0))
        >>> k1
        tensor([1797259609, 2579123966], dtype=torch.uint32)
    """
    call = "random.split(key, num)"
    k = _check_any_key(call, key)
    return _split(k, _prng.check_shape(call, num, "num"))


def fold_in(key: torch.Tensor, data: int | torch.Tensor) -> torch.Tensor:
    """A new key that depends on ``key`` and a 32-bit integer ``data``: ``jax.random.fold_in``.

    Args:
        key: a single key.
        data: a Python int in ``[0, 2**32)`` or a 0-d integer tensor (its low 32 bits are used,
            as JAX does for int64 data). Under ``vmap`` ``data`` may be batched.

    Example:
        >>> from functorch_utils import random
        >>> random.fold_in(random.key(0), 7)
        tensor([2716826189,  292468403], dtype=torch.uint32)
    """
    call = "random.fold_in(key, data)"
    k = _check_any_key(call, key)
    if isinstance(data, torch.Tensor):
        if data.ndim != 0 or data.is_floating_point() or data.is_complex():
            raise_type(
                call,
                "data must be a scalar integer",
                "a Python int or a 0-d integer tensor",
                describe(data),
                "Use vmap to fold in a batch of values.",
            )
        d: int | torch.Tensor = data.to(k.device)
    elif isinstance(data, numbers.Integral) and not isinstance(data, bool):
        d = int(data)
        if not 0 <= d < 1 << 32:
            raise_value(
                call,
                "data is out of the range of uint32",
                "an integer in [0, 2**32)",
                repr(d),
                "Reduce it first, e.g. data % 2**32.",
            )
    else:
        raise_type(call, "data must be a scalar integer", "a Python int", describe(data))
    parts = [_prng.fold_in_words(h, d) for h in _halves(k)]
    return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)


def clone(key: torch.Tensor) -> torch.Tensor:
    """A copy of a key (JAX's ``clone`` is the identity outside key-reuse checking).

    Example:
        >>> from functorch_utils import random
        >>> k = random.key(0)
        >>> bool((random.uniform(random.clone(k)) == random.uniform(k)).all())
        True
    """
    return _check_any_key("random.clone(key)", key, allow_batched=True).clone()


# ---------------------------------------------------------------------------------------------
# Bits (threefry, or torch's generator for rbg keys)


def _rbg_generator(k: torch.Tensor) -> torch.Generator:
    """torch's native generator, seeded from an rbg key (eager only; see the guide)."""
    if _torch_hooks.is_batched(k):
        raise_value(
            "random sampler with an rbg key",
            "rbg keys draw from torch's generator, which cannot be batched by vmap",
            "a threefry2x32 key under vmap",
            "a batched rbg key",
            "Use random.key(seed) (threefry2x32) for keys under vmap.",
        )
    w = [int(v) for v in k.to(torch.int64).tolist()]
    seed = ((((w[0] << 32) | w[1]) * 0x9E3779B97F4A7C15) + ((w[2] << 32) | w[3])) % (1 << 64)
    g = torch.Generator(device=k.device)
    g.manual_seed(seed)
    return g


def _bits(k: torch.Tensor, width: int, shape: tuple[int, ...]) -> torch.Tensor:
    """Random bits as signed patterns (see ``_prng.random_bits``)."""
    if k.shape[-1] == 2:
        return _prng.random_bits(k, width, shape)
    g = _rbg_generator(k)
    if width == 64:
        return torch.randint(-(1 << 63), (1 << 63) - 1, shape, generator=g, device=k.device)
    if width == 32:
        return torch.randint(
            -(1 << 31), (1 << 31) - 1, shape, generator=g, device=k.device, dtype=torch.int32
        )
    return torch.randint(0, 1 << width, shape, generator=g, device=k.device, dtype=torch.int32)


_UINT = {8: torch.uint8, 16: torch.uint16, 32: torch.uint32, 64: torch.uint64}


def bits(key: torch.Tensor, shape: Shape = (), dtype: Any = None) -> torch.Tensor:
    """Uniform random bits as unsigned integers: ``jax.random.bits``.

    The result has torch's unsigned dtype (``torch.uint32`` by default, as JAX's default
    mode), whose values equal JAX's. torch's unsigned dtypes support few operations on CPU;
    ``.to(torch.int64)`` gives the values in an ordinary dtype.

    Args:
        key: a single key.
        shape: the output shape.
        dtype: ``torch.uint8``, ``torch.uint16``, ``torch.uint32`` or ``torch.uint64``.

    Example:
        >>> from functorch_utils import random
        >>> random.bits(random.key(0), (3,))
        tensor([4070199207, 4202968722, 1427181096], dtype=torch.uint32)
    """
    call = "random.bits(key, shape, dtype)"
    k = _check_any_key(call, key)
    dt = torch.uint32 if dtype is None else _as_dtype(call, dtype)
    width = {v: w for w, v in _UINT.items()}.get(dt)
    if width is None:
        raise_value(
            call,
            "dtype must be an unsigned integer dtype",
            "torch.uint8, torch.uint16, torch.uint32 or torch.uint64",
            str(dt),
        )
    shape_t = _prng.check_shape(call, shape)
    b = _bits(k, width, shape_t)
    if width == 32:
        return b.view(torch.uint32)
    if width == 64:
        return b.view(torch.uint64)
    if width == 16:
        return b.to(torch.int64).to(torch.uint16)
    return b.to(torch.uint8)


# ---------------------------------------------------------------------------------------------
# uniform and normal


def _unit_floats(k: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """JAX's mantissa trick: random mantissa bits under the exponent of 1.0, minus 1.0."""
    if dtype == torch.float32:
        b = _bits(k, 32, shape)
        b = torch.bitwise_right_shift(b, 9).bitwise_and_(0x7FFFFF).bitwise_or_(0x3F800000)
        return b.view(torch.float32) - 1.0
    if dtype == torch.float64:
        b = _bits(k, 64, shape)
        b = torch.bitwise_right_shift(b, 12).bitwise_and_((1 << 52) - 1)
        return b.bitwise_or_(0x3FF0000000000000).view(torch.float64) - 1.0
    if dtype == torch.float16:
        b = _bits(k, 16, shape)  # 0 <= b < 2**16
        b = torch.bitwise_right_shift(b, 6).bitwise_or_(0x3C00).to(torch.int16)
        return b.view(torch.float16) - 1.0
    if dtype == torch.bfloat16:
        b = _bits(k, 8, shape)  # JAX draws 8 bits when the mantissa has fewer than 8
        b = torch.bitwise_right_shift(b, 1).bitwise_or_(0x3F80).to(torch.int16)
        return b.view(torch.bfloat16) - 1.0
    raise_value(  # pragma: no cover - dtypes are checked by the callers
        "random.uniform", "unsupported dtype", "a 16-, 32- or 64-bit float", str(dtype)
    )


# NOTE [uniform's multiply-add]
# JAX computes ``floats * (maxval - minval) + minval`` and XLA contracts it into one fused
# multiply-add (a single rounding) for float32 and float64, on CPU and GPU; float16/bfloat16 are
# rounded after each op. torch has no fma op, so ``_fma`` emulates it exactly (Boldo and
# Melquiond, "Emulation of FMA and correctly rounded sums: proved algorithms using rounding to
# odd", IEEE TC 2008): an exact product (float64 for float32 inputs, Dekker's TwoProduct for
# float64), an exact sum, and one rounding to odd before the final rounding to nearest. When the
# span is a power of two (``[0, 1)``, ``normal``'s ``[-1, 1)``) the product is exact and the plain
# expression already rounds once, so the emulation is skipped.


def _two_sum(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


def _round_odd_sum(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a + b`` (float64) rounded to odd: exact sums stay, inexact ones take the odd neighbour."""
    s, e = _two_sum(a, b)
    even = (s.view(torch.int64) & 1) == 0
    toward = torch.where(e > 0, math.inf, -math.inf).to(s.dtype)
    return torch.where((e != 0) & even, torch.nextafter(s, toward), s)


def _veltkamp(a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    c = a * 134217729.0  # 2**27 + 1
    hi = c - (c - a)
    return hi, a - hi


def _fma(a: torch.Tensor, b: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    """``a * b + c`` with one rounding, for float32 or float64 tensors (no derivative)."""
    if a.dtype == torch.float64:
        p = a * b
        ah, al = _veltkamp(a)
        bh, bl = _veltkamp(b)
        e = ((ah * bh - p) + ah * bl + al * bh) + al * bl  # a * b == p + e exactly
        th, tl = _two_sum(c, p)
        return th + _round_odd_sum(tl, e)
    return _round_odd_sum(a.double() * b.double(), c.double()).to(a.dtype)


def _is_pow2_span(minval: Any, maxval: Any, dtype: torch.dtype) -> bool:
    if isinstance(minval, torch.Tensor) or isinstance(maxval, torch.Tensor):
        return False
    np_dt = np.float64 if dtype == torch.float64 else np.float32
    span = float(np_dt(maxval) - np_dt(minval))
    return span == 0.0 or (math.isfinite(span) and abs(math.frexp(span)[0]) == 0.5)


def _scale(f: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, exact: bool) -> torch.Tensor:
    """JAX's ``max(minval, f * (maxval - minval) + minval)``, rounding as XLA does."""
    span = hi - lo
    y = f * span + lo
    if not exact and f.dtype in (torch.float32, torch.float64):
        fused = _fma(f, span.detach(), lo.detach())
        y = (
            fused + (y - y.detach())
            if (lo.requires_grad or hi.requires_grad or _torch_hooks.current_level() is not None)
            else fused
        )
    return torch.maximum(lo, y)


def _uniform(
    k: torch.Tensor,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    minval: Any = 0.0,
    maxval: Any = 1.0,
) -> torch.Tensor:
    if k.shape[-1] == 4 and dtype in (torch.float32, torch.float64):
        f = torch.rand(shape, generator=_rbg_generator(k), dtype=dtype, device=k.device)
    else:
        f = _unit_floats(k, shape, dtype)
    unit = not isinstance(minval, torch.Tensor) and not isinstance(maxval, torch.Tensor)
    if unit and minval == 0 and maxval == 1:
        return f  # max(0, f * 1 + 0) is f
    lo = _param(minval, dtype, k.device)
    hi = _param(maxval, dtype, k.device)
    return _scale(f, lo, hi, _is_pow2_span(minval, maxval, dtype))


def uniform(
    key: torch.Tensor,
    shape: Shape = (),
    dtype: Any = None,
    minval: Any = 0.0,
    maxval: Any = 1.0,
) -> torch.Tensor:
    """Uniform floats in ``[minval, maxval)``: ``jax.random.uniform``, bit for bit.

    Args:
        key: a single key.
        shape: the output shape; ``minval`` and ``maxval`` broadcast to it.
        dtype: a float dtype (default ``torch.get_default_dtype()``); float64 uses 64 random
            bits per value, as JAX with ``jax_enable_x64``.
        minval: inclusive lower bound, a number or a tensor (differentiable).
        maxval: exclusive upper bound, a number or a tensor (differentiable).

    Example:
        >>> from functorch_utils import random
        >>> random.uniform(random.key(0), (3,))
        tensor([0.9477, 0.9786, 0.3323])
    """
    call = "random.uniform(key, shape, dtype, minval, maxval)"
    k = _check_any_key(call, key)
    dt = _float_dtype(call, dtype)
    shape_t = _prng.check_shape(call, shape)
    _check_broadcast(call, shape_t, minval, maxval)
    return _uniform(k, shape_t, dt, minval, maxval)


# NOTE [erfinv as XLA computes it]
# ``normal`` is ``sqrt(2) * erf_inv(u)``. torch's ``erfinv`` is accurate to an ulp or two, but
# XLA evaluates Giles' polynomial approximation ("Approximating the erfinv function", GPU
# Computing Gems Jade, 2011), which differs from the true value by up to ~60 float32 ulps
# (~6000 float64 ulps) in the tails. To give JAX's numbers, ``_erfinv`` evaluates the same
# polynomials (Giles' published coefficients, selected per element as XLA does) on
# ``w = -log1p(-x * x)``, with each Horner step rounded once as XLA's fused multiply-adds are:
# ``torch.addcmul`` is one fused multiply-add on FMA hardware (probed at import,
# ``_ADDCMUL_IS_FUSED``); without it, float32 steps take exact products in float64. Measured
# against JAX on 100k normal draws: float32 99% bit-equal, at most 3 ulps; float64 95%
# bit-equal, at most 30 ulps (the remaining differences come from torch's ``log1p`` and
# ``sqrt`` vs XLA's).
_F32_LT = (
    2.81022636e-08,
    3.43273939e-07,
    -3.5233877e-06,
    -4.39150654e-06,
    0.00021858087,
    -0.00125372503,
    -0.00417768164,
    0.246640727,
    1.50140941,
)
_F32_GE = (
    -0.000200214257,
    0.000100950558,
    0.00134934322,
    -0.00367342844,
    0.00573950773,
    -0.0076224613,
    0.00943887047,
    1.00167406,
    2.83297682,
)
_F64_A = (
    -3.6444120640178196996e-21,
    -1.685059138182016589e-19,
    1.2858480715256400167e-18,
    1.115787767802518096e-17,
    -1.333171662854620906e-16,
    2.0972767875968561637e-17,
    6.6376381343583238325e-15,
    -4.0545662729752068639e-14,
    -8.1519341976054721522e-14,
    2.6335093153082322977e-12,
    -1.2975133253453532498e-11,
    -5.4154120542946279317e-11,
    1.051212273321532285e-09,
    -4.1126339803469836976e-09,
    -2.9070369957882005086e-08,
    4.2347877827932403518e-07,
    -1.3654692000834678645e-06,
    -1.3882523362786468719e-05,
    0.0001867342080340571352,
    -0.00074070253416626697512,
    -0.0060336708714301490533,
    0.24015818242558961693,
    1.6536545626831027356,
)
_F64_B = (
    2.2137376921775787049e-09,
    9.0756561938885390979e-08,
    -2.7517406297064545428e-07,
    1.8239629214389227755e-08,
    1.5027403968909827627e-06,
    -4.013867526981545969e-06,
    2.9234449089955446044e-06,
    1.2475304481671778723e-05,
    -4.7318229009055733981e-05,
    6.8284851459573175448e-05,
    2.4031110387097893999e-05,
    -0.0003550375203628474796,
    0.00095328937973738049703,
    -0.0016882755560235047313,
    0.0024914420961078508066,
    -0.0037512085075692412107,
    0.005370914553590063617,
    1.0052589676941592334,
    3.0838856104922207635,
)
_F64_C = (
    -2.7109920616438573243e-11,
    -2.5556418169965252055e-10,
    1.5076572693500548083e-09,
    -3.7894654401267369937e-09,
    7.6157012080783393804e-09,
    -1.4960026627149240478e-08,
    2.9147953450901080826e-08,
    -6.7711997758452339498e-08,
    2.2900482228026654717e-07,
    -9.9298272942317002539e-07,
    4.5260625972231537039e-06,
    -1.9681778105531670567e-05,
    7.5995277030017761139e-05,
    -0.00021503011930044477347,
    -0.00013871931833623122026,
    1.0103004648645343977,
    4.8499064014085844221,
)


def _addcmul_is_fused() -> bool:
    """Whether ``torch.addcmul`` rounds ``c + a * b`` once for float32 on CPU (an FMA build)."""
    a = torch.tensor([1.0 + 2.0**-12], dtype=torch.float32)
    c = torch.tensor([-(1.0 + 2.0**-11)], dtype=torch.float32)
    # a * a = 1 + 2**-11 + 2**-24 exactly; rounded first, the sum would be 0
    return bool(torch.addcmul(c, a, a).item() == 2.0**-24)


_ADDCMUL_IS_FUSED = _addcmul_is_fused()


def _select_horner(
    masks: list[torch.Tensor], tables: list[tuple[float, ...]], w: torch.Tensor, fused: bool
) -> torch.Tensor:
    """Horner's rule with per-element coefficients, XLA's way: ``tables[i]`` where ``masks[i]``
    (the last table elsewhere); shorter tables are padded with leading zeros. The coefficients
    are rounded to ``w``'s dtype, as XLA's constants are. ``fused`` rounds each float32 step once
    even where ``addcmul`` is not a fused multiply-add (exact products in float64)."""
    n = max(len(t) for t in tables)
    padded = [(0.0,) * (n - len(t)) + t for t in tables]
    consts = torch.tensor(padded, dtype=w.dtype, device=w.device).T  # (n, len(tables))
    if fused and not _ADDCMUL_IS_FUSED:
        consts = consts.double()  # the rounded constants, exact in float64

    def coef(i: int) -> torch.Tensor:
        out = consts[i, -1]
        for j in range(len(masks) - 1, -1, -1):
            out = torch.where(masks[j], consts[i, j], out)
        return out

    if fused and not _ADDCMUL_IS_FUSED:
        w64 = w.double()
        p = coef(0).expand_as(w64)
        for i in range(1, n):
            p = torch.addcmul(coef(i), p, w64).float().double()
        return p.float()
    p = coef(0).expand_as(w)
    for i in range(1, n):
        p = torch.addcmul(coef(i), p, w)
    return p


def _erfinv(x: torch.Tensor) -> torch.Tensor:
    """XLA's erf_inv (see NOTE [erfinv as XLA computes it]); float16/bfloat16 via float32."""
    dtype = x.dtype
    if dtype in (torch.float16, torch.bfloat16):
        return _erfinv(x.float()).to(dtype)
    w = -torch.log1p(-(x * x))
    if dtype == torch.float32:
        lt = w < 5.0
        ws = torch.where(lt, w - 2.5, torch.sqrt(w) - 3.0)
        p = _select_horner([lt], [_F32_LT, _F32_GE], ws, fused=True)
    else:
        a, b = w < 6.25, w < 16.0
        sw = torch.sqrt(w)
        ws = torch.where(a, w - 3.125, torch.where(b, sw - 3.25, sw - 5.0))
        p = _select_horner([a, b], [_F64_A, _F64_B, _F64_C], ws, fused=False)
    return torch.where(x.abs() == 1.0, x * math.inf, p * x)


def _normal_real(k: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if k.shape[-1] == 4 and dtype in (torch.float32, torch.float64):
        return torch.randn(shape, generator=_rbg_generator(k), dtype=dtype, device=k.device)
    lo = -1.0 + 2.0 ** -(_finfo_nmant(dtype) + 1)  # nextafter(-1, 0) in dtype
    u = _uniform(k, shape, dtype, lo, 1.0)
    if dtype in (torch.float16, torch.bfloat16):
        return _erfinv(u) * torch.tensor(math.sqrt(2), dtype=dtype, device=k.device)
    return _erfinv(u) * math.sqrt(2)


def _normal(k: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    if dtype.is_complex:
        real = torch.float32 if dtype == torch.complex64 else torch.float64
        k_re, k_im = _split(k, (2,)).unbind(-2)
        re = _normal_real(k_re, shape, real)
        im = _normal_real(k_im, shape, real)
        return torch.complex(re, im) / math.sqrt(2)
    return _normal_real(k, shape, dtype)


def normal(key: torch.Tensor, shape: Shape = (), dtype: Any = None) -> torch.Tensor:
    """Standard normal draws: ``jax.random.normal`` (``sqrt(2) * erfinv(u)``).

    Values equal JAX's within a few ulps (torch's ``erfinv`` is not XLA's); the uniform draws
    underneath are bit for bit JAX's. Complex dtypes draw real and imaginary parts with the two
    halves of ``split(key)``, each of variance 1/2, as JAX does.

    Example:
        >>> from functorch_utils import random
        >>> random.normal(random.key(0), (3,))
        tensor([ 1.6226,  2.0253, -0.4336])
    """
    call = "random.normal(key, shape, dtype)"
    k = _check_any_key(call, key)
    dt = torch.get_default_dtype() if dtype is None else _as_dtype(call, dtype)
    if not (dt.is_floating_point or dt.is_complex):
        raise_value(call, "dtype must be a float or complex dtype", "torch.float32", str(dt))
    return _normal(k, _prng.check_shape(call, shape), dt)


# ---------------------------------------------------------------------------------------------
# randint


def _int_param(call: str, name: str, x: Any, device: torch.device) -> torch.Tensor:
    """An integer bound as int64 (floats truncate toward zero, as JAX's ``astype(int)``)."""
    if isinstance(x, torch.Tensor):
        if x.is_complex():
            raise_type(call, f"{name} must be an integer", "an int or a tensor", describe(x))
        return x.to(device).to(torch.int64)
    if isinstance(x, bool) or not isinstance(x, (int, float, numbers.Integral)):
        raise_type(call, f"{name} must be an integer", "an int or a tensor", describe(x))
    v = int(x)
    v = max(-(1 << 63), min((1 << 63) - 1, v))
    return torch.tensor(v, dtype=torch.int64, device=device)


_MIN64 = -(1 << 63)
_MAX64 = (1 << 63) - 1


def _ult(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Unsigned ``a < b`` for int64 bit patterns."""
    return (a ^ _MIN64) < (b ^ _MIN64)


def _urem64(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """Unsigned 64-bit ``x % s`` on int64 bit patterns (``s != 0``); torch has no uint64 rem."""
    big = s < 0  # s >= 2**63: x < 2 * s, one subtraction at most
    r_big = torch.where(_ult(x, s), x, x - s)
    sp = torch.where(big, torch.ones_like(s), s)
    r1 = (x & _MAX64) % sp
    c = ((_MAX64 % sp) + 1) % sp  # 2**63 % s
    t = r1 + c  # < 2 * s, may wrap past 2**63
    t = torch.where(_ult(t, sp), t, t - sp)
    return torch.where(big, r_big, torch.where(x >= 0, r1, t))


def _randint(
    k: torch.Tensor,
    shape: tuple[int, ...],
    lo: torch.Tensor,
    hi: torch.Tensor,
    nbits: int,
) -> torch.Tensor:
    """JAX's randint on int64 bounds for an int32 (nbits=32) or int64 (nbits=64) result."""
    info_max = (1 << (nbits - 1)) - 1
    info_min = -(1 << (nbits - 1))
    oor = hi > info_max
    lo = lo.clamp(info_min, info_max)
    hi = hi.clamp(info_min, info_max)
    k1, k2 = _split(k, (2,)).unbind(-2)
    higher = _bits(k1, nbits, shape)
    lower = _bits(k2, nbits, shape)
    if nbits == 32:
        higher = higher.to(torch.int64) & _MASK32
        lower = lower.to(torch.int64) & _MASK32
        span = (hi - lo) & _MASK32
        span = torch.where(hi <= lo, torch.ones_like(span), span)
        span = torch.where(oor & (hi > lo), (span + 1) & _MASK32, span)
        safe = torch.where(span == 0, torch.ones_like(span), span)
        mult = ((65536 % safe) ** 2 & _MASK32) % safe  # uint32: 2**16 * 2**16 wraps to 0
        off = ((higher % safe) * mult + lower % safe) & _MASK32
        off = torch.where(span == 0, lower, off % safe)
        out = (lo + off) & _MASK32
        return ((out ^ (1 << 31)) - (1 << 31)).to(torch.int32)
    span = hi - lo  # wraps: the uint64 difference
    span = torch.where(hi <= lo, torch.ones_like(span), span)
    span = torch.where(oor & (hi > lo), span + 1, span)
    safe = torch.where(span == 0, torch.ones_like(span), span)
    mult = _urem64(torch.full_like(safe, 1 << 32), safe)
    mult = _urem64(mult * mult, safe)
    off = _urem64(higher, safe) * mult + _urem64(lower, safe)
    off = torch.where(span == 0, lower, _urem64(off, safe))
    return lo + off


def randint(
    key: torch.Tensor,
    shape: Shape,
    minval: Any,
    maxval: Any,
    dtype: Any = None,
) -> torch.Tensor:
    """Uniform integers in ``[minval, maxval)``: ``jax.random.randint``, bit for bit.

    JAX's algorithm (two 32- or 64-bit words per value, reduced modulo the span, slightly
    biased when the span is not a power of two). ``maxval <= minval`` gives ``minval``.

    Args:
        key: a single key.
        shape: the output shape; ``minval``/``maxval`` broadcast to it.
        minval: inclusive lower bound (int or integer tensor).
        maxval: exclusive upper bound.
        dtype: ``torch.int32`` by default (JAX's default mode); ``torch.int64`` reproduces JAX
            with ``jax_enable_x64`` (64-bit words); int8/int16/uint8 sample in int32.

    Example:
        >>> from functorch_utils import random
        >>> random.randint(random.key(0), (5,), 0, 10)
        tensor([9, 0, 2, 3, 1], dtype=torch.int32)
    """
    call = "random.randint(key, shape, minval, maxval, dtype)"
    k = _check_any_key(call, key)
    dt = _int_dtype(call, dtype)
    shape_t = _prng.check_shape(call, shape)
    _check_broadcast(call, shape_t, minval, maxval)
    lo = _int_param(call, "minval", minval, k.device)
    hi = _int_param(call, "maxval", maxval, k.device)
    if dt == torch.int64:
        return _randint(k, shape_t, lo, hi, 64).expand(shape_t).clone()
    if dt != torch.int32:
        info = torch.iinfo(dt)
        lo = _wrap32(lo).clamp(info.min, info.max)
        hi = _wrap32(hi).clamp(info.min, info.max + 1)
    return _randint(k, shape_t, lo, hi, 32).expand(shape_t).to(dt)


def _wrap32(x: torch.Tensor) -> torch.Tensor:
    """``astype(int32)``: the low 32 bits as a signed value (in int64)."""
    return ((x & _MASK32) ^ (1 << 31)) - (1 << 31)


# ---------------------------------------------------------------------------------------------
# Continuous samplers built on uniform


def _float_param(call: str, name: str, x: Any, dtype: torch.dtype, device: torch.device) -> Any:
    if isinstance(x, torch.Tensor) and (x.is_complex() or x.dtype == torch.bool):
        raise_type(call, f"{name} must be real", "a float or a real tensor", describe(x))
    return _param(x, dtype, device)


def _default_shape(call: str, shape: Any, *params: Any) -> tuple[int, ...]:
    if shape is None:
        return tuple(torch.broadcast_shapes(*[_shape_of(p) for p in params]))
    shape_t = _prng.check_shape(call, shape)
    _check_broadcast(call, shape_t, *params)
    return shape_t


def truncated_normal(
    key: torch.Tensor,
    lower: Any,
    upper: Any,
    shape: Shape | None = None,
    dtype: Any = None,
) -> torch.Tensor:
    """Standard normal draws truncated to ``(lower, upper)``: ``jax.random.truncated_normal``.

    ``sqrt(2) * erfinv(u)`` with ``u`` uniform in ``[erf(lower/sqrt2), erf(upper/sqrt2))``,
    clipped to the open interval. Differentiable in ``lower`` and ``upper``.

    Example:
        >>> from functorch_utils import random
        >>> x = random.truncated_normal(random.key(0), -1.0, 1.0, (1000,))
        >>> bool((x > -1).all() and (x < 1).all())
        True
    """
    call = "random.truncated_normal(key, lower, upper, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _param_dtype(call, dtype, lower, upper)
    shape_t = _default_shape(call, shape, lower, upper)
    lo = _float_param(call, "lower", lower, dt, k.device)
    hi = _float_param(call, "upper", upper, dt, k.device)
    sqrt2 = torch.tensor(math.sqrt(2), dtype=dt, device=k.device)
    a = torch.erf(lo / sqrt2)
    b = torch.erf(hi / sqrt2)
    f = _unit_floats(k, shape_t, dt)
    u = _scale(f, a, b, exact=dt not in (torch.float32, torch.float64))
    out = sqrt2 * _erfinv(u)
    inf = torch.tensor(math.inf, dtype=dt, device=k.device)
    return torch.minimum(
        torch.maximum(out, torch.nextafter(lo.detach(), inf)), torch.nextafter(hi.detach(), -inf)
    )


def bernoulli(
    key: torch.Tensor,
    p: Any = 0.5,
    shape: Shape | None = None,
    mode: Literal["low", "high"] = "low",
) -> torch.Tensor:
    """Boolean draws that are ``True`` with probability ``p``: ``jax.random.bernoulli``.

    Args:
        key: a single key.
        p: probability, a float or a floating tensor (its dtype sets the uniform's dtype).
        shape: the output shape (default ``p``'s shape).
        mode: ``"low"`` (one uniform per value) or ``"high"`` (two, for tiny ``p``).

    Example:
        >>> from functorch_utils import random
        >>> random.bernoulli(random.key(0), 0.5, (4,))
        tensor([False, False,  True,  True])
    """
    call = "random.bernoulli(key, p, shape, mode)"
    k = _check_any_key(call, key)
    if mode not in ("low", "high"):
        raise_value(call, "mode must be 'low' or 'high'", "'low' or 'high'", repr(mode))
    if isinstance(p, torch.Tensor):
        if not p.is_floating_point():
            raise_type(
                call,
                "p must have a floating dtype",
                "a float or a floating tensor",
                describe(p),
                "Convert it, e.g. p.float().",
            )
        pt = p.to(k.device)
    elif isinstance(p, (float, int)) and not isinstance(p, bool):
        pt = torch.tensor(float(p), dtype=torch.get_default_dtype(), device=k.device)
    else:
        raise_type(call, "p must be a probability", "a float or a floating tensor", describe(p))
    shape_t = tuple(pt.shape) if shape is None else _prng.check_shape(call, shape)
    if shape is not None:
        _check_broadcast(call, shape_t, pt)
    if mode == "high":
        u1, u2 = _unit_floats(k, (2, *shape_t), pt.dtype).unbind(0)
        u2 = u2 * 2.0 ** -_finfo_nmant(pt.dtype)
        return u2 < pt - u1
    return _unit_floats(k, shape_t, pt.dtype) < pt


def _clz32(v: torch.Tensor) -> torch.Tensor:
    """Leading zeros of 32-bit values held in int64 (0 <= v < 2**32); 32 for 0."""
    exponent = torch.frexp(v.double()).exponent.to(torch.int64)  # v = m * 2**e, 0.5 <= m < 1
    return torch.where(v == 0, 32, 32 - exponent)


def _shl32(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """XLA's 32-bit logical shift left (shifts of 32 or more give 0), on int64 values."""
    return torch.where(s >= 32, 0, (v << s.clamp(max=31)) & _MASK32)


def _shr32(v: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """XLA's 32-bit logical shift right (shifts of 32 or more give 0), on int64 values."""
    return torch.where(s >= 32, 0, v >> s.clamp(max=31))


def _safe_int_to_float(hi: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
    """JAX's float32 in (0, 1) from a 64-bit fixed-point fraction ``hi:lo`` (int64 holding uint32):
    the exponent counts the leading zeros, the mantissa takes the next 23 bits."""
    hiclz, loclz = _clz32(hi), _clz32(lo)
    mantissa = _shl32(hi, hiclz) | torch.where(
        hiclz == 32, _shl32(lo, loclz), _shr32(lo, 32 - hiclz)
    )
    mantissa = (mantissa >> 8) & ((1 << 23) - 1)
    exp = ((126 - torch.where(hiclz == 32, 32 + loclz, hiclz)) << 23) & ((1 << 30) - (1 << 22))
    bits = exp | mantissa
    return ((bits ^ (1 << 31)) - (1 << 31)).to(torch.int32).view(torch.float32)


def _gumbel(k: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype, mode: str) -> torch.Tensor:
    tiny = torch.finfo(dtype).tiny
    if mode == "highest" and dtype == torch.float32:
        b = _bits(k, 32, (2, *shape)).to(torch.int64) & _MASK32
        neg = _MASK32 - b  # ~bits
        carry = (neg[1] == _MASK32).to(torch.int64)
        neg = torch.stack([(neg[0] + carry) & _MASK32, (neg[1] + 1) & _MASK32])  # 1 - bits
        flip = b[0] < (1 << 31)
        chosen = torch.where(flip, b, neg)
        x = _safe_int_to_float(chosen[0], chosen[1])
        return torch.where(flip, -torch.log(-torch.log1p(-x)), -torch.log(-torch.log(x)))
    if mode in ("high", "highest"):
        high, low = _unit_floats(k, (2, *shape), dtype).unbind(0)
        x = torch.where(high >= 0.5, high, high + 2.0 ** -_finfo_nmant(dtype) * low + tiny)
        return -torch.log(-torch.log1p(-x))
    u = _uniform(k, shape, dtype, tiny, 1.0)
    return -torch.log(-torch.log(u))


def _gumbel_mode(call: str, mode: Any) -> str:
    if mode is None:
        return "low"
    if mode not in ("low", "high", "highest"):
        raise_value(
            call, "mode is not a gumbel mode", "None, 'low', 'high' or 'highest'", repr(mode)
        )
    return str(mode)


def gumbel(
    key: torch.Tensor, shape: Shape = (), dtype: Any = None, mode: str | None = None
) -> torch.Tensor:
    """Standard Gumbel draws, ``-log(-log(u))``: ``jax.random.gumbel``.

    Args:
        key: a single key.
        shape: the output shape.
        dtype: a float dtype.
        mode: ``"low"`` (default, one uniform per value), ``"high"`` (two, for a larger
            dynamic range) or ``"highest"`` (64 bits per float32 value; as ``"high"`` for other
            dtypes).

    Example:
        >>> from functorch_utils import random
        >>> random.gumbel(random.key(0), (3,))
        tensor([ 2.9234,  3.8326, -0.0969])
    """
    call = "random.gumbel(key, shape, dtype, mode)"
    k = _check_any_key(call, key)
    dt = _float_dtype(call, dtype)
    return _gumbel(k, _prng.check_shape(call, shape), dt, _gumbel_mode(call, mode))


def exponential(key: torch.Tensor, shape: Shape = (), dtype: Any = None) -> torch.Tensor:
    """Standard exponential draws, ``-log1p(-u)``: ``jax.random.exponential``.

    Example:
        >>> from functorch_utils import random
        >>> random.exponential(random.key(0), (3,))
        tensor([2.9501, 3.8434, 0.4039])
    """
    call = "random.exponential(key, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _float_dtype(call, dtype)
    u = _uniform(k, _prng.check_shape(call, shape), dt)
    return -torch.log1p(-u)


def laplace(key: torch.Tensor, shape: Shape = (), dtype: Any = None) -> torch.Tensor:
    """Standard Laplace draws: ``jax.random.laplace``.

    Example:
        >>> from functorch_utils import random
        >>> random.laplace(random.key(0), (3,))
        tensor([-2.2570, -3.1503,  0.4086])
    """
    call = "random.laplace(key, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _float_dtype(call, dtype)
    epsneg = 2.0 ** -(_finfo_nmant(dt) + 1)
    u = _uniform(k, _prng.check_shape(call, shape), dt, -1.0 + epsneg, 1.0)
    return torch.sign(u) * torch.log1p(-torch.abs(u))


def logistic(key: torch.Tensor, shape: Shape = (), dtype: Any = None) -> torch.Tensor:
    """Standard logistic draws, ``log(u) - log1p(-u)``: ``jax.random.logistic``.

    Example:
        >>> from functorch_utils import random
        >>> random.logistic(random.key(0), (3,))
        tensor([ 2.8964,  3.8218, -0.6978])
    """
    call = "random.logistic(key, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _float_dtype(call, dtype)
    x = _uniform(k, _prng.check_shape(call, shape), dt, torch.finfo(dt).tiny, 1.0)
    return torch.log(x) - torch.log1p(-x)


# ---------------------------------------------------------------------------------------------
# gamma family (Marsaglia-Tsang, implicit reparameterisation)


def _where_key(mask: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``torch.where`` for key tensors (uint32 has no ``where`` on CPU): select on the int32 view."""
    out = torch.where(mask.unsqueeze(-1), a.view(torch.int32), b.view(torch.int32))
    return out.view(_prng.KEY_DTYPE)


def _gamma_one(keys: torch.Tensor, alpha: torch.Tensor, log_space: bool) -> torch.Tensor:
    """One Gamma(alpha[i]) draw per key ``keys[i]``, exactly JAX's ``_gamma_one`` loop per element.

    See NOTE [rejection loops]: all elements run together, finished ones keep their state.
    """
    dtype = alpha.dtype
    boost_mask = alpha >= 1.0
    alpha_b = torch.where(boost_mask, alpha, alpha + 1.0)
    d = alpha_b - torch.tensor(1.0 / 3.0, dtype=dtype, device=alpha.device)
    c = torch.tensor(1.0 / 3.0, dtype=dtype, device=alpha.device) / torch.sqrt(d)
    key, subkey = _split(keys, (2,)).unbind(-2)

    def accept_test(X: torch.Tensor, V: torch.Tensor, U: torch.Tensor) -> torch.Tensor:
        # JAX loops *while* this holds (the draw is rejected).
        return (U >= 1.0 - 0.0331 * (X * X)) & (
            torch.log(U) >= X * 0.5 + d * ((1.0 - V) + torch.log(V))
        )

    X = torch.zeros_like(alpha)
    V = torch.ones_like(alpha)
    U = torch.full_like(alpha, 2.0)
    active = accept_test(X, V, U)
    while _any(active):
        key_n, x_key, u_key = _split(key, (3,)).unbind(-2)
        x = torch.zeros_like(alpha)
        v = torch.full_like(alpha, -1.0)
        inner = active & (v <= 0.0)
        while _any(inner):
            x_key_n, sub = _split(x_key, (2,)).unbind(-2)
            xn = _normal_real(sub, (), dtype)
            vn = 1.0 + xn * c
            x_key = _where_key(inner, x_key_n, x_key)
            x = torch.where(inner, xn, x)
            v = torch.where(inner, vn, v)
            inner = active & (v <= 0.0)
        Un = _uniform(u_key, (), dtype)
        key = _where_key(active, key_n, key)
        X = torch.where(active, x * x, X)
        V = torch.where(active, (v * v) * v, V)
        U = torch.where(active, Un, U)
        active = active & accept_test(X, V, U)
    zero = torch.zeros((), dtype=dtype, device=alpha.device)
    if log_space:
        log_samples = torch.log1p(-_uniform(subkey, (), dtype))  # -exponential(subkey)
        log_boost = torch.where(boost_mask | (log_samples == 0), zero, log_samples * (1.0 / alpha))
        return (torch.log(d) + torch.log(V)) + log_boost
    samples = 1.0 - _uniform(subkey, (), dtype)
    boost = torch.where(boost_mask, zero + 1.0, torch.pow(samples, 1.0 / alpha))
    return (d * V) * boost


# NOTE [gamma's implicit reparameterisation]
# As JAX, the derivative of a sample x ~ Gamma(a) with respect to a is the implicit one: with u
# fixed, P(a, x) = u (the regularised lower incomplete gamma function), so
# dx/da = -(dP/da) / (dP/dx) and dP/dx = x**(a-1) exp(-x) / Gamma(a). dP/da comes from the
# series P = x**a exp(-x) / Gamma(a+1) * sum_n x**n / ((a+1)...(a+n)) when x <= max(1, a),
# and from the continued fraction of Q = 1 - P (Cephes' igamc) otherwise, each differentiated
# term by term in float64. The sample is returned as
# ``x + (a - a.detach()) * dx_da.detach()``: the value is x exactly, and reverse and forward
# mode (and vmap over either) see dx/da. Derivatives of second order through the sampler are
# not provided (they come out as zero).


def _series_dx_da(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    term = torch.ones_like(x)
    dterm = torch.zeros_like(x)
    total = torch.ones_like(x)
    dtotal = torch.zeros_like(x)
    r = a.clone()
    for i in range(2000):
        r = r + 1.0
        dterm = dterm * (x / r) - term * x / (r * r)
        term = term * (x / r)
        total = total + term
        dtotal = dtotal + dterm
        if i % 16 == 15 and not _any(
            (term.abs() > 1e-17 * total.abs()) | (dterm.abs() > 1e-17 * dtotal.abs())
        ):
            break
    dlog = torch.log(x) - torch.special.digamma(a + 1.0)
    return -(x / a) * (dtotal + total * dlog)


def _cf_dx_da(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    big, biginv = 4503599627370496.0, 2.220446049250313e-16
    y = 1.0 - a
    z = x + y + 1.0
    c = torch.zeros_like(x)
    pkm2, dpkm2 = torch.ones_like(x), torch.zeros_like(x)
    qkm2, dqkm2 = x, torch.zeros_like(x)
    pkm1, dpkm1 = x + 1.0, torch.zeros_like(x)
    qkm1, dqkm1 = z * x, -x
    ans = pkm1 / qkm1
    dans = (dpkm1 - ans * dqkm1) / qkm1
    for i in range(2000):
        c = c + 1.0
        y = y + 1.0
        z = z + 2.0
        yc = y * c
        pk = pkm1 * z - pkm2 * yc
        qk = qkm1 * z - qkm2 * yc
        dpk = dpkm1 * z - pkm1 - dpkm2 * yc + pkm2 * c
        dqk = dqkm1 * z - qkm1 - dqkm2 * yc + qkm2 * c
        ok = qk != 0
        qs = torch.where(ok, qk, torch.ones_like(qk))
        r = pk / qs
        dr = (dpk - r * dqk) / qs
        change = torch.where(ok, (ans - r).abs() + (dans - dr).abs(), torch.zeros_like(r))
        ans = torch.where(ok, r, ans)
        dans = torch.where(ok, dr, dans)
        pkm2, pkm1, qkm2, qkm1 = pkm1, pk, qkm1, qk
        dpkm2, dpkm1, dqkm2, dqkm1 = dpkm1, dpk, dqkm1, dqk
        scale = torch.where(pk.abs() > big, biginv, 1.0)
        pkm2, pkm1, qkm2, qkm1 = pkm2 * scale, pkm1 * scale, qkm2 * scale, qkm1 * scale
        dpkm2, dpkm1, dqkm2, dqkm1 = dpkm2 * scale, dpkm1 * scale, dqkm2 * scale, dqkm1 * scale
        if i % 16 == 15 and not _any(change > 1e-16 * (ans.abs() + dans.abs())):
            break
    return x * ((torch.log(x) - torch.special.digamma(a)) * ans + dans)


def _gamma_dx_da(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """dx/da of a Gamma(a) sample x (see NOTE [gamma's implicit reparameterisation])."""
    a64, x64 = a.detach().double(), x.detach().double()
    tiny = torch.finfo(torch.float64).tiny
    x64 = x64.clamp_min(tiny)
    use_cf = (x64 > 1.0) & (x64 > a64)
    one = torch.ones_like(x64)
    series = _series_dx_da(a64, torch.where(use_cf, one * 0.5, x64))
    cf = _cf_dx_da(a64, torch.where(use_cf, x64, a64 + 2.0))
    return torch.where(use_cf, cf, series).to(x.dtype)


# The rejection loops as custom operators for torch.compile (NOTE [rejection loops]). Eager
# calls run the Python loops directly; under compile the graph holds one call to each operator.


def _to_front(x: torch.Tensor, dim: int | None, size: int) -> torch.Tensor:
    """``x`` with its vmap batch dimension first (broadcast when it has none)."""
    return x.movedim(dim, 0) if dim is not None else x.expand(size, *x.shape)


@torch.library.custom_op("functorch_utils::gamma_one", mutates_args=())
def _gamma_one_op(keys: torch.Tensor, alpha: torch.Tensor, log_space: bool) -> torch.Tensor:
    return _gamma_one(keys, alpha, log_space)


@_gamma_one_op.register_fake
def _(keys: torch.Tensor, alpha: torch.Tensor, log_space: bool) -> torch.Tensor:
    return torch.empty_like(alpha)


@_gamma_one_op.register_vmap
def _(info: Any, in_dims: Any, keys: torch.Tensor, alpha: torch.Tensor, log_space: bool) -> Any:
    # elementwise in (key, alpha): the batch joins the elements
    b = info.batch_size
    keys, alpha = _to_front(keys, in_dims[0], b), _to_front(alpha, in_dims[1], b)
    out = _gamma_one_op(keys.reshape(-1, keys.shape[-1]), alpha.reshape(-1), log_space)
    return out.reshape(alpha.shape), 0


@torch.library.custom_op("functorch_utils::gamma_dx_da", mutates_args=())
def _gamma_dx_da_op(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return _gamma_dx_da(a, x)


@_gamma_dx_da_op.register_fake
def _(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return torch.empty_like(x)


@_gamma_dx_da_op.register_vmap
def _(info: Any, in_dims: Any, a: torch.Tensor, x: torch.Tensor) -> Any:
    b = info.batch_size
    a, x = _to_front(a, in_dims[0], b), _to_front(x, in_dims[1], b)
    return _gamma_dx_da_op(a.reshape(-1), x.reshape(-1)).reshape(x.shape), 0


def _gamma_loop(keys: torch.Tensor, alpha: torch.Tensor, log_space: bool) -> torch.Tensor:
    if _torch_hooks.shapes_only():
        return _gamma_one_op(keys, alpha, log_space)
    return _gamma_one(keys, alpha, log_space)


def _gamma_dx_da_any(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    if _torch_hooks.shapes_only():
        return _gamma_dx_da_op(a.detach(), x.detach())
    return _gamma_dx_da(a, x)


def _gamma(
    k: torch.Tensor, a: torch.Tensor, shape: tuple[int, ...], log_space: bool
) -> torch.Tensor:
    """Gamma (or log-gamma) draws of shape ``shape``; ``a`` broadcasts to it. Differentiable in a."""
    a = a.broadcast_to(shape)
    n = math.prod(shape)
    if n == 0:
        return torch.empty(shape, dtype=a.dtype, device=k.device)
    keys = _split(k, (n,))
    flat = a.reshape(n)
    x = _gamma_loop(keys, flat.detach(), log_space)
    if _torch_hooks.carries_derivative(flat):
        if log_space:
            sample = torch.exp(x).clamp_min(torch.finfo(x.dtype).tiny)
            g = _gamma_dx_da_any(flat, sample) / sample
        else:
            g = _gamma_dx_da_any(flat, x)
        x = x + (flat - flat.detach()) * g.detach()
    return x.reshape(shape)


def _param_dtype(call: str, dtype: Any, *params: Any) -> torch.dtype:
    """``dtype``, else the floating dtype of the tensor parameters, else the default dtype."""
    if dtype is None:
        for p in params:
            if isinstance(p, torch.Tensor) and p.is_floating_point():
                return p.dtype
    return _float_dtype(call, dtype)


def _one_param_args(
    call: str, key: Any, name: str, value: Any, shape: Any, dtype: Any
) -> tuple[torch.Tensor, torch.dtype, torch.Tensor, tuple[int, ...]]:
    """A sampler's key, dtype, one float parameter and output shape (default: the parameter's)."""
    k = _check_any_key(call, key)
    dt = _param_dtype(call, dtype, value)
    vt = _float_param(call, name, value, dt, k.device)
    return k, dt, vt, _default_shape(call, shape, vt)


def gamma(key: torch.Tensor, a: Any, shape: Shape | None = None, dtype: Any = None) -> torch.Tensor:
    """Standard Gamma(a) draws (unit rate): ``jax.random.gamma``.

    Marsaglia and Tsang's method, run per element with JAX's key derivation, so that draws equal
    JAX's up to ulps (and, rarely, a different accept/reject decision where a value sits at an
    acceptance boundary). Differentiable in ``a`` by implicit reparameterisation, as JAX.
    Runs eagerly (its rejection loop reads the data: a graph break under ``jit``).

    Args:
        key: a single key.
        a: shape parameter, positive (a float or a tensor).
        shape: output shape (default ``a``'s shape).
        dtype: float dtype.

    Example:
        >>> import torch
        >>> from functorch_utils import grad, random
        >>> k = random.key(0)
        >>> random.gamma(k, torch.tensor([0.5, 2.0]))
        tensor([0.8846, 1.7599])
        >>> grad(lambda a: random.gamma(k, a).sum())(torch.tensor([0.5, 2.0]))
        tensor([1.7750, 1.0179])
    """
    k, _, at, shape_t = _one_param_args(
        "random.gamma(key, a, shape, dtype)", key, "a", a, shape, dtype
    )
    return _gamma(k, at, shape_t, log_space=False)


def loggamma(
    key: torch.Tensor, a: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Logarithms of Gamma(a) draws, accurate for small ``a``: ``jax.random.loggamma``.

    Example:
        >>> import torch
        >>> from functorch_utils import random
        >>> random.loggamma(random.key(0), torch.tensor([0.5, 2.0]))
        tensor([-0.1227,  0.5653])
    """
    k, _, at, shape_t = _one_param_args(
        "random.loggamma(key, a, shape, dtype)", key, "a", a, shape, dtype
    )
    return _gamma(k, at, shape_t, log_space=True)


def beta(
    key: torch.Tensor, a: Any, b: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Beta(a, b) draws from two log-gamma draws: ``jax.random.beta``. Differentiable in a, b.

    Example:
        >>> from functorch_utils import random
        >>> random.beta(random.key(0), 2.0, 3.0, (3,))
        tensor([0.2363, 0.4905, 0.6838])
    """
    call = "random.beta(key, a, b, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _param_dtype(call, dtype, a, b)
    at = _float_param(call, "a", a, dt, k.device)
    bt = _float_param(call, "b", b, dt, k.device)
    shape_t = _default_shape(call, shape, at, bt)
    key_a, key_b = _split(k, (2,)).unbind(-2)
    lga = _gamma(key_a, at, shape_t, log_space=True)
    lgb = _gamma(key_b, bt, shape_t, log_space=True)
    log_max = torch.maximum(lga, lgb)
    ga = torch.exp(lga - log_max)
    gb = torch.exp(lgb - log_max)
    return ga / (ga + gb)


def dirichlet(
    key: torch.Tensor, alpha: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Dirichlet(alpha) draws (softmax of log-gamma draws): ``jax.random.dirichlet``.

    Args:
        key: a single key.
        alpha: concentrations, shape ``(..., n)``.
        shape: batch shape (default ``alpha.shape[:-1]``); the result has ``shape + (n,)``.
        dtype: float dtype.

    Example:
        >>> import torch
        >>> from functorch_utils import random
        >>> random.dirichlet(random.key(0), torch.tensor([1.0, 2.0, 3.0]))
        tensor([0.1423, 0.4049, 0.4528])
    """
    call = "random.dirichlet(key, alpha, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _param_dtype(call, dtype, alpha)
    al = _float_param(call, "alpha", alpha, dt, k.device)
    if al.ndim < 1:
        raise_value(call, "alpha must have at least one dimension", "shape (..., n)", describe(al))
    batch = al.shape[:-1]
    shape_t = tuple(batch) if shape is None else _prng.check_shape(call, shape)
    if shape is not None:
        _check_broadcast(call, shape_t, torch.empty(batch))
    lg = _gamma(k, al, (*shape_t, al.shape[-1]), log_space=True)
    return torch.softmax(lg, dim=-1)


# ---------------------------------------------------------------------------------------------
# poisson


def _poisson_knuth(k: torch.Tensor, lam: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    count = torch.zeros(shape, dtype=torch.int64, device=lam.device)
    log_prod = torch.zeros(shape, dtype=torch.float32, device=lam.device)
    rng = k
    while _any(log_prod > -lam):
        rng, sub = _split(rng, (2,)).unbind(-2)
        count = torch.where(log_prod > -lam, count + 1, count)
        log_prod = log_prod + torch.log(_uniform(sub, shape, torch.float32))
    return count - 1


def _poisson_rejection(k: torch.Tensor, lam: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    log_lam = torch.log(lam)
    b = 0.931 + 2.53 * torch.sqrt(lam)
    a = -0.059 + 0.02483 * b
    inv_alpha = 1.1239 + 1.1328 / (b - 3.4)
    v_r = 0.9277 - 3.6224 / (b - 2)
    k_out = torch.full(shape, -1.0, dtype=lam.dtype, device=lam.device)
    accepted = torch.zeros(shape, dtype=torch.bool, device=lam.device)
    key = k
    while _any(~accepted):
        # A draw accepted again later replaces the earlier one (as in JAX), so each vmap member
        # stops when all of its own elements are accepted (NOTE [rejection loops]).
        running = (~accepted).any()
        key, sk0, sk1 = _split(key, (3,)).unbind(-2)
        u = _uniform(sk0, shape, lam.dtype) - 0.5
        v = _uniform(sk1, shape, lam.dtype)
        u_shifted = 0.5 - torch.abs(u)
        kk = torch.floor((2 * a / u_shifted + b) * u + lam + 0.43)
        s = torch.log(v * inv_alpha / (a / (u_shifted * u_shifted) + b))
        t = -lam + kk * log_lam - torch.lgamma(kk + 1)
        accept1 = (u_shifted >= 0.07) & (v <= v_r)
        reject = (kk < 0) | ((u_shifted < 0.013) & (v > u_shifted))
        accept = (accept1 | (~reject & (s <= t))) & running
        k_out = torch.where(accept, kk, k_out)
        accepted = accepted | accept
    return k_out


def poisson(
    key: torch.Tensor, lam: Any, shape: Shape | None = None, dtype: Any = None
) -> torch.Tensor:
    """Poisson(lam) draws: ``jax.random.poisson`` (Knuth below 10, Hörmann's rejection above).

    As in JAX, ``lam`` is used in float32. Results default to ``torch.int32``. Under
    ``jit`` the rejection loop is one opaque custom operator in the graph (no graph break).

    Example:
        >>> import torch
        >>> from functorch_utils import random
        >>> random.poisson(random.key(0), torch.tensor([0.5, 3.0, 50.0]))
        tensor([ 0,  0, 41], dtype=torch.int32)
    """
    call = "random.poisson(key, lam, shape, dtype)"
    k = _check_any_key(call, key)
    dt = _int_dtype(call, dtype)
    lt = _float_param(call, "lam", lam, torch.float32, k.device)
    shape_t = tuple(lt.shape) if shape is None else _prng.check_shape(call, shape)
    if shape is not None:
        _check_broadcast(call, shape_t, lt)
    lt = lt.detach().broadcast_to(shape_t)
    if _torch_hooks.shapes_only():
        return _poisson_op(k, lt).to(dt)
    return _poisson_draw(k, lt).to(dt)


def _poisson_draw(k: torch.Tensor, lt: torch.Tensor) -> torch.Tensor:
    """int64 Poisson(lt) draws of lt's shape from one key (Knuth below 10, rejection above)."""
    shape_t = tuple(lt.shape)
    use_knuth = torch.isnan(lt) | (lt < 10)
    lam_knuth = torch.where(use_knuth, lt, torch.zeros_like(lt))
    lam_rej = torch.where(use_knuth, torch.full_like(lt, 1e5), lt)
    knuth = _poisson_knuth(k, lam_knuth, shape_t)
    rej = _poisson_rejection(k, lam_rej, shape_t).to(torch.int64)
    out = torch.where(use_knuth, knuth, rej)
    return torch.where(lt == 0, torch.zeros_like(out), out)


def _per_key(
    fn: Callable[..., torch.Tensor], keys: torch.Tensor, *params: torch.Tensor, out_axis: int = 0
) -> torch.Tensor:
    """``fn(key, *params)`` for each key of ``keys`` (``(*batch, 2)``: one key per vmap member
    of a rejection operator, whose vmap rules put the members first; ``params`` are
    ``(*batch, ...)``), on the eager vmap, so that each member's loop runs as in NOTE [rejection
    loops]. The members come out flattened on ``out_axis``."""
    nb = keys.dim() - 1
    if nb == 0:
        return fn(keys, *params)
    from ._vmap import vmap

    flat_k = keys.reshape(-1, keys.shape[-1])
    flat = [x.reshape(flat_k.shape[0], *x.shape[nb:]) for x in params]
    return vmap(fn, out_axes=out_axis)(flat_k, *flat)


@torch.library.custom_op("functorch_utils::poisson", mutates_args=())
def _poisson_op(keys: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return _per_key(_poisson_draw, keys, lam).reshape(lam.shape)


@_poisson_op.register_fake
def _(keys: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    return torch.empty(lam.shape, dtype=torch.int64, device=lam.device)


@_poisson_op.register_vmap
def _(info: Any, in_dims: Any, keys: torch.Tensor, lam: torch.Tensor) -> Any:
    b = info.batch_size
    return _poisson_op(_to_front(keys, in_dims[0], b), _to_front(lam, in_dims[1], b)), 0


# ---------------------------------------------------------------------------------------------
# Discrete choices: categorical, permutation, choice


def categorical(
    key: torch.Tensor,
    logits: Any,
    axis: int = -1,
    shape: Shape | None = None,
    replace: bool = True,
    mode: str | None = None,
) -> torch.Tensor:
    """Draws from categorical distributions given by ``logits``: ``jax.random.categorical``.

    The Gumbel-max trick (with replacement) or the Gumbel top-k trick (without), as JAX.

    Args:
        key: a single key.
        logits: unnormalised log-probabilities; ``axis`` indexes the categories.
        axis: the category axis.
        shape: output shape (default: ``logits``' shape without ``axis``); leading extra
            dimensions draw several samples per distribution.
        replace: sample with replacement (default) or without.
        mode: the Gumbel sampler's mode, ``"low"``, ``"high"`` or ``"highest"``.

    Returns:
        ``torch.int32`` indices (JAX's default integer type).

    Example:
        >>> import torch
        >>> from functorch_utils import random
        >>> random.categorical(random.key(0), torch.log(torch.tensor([0.1, 0.2, 0.7])), shape=(6,))
        tensor([1, 2, 2, 1, 2, 2], dtype=torch.int32)
    """
    call = "random.categorical(key, logits, axis, shape, replace, mode)"
    k = _check_any_key(call, key)
    if not isinstance(logits, torch.Tensor):
        logits = torch.tensor(logits, dtype=torch.get_default_dtype(), device=k.device)
    if not logits.is_floating_point():
        raise_value(call, "logits must be floating", "a floating tensor", describe(logits))
    nd = logits.ndim
    if not -nd <= axis < nd:
        raise_value(call, "axis is out of range", f"an axis of a {nd}-d tensor", repr(axis))
    mode_s = _gumbel_mode(call, mode)
    batch_shape = tuple(d for i, d in enumerate(logits.shape) if i != axis % nd)
    if shape is None:
        shape_t = batch_shape
    else:
        shape_t = _prng.check_shape(call, shape)
        _check_broadcast(call, shape_t, torch.empty(batch_shape))
    prefix = shape_t[: len(shape_t) - len(batch_shape)]
    if replace:
        ax = axis - nd if axis >= 0 else axis
        logits_shape = list(shape_t[len(shape_t) - len(batch_shape) :])
        logits_shape.insert(ax % nd, logits.shape[ax])
        g = _gumbel(k, (*prefix, *logits_shape), logits.dtype, mode_s)
        expanded = logits.reshape((1,) * len(prefix) + tuple(logits.shape))
        return torch.argmax(g + expanded, dim=ax).to(torch.int32)
    noisy = logits + _gumbel(k, tuple(logits.shape), logits.dtype, mode_s)
    n_draws = math.prod(prefix)
    if n_draws > logits.shape[axis]:
        raise_value(
            call,
            "cannot draw more samples without replacement than there are categories",
            f"at most {logits.shape[axis]} samples",
            f"{n_draws}",
        )
    idx = torch.topk(torch.movedim(noisy, axis, -1), n_draws, dim=-1).indices
    idx = torch.movedim(idx, -1, 0)  # JAX reshapes with the sample axis first
    return idx.reshape(shape_t).to(torch.int32)


def _shuffle(k: torch.Tensor, x: torch.Tensor, axis: int) -> torch.Tensor:
    """JAX's shuffle: stable sorts along ``axis`` by fresh 32-bit keys, enough rounds to avoid ties."""
    rounds = math.ceil(3 * math.log(max(1, x.numel())) / math.log(_MASK32))
    for _ in range(rounds):
        k, sub = _split(k, (2,)).unbind(-2)
        sort_keys = _bits(sub, 32, tuple(x.shape)).to(torch.int64) & _MASK32
        order = torch.sort(sort_keys, dim=axis, stable=True).indices
        x = torch.take_along_dim(x, order, dim=axis)
    return x


def _is_int_scalar(x: Any) -> bool:
    if isinstance(x, torch.Tensor):
        return x.ndim == 0 and not x.is_floating_point() and not x.is_complex()
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def permutation(
    key: torch.Tensor, x: int | torch.Tensor, axis: int = 0, independent: bool = False
) -> torch.Tensor:
    """A random permutation of ``arange(x)`` or of a tensor along ``axis``: as JAX's.

    Args:
        key: a single key.
        x: an int ``n`` (permute ``arange(n)``, int32 as JAX) or a tensor.
        axis: the axis to permute.
        independent: permute each slice along ``axis`` independently.

    Example:
        >>> from functorch_utils import random
        >>> random.permutation(random.key(0), 6)
        tensor([0, 1, 5, 4, 3, 2], dtype=torch.int32)
    """
    call = "random.permutation(key, x, axis, independent)"
    k = _check_any_key(call, key)
    if _is_int_scalar(x):
        n = int(x)
        return _shuffle(k, torch.arange(n, dtype=torch.int32, device=k.device), 0)
    if not isinstance(x, torch.Tensor) or x.ndim == 0:
        raise_type(
            call,
            "x must be an integer or at least 1-dimensional",
            "an int or a tensor with ndim >= 1",
            describe(x),
        )
    if not -x.ndim <= axis < x.ndim:
        raise_value(call, "axis is out of range", f"an axis of a {x.ndim}-d tensor", repr(axis))
    axis = axis % x.ndim
    if independent or x.ndim == 1:
        return _shuffle(k, x, axis)
    ind = _shuffle(k, torch.arange(x.shape[axis], device=k.device), 0)
    return torch.index_select(x, axis, ind)


def choice(
    key: torch.Tensor,
    a: int | torch.Tensor,
    shape: Shape = (),
    replace: bool = True,
    p: Any = None,
    axis: int = 0,
    mode: str | None = None,
) -> torch.Tensor:
    """Random elements of ``a`` (or of ``arange(a)``): ``jax.random.choice``.

    Args:
        key: a single key.
        a: an int ``n`` or a tensor whose slices along ``axis`` are chosen.
        shape: how many draws, as a shape.
        replace: with replacement (default) or without.
        p: optional probabilities of the ``n`` entries.
        axis: the axis of ``a`` to choose along.
        mode: the Gumbel sampler's mode when ``p`` is given and ``replace=False``.

    Example:
        >>> from functorch_utils import random
        >>> random.choice(random.key(0), 10, (4,), replace=False)
        tensor([0, 1, 8, 5], dtype=torch.int32)
    """
    call = "random.choice(key, a, shape, replace, p, axis, mode)"
    k = _check_any_key(call, key)
    shape_t = _prng.check_shape(call, shape)
    if _is_int_scalar(a):
        arr = None
        n_inputs = int(a)
    elif isinstance(a, torch.Tensor):
        arr = a
        if not -arr.ndim <= axis < arr.ndim:
            raise_value(
                call, "axis is out of range", f"an axis of a {arr.ndim}-d tensor", repr(axis)
            )
        axis = axis % arr.ndim
        n_inputs = arr.shape[axis]
    else:
        raise_type(call, "a must be an int or a tensor", "an int or a tensor", describe(a))
    n_draws = math.prod(shape_t)
    out_shape = shape_t if arr is None else (*arr.shape[:axis], *shape_t, *arr.shape[axis + 1 :])
    if n_draws == 0:
        dtype = torch.int32 if arr is None else arr.dtype
        return torch.zeros(out_shape, dtype=dtype, device=k.device)
    if n_inputs <= 0:
        raise_value(
            call, "a must be greater than 0 unless no samples are taken", "n > 0", str(n_inputs)
        )
    if not replace and n_draws > n_inputs:
        raise_value(
            call,
            "cannot take a larger sample than the population when replace=False",
            f"at most {n_inputs} draws",
            str(n_draws),
        )
    if p is None:
        if replace:
            ind = randint(k, shape_t, 0, n_inputs)
            result = ind if arr is None else torch.index_select(arr, axis, ind.reshape(-1))
        else:
            perm = permutation(k, n_inputs if arr is None else arr, axis)
            result = torch.narrow(perm, 0 if arr is None else axis, 0, n_draws)
    else:
        pt = p if isinstance(p, torch.Tensor) else torch.tensor(p, device=k.device)
        if not pt.is_floating_point():
            pt = pt.to(torch.get_default_dtype())
        if tuple(pt.shape) != (n_inputs,):
            raise_value(
                call,
                "p must be None or a 1-d vector with the same size as a.shape[axis]",
                f"shape ({n_inputs},)",
                f"shape {tuple(pt.shape)}",
            )
        if replace:
            p_cuml = torch.cumsum(pt, 0)
            r = p_cuml[-1] * (1 - _uniform(k, shape_t, pt.dtype))
            ind = torch.searchsorted(p_cuml, r).to(torch.int32)
        else:
            g = _gumbel(k, (n_inputs,), pt.dtype, _gumbel_mode(call, mode)) + torch.log(pt)
            ind = torch.topk(g, n_draws).indices.to(torch.int32)
        result = ind if arr is None else torch.index_select(arr, axis, ind.reshape(-1))
    return result.reshape(out_shape)


# ---------------------------------------------------------------------------------------------
# multivariate normal


def multivariate_normal(
    key: torch.Tensor,
    mean: Any,
    cov: Any,
    shape: Shape | None = None,
    dtype: Any = None,
    method: Literal["cholesky", "eigh", "svd"] = "cholesky",
) -> torch.Tensor:
    """Multivariate normal draws ``mean + factor @ z``: ``jax.random.multivariate_normal``.

    ``factor`` is the Cholesky factor of ``cov`` (or ``u * sqrt(s)`` from ``"svd"``,
    ``v * sqrt(w)`` from ``"eigh"``, for singular covariances); ``z`` is
    ``normal(key, shape + mean.shape[-1:])``. Differentiable in ``mean`` and ``cov``. Values
    equal JAX's up to the rounding of the factorisation (LAPACK vs XLA).

    Example:
        >>> import torch
        >>> from functorch_utils import random
        >>> random.multivariate_normal(random.key(0), torch.zeros(2), torch.eye(2), (2,))
        tensor([[ 1.6226,  2.0253],
                [-0.4336, -0.0786]])
    """
    call = "random.multivariate_normal(key, mean, cov, shape, dtype, method)"
    k = _check_any_key(call, key)
    if method not in ("cholesky", "eigh", "svd"):
        raise_value(
            call, "method must be one of 'svd', 'eigh', 'cholesky'", "'cholesky'", repr(method)
        )
    dt = _param_dtype(call, dtype, mean, cov)
    m = _float_param(call, "mean", mean, dt, k.device)
    c = _float_param(call, "cov", cov, dt, k.device)
    if m.ndim < 1:
        raise_value(call, "mean must have at least one dimension", "shape (..., n)", describe(m))
    n = m.shape[-1]
    if c.ndim < 2 or tuple(c.shape[-2:]) != (n, n):
        raise_value(
            call,
            "cov must have shape (..., n, n) for the mean's n",
            f"(..., {n}, {n})",
            describe(c),
        )
    batch = tuple(torch.broadcast_shapes(m.shape[:-1], c.shape[:-2]))
    if shape is None:
        shape_t = batch
    else:
        shape_t = _prng.check_shape(call, shape)
        _check_broadcast(call, shape_t, torch.empty(m.shape[:-1]), torch.empty(c.shape[:-2]))
    if method == "svd":
        u, s, _ = torch.linalg.svd(c)
        factor = u * torch.sqrt(s[..., None, :])
    elif method == "eigh":
        w, v = torch.linalg.eigh(c)
        factor = v * torch.sqrt(w[..., None, :])
    else:
        factor = torch.linalg.cholesky(c)
    z = _normal(k, (*shape_t, n), dt)
    return m + torch.einsum("...ij,...j->...i", factor, z)
