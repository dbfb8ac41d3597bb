"""``stop_gradient`` and ``checkpoint`` (alias ``remat``): gradient control and memory."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import torch
import torch.func

from . import _pytree
from ._custom import _bind, _Flat, _refuse_nested_forward
from ._errors import check_callable, fun_name

__all__ = ["checkpoint", "remat", "stop_gradient"]


# ---------------------------------------------------------------------------------------------
# stop_gradient


def stop_gradient(tree: Any, /) -> Any:
    """The same values with a zero derivative, in both modes and at every order (JAX's).

    Unlike ``torch.no_grad()`` inside a function (which forward mode ignores; pytorch/pytorch#128600),
    every leaf is detached from every active transform.

    Example:
        >>> import torch
        >>> from functorch_utils import grad, jvp, stop_gradient
        >>> f = lambda x: stop_gradient(x) * x
        >>> grad(f)(torch.tensor(3.0)), jvp(f, (torch.tensor(3.0),), (torch.tensor(1.0),))[1]
        (tensor(3.), tensor(3.))
    """
    leaves, spec = _pytree.flatten(tree)
    return _pytree.unflatten(
        spec, [x.detach() if isinstance(x, torch.Tensor) else x for x in leaves]
    )


# ---------------------------------------------------------------------------------------------
# checkpoint


class _CkptMeta:
    """Not a pytree (torch's vmap rule would copy a tuple or list and lose the output spec)."""

    __slots__ = ("fun", "rebuild", "spec")

    def __init__(self, fun: Callable[..., Any], rebuild: Callable[..., tuple[Any, ...]]) -> None:
        self.fun, self.rebuild = fun, rebuild
        self.spec: Any = None

    def flat(self, *p: torch.Tensor) -> tuple[torch.Tensor, ...]:
        leaves, self.spec = _pytree.flatten(self.fun(*self.rebuild(p)))
        return tuple(leaves)


class _CheckpointFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(meta: _CkptMeta, *tensors: torch.Tensor) -> Any:
        return meta.flat(*tensors)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.meta = inputs[0]
        # Only the inputs are kept: the forward pass is recomputed in the backward pass.
        ctx.save_for_backward(*inputs[1:])
        ctx.save_for_forward(*inputs[1:])

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        _refuse_nested_forward(f"checkpoint({fun_name(ctx.meta.fun)})")
        primals = ctx.saved_tensors
        tans = tuple(torch.zeros_like(p) if t is None else t for p, t in zip(primals, tangents[1:]))
        return torch.func.jvp(ctx.meta.flat, primals, tans)[1]

    @staticmethod
    def backward(ctx: Any, *cts: torch.Tensor) -> Any:
        primals = ctx.saved_tensors
        res = torch.func.vjp(ctx.meta.flat, *primals)
        outs, pull = res[0], res[1]
        cts_full = tuple(torch.zeros_like(o) if c is None else c for o, c in zip(outs, cts))
        return (None, *pull(cts_full))


def checkpoint(fun: Callable[..., Any]) -> Callable[..., Any]:
    """Recompute ``fun``'s forward pass in the backward pass instead of storing it (``jax.checkpoint``).

    Same values and derivatives as ``fun``; only the inputs are saved for the backward pass. Works
    inside ``grad``, ``vmap``, ``jacrev``, ``jacfwd`` and ``hessian`` (``torch.utils.checkpoint``
    does not work inside torch.func transforms). Alias: ``remat``.

    Example:
        >>> import torch
        >>> from functorch_utils import checkpoint, grad
        >>> block = checkpoint(lambda x: torch.sin(x) * x)
        >>> grad(lambda x: block(x).sum())(torch.tensor([0.0, 1.0]))
        tensor([0.0000, 1.3818])
    """
    check_callable("checkpoint", fun)

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        args = _bind(fun, args, kwargs)
        flat = _Flat(args, range(len(args)))
        meta = _CkptMeta(fun, lambda tensors: flat.rebuild(args, tensors))
        new = _CheckpointFunction.apply(meta, *flat.tensors)
        return _pytree.unflatten(meta.spec, list(new))

    return wrapped


remat = checkpoint
