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
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import optree
from optree import PyTreeSpec

from ._errors import describe, raise_type, raise_value
from ._pytree import NAMESPACE

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
    "treedef_children",
    "treedef_is_leaf",
    "all_leaves",
    "keystr",
    "register_pytree_node",
    "register_pytree_node_class",
    "register_dataclass",
]

T = TypeVar("T")
PyTreeDef = PyTreeSpec
_KW: dict[str, Any] = {"none_is_leaf": False, "namespace": NAMESPACE}


def tree_map(
    f: Callable[..., Any],
    tree: Any,
    /,
    *rest: Any,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Map ``f`` over the leaves of ``tree`` (and the matching leaves of ``rest``).

    Example:
        >>> from functorch_utils.tree_util import tree_map
        >>> tree_map(lambda a, b: a + b, {"x": 1, "y": (2, None)}, {"x": 10, "y": (20, None)})
        {'x': 11, 'y': (22, None)}
    """
    return optree.tree_map(f, tree, *rest, is_leaf=is_leaf, **_KW)


def tree_map_with_path(
    f: Callable[..., Any],
    tree: Any,
    /,
    *rest: Any,
    is_leaf: Callable[[Any], bool] | None = None,
) -> Any:
    """Like :func:`tree_map`, with the key path (a tuple of keys) as ``f``'s first argument.

    Example:
        >>> from functorch_utils.tree_util import tree_map_with_path, keystr
        >>> tree_map_with_path(lambda p, x: keystr(p), {"a": [1, 2]})
        {'a': ["['a'][0]", "['a'][1]"]}
    """
    return optree.tree_map_with_path(f, tree, *rest, is_leaf=is_leaf, **_KW)


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
    return optree.tree_flatten(tree, is_leaf=is_leaf, **_KW)


def tree_flatten_with_path(
    tree: Any, /, is_leaf: Callable[[Any], bool] | None = None
) -> tuple[list[tuple[tuple[Any, ...], Any]], PyTreeSpec]:
    """Flatten ``tree`` into ``(key_path, leaf)`` pairs and a treedef.

    Example:
        >>> from functorch_utils.tree_util import tree_flatten_with_path
        >>> tree_flatten_with_path({"a": (1, 2)})[0]
        [(('a', 0), 1), (('a', 1), 2)]
    """
    paths, leaves, spec = optree.tree_flatten_with_path(tree, is_leaf=is_leaf, **_KW)
    return list(zip(paths, leaves)), spec


def tree_leaves_with_path(
    tree: Any, /, is_leaf: Callable[[Any], bool] | None = None
) -> list[tuple[tuple[Any, ...], Any]]:
    """The ``(key_path, leaf)`` pairs of ``tree``.

    Example:
        >>> from functorch_utils.tree_util import tree_leaves_with_path
        >>> tree_leaves_with_path([1, {"x": 2}])
        [((0,), 1), ((1, 'x'), 2)]
    """
    return tree_flatten_with_path(tree, is_leaf)[0]


def tree_unflatten(treedef: PyTreeSpec, leaves: Iterable[Any], /) -> Any:
    """Rebuild a tree from a treedef and leaves (see :func:`tree_flatten`)."""
    return optree.tree_unflatten(treedef, leaves)


def tree_leaves(tree: Any, /, is_leaf: Callable[[Any], bool] | None = None) -> list[Any]:
    """The leaves of ``tree`` in flattening order.

    Example:
        >>> from functorch_utils.tree_util import tree_leaves
        >>> tree_leaves({"b": [3, None], "a": 1})
        [1, 3]
    """
    return optree.tree_leaves(tree, is_leaf=is_leaf, **_KW)


def tree_structure(tree: Any, /, is_leaf: Callable[[Any], bool] | None = None) -> PyTreeSpec:
    """The treedef of ``tree``.

    Example:
        >>> from functorch_utils.tree_util import tree_structure
        >>> tree_structure((1, {"a": None}))
        PyTreeSpec((*, {'a': None}))
    """
    return optree.tree_structure(tree, is_leaf=is_leaf, **_KW)


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
    if initializer is _MISSING:
        return optree.tree_reduce(function, tree, is_leaf=is_leaf, **_KW)
    return optree.tree_reduce(function, tree, initializer, is_leaf=is_leaf, **_KW)


def tree_all(tree: Any, /, is_leaf: Callable[[Any], bool] | None = None) -> bool:
    """Whether every leaf of ``tree`` is truthy.

    Example:
        >>> from functorch_utils.tree_util import tree_all
        >>> tree_all({"a": True, "b": [1, 2]}), tree_all([True, 0])
        (True, False)
    """
    return all(tree_leaves(tree, is_leaf))


def tree_transpose(outer_treedef: PyTreeSpec, inner_treedef: PyTreeSpec, pytree: Any, /) -> Any:
    """Turn a tree of ``outer`` structure with ``inner``-structured subtrees inside out.

    Example:
        >>> from functorch_utils.tree_util import tree_structure, tree_transpose
        >>> outer, inner = tree_structure([0, 0]), tree_structure((0, 0))
        >>> tree_transpose(outer, inner, [(1, 2), (3, 4)])
        ([1, 3], [2, 4])
    """
    return optree.tree_transpose(outer_treedef, inner_treedef, pytree)


def treedef_children(treedef: PyTreeSpec, /) -> list[PyTreeSpec]:
    """The treedefs of the children of the root of ``treedef``."""
    return optree.treespec_children(treedef)


def treedef_is_leaf(treedef: PyTreeSpec, /) -> bool:
    """Whether ``treedef`` is a single leaf."""
    return optree.treespec_is_leaf(treedef)


def all_leaves(iterable: Iterable[Any], /, is_leaf: Callable[[Any], bool] | None = None) -> bool:
    """Whether every element of ``iterable`` is a leaf."""
    return optree.all_leaves(iterable, is_leaf=is_leaf, **_KW)


def keystr(keys: Sequence[Any], /) -> str:
    """A key path as the indexing code it stands for.

    Example:
        >>> from functorch_utils.tree_util import keystr
        >>> keystr(("params", 0, "w"))
        "['params'][0]['w']"
    """
    return "".join(f"[{k!r}]" for k in keys)


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
    optree.register_pytree_node(
        nodetype,  # type: ignore[arg-type]
        flatten_func,  # type: ignore[arg-type]
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
        raise_value(
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
