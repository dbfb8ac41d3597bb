"""``jvp``, ``vjp`` and ``linearize``: derivatives applied to a tangent or a cotangent."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal, overload

import torch
import torch.func

from . import _engine, _pytree
from . import _torch_hooks as hooks
from ._errors import (
    TangentMismatchError,
    check_bool,
    check_callable,
    describe,
    fun_name,
    message,
    raise_type,
    raise_value,
)

__all__ = ["jvp", "linear_transpose", "linearize", "vjp"]


# ---------------------------------------------------------------------------------------------
# shared pieces


class FlatFun:
    """``fun`` as a function of the flat primals, returning ``(flat tensor outputs, aux)``.

    The output structure is kept in ``out_spec`` (set by each run; every run of one function
    gives the same structure), the output dtypes in ``out_dtypes``.
    """

    __slots__ = ("call", "fun", "has_aux", "inputs", "kwargs", "out_dtypes", "out_spec")

    def __init__(
        self,
        call: str,
        fun: Callable[..., Any],
        inputs: _engine.Inputs,
        kwargs: dict[str, Any],
        has_aux: bool,
    ) -> None:
        self.call = call
        self.fun = fun
        self.inputs = inputs
        self.kwargs = kwargs
        self.has_aux = has_aux
        self.out_spec: Any = None
        self.out_dtypes: list[torch.dtype] = []

    def __call__(self, *primals: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Any]:
        res = self.fun(*self.inputs.rebuild(primals), **self.kwargs)
        out, aux = _engine.split_aux(self.call, res, self.has_aux)
        if isinstance(out, torch.Tensor):
            self.out_spec = None
            self.out_dtypes = [out.dtype]
            return (out,), aux
        if out is None:
            raise_type(
                self.call,
                "the function returned None",
                "a tensor or a pytree of tensors",
                "None",
                "Return the function's result (a missing `return`?).",
            )
        leaves, spec = _pytree.flatten(out)
        self.out_spec = spec
        leaves = _engine.check_tensor_output(self.call, leaves, "output", "out", out)
        self.out_dtypes = [x.dtype for x in leaves]
        return tuple(leaves), aux

    def cast_tangents(self, touts: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        """Tangents in their output's dtype, as JAX guarantees (and never torch's ZeroTensor).

        torch's forward mode promotes Python-scalar arithmetic on 0-d tensors to float64 in the
        tangent (``jvp(lambda x: 0.0 + x)`` of a float32 ``x`` has a float64 tangent).
        """
        return [
            _engine.materialize(t if t.dtype == d else t.to(d))
            for t, d in zip(touts, self.out_dtypes)
        ]

    def rebuild_out(self, leaves: Sequence[Any]) -> Any:
        if self.out_spec is None:
            return leaves[0]
        return _pytree.unflatten(self.out_spec, leaves)


def check_like(
    call: str,
    what: str,
    expected_tree: Any,
    expected: Sequence[torch.Tensor],
    expected_spec: Any,
    given: Any,
    fix: str,
) -> list[torch.Tensor]:
    """``given`` must have ``expected``'s structure, shapes, dtypes and devices."""
    if expected_spec is None and isinstance(given, (torch.Tensor, float, int, complex)):
        leaves = [given]
    else:
        leaves, spec = _pytree.flatten(given)
        if expected_spec is None or spec != expected_spec:
            raise ValueError(
                message(
                    call,
                    f"the {what} does not have the structure of the value it pairs with",
                    f"structure {_pytree.flatten(expected_tree)[1]}",
                    f"structure {_pytree.flatten(given)[1]}",
                    fix,
                )
                + "\n"
                + _pytree.structure_errors(expected_tree, given, what)
            )
    out: list[torch.Tensor] = []
    for i, (e, g) in enumerate(zip(expected, leaves)):
        if isinstance(g, int) and (e.is_floating_point() or e.is_complex()):
            name = _pytree.leaf_names(given, what)[i]  # an int is no float tangent (as JAX)
            raise TangentMismatchError(
                message(call, f"{name} has the wrong dtype", f"dtype {e.dtype}",
                        f"Python {type(g).__name__} {g!r}", f"{fix} Write it as a float ({float(g)!r}).")
            )  # fmt: skip
        if isinstance(g, (float, int, complex)) and e.dim() == 0:
            g = torch.tensor(g, dtype=e.dtype, device=e.device)
        problem = _leaf_mismatch(e, g)
        if problem is not None or not isinstance(g, torch.Tensor):
            assert problem is not None
            kind, wrong, exp, got, hint = problem
            name = _pytree.leaf_names(given, what)[i]
            raise kind(message(call, f"{name} {wrong}", exp, got, hint or fix))
        out.append(g)
    return out


def _leaf_mismatch(e: torch.Tensor, g: Any) -> tuple[type[Exception], str, str, str, str] | None:
    """How a given tangent/cotangent leaf ``g`` differs from its primal-side ``e``, if it does."""
    if not isinstance(g, torch.Tensor):
        return TypeError, "is not a tensor", f"a tensor like {describe(e)}", describe(g), ""
    if g.shape != e.shape:
        return (
            ValueError,
            "has the wrong shape",
            f"shape {tuple(e.shape)}",
            f"shape {tuple(g.shape)}",
            "",
        )
    if g.dtype != e.dtype and (e.is_floating_point() or e.is_complex()):
        return (
            TangentMismatchError,
            "has the wrong dtype",
            f"dtype {e.dtype}",
            f"dtype {g.dtype}",
            "",
        )
    if g.device != e.device:
        hint = f"Move it with .to({str(e.device)!r})."
        return ValueError, "is on another device", f"device {e.device}", f"device {g.device}", hint
    return None


# ---------------------------------------------------------------------------------------------
# vjp


@overload
def vjp(
    fun: Callable[..., Any], *primals: Any, has_aux: Literal[False] = False
) -> tuple[Any, Callable[..., tuple[Any, ...]]]: ...


@overload
def vjp(
    fun: Callable[..., Any], *primals: Any, has_aux: Literal[True]
) -> tuple[Any, Callable[..., tuple[Any, ...]], Any]: ...


@overload
def vjp(fun: Callable[..., Any], *primals: Any, has_aux: bool = False) -> tuple[Any, ...]: ...


def vjp(fun: Callable[..., Any], *primals: Any, has_aux: bool = False) -> tuple[Any, ...]:
    """Evaluate ``fun(*primals)`` and return its vector-Jacobian product function, as ``jax.vjp``.

    Args:
        fun: Function of pytrees of tensors returning a pytree of tensors (or ``(out, aux)``).
        *primals: The point; every floating/complex leaf is differentiated. Integer leaves get a
            ``None`` cotangent.
        has_aux: ``fun`` returns ``(out, aux)``.

    Returns:
        ``(out, vjp_fn)`` or ``(out, vjp_fn, aux)``. ``vjp_fn(ct)`` takes a cotangent with the
        structure, shapes and dtypes of ``out`` and returns a tuple with one entry per primal. It
        can be called many times.

    Example:
        >>> import torch
        >>> from functorch_utils import vjp
        >>> out, f_vjp = vjp(lambda x, y: x * y, torch.tensor([1.0, 2.0]), torch.tensor(3.0))
        >>> f_vjp(torch.ones(2))
        (tensor([3., 3.]), tensor(3.))
    """
    check_callable("vjp", fun)
    check_bool("vjp", fun, "has_aux", has_aux)
    call = f"vjp({fun_name(fun)})"
    argnums = tuple(range(len(primals)))
    inputs = _engine.prepare_inputs(call, primals, argnums, allow_int=True, holomorphic=False)
    flat = FlatFun(call, fun, inputs, {}, has_aux)
    rev = _engine.reverse(call, flat, inputs.primals, has_aux=has_aux)
    out_tree = flat.rebuild_out(list(rev.outs))
    pull_call = f"{call} -> vjp_fn(ct)"
    fix = "Pass a cotangent shaped like the function's output."
    out_spec, expected = flat.out_spec, list(rev.outs)

    def vjp_fn(*ct: Any) -> tuple[Any, ...]:
        if len(ct) != 1:
            raise_type(
                pull_call,
                "vjp_fn takes exactly one argument, the cotangent of the output",
                "1 argument",
                f"{len(ct)} arguments",
                "Pass one cotangent with the output's structure (a tuple if the output is one).",
            )
        cts = check_like(pull_call, "cotangent", out_tree, expected, out_spec, ct[0], fix)
        return inputs.unflatten(rev.pull(cts), single=False)

    aux = rev.aux
    return (out_tree, vjp_fn, aux) if has_aux else (out_tree, vjp_fn)


# ---------------------------------------------------------------------------------------------
# jvp and linearize


def check_primals_tangents(call: str, primals: Any, tangents: Any) -> None:
    if not isinstance(primals, (tuple, list)) or not isinstance(tangents, (tuple, list)):
        raise_type(
            call,
            "primals and tangents must be tuples or lists (one entry per positional argument)",
            "e.g. jvp(f, (x,), (v,))",
            f"primals={describe(primals)}, tangents={describe(tangents)}",
            "Wrap a single argument in a tuple: (x,).",
        )
    if len(primals) != len(tangents):
        raise_value(
            call,
            "primals and tangents have different lengths",
            f"{len(primals)} tangents, one per primal",
            f"{len(tangents)}",
            "Pass one tangent per positional argument.",
        )


def _tangent_leaves(call: str, inputs: _engine.Inputs, tangents: Sequence[Any]) -> list[Any]:
    """The tangents of the differentiated leaves, checked against the primals."""
    fix = "Pass tangents with the primals' structure, shapes and dtypes."
    flat: list[Any] = []
    for k, part in zip(inputs.positions, inputs.parts):
        lo, _ = inputs.spans[k]
        picked = dict(zip(part.picked, range(lo, lo + len(part.picked))))
        expected = [
            inputs.primals[picked[i]] if i in picked else _int_like(leaf)
            for i, leaf in enumerate(part.leaves)
        ]
        given = check_like(
            call, f"tangents[{k}]", inputs.args[k], expected, part.spec, tangents[k], fix
        )
        flat.extend(given[i] for i in part.picked)
    return flat


def _int_like(leaf: Any) -> torch.Tensor:
    """What a tangent of an integer leaf is checked against (a Python int of any size is 0-d)."""
    if isinstance(leaf, torch.Tensor):
        return leaf
    return torch.zeros((), dtype=torch.bool if isinstance(leaf, bool) else torch.int64)


def jvp(
    fun: Callable[..., Any], primals: Sequence[Any], tangents: Sequence[Any], has_aux: bool = False
) -> tuple[Any, ...]:
    """Jacobian-vector product of ``fun`` at ``primals`` along ``tangents``, as ``jax.jvp``.

    Args:
        fun: Function of pytrees of tensors returning a pytree of tensors (or ``(out, aux)``).
        primals: Tuple or list of the positional arguments.
        tangents: Tuple or list with the structure, shapes and dtypes of ``primals``.
        has_aux: ``fun`` returns ``(out, aux)``.

    Returns:
        ``(out, tangent_out)`` or ``(out, tangent_out, aux)``.

    Example:
        >>> import torch
        >>> from functorch_utils import jvp
        >>> jvp(torch.sin, (torch.tensor(0.0),), (torch.tensor(2.0),))
        (tensor(0.), tensor(2.))
    """
    check_callable("jvp", fun)
    check_bool("jvp", fun, "has_aux", has_aux)
    call = f"jvp({fun_name(fun)})"
    check_primals_tangents(call, primals, tangents)
    primals = tuple(primals)
    inputs = _engine.prepare_inputs(
        call, primals, tuple(range(len(primals))), allow_int=True, holomorphic=False
    )
    tans = _tangent_leaves(call, inputs, tangents)
    flat = FlatFun(call, fun, inputs, {}, has_aux)
    outs, touts, aux = _forward(call, flat, inputs.primals, tans, has_aux)
    out_tree = flat.rebuild_out(list(outs))
    tout_tree = flat.rebuild_out(flat.cast_tangents(touts))
    return (out_tree, tout_tree, aux) if has_aux else (out_tree, tout_tree)


def _forward(
    call: str,
    flat: FlatFun,
    primals: Sequence[torch.Tensor],
    tangents: Sequence[torch.Tensor],
    has_aux: bool,
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], Any]:
    """One forward-mode pass of ``flat``: outputs, output tangents and aux."""
    if not primals:
        outs, aux = flat()
        return outs, tuple(torch.zeros_like(o) for o in outs), aux
    primals = _engine.forward_primals(primals)
    try:
        return _func_jvp(call, flat, primals, tangents, has_aux)
    except RuntimeError as e:
        if not hooks.is_empty_output_error(e):
            raise
    outs, aux = flat(*primals)  # no outputs: torch.func refuses, JAX gives empty results
    return outs, (), aux


def _func_jvp(
    call: str,
    flat: FlatFun,
    primals: tuple[torch.Tensor, ...],
    tangents: Sequence[torch.Tensor],
    has_aux: bool,
) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...], Any]:
    if not has_aux:
        outs, touts = _engine.func_call(
            call, torch.func.jvp, lambda *p: flat(*p)[0], primals, tuple(tangents)
        )
        return outs, touts, None
    stash = _pytree.Stash()

    def with_aux(*p: torch.Tensor) -> tuple[tuple[torch.Tensor, ...], Any]:
        outs, aux = flat(*p)
        return outs, stash.put(aux)

    outs, touts, aux_t = _engine.func_call(
        call, torch.func.jvp, with_aux, primals, tuple(tangents), has_aux=True
    )
    return outs, touts, stash.get(aux_t)


@overload
def linearize(
    fun: Callable[..., Any], *primals: Any, has_aux: Literal[False] = False
) -> tuple[Any, Callable[..., Any]]: ...


@overload
def linearize(
    fun: Callable[..., Any], *primals: Any, has_aux: Literal[True]
) -> tuple[Any, Callable[..., Any], Any]: ...


@overload
def linearize(fun: Callable[..., Any], *primals: Any, has_aux: bool = False) -> tuple[Any, ...]: ...


def linearize(fun: Callable[..., Any], *primals: Any, has_aux: bool = False) -> tuple[Any, ...]:
    """``fun``'s value at ``primals`` and its JVP there as a function, as ``jax.linearize``.

    ``f_jvp(*tangents)`` takes tangents with the primals' structure and returns the output
    tangent. Each call runs one forward-mode pass at the stored primals (torch has no partial
    evaluation, so the forward computation is repeated rather than stored as a linear program).

    Returns:
        ``(out, f_jvp)`` or ``(out, f_jvp, aux)``.

    Example:
        >>> import torch
        >>> from functorch_utils import linearize
        >>> out, f_jvp = linearize(lambda x: x ** 3, torch.tensor(2.0))
        >>> out, f_jvp(torch.tensor(1.0)), f_jvp(torch.tensor(0.5))
        (tensor(8.), tensor(12.), tensor(6.))
    """
    check_callable("linearize", fun)
    check_bool("linearize", fun, "has_aux", has_aux)
    call = f"linearize({fun_name(fun)})"
    zeros = _zeros_like(call, primals)
    res = jvp(fun, primals, zeros, has_aux=has_aux)
    out, aux = res[0], (res[2] if has_aux else None)
    n = len(primals)

    def f_jvp(*tangents: Any) -> Any:
        if len(tangents) != n:
            raise_type(
                f"{call} -> f_jvp(*tangents)",
                "f_jvp takes one tangent per primal",
                f"{n} tangents",
                f"{len(tangents)}",
            )
        return jvp(fun, primals, tangents, has_aux=has_aux)[1]

    return (out, f_jvp, aux) if has_aux else (out, f_jvp)


def linear_transpose(fun: Callable[..., Any], *primals: Any) -> Callable[..., tuple[Any, ...]]:
    """The transpose of a linear ``fun``, as ``jax.linear_transpose``.

    ``primals`` give the input structure, shapes and dtypes (their values are not used).
    ``f_t(ct)`` takes a cotangent shaped like ``fun``'s output and returns a tuple with one entry
    per primal: ``A^T ct`` for ``fun(x) = A x`` (a plain transpose: no conjugation for complex
    maps). ``fun`` is checked for linearity where it can be: ``fun(0)`` must be zero and
    ``fun(2r) = 2 fun(r)`` at a random point ``r``; otherwise ``ValueError``.

    Example:
        >>> import torch
        >>> from functorch_utils import linear_transpose
        >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
        >>> f_t = linear_transpose(lambda x: A @ x, torch.zeros(2))
        >>> f_t(torch.tensor([1.0, 0.0, 0.0]))
        (tensor([1., 2.]),)
    """
    check_callable("linear_transpose", fun)
    call = f"linear_transpose({fun_name(fun)})"
    zeros = _zeros_like(call, primals)
    out0, vjp_fn = vjp(fun, *zeros)
    _check_linear(call, fun, zeros, out0)

    def f_t(ct: Any) -> tuple[Any, ...]:
        return vjp_fn(ct)

    return f_t


def _zeros_like(call: str, primals: tuple[Any, ...]) -> tuple:
    """Zeros shaped like ``primals`` (tensors, numbers, or objects with .shape and .dtype)."""

    def zero(x: Any) -> torch.Tensor:
        if isinstance(x, torch.Tensor):
            return torch.zeros_like(x)
        if isinstance(x, (bool, int, float, complex)):  # any size of int: no as_tensor
            return torch.zeros((), dtype=_number_dtype(x))
        shape, dtype = getattr(x, "shape", None), getattr(x, "dtype", None)
        if shape is not None and dtype is not None:
            if not isinstance(dtype, torch.dtype):
                dtype = getattr(torch, str(dtype), None)
            if isinstance(dtype, torch.dtype):
                return torch.zeros(tuple(shape), dtype=dtype)
        raise_type(
            call,
            "a primal leaf is neither a tensor, a number, nor a shape/dtype description",
            "a tensor, a Python number, or an object with .shape and a torch .dtype",
            describe(x),
            "Pass example inputs (their values are not used).",
        )

    return tuple(_pytree.tree_map(zero, p) for p in primals)


def _number_dtype(x: bool | int | float | complex) -> torch.dtype:
    if isinstance(x, bool):
        return torch.bool
    if isinstance(x, int):
        return torch.int64
    if isinstance(x, float):
        return torch.get_default_dtype()
    return torch.complex128 if torch.get_default_dtype() == torch.float64 else torch.complex64


def _check_linear(call: str, fun: Callable[..., Any], zeros: tuple, out0: Any) -> None:
    """``fun(0) == 0`` and ``fun(2r) == 2 fun(r)`` at a random point of the float leaves."""
    gen = torch.Generator().manual_seed(0)

    def draw(x: torch.Tensor) -> torch.Tensor:
        if not (x.is_floating_point() or x.is_complex()):
            return x  # integer leaves stay at zero: no random integers
        return torch.randn(x.shape, generator=gen, dtype=x.dtype).to(x.device)

    r = tuple(_pytree.tree_map(draw, z) for z in zeros)
    r2 = tuple(_pytree.tree_map(lambda x: 2 * x, t) for t in r)
    with torch.no_grad():
        f1 = _pytree.flatten(fun(*r))[0]
        f2 = _pytree.flatten(fun(*r2))[0]
    nonzero = any(bool((o != 0).any()) for o in _pytree.flatten(out0)[0])
    if nonzero or not all(
        torch.allclose(b, 2 * a, rtol=1e-4, atol=1e-6 * max(1.0, float(a.abs().sum())))
        for a, b in zip(f1, f2)
    ):
        raise_value(
            call,
            "fun is not linear"
            + (" (fun(0) is not zero)" if nonzero else " (fun(2x) != 2 fun(x))"),
            "a linear function of the primals",
            "a function failing the check",
            "Transpose only linear maps; for a non-linear function use vjp at a point.",
        )
