"""Pytree assertions: ``assert_trees_allclose``."""

from __future__ import annotations

from typing import Any

import torch

from ._tree import flatten, leaf_paths, structure_errors

__all__ = ["assert_trees_allclose", "default_tolerance"]


def default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """The default ``(rtol, atol)`` of :func:`assert_trees_allclose` for a dtype.

    Args:
        dtype: A torch dtype; complex dtypes use their real dtype's tolerance, integer and bool
            dtypes compare exactly.

    Returns:
        ``(rtol, atol)``: ``(1e-10, 1e-12)`` for float64, ``(1e-5, 1e-6)`` for float32,
        ``(1e-2, 1e-3)`` for float16 and ``(2e-2, 1e-2)`` for bfloat16.

    Examples:
        >>> import torch
        >>> from functorch_utils.testing import default_tolerance
        >>> default_tolerance(torch.float32)
        (1e-05, 1e-06)
    """
    if dtype.is_complex:
        dtype = dtype.to_real()
    if dtype == torch.float64:
        return 1e-10, 1e-12
    if dtype == torch.float32:
        return 1e-5, 1e-6
    if dtype == torch.float16:
        return 1e-2, 1e-3
    if dtype == torch.bfloat16:
        return 2e-2, 1e-2
    if dtype.is_floating_point:  # float8 and friends
        return 1e-1, 1e-1
    return 0.0, 0.0


def _fmt(x: Any) -> str:
    if isinstance(x, torch.Tensor):
        return f"tensor of dtype {x.dtype} and shape {tuple(x.shape)}"
    return f"{type(x).__name__} {x!r}"


def assert_trees_allclose(
    a: Any,
    b: Any,
    *,
    rtol: float | None = None,
    atol: float | None = None,
) -> None:
    """Asserts two pytrees have the same structure, shapes and dtypes, and close values.

    Leaves compare like ``torch.allclose`` (``|a - b| <= atol + rtol * |b|``, NaNs equal to
    NaNs) with per-dtype defaults from :func:`default_tolerance` (float64 ``1e-10``/``1e-12``,
    float32 ``1e-5``/``1e-6``, half types ``~1e-2``); integer and bool tensors compare exactly.
    Non-tensor leaves must be equal. Structures follow ``functorch_utils`` pytree conventions
    (``None`` is an empty subtree).

    Args:
        a: The actual pytree.
        b: The expected pytree.
        rtol: Relative tolerance for every leaf; by default from each leaf's dtype.
        atol: Absolute tolerance for every leaf; by default from each leaf's dtype.

    Raises:
        AssertionError: On a structure mismatch (optree's key-path explanation), a shape or dtype
            mismatch, or values that are not close (the key path, the shapes, the max absolute and
            relative error and the tolerance).

    Examples:
        >>> import torch
        >>> from functorch_utils.testing import assert_trees_allclose
        >>> x = {"w": torch.ones(2), "b": (torch.zeros(()), None)}
        >>> assert_trees_allclose(x, {"w": torch.ones(2) + 1e-7, "b": (torch.zeros(()), None)})
        >>> assert_trees_allclose(x, {"w": torch.ones(2) * 1.1, "b": (torch.zeros(()), None)})
        Traceback (most recent call last):
        AssertionError: assert_trees_allclose(a, b): values differ at a['w']...
    """
    call = "assert_trees_allclose(a, b)"
    leaves_a, spec_a = flatten(a)
    leaves_b, spec_b = flatten(b)
    if spec_a != spec_b:
        raise AssertionError(
            f"{call}: the structures differ:\n{structure_errors(b, a, 'a')}\n"
            f"expected (b): {spec_b}\ngot (a): {spec_a}"
        )
    paths = leaf_paths(a, "a")
    for path, x, y in zip(paths, leaves_a, leaves_b):
        if isinstance(x, torch.Tensor) != isinstance(y, torch.Tensor):
            raise AssertionError(f"{call}: leaf {path} is a {_fmt(x)}; expected a {_fmt(y)}.")
        if not isinstance(x, torch.Tensor):
            if x != y:
                raise AssertionError(f"{call}: leaf {path} is {x!r}; expected {y!r}.")
            continue
        if x.shape != y.shape:
            raise AssertionError(
                f"{call}: shapes differ at {path}; expected {tuple(y.shape)}, got {tuple(x.shape)}."
            )
        if x.dtype != y.dtype:
            raise AssertionError(
                f"{call}: dtypes differ at {path}; expected {y.dtype}, got {x.dtype}."
            )
        d_rtol, d_atol = default_tolerance(x.dtype)
        r = d_rtol if rtol is None else rtol
        t = d_atol if atol is None else atol
        xd, yd = x.detach().cpu(), y.detach().cpu()
        if not (xd.is_floating_point() or xd.is_complex()):
            close = bool(torch.equal(xd, yd)) if r == 0 and t == 0 else None
            if close is None:
                close = bool(torch.allclose(xd.double(), yd.double(), rtol=r, atol=t))
            if not close:
                diff = (xd.long() - yd.long()).abs().max() if xd.numel() else 0
                raise AssertionError(
                    f"{call}: values differ at {path} (shape {tuple(x.shape)}, dtype {x.dtype}); "
                    f"max abs error {int(diff)}."
                )
            continue
        wide = torch.complex128 if xd.is_complex() else torch.float64
        xw, yw = xd.to(wide), yd.to(wide)
        if torch.allclose(xw, yw, rtol=r, atol=t, equal_nan=True):
            continue
        both_nan = torch.isnan(xw) & torch.isnan(yw)
        abs_err = torch.where(both_nan, 0.0, (xw - yw).abs())
        abs_err = torch.nan_to_num(abs_err, nan=float("inf"))
        rel_err = abs_err / yw.abs().clamp_min(torch.finfo(torch.float64).tiny)
        k = int(torch.argmax((abs_err - (t + r * yw.abs())).reshape(-1)))
        idx = (
            tuple(int(i) for i in torch.unravel_index(torch.tensor(k), x.shape)) if x.dim() else ()
        )
        raise AssertionError(
            f"{call}: values differ at {path} (shape {tuple(x.shape)}, dtype {x.dtype}); "
            f"max abs error {float(abs_err.max()):.6g}, max rel error {float(rel_err.max()):.6g}; "
            f"tolerance atol {t:g} + rtol {r:g} * |b|; worst element {list(idx)}: "
            f"got {xw.reshape(-1)[k].item()}, expected {yw.reshape(-1)[k].item()}."
        )
