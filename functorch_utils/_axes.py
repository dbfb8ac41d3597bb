"""The named-axis environment: which axis names are bound while a mapped body runs.

It sits below both the transforms that bind names (``vmap`` and ``distributed.pmap``) and the
collectives that read them (``_collectives.py``), so neither imports the other.

"""

from __future__ import annotations

import threading
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, NamedTuple

import torch

from ._errors import describe, message, raise_type, raise_value

__all__ = [
    "Axis",
    "UnboundAxisNameError",
    "any_bound",
    "bind",
    "bound",
    "check_name",
    "lookup",
    "lookup_all",
]


class UnboundAxisNameError(NameError):
    """A collective named an axis that no enclosing ``vmap(..., axis_name=...)`` (or
    ``distributed.pmap``) binds.

    A ``NameError``, as JAX's ``unbound axis name`` error is.

    Example:
        >>> import torch
        >>> from functorch_utils import psum
        >>> try:
        ...     psum(torch.ones(2), "i")
        ... except NameError as e:
        ...     print(type(e).__name__)
        UnboundAxisNameError
    """


# Each vmap(..., axis_name=...) binds an Axis while its body runs; see NOTE [named axes and
# collectives] in _collectives.py for how the token finds its torch.func level. distributed.pmap
# binds one too, with ``process`` set: see NOTE [pmap: named axes across processes] in
# _distributed.py.
class Axis(NamedTuple):
    """One bound axis name: its size and the token that marks its ``torch.func`` level.

    For an axis bound by ``distributed.pmap``, ``process`` describes the process group (and
    ``token`` is this process's rank, a plain 0-d tensor); for a ``vmap`` axis it is ``None``.
    """

    name: Hashable
    size: int
    token: torch.Tensor  # arange(size), batched at this axis's torch.func level only
    process: Any = None  # _distributed.ProcessAxis when pmap bound the name


class _AxisEnv(threading.local):
    def __init__(self) -> None:
        self.stack: list[Axis] = []


# The one environment: per thread, innermost binding last.
_ENV = _AxisEnv()


@contextmanager
def bind(axis: Axis) -> Iterator[None]:
    """Bind ``axis.name`` for the body of the ``with`` block (the innermost binding wins)."""
    stack = _ENV.stack
    stack.append(axis)
    try:
        yield
    finally:
        stack.pop()


def any_bound() -> bool:
    """Whether any axis name is bound on this thread (a named ``vmap`` or ``pmap`` is active)."""
    return bool(_ENV.stack)


def bound() -> tuple[Axis, ...]:
    """The axes bound in this thread now, outermost first (empty outside every named vmap).

    For transforms whose answer depends on whether collectives may be in play (a Hessian inside
    a named vmap is only JAX's as forward-over-reverse), and for code that re-runs a body later
    and must bind the same names again.
    """
    return tuple(_ENV.stack)


def _is_array(x: Any) -> bool:
    return isinstance(x, torch.Tensor) or hasattr(x, "__array__") or hasattr(x, "__dlpack__")


def check_name(call: str, name: Any, what: str = "axis_name") -> None:
    """A ``TypeError`` unless ``name`` can name an axis: hashable, and not a tensor or an array.

    Tensors hash by identity and arrays compare elementwise, so neither can be looked up by value.
    """
    if _is_array(name):
        raise_type(
            call,
            f"{what} is a tensor or an array, which cannot name an axis",
            "a hashable name such as 'i'",
            describe(name),
            "Give the axis a string (or another hashable value) as its name.",
        )
    try:
        hash(name)
    except TypeError:
        raise_type(call, f"{what} is not hashable", "a hashable name such as 'i'", describe(name))


def _names_text(names: Sequence[Hashable]) -> str:
    return ", ".join(repr(n) for n in names) if names else "none"


def lookup(call: str, name: Any) -> Axis:
    """The innermost bound axis called ``name``, or :class:`UnboundAxisNameError`."""
    check_name(call, name)
    for axis in reversed(_ENV.stack):
        if axis.name == name:
            return axis
    bound = [a.name for a in reversed(_ENV.stack)]
    raise UnboundAxisNameError(
        message(
            call,
            f"unbound axis name {name!r}",
            f"a name bound by an enclosing vmap(..., axis_name=...) (bound here: "
            f"{_names_text(bound)})",
            repr(name),
            f"Call it inside vmap(f, axis_name={name!r}), or use one of the bound names. Across "
            f"processes, functorch_utils.distributed.pmap(f, axis_name={name!r}) binds it.",
        )
    )


def lookup_all(call: str, axis_name: Any) -> list[Axis]:
    """The bound axes an ``axis_name`` argument (a name or a tuple of names) refers to."""
    names = axis_name if isinstance(axis_name, tuple) else (axis_name,)
    if not names:
        raise_value(call, "axis_name is empty", "a name or a non-empty tuple of names", "()")
    axes = [lookup(call, n) for n in names]
    if len({id(a) for a in axes}) != len(axes):
        raise_value(
            call, "axis_name repeats an axis", "distinct names", repr(axis_name), "Name each once."
        )
    return axes
