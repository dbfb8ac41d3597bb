"""``jax.tree_util`` names over optree.

Every function here uses optree with ``none_is_leaf=False`` (``None`` is an empty subtree, as in
JAX) and the registry namespace ``"functorch_utils"``, which also sees optree's global registry. A
type registered here is a pytree for every transform of the library.

Example:
    >>> import torch
    >>> from functorch_utils import tree_util as tu
    >>> tree = {"w": torch.ones(2), "b": (torch.zeros(1), None)}
    >>> tu.tree_leaves(tree)
    [tensor([0.]), tensor([1., 1.])]
    >>> tu.tree_map(lambda x: x + 1, tree)["b"]
    (tensor([1.]), None)
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import optree
from optree import PyTreeSpec
from optree.functools import partial as _optree_partial

from ._errors import describe, message, raise_type, raise_value
from ._pytree import NAMESPACE, flatten, structure_errors

__all__ = [
    "PyTreeDef",
    "tree_map",
    "tree_map_with_path",
    "tree_flatten",
    "tree_flatten_with_path",
    "tree_unflatten",
    "tree_leaves",
    "tree_leaves_with_path",
    "tree_structure",
    "tree_reduce",
    "tree_all",
    "tree_transpose",
    "tree_broadcast",
    "tree_reduce_associative",
    "treedef_children",
    "treedef_tuple",
    "flatten_one_level",
    "Partial",
    "treedef_is_leaf",
    "all_leaves",
    "is_tree_node",
    "keystr",
    "register_pytree_node",
    "register_pytree_node_class",
    "register_dataclass",
    "register_static",
]

T = TypeVar("T")
PyTreeDef = PyTreeSpec
_KW: dict[str, Any] = {"none_is_leaf": False, "namespace": NAMESPACE}
_MAP = "tree_map(f, tree, *rest)"
_MAP_PATH = "tree_map_with_path(f, tree, *rest)"


def _run(call: str, tree: Any, op: Callable[[], T]) -> T:
    """``op()``, an optree walk of ``tree``; if it runs out of recursion, the error that says why.

    ``_pytree.flatten`` finds the container that holds itself (or reports the depth) and raises a
    ``ValueError`` with ``call`` in front.
    """
    try:
        return op()
    except RecursionError as e:
        error = e  # leave the except block: the deep recursion is noise in the traceback
    flatten(tree, call=call)
    raise error  # the tree is fine: the recursion came from elsewhere (a user function)


def _structure_text(tree: Any) -> str:
    try:
        return str(optree.tree_structure(tree, **_KW))
    except (RecursionError, ValueError, TypeError):
        return describe(tree)


def _check_rest(
    call: str, tree: Any, rest: tuple[Any, ...], is_leaf: Any, error: Exception
) -> None:
    """After a multi-tree map failed: the error naming the first tree of ``rest`` whose structure
    does not have ``tree``'s as a prefix (optree checks structures before calling ``f``, so when
    they all match, ``error`` came from ``f`` and stands)."""
    spec = optree.tree_structure(tree, is_leaf=is_leaf, **_KW)
    for i, other in enumerate(rest):
        try:
            spec.flatten_up_to(other)
        except (ValueError, TypeError):
            raise ValueError(
                message(
                    call,
                    f"rest[{i}] does not have the structure of tree",
                    f"tree's structure {spec} (deeper subtrees at its leaves are fine)",
                    _structure_text(other),
                    "Where they part:\n" + structure_errors(tree, other, "tree"),
                )
            ) from error


def tree_map(
    f: Callable[..., Any],
    tree: Any,
    /,
    *rest: Any,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Map ``f`` over the leaves of ``tree`` (and the matching leaves of ``rest``).

    Each tree in ``rest`` must have ``tree``'s structure, or a deeper one: ``f`` then gets the
    whole subtree of that tree at each leaf of ``tree``. Anything else is a ``ValueError`` with the
    key path where the structures part.

    Example:
        >>> from functorch_utils.tree_util import tree_map
        >>> tree_map(lambda a, b: a + b, {"x": 1, "y": (2, None)}, {"x": 10, "y": (20, None)})
        {'x': 11, 'y': (22, None)}
        >>> tree_map(lambda a, b: (a, b), [1, 2], [[3, 4], {"k": 5}])
        [(1, [3, 4]), (2, {'k': 5})]
    """
    try:
        return _run(_MAP, tree, lambda: optree.tree_map(f, tree, *rest, is_leaf=is_leaf, **_KW))
    except (ValueError, TypeError) as e:
        if rest:
            _check_rest(_MAP, tree, rest, is_leaf, e)
        raise


def tree_map_with_path(
    f: Callable[..., Any],
    tree: Any,
    /,
    *rest: Any,
    is_leaf: Callable[..., bool] | None = None,
    is_leaf_takes_path: bool = False,
) -> Any:
    """Like :func:`tree_map`, with the key path (a tuple of keys) as ``f``'s first argument.

    With ``is_leaf_takes_path=True``, ``is_leaf(path, node)`` is asked with each node's path.

    Example:
        >>> from functorch_utils.tree_util import tree_map_with_path, keystr
        >>> tree_map_with_path(lambda p, x: keystr(p), {"a": [1, 2]})
        {'a': ["['a'][0]", "['a'][1]"]}
    """
    is_leaf = _by_path(_MAP_PATH, tree, is_leaf, is_leaf_takes_path)
    try:
        return _run(
            _MAP_PATH,
            tree,
            lambda: optree.tree_map_with_path(f, tree, *rest, is_leaf=is_leaf, **_KW),
        )
    except (ValueError, TypeError) as e:
        if rest:
            _check_rest(_MAP_PATH, tree, rest, is_leaf, e)
        raise


def tree_flatten(
    tree: Any, /, is_leaf: Callable[[Any], bool] | None = None
) -> tuple[list[Any], PyTreeSpec]:
    """Flatten ``tree`` into its leaves and a treedef.

    Example:
        >>> from functorch_utils.tree_util import tree_flatten, tree_unflatten
        >>> leaves, treedef = tree_flatten({"b": 2, "a": [1, None]})
        >>> leaves
        [1, 2]
        >>> tree_unflatten(treedef, [10, 20])
        {'b': 20, 'a': [10, None]}
    """
    return _run(
        "tree_flatten(tree)", tree, lambda: optree.tree_flatten(tree, is_leaf=is_leaf, **_KW)
    )


def tree_flatten_with_path(
    tree: Any,
    /,
    is_leaf: Callable[..., bool] | None = None,
    is_leaf_takes_path: bool = False,
) -> tuple[list[tuple[tuple[Any, ...], Any]], PyTreeSpec]:
    """Flatten ``tree`` into ``(key_path, leaf)`` pairs and a treedef.

    With ``is_leaf_takes_path=True``, ``is_leaf(path, node)`` is asked with each node's path.

    Example:
        >>> from functorch_utils.tree_util import tree_flatten_with_path
        >>> tree_flatten_with_path({"a": (1, 2)})[0]
        [(('a', 0), 1), (('a', 1), 2)]
    """
    is_leaf = _by_path("tree_flatten_with_path(tree)", tree, is_leaf, is_leaf_takes_path)
    paths, leaves, spec = _run(
        "tree_flatten_with_path(tree)",
        tree,
        lambda: optree.tree_flatten_with_path(tree, is_leaf=is_leaf, **_KW),
    )
    return list(zip(paths, leaves)), spec


def tree_leaves_with_path(
    tree: Any,
    /,
    is_leaf: Callable[..., bool] | None = None,
    is_leaf_takes_path: bool = False,
) -> list[tuple[tuple[Any, ...], Any]]:
    """The ``(key_path, leaf)`` pairs of ``tree`` (``is_leaf_takes_path`` as in
    :func:`tree_flatten_with_path`).

    Example:
        >>> from functorch_utils.tree_util import tree_leaves_with_path
        >>> tree_leaves_with_path([1, {"x": 2}])
        [((0,), 1), ((1, 'x'), 2)]
    """
    return tree_flatten_with_path(tree, is_leaf, is_leaf_takes_path)[0]


def _by_path(
    call: str, tree: Any, is_leaf: Callable[..., bool] | None, takes_path: bool
) -> Callable[[Any], bool] | None:
    """``is_leaf(path, node)`` (JAX's ``is_leaf_takes_path=True``) as optree's ``is_leaf(node)``.

    optree asks ``is_leaf`` with the node only, so the tree is walked once here, one level at a
    time, and the nodes where ``is_leaf(path, node)`` holds are then recognised by identity.
    """
    if not isinstance(takes_path, bool):
        raise_type(call, "is_leaf_takes_path must be a bool", "True or False", describe(takes_path))
    if not takes_path or is_leaf is None:
        return is_leaf
    stops: set[int] = set()

    def walk(node: Any, path: tuple[Any, ...]) -> None:
        if is_leaf(path, node):
            stops.add(id(node))
            return
        try:
            level = optree.tree_flatten_one_level(node, **_KW)
        except ValueError:  # a leaf
            return
        for child, entry in zip(level.children, level.entries):
            walk(child, (*path, entry))

    walk(tree, ())
    return lambda node: id(node) in stops


def tree_unflatten(treedef: PyTreeSpec, leaves: Iterable[Any], /) -> Any:
    """Rebuild a tree from a treedef and leaves (see :func:`tree_flatten`).

    ``leaves`` must hold exactly one value per leaf of ``treedef``, in flattening order.

    Example:
        >>> from functorch_utils.tree_util import tree_structure, tree_unflatten
        >>> tree_unflatten(tree_structure({"a": 0, "b": (0, None)}), [1, 2])
        {'a': 1, 'b': (2, None)}
    """
    call = "tree_unflatten(treedef, leaves)"
    if not isinstance(treedef, PyTreeSpec):
        swapped = isinstance(leaves, PyTreeSpec)
        raise_type(
            call,
            "treedef is not a treedef",
            "a PyTreeDef from tree_flatten(tree)[1] or tree_structure(tree)",
            describe(treedef),
            "The treedef comes first: tree_unflatten(treedef, leaves)."
            if swapped
            else "Build it with tree_structure(example_tree).",
        )
    values = list(leaves)
    if len(values) != treedef.num_leaves:
        paths = [a.codify("tree") for a in treedef.accessors()]
        where = (
            f"the first missing leaf is {paths[len(values)]}"
            if len(values) < len(paths)
            else f"{len(values) - len(paths)} too many"
        )
        raise_value(
            call,
            f"wrong number of leaves for {treedef} ({where})",
            f"{treedef.num_leaves} leaves",
            f"{len(values)}",
            "Pass one value per leaf, in the order tree_flatten gives them.",
        )
    return optree.tree_unflatten(treedef, values)


def tree_leaves(tree: Any, /, is_leaf: Callable[[Any], bool] | None = None) -> list[Any]:
    """The leaves of ``tree`` in flattening order.

    Example:
        >>> from functorch_utils.tree_util import tree_leaves
        >>> tree_leaves({"b": [3, None], "a": 1})
        [1, 3]
    """
    return _run("tree_leaves(tree)", tree, lambda: optree.tree_leaves(tree, is_leaf=is_leaf, **_KW))


def tree_structure(tree: Any, /, is_leaf: Callable[[Any], bool] | None = None) -> PyTreeSpec:
    """The treedef of ``tree``.

    Example:
        >>> from functorch_utils.tree_util import tree_structure
        >>> tree_structure((1, {"a": None}))
        PyTreeSpec((*, {'a': None}))
    """
    return _run(
        "tree_structure(tree)", tree, lambda: optree.tree_structure(tree, is_leaf=is_leaf, **_KW)
    )


_MISSING = object()


def tree_reduce(
    function: Callable[[Any, Any], Any],
    tree: Any,
    /,
    initializer: Any = _MISSING,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Reduce the leaves of ``tree`` with ``function`` (``functools.reduce`` over the leaves).

    Example:
        >>> from functorch_utils.tree_util import tree_reduce
        >>> tree_reduce(lambda a, b: a + b, {"x": 1, "y": [2, 3]})
        6
    """
    leaves = _run(
        "tree_reduce(function, tree)",
        tree,
        lambda: optree.tree_leaves(tree, is_leaf=is_leaf, **_KW),
    )
    if initializer is _MISSING:
        return functools.reduce(function, leaves)
    return functools.reduce(function, leaves, initializer)


def tree_all(tree: Any, /, is_leaf: Callable[[Any], bool] | None = None) -> bool:
    """Whether every leaf of ``tree`` is truthy.

    Example:
        >>> from functorch_utils.tree_util import tree_all
        >>> tree_all({"a": True, "b": [1, 2]}), tree_all([True, 0])
        (True, False)
    """
    return all(tree_leaves(tree, is_leaf))


def tree_transpose(
    outer_treedef: PyTreeSpec, inner_treedef: PyTreeSpec | None, pytree: Any, /
) -> Any:
    """Turn a tree of ``outer`` structure with ``inner``-structured subtrees inside out.

    With ``inner_treedef=None`` the inner structure is that of the first subtree.

    Example:
        >>> from functorch_utils.tree_util import tree_structure, tree_transpose
        >>> outer, inner = tree_structure([0, 0]), tree_structure((0, 0))
        >>> tree_transpose(outer, inner, [(1, 2), (3, 4)])
        ([1, 3], [2, 4])
        >>> tree_transpose(outer, None, [{"a": 1}, {"a": 2}])
        {'a': [1, 2]}
    """
    call = "tree_transpose(outer_treedef, inner_treedef, pytree)"
    for name, spec in (("outer_treedef", outer_treedef), ("inner_treedef", inner_treedef)):
        if not (isinstance(spec, PyTreeSpec) or (spec is None and name == "inner_treedef")):
            raise_type(call, f"{name} is not a treedef", "a PyTreeDef", describe(spec))
    if inner_treedef is None:
        try:
            subtrees = outer_treedef.flatten_up_to(pytree)
        except (ValueError, TypeError) as e:
            raise TypeError(
                message(
                    call,
                    "structure mismatch: pytree does not have outer_treedef's structure",
                    f"{outer_treedef} at the top",
                    _structure_text(pytree),
                )
            ) from e
        inner_treedef = tree_structure(subtrees[0]) if subtrees else tree_structure(None)
    try:
        return optree.tree_transpose(outer_treedef, inner_treedef, pytree)
    except (TypeError, ValueError) as e:
        raise TypeError(
            message(
                call,
                "structure mismatch: pytree is not outer_treedef with inner_treedef at its leaves",
                f"{outer_treedef.compose(inner_treedef)}",
                _structure_text(pytree),
            )
        ) from e


def treedef_children(treedef: PyTreeSpec, /) -> list[PyTreeSpec]:
    """The treedefs of the children of the root of ``treedef``."""
    return optree.treespec_children(treedef)


def treedef_is_leaf(treedef: PyTreeSpec, /) -> bool:
    """Whether ``treedef`` is a single leaf."""
    return optree.treespec_is_leaf(treedef)


def all_leaves(iterable: Iterable[Any], /, is_leaf: Callable[[Any], bool] | None = None) -> bool:
    """Whether every element of ``iterable`` is a leaf."""
    return optree.all_leaves(iterable, is_leaf=is_leaf, **_KW)


def is_tree_node(x: Any, /) -> bool:
    """Whether ``x`` (a type, or the type of an instance) is a pytree node, not a leaf type.

    Example:
        >>> import collections, torch
        >>> from functorch_utils.tree_util import is_tree_node
        >>> is_tree_node(dict), is_tree_node(type(None)), is_tree_node(collections.namedtuple("P", "a"))
        (True, True, True)
        >>> is_tree_node(int), is_tree_node(torch.Tensor)
        (False, False)
    """
    cls = x if isinstance(x, type) else type(x)
    return optree.register_pytree_node.get(cls, namespace=NAMESPACE) is not None


def keystr(keys: Sequence[Any], /, *, simple: bool = False, separator: str = "") -> str:
    """A key path as the indexing code it stands for, or (``simple=True``) its plain keys.

    Example:
        >>> from functorch_utils.tree_util import keystr
        >>> keystr(("params", 0, "w"))
        "['params'][0]['w']"
        >>> keystr(("params", 0, "w"), simple=True, separator="/")
        'params/0/w'
    """
    if simple:
        return separator.join(str(k) for k in keys)
    return separator.join(f"[{k!r}]" for k in keys)


def treedef_tuple(treedefs: Iterable[PyTreeSpec], /) -> PyTreeSpec:
    """The treedef of a tuple whose elements have the given treedefs.

    Example:
        >>> from functorch_utils.tree_util import tree_structure, treedef_tuple
        >>> treedef_tuple([tree_structure(1), tree_structure([1, 2])])
        PyTreeSpec((*, [*, *]))
    """
    return optree.treespec_tuple(list(treedefs), **_KW)


def tree_broadcast(
    prefix_tree: Any, full_tree: Any, /, is_leaf: Callable[[Any], bool] | None = None
) -> Any:
    """Copy each leaf of ``prefix_tree`` over the subtree of ``full_tree`` at the same place.

    ``prefix_tree`` must be a prefix of ``full_tree``: otherwise ``ValueError`` with the key path
    where the structures part.

    Example:
        >>> from functorch_utils.tree_util import tree_broadcast
        >>> tree_broadcast((1, 2), (0, {"a": 0, "b": 0}))
        (1, {'a': 2, 'b': 2})
    """
    call = "tree_broadcast(prefix_tree, full_tree)"
    try:
        return optree.tree_broadcast_prefix(prefix_tree, full_tree, is_leaf=is_leaf, **_KW)
    except ValueError as e:
        raise ValueError(
            message(
                call,
                "prefix_tree is not a prefix of full_tree",
                f"a prefix of {_structure_text(full_tree)}",
                _structure_text(prefix_tree),
                "Where they part:\n" + structure_errors(prefix_tree, full_tree, "prefix_tree"),
            )
        ) from e


def tree_reduce_associative(
    operation: Callable[[Any, Any], Any],
    tree: Any,
    /,
    *,
    identity: Any = _MISSING,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Reduce the leaves with an associative ``operation``, pairwise (a balanced tree of calls).

    The result equals :func:`tree_reduce`'s for an associative operation; the depth of the calls
    is logarithmic in the number of leaves. An empty tree needs ``identity``.

    Example:
        >>> from functorch_utils.tree_util import tree_reduce_associative
        >>> tree_reduce_associative(lambda a, b: a + b, [(1, 2), [(3, 4), (5, 6)]],
        ...                         is_leaf=lambda x: isinstance(x, tuple))
        (1, 2, 3, 4, 5, 6)
    """
    call = "tree_reduce_associative(operation, tree)"
    items = _run(call, tree, lambda: optree.tree_leaves(tree, is_leaf=is_leaf, **_KW))
    if not items:
        if identity is _MISSING:
            raise_value(
                call,
                "tree has no leaves and no identity was given",
                "a tree with leaves, or identity=",
                describe(tree),
            )
        return identity
    while len(items) > 1:
        pairs = [operation(a, b) for a, b in zip(items[::2], items[1::2])]
        items = pairs + items[len(pairs) * 2 :]
    return items[0]


def flatten_one_level(tree: Any, /) -> tuple[list[Any], Any]:
    """The children of the root node of ``tree`` and its metadata (``aux_data``).

    A leaf is a ``ValueError``: it has no node to open.

    Example:
        >>> from functorch_utils.tree_util import flatten_one_level
        >>> flatten_one_level({"b": [1, 2], "a": 3})
        ([3, [1, 2]], ['a', 'b'])
    """
    try:
        children, meta, _, _ = optree.tree_flatten_one_level(tree, **_KW)
    except ValueError as e:
        raise ValueError(
            message(
                "flatten_one_level(tree)",
                "can't tree-flatten type: tree is a leaf",
                "a pytree node (a container or a registered type)",
                describe(tree),
            )
        ) from e
    return list(children), meta


class Partial(_optree_partial):
    """``functools.partial`` as a pytree: the bound arguments are children, ``func`` is static.

    A ``Partial`` can be passed to and returned from transforms; the tensors it binds are
    differentiated and mapped like any other leaves. As JAX's, it does not merge with a
    ``functools.partial`` it wraps.

    Example:
        >>> import torch
        >>> from functorch_utils import grad
        >>> from functorch_utils.tree_util import Partial, tree_leaves
        >>> scale = Partial(torch.mul, torch.tensor(3.0))
        >>> tree_leaves(scale)
        [tensor(3.)]
        >>> grad(lambda p: p(torch.tensor(2.0)))(scale).args
        (tensor(2.),)
    """


def register_static(cls: type[T], /) -> type[T]:
    """Register a class whose instances are static: no children, the whole value is metadata.

    Instances must be hashable; trees that hold equal instances have equal treedefs.

    Example:
        >>> from functorch_utils.tree_util import register_static, tree_flatten
        >>> @register_static
        ... class Mode(str):
        ...     pass
        >>> tree_flatten([Mode("train"), 1])
        ([1], PyTreeSpec([CustomTreeNode(Mode[...], []), *], namespace='functorch_utils'))
    """
    register_pytree_node(cls, lambda x: ((), x), lambda aux, _: aux)
    return cls


def register_pytree_node(
    nodetype: type[T],
    flatten_func: Callable[[T], tuple[Iterable[Any], Any]],
    unflatten_func: Callable[[Any, Iterable[Any]], T],
) -> type[T]:
    """Register a type as a pytree node, as ``jax.tree_util.register_pytree_node``.

    ``flatten_func(x)`` returns ``(children, aux_data)`` and ``unflatten_func(aux_data, children)``
    rebuilds the node; ``aux_data`` must be hashable.

    Example:
        >>> import torch
        >>> from functorch_utils import grad
        >>> from functorch_utils.tree_util import register_pytree_node
        >>> class Pair:
        ...     def __init__(self, a, b):
        ...         self.a, self.b = a, b
        >>> _ = register_pytree_node(Pair, lambda p: ((p.a, p.b), None), lambda _, c: Pair(*c))
        >>> g = grad(lambda p: p.a * p.b)(Pair(torch.tensor(2.0), torch.tensor(3.0)))
        >>> g.a, g.b
        (tensor(3.), tensor(2.))
    """
    if not isinstance(nodetype, type):
        raise_type(
            "register_pytree_node(nodetype, ...)",
            "nodetype must be a class",
            "a type",
            describe(nodetype),
        )
    call = f"register_pytree_node({nodetype.__name__}, flatten_func, unflatten_func)"

    def checked_flatten(x: Any) -> Any:
        out = flatten_func(x)
        # optree also accepts (children, aux_data, entries): let that through too
        if not (isinstance(out, tuple) and len(out) in (2, 3) and isinstance(out[0], Iterable)):
            raise_value(
                call,
                "flatten_func must return a (children, aux_data) tuple with iterable children",
                "e.g. ((x.a, x.b), None)",
                describe(out),
            )
        return out

    optree.register_pytree_node(
        nodetype,  # type: ignore[arg-type]
        checked_flatten,
        unflatten_func,  # type: ignore[arg-type]
        namespace=NAMESPACE,
    )
    return nodetype


def register_pytree_node_class(cls: type[T], /) -> type[T]:
    """Class decorator: register a class with ``tree_flatten`` / classmethod ``tree_unflatten``.

    Example:
        >>> from functorch_utils.tree_util import register_pytree_node_class, tree_leaves
        >>> @register_pytree_node_class
        ... class Box:
        ...     def __init__(self, x):
        ...         self.x = x
        ...     def tree_flatten(self):
        ...         return (self.x,), None
        ...     @classmethod
        ...     def tree_unflatten(cls, aux, children):
        ...         return cls(*children)
        >>> tree_leaves([Box(1), Box(2)])
        [1, 2]
    """
    register_pytree_node(
        cls,
        lambda x: x.tree_flatten(),  # type: ignore[attr-defined]
        cls.tree_unflatten,  # type: ignore[attr-defined]
    )
    return cls


def register_dataclass(
    nodetype: type[T],
    data_fields: Sequence[str] | None = None,
    meta_fields: Sequence[str] | None = None,
    drop_fields: Sequence[str] = (),
) -> type[T]:
    """Register a dataclass as a pytree node, as ``jax.tree_util.register_dataclass``.

    ``data_fields`` are children (differentiated, mapped); ``meta_fields`` are static and must be
    hashable. With both omitted, fields whose metadata has ``static=True`` are meta fields and the
    rest are data fields. Usable as a decorator.

    Example:
        >>> import dataclasses, torch
        >>> from functorch_utils import grad
        >>> from functorch_utils.tree_util import register_dataclass
        >>> @register_dataclass
        ... @dataclasses.dataclass
        ... class Linear:
        ...     w: torch.Tensor
        ...     name: str = dataclasses.field(default="lin", metadata=dict(static=True))
        >>> grad(lambda m: (m.w ** 2).sum())(Linear(torch.tensor([1.0, 2.0])))
        Linear(w=tensor([2., 4.]), name='lin')
    """
    if data_fields is None and meta_fields is None:
        if not dataclasses.is_dataclass(nodetype):
            raise_type(
                "register_dataclass(nodetype)",
                "data_fields and meta_fields may be omitted only for a dataclass",
                "a @dataclasses.dataclass class, or explicit data_fields and meta_fields",
                describe(nodetype),
            )
        fields = [f for f in dataclasses.fields(nodetype) if f.init]
        meta = tuple(f.name for f in fields if f.metadata.get("static", False))
        data = tuple(f.name for f in fields if not f.metadata.get("static", False))
    elif data_fields is None or meta_fields is None:
        raise_type(
            "register_dataclass(nodetype, data_fields, meta_fields)",
            "data_fields and meta_fields must be given together",
            "both sequences of field names, or neither",
            f"data_fields={data_fields!r}, meta_fields={meta_fields!r}",
        )
    else:
        data, meta = tuple(data_fields), tuple(meta_fields)
        if dataclasses.is_dataclass(nodetype):
            init = {f.name for f in dataclasses.fields(nodetype) if f.init}
            missing = init - set(data) - set(meta) - set(drop_fields)
            if missing:
                raise_value(
                    "register_dataclass(nodetype, data_fields, meta_fields)",
                    f"init fields {sorted(missing)} are in neither data_fields nor meta_fields",
                    "every init field named once",
                    f"data_fields={list(data)!r}, meta_fields={list(meta)!r}",
                    "Add them to one of the lists, or to drop_fields.",
                )
            call = "register_dataclass(nodetype, data_fields, meta_fields)"
            unexpected = (set(data) | set(meta)) - {f.name for f in dataclasses.fields(nodetype)}
            if unexpected:
                raise_value(
                    call,
                    f"fields {sorted(unexpected)} are not fields of {nodetype.__name__}",
                    "names of the dataclass's fields",
                    f"data_fields={list(data)!r}, meta_fields={list(meta)!r}",
                )
            overlap = set(data) & set(meta)
            if overlap:
                raise_value(
                    call,
                    f"fields {sorted(overlap)} are in both data_fields and meta_fields",
                    "each field in one list",
                    f"data_fields={list(data)!r}, meta_fields={list(meta)!r}",
                )

    def flatten(x: Any) -> tuple[list[Any], tuple[Any, ...], tuple[str, ...]]:
        return [getattr(x, n) for n in data], tuple(getattr(x, n) for n in meta), data

    def unflatten(aux: tuple[Any, ...], children: Iterable[Any]) -> Any:
        kwargs = dict(zip(data, children))
        kwargs.update(zip(meta, aux))
        return nodetype(**kwargs)

    optree.register_pytree_node(
        nodetype,  # type: ignore[arg-type]
        flatten,
        unflatten,  # type: ignore[arg-type]
        path_entry_type=optree.GetAttrEntry,
        namespace=NAMESPACE,
    )
    return nodetype


def _partial_flatten(p: Any) -> tuple[tuple[Any, Any], Any]:
    return (p.args, p.keywords), p.func


def _partial_unflatten(func: Any, children: Any) -> Any:
    args, keywords = children
    return Partial(func, *args, **keywords)


register_pytree_node(Partial, _partial_flatten, _partial_unflatten)
