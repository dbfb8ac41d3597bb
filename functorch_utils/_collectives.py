"""The collectives over named axes: ``psum``, ``pmean``, ``pmax``, ``pmin``, ``all_gather``,
``axis_index``, and the ``torch.autograd.Function``s that carry their batching and derivative rules.

They read the bound names from ``_axes`` and never import ``vmap``. A name bound by
``distributed.pmap`` reduces across processes through ``_distributed``'s Functions instead (see
NOTE [pmap: named axes across processes] there).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import optree
import torch

from . import _distributed
from ._axes import Axis, lookup_all
from ._errors import describe, message, raise_type, raise_value
from ._pytree import NAMESPACE, leaf_names

__all__ = ["all_gather", "axis_index", "pmax", "pmean", "pmin", "psum"]

# ----------------------------------------------------------------------------------------------
# Primitive collectives: autograd.Functions whose vmap rule sees the batch dimension
#
# NOTE [named axes and collectives]
# ``torch.func`` has no named axes. Each ``vmap(..., axis_name=name)`` call maps one extra flat
# input, an *axis token* ``torch.arange(axis_size)`` over dim 0. Inside the body the token is a
# tensor batched at exactly that ``torch.func`` vmap level and no other: its per-member value is the
# member's index (that is ``axis_index``), and its batch dimension marks the level. While the body
# runs, ``(name, size, token)`` sits on a thread-local stack of bound names (``_axes.bind``); a
# collective looks its name up there (``_axes.lookup``: innermost binding wins, as in JAX) and
# applies a ``torch.autograd.Function`` to ``(x, token)``.
#
# ``torch.func`` processes a Function from the innermost transform level outwards:
# - at a ``grad``/``vjp`` level it uses ``setup_context``/``backward``, at a ``jvp`` level ``jvp``,
#   each written with the collectives themselves (psum transposes to psum, all_gather to
#   psum_scatter, as in JAX), so derivatives of any order are collectives again;
# - at a vmap level it calls the ``vmap`` staticmethod, and skips it when no input is batched
#   there. If the token is unbatched, this is some other vmap level (an inner named or unnamed
#   vmap, or the one inside ``jacrev``/``jacfwd``): the rule re-applies the Function one level
#   down and keeps ``x``'s batch dim. If the token is batched, this is the named level: the rule
#   reduces over ``x``'s batch dim with ordinary torch ops and returns an unbatched result, which
#   the levels below (outer vmaps, outer autograd) treat like any other op.
# So a collective finds its level however deep it is called, under any inner transform, using only
# public API (``torch.autograd.Function`` with a ``vmap`` staticmethod, ``torch.func.vmap``). The
# ``forward`` staticmethod is never reached: every path ends at the named level's ``vmap`` rule.
# ``chunk_size`` would run the body once per chunk, so a collective would see one chunk: the
# two options are rejected together.


def _unreachable(name: str) -> torch.Tensor:
    # Only reachable if an axis token escaped its vmap, which _axes.lookup prevents.
    raise AssertionError(f"{name}: collective evaluated outside its named vmap level")


class _PSum(torch.autograd.Function):
    """``psum`` over the level where ``token`` is batched; its own transpose."""

    @staticmethod
    def forward(x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return _unreachable("psum")

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.token = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _PSum.apply(g, ctx.token), None

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor, _: Any) -> torch.Tensor:
        return _PSum.apply(t, ctx.token)

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[int | None, int | None], x: torch.Tensor, token: torch.Tensor
    ) -> tuple[torch.Tensor, int | None]:
        x_dim, token_dim = in_dims
        if token_dim is None:  # another vmap level: pass through, keep x's batch dim
            return _PSum.apply(x, token), x_dim
        if x_dim is None:  # x is the same for every member
            return x * info.batch_size, None
        if x.dtype == torch.bool:
            return x.any(x_dim), None
        return x.sum(x_dim, dtype=x.dtype), None


class _AllGather(torch.autograd.Function):
    """Stack ``x`` over the level where ``token`` is batched (new leading dim)."""

    @staticmethod
    def forward(x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return _unreachable("all_gather")

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.token = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _PSumScatter.apply(g, ctx.token), None

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor, _: Any) -> torch.Tensor:
        return _AllGather.apply(t, ctx.token)

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[int | None, int | None], x: torch.Tensor, token: torch.Tensor
    ) -> tuple[torch.Tensor, int | None]:
        x_dim, token_dim = in_dims
        if token_dim is None:
            return _AllGather.apply(x, token), None if x_dim is None else x_dim + 1
        if x_dim is None:
            return x.unsqueeze(0).expand(info.batch_size, *x.shape), None
        return x.movedim(x_dim, 0), None


class _PSumScatter(torch.autograd.Function):
    """Member ``i`` gets ``sum_j x_j[i]``: the transpose of ``all_gather``."""

    @staticmethod
    def forward(x: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        return _unreachable("psum_scatter")

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.token = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _AllGather.apply(g, ctx.token), None

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor, _: Any) -> torch.Tensor:
        return _PSumScatter.apply(t, ctx.token)

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[int | None, int | None], x: torch.Tensor, token: torch.Tensor
    ) -> tuple[torch.Tensor, int | None]:
        x_dim, token_dim = in_dims
        if token_dim is None:
            if x_dim == 0:  # the level below scatters its leading dim: move this batch dim off it
                x, x_dim = x.movedim(0, 1), 1
            return _PSumScatter.apply(x, token), None if x_dim is None else x_dim - 1
        if x_dim is None:  # every member holds the same x: member i gets n * x[i]
            return x * info.batch_size, 0
        # Summing out the batch dim leaves the per-member leading dim first: it becomes the batch.
        return x.sum(x_dim, dtype=x.dtype), 0


# ----------------------------------------------------------------------------------------------
# Public collectives (JAX's lax signatures)


def _check_groups(call: str, axis_index_groups: Any) -> None:
    if axis_index_groups is not None:
        raise NotImplementedError(
            message(
                call,
                "axis_index_groups is not supported",
                "None",
                repr(axis_index_groups),
                "Reduce over the whole axis, or split it with a nested vmap.",
            )
        )


def _map_leaves(call: str, fn: Callable[[Any], Any], x: Any) -> Any:
    def leaf(v: Any) -> Any:
        if isinstance(v, (torch.Tensor, bool, int, float, complex)):
            return fn(v)
        _bad_leaf(call, v)

    return optree.tree_map(leaf, x, none_is_leaf=False, namespace=NAMESPACE)


def _bad_leaf(call: str, v: Any) -> None:
    raise_type(
        call,
        "x has a leaf that is not a tensor or a number",
        "tensors or Python numbers",
        describe(v),
    )


def _tensor_leaves(call: str, x: Any) -> tuple[list[Any], optree.PyTreeSpec, list[int]]:
    """``x``'s leaves (each checked to be a tensor or a number), its spec, the tensors' indices."""
    leaves, spec = optree.tree_flatten(x, none_is_leaf=False, namespace=NAMESPACE)
    tensors: list[int] = []
    for k, v in enumerate(leaves):
        if isinstance(v, torch.Tensor):
            tensors.append(k)
        elif not isinstance(v, (bool, int, float, complex)):
            _bad_leaf(call, v)
    return leaves, spec, tensors


def _over_processes(
    call: str, x: Any, leaves: list[Any], tensors: list[int], axis: Axis
) -> _distributed.ProcessAxis:
    """The process group of a pmap-bound axis, after checking the tensors' devices."""
    proc: _distributed.ProcessAxis = axis.process
    _distributed.check_devices(
        call,
        [leaves[k] for k in tensors],
        lambda: [leaf_names(x, "x")[k] for k in tensors],
        proc,
    )
    return proc


def psum(x: Any, axis_name: Any, *, axis_index_groups: Any = None) -> Any:
    """Sum ``x`` over the named ``vmap`` axis (or axes), as ``jax.lax.psum``.

    Every member gets the same sum. The derivative follows JAX: ``psum`` is linear and its
    transpose is ``psum``. Over an axis bound by ``distributed.pmap`` the members are processes
    and a pytree is summed in one all-reduce per dtype (see the Distributed guide).

    Args:
        x: a tensor, a Python number or a pytree of them. ``psum(1, "i")`` is the axis size.
        axis_name: the name given to an enclosing ``vmap(..., axis_name=...)`` (or
            ``distributed.pmap``), or a tuple of names to sum over several axes.
        axis_index_groups: not supported (must be ``None``).

    Returns:
        ``x``'s structure, each leaf summed over the axis.

    Raises:
        UnboundAxisNameError: (a ``NameError``) if no enclosing ``vmap`` (or
            ``distributed.pmap``) binds ``axis_name``.

    Example:
        >>> import torch
        >>> from functorch_utils import vmap, psum
        >>> x = torch.tensor([1.0, 2.0, 3.0])
        >>> vmap(lambda v: v / psum(v, "i"), axis_name="i")(x)
        tensor([0.1667, 0.3333, 0.5000])
        >>> vmap(lambda v: v * psum(1, "i"), axis_name="i")(x)  # psum(1, "i") is the size, 3
        tensor([3., 6., 9.])
    """
    call = f"psum(x, axis_name={axis_name!r})"
    _check_groups(call, axis_index_groups)
    axes = lookup_all(call, axis_name)
    leaves, spec, tensors = _tensor_leaves(call, x)
    n = 1
    for a in axes:
        n *= a.size
    out = [v if isinstance(v, torch.Tensor) else v * n for v in leaves]
    ts = [leaves[k] for k in tensors]
    for a in axes:
        if a.process is None:
            ts = [_PSum.apply(v, a.token) for v in ts]
        elif ts:  # across processes: one all-reduce per bucket of leaves, not one per leaf
            ts = _distributed.psum_flat(ts, _over_processes(call, x, leaves, tensors, a))
    for k, v in zip(tensors, ts):
        out[k] = v
    return optree.tree_unflatten(spec, out)


def pmean(x: Any, axis_name: Any, *, axis_index_groups: Any = None) -> Any:
    """Mean of ``x`` over the named ``vmap`` axis (or axes), as ``jax.lax.pmean``.

    Args:
        x: a tensor, a Python number or a pytree of them.
        axis_name: a bound axis name or a tuple of them.
        axis_index_groups: not supported (must be ``None``).

    Returns:
        ``x``'s structure, each leaf ``psum(x) / axis_size``.

    Example:
        >>> import torch
        >>> from functorch_utils import vmap, pmean
        >>> x = torch.tensor([1.0, 2.0, 6.0])
        >>> vmap(lambda v: v - pmean(v, "i"), axis_name="i")(x)
        tensor([-2., -1.,  3.])
    """
    call = f"pmean(x, axis_name={axis_name!r})"
    _check_groups(call, axis_index_groups)
    axes = lookup_all(call, axis_name)
    n = 1
    for a in axes:
        n *= a.size
    if len(axes) == 1 and axes[0].process is not None:
        # across processes: the floating buffers are divided in place after their all-reduce
        leaves, spec, tensors = _tensor_leaves(call, x)
        out = [v if isinstance(v, torch.Tensor) else v * n / n for v in leaves]
        if tensors:
            proc = _over_processes(call, x, leaves, tensors, axes[0])
            summed = _distributed.psum_flat([leaves[k] for k in tensors], proc, mean=True)
            for k, v in zip(tensors, summed):
                floating = v.is_floating_point() or v.is_complex()
                out[k] = v if floating and v.dtype != torch.bool else v / n
        return optree.tree_unflatten(spec, out)
    return _map_leaves(call, lambda v: v / n, psum(x, axis_name))


def _preduce(call: str, x: Any, axis_name: Any, op: Callable[..., Any]) -> Any:
    axes = lookup_all(call, axis_name)
    leaves, spec, tensors = _tensor_leaves(call, x)
    ts = [leaves[k] for k in tensors]
    for a in axes:
        if a.process is None:
            ts = [op(_AllGather.apply(v, a.token), 0) for v in ts]
        elif ts:
            proc = _over_processes(call, x, leaves, tensors, a)
            ts = [op(g, 0) for g in _distributed.all_gather_flat(ts, proc)]
    out = list(leaves)
    for k, v in zip(tensors, ts):
        out[k] = v
    return optree.tree_unflatten(spec, out)


def pmax(x: Any, axis_name: Any, *, axis_index_groups: Any = None) -> Any:
    """Maximum of ``x`` over the named ``vmap`` axis (or axes), as ``jax.lax.pmax``.

    Written as ``all_gather`` followed by ``amax``, so it is differentiable (ties share the
    gradient evenly, as ``torch.amax`` does); JAX does not differentiate ``pmax``.

    Args:
        x: a tensor, a Python number or a pytree of them.
        axis_name: a bound axis name or a tuple of them.
        axis_index_groups: not supported (must be ``None``).

    Returns:
        ``x``'s structure, each leaf the elementwise maximum over the axis.

    Example:
        >>> import torch
        >>> from functorch_utils import vmap, pmax
        >>> x = torch.tensor([1.0, 5.0, 2.0])
        >>> vmap(lambda v: pmax(v, "i"), axis_name="i")(x)
        tensor([5., 5., 5.])
    """
    call = f"pmax(x, axis_name={axis_name!r})"
    _check_groups(call, axis_index_groups)
    return _preduce(call, x, axis_name, torch.amax)


def pmin(x: Any, axis_name: Any, *, axis_index_groups: Any = None) -> Any:
    """Minimum of ``x`` over the named ``vmap`` axis (or axes), as ``jax.lax.pmin``.

    Args:
        x: a tensor, a Python number or a pytree of them.
        axis_name: a bound axis name or a tuple of them.
        axis_index_groups: not supported (must be ``None``).

    Returns:
        ``x``'s structure, each leaf the elementwise minimum over the axis.

    Example:
        >>> import torch
        >>> from functorch_utils import vmap, pmin
        >>> x = torch.tensor([4.0, 5.0, 2.0])
        >>> vmap(lambda v: v - pmin(v, "i"), axis_name="i")(x)
        tensor([2., 3., 0.])
    """
    call = f"pmin(x, axis_name={axis_name!r})"
    _check_groups(call, axis_index_groups)
    return _preduce(call, x, axis_name, torch.amin)


def all_gather(
    x: Any,
    axis_name: Any,
    *,
    axis_index_groups: Any = None,
    axis: int = 0,
    tiled: bool = False,
) -> Any:
    """Gather ``x`` from every member of the named ``vmap`` axis, as ``jax.lax.all_gather``.

    Every member gets the same stacked tensor. Its transpose is a ``psum_scatter`` (member ``i``
    receives the sum of every member's cotangent slice ``i``), as in JAX.

    Args:
        x: a tensor, a Python number or a pytree of them.
        axis_name: a bound axis name, or a tuple of names (gathered in row-major order, so the
            new axis has the product of their sizes).
        axis_index_groups: not supported (must be ``None``).
        axis: where the new axis goes in the result (negative counts from the end).
        tiled: concatenate along ``axis`` instead of stacking a new one.

    Returns:
        ``x``'s structure; each leaf has a new axis of the axis size at ``axis`` (or, with
        ``tiled=True``, its ``axis`` dimension multiplied by the axis size).

    Example:
        >>> import torch
        >>> from functorch_utils import vmap, all_gather
        >>> x = torch.tensor([[1, 2], [3, 4], [5, 6]])
        >>> vmap(lambda v: all_gather(v, "i", axis=1), axis_name="i")(x)[0]
        tensor([[1, 3, 5],
                [2, 4, 6]])
        >>> vmap(lambda v: all_gather(v, "i", tiled=True), axis_name="i")(x)[0]
        tensor([1, 2, 3, 4, 5, 6])
    """
    call = f"all_gather(x, axis_name={axis_name!r}, axis={axis!r}, tiled={tiled!r})"
    _check_groups(call, axis_index_groups)
    if not isinstance(axis, int) or isinstance(axis, bool):
        raise_type(call, "axis must be an int", "an int", describe(axis))
    axes = lookup_all(call, axis_name)

    def check(v: Any) -> torch.Tensor:
        t = v if isinstance(v, torch.Tensor) else torch.as_tensor(v)
        ndim = t.dim()
        limit = ndim if tiled else ndim + 1
        if tiled and ndim == 0:
            raise_value(
                call,
                "tiled=True needs an axis to concatenate along",
                "x with at least 1 dimension",
                describe(v),
                "Use tiled=False to stack 0-d values.",
            )
        if not -limit <= axis < limit:
            raise_value(
                call,
                f"axis is out of range for x with {ndim} dimensions",
                f"an axis in [{-limit}, {limit - 1}]",
                str(axis),
            )
        return t

    leaves, spec = optree.tree_flatten(
        _map_leaves(call, check, x), none_is_leaf=False, namespace=NAMESPACE
    )
    ts: list[torch.Tensor] = leaves
    for a in reversed(axes):  # innermost name last in the result
        if a.process is None:
            ts = [_AllGather.apply(t, a.token) for t in ts]
        elif ts:
            proc = _over_processes(call, x, ts, list(range(len(ts))), a)
            ts = _distributed.all_gather_flat(ts, proc)

    def place(t: torch.Tensor) -> torch.Tensor:
        if len(axes) > 1:
            t = t.flatten(0, len(axes) - 1)
        ndim = t.dim() - 1
        if tiled:
            return t.movedim(0, axis % ndim).flatten(axis % ndim, axis % ndim + 1)
        return t.movedim(0, axis % (ndim + 1))

    return optree.tree_unflatten(spec, [place(t) for t in ts])


def axis_index(axis_name: Any) -> torch.Tensor:
    """This member's index along the named ``vmap`` axis, as ``jax.lax.axis_index``.

    Over an axis bound by ``distributed.pmap`` it is this process's rank in the group.

    Args:
        axis_name: a bound axis name, or a tuple of names (the row-major index over their product).

    Returns:
        A 0-d ``torch.int64`` tensor (JAX gives int32; torch indexes with int64).

    Example:
        >>> import torch
        >>> from functorch_utils import vmap, axis_index
        >>> vmap(lambda v: v * axis_index("i"), axis_name="i")(torch.ones(4))
        tensor([0., 1., 2., 3.])
    """
    call = f"axis_index(axis_name={axis_name!r})"
    axes = lookup_all(call, axis_name)
    index = axes[0].token.clone()
    for a in axes[1:]:
        index = index * a.size + a.token
    return index
