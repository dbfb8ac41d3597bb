"""The optree bridge: flatten user pytrees to leaves, classify them, rebuild structures.

# NOTE [pytrees and torch.func]
# torch.func only understands torch's private pytree registry. Every transform here flattens the
# user's arguments with optree (namespace ``functorch_utils``, which also sees optree's global
# registry), hands torch.func a flat tuple of tensors, and rebuilds the user's structures on the
# way out. ``None`` is an empty subtree, as in JAX.
"""

from __future__ import annotations

from typing import Any

import optree
import torch

__all__ = [
    "NAMESPACE",
    "flatten",
    "unflatten",
    "leaf_names",
    "structure_errors",
    "is_float_like",
    "is_tensor",
    "Partition",
    "partition",
    "Stash",
]

NAMESPACE = "functorch_utils"


def flatten(tree: Any) -> tuple[list[Any], optree.PyTreeSpec]:
    return optree.tree_flatten(tree, none_is_leaf=False, namespace=NAMESPACE)


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
