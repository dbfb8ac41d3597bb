"""``vmap`` with JAX semantics on top of ``torch.func.vmap``: prepare -> run -> rebuild.

A call is prepared (arguments flattened with optree, each leaf given its axis, sizes checked), run
(the mapped tensors handed to a cached ``torch.func.vmap`` of one fixed body, torch's bare errors
translated) and rebuilt (the output structure put back, mapped axes moved into place). Named axes
are bound through ``_axes``; the collectives that read them live in ``_collectives``.
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Callable, Hashable
from typing import Any, Generic, NoReturn, TypeVar

import optree
import torch

from . import _torch_hooks
from ._axes import Axis, bind, check_name
from ._errors import check_callable, describe, fun_name, message, raise_type, raise_value
from ._pytree import NAMESPACE, Partition, Stash, flatten, leaf_names

__all__ = ["vmap"]

_RANDOMNESS = ("error", "different", "same")
_INT64_MAX = 2**63 - 1  # torch sizes are int64: a larger axis size cannot be made
_K = TypeVar("_K")
_V = TypeVar("_V")


class _Cache(Generic[_K, _V]):
    """A dict of at most ``limit`` entries; when full it empties, and callers rebuild on a miss.

    A function called with many argument structures (or many sets of mapped dims) must not keep
    one entry per structure forever; emptying is cheaper than tracking use, and every entry is
    quick to rebuild.
    """

    __slots__ = ("_data", "_limit")

    def __init__(self, limit: int) -> None:
        self._data: dict[_K, _V] = {}
        self._limit = limit

    def get(self, key: _K) -> _V | None:
        return self._data.get(key)

    def put(self, key: _K, value: _V) -> _V:
        if len(self._data) >= self._limit:
            self._data.clear()
        self._data[key] = value
        return value


# The structure of ``(args, {})`` for n positional arguments, each one leaf: the fast path's spec
# (keyed by n, bounded like every cache here).
_POSITIONAL_SPECS: _Cache[int, optree.PyTreeSpec] = _Cache(32)


def _positional_spec(n: int) -> optree.PyTreeSpec:
    spec = _POSITIONAL_SPECS.get(n)
    if spec is None:
        tree: Any = ((0,) * n, {})
        spec = optree.tree_structure(tree, none_is_leaf=True, namespace=NAMESPACE)
        spec = _POSITIONAL_SPECS.put(n, spec)
    return spec


# ----------------------------------------------------------------------------------------------
# Is an output batched at the body's own level? (``out_axes=None`` must not vary)


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


# ----------------------------------------------------------------------------------------------
# torch's bare RuntimeErrors under vmap, said in the library's words

# kind (from _torch_hooks.vmap_error_kind) -> (error type, what is wrong, expected, how to fix)
_TRANSLATIONS: dict[str, tuple[type[Exception], str, str, str]] = {
    "item": (
        TypeError,
        "the function converts a mapped tensor to a Python number (.item(), int(), float(), "
        ".tolist())",
        "values that stay tensors",
        "Keep the value as a tensor: compute with tensor ops, and choose with "
        "torch.where(cond, a, b) instead of an if on a number.",
    ),
    "control_flow": (
        TypeError,
        "the function branches on the value of a mapped tensor (if/while on a tensor, bool())",
        "control flow that does not depend on mapped values",
        "Compute both branches and select with torch.where(cond, a, b), or use "
        "torch.clamp/torch.maximum for elementwise choices.",
    ),
    "dynamic_shape": (
        TypeError,
        "the function calls an op whose output shape depends on the data (nonzero, masked "
        "indexing x[mask], unique)",
        "ops with data-independent shapes",
        "Keep the shape fixed: use torch.where(mask, x, 0) instead of x[mask], and gather with "
        "precomputed indices.",
    ),
    "in_place": (
        ValueError,
        "the function writes a mapped value in place into a tensor that is not mapped (one "
        "captured from outside the vmap, or created inside it)",
        "in-place writes only into mapped tensors",
        "Use out-of-place ops instead: y = x + v instead of x.add_(v), "
        "torch.where/torch.scatter/index_put (not x[i] = v) to build a new tensor.",
    ),
    "overflow": (
        ValueError,
        "a batched value has more elements than int64 can count (axis size times the "
        "per-member size)",
        "a smaller axis_size, or smaller per-member outputs",
        "Map over fewer members at a time.",
    ),
    "requires_grad": (
        TypeError,
        "the function calls Tensor.requires_grad_() or a torch.autograd.functional API on a "
        "mapped value, which torch.func cannot batch",
        "derivatives taken with functorch_utils' transforms",
        "Use functorch_utils.grad/vjp/jvp/jacrev/jacfwd inside the vmap, or call "
        "requires_grad_() on the inputs before vmap.",
    ),
    "forward_ad": (
        TypeError,
        "the function uses torch.autograd's forward mode (forward_ad, or "
        "torch.autograd.functional with strategy='forward-mode') on a mapped value, which "
        "torch.func cannot batch",
        "forward-mode derivatives taken with functorch_utils' transforms",
        "Use functorch_utils.jvp or jacfwd inside the vmap.",
    ),
    "legacy_function": (
        TypeError,
        "the function calls a torch.autograd.Function without a setup_context staticmethod, "
        "which torch.func cannot batch",
        "an autograd.Function whose forward takes no ctx and whose setup_context(ctx, inputs, "
        "output) saves what backward needs",
        "Split forward(ctx, ...) into forward(...) and setup_context(ctx, inputs, output) "
        "(https://pytorch.org/docs/stable/notes/extending.func.html), or use "
        "functorch_utils.custom_vjp.",
    ),
    "randomness": (
        ValueError,
        "the function draws random numbers but randomness='error'",
        "randomness='different' (independent draws per member) or 'same' (one draw shared)",
        "Pass vmap(f, randomness='different') or randomness='same'.",
    ),
}


def _translate(call: str, err: RuntimeError) -> Exception | None:
    kind = _torch_hooks.vmap_error_kind(err)
    if kind is None:
        return None
    cls, what, expected, fix = _TRANSLATIONS[kind]
    text = str(err)
    first = text.splitlines()[0] if text else type(err).__name__
    return cls(message(call, what, expected, f"torch's error {first!r}", fix))


# ----------------------------------------------------------------------------------------------
# Build-time checks


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _shown(value: Any) -> str:
    """``repr`` for the call shape; a long one (a big tensor, say) as ``describe`` words."""
    text = repr(value)
    return text if len(text) <= 80 and "\n" not in text else f"<{describe(value)}>"


def _call_shape(fun: Any, in_axes: Any, out_axes: Any, axis_name: Any, axis_size: Any) -> str:
    """``vmap(f, in_axes=...)``: the options that differ from their defaults.

    Compared by type first, so tensors and arrays (whose ``==`` is elementwise) are shown, not
    compared.
    """
    extras = "".join(
        f", {k}={_shown(v)}"
        for k, v, default in (
            ("in_axes", in_axes, 0),
            ("out_axes", out_axes, 0),
            ("axis_name", axis_name, None),
            ("axis_size", axis_size, None),
        )
        if not (type(v) is type(default) and (v is default or v == default))
    )
    return f"vmap({fun_name(fun)}{extras})"


def _check_axes_tree(build: str, name: str, tree: Any) -> None:
    """Every leaf of an in_axes/out_axes tree is an int (of a sane size) or None."""
    if isinstance(tree, torch.Tensor) or hasattr(tree, "__array__"):
        raise_type(
            build,
            f"{name} is a tensor or an array",
            "an int, None, or a tuple/list/dict of them",
            describe(tree),
            "Give Python ints: e.g. in_axes=(0, None), or in_axes=tuple(a.tolist()).",
        )
    accessors, leaves, _ = optree.tree_flatten_with_accessor(
        tree, none_is_leaf=True, namespace=NAMESPACE
    )
    for acc, leaf in zip(accessors, leaves):
        if leaf is not None and not _is_int(leaf):
            raise_type(
                build,
                f"{name} leaves must be ints or None",
                f"an int or None at {acc.codify(name)}",
                describe(leaf),
                "Give an axis number for mapped leaves and None for unmapped ones.",
            )


def _check_in_axes(build: str, in_axes: Any) -> None:
    wrong = not (in_axes is None or isinstance(in_axes, (int, tuple))) or isinstance(in_axes, bool)
    if wrong and not isinstance(in_axes, torch.Tensor) and not hasattr(in_axes, "__array__"):
        raise_type(
            build,
            "in_axes must be an int, None, or a tuple with one entry per positional argument",
            "an int, None or a tuple",
            describe(in_axes),
            "To give axes for the leaves of one argument, wrap its prefix in a tuple, "
            "e.g. in_axes=({'a': 0, 'b': None},).",
        )
    _check_axes_tree(build, "in_axes", in_axes)


def _check_options(
    build: str, axis_name: Any, axis_size: Any, randomness: Any, chunk_size: Any
) -> None:
    if axis_size is not None and not (_is_int(axis_size) and 0 <= axis_size <= _INT64_MAX):
        raise_type(
            build,
            "axis_size must be a non-negative int that fits in int64",
            "an int in [0, 2**63 - 1]",
            describe(axis_size),
        )
    if not isinstance(randomness, str):
        raise_type(
            build,
            "randomness must be a string",
            "'error', 'different' or 'same'",
            describe(randomness),
        )
    if randomness not in _RANDOMNESS:
        raise_value(
            build,
            "randomness is not one of torch.func.vmap's modes",
            "'error', 'different' or 'same'",
            describe(randomness),
        )
    if chunk_size is not None:
        if not _is_int(chunk_size):
            raise_type(build, "chunk_size must be an int or None", "e.g. 64", describe(chunk_size))
        if not 1 <= chunk_size <= _INT64_MAX:
            raise_value(
                build,
                "chunk_size must be a positive int or None",
                "an int in [1, 2**63 - 1], e.g. chunk_size=64",
                describe(chunk_size),
            )
    if axis_name is not None:
        _check_axis_name(build, axis_name, chunk_size)


def _check_axis_name(build: str, axis_name: Any, chunk_size: Any) -> None:
    check_name(build, axis_name)
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


# ----------------------------------------------------------------------------------------------
# Names for arguments and outputs in error messages (error paths only)


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


def _kw_label(text: str) -> str:
    # kwargs['y'][0] -> y[0]: keyword arguments are named by their keyword.
    m = re.match(r"kwargs\['([^']*)'\](.*)", text)
    return m.group(1) + m.group(2) if m else text


def _labels(fun: Any, args: tuple[Any, ...], kwargs: dict[str, Any], whole: bool) -> list[str]:
    """Key paths of the call's leaves in flattening order; whole arguments on the fast path."""
    roots = _arg_roots(fun, len(args))
    if whole:
        return roots
    labels: list[str] = []
    for root, arg in zip(roots, args):
        accs, _, _ = optree.tree_flatten_with_accessor(arg, none_is_leaf=True, namespace=NAMESPACE)
        labels.extend(a.codify(root) for a in accs)
    kw_tree: Any = kwargs
    kw_accs, _, _ = optree.tree_flatten_with_accessor(
        kw_tree, none_is_leaf=True, namespace=NAMESPACE
    )
    labels.extend(_kw_label(a.codify("kwargs")) for a in kw_accs)
    return labels


def _prefix_error(
    call: str, name: str, prefix: Any, full: Any, what: str, expected: str, got: str, fix: str
) -> NoReturn:
    """``ValueError``: ``prefix`` (``in_axes``/``out_axes``) is not a pytree prefix of ``full``,
    with optree's key-path explanation appended."""
    errors = optree.prefix_errors(prefix, full, none_is_leaf=True, namespace=NAMESPACE)
    detail = "\n".join(str(e(name)) for e in errors[:3])
    text = message(call, f"{name} is not a pytree prefix of the {what}", expected, got, fix)
    raise ValueError(text + ("\n" + detail if detail else "")) from None


def _out_axis_error(call: str, ax: int, label: str, ndim: int) -> NoReturn:
    raise_value(
        call,
        f"out_axes {ax} is out of range for {label}, which has {ndim - 1} dimensions per member "
        f"(so {ndim} batched)",
        f"an axis in [{-ndim}, {ndim - 1}]",
        str(ax),
    )


def _plain(x: Any, depth: int = 0) -> bool:
    """A non-empty dict/list/tuple (exact types) nest of tensors that torch's pytree rebuilds."""
    if isinstance(x, torch.Tensor):
        return True
    kind = type(x)
    if depth > 2 or kind not in (dict, list, tuple) or not x:
        return False
    values = x.values() if kind is dict else x
    return all(_plain(v, depth + 1) for v in values)


# ----------------------------------------------------------------------------------------------
# One vmap: prepare -> run -> rebuild


class _Call:
    """One call's state, handed to the body through ``torch.func.vmap`` as an unmapped argument.

    ``inputs`` puts the mapped tensors back among the other leaves of ``(args, kwargs)``. The body
    fills the rest: ``out`` carries the output's structure and non-tensor leaves past torch.func,
    ``plan`` is each output tensor's axis (``None``: the tensor is the same for every member and
    comes back through ``unmapped``, as torch.func itself hands back an ``out_dims=None`` output),
    or ``plan`` stays ``None`` when torch.func rebuilds the output itself (``out_axis`` applies).
    """

    __slots__ = ("inputs", "out", "out_axis", "plan", "size", "token", "unmapped", "vm")

    def __init__(self, vm: _Vmap, inputs: Partition, size: int, token: bool) -> None:
        self.vm = vm
        self.inputs = inputs
        self.size = size
        self.token = token  # the last flat input is the axis token
        self.out: Stash | None = None  # made by the body when it needs one
        self.plan: list[int | None] | None = None
        self.unmapped: list[torch.Tensor] = []
        self.out_axis = 0


def _body(state: _Call, *flat: torch.Tensor) -> Any:
    # The one function torch.func.vmap sees (so its wrapper is built once per in_dims): the call's
    # state rides along unmapped, then the flat mapped tensors (and the token).
    return state.vm.body(state, flat)


class _Vmap:
    """One ``vmap(fun, ...)``: its options, what is derived from them once, and its caches."""

    def __init__(
        self,
        fun: Callable[..., Any],
        in_axes: Any,
        out_axes: Any,
        axis_name: Hashable | None,
        axis_size: int | None,
        randomness: str,
        chunk_size: int | None,
        build: str,
    ) -> None:
        self.fun = fun
        self.in_axes = in_axes
        self.out_axes = out_axes
        self.axis_name = axis_name
        self.axis_size = axis_size
        self.randomness = randomness
        self.chunk_size = chunk_size
        self.call = f"{build}(...)"
        self.in_axes_is_leaf = in_axes is None or isinstance(in_axes, int)
        self.out_axes_is_leaf = out_axes is None or isinstance(out_axes, int)
        self.out_has_none = None in optree.tree_leaves(
            out_axes, none_is_leaf=True, namespace=NAMESPACE
        )
        # in_axes as one int/None per positional argument (the fast path), when it is that
        self.top_axes: tuple[Any, ...] | None = (
            in_axes
            if isinstance(in_axes, tuple) and all(a is None or _is_int(a) for a in in_axes)
            else None
        )
        # in_axes broadcast to the leaves of (args, kwargs), keyed by their PyTreeSpec
        self.axes_by_spec: _Cache[optree.PyTreeSpec, list[Any]] = _Cache(64)
        # torch.func.vmap(_body, ...), keyed by the mapped dims of the flat inputs
        self.runners: _Cache[tuple[int, ...], Callable[..., Any]] = _Cache(64)

    # -- prepare: leaves, their axes, the size, the token

    def prepare(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[_Call, list[torch.Tensor], tuple[int, ...]]:
        leaves, spec, axes, whole = self._leaves_and_axes(args, kwargs)
        flat: list[torch.Tensor] = []
        in_dims: list[int] = []
        positions: list[int] = []
        size: int | None = None
        mismatch = False
        for i, (leaf, ax) in enumerate(zip(leaves, axes)):
            if ax is None or not isinstance(leaf, torch.Tensor):
                continue
            if leaf.layout is not torch.strided or leaf.is_nested:
                self._layout_error(leaf, _labels(self.fun, args, kwargs, whole)[i])
            ndim = leaf.dim()
            if not -ndim <= ax < ndim:
                self._range_error(leaf, ax, _labels(self.fun, args, kwargs, whole)[i])
            if ax < 0:
                ax += ndim
            n = leaf.shape[ax]
            if size is None:
                size = n
            elif n != size:
                mismatch = True
            flat.append(leaf)
            in_dims.append(ax)
            positions.append(i)
        if mismatch or (size is not None and self.axis_size not in (None, size)):
            labels = _labels(self.fun, args, kwargs, whole)
            self._size_error([(labels[p], leaves[p], d) for p, d in zip(positions, in_dims)])
        if size is None:
            size = self._unmapped_size(len(leaves))
        need_token = self.axis_name is not None or not flat or self.out_has_none
        state = _Call(self, Partition(spec, leaves, positions), size, need_token)
        if need_token:
            flat.append(self._token(size, flat[0].device if flat else None))
            in_dims.append(0)
        return state, flat, tuple(in_dims)

    def _leaves_and_axes(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[list[Any], optree.PyTreeSpec, Any, bool]:
        """The leaves of ``(args, kwargs)``, their structure, one axis each, and whether each
        positional argument was taken whole (the fast path)."""
        in_axes = self.in_axes
        if not kwargs:
            per_arg = [in_axes] * len(args) if self.in_axes_is_leaf else self.top_axes
            if (
                per_arg is not None
                and len(per_arg) == len(args)
                and all(ax is None or isinstance(a, torch.Tensor) for a, ax in zip(args, per_arg))
            ):
                # Fast path: every mapped argument is a tensor and the others (any pytree) are
                # unmapped as a whole, so each argument is one leaf and optree's flatten is not
                # needed. It costs ~3 us hot but tens of us with the caches cold after a large
                # batched computation, which benchmarks/bench_vmap.py showed.
                return list(args), _positional_spec(len(args)), per_arg, True
        tree: Any = (args, kwargs)
        try:
            leaves, spec = optree.tree_flatten(tree, none_is_leaf=True, namespace=NAMESPACE)
        except RecursionError:
            self._cycle_error(args, kwargs)
        if self.in_axes_is_leaf and not kwargs:
            return leaves, spec, [in_axes] * len(leaves), False
        axes = self.axes_by_spec.get(spec)
        if axes is None:
            axes = self.axes_by_spec.put(spec, self._broadcast_in_axes(args, kwargs))
        return leaves, spec, axes, False

    def _cycle_error(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> NoReturn:
        # _pytree.flatten finds where a tree holds itself and raises a ValueError naming it.
        for arg, root in zip(args, _arg_roots(self.fun, len(args))):
            flatten(arg, call=self.call, root=root)
        kw_tree: Any = kwargs
        flatten(kw_tree, call=self.call, root="kwargs")
        raise RecursionError(f"{self.call}: the arguments are nested too deeply to flatten")

    def _broadcast_in_axes(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any]:
        tree: Any = (args, kwargs)
        axes_tree: Any = (self.in_axes, 0)  # keyword arguments are mapped over axis 0
        try:
            return optree.broadcast_prefix(axes_tree, tree, none_is_leaf=True, namespace=NAMESPACE)
        except ValueError:
            pass
        in_axes = self.in_axes
        n_in = len(in_axes) if isinstance(in_axes, tuple) else "?"
        _prefix_error(
            self.call,
            "in_axes",
            in_axes,
            args,
            "positional arguments",
            f"one entry per positional argument ({len(args)}), each a prefix of it",
            f"in_axes={in_axes!r} ({n_in} entries)",
            "Give int or None for a whole argument, or a container of the same type and "
            "keys/length as the argument.",
        )

    def _unmapped_size(self, n_leaves: int) -> int:
        if self.axis_size is None:
            raise_value(
                self.call,
                "nothing is mapped, so the axis size is unknown",
                "at least one tensor with a non-None in_axes, or axis_size",
                f"in_axes={self.in_axes!r} with {n_leaves} argument leaves and no mapped tensor",
                "Pass axis_size=n to broadcast the outputs to n members.",
            )
        return self.axis_size

    def _token(self, size: int, device: torch.device | None) -> torch.Tensor:
        # A named axis's token is arange(size): see NOTE [named axes and collectives] in
        # _collectives.py. Unnamed, a token only marks the level (for the out_axes=None probe, or
        # when nothing else is mapped): zero bytes, however long the axis.
        device = torch.get_default_device() if device is None else device
        if self.axis_name is None:
            return torch.empty((size, 0), dtype=torch.int64, device=device)
        try:
            return torch.arange(size, device=device)
        except RuntimeError as err:  # an axis_size too long to allocate its indices
            raise ValueError(
                message(
                    self.call,
                    "the named axis is too long to hold its member indices",
                    "an axis_size whose int64 indices fit in memory",
                    f"axis_size={size}",
                )
            ) from err

    def _layout_error(self, leaf: torch.Tensor, label: str) -> NoReturn:
        layout = "nested" if leaf.is_nested else str(leaf.layout).removeprefix("torch.")
        raise_type(
            self.call,
            f"{label} is a {layout} tensor, which vmap cannot map",
            "a dense (strided) tensor for every mapped leaf",
            f"a {layout} tensor of dtype {leaf.dtype}",
            ("Stack its components into one dense tensor" if leaf.is_nested else "Map x.to_dense()")
            + ", or pass None in in_axes to hand it to the function unmapped.",
        )

    def _range_error(self, leaf: torch.Tensor, ax: int, label: str) -> NoReturn:
        ndim = leaf.dim()
        raise_value(
            self.call,
            f"axis {ax} is out of range for {label}, which has {ndim} dimensions "
            f"(shape {tuple(leaf.shape)})",
            f"an axis in [{-ndim}, {ndim - 1}]" if ndim else "a tensor with a dimension",
            str(ax),
            f"Map a dimension {label} has, or pass None in in_axes to leave it unmapped.",
        )

    def _size_error(self, mapped: list[tuple[str, torch.Tensor, int]]) -> NoReturn:
        got = ", ".join(
            f"{label} with size {leaf.shape[d]} along axis {d} (shape {tuple(leaf.shape)})"
            for label, leaf, d in mapped[:8]
        )
        if self.axis_size is not None:
            got = f"axis_size={self.axis_size}; " + got
        raise_value(
            self.call,
            "the mapped axes have different sizes",
            "the same size for every mapped argument",
            got,
            "Map axes of one length, or pass None in in_axes for arguments that should not "
            "be mapped.",
        )

    # -- run: the cached torch.func.vmap of _body, torch's bare errors translated

    def run(self, state: _Call, flat: list[torch.Tensor], in_dims: tuple[int, ...]) -> Any:
        runner = self.runners.get(in_dims)
        if runner is None:
            runner = self.runners.put(
                in_dims,
                torch.func.vmap(
                    _body,
                    in_dims=(None, *in_dims),
                    out_dims=0,
                    randomness=self.randomness,
                    chunk_size=self.chunk_size,
                ),
            )
        try:
            return runner(state, *flat)
        except RuntimeError as err:
            better = _translate(self.call, err)
            if better is None:
                raise
            raise better from err

    def body(self, state: _Call, flat: tuple[torch.Tensor, ...]) -> Any:
        """One member's call (batched by torch.func): rebuild the arguments, bind the name, run
        ``fun``, and hand its tensors to torch.func."""
        args, kwargs = state.inputs.combine(flat)  # the token, if any, is past the picked leaves
        token = flat[-1] if state.token else None
        if self.axis_name is None:
            out = self.fun(*args, **kwargs)
        else:
            assert token is not None
            with bind(Axis(self.axis_name, state.size, token)):
                out = self.fun(*args, **kwargs)
        return self._pack(state, out, token)

    def _pack(self, state: _Call, out: Any, token: torch.Tensor | None) -> Any:
        out_axes = self.out_axes
        if self.out_axes_is_leaf and out_axes is not None and isinstance(out, torch.Tensor):
            # Fast path: one tensor out, one int out_axes.
            ndim = out.dim() + 1
            if not -ndim <= out_axes < ndim:
                _out_axis_error(self.call, out_axes, "out", ndim)
            state.out_axis = out_axes + ndim if out_axes < 0 else out_axes
            return out
        if out_axes == 0 and _plain(out):
            # Plain dicts/lists/tuples of tensors at axis 0: torch.func unwraps them itself, as it
            # does for raw torch.func.vmap, and hands back the same structure.
            return out
        state.out = Stash()
        tensors = state.out.put(out)
        mapped: list[torch.Tensor] = []
        unmapped: list[torch.Tensor] = []
        plan: list[int | None] = []
        for k, (t, ax) in enumerate(zip(tensors, self._tensor_out_axes(out, len(tensors)))):
            if ax is None:
                # Returned past torch.func rather than with out_dims=None, which refuses a tensor
                # batched at an outer level (an inner vmap's unbatched result).
                assert token is not None
                if _is_batched(t, token):
                    self._varies_error(state, out, k, t)
                unmapped.append(t)
            else:
                ndim = t.dim() + 1
                if not -ndim <= ax < ndim:
                    _out_axis_error(self.call, ax, self._out_label(state, out, k), ndim)
                ax = ax + ndim if ax < 0 else ax
                mapped.append(t)
            plan.append(ax)
        state.plan, state.unmapped = plan, unmapped
        # torch.func unwraps a lone tensor without any pytree work
        return mapped[0] if len(mapped) == 1 else tuple(mapped)

    def _tensor_out_axes(self, out: Any, n: int) -> list[Any]:
        """``out_axes`` broadcast to the output's tensor leaves (in flattening order)."""
        if self.out_axes_is_leaf:
            return [self.out_axes] * n
        try:
            full = optree.broadcast_prefix(
                self.out_axes, out, none_is_leaf=True, namespace=NAMESPACE
            )
        except ValueError:
            spec = optree.tree_structure(out, none_is_leaf=True, namespace=NAMESPACE)
            _prefix_error(
                self.call,
                "out_axes",
                self.out_axes,
                out,
                "output",
                f"a prefix of the output structure {spec}",
                f"out_axes={self.out_axes!r}",
                "Give int or None for a whole output, or a container of the same type and "
                "keys/length as the output.",
            )
        leaves = optree.tree_leaves(out, none_is_leaf=True, namespace=NAMESPACE)
        return [ax for leaf, ax in zip(leaves, full) if isinstance(leaf, torch.Tensor)]

    def _out_label(self, state: _Call, out: Any, k: int) -> str:
        assert state.out is not None and state.out.part is not None
        return leaf_names(out, "out")[state.out.part.picked[k]]

    def _varies_error(self, state: _Call, out: Any, k: int, t: torch.Tensor) -> NoReturn:
        raise_value(
            self.call,
            f"{self._out_label(state, out, k)} has out_axes None but varies along the mapped axis",
            "an output that is the same for every member",
            describe(t) + " that depends on the mapped inputs",
            "Give it an int out_axes, or reduce it (e.g. with psum) first.",
        )

    # -- rebuild: the output structure, mapped axes moved into place

    def rebuild(self, state: _Call, res: Any) -> Any:
        # torch's vmap can hand back its internal ZeroTensor (a zero derivative computed inside,
        # e.g. grad of a jvp that does not depend on the input); users get plain zeros.
        if state.plan is None:  # a lone tensor or a plain structure (see _pack)
            if isinstance(res, torch.Tensor):
                res = _dense(res)
                return res if state.out_axis == 0 else res.movedim(0, state.out_axis)
            return _dense_plain(res)
        mapped = iter((res,) if isinstance(res, torch.Tensor) else res)
        unmapped = iter(state.unmapped)
        values = [
            next(unmapped) if ax is None else _moved(_dense(next(mapped)), ax) for ax in state.plan
        ]
        assert state.out is not None
        return state.out.get(values)


def _dense(t: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(t) if _torch_hooks.is_zero_tensor(t) else t


def _dense_plain(x: Any) -> Any:
    """``_dense`` over a plain dict/list/tuple output (see ``_plain``)."""
    if isinstance(x, torch.Tensor):
        return _dense(x)
    if isinstance(x, dict):
        return type(x)((k, _dense_plain(v)) for k, v in x.items())
    return type(x)(_dense_plain(v) for v in x)


def _moved(t: torch.Tensor, ax: int) -> torch.Tensor:
    return t if ax == 0 else t.movedim(0, ax)


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
            returned unbatched along this axis (an outer ``vmap`` may still batch it).
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
        TypeError: at build time for a non-callable ``fun`` or ill-typed options (tensors or
            arrays as options included); at call time for a mapped sparse or nested tensor, and
            for Python control flow or ``.item()`` on mapped values inside ``fun``.
        ValueError: at build time for ``chunk_size < 1``; at call time for mapped axes of
            different sizes, axes out of range, an ``in_axes``/``out_axes`` that is not a prefix
            of the arguments/output, an output that varies along the axis with
            ``out_axes=None``, and in-place writes of mapped values into unmapped tensors.

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
    if isinstance(in_axes, list):  # JAX canonicalises a top-level list to a tuple
        in_axes = tuple(in_axes)
    build = _call_shape(fun, in_axes, out_axes, axis_name, axis_size)
    _check_in_axes(build, in_axes)
    _check_axes_tree(build, "out_axes", out_axes)
    _check_options(build, axis_name, axis_size, randomness, chunk_size)
    batch = _Vmap(fun, in_axes, out_axes, axis_name, axis_size, randomness, chunk_size, build)

    @functools.wraps(fun)
    def batched(*args: Any, **kwargs: Any) -> Any:
        if axis_name is None and _torch_hooks.is_compiling():
            return _traced(fun, in_axes, out_axes, randomness, chunk_size, args, kwargs)
        state, flat, in_dims = batch.prepare(args, kwargs)
        return batch.rebuild(state, batch.run(state, flat, in_dims))

    return batched


# NOTE [vmap under jit]
# Under torch.compile the preparation above (optree structures as cache keys, the named-axis
# token) cannot be traced, so an unnamed vmap hands its arguments straight to torch.func.vmap,
# which dynamo traces; keyword arguments travel as one extra positional dict mapped over axis 0,
# as JAX maps them. Arguments and axes must then be what torch.func.vmap accepts (tensors and
# torch's own containers: tuples, lists, dicts, namedtuples). A named axis takes the eager path.
def _traced(
    fun: Callable[..., Any],
    in_axes: Any,
    out_axes: Any,
    randomness: str,
    chunk_size: int | None,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> Any:
    opts: dict[str, Any] = {"randomness": randomness, "chunk_size": chunk_size}
    if not kwargs:
        return torch.func.vmap(fun, in_dims=in_axes, out_dims=out_axes, **opts)(*args)
    per_arg = in_axes if isinstance(in_axes, tuple) else (in_axes,) * len(args)

    def with_keywords(positional: tuple[Any, ...], keywords: dict[str, Any]) -> Any:
        return fun(*positional, **keywords)

    batched = torch.func.vmap(with_keywords, in_dims=(per_arg, 0), out_dims=out_axes, **opts)
    return batched(tuple(args), dict(kwargs))
