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
