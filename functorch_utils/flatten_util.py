"""``jax.flatten_util.ravel_pytree``: a pytree of tensors as one flat vector."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ._errors import describe, raise_type, raise_value
from ._pytree import flatten, unflatten

__all__ = ["ravel_pytree"]


def ravel_pytree(pytree: Any, /) -> tuple[torch.Tensor, Callable[[torch.Tensor], Any]]:
    """Ravel a pytree of tensors into a 1-d tensor, with the function that undoes it.

    The leaves are flattened, promoted to a common dtype (``torch.promote_types`` rules, as JAX's
    ``jnp.result_type``) and concatenated; ``unravel(vec)`` splits ``vec`` into pieces of the
    leaves' shapes. As in JAX, when every leaf has the same dtype ``unravel`` keeps ``vec``'s dtype
    (a boolean mask unravels to boolean leaves); with mixed dtypes ``vec`` must have the promoted
    dtype and each piece is cast back to its leaf's dtype. Python numbers become tensors. An empty
    tree gives an empty float tensor of the default dtype.

    Example:
        >>> import torch
        >>> from functorch_utils.flatten_util import ravel_pytree
        >>> flat, unravel = ravel_pytree({"a": torch.ones(2, 2), "b": torch.tensor([5.0])})
        >>> flat
        tensor([1., 1., 1., 1., 5.])
        >>> unravel(torch.arange(5.0))["a"]
        tensor([[0., 1.],
                [2., 3.]])
    """
    leaves, spec = flatten(pytree, call="ravel_pytree(pytree)", root="pytree")
    tensors = []
    for leaf in leaves:
        if isinstance(leaf, torch.Tensor):
            tensors.append(leaf)
        elif isinstance(leaf, (int, float, complex)):
            tensors.append(torch.as_tensor(leaf))
        else:
            raise_type(
                "ravel_pytree(pytree)",
                "every leaf must be a tensor or a Python number",
                "tensors",
                describe(leaf),
            )
    if not tensors:
        empty = torch.zeros(0, dtype=torch.get_default_dtype())

        def unravel_empty(vec: torch.Tensor) -> Any:
            _check_vec(vec, 0)
            return unflatten(spec, [])

        return empty, unravel_empty
    dtype = tensors[0].dtype
    for t in tensors[1:]:
        dtype = torch.promote_types(dtype, t.dtype)
    shapes = [t.shape for t in tensors]
    dtypes = [t.dtype for t in tensors]
    sizes = [t.numel() for t in tensors]
    flat = torch.cat([t.reshape(-1).to(dtype) for t in tensors])
    total = flat.numel()

    if all(d == dtype for d in dtypes):

        def unravel_polymorphic(vec: torch.Tensor) -> Any:
            _check_vec(vec, total)
            pieces = torch.split(vec, sizes)
            return unflatten(spec, [p.reshape(s) for p, s in zip(pieces, shapes)])

        return flat, unravel_polymorphic

    def unravel(vec: torch.Tensor) -> Any:
        _check_vec(vec, total)
        if vec.dtype != dtype:
            raise_type(
                "unravel(vec)",
                "vec has another dtype than the raveled pytree of mixed dtypes",
                f"dtype {dtype}",
                f"dtype {vec.dtype}",
                f"Cast it first: unravel(vec.to({dtype})).",
            )
        pieces = torch.split(vec, sizes)
        return unflatten(spec, [_cast(p.reshape(s), d) for p, s, d in zip(pieces, shapes, dtypes)])

    return flat, unravel


def _check_vec(vec: Any, total: int) -> None:
    if not isinstance(vec, torch.Tensor) or vec.dim() != 1 or vec.numel() != total:
        raise_value(
            "unravel(vec)",
            "vec does not match the raveled pytree",
            f"a 1-d tensor of {total} elements",
            describe(vec),
            "Pass a vector of the same size as the one ravel_pytree returned.",
        )


def _cast(piece: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    # A real leaf raveled into a complex vector comes back as the real part (as JAX), without
    # torch's warning about discarding the imaginary part.
    if piece.is_complex() and not dtype.is_complex:
        piece = piece.real
    return piece.to(dtype)
