"""The flat-problem adapter: a user's function of pytrees as a function of flat tensor tuples.

The checks work on :class:`Problem`\\ s: ``fun(*xs)`` takes the floating leaves of the arguments
as a flat tuple and returns the floating tensor leaves of the output as a flat tuple. The other
leaves (ints, strings, ``None`` subtrees) are held by :class:`Args` and :class:`OutSelector`,
built on the package's one partition/combine pair (``functorch_utils._pytree.partition``).
Higher orders are problems too: :func:`fwd_problem` and :func:`rev_problem` wrap a problem's
JVP and VJP (through the public transforms) as functions of their own.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optree
import torch

import functorch_utils
from functorch_utils._errors import raise_type, raise_value
from functorch_utils._pytree import (
    NAMESPACE,
    Partition,
    is_float_like,
    leaf_names,
    partition,
    structure_errors,
)

from ._numerics import REFERENCES
from ._report import label_text

__all__ = [
    "adapt",
    "prefix_errors_text",
    "Args",
    "FlatFun",
    "FlatJvp",
    "FlatVjp",
    "Options",
    "OutSelector",
    "Problem",
    "args_flat_up_to",
    "check_args_tuple",
    "is_float_tensor",
    "flat_problem",
    "fwd_problem",
    "options",
    "prepare_args",
    "resolve_eps",
    "rev_problem",
    "transform_jvp",
    "transform_vjp",
]

Tensor = torch.Tensor
FlatFun = Callable[..., tuple[Tensor, ...]]
FlatJvp = Callable[[tuple[Tensor, ...], tuple[Tensor, ...]], tuple[tuple[Tensor, ...], ...]]
FlatVjp = Callable[..., tuple[tuple[Tensor, ...], Callable[[tuple[Tensor, ...]], Any]]]


@dataclass
class Problem:
    """A derivative check on flat tuples: ``fun(*xs)`` returns a flat tuple of float tensors."""

    fun: FlatFun
    xs: tuple[Tensor, ...]
    names: list[str]
    out_names: list[str] = field(default_factory=list)
    eps: list[float | None] = field(default_factory=list)  # per-leaf step overrides
    forward_levels: int = 0  # how many jvp levels ``fun`` runs itself (higher orders)


@dataclass
class Options:
    """The validated options of one check call."""

    call: str
    atol: float | None
    rtol: float | None
    eps: float | None  # one step for every leaf (per-leaf steps live on the Problem)
    seed: int
    err_msg: str
    reference: str = "central"


def zero_none(ts: Sequence[Any], like: Sequence[Tensor]) -> tuple[Tensor, ...]:
    """``None`` entries (unused inputs, zero tangents) as zeros shaped like ``like``."""
    return tuple(torch.zeros_like(x) if t is None else t for t, x in zip(ts, like))


def _zeros_part(part: Partition) -> Partition:
    """``part`` with its unpicked tensor leaves replaced by zeros (tangents, cotangents)."""
    zeros = [torch.zeros_like(x) if isinstance(x, Tensor) else x for x in part.leaves]
    return Partition(part.spec, zeros, part.picked)


# ---------------------------------------------------------------------------------------------
# Inputs


@dataclass
class Args:
    """The float leaves of ``args`` as a flat tuple, and how to put them back."""

    part: Partition
    zeros: Partition
    xs: tuple[Tensor, ...]
    names: list[str]
    count: int  # how many positional arguments

    def rebuild(self, xs: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(self.part.combine(list(xs)))

    def rebuild_tangent(self, ts: Sequence[Any]) -> tuple[Any, ...]:
        return tuple(self.zeros.combine(list(ts)))


def _as_leaf(x: Any) -> Any:
    """Python floats and complexes as 0-d tensors of the default dtype; tensors detached."""
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, float):
        return torch.tensor(x, dtype=torch.get_default_dtype())
    if isinstance(x, complex):
        double = torch.get_default_dtype() == torch.float64
        return torch.tensor(x, dtype=torch.complex128 if double else torch.complex64)
    return x


def check_args_tuple(call: str, args: Any) -> tuple[Any, ...]:
    """``args`` as a tuple; anything but a tuple or list of positional arguments is refused."""
    if not isinstance(args, (tuple, list)):
        got = (
            f"a tensor of shape {tuple(args.shape)}"
            if isinstance(args, Tensor)
            else type(args).__name__
        )
        raise_type(
            call,
            "args must be a tuple of positional arguments",
            "a tuple",
            got,
            "Wrap a single argument: (x,).",
        )
    return tuple(args)


def prepare_args(call: str, fun: Any, args: Any, reference: str = "central") -> Args:
    """Validates ``fun`` and ``args`` and picks the floating leaves of ``args``."""
    if not callable(fun):
        raise_type(
            call,
            "f is not callable",
            "a function",
            type(fun).__name__,
            "Pass the function itself, not the result of calling it.",
        )
    args = check_args_tuple(call, args)
    leaves = optree.tree_map(_as_leaf, args, none_is_leaf=False, namespace=NAMESPACE)
    xs, part = partition(leaves, is_float_like)
    all_names = leaf_names(args, "args")
    names = [all_names[k] for k in part.picked]
    if not xs:
        raise ValueError(
            f"{call}: args has no floating-point leaves; expected at least one float or complex "
            "tensor to differentiate, got none. Pass float inputs (ints are not differentiated)."
        )
    if reference == "complex_step":
        cplx = [nm for nm, x in zip(names, xs) if x.is_complex()]
        if cplx:
            raise ValueError(
                f"{call}: reference='complex_step' needs real inputs; expected float tensors, got "
                f"complex leaves {cplx}. Use reference='central' (or 'richardson') for complex "
                "inputs."
            )
    return Args(part, _zeros_part(part), tuple(xs), names, len(args))


def args_flat_up_to(a: Args, cts: Any, call: str, label: str) -> tuple[Any, ...]:
    """The cotangents of the floating leaves, from a tree shaped like ``args``."""
    assert a.part.spec is not None  # args is a tuple, never a bare tensor
    try:
        given: Any = tuple(cts)
        subs: list[Any] = a.part.spec.flatten_up_to(given)
    except (ValueError, TypeError):
        raise AssertionError(
            f"{call}: {label_text(label)}: the cotangents do not have the structure of args:\n"
            + structure_errors(a.rebuild(a.xs), tuple(cts), "cotangents")
        ) from None
    return tuple(subs[k] for k in a.part.picked)


# ---------------------------------------------------------------------------------------------
# Outputs


def is_float_tensor(x: Any) -> bool:
    """A floating or complex tensor (Python numbers in outputs are not differentiated)."""
    return isinstance(x, Tensor) and is_float_like(x)


class OutSelector:
    """Picks the float-tensor leaves out of a function's output pytree.

    The first output fixes the structure (and the leaf names); a later output of another
    structure is an error.
    """

    def __init__(self, call: str) -> None:
        self.call = call
        self.part: Partition | None = None
        self.zeros: Partition | None = None
        self.names: list[str] = []

    def _first(self) -> Any:
        assert self.part is not None
        return self.part.combine([self.part.leaves[k] for k in self.part.picked])

    def select(self, out: Any) -> tuple[Tensor, ...]:
        picked, part = partition(out, is_float_tensor)
        if self.part is None:
            self.part, self.zeros = part, _zeros_part(part)
            names = leaf_names(out, "out")
            self.names = [names[k] for k in part.picked]
        elif part.spec != self.part.spec:
            raise AssertionError(
                f"{self.call}: the output structure changed between calls:\n"
                + structure_errors(self._first(), out, "out")
            )
        return tuple(picked)

    def select_like(self, tree: Any, what: str) -> tuple[Any, ...]:
        """The leaves of ``tree`` (shaped like the output) at the picked places."""
        assert self.part is not None
        if self.part.spec is None:
            return (tree,) if self.part.picked else ()
        try:
            subs = self.part.spec.flatten_up_to(tree)
        except (ValueError, TypeError):
            raise AssertionError(
                f"{self.call}: the {what} does not have the output's structure:\n"
                + structure_errors(self._first(), tree, what)
            ) from None
        return tuple(subs[k] for k in self.part.picked)

    def rebuild_cotangent(self, us: Sequence[Tensor]) -> Any:
        assert self.zeros is not None
        return self.zeros.combine(list(us))


def adapt(
    call: str, f: Callable[..., Any], args: Any, eps: Any, reference: str
) -> tuple[Args, Problem, OutSelector]:
    """A check's user function and arguments as a flat problem, with its per-leaf steps."""
    a = prepare_args(call, f, args, reference)
    prob, sel = flat_problem(call, f, a)
    prob.eps = resolve_eps(call, eps, a.rebuild(a.xs), a.names)
    return a, prob, sel


def flat_problem(call: str, f: Callable[..., Any], a: Args) -> tuple[Problem, OutSelector]:
    sel = OutSelector(call)

    def flat(*xs: Tensor) -> tuple[Tensor, ...]:
        return sel.select(f(*a.rebuild(xs)))

    prob = Problem(flat, a.xs, a.names)
    flat(*a.xs)  # fixes the output structure and its names
    prob.out_names = sel.names
    return prob, sel


# ---------------------------------------------------------------------------------------------
# Higher orders: a problem's JVP and VJP as problems of their own (public transforms only)


def fwd_problem(prob: Problem) -> Problem:
    """The JVP function of ``prob`` as a problem of its own (primals and tangents)."""
    n = len(prob.xs)
    g = prob.fun

    def g_fwd(*zs: Tensor) -> tuple[Tensor, ...]:
        out, tout = functorch_utils.jvp(g, tuple(zs[:n]), tuple(zs[n:]))
        return tuple(out) + zero_none(tuple(tout), tuple(out))

    names = [f"primals {nm}" for nm in prob.names] + [f"tangents {nm}" for nm in prob.names]
    out_names = [f"primal {nm}" for nm in prob.out_names] + [
        f"tangent {nm}" for nm in prob.out_names
    ]
    return Problem(
        g_fwd, prob.xs + prob.xs, names, out_names, prob.eps + prob.eps, prob.forward_levels + 1
    )


def rev_problem(prob: Problem) -> Problem:
    """``x -> vjp(f, x)[1](f(x))`` as a problem of its own, as JAX's check_grads does."""
    g = prob.fun

    def g_rev(*xs: Tensor) -> tuple[Tensor, ...]:
        out, fn = functorch_utils.vjp(g, *xs)
        return zero_none(tuple(fn(tuple(out))), xs)

    out_names = [f"cotangent {nm}" for nm in prob.names]
    return Problem(g_rev, prob.xs, list(prob.names), out_names, list(prob.eps), prob.forward_levels)


def transform_jvp(g: FlatFun) -> FlatJvp:
    def jvp(xs: tuple[Tensor, ...], ts: tuple[Tensor, ...]) -> tuple[tuple[Tensor, ...], ...]:
        out, tout = functorch_utils.jvp(g, xs, ts)
        return tuple(out), tuple(tout)

    return jvp


def transform_vjp(g: FlatFun) -> FlatVjp:
    def vjp(*xs: Tensor) -> tuple[tuple[Tensor, ...], Callable[[tuple[Tensor, ...]], Any]]:
        out, fn = functorch_utils.vjp(g, *xs)
        return tuple(out), fn

    return vjp


# ---------------------------------------------------------------------------------------------
# Options


def _is_number(x: Any) -> bool:
    return x is None or (isinstance(x, (int, float)) and not isinstance(x, bool))


def _check_number(call: str, name: str, val: Any) -> None:
    if val is not None and (isinstance(val, bool) or not isinstance(val, (int, float))):
        raise_type(
            call, f"{name} must be a number", "a float or None", f"{type(val).__name__} {val!r}"
        )
    if val is not None and not (val >= 0 and math.isfinite(val)):
        raise_value(call, f"{name} must be finite and non-negative", "a float >= 0", repr(val))


def options(
    call: str,
    atol: float | None,
    rtol: float | None,
    eps: Any,
    seed: int,
    err_msg: str,
    reference: str = "central",
    on_kink: str = "raise",
) -> Options:
    """Validates the options every check takes."""
    _check_number(call, "atol", atol)
    _check_number(call, "rtol", rtol)
    if _is_number(eps):  # otherwise a per-leaf eps, validated by resolve_eps
        _check_number(call, "eps", eps)
    if eps == 0:
        raise_value(call, "eps must be positive", "a float > 0", repr(eps))
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise_type(call, "seed must be an int", "an int", repr(seed))
    if reference not in REFERENCES:
        raise_value(call, "unknown reference", f"one of {REFERENCES}", repr(reference))
    if on_kink not in ("raise", "reject"):
        raise_value(call, "unknown on_kink", "'raise' or 'reject'", repr(on_kink))
    glob = float(eps) if _is_number(eps) and eps is not None else None
    return Options(call, atol, rtol, glob, seed, err_msg, reference)


def prefix_errors_text(prefix: Any, tree: Any, name: str) -> str:
    """optree's explanation of why ``prefix`` is not a pytree prefix of ``tree`` ("" if it is).

    ``None`` counts as a leaf here: it means "the default" in ``eps`` and "not mapped" in
    ``in_axes``.
    """
    errors = optree.prefix_errors(prefix, tree, none_is_leaf=True, namespace=NAMESPACE)
    return "\n".join(str(e(name)) for e in errors[:3])


def _eps_by_path(call: str, eps: Any, args: Any) -> dict[str, Any]:
    """``eps`` as a dict from key path to step: given so, or read off a pytree prefix of args."""
    if (
        isinstance(eps, dict)
        and eps
        and all(isinstance(k, str) and k.startswith("args") for k in eps)
    ):
        return dict(eps)
    detail = prefix_errors_text(eps, args, "eps")
    if detail:
        raise ValueError(
            f"{call}: eps is neither a number, a dict by key path, nor a pytree prefix of "
            f"args; expected e.g. {{'args[0][\\'w\\']': 1e-3}}, got {eps!r}:\n{detail}"
        )
    accessors, leaves, _ = optree.tree_flatten_with_accessor(
        eps, none_is_leaf=True, namespace=NAMESPACE
    )
    return {a.codify("args"): leaf for a, leaf in zip(accessors, leaves)}


def resolve_eps(call: str, eps: Any, args: tuple[Any, ...], names: list[str]) -> list[float | None]:
    """Per-leaf steps from ``eps`` given as a dict by key path or as a pytree prefix of args."""
    if _is_number(eps):
        return []
    by_path = _eps_by_path(call, eps, args)
    out: list[float | None] = []
    used: set[str] = set()
    for name in names:
        val = None
        for path, leaf in by_path.items():
            if name == path or (name.startswith(path) and name[len(path)] in "[."):
                val = leaf
                used.add(path)
        out.append(val)
    for path, val in by_path.items():
        if not _is_number(val) or (val is not None and not (val > 0 and math.isfinite(val))):
            raise ValueError(
                f"{call}: eps for {path} must be a positive float or None; expected a float "
                f"> 0, got {val!r}."
            )
    unknown = [p for p in by_path if p not in used and isinstance(eps, dict) and p in eps]
    if unknown:
        raise ValueError(
            f"{call}: eps names key paths that are not floating leaves of args; expected some "
            f"of {names}, got {unknown}."
        )
    return [None if v is None else float(v) for v in out]
