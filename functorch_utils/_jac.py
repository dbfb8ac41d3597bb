"""``jacrev``, ``jacfwd``, ``jacobian`` and ``hessian``.

Every Jacobian is a pytree shaped like the output whose leaves are pytrees shaped like the
differentiated argument(s) (a tuple of them when ``argnums`` is a sequence); each leaf has shape
``out.shape + in.shape``, as in JAX.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.func

from . import _engine
from ._argnums import check_argnums, resolve_argnums
from ._errors import check_bool, check_callable, describe, fun_name, raise_type, raise_value
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
    per_out = [inputs.unflatten([_engine.conj_if_complex(t) for t in row], single) for row in jac]
    return flat.rebuild_out(per_out)


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
    engine_func: bool = False,
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
        # Top level: the tape measured 0.93x of torch.func.jacrev on CPU but 1.34x on an H100
        # (R^64 -> R^32 MLP, benchmarks/bench_core.py), so off the CPU torch.func runs first and
        # the tape is the fallback for legacy autograd.Functions (which then run twice).
        if engine_func or not _engine.use_tape():
            jac, aux = _jacrev_func(call, flat, inputs, holomorphic, chunk_size, api)
        elif all(p.device.type == "cpu" for p in inputs.primals):
            jac, aux = _jacrev_tape(call, flat, inputs, args, idx, kwargs, holomorphic, chunk_size)
        else:
            try:
                jac, aux = _jacrev_func(call, flat, inputs, holomorphic, chunk_size, api)
            except _engine.LegacyFunctionError:
                jac, aux = _jacrev_tape(
                    call, flat, inputs, args, idx, kwargs, holomorphic, chunk_size
                )
        result = _assemble(flat, inputs, jac, single)
        return (result, aux) if has_aux else result

    return jac_fn


def _func_jacobian(
    call: str,
    transform: Callable[..., Any],
    flat: FlatFun,
    primals: Sequence[torch.Tensor],
    check: Callable[[tuple[torch.Tensor, ...]], None] | None,
    **kwargs: Any,
) -> tuple[list[list[torch.Tensor]], Any]:
    """``torch.func.jacrev``/``jacfwd`` over the flat function, as lean as torch.func allows.

    A single primal is passed with an int argnums, a bare-tensor output is returned bare and aux
    only when asked for: each of torch.func's tuple/aux paths costs measurable Python time per
    call (benchmarks/bench_core.py). The result is normalised to ``jac[out_leaf][primal]``.
    """
    n = len(primals)
    has_aux = flat.has_aux

    def g(*p: torch.Tensor) -> Any:
        outs, aux = flat(*p)
        if check is not None:
            check(outs)
        out = outs[0] if flat.out_spec is None else outs
        return (out, aux) if has_aux else out

    if n == 0:
        outs, aux_t = flat()
        if check is not None:
            check(outs)
        return [[] for _ in outs], (flat.rebuild_aux(aux_t) if has_aux else None)
    res = _engine.func_call(
        call,
        transform(g, argnums=0 if n == 1 else tuple(range(n)), has_aux=has_aux, **kwargs),
        *primals,
    )
    jac, aux_t = res if has_aux else (res, ())
    rows = [jac] if flat.out_spec is None else list(jac)
    rows = [[r] for r in rows] if n == 1 else [list(r) for r in rows]
    return rows, (flat.rebuild_aux(aux_t) if has_aux else None)


def _jacrev_func(
    call: str,
    flat: FlatFun,
    inputs: _engine.Inputs,
    holomorphic: bool,
    chunk_size: int | None,
    api: str,
) -> tuple[list[list[torch.Tensor]], Any]:
    check = lambda outs: _out_check(call, outs, holomorphic, api)  # noqa: E731
    primals = inputs.primals
    if not any(p.is_complex() for p in primals):
        return _func_jacobian(call, torch.func.jacrev, flat, primals, check, chunk_size=chunk_size)
    # torch.func.jacrev refuses complex inputs; the same vmap-of-vjp does not.

    def fn(*p: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[Any, ...]]:
        outs, aux = flat(*p)
        check(outs)
        return outs, aux

    outs, pull, aux_t = _engine.func_call(
        call, lambda *p: torch.func.vjp(fn, *p, has_aux=True), *primals
    )
    sizes = [o.numel() for o in outs]
    total = sum(sizes)
    step = chunk_size or max(1, total)
    pieces = [
        _engine.func_call(
            call, torch.func.vmap(lambda *b: pull(b)), *_basis(outs, r0, min(total, r0 + step))
        )
        for r0 in range(0, total, step)
    ]
    offsets = _offsets(sizes)
    jac = [
        [
            torch.cat([pc[j] for pc in pieces])[lo:hi].reshape(o.shape + x.shape)
            if pieces
            else x.new_zeros(o.shape + x.shape)
            for j, x in enumerate(primals)
        ]
        for o, lo, hi in zip(outs, offsets, offsets[1:])
    ]
    return jac, (flat.rebuild_aux(aux_t) if flat.has_aux else None)


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
        a0, a1 = max(r0, lo), min(r1, hi)
        if a0 < a1:
            ar = torch.arange(a1 - a0, device=t.device)
            b[ar + (a0 - r0), ar + (a0 - lo)] = 1
        basis.append(b.reshape((r1 - r0, *t.shape)))
    return basis


def _jacrev_tape(
    call: str,
    flat: FlatFun,
    inputs: _engine.Inputs,
    args: tuple[Any, ...],
    idx: tuple[int, ...],
    kwargs: dict[str, Any],
    holomorphic: bool,
    chunk_size: int | None,
) -> tuple[list[list[torch.Tensor]], Any]:
    leaves = [_engine.tape_leaf(p) for p in inputs.primals]
    with torch.enable_grad():
        outs, aux = flat.raw(*leaves)
    _out_check(call, outs, holomorphic, "jacrev")
    outer = bool(leaves) and _engine.needs_outer_graph(
        inputs.primals, args, idx, kwargs, outs, leaves
    )
    if flat.has_aux and not outer:
        aux = _engine.detach_tree(aux)
    sizes = [o.numel() for o in outs]
    total = sum(sizes)
    live = [o.requires_grad for o in outs]
    if not leaves:
        return [[] for _ in outs], aux
    if total == 0 or not any(live):
        return [[x.new_zeros(o.shape + x.shape) for x in leaves] for o in outs], aux
    step = total if chunk_size is None else chunk_size
    rows: list[list[torch.Tensor]] = [[] for _ in leaves]
    offsets = _offsets(sizes)
    for r0 in range(0, total, step):
        r1 = min(total, r0 + step)
        basis = _basis(outs, r0, r1)
        live_outs = [o for o, keep in zip(outs, live) if keep]
        live_basis = [b for b, keep in zip(basis, live) if keep]
        grads = torch.autograd.grad(
            live_outs,
            leaves,
            live_basis,
            retain_graph=True,
            create_graph=outer,
            allow_unused=True,
            is_grads_batched=True,
        )
        for j, (g, x) in enumerate(zip(grads, leaves)):
            rows[j].append(x.new_zeros((r1 - r0, *x.shape)) if g is None else g)
    full = [torch.cat(r) if len(r) > 1 else r[0] for r in rows]
    jac = [
        [full[j][lo:hi].reshape(o.shape + leaves[j].shape) for j in range(len(leaves))]
        for o, lo, hi in zip(outs, offsets, offsets[1:])
    ]
    return jac, aux


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
        primals = tuple(inputs.primals)
        check = (lambda outs: _out_check(call, outs, True, "jacfwd")) if holomorphic else None
        if chunk_size is None and not any(p.is_complex() for p in primals):
            jac, aux = _func_jacobian(call, torch.func.jacfwd, flat, primals, check)
        else:
            # torch.func.jacfwd refuses complex inputs; the same vmap-of-jvp does not.

            def checked(*p: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], tuple[Any, ...]]:
                outs, aux = flat(*p)
                if check is not None:
                    check(outs)
                return outs, aux

            step = chunk_size or max(1, sum(p.numel() for p in primals))
            jac, aux_t = _jacfwd_chunked(call, checked, primals, step)
            aux = flat.rebuild_aux(aux_t) if has_aux else None
        result = flat.rebuild_out(
            [
                inputs.unflatten(row if d is None else [t.to(d) for t in row], single)
                for row, d in zip(jac, _fix_dtypes(flat, jac))
            ]
        )
        return (result, aux) if has_aux else result

    return jac_fn


def _fix_dtypes(flat: FlatFun, jac: Sequence[Sequence[torch.Tensor]]) -> list[Any]:
    """Per output row, the dtype to cast to where forward mode promoted it (see cast_tangents)."""
    return [d if any(t.dtype != d for t in row) else None for row, d in zip(jac, flat.out_dtypes)]


def _jacfwd_chunked(
    call: str,
    fn: Callable[..., tuple[tuple[torch.Tensor, ...], tuple[Any, ...]]],
    primals: tuple[torch.Tensor, ...],
    chunk_size: int,
) -> tuple[list[list[torch.Tensor]], Any]:
    sizes = [p.numel() for p in primals]
    total = sum(sizes)
    offsets = _offsets(sizes)

    def push(*tangents: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.func.jvp(fn, primals, tangents, has_aux=True)[1]

    pieces: list[tuple[torch.Tensor, ...]] = []
    for r0 in range(0, total, chunk_size):
        r1 = min(total, r0 + chunk_size)
        basis = _basis(primals, r0, r1)
        pieces.append(_engine.func_call(call, torch.func.vmap(push, randomness="error"), *basis))
    # Aux does not depend on the tangents: evaluate it once, unbatched.
    outs, aux_t = fn(*primals)
    n_out = len(outs)
    jac: list[list[torch.Tensor]] = []
    for i in range(n_out):
        t = torch.cat([pc[i] for pc in pieces])  # (N, *out.shape)
        row = []
        for p, lo, hi in zip(primals, offsets, offsets[1:]):
            blk = t[lo:hi]  # (n_j, *out.shape)
            row.append(blk.movedim(0, -1).reshape(outs[i].shape + p.shape))
        jac.append(row)
    return jac, aux_t


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
    ``autograd.Function``s that lack forward mode work too. The values are the same. ``has_aux``
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
    return _make_jacrev(
        inner, argnums, has_aux, holomorphic, False, chunk_size, "hessian", engine_func=True
    )


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
