"""The optree bridge: flatten user pytrees to leaves, classify them, rebuild structures."""

from __future__ import annotations

from typing import Any

import optree
import torch

__all__ = [
    "NAMESPACE",
    "flatten",
    "unflatten",
    "tree_map",
    "leaf_names",
    "structure_errors",
    "is_float_like",
    "is_tensor",
    "Partition",
    "partition",
    "Stash",
]

NAMESPACE = "functorch_utils"


# NOTE [pytrees and torch.func]
# torch.func only understands torch's private pytree registry. Every transform here flattens the
# user's arguments with optree (namespace ``functorch_utils``, which also sees optree's global
# registry), hands torch.func a flat tuple of tensors, and rebuilds the user's structures on the
# way out. ``None`` is an empty subtree, as in JAX.


def flatten(
    tree: Any, *, call: str = "tree_flatten(tree)", root: str = "tree"
) -> tuple[list[Any], optree.PyTreeSpec]:
    """optree's flatten; a tree that holds itself is a ``ValueError`` naming where, not a crash.

    ``call`` and ``root`` only shape that error (the API call, and the name the key path starts
    from).
    """
    try:
        return optree.tree_flatten(tree, none_is_leaf=False, namespace=NAMESPACE)
    except RecursionError:
        pass  # leave the except block: the deep recursion is noise in the traceback
    # Error path only. An iterative walk finds the first node that is its own ancestor. Nodes
    # already explored are skipped (shared subtrees are not cycles); optree's nesting limit bounds
    # the depth, so custom nodes that build fresh children forever end as "too deep".
    import reprlib
    import sys

    from ._errors import raise_value

    limit = 2 * sys.getrecursionlimit()
    deepest = 0
    done: dict[int, Any] = {}  # holds the nodes too, so that their ids stay unique
    path: list[tuple[Any, str, Any]] = [(tree, root, None)]
    while path:
        node, where, children = path[-1]
        if children is None:
            seen = [False]  # is_leaf is asked about ``node`` first: expand it, stop below it

            def below(x: Any, seen: list[bool] = seen) -> bool:
                first = not seen[0]
                seen[0] = True
                return not first

            accessors, kids, spec = optree.tree_flatten_with_accessor(
                node, is_leaf=below, none_is_leaf=False, namespace=NAMESPACE
            )
            children = iter([] if spec.is_leaf() else list(zip(accessors, kids)))
            path[-1] = (node, where, children)
        step = next(children, None)
        if step is None:
            done[id(node)] = node
            path.pop()
            continue
        accessor, child = step
        child_where = accessor.codify(where)
        ancestor = next((w for n, w, _ in path if n is child), None)
        if ancestor is not None:
            raise_value(
                call,
                f"the pytree is cyclic: {child_where} is {ancestor} itself",
                "a tree whose containers do not hold themselves",
                f"{type(tree).__name__} {reprlib.repr(tree)}",
                "Break the cycle, e.g. put a copy of the inner container in the tree.",
            )
        if id(child) not in done:
            deepest = max(deepest, len(path))
            if len(path) > limit:
                break
            path.append((child, child_where, None))
    raise_value(
        call,
        "the pytree is nested too deeply to flatten",
        f"fewer than about {sys.getrecursionlimit()} levels of containers",
        f"a {type(tree).__name__} with containers nested at least {deepest} levels deep",
        "Flatten the structure, or keep deep data in one leaf (a tensor or a list in a leaf type).",
    )


def tree_map(fn: Any, tree: Any) -> Any:
    return optree.tree_map(fn, tree, none_is_leaf=False, namespace=NAMESPACE)


def unflatten(spec: optree.PyTreeSpec, leaves: Any) -> Any:
    return optree.tree_unflatten(spec, leaves)


def leaf_names(tree: Any, root: str) -> list[str]:
    """Key paths of the leaves of ``tree`` as code a user would write (``root['w'][0].a``).

    Only called on error paths: it flattens a second time.
    """
    accessors, _, _ = optree.tree_flatten_with_accessor(
        tree, none_is_leaf=False, namespace=NAMESPACE
    )
    return [a.codify(root) for a in accessors]


def structure_errors(expected: Any, got: Any, name: str) -> str:
    """optree's key-path explanation of why ``got`` does not have ``expected``'s structure."""
    errors = optree.prefix_errors(expected, got, none_is_leaf=False, namespace=NAMESPACE)
    if errors:
        return "\n".join(str(e(name)) for e in errors[:3])
    spec_e = optree.tree_structure(expected, none_is_leaf=False, namespace=NAMESPACE)
    spec_g = optree.tree_structure(got, none_is_leaf=False, namespace=NAMESPACE)
    return f"expected structure {spec_e}, got {spec_g}"


def is_float_like(x: Any) -> bool:
    """A leaf that can be differentiated: a floating or complex tensor, or a Python float/complex."""
    if isinstance(x, torch.Tensor):
        return x.is_floating_point() or x.is_complex()
    return isinstance(x, (float, complex))


# ---------------------------------------------------------------------------------------------
# One partition/combine pair: pick out some leaves of a tree, then put new values in their place.


class Partition:
    """Where the picked leaves of a flattened tree sit, and the other leaves as they were.

    Built by :func:`partition`; :meth:`combine` puts new values in the picked places. Every
    "differentiate these leaves, keep the rest" step in the package goes through this pair.
    """

    __slots__ = ("leaves", "picked", "spec")

    def __init__(self, spec: optree.PyTreeSpec | None, leaves: list[Any], picked: list[int]):
        self.spec = spec  # None: the tree was a bare tensor (a fast path: no optree call)
        self.leaves = leaves
        self.picked = picked  # indices into ``leaves`` of the picked leaves, in order

    def combine(self, values: Any) -> Any:
        """The tree with its picked leaves replaced by ``values`` (one per picked leaf)."""
        if self.spec is None:
            return values[0] if self.picked else self.leaves[0]
        new = list(self.leaves)
        for i, v in zip(self.picked, values):
            new[i] = v
        return optree.tree_unflatten(self.spec, new)

    def fill(self, values: Any, rest: Any = None) -> Any:
        """The tree with ``values`` at the picked leaves and ``rest`` at every other leaf."""
        if self.spec is None:
            return values[0] if self.picked else rest
        new = [rest] * len(self.leaves)
        for i, v in zip(self.picked, values):
            new[i] = v
        return optree.tree_unflatten(self.spec, new)


def partition(tree: Any, pick: Any) -> tuple[list[Any], Partition]:
    """The leaves of ``tree`` for which ``pick(leaf)`` is true, and how to put values back.

    >>> import torch
    >>> picked, part = partition({"w": torch.tensor(1.0), "n": 3}, is_float_like)
    >>> part.combine([torch.tensor(2.0)])
    {'w': tensor(2.), 'n': 3}
    """
    if type(tree) is torch.Tensor:
        return (
            ([tree], Partition(None, [tree], [0]))
            if pick(tree)
            else ([], Partition(None, [tree], []))
        )
    leaves, spec = flatten(tree)
    idx = [i for i, x in enumerate(leaves) if pick(x)]
    return [leaves[i] for i in idx], Partition(spec, leaves, idx)


def is_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor)


# ---------------------------------------------------------------------------------------------
# One side channel: the non-tensor part of a pytree travels past torch.func beside it.


class Stash:
    """Carries the structure and non-tensor leaves of a tree past torch.func.

    torch.func passes only tensors through a transformed function's outputs. :meth:`put` splits
    a tree into its tensor leaves (returned, for torch.func) and the rest (kept here);
    :meth:`get` rebuilds the tree from the tensors torch.func hands back.

    The rule: the function may run any number of times (chunked Jacobians run it once per chunk,
    a custom rule may re-run it), and every run must give the same structure and the same
    non-tensor leaves; the last run's are kept. ``get`` before any ``put`` is a bug in the caller.
    """

    __slots__ = ("part",)

    def __init__(self) -> None:
        self.part: Partition | None = None

    def put(self, tree: Any) -> tuple[torch.Tensor, ...]:
        tensors, self.part = partition(tree, is_tensor)
        return tuple(tensors)

    def get(self, tensors: Any) -> Any:
        assert self.part is not None, "Stash.get before Stash.put"
        return self.part.combine(list(tensors))
