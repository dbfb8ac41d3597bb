"""The one argnums normaliser: validated once when a transform is built, resolved per call."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from ._errors import describe, raise_type, raise_value

__all__ = [
    "check_argnames",
    "check_argnums",
    "check_names_taken",
    "optional_argnums",
    "positional_params",
    "resolve_argnums",
]


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


def optional_argnums(api: str, name: str, value: Any, *, what: str) -> tuple[int, ...]:
    """``check_argnums`` for an option that may name no argument: None, ``()`` or ``[]``."""
    if value is None or (isinstance(value, (tuple, list)) and not value):
        return ()
    return check_argnums(api, name, value, what=what)[0]


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


def check_argnames(call: str, what: str, value: Any) -> tuple[str, ...]:
    """Build-time check of argument names (``static_argnames``, ``nondiff_argnames``)."""
    if value is None:
        return ()
    items = (value,) if isinstance(value, str) else value
    if isinstance(items, Sequence):
        items = tuple(items)
        if all(isinstance(a, str) for a in items):
            return items
    raise_type(
        call,
        f"{what} must be a string or a sequence of strings",
        "e.g. 'n' or ('n', 'mode')",
        describe(value),
        f"Name the arguments by name in {what}.",
    )


def positional_params(
    fun: Callable[..., Any],
) -> tuple[list[str], bool, list[str], bool] | None:
    """(positional parameter names, has *args, keyword-only names, has **kwargs), or None."""
    try:
        sig = inspect.signature(fun)
    except (TypeError, ValueError):
        return None
    kinds = inspect.Parameter
    names = [
        p.name
        for p in sig.parameters.values()
        if p.kind in (kinds.POSITIONAL_ONLY, kinds.POSITIONAL_OR_KEYWORD)
    ]
    keywords = [p.name for p in sig.parameters.values() if p.kind is kinds.KEYWORD_ONLY]
    has_varargs = any(p.kind is kinds.VAR_POSITIONAL for p in sig.parameters.values())
    has_varkw = any(p.kind is kinds.VAR_KEYWORD for p in sig.parameters.values())
    return names, has_varargs, keywords, has_varkw


def check_names_taken(
    call: str, what: str, names: tuple[str, ...], params: tuple[list[str], bool, list[str], bool]
) -> None:
    """``names`` (``static_argnames``...) must be parameters, unless the function takes ``**kw``."""
    positional, _, keywords, has_varkw = params
    if has_varkw:
        return
    unknown = [a for a in names if a not in positional and a not in keywords]
    if unknown:
        raise_value(
            call,
            f"{what} names {unknown} which the function does not take",
            f"names among its parameters {list(positional) + list(keywords)}",
            f"{what}={names!r}",
            f"Fix the names in {what}.",
        )
