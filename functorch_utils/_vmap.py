"""``vmap`` with JAX semantics on top of ``torch.func.vmap``, named axes and collectives.

# NOTE [named axes and collectives]
# ``torch.func`` has no named axes. Each ``vmap(..., axis_name=name)`` call maps one extra flat
# input, an *axis token* ``torch.arange(axis_size)`` over dim 0. Inside the body the token is a
# tensor batched at exactly that ``torch.func`` vmap level and no other: its per-member value is the
# member's index (that is ``axis_index``), and its batch dimension marks the level. While the body
# runs, ``(name, size, token)`` sits on a thread-local stack of bound names; a collective looks its
# name up there (innermost binding wins, as in JAX) and applies a ``torch.autograd.Function`` to
# ``(x, token)``.
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
"""

from __future__ import annotations

import functools
import inspect
import re
import threading
from collections.abc import Callable, Hashable, Sequence
from typing import Any, NamedTuple

import optree
import torch

from ._errors import check_callable, describe, fun_name, message, raise_type, raise_value
from ._pytree import NAMESPACE

__all__ = [
    "UnboundAxisNameError",
    "all_gather",
    "axis_index",
    "pmax",
    "pmean",
    "pmin",
    "psum",
    "vmap",
]

_RANDOMNESS = ("error", "different", "same")
# The body returns (mapped outputs, unmapped outputs); torch broadcasts this prefix over them.
_OUT_DIMS: Any = (0, None)


class UnboundAxisNameError(NameError):
    """A collective named an axis that no enclosing ``vmap(..., axis_name=...)`` binds.

    A ``NameError``, as JAX's ``unbound axis name`` error is.
    """


# ----------------------------------------------------------------------------------------------
# The stack of bound axis names (see NOTE [named axes and collectives])


class _Axis(NamedTuple):
    name: Hashable
    size: int
    token: torch.Tensor  # arange(size), batched at this axis's torch.func level only


class _AxisEnv(threading.local):
    def __init__(self) -> None:
        self.stack: list[_Axis] = []


_ENV = _AxisEnv()


def _names_text(names: Sequence[Hashable]) -> str:
    return ", ".join(repr(n) for n in names) if names else "none"


def _lookup(call: str, name: Any) -> _Axis:
    for axis in reversed(_ENV.stack):
        if axis.name == name:
            return axis
    bound = [a.name for a in reversed(_ENV.stack)]
    raise UnboundAxisNameError(
        message(
            call,
            f"unbound axis name {name!r}",
            f"a name bound by an enclosing vmap(..., axis_name=...) (bound here: "
            f"{_names_text(bound)})",
            repr(name),
            f"Call it inside vmap(f, axis_name={name!r}), or use one of the bound names.",
        )
    )


def _axes(call: str, axis_name: Any) -> list[_Axis]:
    """The bound axes an ``axis_name`` argument (a name or a tuple of names) refers to."""
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    if not names:
        raise_value(call, "axis_name is empty", "a name or a non-empty tuple of names", "()")
    axes = [_lookup(call, n) for n in names]
    if len({id(a) for a in axes}) != len(axes):
        raise_value(
            call, "axis_name repeats an axis", "distinct names", repr(axis_name), "Name each once."
        )
    return axes


# ----------------------------------------------------------------------------------------------
# Primitive collectives: autograd.Functions whose vmap rule sees the batch dimension


def _unreachable(name: str) -> torch.Tensor:
    # Only reachable if an axis token escaped its vmap, which _lookup prevents.
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
        raise_type(
            call,
            "x has a leaf that is not a tensor or a number",
            "tensors or Python numbers",
            describe(v),
        )

    return optree.tree_map(leaf, x, none_is_leaf=False, namespace=NAMESPACE)


def psum(x: Any, axis_name: Any, *, axis_index_groups: Any = None) -> Any:
    """Sum ``x`` over the named ``vmap`` axis (or axes), as ``jax.lax.psum``.

    Every member gets the same sum. The derivative follows JAX: ``psum`` is linear and its
    transpose is ``psum``.

    Args:
        x: a tensor, a Python number or a pytree of them. ``psum(1, "i")`` is the axis size.
        axis_name: the name given to an enclosing ``vmap(..., axis_name=...)``, or a tuple of names
            to sum over several axes.
        axis_index_groups: not supported (must be ``None``).

    Returns:
        ``x``'s structure, each leaf summed over the axis.

    Raises:
        UnboundAxisNameError: (a ``NameError``) if no enclosing ``vmap`` binds ``axis_name``.

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
    axes = _axes(call, axis_name)

    def one(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            n = 1
            for a in axes:
                n *= a.size
            return v * n
        for a in axes:
            v = _PSum.apply(v, a.token)
        return v

    return _map_leaves(call, one, x)


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
    n = 1
    for a in _axes(call, axis_name):
        n *= a.size
    return _map_leaves(call, lambda v: v / n, psum(x, axis_name))


def _preduce(call: str, x: Any, axis_name: Any, op: Callable[..., Any]) -> Any:
    axes = _axes(call, axis_name)

    def one(v: Any) -> Any:
        if not isinstance(v, torch.Tensor):
            return v
        for a in axes:
            v = op(_AllGather.apply(v, a.token), 0)
        return v

    return _map_leaves(call, one, x)


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
    axes = _axes(call, axis_name)

    def one(v: Any) -> Any:
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
        for a in reversed(axes):  # innermost name last in the result
            t = _AllGather.apply(t, a.token)
        if len(axes) > 1:
            t = t.flatten(0, len(axes) - 1)
        if tiled:
            return t.movedim(0, axis % ndim).flatten(axis % ndim, axis % ndim + 1)
        return t.movedim(0, axis % (ndim + 1))

    return _map_leaves(call, one, x)


def axis_index(axis_name: Any) -> torch.Tensor:
    """This member's index along the named ``vmap`` axis, as ``jax.lax.axis_index``.

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
    axes = _axes(call, axis_name)
    index = axes[0].token.clone()
    for a in axes[1:]:
        index = index * a.size + a.token
    return index


# ----------------------------------------------------------------------------------------------
# vmap


class _Flag:
    """A mutable cell the probe writes to (not a list: torch would treat a list as a pytree)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = False


class _IsBatched(torch.autograd.Function):
    """Probe: is ``x`` batched at the level where ``token`` is? (used for ``out_axes=None``)."""

    @staticmethod
    def forward(x: torch.Tensor, token: torch.Tensor, flag: _Flag) -> torch.Tensor:
        return token.new_zeros(())

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        pass

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[None, None, None]:
        return None, None, None

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[Any, ...], x: torch.Tensor, token: torch.Tensor, flag: _Flag
    ) -> tuple[torch.Tensor, None]:
        # Called at the first level (from the top) where x or token is batched. The body's level
        # is the top level and token is batched there, so this is it.
        flag.value = in_dims[0] is not None
        return token.new_zeros(()), None


def _is_batched(x: torch.Tensor, token: torch.Tensor) -> bool:
    flag = _Flag()
    _IsBatched.apply(x.detach(), token, flag)
    return flag.value


_TRANSLATIONS: list[tuple[re.Pattern[str], type[Exception], str, str, str]] = [
    (
        re.compile(r"calling \.item\(\) on a Tensor"),
        TypeError,
        "the function converts a mapped tensor to a Python number (.item(), int(), float(), "
        ".tolist())",
        "values that stay tensors",
        "Keep the value as a tensor: compute with tensor ops, and choose with "
        "torch.where(cond, a, b) instead of an if on a number.",
    ),
    (
        re.compile(r"data-dependent control flow"),
        TypeError,
        "the function branches on the value of a mapped tensor (if/while on a tensor, bool())",
        "control flow that does not depend on mapped values",
        "Compute both branches and select with torch.where(cond, a, b), or use "
        "torch.clamp/torch.maximum for elementwise choices.",
    ),
    (
        re.compile(r"dynamic shape|boolean mask"),
        TypeError,
        "the function calls an op whose output shape depends on the data (nonzero, masked "
        "indexing x[mask], unique)",
        "ops with data-independent shapes",
        "Keep the shape fixed: use torch.where(mask, x, 0) instead of x[mask], and gather with "
        "precomputed indices.",
    ),
    (
        re.compile(r"inplace arithmetic|doesn't match the broadcast shape"),
        ValueError,
        "the function writes a mapped value in place into a tensor that is not mapped (one "
        "captured from outside the vmap, or created inside it)",
        "in-place writes only into mapped tensors",
        "Use out-of-place ops instead: y = x + v instead of x.add_(v), "
        "torch.where/torch.scatter/index_put (not x[i] = v) to build a new tensor.",
    ),
    (
        re.compile(r"random operation while in randomness error mode"),
        ValueError,
        "the function draws random numbers but randomness='error'",
        "randomness='different' (independent draws per member) or 'same' (one draw shared)",
        "Pass vmap(f, randomness='different') or randomness='same'.",
    ),
]


def _translate(call: str, err: RuntimeError) -> Exception | None:
    text = str(err)
    for pattern, kind, what, expected, fix in _TRANSLATIONS:
        if pattern.search(text):
            first = text.splitlines()[0] if text else type(err).__name__
            return kind(message(call, what, expected, f"torch's error {first!r}", fix))
    return None


def _check_axes_tree(call: str, name: str, tree: Any) -> None:
    """Build-time check: every leaf of an in_axes/out_axes tree is an int or None."""
    accessors, leaves, _ = optree.tree_flatten_with_accessor(
        tree, none_is_leaf=True, namespace=NAMESPACE
    )
    for acc, leaf in zip(accessors, leaves):
        if leaf is not None and (not isinstance(leaf, int) or isinstance(leaf, bool)):
            raise_type(
                call,
                f"{name} leaves must be ints or None",
                f"an int or None at {acc.codify(name)}",
                describe(leaf),
                "Give an axis number for mapped leaves and None for unmapped ones.",
            )


def _arg_roots(fun: Any, nargs: int) -> list[str]:
    """Names for positional arguments in error messages: parameter names where known."""
    roots = [f"args[{i}]" for i in range(nargs)]
    try:
        params = list(inspect.signature(fun).parameters.values())
    except (TypeError, ValueError):
        return roots
    positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    for i in range(nargs):
        if i < len(params) and params[i].kind in positional:
            roots[i] = params[i].name
        else:
            break
    return roots


def _leaf_labels(fun: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[str]:
    """Key paths of the leaves of ``(args, kwargs)`` in flattening order (error paths only)."""
    labels: list[str] = []
    for root, arg in zip(_arg_roots(fun, len(args)), args):
        accs, _, _ = optree.tree_flatten_with_accessor(arg, none_is_leaf=True, namespace=NAMESPACE)
        labels.extend(a.codify(root) for a in accs)
    kw_tree: Any = kwargs
    kw_accs, _, _ = optree.tree_flatten_with_accessor(
        kw_tree, none_is_leaf=True, namespace=NAMESPACE
    )
    labels.extend(_kw_label(a.codify("kwargs")) for a in kw_accs)
    return labels


def _labels(
    fun: Any, args: tuple[Any, ...], kwargs: dict[str, Any], spec: optree.PyTreeSpec | None
) -> list[str]:
    """Labels of the call's leaves: whole arguments on the fast path (spec None)."""
    return _arg_roots(fun, len(args)) if spec is None else _leaf_labels(fun, args, kwargs)


def _kw_label(text: str) -> str:
    # kwargs['y'][0] -> y[0]: keyword arguments are named by their keyword.
    m = re.match(r"kwargs\['([^']*)'\](.*)", text)
    return m.group(1) + m.group(2) if m else text


def vmap(
    fun: Callable[..., Any],
    in_axes: Any = 0,
    out_axes: Any = 0,
    axis_name: Hashable | None = None,
    axis_size: int | None = None,
    *,
    randomness: str = "error",
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Vectorize ``fun`` over an axis of its arguments, with JAX's ``vmap`` semantics.

    Built on ``torch.func.vmap``: arguments are flattened with optree, the mapped tensors handed to
    torch as a flat tuple, and the structures rebuilt on the way out, so any optree pytree works.
    Differences from ``torch.func.vmap`` are listed in ``docs/vmap.md``.

    Args:
        fun: the function to batch. It may return any pytree; non-tensor leaves pass through.
        in_axes: an int, ``None``, or a pytree prefix of the tuple of positional arguments
            (a top-level list counts as a tuple, as in JAX), giving each leaf's mapped axis or
            ``None`` for unmapped; negative axes count from the end. Keyword arguments are always
            mapped over axis 0. Non-tensor leaves (numbers, strings, ``None``) are never mapped.
        out_axes: an int, ``None``, or a pytree prefix of the output: where the mapped axis goes in
            each output leaf; ``None`` means the leaf must be the same for every member and is
            returned unbatched.
        axis_name: a hashable name for the mapped axis, for ``psum``, ``all_gather``,
            ``axis_index`` and the other collectives called inside ``fun``.
        axis_size: the size of the mapped axis; required when nothing is mapped (outputs are then
            broadcast to it), checked against the arguments otherwise.
        randomness: as ``torch.func.vmap``: ``"error"``, ``"different"`` or ``"same"``.
        chunk_size: as ``torch.func.vmap``: map this many members at a time (saves memory). Not
            allowed together with ``axis_name``, since a collective would see only one chunk.

    Returns:
        The batched function, taking the same arguments as ``fun``.

    Raises:
        TypeError: at build time for a non-callable ``fun`` or ill-typed options; at call time for
            Python control flow or ``.item()`` on mapped values inside ``fun``.
        ValueError: at call time for mapped axes of different sizes, axes out of range, an
            ``in_axes``/``out_axes`` that is not a prefix of the arguments/output, a batched output
            with ``out_axes=None``, and in-place writes of mapped values into unmapped tensors.

    Example:
        >>> import torch
        >>> from functorch_utils import vmap
        >>> xs = torch.arange(6.0).reshape(3, 2)
        >>> vmap(torch.dot, in_axes=(0, None))(xs, torch.tensor([1.0, 10.0]))
        tensor([10., 32., 54.])
        >>> vmap(lambda d: d["a"] * d["b"], in_axes=({"a": 0, "b": None},))(
        ...     {"a": torch.arange(3.0), "b": 2.0})
        tensor([0., 2., 4.])
        >>> vmap(lambda x, scale: x * scale, in_axes=(1,), out_axes=1)(xs, scale=torch.ones(2))
        tensor([[0., 1.],
                [2., 3.],
                [4., 5.]])
        >>> vmap(lambda: torch.zeros(2), in_axes=None, axis_size=3)().shape
        torch.Size([3, 2])
    """
    check_callable("vmap", fun)
    name = fun_name(fun)
    if isinstance(in_axes, list):  # JAX canonicalises a top-level list to a tuple
        in_axes = tuple(in_axes)
    extras = "".join(
        f", {k}={v!r}"
        for k, v, d in (
            ("in_axes", in_axes, 0),
            ("out_axes", out_axes, 0),
            ("axis_name", axis_name, None),
            ("axis_size", axis_size, None),
        )
        if v != d or type(v) is not type(d)
    )
    build = f"vmap({name}{extras})"
    call = f"{build}(...)"

    if not (in_axes is None or isinstance(in_axes, (int, tuple))) or isinstance(in_axes, bool):
        raise_type(
            build,
            "in_axes must be an int, None, or a tuple with one entry per positional argument",
            "an int, None or a tuple",
            describe(in_axes),
            "To give axes for the leaves of one argument, wrap its prefix in a tuple, "
            "e.g. in_axes=({'a': 0, 'b': None},).",
        )
    _check_axes_tree(build, "in_axes", in_axes)
    _check_axes_tree(build, "out_axes", out_axes)
    if axis_size is not None and (
        not isinstance(axis_size, int) or isinstance(axis_size, bool) or axis_size < 0
    ):
        raise_type(
            build, "axis_size must be a non-negative int", "an int >= 0", describe(axis_size)
        )
    if randomness not in _RANDOMNESS:
        raise_value(
            build,
            "randomness is not one of torch.func.vmap's modes",
            "'error', 'different' or 'same'",
            repr(randomness),
        )
    if chunk_size is not None and (
        not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1
    ):
        raise_type(build, "chunk_size must be a positive int", "an int >= 1", describe(chunk_size))
    if axis_name is not None:
        try:
            hash(axis_name)
        except TypeError:
            raise_type(build, "axis_name is not hashable", "a hashable name", describe(axis_name))
        if isinstance(axis_name, tuple):
            raise_type(
                build,
                "axis_name is a tuple, which collectives read as several names",
                "a single name such as 'i'",
                repr(axis_name),
            )
        if chunk_size is not None:
            raise_value(
                build,
                "chunk_size runs the body once per chunk, so collectives would see one chunk",
                "chunk_size=None with axis_name",
                f"chunk_size={chunk_size}",
                "Drop chunk_size, or map in chunks with an outer Python loop.",
            )

    in_axes_is_leaf = in_axes is None or isinstance(in_axes, int)
    out_axes_is_leaf = out_axes is None or isinstance(out_axes, int)
    out_has_none = None in optree.tree_leaves(out_axes, none_is_leaf=True, namespace=NAMESPACE)
    in_axes_tree: Any = in_axes
    axes_tree: Any = (in_axes, 0)  # keyword arguments are mapped over axis 0
    # in_axes broadcast to the leaves, per argument structure (PyTreeSpecs are hashable)
    axes_cache: dict[optree.PyTreeSpec, list[Any]] = {}
    # in_axes as a tuple of leaves, one per argument (for the fast path), when it is one
    top_axes: tuple[Any, ...] = (
        in_axes
        if isinstance(in_axes, tuple) and all(a is None or isinstance(a, int) for a in in_axes)
        else ()
    )
    top_ok = isinstance(in_axes, tuple) and len(top_axes) == len(in_axes)

    @functools.wraps(fun)
    def batched(*args: Any, **kwargs: Any) -> Any:
        # 1. Flatten the arguments and give each leaf its axis.
        tree: Any = (args, kwargs)
        leaves: list[Any]
        spec: optree.PyTreeSpec | None
        axes: list[Any] | None
        if (
            not kwargs
            and (in_axes_is_leaf or (top_ok and len(top_axes) == len(args)))
            and all(
                isinstance(a, torch.Tensor) or ax is None
                for a, ax in zip(args, top_axes or [in_axes] * len(args))
            )
        ):
            # Fast path: every mapped argument is a tensor and the others (any pytree) are
            # unmapped as a whole, so each argument is one "leaf" and optree is not needed (spec
            # None; see body). optree's flatten costs ~3 us hot but tens of us with the caches
            # cold after a large batched computation, which the benchmark showed.
            leaves, spec = list(args), None
            axes = [in_axes] * len(args) if in_axes_is_leaf else list(top_axes)
        else:
            leaves, tree_spec = optree.tree_flatten(tree, none_is_leaf=True, namespace=NAMESPACE)
            spec = tree_spec
            if in_axes_is_leaf and not kwargs:
                axes = [in_axes] * len(leaves)
            else:
                axes = axes_cache.get(tree_spec)
        if axes is None:
            try:
                axes = optree.broadcast_prefix(
                    axes_tree, tree, none_is_leaf=True, namespace=NAMESPACE
                )
            except ValueError:
                args_tree: Any = args
                errors = optree.prefix_errors(
                    in_axes_tree, args_tree, none_is_leaf=True, namespace=NAMESPACE
                )
                detail = "\n".join(str(e("in_axes")) for e in errors[:3])
                n_in = len(in_axes) if isinstance(in_axes, tuple) else "?"
                raise ValueError(
                    message(
                        call,
                        "in_axes is not a pytree prefix of the positional arguments",
                        f"one entry per positional argument ({len(args)}), each a prefix of it",
                        f"in_axes={in_axes!r} ({n_in} entries)",
                        "Give int or None for a whole argument, or a container of the same type "
                        "and keys/length as the argument.",
                    )
                    + ("\n" + detail if detail else "")
                ) from None
            if len(axes_cache) >= 64:  # bound the cache for functions called with many structures
                axes_cache.clear()
            axes_cache[tree_spec] = axes

        # 2. Normalise axes, check ranges and sizes.
        flat_in: list[torch.Tensor] = []
        in_dims: list[int] = []
        positions: list[int] = []
        size: int | None = None
        mismatch = False
        first: torch.Tensor | None = None
        for i, (leaf, ax) in enumerate(zip(leaves, axes)):
            if ax is None or not isinstance(leaf, torch.Tensor):
                continue
            ndim = leaf.dim()
            if not -ndim <= ax < ndim:
                label = _labels(fun, args, kwargs, spec)[i]
                raise_value(
                    call,
                    f"axis {ax} is out of range for {label}, which has {ndim} dimensions "
                    f"(shape {tuple(leaf.shape)})",
                    f"an axis in [{-ndim}, {ndim - 1}]" if ndim else "a tensor with a dimension",
                    str(ax),
                    f"Map a dimension {label} has, or pass None in in_axes to leave it unmapped.",
                )
            if ax < 0:
                ax += ndim
            n = leaf.shape[ax]
            if size is None:
                size, first = n, leaf
            elif n != size:
                mismatch = True
            flat_in.append(leaf)
            in_dims.append(ax)
            positions.append(i)
        if mismatch or (size is not None and axis_size is not None and size != axis_size):
            labels = _labels(fun, args, kwargs, spec)
            got = ", ".join(
                f"{labels[p]} with size {leaves[p].shape[d]} along axis {d} "
                f"(shape {tuple(leaves[p].shape)})"
                for p, d in zip(positions[:8], in_dims[:8])
            )
            if axis_size is not None:
                got = f"axis_size={axis_size}; " + got
            raise_value(
                call,
                "the mapped axes have different sizes",
                "the same size for every mapped argument",
                got,
                "Map axes of one length, or pass None in in_axes for arguments that should not "
                "be mapped.",
            )
        if size is None:
            if axis_size is None:
                raise_value(
                    call,
                    "nothing is mapped, so the axis size is unknown",
                    "at least one tensor with a non-None in_axes, or axis_size",
                    f"in_axes={in_axes!r} with {len(leaves)} argument leaves and no mapped tensor",
                    "Pass axis_size=n to broadcast the outputs to n members.",
                )
            size = axis_size
        need_token = axis_name is not None or not flat_in or out_has_none
        if need_token:
            device = torch.get_default_device() if first is None else first.device
            flat_in.append(torch.arange(size, device=device))
            in_dims.append(0)

        # 3. Run torch.func.vmap over the flat tensors, translating torch's bare errors.
        state = _Call(leaves, spec, positions, size, need_token)
        key = tuple(in_dims)
        runner = runners.get(key)
        if runner is None:
            if len(runners) >= 64:
                runners.clear()
            runner = runners[key] = torch.func.vmap(
                body,
                in_dims=(None, *key),  # the per-call state rides along unmapped
                out_dims=_OUT_DIMS if out_has_none else 0,
                randomness=randomness,
                chunk_size=chunk_size,
            )
        try:
            res = runner(state, *flat_in)
        except RuntimeError as err:
            better = _translate(call, err)
            if better is None:
                raise
            raise better from err

        # 4. Rebuild the output.
        if state.plan is None:  # a lone tensor (see body)
            return res if state.out_axis == 0 else res.movedim(0, state.out_axis)
        result = list(state.out_leaves)
        mapped_out: Sequence[torch.Tensor]
        unmapped_out: Sequence[torch.Tensor]
        if out_has_none:
            mapped_out, unmapped_out = res
        else:
            mapped_out, unmapped_out = ((res,) if isinstance(res, torch.Tensor) else res), ()
        it_m, it_u = iter(mapped_out), iter(unmapped_out)
        for j, ax in state.plan:
            if ax is None:
                result[j] = next(it_u)
            else:
                t = next(it_m)
                result[j] = t if ax == 0 else t.movedim(0, ax)
        assert state.out_spec is not None
        return optree.tree_unflatten(state.out_spec, result)

    # The function torch.func sees: the call's state (unmapped), then the flat mapped tensors;
    # it returns a flat tuple of tensors (or a lone tensor), or (mapped, unmapped) tuples when some
    # out_axes is None. Built once per vmap, so torch.func.vmap's wrapper is built once per in_dims.
    def body(state: _Call, *flat: torch.Tensor) -> Any:
        if state.spec is None:  # positional tensors only
            a: Any = list(state.leaves)
            for p, t in zip(state.positions, flat):
                a[p] = t
            kw: Any = {}
        elif state.positions:
            full = list(state.leaves)
            for p, t in zip(state.positions, flat):
                full[p] = t
            a, kw = optree.tree_unflatten(state.spec, full)
        else:
            a, kw = optree.tree_unflatten(state.spec, state.leaves)
        token = flat[len(state.positions)] if state.need_token else None
        if axis_name is not None:
            assert token is not None
            _ENV.stack.append(_Axis(axis_name, state.size, token))
            try:
                out = fun(*a, **kw)
            finally:
                _ENV.stack.pop()
        else:
            out = fun(*a, **kw)
        if out_axes_is_leaf and out_axes is not None and isinstance(out, torch.Tensor):
            # Fast path: one tensor out, one int out_axes.
            ndim = out.dim() + 1
            if not -ndim <= out_axes < ndim:
                _out_axis_error(call, out_axes, "out", ndim)
            state.out_axis = out_axes + ndim if out_axes < 0 else out_axes
            return out
        if out_axes == 0 and _plain(out):
            # Plain dicts/lists/tuples of tensors at axis 0: torch.func unwraps them itself, as it
            # does for raw torch.func.vmap, and hands back the same structure.
            return out
        out_leaves, out_spec = optree.tree_flatten(out, none_is_leaf=True, namespace=NAMESPACE)
        if out_axes_is_leaf:
            o_axes: list[Any] = [out_axes] * len(out_leaves)
        else:
            try:
                o_axes = optree.broadcast_prefix(
                    out_axes, out, none_is_leaf=True, namespace=NAMESPACE
                )
            except ValueError:
                errors = optree.prefix_errors(out_axes, out, none_is_leaf=True, namespace=NAMESPACE)
                detail = "\n".join(str(e("out_axes")) for e in errors[:3])
                raise ValueError(
                    message(
                        call,
                        "out_axes is not a pytree prefix of the output",
                        f"a prefix of the output structure {out_spec}",
                        f"out_axes={out_axes!r}",
                        "Give int or None for a whole output, or a container of the same "
                        "type and keys/length as the output.",
                    )
                    + ("\n" + detail if detail else "")
                ) from None
        mapped: list[torch.Tensor] = []
        unmapped: list[torch.Tensor] = []
        plan: list[tuple[int, int | None]] = []  # (leaf index, out axis) for tensor leaves
        for j, (leaf, ax) in enumerate(zip(out_leaves, o_axes)):
            if not isinstance(leaf, torch.Tensor):
                continue
            if ax is None:
                assert token is not None
                if _is_batched(leaf, token):
                    label = _out_label(out, j)
                    raise_value(
                        call,
                        f"{label} has out_axes None but varies along the mapped axis",
                        "an output that is the same for every member",
                        describe(leaf) + " that depends on the mapped inputs",
                        "Give it an int out_axes, or reduce it (e.g. with psum) first.",
                    )
                unmapped.append(leaf)
            else:
                ndim = leaf.dim() + 1
                if not -ndim <= ax < ndim:
                    _out_axis_error(call, ax, _out_label(out, j), ndim)
                mapped.append(leaf)
                ax = ax + ndim if ax < 0 else ax
            plan.append((j, ax))
        state.out_leaves, state.out_spec, state.plan = out_leaves, out_spec, plan
        if out_has_none:
            return tuple(mapped), tuple(unmapped)
        # torch.func unwraps a lone tensor without any pytree work
        return mapped[0] if len(mapped) == 1 else tuple(mapped)

    runners: dict[tuple[int, ...], Callable[..., Any]] = {}
    return batched


def _plain(x: Any, depth: int = 0) -> bool:
    """A non-empty dict/list/tuple (exact types) nest of tensors that torch's pytree rebuilds."""
    if isinstance(x, torch.Tensor):
        return True
    kind = type(x)
    if depth > 2 or kind not in (dict, list, tuple) or not x:
        return False
    values = x.values() if kind is dict else x
    return all(_plain(v, depth + 1) for v in values)


class _Call:
    """One call's state, handed to the body through torch.func.vmap as an unmapped argument."""

    __slots__ = (
        "leaves",
        "need_token",
        "out_axis",
        "out_leaves",
        "out_spec",
        "plan",
        "positions",
        "size",
        "spec",
    )

    def __init__(
        self,
        leaves: list[Any],
        spec: optree.PyTreeSpec | None,
        positions: list[int],
        size: int,
        need_token: bool,
    ) -> None:
        self.leaves = leaves
        self.spec = spec
        self.positions = positions
        self.size = size
        self.need_token = need_token
        self.out_axis = 0
        self.out_leaves: list[Any] = []
        self.out_spec: optree.PyTreeSpec | None = None
        self.plan: list[tuple[int, int | None]] | None = None


def _out_label(out: Any, j: int) -> str:
    accessors, _, _ = optree.tree_flatten_with_accessor(out, none_is_leaf=True, namespace=NAMESPACE)
    return accessors[j].codify("out")


def _out_axis_error(call: str, ax: int, label: str, ndim: int) -> None:
    raise_value(
        call,
        f"out_axes {ax} is out of range for {label}, which has {ndim - 1} dimensions per member "
        f"(so {ndim} batched)",
        f"an axis in [{-ndim}, {ndim - 1}]",
        str(ax),
    )
