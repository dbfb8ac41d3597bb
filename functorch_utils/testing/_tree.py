"""Small pytree helpers for the testing package (optree, namespace ``functorch_utils``).

The testing package uses only the public API of :mod:`functorch_utils`; the handful of pytree
operations it needs are written here against optree directly, with the library's conventions
(``None`` is an empty subtree, the ``functorch_utils`` registry namespace).
"""

from __future__ import annotations

from typing import Any

import optree
import torch

__all__ = ["NAMESPACE", "flatten", "leaf_paths", "structure_errors", "is_float_like"]

NAMESPACE = "functorch_utils"


def flatten(tree: Any) -> tuple[list[Any], optree.PyTreeSpec]:
    """Leaves and structure of ``tree``, ``None`` being an empty subtree."""
    return optree.tree_flatten(tree, none_is_leaf=False, namespace=NAMESPACE)


def leaf_paths(tree: Any, root: str) -> list[str]:
    """Key paths of the leaves of ``tree`` as code a user would write (``args[0]['w']``)."""
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
    """A leaf that is differentiated: a floating or complex tensor, or a Python float/complex."""
    if isinstance(x, torch.Tensor):
        return x.is_floating_point() or x.is_complex()
    return isinstance(x, (float, complex))
