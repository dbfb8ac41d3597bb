"""Shared test helpers: one tree_allclose with explicit per-dtype tolerances."""

from __future__ import annotations

import collections
import dataclasses
from typing import Any

import optree
import pytest
import torch

from functorch_utils import tree_util

TOL = {
    torch.float64: dict(rtol=1e-10, atol=1e-12),
    torch.complex128: dict(rtol=1e-10, atol=1e-12),
    torch.float32: dict(rtol=1e-5, atol=1e-6),
    torch.complex64: dict(rtol=1e-5, atol=1e-6),
}


def tree_allclose(a: Any, b: Any, **kw: Any) -> None:
    la, sa = tree_util.tree_flatten(a)
    lb, sb = tree_util.tree_flatten(b)
    assert sa == sb, f"structures differ: {sa} vs {sb}"
    for x, y in zip(la, lb):
        if x is None or y is None:
            assert x is None and y is None
            continue
        assert isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor), (type(x), type(y))
        assert x.shape == y.shape, (x.shape, y.shape)
        assert x.dtype == y.dtype, (x.dtype, y.dtype)
        torch.testing.assert_close(x, y, **{**TOL.get(x.dtype, {}), **kw})


Point = collections.namedtuple("Point", ["x", "y"])


@dataclasses.dataclass
class Params:
    w: torch.Tensor
    b: torch.Tensor
    name: str = dataclasses.field(default="layer", metadata=dict(static=True))


tree_util.register_dataclass(Params)


def leaves(tree: Any) -> list[Any]:
    return optree.tree_leaves(tree, namespace="functorch_utils")


class LegacySquare(torch.autograd.Function):
    """x**2 as a legacy autograd.Function (no setup_context), which torch.func refuses."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return x**2

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return 2 * x * g


@pytest.fixture
def jax_32bit_mode():
    """JAX's default 32-bit mode, whatever another test file switched on globally (x64).

    Random's differential tests compare float32 streams; a module uses it as
    ``pytestmark = pytest.mark.usefixtures("jax_32bit_mode")`` after importing it.
    """
    try:
        import jax
    except ImportError:
        yield
        return
    with jax.enable_x64(False):
        yield
