"""``custom_vjp`` and ``custom_jvp``: user-defined derivative rules.

# NOTE [custom rules as autograd.Functions]
# Each rule becomes a ``torch.autograd.Function`` with ``setup_context`` (so torch.func accepts
# it) and ``generate_vmap_rule = True`` (so ``vmap`` of it, and of its derivatives, works when the
# user's code is made of vmappable torch ops). Pytrees are flattened with optree; a non-tensor
# ``_Meta`` argument carries the structures and the user's functions.
#
# custom_vjp: JAX differentiates through ``fwd`` and ``bwd`` at higher orders. So ``fwd`` runs
# OUTSIDE the Function, under whatever transforms are active, and its residuals enter the Function
# as inputs. The Function's backward returns ``bwd(res, ct)`` for the primal inputs and nothing for
# the residuals: first-order gradients come from the rule alone, and a second derivative flows
# through ``bwd`` into the residuals and from them through ``fwd`` to the inputs, as in JAX.
#
# custom_jvp: the Function's ``jvp`` is the user's rule; its ``backward`` is the transpose of that
# (linear) rule, computed as a VJP of ``tangents -> rule(primals, tangents)[1]``, which is what
# JAX does, so ``grad`` of a custom_jvp function uses the custom rule.
#
# Complex numbers: the user writes rules in JAX's convention (NOTE [complex conventions] in
# _engine.py). torch hands a backward ``conj(ct)``-convention cotangents, so custom_vjp's backward
# conjugates on the way in and out; custom_jvp's backward is a torch VJP of a torch-traced linear
# map, already in torch's convention.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import torch
import torch.func

from . import _engine, _pytree
from ._errors import check_callable, describe, fun_name, message, raise_type, raise_value

__all__ = ["custom_jvp", "custom_vjp"]


def _normalize_nondiff(api: str, fun: Any, nondiff_argnums: Any) -> tuple[int, ...]:
    if isinstance(nondiff_argnums, int) and not isinstance(nondiff_argnums, bool):
        nondiff_argnums = (nondiff_argnums,)
    if not isinstance(nondiff_argnums, (tuple, list)) or not all(
        isinstance(i, int) and not isinstance(i, bool) for i in nondiff_argnums
    ):
        raise_type(
            f"{api}({fun_name(fun)}, nondiff_argnums={nondiff_argnums!r})",
            "nondiff_argnums must be a tuple of ints",
            "e.g. (0,) or ()",
            describe(nondiff_argnums),
        )
    return tuple(nondiff_argnums)


def _bind(fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple:
    """Keyword arguments resolved into positional ones, as JAX's custom rules do."""
    if not kwargs:
        return args
    bound = inspect.signature(fun).bind(*args, **kwargs)
    bound.apply_defaults()
    return tuple(bound.args) + tuple(bound.kwargs.values())


def _no_rule(call: str, kind: str, expected: str, fix: str) -> NoReturn:
    raise AttributeError(
        message(
            call,
            f"no {kind} rule is defined",
            f"{expected} before the first call",
            "a call without one",
            fix,
        )
    )


def _split_args(
    fun: Callable[..., Any],
    nondiff_argnums: tuple[int, ...],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[tuple[Any, ...], list[int], _Flat]:
    """Positional args (keywords bound), the nondiff positions, and the differentiated leaves."""
    args = _bind(fun, args, kwargs)
    nargs = len(args)
    nondiff = sorted(i + nargs if i < 0 else i for i in nondiff_argnums)
    return args, nondiff, _Flat(args, [i for i in range(nargs) if i not in nondiff])


class _Flat:
    """Tensor leaves of the differentiated arguments, and how to put them back."""

    __slots__ = ("diff_pos", "masks", "specs", "tensors", "treeleaves")

    def __init__(self, args: tuple[Any, ...], diff_pos: Sequence[int]) -> None:
        self.diff_pos = tuple(diff_pos)
        self.specs = []
        self.treeleaves = []
        self.masks = []
        self.tensors: list[torch.Tensor] = []
        for k in self.diff_pos:
            leaves, spec = _pytree.flatten(args[k])
            self.specs.append(spec)
            self.treeleaves.append(leaves)
            mask = [
                isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex())
                for x in leaves
            ]
            self.masks.append(mask)
            self.tensors.extend(x for x, m in zip(leaves, mask) if m)

    def rebuild(self, args: tuple[Any, ...], tensors: Sequence[torch.Tensor]) -> tuple[Any, ...]:
        out = list(args)
        it = iter(tensors)
        for k, spec, leaves, mask in zip(self.diff_pos, self.specs, self.treeleaves, self.masks):
            out[k] = _pytree.unflatten(spec, [next(it) if m else x for x, m in zip(leaves, mask)])
        return tuple(out)


def _flatten_out(call: str, out: Any, what: str) -> tuple[list[torch.Tensor], Any]:
    leaves, spec = _pytree.flatten(out)
    for i, x in enumerate(leaves):
        if not isinstance(x, torch.Tensor):
            raise_type(
                call,
                f"{_pytree.leaf_names(out, what)[i]} is not a tensor",
                "tensors at every leaf of the output",
                describe(x),
            )
    return leaves, spec


# ---------------------------------------------------------------------------------------------
# custom_vjp


class _VjpMeta:
    __slots__ = (
        "args",
        "bwd",
        "call",
        "flat",
        "n_in",
        "n_out",
        "n_res",
        "nondiff",
        "out_spec",
        "res_leaves",
        "res_spec",
    )
    args: tuple[Any, ...]
    bwd: Callable[..., Any]
    call: str
    flat: _Flat
    n_in: int
    n_out: int
    n_res: int
    nondiff: tuple[Any, ...]
    out_spec: Any
    res_leaves: list[Any]
    res_spec: Any


class _CustomVjpFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(meta: _VjpMeta, *tensors: torch.Tensor) -> Any:
        # tensors = primal leaves, residual tensors, fwd's outputs (already computed, detached).
        outs = tensors[meta.n_in + meta.n_res :]
        return tuple(o.clone() for o in outs)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        meta = inputs[0]
        ctx.meta = meta
        ctx.save_for_backward(*inputs[1 + meta.n_in : 1 + meta.n_in + meta.n_res])

    @staticmethod
    def backward(ctx: Any, *cts: torch.Tensor) -> Any:
        meta: _VjpMeta = ctx.meta
        res_t = iter(ctx.saved_tensors)
        res = _pytree.unflatten(
            meta.res_spec,
            [next(res_t) if isinstance(x, torch.Tensor) else x for x in meta.res_leaves],
        )
        ct_leaves = [_engine.conj_if_complex(c) for c in cts]
        ct = _pytree.unflatten(meta.out_spec, ct_leaves)
        grads = meta.bwd(*meta.nondiff, res, ct)
        flat = _check_bwd(meta, grads)
        return (None, *flat, *([None] * (meta.n_res + meta.n_out)))


def _check_bwd(meta: _VjpMeta, grads: Any) -> list[Any]:
    call = f"{meta.call} bwd"
    n = len(meta.flat.diff_pos)
    fix = (
        "bwd must return a tuple with one cotangent per differentiated argument, each with that "
        "argument's structure, shapes and dtypes (None for a zero cotangent)."
    )
    if not isinstance(grads, (tuple, list)) or len(grads) != n:
        raise_value(
            call,
            "bwd returned the wrong number of cotangents",
            f"a tuple of {n}",
            describe(grads),
            fix,
        )
    out: list[Any] = []
    for j, (k, spec, leaves, mask) in enumerate(
        zip(meta.flat.diff_pos, meta.flat.specs, meta.flat.treeleaves, meta.flat.masks)
    ):
        g = grads[j]
        primal_tree = meta.args[k]
        if g is None:
            out.extend(None for m in mask if m)
            continue
        g_leaves, g_spec = _pytree.flatten(g)
        if g_spec != spec:
            raise ValueError(
                message(
                    call,
                    f"the cotangent for argument {k} does not have the argument's structure",
                    f"structure {spec}",
                    f"structure {g_spec}",
                    fix,
                )
                + "\n"
                + _pytree.structure_errors(primal_tree, g, f"bwd_output[{j}]")
            )
        for i, (x, gx, m) in enumerate(zip(leaves, g_leaves, mask)):
            if not m:
                continue
            if gx is None:
                out.append(None)
                continue
            if not isinstance(gx, torch.Tensor) or gx.shape != x.shape:
                name = _pytree.leaf_names(g, f"bwd_output[{j}]")[i]
                raise_value(
                    call,
                    f"{name} has the wrong shape",
                    f"shape {tuple(x.shape)}",
                    describe(gx),
                    fix,
                )
            if gx.dtype != x.dtype:
                gx = gx.to(x.dtype)
            out.append(_engine.conj_if_complex(gx))
    return out


class custom_vjp:
    """A function with a custom reverse-mode rule, as ``jax.custom_vjp``.

    ``f = custom_vjp(fun)``, then ``f.defvjp(fwd, bwd)``: ``fwd(*args)`` returns
    ``(out, residuals)`` (residuals any pytree); ``bwd(*nondiff_args, residuals, ct)`` returns a
    tuple with one cotangent per differentiated argument (``None`` for zero). The rule is used by
    ``grad``, ``vjp``, ``jacrev`` and ``vmap`` of them at any nesting; ``fwd`` and ``bwd`` are
    themselves differentiated for higher orders, as in JAX. Forward mode (``jvp``, ``jacfwd``)
    raises ``TypeError``: use :class:`custom_jvp` for that.

    Example:
        >>> import torch
        >>> from functorch_utils import custom_vjp, grad
        >>> @custom_vjp
        ... def clip_gradient(x):
        ...     return x
        >>> def fwd(x):
        ...     return x, None
        >>> def bwd(res, g):
        ...     return (g.clamp(-1.0, 1.0),)
        >>> clip_gradient.defvjp(fwd, bwd)
        >>> grad(lambda x: 5.0 * clip_gradient(x))(torch.tensor(2.0))
        tensor(1.)
    """

    def __init__(self, fun: Callable[..., Any], nondiff_argnums: Sequence[int] = ()) -> None:
        check_callable("custom_vjp", fun)
        self.fun = fun
        self.nondiff_argnums = _normalize_nondiff("custom_vjp", fun, nondiff_argnums)
        self.fwd: Callable[..., Any] | None = None
        self.bwd: Callable[..., Any] | None = None
        functools.update_wrapper(self, fun)

    def defvjp(self, fwd: Callable[..., Any], bwd: Callable[..., Any]) -> None:
        """Set the forward (``(out, residuals)``) and backward (cotangents) rules."""
        check_callable("custom_vjp.defvjp", fwd)
        check_callable("custom_vjp.defvjp", bwd)
        self.fwd, self.bwd = fwd, bwd

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = f"custom_vjp({fun_name(self.fun)})"
        if self.fwd is None or self.bwd is None:
            _no_rule(call, "VJP", "f.defvjp(fwd, bwd)", "Call defvjp on the custom_vjp function.")
        args, nondiff, flat = _split_args(self.fun, self.nondiff_argnums, args, kwargs)
        res_out = self.fwd(*args)
        if not (isinstance(res_out, tuple) and len(res_out) == 2):
            raise_type(
                f"{call} fwd",
                "fwd must return a pair (output, residuals)",
                "a tuple of length 2",
                describe(res_out),
            )
        out, res = res_out
        out_leaves, out_spec = _flatten_out(call, out, "out")
        res_leaves, res_spec = _pytree.flatten(res)
        res_tensors = [x for x in res_leaves if isinstance(x, torch.Tensor)]
        meta = _VjpMeta()
        meta.args, meta.bwd, meta.call, meta.flat = args, self.bwd, call, flat
        meta.nondiff = tuple(args[i] for i in nondiff)
        meta.n_in, meta.n_res, meta.n_out = len(flat.tensors), len(res_tensors), len(out_leaves)
        meta.out_spec, meta.res_leaves, meta.res_spec = out_spec, res_leaves, res_spec
        detached = [o.detach() for o in out_leaves]
        try:
            new = _CustomVjpFunction.apply(meta, *flat.tensors, *res_tensors, *detached)
        except NotImplementedError as e:
            if "jvp" in str(e):
                raise TypeError(
                    message(
                        call,
                        "a custom_vjp function has no forward-mode rule, so jvp/jacfwd cannot "
                        "differentiate it",
                        "reverse mode (grad, vjp, jacrev)",
                        "forward mode",
                        "Define the rule with custom_jvp instead (it serves both modes).",
                    )
                ) from e
            raise
        return _pytree.unflatten(out_spec, list(new))


# ---------------------------------------------------------------------------------------------
# custom_jvp


class _JvpMeta:
    __slots__ = ("args", "call", "flat", "fun", "jvp_flat", "n_in", "out_spec")
    args: tuple[Any, ...]
    call: str
    flat: _Flat
    fun: Callable[..., Any]
    jvp_flat: Callable[..., list[torch.Tensor]]
    n_in: int
    out_spec: Any


class _CustomJvpFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(meta: _JvpMeta, *tensors: torch.Tensor) -> Any:
        out = meta.fun(*meta.flat.rebuild(meta.args, tensors))
        leaves, spec = _flatten_out(meta.call, out, "out")
        meta.out_spec = spec
        return tuple(leaves)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.meta = inputs[0]
        ctx.save_for_backward(*inputs[1:])
        ctx.save_for_forward(*inputs[1:])

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        meta: _JvpMeta = ctx.meta
        _refuse_nested_forward(meta.call)
        primals = ctx.saved_tensors
        tans = [torch.zeros_like(p) if t is None else t for p, t in zip(primals, tangents[1:])]
        return tuple(meta.jvp_flat(primals, tans))

    @staticmethod
    def backward(ctx: Any, *cts: torch.Tensor) -> Any:
        meta: _JvpMeta = ctx.meta
        primals = ctx.saved_tensors
        zeros = tuple(torch.zeros_like(p) for p in primals)

        def linear(*tans: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(meta.jvp_flat(primals, tans))

        pull = torch.func.vjp(linear, *zeros)[1]
        cts_full = tuple(torch.zeros_like(c) if c is None else c for c in cts)
        return (None, *pull(cts_full))


class custom_jvp:
    """A function with a custom forward-mode rule, as ``jax.custom_jvp``.

    ``f.defjvp(rule)`` with ``rule(primals, tangents) -> (primal_out, tangent_out)``, or
    ``f.defjvps(*rules)`` with one ``rule_i(g_i, ans, *primals)`` per argument (``None`` for no
    dependence). The rule serves ``jvp``, ``jacfwd``, ``hessian`` and ``vmap``, and reverse mode
    uses its transpose (as JAX does), so ``grad`` of the function uses the custom rule too. The
    rule must be linear in the tangents.

    Example:
        >>> import torch
        >>> from functorch_utils import custom_jvp, grad, jvp
        >>> @custom_jvp
        ... def log1pexp(x):
        ...     return torch.log1p(torch.exp(x))
        >>> @log1pexp.defjvp
        ... def log1pexp_jvp(primals, tangents):
        ...     (x,), (t,) = primals, tangents
        ...     return log1pexp(x), t * torch.sigmoid(x)
        >>> grad(log1pexp)(torch.tensor(100.0))  # exp(100) overflows float32; the rule does not
        tensor(1.)
        >>> jvp(log1pexp, (torch.tensor(0.0),), (torch.tensor(2.0),))[1]
        tensor(1.)
    """

    def __init__(self, fun: Callable[..., Any], nondiff_argnums: Sequence[int] = ()) -> None:
        check_callable("custom_jvp", fun)
        self.fun = fun
        self.nondiff_argnums = _normalize_nondiff("custom_jvp", fun, nondiff_argnums)
        self.rule: Callable[..., Any] | None = None
        functools.update_wrapper(self, fun)

    def defjvp(self, jvp: Callable[..., Any]) -> Callable[..., Any]:
        """Set the rule ``jvp(primals, tangents) -> (primal_out, tangent_out)``; returns it."""
        check_callable("custom_jvp.defjvp", jvp)
        self.rule = jvp
        return jvp

    def defjvps(self, *jvps: Callable[..., Any] | None) -> None:
        """One rule per argument: ``jvp_i(g_i, ans, *primals)`` gives its tangent contribution."""

        def rule(primals: tuple[Any, ...], tangents: tuple[Any, ...]) -> tuple[Any, Any]:
            ans = self.fun(*primals)
            total: Any = None
            for jvp_i, t in zip(jvps, tangents):
                if jvp_i is None:
                    continue
                contribution = jvp_i(t, ans, *primals)
                total = contribution if total is None else _pytree_add(total, contribution)
            if total is None:
                total = _pytree_zeros_like(ans)
            return ans, total

        self.rule = rule

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = f"custom_jvp({fun_name(self.fun)})"
        rule = self.rule
        if rule is None:
            _no_rule(
                call,
                "JVP",
                "f.defjvp(rule)",
                "Call defjvp (or defjvps) on the custom_jvp function.",
            )
        args, nondiff, flat = _split_args(self.fun, self.nondiff_argnums, args, kwargs)
        diff_pos = flat.diff_pos
        fun = self.fun
        meta = _JvpMeta()
        meta.args, meta.call, meta.flat, meta.n_in = args, call, flat, len(flat.tensors)

        def rule_flat(
            primals: Sequence[torch.Tensor], tangents: Sequence[torch.Tensor]
        ) -> list[torch.Tensor]:
            p_args = flat.rebuild(args, primals)
            t_args = flat.rebuild(args, tangents)
            diff_p = tuple(p_args[i] for i in diff_pos)
            diff_t = tuple(t_args[i] for i in diff_pos)
            if nondiff:
                res = rule(*(args[i] for i in nondiff), diff_p, diff_t)
            else:
                res = rule(diff_p, diff_t)
            if not (isinstance(res, tuple) and len(res) == 2):
                raise_type(
                    f"{call} rule",
                    "the JVP rule must return a pair (primal_out, tangent_out)",
                    "a tuple of length 2",
                    describe(res),
                )
            t_leaves, t_spec = _flatten_out(call, res[1], "tangent_out")
            if meta.out_spec is not None and t_spec != meta.out_spec:
                raise ValueError(
                    message(
                        f"{call} rule",
                        "tangent_out does not have the output's structure",
                        f"structure {meta.out_spec}",
                        f"structure {t_spec}",
                        "Return a tangent shaped like the function's output.",
                    )
                )
            return t_leaves

        meta.fun = fun
        meta.jvp_flat = rule_flat
        meta.out_spec = None
        new = _CustomJvpFunction.apply(meta, *flat.tensors)
        return _pytree.unflatten(meta.out_spec, list(new))


def _refuse_nested_forward(call: str) -> None:
    if _engine.nested_forward_mode():
        raise TypeError(
            message(
                call,
                "forward-over-forward differentiation (jvp of jvp, jacfwd of jacfwd) of a custom "
                "rule is not supported: torch drops the outer tangent through an "
                "autograd.Function's jvp and would return zeros",
                "at most one forward-mode level over the rule",
                "nested forward mode",
                "Use reverse mode for the outer derivative: jacfwd(jacrev(f)), hessian(f), "
                "jvp(grad(f)) or grad(grad(f)) all work.",
            )
        )


def _pytree_add(a: Any, b: Any) -> Any:
    la, spec = _pytree.flatten(a)
    lb, _ = _pytree.flatten(b)
    return _pytree.unflatten(spec, [x + y for x, y in zip(la, lb)])


def _pytree_zeros_like(a: Any) -> Any:
    la, spec = _pytree.flatten(a)
    return _pytree.unflatten(spec, [torch.zeros_like(x) for x in la])
