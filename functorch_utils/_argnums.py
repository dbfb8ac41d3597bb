"""The one argnums normaliser: validated once when a transform is built, resolved per call."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ._errors import describe, raise_type

__all__ = ["check_argnums", "resolve_argnums"]


def check_argnums(
    api: str, name: str, argnums: Any, *, what: str = "argnums"
) -> tuple[tuple[int, ...], bool]:
    """Build-time check. Returns the argnums as a tuple and whether an int was given.

    ``what`` names the parameter in messages (``argnums``, ``nondiff_argnums``).
    """
    if isinstance(argnums, int) and not isinstance(argnums, bool):
        return (argnums,), True
    if isinstance(argnums, Sequence) and not isinstance(argnums, str):
        items = tuple(argnums)
        if items and all(isinstance(a, int) and not isinstance(a, bool) for a in items):
            return items, False
    raise_type(
        f"{api}({name}, {what}={argnums!r})",
        f"{what} must be an int or a non-empty tuple or list of ints",
        "e.g. 0, -1 or (0, 2)",
        describe(argnums),
        "Name the positional arguments to differentiate by their index."
        if what == "argnums"
        else f"Name the positional arguments for {what} by their index.",
    )


def resolve_argnums(
    call: str, argnums: tuple[int, ...], nargs: int, *, what: str = "argnums"
) -> tuple[int, ...]:
    """Call-time: turn negative indices into positions and check they are in range."""
    out = []
    for a in argnums:
        pos = a + nargs if a < 0 else a
        if not 0 <= pos < nargs:
            raise_type(
                call,
                f"{what}={a} is out of range for a call with {nargs} positional argument"
                f"{'' if nargs == 1 else 's'}",
                f"an index in [{-nargs}, {nargs})" if nargs else "at least one positional argument",
                f"{what}={a}",
                "Pass the arguments to differentiate positionally, not as keywords, or fix argnums."
                if what == "argnums"
                else f"Pass the arguments positionally, not as keywords, or fix {what}.",
            )
        out.append(pos)
    return tuple(out)
