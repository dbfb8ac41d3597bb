"""JAX's ``lax`` control flow as plain eager loops over pytrees.

# NOTE [control flow as eager loops]
# ``scan``, ``fori_loop``, ``while_loop``, ``cond``, ``switch`` and ``map`` run the user's body as
# ordinary Python over torch ops, so every transform (ours and torch.func's, at any nesting) sees
# only the ops the loop actually executed: derivatives, batching and forward mode need no rule of
# their own. Two things need care:
#
# * The carry keeps its type, as in JAX: the body must return the carry's structure, shapes and
#   dtypes. Python numbers in ``init`` become 0-d tensors once, before the first step.
# * Batched predicates. Under ``vmap`` a predicate (or ``switch`` index) may differ between batch
#   members (``_torch_hooks.is_batched``). Then, as JAX does, every branch runs on every member and
#   a ``torch.where`` selects; ``while_loop`` runs until no member continues and finished members
#   keep their carry. The unselected branch may produce inf/NaN on a member (``sqrt`` of a negative
#   number); its value is dropped by the select, and its derivative must be dropped too, not
#   multiplied by zero (``0 * nan`` is nan). So while a branch runs, a TorchFunctionMode
#   (``_MaskOutside``) hands every op, in place of each floating tensor that came from outside the
#   branch (operands and closed-over tensors alike, as JAX's closure conversion makes them
#   operands), ``where(selected, x, stop_gradient(x))``: no derivative of any order flows back
#   into ``x`` from a member where the branch was not selected, and the values are unchanged.
#   The tensor an in-place op writes into is not replaced (the write must reach it).
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import optree
import torch
from torch.overrides import TorchFunctionMode

from . import _pytree, _torch_hooks
from ._errors import check_callable, describe, fun_name, raise_type, raise_value
from ._remat import stop_gradient
from ._vmap import vmap

__all__ = ["scan", "fori_loop", "while_loop", "cond", "switch", "map", "associative_scan"]


# ---------------------------------------------------------------------------------------------
# Carries


def _as_leaves(call: str, tree: Any, leaves: list[Any], root: str) -> list[torch.Tensor]:
    """Loop-carried leaves as tensors: Python bools/ints/floats/complex become 0-d tensors."""
    out = []
    for i, x in enumerate(leaves):
        if isinstance(x, (bool, int, float, complex)):
            x = torch.tensor(x)  # int64 for ints, the default dtype for floats
        elif not isinstance(x, torch.Tensor):
            raise_type(
                call,
                f"the {root} leaf {_pytree.leaf_names(tree, root)[i]} is not a tensor or a number",
                "a tensor or a Python bool, int, float or complex",
                describe(x),
                "A loop carries tensors only; keep other values outside the loop (close over "
                "them).",
            )
        out.append(x)
    return out


def _type_text(x: torch.Tensor) -> str:
    return f"a tensor of dtype {x.dtype} and shape {tuple(x.shape)}"


def _same_structure(a: optree.PyTreeSpec, b: optree.PyTreeSpec) -> bool:
    """``a == b``, node by node when the specs' namespaces differ (as under torch.compile)."""
    if a == b:
        return True
    if a.is_leaf() or b.is_leaf():
        return a.is_leaf() and b.is_leaf()
    return (
        (a.kind, a.type, a.entries()) == (b.kind, b.type, b.entries())
        and a.num_children == b.num_children
        and all(_same_structure(x, y) for x, y in zip(a.children(), b.children()))
    )


class _Carry:
    """The type a loop's carry must keep: its structure and each leaf's shape and dtype."""

    def __init__(self, call: str, tree: Any, root: str, what: str) -> None:
        self.call, self.root, self.what = call, root, what
        leaves, self.spec = _pytree.flatten(tree, call=call, root=root)
        self._tree = tree
        self.leaves = _as_leaves(call, tree, leaves, root)
        self._single = self.spec.is_leaf()  # a lone tensor: no flattening per step

    def _names(self) -> list[str]:
        return _pytree.leaf_names(self._tree, self.root)

    def tree(self, leaves: Sequence[Any]) -> Any:
        return leaves[0] if self._single else _pytree.unflatten(self.spec, list(leaves))

    def check(self, out: Any) -> list[torch.Tensor]:
        """The leaves of the body's output carry, refused unless they keep the carry's type."""
        if self._single and isinstance(out, torch.Tensor):
            return [self._conform(0, self.leaves[0], out)]
        leaves, spec = _pytree.flatten(out, call=self.call, root=self.root)
        if not _same_structure(spec, self.spec):
            raise_type(
                self.call,
                f"{self.what} changed the carry's structure",
                f"{self.spec}",
                f"{spec}\n{_pytree.structure_errors(self._tree, out, self.root)}\n",
                "The output carry must have the structure of the input carry.",
            )
        return [self._conform(i, e, g) for i, (e, g) in enumerate(zip(self.leaves, leaves))]

    def _conform(self, i: int, expected: torch.Tensor, got: Any) -> torch.Tensor:
        same = isinstance(got, torch.Tensor) and got.dtype == expected.dtype
        if same and got.shape == expected.shape:
            return got
        number = isinstance(got, (bool, int, float, complex)) and expected.ndim == 0
        if number and torch.result_type(expected, got) == expected.dtype:  # weakly typed
            return torch.tensor(got, dtype=expected.dtype, device=expected.device)
        if isinstance(got, torch.Tensor):
            if got.dtype == expected.dtype and got.shape == expected.shape:
                return got
            what = "the dtypes" if got.shape == expected.shape else "the shapes"
        else:
            what = "the types"
        raise_type(
            self.call,
            f"{self.what} changed the carry at {self._names()[i]} ({what} do not match)",
            _type_text(expected),
            describe(got),
            "The output carry must keep the input carry's structure, shapes and dtypes: "
            "reshape, or cast with .to(dtype).",
        )


# ---------------------------------------------------------------------------------------------
# scan


def _index(call: str, name: str, value: Any) -> int:
    try:
        return operator.index(value)
    except TypeError:
        raise_type(call, f"{name} must be an integer", "a Python int", describe(value))


def _scan_length(call: str, xs: Any, leaves: list[Any], length: int | None) -> int:
    names = _pytree.leaf_names(xs, "xs") if leaves else []
    sizes = []
    for name, leaf in zip(names, leaves):
        if not isinstance(leaf, torch.Tensor) or leaf.ndim == 0:
            raise_type(
                call,
                f"the xs leaf {name} has no leading axis to scan over",
                "a tensor with at least one dimension",
                describe(leaf),
            )
        sizes.append(leaf.shape[0])
    if len(set(sizes)) > 1:
        got = ", ".join(f"{n} with length {s}" for n, s in zip(names, sizes))
        raise_value(
            call,
            "the xs leaves do not agree on their leading length",
            "one leading length for every leaf",
            got,
            "Every leaf of xs is sliced along axis 0, once per step.",
        )
    if length is not None:
        length = _index(call, "length", length)
        if sizes and sizes[0] != length:
            raise_value(
                call,
                "length disagrees with the leading length of xs",
                f"length={sizes[0]} (or no length)",
                f"length={length}",
            )
        return length
    if not sizes:
        raise_value(
            call,
            "the number of steps is unknown",
            "xs with at least one tensor leaf, or length",
            "xs without leaves and length=None",
            "Pass length=n when xs is None.",
        )
    return sizes[0]


def _stack(call: str, ys: list[Any]) -> Any:
    """The per-step outputs stacked on a new axis 0, leaf by leaf."""
    if all(y is None for y in ys):
        return None
    first, spec = _pytree.flatten(ys[0], call=call, root="y")
    columns: list[list[torch.Tensor]] = [[] for _ in first]
    for step, y in enumerate(ys):
        leaves, s = _pytree.flatten(y, call=call, root="y")
        if not _same_structure(s, spec):
            raise_type(call, f"f changed the structure of y at step {step}", f"{spec}", f"{s}")
        for column, leaf in zip(columns, _as_leaves(call, y, leaves, "y")):
            column.append(leaf)
    names = _pytree.leaf_names(ys[0], "y") if first else []
    for name, column in zip(names, columns):
        for step, leaf in enumerate(column):
            if leaf.shape != column[0].shape or leaf.dtype != column[0].dtype:
                raise_type(
                    call,
                    f"f changed the type of {name} at step {step}",
                    _type_text(column[0]),
                    _type_text(leaf),
                    "Every step's y must have the same shapes and dtypes.",
                )
    return _pytree.unflatten(spec, [torch.stack(c) for c in columns])


def _scan_step(call: str, f: Callable[..., Any], carry: Any, x: Any) -> tuple[Any, Any]:
    out = f(carry, x)
    if not isinstance(out, (tuple, list)) or len(out) != 2:
        raise_type(
            call,
            "f must return a pair (carry, y)",
            "a tuple of length 2",
            describe(out),
            "Return (new_carry, y); y may be None.",
        )
    return out[0], out[1]


def scan(
    f: Callable[[Any, Any], tuple[Any, Any]],
    init: Any,
    xs: Any = None,
    length: int | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
) -> tuple[Any, Any]:
    """Loop ``f`` over the leading axis of ``xs``, threading a carry: JAX's ``lax.scan``.

    The loop this stands for::

        def scan(f, init, xs, length=None):
            carry, ys = init, []
            for x in xs:                      # slices of every leaf of xs along axis 0
                carry, y = f(carry, x)
                ys.append(y)
            return carry, stack(ys)           # each leaf of y stacked on a new axis 0

    It runs eagerly as exactly that Python loop, so every transform (``grad``, ``jacfwd``,
    ``vmap``, ...) differentiates and batches through it. Reverse mode stores every step's
    residuals; wrap the body in ``checkpoint`` to recompute them instead.

    Args:
        f: ``f(carry, x) -> (carry, y)``. The output carry must have the input carry's
            structure, shapes and dtypes; ``y`` may be any pytree of tensors (or ``None``) of the
            same type at every step.
        init: the initial carry, any pytree; Python numbers become 0-d tensors (ints stay
            integer, floats take the default dtype).
        xs: a pytree of tensors sliced along axis 0, or ``None`` (then ``x`` is ``None``).
        length: the number of steps; required when ``xs`` is ``None``, checked against the
            leading length of ``xs`` otherwise.
        reverse: scan from the last slice to the first; ``ys`` stay in the order of ``xs``.
        unroll: accepted for JAX compatibility; it has no effect on an eager loop.

    Returns:
        ``(final_carry, ys)``.

    Raises:
        TypeError: the body changed the carry's type (the message names the leaf's key path,
            what was expected and what came), or did not return a pair.
        ValueError: the leaves of ``xs`` disagree on their leading length, or with ``length``.

    Example:
        >>> import torch
        >>> from functorch_utils import lax
        >>> cumsum = lambda c, x: (c + x, c + x)
        >>> lax.scan(cumsum, 0.0, torch.tensor([1.0, 2.0, 3.0]))
        (tensor(6.), tensor([1., 3., 6.]))
        >>> lax.scan(cumsum, 0.0, torch.tensor([1.0, 2.0, 3.0]), reverse=True)
        (tensor(6.), tensor([6., 5., 3.]))
        >>> lax.scan(lambda c, _: (c * 2, None), 1, length=3)
        (tensor(8), None)
    """
    call = f"scan({fun_name(f)}, init, xs)"
    check_callable("scan", f)
    if not isinstance(unroll, bool) and (not isinstance(unroll, int) or unroll < 0):
        raise_type(call, "unroll must be a non-negative int or a bool", "1", describe(unroll))
    carry_type = _Carry(call, init, "carry", "f")
    xs_leaves, xs_spec = _pytree.flatten(xs, call=call, root="xs")
    n = _scan_length(call, xs, xs_leaves, length)
    leaves = carry_type.leaves
    # unbind, as iterating over a tensor does: its backward stacks the slices' gradients once
    # (indexing each step would build a zero tensor of the full size per step)
    steps = list(zip(*[leaf.unbind(0) for leaf in xs_leaves])) if xs_leaves else [()] * n
    ys = []
    for i in reversed(range(n)) if reverse else range(n):
        x = steps[i][0] if xs_spec.is_leaf() else xs_spec.unflatten(steps[i])
        out, y = _scan_step(call, f, carry_type.tree(leaves), x)
        leaves = carry_type.check(out)
        ys.append(y)
    if n == 0:  # run the body once for the type of y, as JAX traces it
        x = _pytree.unflatten(xs_spec, [leaf.new_zeros(leaf.shape[1:]) for leaf in xs_leaves])
        out, y = _scan_step(call, f, carry_type.tree(leaves), x)
        carry_type.check(out)
        return carry_type.tree(leaves), _pytree.tree_map(lambda t: t[:0], _stack(call, [y]))
    if reverse:
        ys.reverse()
    return carry_type.tree(leaves), _stack(call, ys)


def map(f: Callable[[Any], Any], xs: Any, *, batch_size: int | None = None) -> Any:
    """Apply ``f`` to each slice of ``xs`` along axis 0 and stack the results: JAX's ``lax.map``.

    A ``scan`` without a carry. With ``batch_size``, ``f`` runs under ``vmap`` on batches of that
    many slices (the remainder as one smaller batch), trading memory for speed.

    Args:
        f: ``f(x) -> y`` on one slice.
        xs: a pytree of tensors with a common leading length.
        batch_size: slices per ``vmap``-ed call, or ``None`` for one slice at a time.

    Returns:
        The outputs stacked on axis 0.

    Example:
        >>> import torch
        >>> from functorch_utils import lax
        >>> lax.map(lambda x: x.sum(), torch.arange(6.0).reshape(3, 2))
        tensor([1., 5., 9.])
        >>> lax.map(lambda x: x.sum(), torch.arange(6.0).reshape(3, 2), batch_size=2)
        tensor([1., 5., 9.])
    """
    check_callable("map", f)
    if batch_size is None:
        return scan(lambda _, x: (None, f(x)), None, xs)[1]
    call = f"map({fun_name(f)}, xs, batch_size={batch_size!r})"
    if isinstance(batch_size, bool) or _index(call, "batch_size", batch_size) < 1:
        raise_value(call, "batch_size must be positive", "an int >= 1", describe(batch_size))
    leaves, spec = _pytree.flatten(xs, call=call, root="xs")
    n = _scan_length(call, xs, leaves, None)
    if n == 0:
        return map(f, xs)
    full = n - n % batch_size
    parts = []
    if full:
        batched = [x[:full].reshape(full // batch_size, batch_size, *x.shape[1:]) for x in leaves]
        ys = scan(lambda _, x: (None, vmap(f)(x)), None, _pytree.unflatten(spec, batched))[1]
        parts.append(_pytree.tree_map(lambda y: y.reshape(full, *y.shape[2:]), ys))
    if full < n:
        parts.append(vmap(f)(_pytree.unflatten(spec, [x[full:] for x in leaves])))
    if len(parts) == 1:
        return parts[0]
    return optree.tree_map(lambda a, b: torch.cat([a, b]), *parts, namespace=_pytree.NAMESPACE)


# ---------------------------------------------------------------------------------------------
# Predicates and selection (NOTE [control flow as eager loops])


_IN_PLACE_DUNDERS = frozenset(
    f"__{op}__"
    for op in [
        "setitem",
        "iadd",
        "isub",
        "imul",
        "imatmul",
        "itruediv",
        "ifloordiv",
        "imod",
        "ipow",
        "iand",
        "ior",
        "ixor",
        "ilshift",
        "irshift",
    ]
)


class _MaskOutside(TorchFunctionMode):
    """Ops in the block see tensors from outside it masked by ``selected`` (see the NOTE above)."""

    def __init__(self, selected: torch.Tensor) -> None:
        super().__init__()
        self.selected = selected
        self.inside: set[int] = set()  # ids of tensors made in the block (kept alive in .keep)
        self.masked: dict[int, torch.Tensor] = {}
        self.keep: list[torch.Tensor] = []

    def _mask(self, x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or id(x) in self.inside:
            return x
        if not (x.is_floating_point() or x.is_complex()):
            return x
        m = self.masked.get(id(x))
        if m is None:  # the mode is off inside __torch_function__: these ops are not seen
            m = torch.where(self.selected, x, stop_gradient(x))
            self.masked[id(x)] = m
            self.inside.add(id(m))
            self.keep += [x, m]
        return m

    def __torch_function__(
        self, func: Any, types: Any, args: Sequence[Any] = (), kwargs: Any = None
    ) -> Any:
        name = getattr(func, "__name__", "")
        in_place = (name[-1:] == "_" and name[-2:] != "__") or name in _IN_PLACE_DUNDERS
        kept, rest = (tuple(args[:1]), tuple(args[1:])) if in_place and args else ((), tuple(args))
        kwargs = dict(kwargs or {})
        out_arg = kwargs.pop("out", None)
        rest, kwargs = _pytree.tree_map(self._mask, (rest, kwargs))
        if out_arg is not None:
            kwargs["out"] = out_arg
        for written in _pytree.flatten((kept, out_arg))[0]:
            self.masked.pop(id(written), None)  # a masked copy made before the write is stale
        out = func(*kept, *rest, **kwargs)
        for leaf in _pytree.flatten(out)[0]:
            if isinstance(leaf, torch.Tensor):
                self.inside.add(id(leaf))
                self.keep.append(leaf)
        return out


def _bool_predicate(call: str, name: str, pred: Any) -> bool | torch.Tensor:
    """A Python bool, or the tensor itself when it is batched (differs across vmap members)."""
    if isinstance(pred, bool):
        return pred
    if not isinstance(pred, torch.Tensor) or pred.dtype != torch.bool or pred.ndim != 0:
        raise_type(
            call,
            f"{name} must be a scalar boolean",
            "a Python bool or a 0-d tensor of dtype torch.bool",
            describe(pred),
            "Reduce to one value per example, e.g. with (...).all() or (...).any().",
        )
    if _torch_hooks.shapes_only() or _torch_hooks.is_batched(pred):
        return pred  # NOTE [control flow under jit]: a traced predicate selects
    return bool(pred)


def _int_index(call: str, index: Any, n: int) -> int | torch.Tensor:
    """``index`` clamped to ``[0, n - 1]``: an int, or a tensor when it is batched."""
    if isinstance(index, torch.Tensor) and index.ndim == 0:
        if index.dtype == torch.bool or not (index.is_floating_point() or index.is_complex()):
            index = index.long()
            if _torch_hooks.shapes_only() or _torch_hooks.is_batched(index):
                return index.clamp(0, n - 1)
            return min(max(int(index), 0), n - 1)
    elif isinstance(index, int):
        return min(max(int(index), 0), n - 1)
    raise_type(
        call,
        "index must be a scalar integer",
        "a Python int or a 0-d integer tensor",
        describe(index),
    )


def _select(
    call: str,
    index: torch.Tensor,
    branches: Sequence[Callable[..., Any]],
    ops: Any,
    names: Sequence[str],
) -> Any:
    """Every branch on every member, each seeing its operands masked; ``where`` selects."""
    outs: list[list[Any]] = []
    spec = None
    for i, branch in enumerate(branches):
        with _MaskOutside(index == i):
            out = branch(*ops)
        leaves, s = _pytree.flatten(out, call=call, root="out")
        if spec is None:
            spec, first = s, out
        elif not _same_structure(s, spec):
            raise_type(
                call,
                f"{names[i]} returns another structure than {names[0]}",
                f"{spec}",
                f"{s}\n{_pytree.structure_errors(first, out, 'out')}\n",
                _SAME_TYPES,
            )
        outs.append(leaves)
    assert spec is not None
    selected = [
        _select_leaf(call, index, list(column), first, j, names)
        for j, column in enumerate(zip(*outs))
    ]
    return _pytree.unflatten(spec, selected)


_SAME_TYPES = (
    "With a predicate that differs across the vmap batch every branch runs, and all must return "
    "the same structure, shapes and dtypes."
)


def _select_leaf(
    call: str, index: torch.Tensor, column: list[Any], first: Any, j: int, names: Sequence[str]
) -> Any:
    """Output leaf ``j`` chosen per member; Python numbers take the branches' tensors' dtype."""
    ref = next((x for x in column if isinstance(x, torch.Tensor)), None)
    leaves: list[torch.Tensor] = []
    for i, x in enumerate(column):
        if isinstance(x, (bool, int, float, complex)):
            x = torch.tensor(x) if ref is None else torch.tensor(x, dtype=torch.result_type(ref, x))
        ok = isinstance(x, torch.Tensor)
        if ok and leaves and (x.shape, x.dtype) != (leaves[0].shape, leaves[0].dtype):
            ok = False
        if not ok:
            raise_type(
                call,
                f"{names[i]} returns another type than {names[0]} at "
                f"{_pytree.leaf_names(first, 'out')[j]}",
                _type_text(leaves[0]) if leaves else "a tensor or a Python number",
                describe(x),
                _SAME_TYPES,
            )
        leaves.append(x)
    out = leaves[0]
    for i in range(1, len(leaves)):
        out = torch.where(index == i, leaves[i], out)
    return out


def cond(
    pred: Any, true_fun: Callable[..., Any], false_fun: Callable[..., Any], *operands: Any
) -> Any:
    """``true_fun(*operands)`` if ``pred`` else ``false_fun(*operands)``: JAX's ``lax.cond``.

    With a plain predicate, only the chosen branch runs. Under ``vmap`` with a predicate that
    differs between examples, both branches run on every example and the results are selected,
    as in JAX; derivatives are selected too, so a branch that is singular on the examples where
    it was not chosen (``sqrt`` of a negative number, of an operand or of a tensor it closes
    over) leaves no NaN in the gradient.

    Args:
        pred: a Python bool or a 0-d boolean tensor.
        true_fun: called with ``*operands`` when ``pred`` holds.
        false_fun: called with ``*operands`` otherwise; with a batched ``pred`` both branches
            must return the same structure, shapes and dtypes.
        *operands: the branches' arguments, any pytrees.

    Returns:
        The chosen branch's output.

    Example:
        >>> import torch
        >>> from functorch_utils import grad, lax, vmap
        >>> f = lambda x: lax.cond(x > 0, torch.sqrt, lambda x: 0 * x, x)
        >>> f(torch.tensor(4.0))
        tensor(2.)
        >>> vmap(grad(f))(torch.tensor([-1.0, 4.0]))
        tensor([0.0000, 0.2500])
    """
    call = f"cond(pred, {fun_name(true_fun)}, {fun_name(false_fun)}, *operands)"
    check_callable("cond", true_fun)
    check_callable("cond", false_fun)
    integer = isinstance(pred, torch.Tensor) and pred.ndim == 0 and pred.dtype != torch.bool
    if integer and not (pred.is_floating_point() or pred.is_complex()):
        pred = pred != 0
    elif isinstance(pred, int):
        pred = pred != 0  # an integer predicate, as JAX accepts
    p = _bool_predicate(call, "pred", pred)
    if isinstance(p, bool):
        return true_fun(*operands) if p else false_fun(*operands)
    return _select(call, p.long(), [false_fun, true_fun], operands, ["false_fun", "true_fun"])


def switch(index: Any, branches: Sequence[Callable[..., Any]], *operands: Any) -> Any:
    """``branches[index](*operands)`` with ``index`` clamped to range: JAX's ``lax.switch``.

    Under ``vmap`` with an index that differs between examples, every branch runs on every
    example and the results (and derivatives) are selected, as for ``cond``.

    Args:
        index: a Python int or a 0-d integer tensor; values below 0 pick the first branch,
            values past the end the last (as JAX clamps).
        branches: a non-empty sequence of callables.
        *operands: the branches' arguments.

    Returns:
        The chosen branch's output.

    Example:
        >>> import torch
        >>> from functorch_utils import lax, vmap
        >>> branches = [lambda x: x + 1, lambda x: x * 10, lambda x: -x]
        >>> lax.switch(1, branches, torch.tensor(2.0))
        tensor(20.)
        >>> vmap(lambda i, x: lax.switch(i, branches, x))(torch.tensor([-5, 1, 7]), torch.ones(3))
        tensor([ 2., 10., -1.])
    """
    call = "switch(index, branches, *operands)"
    if isinstance(branches, (str, bytes)) or not isinstance(branches, Sequence) or not branches:
        raise_type(
            call, "branches must be a non-empty sequence of callables", "a list", describe(branches)
        )
    for b in branches:
        check_callable("switch", b)
    i = _int_index(call, index, len(branches))
    if isinstance(i, int):
        return branches[i](*operands)
    names = [f"branches[{k}]" for k in range(len(branches))]
    return _select(call, i, branches, operands, names)


# ---------------------------------------------------------------------------------------------
# while_loop, fori_loop


def _while(
    call: str, cond_fun: Callable[[Any], Any], body: Callable[[Any], Any], carry: _Carry
) -> Any:
    leaves = carry.leaves
    while True:
        p = _bool_predicate(call, "the output of cond_fun", cond_fun(carry.tree(leaves)))
        if isinstance(p, bool):
            if not p:
                return carry.tree(leaves)
            leaves = carry.check(body(carry.tree(leaves)))
            continue
        if _torch_hooks.is_compiling():
            _traced_loop_error(call, "the loop's predicate")
        # eval_shape: one checked step gives the shapes (asked without a Python frame: see
        # _torch_hooks.active_fake_mode)
        shapes = _torch_hooks.active_fake_mode() is not None
        if not shapes and not bool(_torch_hooks.unwrap_all(p).any()):  # no member continues
            return carry.tree(leaves)
        with _MaskOutside(p):
            out = body(carry.tree(leaves))
        new = carry.check(out)
        leaves = [torch.where(p, n, o) for n, o in zip(new, leaves)]
        if shapes:
            return carry.tree(leaves)


# NOTE [control flow under jit]
# Under torch.compile (``jit``) a predicate or index computed from tensors is traced, not known.
# ``cond`` and ``switch`` then take the batched path: every branch runs and a ``torch.where``
# selects (the masking mode traces, so derivatives stay NaN-free), which is what JAX does under
# ``vmap`` and gives the same values as JAX's compiled ``cond``. A loop whose trip count depends on
# tensor values (``while_loop`` with a tensor predicate, ``fori_loop`` with tensor bounds) cannot
# be unrolled by tracing; it is refused with a clear error (the eager loop, outside ``jit``, runs
# it). Loops with Python-int trip counts unroll. Under ``eval_shape`` (fake tensors, no values)
# ``cond``/``switch`` select the same way, and a loop with a tensor predicate or bounds runs one
# checked step: the carry keeps its structure, shapes and dtypes, so that step gives them.
def _traced_loop_error(call: str, what: str) -> NoReturn:
    raise_type(
        call,
        f"under jit (torch.compile), {what} is a traced tensor, so the number of steps depends "
        "on tensor values and the loop cannot be traced",
        "a trip count known when tracing: a Python bool predicate or Python int bounds",
        "a tensor",
        "Give fori_loop Python int bounds (the loop unrolls), make the bound a static argument "
        "of jit (static_argnums), or run this loop outside jit.",
    )


def while_loop(
    cond_fun: Callable[[Any], Any], body_fun: Callable[[Any], Any], init_val: Any
) -> Any:
    """Apply ``body_fun`` while ``cond_fun`` holds: JAX's ``lax.while_loop``.

    The loop this stands for::

        val = init_val
        while cond_fun(val):
            val = body_fun(val)
        return val

    Runs eagerly as that loop, so reverse mode works through it (JAX refuses reverse mode
    through ``while_loop``; here the executed steps are recorded). Under ``vmap`` with a
    predicate that differs between examples, the loop runs until no example continues and
    finished examples keep their value.

    Args:
        cond_fun: ``cond_fun(val)`` returns a Python bool or a 0-d boolean tensor.
        body_fun: ``body_fun(val)`` returns a value of the same structure, shapes and dtypes.
        init_val: the initial value, any pytree; Python numbers become 0-d tensors.

    Returns:
        The final value.

    Example:
        >>> import torch
        >>> from functorch_utils import lax, vmap
        >>> lax.while_loop(lambda v: v < 10, lambda v: v * 2, 1)
        tensor(16)
        >>> vmap(lambda x: lax.while_loop(lambda v: v < 10, lambda v: v * 2, x))(torch.tensor([1.0, 3.0, 20.0]))
        tensor([16., 12., 20.])
    """
    call = f"while_loop({fun_name(cond_fun)}, {fun_name(body_fun)}, init_val)"
    check_callable("while_loop", cond_fun)
    check_callable("while_loop", body_fun)
    return _while(call, cond_fun, body_fun, _Carry(call, init_val, "val", "body_fun"))


def _bound(call: str, name: str, value: Any) -> int | torch.Tensor:
    if isinstance(value, torch.Tensor) and value.ndim == 0 and not value.is_floating_point():
        if not value.is_complex() and value.dtype != torch.bool:
            if _torch_hooks.is_compiling():
                _traced_loop_error(call, f"the bound {name}")
            if _torch_hooks.shapes_only() or _torch_hooks.is_batched(value):
                return value  # eval_shape or vmap: the while_loop path
            return int(value)
    elif isinstance(value, int) and not isinstance(value, bool):
        return value
    raise_type(
        call,
        f"{name} must be a scalar integer",
        "a Python int or a 0-d integer tensor",
        describe(value),
    )


def fori_loop(
    lower: Any,
    upper: Any,
    body_fun: Callable[[Any, Any], Any],
    init_val: Any,
    *,
    unroll: int | bool | None = None,
) -> Any:
    """``val = body_fun(i, val)`` for ``i`` in ``range(lower, upper)``: JAX's ``lax.fori_loop``.

    ``i`` is passed as a 0-d int64 tensor (as JAX passes an integer array). Under ``vmap`` with
    bounds that differ between examples, the loop runs as a batched ``while_loop``: each example
    stops at its own bound and keeps its value (the body still runs on finished examples, with
    ``i = upper - 1``, and that result is discarded).

    Args:
        lower: the first index, a Python int or a 0-d integer tensor.
        upper: one past the last index.
        body_fun: ``body_fun(i, val)`` returns a value of ``val``'s structure, shapes and dtypes.
        init_val: the initial value, any pytree; Python numbers become 0-d tensors.
        unroll: accepted for JAX compatibility; it has no effect on an eager loop.

    Returns:
        The final value.

    Example:
        >>> import torch
        >>> from functorch_utils import lax
        >>> lax.fori_loop(0, 4, lambda i, v: v + i, 0.0)
        tensor(6.)
    """
    call = f"fori_loop(lower, upper, {fun_name(body_fun)}, init_val)"
    check_callable("fori_loop", body_fun)
    lo, hi = _bound(call, "lower", lower), _bound(call, "upper", upper)
    carry = _Carry(call, init_val, "val", "body_fun")
    if isinstance(lo, int) and isinstance(hi, int):
        leaves = carry.leaves
        for i in range(lo, hi):
            leaves = carry.check(body_fun(torch.tensor(i), carry.tree(leaves)))
        return carry.tree(leaves)
    start = torch.as_tensor(lo, dtype=torch.int64)
    counted = _Carry(call, (start, carry.tree(carry.leaves)), "val", "body_fun")

    def step(c: tuple[torch.Tensor, Any]) -> tuple[torch.Tensor, Any]:
        # A finished example (i == upper) still runs the body, its result discarded; it sees
        # i = upper - 1, an index its loop used, so that indexing with i stays in range.
        i = torch.minimum(c[0], torch.as_tensor(hi) - 1)
        return c[0] + 1, carry.tree(carry.check(body_fun(i, c[1])))

    return _while(call, lambda c: c[0] < hi, step, counted)[1]


# ---------------------------------------------------------------------------------------------
# associative_scan


def _slice(x: torch.Tensor, axis: int, start: int, stop: int | None, step: int = 1) -> torch.Tensor:
    return x[(slice(None),) * axis + (slice(start, stop, step),)]


def _interleave(even: torch.Tensor, odd: torch.Tensor, axis: int) -> torch.Tensor:
    """``even[0], odd[0], even[1], odd[1], ...`` along ``axis`` (``even`` may be one longer)."""
    k = odd.shape[axis]
    pairs = torch.stack([_slice(even, axis, 0, k), odd], dim=axis + 1).flatten(axis, axis + 1)
    return torch.cat([pairs, _slice(even, axis, k, None)], dim=axis)


def _prefix(
    combine: Callable[[list[Any], list[Any]], list[Any]], xs: list[Any], axis: int
) -> list[Any]:
    """Inclusive prefix combination in ``O(log n)`` rounds of vectorised ``combine`` calls.

    Combine neighbours pairwise, solve the half-length problem recursively (that gives the
    results at the odd positions), then fill each even position from its left neighbour.
    """
    n = xs[0].shape[axis]
    if n < 2:
        return xs
    halves = combine(
        [_slice(x, axis, 0, n - 1, 2) for x in xs], [_slice(x, axis, 1, None, 2) for x in xs]
    )
    odd = _prefix(combine, halves, axis)
    left = [_slice(o, axis, 0, (n - 1) // 2) for o in odd]
    even = combine(left, [_slice(x, axis, 2, None, 2) for x in xs])
    even = [torch.cat([_slice(x, axis, 0, 1), e], dim=axis) for x, e in zip(xs, even)]
    return [_interleave(e, o, axis) for e, o in zip(even, odd)]


def associative_scan(
    fn: Callable[[Any, Any], Any], elems: Any, reverse: bool = False, axis: int = 0
) -> Any:
    """Inclusive prefix scan with an associative ``fn``, in parallel: JAX's ``lax.associative_scan``.

    ``result[i] = fn(...fn(fn(elems[0], elems[1]), elems[2])..., elems[i])`` along ``axis``,
    computed with ``O(log n)`` rounds of ``fn`` applied to whole slices (a parallel-prefix
    algorithm), not a loop of ``n`` steps. ``fn`` must be associative and vectorised: it gets
    pytrees of tensors stacked along ``axis`` and combines them elementwise.

    Args:
        fn: ``fn(a, b)`` combining two pytrees of the structure of ``elems``.
        elems: a pytree of tensors with the same size along ``axis``.
        reverse: scan from the end (``result[i]`` combines ``elems[i:]``).
        axis: the axis to scan along (negative counts from the end).

    Returns:
        A pytree of the structure and shapes of ``elems``.

    Example:
        >>> import torch
        >>> from functorch_utils import lax
        >>> lax.associative_scan(torch.add, torch.arange(1.0, 6.0))
        tensor([ 1.,  3.,  6., 10., 15.])
        >>> lax.associative_scan(torch.maximum, torch.tensor([1, 3, 2, 5, 4]), reverse=True)
        tensor([5, 5, 5, 5, 4])
    """
    call = f"associative_scan({fun_name(fn)}, elems)"
    check_callable("associative_scan", fn)
    leaves, spec = _pytree.flatten(elems, call=call, root="elems")
    names = _pytree.leaf_names(elems, "elems")
    for name, leaf in zip(names, leaves):
        if not isinstance(leaf, torch.Tensor) or not -leaf.ndim <= axis < leaf.ndim:
            raise_type(
                call,
                f"the leaf {name} has no axis {axis}",
                f"a tensor with axis {axis}",
                describe(leaf),
            )
    if not leaves:
        return elems
    axes = [axis % leaf.ndim for leaf in leaves]
    if len(set(axes)) > 1:
        raise_value(call, "the leaves differ in rank", "leaves of one rank", ", ".join(names))
    sizes = [leaf.shape[axes[0]] for leaf in leaves]
    if len(set(sizes)) > 1:
        got = ", ".join(f"{n} with size {s}" for n, s in zip(names, sizes))
        raise_value(call, f"the leaves disagree on their size along axis {axis}", "one size", got)

    def combine(a: list[Any], b: list[Any]) -> list[Any]:
        out, out_spec = _pytree.flatten(fn(_pytree.unflatten(spec, a), _pytree.unflatten(spec, b)))
        if not _same_structure(out_spec, spec):
            raise_type(call, "fn changed the structure of elems", f"{spec}", f"{out_spec}")
        return out

    if reverse:
        leaves = [leaf.flip(axes[0]) for leaf in leaves]
    out = _prefix(combine, leaves, axes[0])
    if reverse:
        out = [leaf.flip(axes[0]) for leaf in out]
    return _pytree.unflatten(spec, out)
