"""Message builders: every user-facing error has the same shape.

``<api call shape>: <what is wrong>; expected X, got <value>. <how to fix it>``

Nothing here knows about transforms; transforms pass in the call shape they want shown.
"""

from __future__ import annotations

from typing import Any, NoReturn

import torch

__all__ = [
    "describe",
    "fun_name",
    "message",
    "raise_type",
    "raise_value",
    "TangentMismatchError",
]


class TangentMismatchError(ValueError, TypeError):
    """A tangent or cotangent whose dtype does not match its primal.

    The contract files this under ``ValueError`` (a wrong value); JAX raises ``TypeError`` for the
    same mistake. The class is both, so code written for either catches it.
    """


def fun_name(fun: Any) -> str:
    """A short name for a user function, for error messages."""
    name = getattr(fun, "__name__", None)
    if name is None:
        inner = getattr(fun, "func", None)  # functools.partial
        if inner is not None:
            return f"partial({fun_name(inner)})"
        return type(fun).__name__
    return str(name)


def describe(value: Any) -> str:
    """What came, in a few words: tensors by dtype and shape, other values by type and repr."""
    if isinstance(value, torch.Tensor):
        return f"a tensor of dtype {value.dtype} and shape {tuple(value.shape)}"
    text = repr(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return f"{type(value).__name__} {text}"


def message(call: str, what: str, expected: str, got: str, fix: str = "") -> str:
    text = f"{call}: {what}; expected {expected}, got {got}."
    if fix:
        text += f" {fix}"
    return text


def raise_type(call: str, what: str, expected: str, got: str, fix: str = "") -> NoReturn:
    raise TypeError(message(call, what, expected, got, fix))


def raise_value(call: str, what: str, expected: str, got: str, fix: str = "") -> NoReturn:
    raise ValueError(message(call, what, expected, got, fix))


def check_callable(api: str, fun: Any) -> None:
    """Build-time check shared by every transform."""
    if not callable(fun):
        raise_type(
            f"{api}(fun)",
            "fun is not callable",
            "a function",
            describe(fun),
            f"Pass the function itself, e.g. {api}(f), not the result of calling it.",
        )


def check_bool(api: str, fun: Any, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise_type(
            f"{api}({fun_name(fun)}, {name}={value!r})",
            f"{name} must be a bool",
            "True or False",
            describe(value),
        )
