"""The threefry2x32 counter-based generator on torch tensors, and JAX's key derivation.

# NOTE [threefry on int32 bit patterns]
# JAX's default generator is threefry2x32 (Salmon et al., "Parallel random numbers: as easy as
# 1, 2, 3", SC 2011): 20 rounds of add / rotate / xor on pairs of 32-bit words. torch's uint32
# has no add or shift on CPU (torch 2.13), so every word here is an int32 tensor holding the bit
# pattern of the uint32 value: two's-complement addition wraps exactly like uint32 addition,
# xor/or/and/left shift act on the bits, and a logical right shift is an arithmetic shift followed
# by a mask. Keys travel as ``torch.uint32`` tensors of shape ``(..., 2)`` (the dtype tells a key
# from an ordinary tensor) and are reinterpreted with ``Tensor.view(torch.int32)``, which copies
# nothing and is supported by vmap, torch.compile and every device.
#
# Key derivation follows JAX with ``jax_threefry_partitionable=True`` (the default since JAX
# 0.5): element ``i`` of an output of shape ``s`` (``i`` its row-major flat index) is the
# threefry block of the counter pair ``(i >> 32, i & 0xFFFFFFFF)``. ``split`` keeps both output
# words as the new key; ``bits`` of width 32 xors them; width 64 concatenates them (high word
# first); widths 8 and 16 keep the low bits of the xor. ``fold_in(key, d)`` is the block of the
# counter pair ``(0, d)``.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch

from ._errors import describe, raise_type, raise_value

__all__ = [
    "KEY_DTYPE",
    "check_key",
    "check_shape",
    "key_words",
    "make_key",
    "random_bits",
    "seed_key",
    "split_words",
    "fold_in_words",
    "threefry2x32",
]

KEY_DTYPE = torch.uint32

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = 0x1BD11BDA
_MASK32 = 0xFFFFFFFF


def _i32(value: int) -> int:
    """The int32 whose bit pattern is the uint32 ``value``."""
    value &= _MASK32
    return value - (1 << 32) if value >= 1 << 31 else value


def _rotl(x: torch.Tensor, r: int) -> torch.Tensor:
    """Rotate each int32 bit pattern left by ``r`` (0 < r < 32), in place."""
    low = torch.bitwise_right_shift(x, 32 - r)
    low.bitwise_and_((1 << r) - 1)  # the arithmetic shift dragged in copies of the sign bit
    x.bitwise_left_shift_(r)
    return x.bitwise_or_(low)


def threefry2x32(
    k0: torch.Tensor, k1: torch.Tensor, x0: torch.Tensor, x1: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The threefry2x32 block function on int32 bit patterns; arguments broadcast together.

    ``x0`` and ``x1`` are not modified. Returns the two output words as new int32 tensors.
    """
    ks = (k0, k1, k0 ^ k1 ^ _PARITY)
    # Out-of-place first: the results have the broadcast shape (and are batched under vmap when
    # the key is), so every later in-place op writes into a tensor of the full shape.
    a = x0 + ks[0]
    b = x1 + ks[1]
    shape = torch.broadcast_shapes(a.shape, b.shape)
    if a.shape != shape:
        a = a.expand(shape).clone()
    if b.shape != shape:
        b = b.expand(shape).clone()
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            a.add_(b)
            _rotl(b, r)
            b.bitwise_xor_(a)
        a.add_(ks[(i + 1) % 3])
        b.add_(ks[(i + 2) % 3])
        b.add_(i + 1)
    return a, b


# ---------------------------------------------------------------------------------------------
# Keys


# NOTE [uint32 keys under inductor]
# Inductor's CPU code generator does not vectorise a kernel that loads a uint32 buffer: with the
# key's ``view(torch.int32)`` fused into the threefry kernel, the whole 20-round loop ran scalar
# (15.6 ms for 2**20 words, against 2.3 ms with an int32 input). Under torch.compile the key is
# therefore reinterpreted by an opaque custom op (its own tiny kernel), so the threefry kernel
# only sees int32. Eagerly the plain view is used (no copy).
@torch.library.custom_op("functorch_utils::key_words", mutates_args=())
def _key_words_op(key: torch.Tensor) -> torch.Tensor:
    return key.view(torch.int32).clone()


@_key_words_op.register_fake
def _(key: torch.Tensor) -> torch.Tensor:
    return torch.empty(key.shape, dtype=torch.int32, device=key.device)


def _key_words_vmap(info: Any, in_dims: tuple[int | None], key: torch.Tensor) -> Any:
    return _key_words_op(key), in_dims[0]  # elementwise: any batch dimension but the last


_key_words_op.register_vmap(_key_words_vmap)


def key_words(key: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two int32 words of a (checked) key tensor of shape ``(..., 2)``."""
    data = _key_words_op(key) if torch.compiler.is_compiling() else key.view(torch.int32)
    return data[..., 0], data[..., 1]


def make_key(k0: torch.Tensor, k1: torch.Tensor) -> torch.Tensor:
    """A key tensor (uint32, shape ``(..., 2)``) from two int32 word tensors."""
    return torch.stack([k0, k1], dim=-1).view(KEY_DTYPE)


def check_key(call: str, key: Any, *, allow_batched: bool = False) -> torch.Tensor:
    """Raise a clear error unless ``key`` is a key tensor (a single key unless batched is ok)."""
    if not isinstance(key, torch.Tensor) or key.dtype != KEY_DTYPE or key.ndim == 0:
        raise_type(
            call,
            "key is not a PRNG key",
            "a torch.uint32 tensor of shape (2,) made by random.key, random.PRNGKey, "
            "random.split or random.fold_in",
            describe(key),
            "Make keys with random.key(seed); use random.wrap_key_data to turn raw key data "
            "into a key.",
        )
    if key.shape[-1] != 2:
        raise_type(
            call,
            "key does not have the shape of a threefry2x32 key",
            "a tensor whose last dimension is 2",
            describe(key),
            "Make keys with random.key(seed); a batch of keys has shape (..., 2).",
        )
    if not allow_batched and key.ndim != 1:
        raise_value(
            call,
            "key must be a single key, not a batch of keys",
            "a key of shape (2,)",
            describe(key),
            "Use vmap to draw with a batch of keys, e.g. vmap(lambda k: random.normal(k, "
            "shape))(keys).",
        )
    return key


def seed_key(call: str, seed: Any, device: torch.device | str | None) -> torch.Tensor:
    """JAX's threefry seeding, with JAX's default (32-bit) integer semantics.

    JAX converts a Python int seed to int64 and then, with ``jax_enable_x64`` off (the
    default), to int32: the key is ``[0, seed mod 2**32]``. Integer tensors are treated alike.
    """
    if isinstance(seed, torch.Tensor):
        if seed.ndim != 0:
            raise_type(
                call,
                "the seed must be a scalar",
                "a Python int or a 0-d integer tensor",
                describe(seed),
                "Use vmap to make a batch of keys from a batch of seeds, e.g. "
                "vmap(random.key)(seeds).",
            )
        if seed.is_floating_point() or seed.is_complex():
            raise_type(
                call,
                "the seed must be an integer",
                "a Python int or a 0-d integer tensor",
                describe(seed),
            )
        if device is not None:
            seed = seed.to(device)
        s = seed.to(torch.int64) & _MASK32
        lo = (s ^ (1 << 31)) - (1 << 31)  # the int32 bit pattern, in int64
        lo = lo.to(torch.int32)
        return make_key(torch.zeros_like(lo), lo)
    if isinstance(seed, numbers.Integral):
        value = int(seed)
        if not -(1 << 63) <= value < 1 << 64:
            raise_value(
                call,
                "the seed does not fit in 64 bits",
                "an integer in [-2**63, 2**64)",
                repr(value),
                "Reduce the seed, e.g. seed % 2**32 (JAX uses only its low 32 bits).",
            )
        return torch.tensor([0, _i32(value)], dtype=torch.int32, device=device).view(KEY_DTYPE)
    raise_type(
        call,
        "the seed must be an integer",
        "a Python int or a 0-d integer tensor",
        describe(seed),
    )


def check_shape(call: str, shape: Any, name: str = "shape") -> tuple[int, ...]:
    """A shape given as an int or a sequence of non-negative ints, as a tuple."""
    if isinstance(shape, torch.Size):
        return tuple(shape)
    if isinstance(shape, torch.Tensor) and shape.ndim == 0 and not shape.is_floating_point():
        shape = int(shape)
    if isinstance(shape, numbers.Integral) and not isinstance(shape, bool):
        shape = (shape,)
    if isinstance(shape, Sequence) and not isinstance(shape, str):
        out = []
        for d in shape:
            if isinstance(d, torch.Tensor) and d.ndim == 0 and not d.is_floating_point():
                d = int(d)
            if not isinstance(d, numbers.Integral) or isinstance(d, bool) or d < 0:
                break
            out.append(int(d))
        else:
            return tuple(out)
    raise_type(
        call,
        f"{name} must be a tuple of non-negative integers",
        "a tuple such as (3, 4)",
        describe(shape),
    )


# ---------------------------------------------------------------------------------------------
# Counters, split, fold_in, bits


def _counters(shape: tuple[int, ...], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """JAX's ``iota_2x32_shape``: the high and low words of each element's flat index."""
    n = math.prod(shape)
    if n <= 1 << 31:
        lo = torch.arange(n, dtype=torch.int32, device=device).reshape(shape)
        return torch.zeros((), dtype=torch.int32, device=device), lo
    idx = torch.arange(n, dtype=torch.int64, device=device).reshape(shape)
    hi = (idx >> 32).to(torch.int32)
    lo = ((idx & _MASK32) ^ (1 << 31)) - (1 << 31)
    return hi, lo.to(torch.int32)


def _blocks(key: torch.Tensor, shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """The two threefry output words for every element of ``shape``; keys may be batched."""
    k0, k1 = key_words(key)
    if k0.ndim:  # a batch of keys (internal use): keys lead, the sample shape follows
        extra = (1,) * len(shape)
        k0 = k0.reshape(k0.shape + extra)
        k1 = k1.reshape(k1.shape + extra)
    hi, lo = _counters(shape, key.device)
    return threefry2x32(k0, k1, hi, lo)


def split_words(key: torch.Tensor, shape: tuple[int, ...]) -> torch.Tensor:
    """``split(key, shape)``: keys of shape ``(*key_batch, *shape, 2)``."""
    a, b = _blocks(key, shape)
    return make_key(a, b)


def fold_in_words(key: torch.Tensor, data: torch.Tensor | int) -> torch.Tensor:
    """``fold_in``: the threefry block of the counter pair ``(0, data)``."""
    k0, k1 = key_words(key)
    if isinstance(data, int):
        lo: torch.Tensor | int = _i32(data)
        zero: torch.Tensor | int = 0
    else:
        d = data.to(torch.int64) & _MASK32
        lo = ((d ^ (1 << 31)) - (1 << 31)).to(torch.int32)
        zero = torch.zeros_like(lo)
    x0 = torch.zeros_like(k0) + zero
    x1 = torch.zeros_like(k1) + lo
    a, b = threefry2x32(k0, k1, x0, x1)
    return make_key(a, b)


def random_bits(key: torch.Tensor, bit_width: int, shape: tuple[int, ...]) -> torch.Tensor:
    """JAX's ``random_bits`` (partitionable threefry), as bit patterns in a signed dtype.

    Width 32 gives int32 patterns; width 64 gives int64 patterns; widths 8 and 16 give int32
    tensors holding the unsigned value (0 <= v < 2**width).
    """
    a, b = _blocks(key, shape)
    if bit_width == 32:
        return a.bitwise_xor_(b)
    if bit_width == 64:
        hi = a.to(torch.int64) << 32
        return hi.bitwise_or_(b.to(torch.int64) & _MASK32)
    if bit_width in (8, 16):
        return a.bitwise_xor_(b).bitwise_and_((1 << bit_width) - 1)
    raise ValueError(f"bit width {bit_width} is not 8, 16, 32 or 64")  # pragma: no cover
