"""``jacrev``, ``jacfwd``, ``jacobian`` and ``hessian``.

Every Jacobian is a pytree shaped like the output whose leaves are pytrees shaped like the
differentiated argument(s) (a tuple of them when ``argnums`` is a sequence); each leaf has shape
``out.shape + in.shape``, as in JAX.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import torch
import torch.func

from . import _axes, _engine, _pytree
from . import _torch_hooks as hooks
from ._argnums import check_argnums, resolve_argnums
from ._errors import (
    check_bool,
    check_callable,
    describe,
    fun_name,
    message,
    raise_type,
    raise_value,
)
from ._grad import grad
from ._jvp_vjp import FlatFun, check_primals_tangents, vjp

__all__ = ["hessian", "hvp", "jacfwd", "jacobian", "jacrev"]


def _check_chunk_size(api: str, fun: Any, chunk_size: Any) -> None:
    if chunk_size is None:
        return
    if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
        raise_value(
            f"{api}({fun_name(fun)}, chunk_size={chunk_size!r})",
            "chunk_size must be a positive int or None",
            "e.g. chunk_size=64",
            describe(chunk_size),
        )


def _out_check(call: str, outs: Sequence[torch.Tensor], holomorphic: bool, api: str) -> None:
    for o in outs:
        if holomorphic and not o.is_complex():
            raise_type(
                call,
                "holomorphic=True requires complex outputs",
                "complex outputs",
                describe(o),
                "Drop holomorphic=True for a real-valued function.",
            )
        if not holomorphic and not o.is_floating_point():
            if o.is_complex():
                raise_type(
                    call,
                    f"{api} requires real-valued outputs without holomorphic=True",
                    "real floating-point outputs",
                    describe(o),
                    "Pass holomorphic=True for a holomorphic function, or use vjp directly for a "
                    "non-holomorphic function with complex outputs.",
                )
            raise_type(
                call,
                "an output has an integer or boolean dtype, which has no derivative",
                "floating-point outputs",
                describe(o),
                "Compute the output in a floating dtype, or return it through has_aux=True.",
            )


def _assemble(
    flat: FlatFun, inputs: _engine.Inputs, jac: Sequence[Sequence[torch.Tensor]], single: bool
) -> Any:
    """jac[i][j] (output leaf i, primal j) into the output tree of argument trees."""
    return flat.rebuild_out([inputs.unflatten(row, single) for row in jac])


@overload
def jacrev(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: Literal[False] = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., Any]: ...


@overload
def jacrev(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    *,
    has_aux: Literal[True],
    holomorphic: bool = False,
    allow_int: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., tuple[Any, Any]]: ...


@overload
def jacrev(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int],
    has_aux: Literal[True],
    holomorphic: bool = False,
    allow_int: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., tuple[Any, Any]]: ...


@overload
def jacrev(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., Any]: ...


def jacrev(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    allow_int: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Jacobian of ``fun`` by reverse mode (one VJP per output element), as ``jax.jacrev``.

    Args:
        fun: Function of pytrees of tensors returning a pytree of tensors (or ``(out, aux)``).
        argnums: An int or a tuple/list of ints; negative values count from the end.
        has_aux: ``fun`` returns ``(out, aux)``; the transformed function returns ``(jac, aux)``.
        holomorphic: ``fun`` is holomorphic (complex inputs and outputs).
        allow_int: integer leaves get a ``None`` Jacobian instead of raising.
        chunk_size: compute the VJPs in chunks of this many output elements to bound memory
            (torch extra; ``None`` computes them all at once).

    Example:
        >>> import torch
        >>> from functorch_utils import jacrev
        >>> jacrev(lambda x: {"sq": x ** 2})(torch.tensor([1.0, 2.0]))
        {'sq': tensor([[2., 0.],
                [0., 4.]])}
    """
    check_callable("jacrev", fun)
    return _make_jacrev(fun, argnums, has_aux, holomorphic, allow_int, chunk_size, "jacrev")


jacobian = jacrev


def _make_jacrev(
    fun: Callable[..., Any],
    argnums: Any,
    has_aux: bool,
    holomorphic: bool,
    allow_int: bool,
    chunk_size: int | None,
    api: str,
    tape: bool = True,
) -> Callable[..., Any]:
    name = fun_name(fun)
    argnums_t, single = check_argnums(api, name, argnums)
    for flag, value in (
        ("has_aux", has_aux),
        ("holomorphic", holomorphic),
        ("allow_int", allow_int),
    ):
        check_bool(api, fun, flag, value)
    _check_chunk_size(api, fun, chunk_size)
    call = f"{api}({name})"

    @functools.wraps(fun)
    def jac_fn(*args: Any, **kwargs: Any) -> Any:
        idx = resolve_argnums(call, argnums_t, len(args))
        inputs = _engine.prepare_inputs(
            call, args, idx, allow_int=allow_int, holomorphic=holomorphic
        )
        flat = FlatFun(call, fun, inputs, kwargs, has_aux)

        def checked(*p: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Any]:
            outs, aux = flat(*p)
            _out_check(call, outs, holomorphic, api)
            return outs, aux

        # Top level: the tape measured 0.93x of torch.func.jacrev on CPU but 1.34x on an H100
        # (R^64 -> R^32 MLP, benchmarks/bench_core.py), so off the CPU torch.func runs first (the
        # engine falls back to the tape for legacy autograd.Functions, which then run twice).
        prefer_tape = tape and all(p.device.type == "cpu" for p in inputs.primals)
        rev = _engine.reverse(
            call, checked, inputs.primals, has_aux=has_aux, tape=None if prefer_tape else False
        )
        jac = _jacobian_rows(call, rev, inputs.primals, chunk_size)
        result = _assemble(flat, inputs, jac, single)
        return (result, rev.aux) if has_aux else result

    return jac_fn


def _jacobian_rows(
    call: str, rev: _engine.Reverse, primals: Sequence[torch.Tensor], chunk_size: int | None
) -> list[list[torch.Tensor]]:
    """``jac[out_leaf][primal]`` by pulling back the rows of the identity, in chunks."""
    outs = rev.outs
    sizes = [o.numel() for o in outs]
    total = sum(sizes)
    if not primals:
        return [[] for _ in outs]
    if total == 0:
        return [[x.new_zeros(o.shape + x.shape) for x in primals] for o in outs]
    step = chunk_size or total
    pieces = [
        rev.pull_batched(_basis(outs, r0, min(total, r0 + step)), call)
        for r0 in range(0, total, step)
    ]
    full = [torch.cat([pc[j] for pc in pieces]) if len(pieces) > 1 else pieces[0][j]
            for j in range(len(primals))]  # fmt: skip
    offsets = _offsets(sizes)
    return [
        [full[j][lo:hi].reshape(o.shape + x.shape) for j, x in enumerate(primals)]
        for o, lo, hi in zip(outs, offsets, offsets[1:])
    ]


def _offsets(sizes: Sequence[int]) -> list[int]:
    offsets = [0]
    for s in sizes:
        offsets.append(offsets[-1] + s)
    return offsets


def _basis(like: Sequence[torch.Tensor], r0: int, r1: int) -> list[torch.Tensor]:
    """Rows r0..r1 of the identity over the concatenated elements of ``like``, split per tensor."""
    offsets = _offsets([t.numel() for t in like])
    basis = []
    for t, lo, hi in zip(like, offsets, offsets[1:]):
        b = torch.zeros((r1 - r0, hi - lo), dtype=t.dtype, device=t.device)
        # row r is global row r0 + r: its 1 sits in column r0 + r - lo (empty if out of range)
        b.diagonal(offset=r0 - lo).fill_(1)
        basis.append(b.reshape((r1 - r0, *t.shape)))
    return basis


@overload
def jacfwd(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: Literal[False] = False,
    holomorphic: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., Any]: ...


@overload
def jacfwd(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    *,
    has_aux: Literal[True],
    holomorphic: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., tuple[Any, Any]]: ...


@overload
def jacfwd(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int],
    has_aux: Literal[True],
    holomorphic: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., tuple[Any, Any]]: ...


@overload
def jacfwd(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., Any]: ...


def jacfwd(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Jacobian of ``fun`` by forward mode (one JVP per input element), as ``jax.jacfwd``.

    Inputs must be real unless ``holomorphic=True`` (JAX's rule); complex outputs of real inputs
    are fine. ``chunk_size`` (torch extra) bounds how many JVPs run at once.

    Example:
        >>> import torch
        >>> from functorch_utils import jacfwd
        >>> jac = jacfwd(lambda x, y: x * y, argnums=(0, 1))(torch.tensor([1.0, 2.0]), torch.tensor(3.0))
        >>> jac[0], jac[1]
        (tensor([[3., 0.],
                [0., 3.]]), tensor([1., 2.]))
    """
    check_callable("jacfwd", fun)
    name = fun_name(fun)
    argnums_t, single = check_argnums("jacfwd", name, argnums)
    check_bool("jacfwd", fun, "has_aux", has_aux)
    check_bool("jacfwd", fun, "holomorphic", holomorphic)
    _check_chunk_size("jacfwd", fun, chunk_size)
    call = f"jacfwd({name})"

    @functools.wraps(fun)
    def jac_fn(*args: Any, **kwargs: Any) -> Any:
        idx = resolve_argnums(call, argnums_t, len(args))
        inputs = _engine.prepare_inputs(
            call, args, idx, allow_int=False, holomorphic=holomorphic, complex_ok=False
        )
        flat = FlatFun(call, fun, inputs, kwargs, has_aux)

        def checked(*p: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Any]:
            outs, aux = flat(*p)
            if holomorphic:
                _out_check(call, outs, True, "jacfwd")
            return outs, aux

        jac, aux = _jacfwd_rows(call, checked, inputs.primals, chunk_size, has_aux)
        rows = [
            [t if t.dtype == d else t.to(d) for t in row] for row, d in zip(jac, flat.out_dtypes)
        ]
        result = flat.rebuild_out([inputs.unflatten(row, single) for row in rows])
        return (result, aux) if has_aux else result

    return jac_fn


def _jacfwd_rows(
    call: str,
    fn: Callable[..., tuple[tuple[torch.Tensor, ...], Any]],
    primals: Sequence[torch.Tensor],
    chunk_size: int | None,
    has_aux: bool,
) -> tuple[list[list[torch.Tensor]], Any]:
    """``jac[out_leaf][primal]`` by pushing forward the rows of the identity (vmap of jvp)."""
    primals = _engine.forward_primals(primals)
    sizes = [p.numel() for p in primals]
    total = sum(sizes)
    if total == 0:
        outs, aux = fn(*primals)
        return [[p.new_zeros(o.shape + p.shape) for p in primals] for o in outs], aux
    stash = _pytree.Stash()

    def with_aux(*p: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Any]:
        outs, aux = fn(*p)
        return outs, stash.put(aux)

    def push_aux(*tangents: torch.Tensor) -> tuple[Any, Any]:
        res: tuple[Any, ...] = torch.func.jvp(with_aux, primals, tangents, has_aux=True)
        return res[1], res[2]  # (outs, tangents, aux): the tangents and aux

    def push(*tangents: torch.Tensor) -> Any:  # the lean call without aux
        return torch.func.jvp(lambda *p: fn(*p)[0], primals, tangents)[1]

    if has_aux:
        # aux depends on the primals only, so every row of it is the same; it leaves the vmap
        # batched (an expanded view, no copy) and row 0 is kept: out_dims=None would refuse an
        # aux that an outer vmap batches.
        batched = torch.func.vmap(push_aux, randomness="error")
    else:
        batched = torch.func.vmap(push, randomness="error")
    step = chunk_size or total
    pieces = []
    aux_t: Any = ()
    for r0 in range(0, total, step):
        try:
            res = _engine.func_call(call, batched, *_basis(primals, r0, min(total, r0 + step)))
        except RuntimeError as e:
            if hooks.is_empty_output_error(e):  # no outputs: torch.func refuses, JAX gives []
                return [], fn(*primals)[1]
            if hooks.vmap_error_kind(e) == "randomness":
                _random_op_error(call, e)
            raise
        touts, aux_t = res if has_aux else (res, ())
        pieces.append(touts)
    offsets = _offsets(sizes)
    jac: list[list[torch.Tensor]] = []
    for i in range(len(pieces[0])):
        t = torch.cat([pc[i] for pc in pieces]) if len(pieces) > 1 else pieces[0][i]
        shape = t.shape[1:]
        jac.append(
            [
                _engine.materialize(t[lo:hi]).movedim(0, -1).reshape(shape + p.shape)
                for p, lo, hi in zip(primals, offsets, offsets[1:])
            ]
        )
    return jac, (stash.get([t[0] for t in aux_t]) if has_aux else None)


def _random_op_error(call: str, err: RuntimeError) -> None:
    raise TypeError(
        message(
            call,
            "the function draws random numbers, and jacfwd pushes every input direction through "
            "it at once (a vmap), where torch refuses random ops",
            "a deterministic function",
            "a random op",
            "Draw the random values outside and pass them in as an argument, or use jacrev.",
        )
    ) from err


@overload
def hessian(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: Literal[False] = False,
    holomorphic: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., Any]: ...


@overload
def hessian(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    *,
    has_aux: Literal[True],
    holomorphic: bool = False,
    chunk_size: int | None = None,
) -> Callable[..., tuple[Any, Any]]: ...


@overload
def hessian(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int],
    has_aux: Literal[True],
    holomorphic: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., tuple[Any, Any]]: ...


@overload
def hessian(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., Any]: ...


def hessian(
    fun: Callable[..., Any],
    argnums: int | tuple[int, ...] | list[int] = 0,
    has_aux: bool = False,
    holomorphic: bool = False,
    *,
    chunk_size: int | None = None,
) -> Callable[..., Any]:
    """Hessian of ``fun``: the values of JAX's ``jacfwd(jacrev(fun))``.

    The composition is reverse-over-reverse: it measured faster than forward-over-reverse on CPU
    (and on an H100), and it needs no forward-mode rules, so functions with ops or
    ``autograd.Function``s that lack forward mode work too. The values are the same, except
    inside a named ``vmap`` where collectives can make the per-member matrix unsymmetric: there
    it is ``jacfwd(jacrev(fun))`` itself, as in JAX. ``has_aux``
    is supported (``torch.func.hessian`` has none); ``chunk_size`` (torch extra) bounds how many
    rows of the Hessian are computed at once.

    Example:
        >>> import torch
        >>> from functorch_utils import hessian
        >>> hessian(lambda x: (x ** 3).sum())(torch.tensor([1.0, 2.0]))
        tensor([[ 6.,  0.],
                [ 0., 12.]])
    """
    check_callable("hessian", fun)
    inner = _make_jacrev(fun, argnums, has_aux, holomorphic, False, None, "hessian")
    # torch.func even at top level: batched double backward on the tape measured 3x slower
    # than torch.func's jacrev(jacrev) (200-d logsumexp, CPU).
    rev_rev = _make_jacrev(
        inner, argnums, has_aux, holomorphic, False, chunk_size, "hessian", tape=False
    )
    fwd_rev = jacfwd(inner, argnums, has_aux, holomorphic, chunk_size=chunk_size)

    @functools.wraps(fun)
    def hess_fn(*args: Any, **kwargs: Any) -> Any:
        # Under a named axis, collectives make the per-member "Hessian" unsymmetric; JAX's
        # definition, jacfwd(jacrev), is the one that gives JAX's values there.
        return (fwd_rev if _axes.any_bound() else rev_rev)(*args, **kwargs)

    return hess_fn


def hvp(
    fun: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any]
) -> tuple[Any, Any]:
    """Hessian-vector product of a real scalar ``fun``: ``(grad, H @ tangents)``.

    The values of JAX's recipe ``jvp(grad(fun, argnums=all), primals, tangents)``: the first
    entry is the gradient at ``primals``, the second the Hessian applied to ``tangents``; both
    have the structure of the primal (a tuple of them for several primals). Computed by double
    backward (a VJP of the gradient; the Hessian is symmetric), which measured faster than
    forward-over-reverse. Composable with ``vmap``.

    Example:
        >>> import torch
        >>> from functorch_utils import hvp
        >>> g, hv = hvp(lambda x: (x ** 3).sum(), (torch.tensor([1.0, 2.0]),), (torch.tensor([1.0, 0.0]),))
        >>> g, hv
        (tensor([ 3., 12.]), tensor([6., 0.]))
    """
    check_callable("hvp", fun)
    call = f"hvp({fun_name(fun)})"
    check_primals_tangents(call, primals, tangents)
    n = len(primals)
    if n == 0:
        raise_type(call, "hvp needs at least one primal", "a non-empty tuple", "()")
    argnums = 0 if n == 1 else tuple(range(n))
    g, pullback = vjp(grad(fun, argnums=argnums), *primals)
    hv = pullback(tangents[0] if n == 1 else tuple(tangents))
    return g, (hv[0] if n == 1 else hv)
