"""Pytree assertions: ``assert_trees_allclose``; leaves compare with ``torch.testing.assert_close``."""

from __future__ import annotations

from typing import Any

import torch

from functorch_utils._pytree import flatten, leaf_names, structure_errors

__all__ = ["assert_trees_allclose", "default_tolerance"]


def default_tolerance(dtype: torch.dtype) -> tuple[float, float]:
    """The default ``(rtol, atol)`` of :func:`assert_trees_allclose` for a dtype.

    Args:
        dtype: A torch dtype; complex dtypes use their real dtype's tolerance, integer and bool
            dtypes compare exactly.

    Returns:
        ``(rtol, atol)``: ``(1e-10, 1e-12)`` for float64, ``(1e-5, 1e-6)`` for float32,
        ``(1e-2, 1e-3)`` for float16 and ``(2e-2, 1e-2)`` for bfloat16.

    Example:
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


def _mismatch(x: torch.Tensor, y: torch.Tensor, rtol: float, atol: float) -> str | None:
    """``None`` when ``x`` and ``y`` are close (``torch.testing.assert_close``), else its report."""
    try:
        torch.testing.assert_close(x, y, rtol=rtol, atol=atol, equal_nan=True)
    except AssertionError as e:
        return str(e).split("\n\n", 1)[-1]
    return None


def _compare(path: str, x: torch.Tensor, y: torch.Tensor, rtol: float, atol: float) -> None:
    call = "assert_trees_allclose(a, b)"
    xd, yd = x.detach().cpu(), y.detach().cpu()
    if not (xd.is_floating_point() or xd.is_complex()):
        report = _mismatch(xd, yd, rtol, atol)
        if report is not None:
            diff = (xd.long() - yd.long()).abs().max() if xd.numel() else 0
            raise AssertionError(
                f"{call}: values differ at {path} (shape {tuple(x.shape)}, dtype {x.dtype}); "
                f"max abs error {int(diff)}.\n{report}"
            )
        return
    wide = torch.complex128 if xd.is_complex() else torch.float64
    xw, yw = xd.to(wide), yd.to(wide)
    report = _mismatch(xw, yw, rtol, atol)
    if report is None:
        return
    both_nan = torch.isnan(xw) & torch.isnan(yw)
    abs_err = torch.nan_to_num(torch.where(both_nan, 0.0, (xw - yw).abs()), nan=float("inf"))
    rel_err = abs_err / yw.abs().clamp_min(torch.finfo(torch.float64).tiny)
    raise AssertionError(
        f"{call}: values differ at {path} (shape {tuple(x.shape)}, dtype {x.dtype}); "
        f"max abs error {float(abs_err.max()):.6g}, max rel error {float(rel_err.max()):.6g}; "
        f"tolerance atol {atol:g} + rtol {rtol:g} * |b|.\n{report}"
    )


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

    Example:
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
    for path, x, y in zip(leaf_names(a, "a"), leaves_a, leaves_b):
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
        _compare(path, x, y, d_rtol if rtol is None else rtol, d_atol if atol is None else atol)
