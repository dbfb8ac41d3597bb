"""``value_and_grad`` is the core of this family; ``grad`` is it without the value."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, overload

import torch

from . import _engine
from ._argnums import check_argnums, resolve_argnums
from ._errors import check_bool, check_callable, describe, fun_name, raise_type

__all__ = ["grad", "value_and_grad"]


@overload
def value_and_grad(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: Literal[False] = False,
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable[..., tuple[Any, Any]]: ...


@overload
def value_and_grad(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    *,
    has_aux: Literal[True],
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable[..., tuple[tuple[Any, Any], Any]]: ...


@overload
def value_and_grad(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int],
    has_aux: Literal[True],
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable[..., tuple[tuple[Any, Any], Any]]: ...


@overload
def value_and_grad(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable[..., Any]: ...


def value_and_grad(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable[..., Any]:
    """Create a function that evaluates ``fun`` and its gradient, as ``jax.value_and_grad``.

    Args:
        fun: Function to differentiate. Its positional arguments named by ``argnums`` are pytrees
            of floating/complex tensors (or Python floats); it returns a scalar tensor (or, with
            ``has_aux``, a pair ``(scalar, aux)``).
        argnums: An int or a tuple/list of ints naming the positional arguments to differentiate.
            Negative values count from the end.
        has_aux: ``fun`` returns ``(value, aux)``; ``aux`` is returned unchanged (its tensors carry
            no derivative).
        holomorphic: ``fun`` is holomorphic: inputs and output are complex and the gradient is
            ``f'(z)`` (JAX's convention).
        allow_int: Integer/bool leaves in differentiated arguments get a ``None`` gradient instead
            of raising ``TypeError``.

    Returns:
        A function with ``fun``'s signature returning ``(value, grads)``, or
        ``((value, aux), grads)`` with ``has_aux`` (JAX's order). ``grads`` has the structure of the
        argument if ``argnums`` is an int, else a tuple with one entry per argnum.

    Example:
        >>> import torch
        >>> from functorch_utils import value_and_grad
        >>> params = {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.5)}
        >>> def loss(p, x):
        ...     return ((x @ p["w"] + p["b"]) ** 2).mean()
        >>> x = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
        >>> value, grads = value_and_grad(loss)(params, x)
        >>> value
        tensor(4.2500)
        >>> grads["w"], grads["b"]
        (tensor([1.5000, 2.5000]), tensor(4.))
    """
    check_callable("value_and_grad", fun)
    return _make(fun, argnums, has_aux, holomorphic, allow_int, "value_and_grad", with_value=True)


@overload
def grad(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: Literal[False] = False,
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable[..., Any]: ...


@overload
def grad(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    *,
    has_aux: Literal[True],
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable[..., tuple[Any, Any]]: ...


@overload
def grad(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int],
    has_aux: Literal[True],
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable[..., tuple[Any, Any]]: ...


@overload
def grad(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable[..., Any]: ...


def grad(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
) -> Callable[..., Any]:
    """Create a function that evaluates the gradient of ``fun``, as ``jax.grad``.

    Arguments as :func:`value_and_grad`. The returned function gives ``grads`` (or
    ``(grads, aux)`` with ``has_aux``).

    Example:
        >>> import torch
        >>> from functorch_utils import grad
        >>> grad(lambda x: (x ** 3).sum())(torch.tensor([1.0, 2.0]))
        tensor([ 3., 12.])
        >>> grad(grad(lambda x: x ** 3))(2.0)  # second derivative, Python float input
        tensor(12.)
        >>> grad(lambda z: (z * z.conj()).real, holomorphic=False)(torch.tensor(3 + 4j))
        tensor(6.-8.j)
    """
    check_callable("grad", fun)
    return _make(fun, argnums, has_aux, holomorphic, allow_int, "grad", with_value=False)


def _make(
    fun: Callable[..., Any],
    argnums: Any,
    has_aux: bool,
    holomorphic: bool,
    allow_int: bool,
    api: str,
    with_value: bool,
) -> Callable[..., Any]:
    name = fun_name(fun)
    argnums_t, single = check_argnums(api, name, argnums)
    check_bool(api, fun, "has_aux", has_aux)
    check_bool(api, fun, "holomorphic", holomorphic)
    check_bool(api, fun, "allow_int", allow_int)
    call = f"{api}({name})"

    @functools.wraps(fun)
    def transformed(*args: Any, **kwargs: Any) -> Any:
        idx = resolve_argnums(call, argnums_t, len(args))
        inputs = _engine.prepare_inputs(
            call, args, idx, allow_int=allow_int, holomorphic=holomorphic
        )

        def flat(*primals: torch.Tensor) -> tuple[tuple[torch.Tensor], Any]:
            res = fun(*inputs.rebuild(primals), **kwargs)
            out, aux = _engine.split_aux(call, res, has_aux)
            return (_check_scalar(call, out, holomorphic),), aux

        rev = _engine.reverse(call, flat, inputs.primals, has_aux=has_aux, gradient=not holomorphic)
        (value,) = rev.outs
        grads = inputs.unflatten(rev.pull((torch.ones_like(value),), keep=False), single)
        if with_value:
            return ((value, rev.aux), grads) if has_aux else (value, grads)
        return (grads, rev.aux) if has_aux else grads

    return transformed


def _check_scalar(call: str, out: Any, holomorphic: bool) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        if isinstance(out, (float, int, complex)) and not isinstance(out, bool):
            out = torch.as_tensor(out)
        else:
            raise_type(
                call,
                "the function must return a scalar tensor",
                "a tensor of shape ()",
                describe(out),
                "Reduce the output (e.g. .sum() or .mean()), or use jacrev/vjp for non-scalar "
                "outputs; with has_aux=True return (scalar, aux).",
            )
    if out.dim() != 0:
        raise_type(
            call,
            "gradient is only defined for scalar-output functions",
            "an output of shape ()",
            f"output of shape {tuple(out.shape)}",
            "Reduce the output (e.g. .sum()), or use jacrev/vjp for non-scalar outputs.",
        )
    if holomorphic:
        if not out.is_complex():
            raise_type(
                call,
                "holomorphic=True requires a complex output",
                "a complex scalar",
                describe(out),
                "Drop holomorphic=True for a real-valued function.",
            )
    elif not out.is_floating_point():
        if out.is_complex():
            raise_type(
                call,
                "the output is complex, so its gradient is not defined without holomorphic=True",
                "a real floating-point scalar",
                describe(out),
                "Pass holomorphic=True for a holomorphic function, or use vjp directly for a "
                "non-holomorphic function with complex outputs.",
            )
        raise_type(
            call,
            "the output has an integer or boolean dtype, which has no derivative",
            "a real floating-point scalar",
            describe(out),
            "Compute the output in a floating dtype.",
        )
    return out
