"""``custom_vjp`` and ``custom_jvp``: user-defined derivative rules with JAX's semantics."""

from __future__ import annotations

import collections
import contextlib
import functools
import inspect
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, NoReturn

import optree
import torch
import torch.func

from . import _pytree
from . import _torch_hooks as hooks
from ._argnums import check_argnames, optional_argnums, positional_params, resolve_argnums
from ._engine import conj_if_complex
from ._errors import check_callable, describe, fun_name, message, raise_type, raise_value

__all__ = ["custom_jvp", "custom_vjp"]

# NOTE [custom rules as autograd.Functions]
# Each differentiated call becomes one ``torch.autograd.Function`` with ``setup_context`` (so
# torch.func accepts it) and ``generate_vmap_rule = True`` (so ``vmap`` of it and of its
# derivatives works when the user's code is made of vmappable torch ops). Everything a rule needs
# besides tensors travels in one per-call state object, the Function's first argument; it holds
# no closure over itself, so a call leaves no reference cycle behind.
#
# The primal output is computed OUTSIDE the Function, under every active transform, and enters it
# as an input that the Function returns as a fresh view:
# - custom_vjp: ``fwd`` runs outside, so that its residuals are differentiable functions of the
#   inputs; the backward returns ``bwd(res, ct)`` for the inputs and nothing for the residuals.
#   First-order gradients come from the rule alone; a second derivative flows through ``bwd`` into
#   the residuals and from them through ``fwd`` to the inputs, as in JAX. Forward mode over the
#   Function passes on the tangent of ``fwd``'s output, which is JAX's forward-over-reverse
#   (``jvp(grad(f))``); plain forward mode of a custom_vjp function is refused, as in JAX.
# - custom_jvp: ``fun`` runs outside on inputs detached from every transform, so whatever still
#   carries a derivative in its output comes from a value ``fun`` closes over (or a nondiff
#   argument); that part is differentiated by autodiff of ``fun``, the rest by the rule, which
#   speaks of the differentiated arguments only. The Function's ``jvp`` is the rule; its
#   ``backward`` is the transpose of that linear rule, a VJP of
#   ``tangents -> rule(primals, tangents)[1]``, which is what JAX does. The backward pass keeps
#   the Function's outputs, so a rule that uses the primal output is differentiated through it by
#   this same rule at higher orders.
# - Values a custom_vjp's ``bwd`` (or a custom_jvp's rule) closes over that an enclosing
#   transform differentiates enter the Function as inputs with no cotangent, so the engine sees
#   the dependence and keeps the backward pass differentiable.
#
# Complex numbers: rules are written in JAX's convention (NOTE [complex conventions] in
# _engine.py). torch hands a backward ``conj(ct)``-convention cotangents, so custom_vjp's backward
# conjugates on the way in and out; custom_jvp's backward is a torch VJP of a torch-traced linear
# map, already in torch's convention.


# NOTE [plain calls]
# As in JAX, a call in which nothing is differentiated runs the decorated function itself. So does
# a call of a custom function from inside its own rule where the rule would otherwise recurse:
# JAX's canonical ``fwd`` calls ``f``, and a custom_jvp rule may call its function on the
# tangents (that call is part of the linear map being transposed, so it is evaluated, not
# differentiated by its rule again). ``_PLAIN`` holds the functions running such a rule, each with
# an optional memo ``(primals, out)``: while a custom_jvp rule is transposed, its call of the
# function on the very primal tensors it was given returns the output already computed (JAX's rule
# sees the primal output of the same computation), rather than running the function again under
# the transposing grad level.
class _Plain(threading.local):
    owners: tuple[tuple[object, Any], ...] = ()


_PLAIN = _Plain()


@contextlib.contextmanager
def _plain_calls(owner: object, memo: Any = None) -> Iterator[None]:
    if hooks.is_compiling():  # dynamo cannot trace this mutation inside a Function's backward
        yield
        return
    saved = _PLAIN.owners
    _PLAIN.owners = (*saved, (owner, memo))
    try:
        yield
    finally:
        _PLAIN.owners = saved


_NOT_PLAIN = object()


class _Seen:
    """A custom_vjp call's argument tensors, and the output type of ``fun`` once ``fwd`` calls it
    on exactly those arguments (JAX's canonical ``fwd``): the type check then needs no extra run
    of ``fun`` (see NOTE [custom_vjp output type])."""

    __slots__ = ("leaves", "out_type", "spec")

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.leaves, self.spec = _pytree.flatten(args)
        self.out_type: tuple[Any, ...] | None = None

    def same_args(self, args: tuple[Any, ...]) -> bool:
        """Whether ``args`` are the call's own arguments (the very same objects)."""
        leaves, spec = _pytree.flatten(args)
        return spec == self.spec and all(a is b for a, b in zip(leaves, self.leaves))


def _plain_result(owner: object, fun: Callable[..., Any], args: tuple[Any, ...]) -> Any:
    """The result of a plain call (see NOTE [plain calls]), or ``_NOT_PLAIN``."""
    for who, memo in reversed(_PLAIN.owners):
        if who is not owner:
            continue
        if isinstance(memo, _Seen):
            out = fun(*args)
            if memo.same_args(args):
                memo.out_type = _out_type(out)
            return out
        if memo is not None:
            tensors = [x for x in _pytree.flatten(args)[0] if isinstance(x, torch.Tensor)]
            if len(tensors) == len(memo[0]) and all(a is b for a, b in zip(tensors, memo[0])):
                return memo[1]
        return fun(*args)
    return _NOT_PLAIN


def _is_diff_tensor(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and (x.is_floating_point() or x.is_complex())


# torch.compile cannot trace the functorch introspection below: while compiling, the closure
# checks are skipped, and whether a call is differentiated is read from ``requires_grad`` as
# torch.compile sees it. Inside a torch.func transform it reports False for the transform's
# inputs but True for the result of an op on them (hence ``view_as``); it reports False under
# forward mode, so forward mode of a compiled call differentiates the function itself
# (docs/custom_rules.md says so). torch.compile also inlines a Function whose inputs do not
# require grad, calling its forward with a ctx first (see _state_and_tensors).
def _tracked(x: torch.Tensor) -> bool:
    return not hooks.is_compiling() and hooks.carries_derivative(x)


def _differentiating(args: tuple[Any, ...], *funs: Callable[..., Any]) -> bool:
    """Whether a derivative of this call may be taken: a grad/jvp transform is active, or autograd
    tracks an argument or a tensor in the closure cells of ``funs``."""
    if hooks.is_compiling():
        leaves = _pytree.flatten(args)[0]
        return torch.is_grad_enabled() and any(
            isinstance(x, torch.Tensor) and x.view_as(x).requires_grad for x in leaves
        )
    names = hooks.transform_names()
    if "Grad" in names or "Jvp" in names:
        return True
    if not torch.is_grad_enabled():
        return False
    leaves = _pytree.flatten(args)[0]
    return any(isinstance(x, torch.Tensor) and hooks.carries_derivative(x) for x in leaves) or bool(
        _closure_tensors(*funs)
    )


def _under_jvp() -> bool:
    return not hooks.is_compiling() and hooks.forward_levels() > 0


def _state_and_tensors(inputs: tuple[Any, ...]) -> tuple[Any, tuple[torch.Tensor, ...]]:
    # torch.compile calls a Function's forward with a ctx first when it sees no input that
    # requires grad (then no derivative is taken): skip it.
    if not isinstance(inputs[0], (_VjpState, _JvpState)):
        inputs = inputs[1:]
    return inputs[0], inputs[1:]


def _apply(call: str, fn: Any, state: Any, tensors: list[torch.Tensor], *rest: Any) -> Any:
    if hooks.is_compiling():
        tensors = [t.view_as(t) for t in tensors]  # see _differentiating
    try:
        return fn.apply(state, *tensors, *rest)
    except NotImplementedError as e:  # forward mode under torch.compile reaches the base class
        if "jvp" not in str(e):
            raise
        raise TypeError(
            message(
                call,
                "forward mode over a custom rule is not supported under torch.compile",
                "reverse mode (grad, vjp, jacrev)",
                "forward mode",
                "Compile the reverse-mode computation, or run forward mode without torch.compile.",
            )
        ) from e


def _normalize_nondiff(
    api: str, fun: Any, nondiff_argnums: Any, nondiff_argnames: Any = ()
) -> tuple[int, ...]:
    """The positions of the non-differentiated arguments: ``nondiff_argnums`` and, as JAX,
    the positions of the parameters named in ``nondiff_argnames``."""
    nums = optional_argnums(api, fun_name(fun), nondiff_argnums, what="nondiff_argnums")
    call = f"{api}({fun_name(fun)}, nondiff_argnames={nondiff_argnames!r})"
    names = check_argnames(call, "nondiff_argnames", nondiff_argnames)
    if not names:
        return nums
    params = positional_params(fun)
    positional = params[0] if params is not None else []
    unknown = [n for n in names if n not in positional]
    if unknown:
        raise_value(
            call,
            f"nondiff_argnames names {unknown}, which "
            + (
                "are not positional parameters of the function"
                if params
                else "cannot be looked up: the function's signature is not readable"
            ),
            f"names among its positional parameters {positional}",
            f"nondiff_argnames={names!r}",
            "Fix the names (the rules receive positional arguments only, so keyword-only "
            "parameters cannot be named), or use nondiff_argnums.",
        )
    return tuple(dict.fromkeys(nums + tuple(positional.index(n) for n in names)))


def _bind(
    call: str, fun: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple:
    """Keyword arguments resolved into positional ones, as JAX's custom rules do.

    The rules see positional arguments only, so a keyword that cannot be given a position (a
    keyword-only parameter, or one caught by ``**kwargs``) is a ``TypeError`` naming it.
    """
    if not kwargs:
        return args
    bound = inspect.signature(fun).bind(*args, **kwargs)
    bound.apply_defaults()
    passed = [name for name in kwargs if name in bound.kwargs]
    if passed:
        names = ", ".join(passed)
        raise_type(
            call,
            f"{names} cannot be passed to a custom rule: the rules receive positional arguments "
            "only, and a keyword-only parameter has no position",
            "arguments that can be given by position",
            f"keyword-only argument {names}",
            "Make the parameter positional (drop the * before it), or close over the value "
            "(nondiff_argnums takes a positional argument that is not differentiated).",
        )
    return tuple(bound.args)


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


def _tensor_leaves(call: str, tree: Any, what: str) -> tuple[list[torch.Tensor], Any]:
    leaves, spec = _pytree.flatten(tree)
    for i, x in enumerate(leaves):
        if not isinstance(x, torch.Tensor):
            raise_type(
                call,
                f"{_pytree.leaf_names(tree, what)[i]} is not a tensor",
                "tensors at every leaf of the output",
                describe(x),
            )
    return leaves, spec


def _zero_like(leaf: Any) -> Any:
    """A leaf's zero tangent: numbers and tensors get zeros, anything else stays as it is."""
    if isinstance(leaf, torch.Tensor):
        return torch.zeros_like(leaf)
    if isinstance(leaf, (bool, int, float, complex)):
        return type(leaf)(0)
    return leaf


def _fresh(outs: Sequence[torch.Tensor], inputs: Sequence[torch.Tensor]) -> tuple:
    """The outputs of a Function's forward: new views of ``outs`` (an input may not be returned as
    is).

    Under vmap each output also gets an exact zero that depends on every input. torch's generated
    vmap rule for the backward treats it as a per-sample function; an output that comes out
    unbatched while an input is batched would have its cotangent counted once per sample (a
    gradient multiplied by the batch size). Making every output batched keeps the rule exact.
    """
    if not inputs or not (hooks.is_compiling() or hooks.under_vmap()):
        return tuple(o.view_as(o) for o in outs)
    zero = _empty_sum(inputs[0])
    for t in inputs[1:]:
        zero = zero + _empty_sum(t)
    return tuple(o + zero.to(o.dtype) if _is_diff_tensor(o) else o.view_as(o) for o in outs)


def _empty_sum(t: torch.Tensor) -> torch.Tensor:
    """An exact real zero that depends on ``t`` (so it is batched when ``t`` is)."""
    empty = t.flatten()[:0]
    return (empty.real if empty.is_complex() else empty).sum(dtype=torch.float32)


def _closure_tensors(*funs: Callable[..., Any]) -> list[torch.Tensor]:
    """Tensors in the rules' closure cells that an enclosing transform differentiates.

    They enter the Function as inputs (with no cotangent), so that the engine sees the
    dependence and keeps the backward pass differentiable: a rule's derivative with respect to a
    value it closes over then comes out right at higher orders (see docs/custom_rules.md).
    """
    found: list[torch.Tensor] = []
    if hooks.is_compiling():
        return found
    for fn in funs:
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            if isinstance(value, torch.Tensor):
                leaves: list[Any] = [value]
            elif isinstance(value, (tuple, list, dict)):
                leaves = _pytree.flatten(value)[0]
            else:
                continue
            found.extend(x for x in leaves if _is_diff_tensor(x) and _tracked(x))
    return found


class _Args:
    """One call's positional arguments: the differentiated tensors, and how to put values back.

    ``part`` is a :class:`_pytree.Partition` of the tuple of differentiated arguments that picks
    their floating/complex tensors. Once the tensors are taken for the Function (which saves what
    it needs), the state keeps no reference to them.
    """

    __slots__ = ("diff_pos", "nondiff", "part", "rest", "tensors")

    def __init__(self, args: tuple[Any, ...], nondiff_pos: Sequence[int]) -> None:
        self.diff_pos = tuple(i for i in range(len(args)) if i not in nondiff_pos)
        self.nondiff = tuple(args[i] for i in nondiff_pos)
        self.rest = args
        diff = tuple(args[i] for i in self.diff_pos)
        self.tensors, self.part = _pytree.partition(diff, _is_diff_tensor)

    def take_tensors(self) -> list[torch.Tensor]:
        """The differentiated tensors; afterwards this object holds no reference to them."""
        tensors, self.tensors = self.tensors, []
        picked = set(self.part.picked)
        leaves = [None if i in picked else x for i, x in enumerate(self.part.leaves)]
        self.part = _pytree.Partition(self.part.spec, leaves, self.part.picked)
        self.rest = tuple(None if i in self.diff_pos else a for i, a in enumerate(self.rest))
        return tensors

    def full(self, diff_values: Sequence[Any]) -> tuple[Any, ...]:
        """All positional arguments, with the differentiated ones given in order."""
        out = list(self.rest)
        for i, v in zip(self.diff_pos, diff_values):
            out[i] = v
        return tuple(out)

    def diff(self, tensors: Sequence[torch.Tensor]) -> tuple[Any, ...]:
        """The differentiated arguments with ``tensors`` at their tensor leaves."""
        return tuple(self.part.combine(list(tensors)))

    def tangents(self, tensors: Sequence[torch.Tensor]) -> tuple[Any, ...]:
        """Tangents of the differentiated arguments: ``tensors``, and zeros at the other leaves
        (a Python number in a differentiated argument is a constant)."""
        zeros = _pytree.Partition(
            self.part.spec, [_zero_like(x) for x in self.part.leaves], self.part.picked
        )
        return tuple(zeros.combine(list(tensors)))


def _nondiff_positions(call: str, nondiff_argnums: tuple[int, ...], nargs: int) -> list[int]:
    return sorted(set(resolve_argnums(call, nondiff_argnums, nargs, what="nondiff_argnums")))


def _refuse_tracked_nondiff(call: str, args: tuple[Any, ...], positions: Sequence[int]) -> None:
    for i in positions:
        for leaf in _pytree.flatten(args[i])[0]:
            if isinstance(leaf, torch.Tensor) and _tracked(leaf):
                raise_type(
                    call,
                    f"argument {i} is in nondiff_argnums but is being differentiated by an "
                    "enclosing transform",
                    "values without a derivative in nondiff_argnums",
                    describe(leaf),
                    f"Take {i} out of nondiff_argnums so that the rule gives its derivative.",
                )


def _closure_error(call: str, what: str, fix: str) -> NoReturn:
    raise_type(
        call,
        f"{what} depends on a value it closes over that an enclosing transform is "
        "differentiating; the custom rule cannot give that derivative",
        "a function of its arguments only",
        "a closed-over tensor that carries a derivative",
        fix,
    )


def _check_leaf_shapes(
    call: str,
    got: Sequence[Any],
    like: Sequence[torch.Tensor],
    name_of: Callable[[int], str],
    fix: str,
) -> list[torch.Tensor]:
    """Tangent/cotangent leaves checked against primal leaves: tensors of the primal's shape (a
    Python number for a 0-d primal), cast to the primal's dtype. ``name_of(i)`` names leaf i."""
    out = []
    for i, (g, x) in enumerate(zip(got, like)):
        if isinstance(g, (int, float, complex)) and not isinstance(g, bool):
            g = torch.tensor(g, dtype=x.dtype, device=x.device)
        if not isinstance(g, torch.Tensor) or g.shape != x.shape:
            raise_value(
                call,
                f"{name_of(i)} has the wrong shape",
                f"shape {tuple(x.shape)} (the primal's)",
                describe(g),
                fix,
            )
        out.append(g if g.dtype == x.dtype else g.to(x.dtype))
    return out


def _leaf_type(x: Any) -> tuple[Any, ...]:
    if isinstance(x, torch.Tensor):
        return (tuple(x.shape), x.dtype)
    return (type(x),)


def _out_type(out: Any) -> tuple[Any, ...]:
    """A function output's type: its structure, and each leaf's shape and dtype (the type of a
    leaf that is not a tensor). Under ``vmap`` the shapes are per example."""
    leaves, spec = _pytree.flatten(out)
    return (spec, tuple(_leaf_type(x) for x in leaves))


def _describe_type(leaf_type: tuple[Any, ...]) -> str:
    if len(leaf_type) == 2:
        return f"a tensor of dtype {leaf_type[1]} and shape {leaf_type[0]}"
    return f"a {leaf_type[0].__name__}"


def _type_mismatch(
    got: Any, expected: tuple[Any, ...], root: str, numbers_for_0d: bool = False
) -> tuple[str, str, str] | None:
    """``(what, expected, got)`` for the first way ``got`` differs from the output type
    ``expected`` (see :func:`_out_type`), or ``None`` when it matches. With ``numbers_for_0d`` a
    Python number stands for a 0-d tensor of any dtype."""
    leaves, spec = _pytree.flatten(got)
    if spec != expected[0]:
        return (
            f"{root} does not have the function's output structure",
            f"structure {expected[0]}",
            f"structure {spec}",
        )
    for i, (x, want) in enumerate(zip(leaves, expected[1])):
        number = isinstance(x, (int, float, complex)) and not isinstance(x, bool)
        if numbers_for_0d and number and len(want) == 2 and want[0] == ():
            continue
        if _leaf_type(x) != want:
            return (
                f"{_pytree.leaf_names(got, root)[i]} does not match the function's output",
                f"{_describe_type(want)} (the function's)",
                describe(x),
            )
    return None


# ---------------------------------------------------------------------------------------------
# custom_vjp


_BWD_FIX = (
    "bwd must return a tuple with one cotangent per differentiated argument, each with that "
    "argument's structure and shapes (None for a zero cotangent, of a leaf or a whole argument)."
)


def _align_cotangent(arg: Any, ct: Any) -> list[Any] | None:
    """``ct``'s leaves matched to ``arg``'s leaves, with ``None`` (zero) standing for any subtree;
    ``None`` when the structures differ."""
    if ct is None:
        return [None] * len(_pytree.flatten(arg)[0])
    arg_spec = _pytree.flatten(arg)[1]
    ct_leaves, ct_spec = _pytree.flatten(ct)
    if ct_spec == arg_spec:
        return ct_leaves
    if arg_spec.is_leaf() or optree.tree_structure(ct, namespace=_pytree.NAMESPACE).is_leaf():
        return None
    a = optree.tree_flatten_one_level(arg, namespace=_pytree.NAMESPACE)
    c = optree.tree_flatten_one_level(ct, none_is_leaf=True, namespace=_pytree.NAMESPACE)
    if type(arg) is not type(ct) or a.entries != c.entries or len(a.children) != len(c.children):
        return None
    out: list[Any] = []
    for sub_arg, sub_ct in zip(a.children, c.children):
        sub = _align_cotangent(sub_arg, sub_ct)
        if sub is None:
            return None
        out.extend(sub)
    return out


def _refuse_closed_over_output(call: str, owner: custom_vjp, args: _Args) -> None:
    """fwd on inputs detached from every transform: an output that still carries a derivative
    depends on a closed-over value the rule cannot differentiate (JAX refuses it too)."""
    detached = args.full(args.diff([t.detach() for t in args.tensors]))
    with _plain_calls(owner):
        out = owner.fwd(*detached)  # type: ignore[misc]
    leaves = _pytree.flatten(out[0] if isinstance(out, (tuple, list)) else out)[0]
    if any(isinstance(x, torch.Tensor) and _tracked(x) for x in leaves):
        _closure_error(
            call,
            "the function's output",
            "Pass the value as an argument of the custom function (bwd then returns its "
            "cotangent), or return it among fwd's residuals if only bwd uses it.",
        )


# NOTE [custom_vjp output type]
# JAX checks that ``fwd``'s primal output has the function's output type (structure, shapes,
# dtypes); without the check a wrong ``fwd`` silently changes the value of the call. The
# function's output type costs a run of the function:
# - none when ``fwd`` calls the function on exactly its own arguments (JAX's canonical
#   ``return f(x), residuals``): that plain call's output is recorded (``_Seen``);
# - otherwise one run per argument signature (structure, shapes, dtypes, devices of the tensors,
#   the values of the other leaves), under ``torch.no_grad()`` on detached inputs with the random
#   state restored afterwards, kept in a small LRU cache per function. The run happens under the
#   active transforms: under ``vmap`` both outputs are seen per example, so the shapes compared,
#   and the signature's shapes, are per example, and batching cannot cause a mismatch.
# A mismatch against a cached type is checked again with a fresh run before it is reported (the
# function may depend on something besides its arguments). If that run raises (a function that
# needs grad mode, say), the check is skipped. While compiling, no check is made.
_OUT_TYPES_SIZE = 32
_OUT_TYPES_LOCK = threading.Lock()
_UNKNOWN: tuple[Any, ...] = ()


def _signature(args: tuple[Any, ...]) -> tuple[Any, ...] | None:
    """The cache key of an argument tuple, or ``None`` if a leaf cannot be hashed."""
    leaves, spec = _pytree.flatten(args)
    key: list[Any] = [spec]
    for x in leaves:
        if isinstance(x, torch.Tensor):
            key.append((tuple(x.shape), x.dtype, x.device))
            continue
        try:
            hash(x)
        except TypeError:
            return None
        key.append((type(x), x))
    return tuple(key)


def _run_for_type(owner: custom_vjp, args: tuple[Any, ...]) -> tuple[Any, ...]:
    """The function's output type on ``args`` (``_UNKNOWN`` if it cannot be run that way)."""
    tensors, part = _pytree.partition(args, _pytree.is_tensor)
    detached = part.combine([t.detach() for t in tensors])
    cuda = sorted({t.device.index or 0 for t in tensors if t.device.type == "cuda"})
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=cuda), _plain_calls(owner):
            return _out_type(owner.fun(*detached))
    except Exception:  # an extra run for a check only: the call goes on without it
        return _UNKNOWN


def _function_out_type(
    owner: custom_vjp, args: tuple[Any, ...], fresh: bool = False
) -> tuple[tuple[Any, ...], bool]:
    """The function's output type on ``args``, and whether it came from the cache."""
    cache = owner._out_types
    key = _signature(args)
    if key is not None and not fresh:
        with _OUT_TYPES_LOCK:
            hit = cache.get(key)
            if hit is not None:
                cache.move_to_end(key)
                return hit, True
    out_type = _run_for_type(owner, args)
    if key is not None:
        with _OUT_TYPES_LOCK:
            cache[key] = out_type
            cache.move_to_end(key)
            while len(cache) > _OUT_TYPES_SIZE:
                cache.popitem(last=False)
    return out_type, False


def _check_fwd_output(call: str, owner: custom_vjp, args: tuple, seen: _Seen, out: Any) -> None:
    """Refuse a ``fwd`` whose primal output does not have the function's output type."""
    if hooks.is_compiling():
        return
    expected, cached = (seen.out_type, False) if seen.out_type is not None else (None, True)
    if expected is None:
        expected, cached = _function_out_type(owner, args)
    if expected is _UNKNOWN or _type_mismatch(out, expected, "out") is None:
        return
    if cached:
        expected = _function_out_type(owner, args, fresh=True)[0]
    wrong = None if expected is _UNKNOWN else _type_mismatch(out, expected, "out")
    if wrong is not None:
        raise_type(
            f"{call} fwd",
            *wrong,
            "fwd must return (out, residuals) with out of the function's output structure, "
            "shapes and dtypes; fwd may call the function: return f(*args), residuals.",
        )


class _VjpState:
    """What one custom_vjp call's Function needs besides tensors."""

    __slots__ = ("args", "bwd", "call", "forward_refusal", "n", "out_spec", "res_part")

    def __init__(self, call: str, bwd: Callable[..., Any], args: _Args) -> None:
        self.call, self.bwd, self.args = call, bwd, args
        self.forward_refusal: str | None = None
        self.out_spec: Any = None
        self.res_part: Any = None
        self.n = (0, 0, 0, 0)  # primal tensors, residual tensors, closed-over tensors, outputs

    def cotangents(
        self,
        res_tensors: Sequence[torch.Tensor],
        cts: Sequence[torch.Tensor],
        like: Sequence[torch.Tensor],
    ) -> list[torch.Tensor | None]:
        """Run ``bwd`` and check what it returns against the differentiated arguments."""
        res = self.res_part.combine(list(res_tensors))
        ct = _pytree.unflatten(self.out_spec, [conj_if_complex(c) for c in cts])
        grads = self.bwd(*self.args.nondiff, res, ct)
        call = f"{self.call} bwd"
        n_args = len(self.args.diff_pos)
        if not isinstance(grads, (tuple, list)) or len(grads) != n_args:
            raise_value(
                call,
                "bwd returned the wrong number of cotangents",
                f"a tuple of {n_args}",
                describe(grads),
                _BWD_FIX,
            )
        diff_args = self.args.diff(like)
        aligned = _align_cotangent(tuple(diff_args), tuple(grads))
        if aligned is None:
            detail = _pytree.structure_errors(tuple(diff_args), tuple(grads), "bwd_output")
            raise ValueError(
                message(
                    call,
                    "the cotangents do not have the arguments' structure",
                    "one cotangent per argument, shaped like it",
                    "another structure",
                    _BWD_FIX,
                )
                + "\n"
                + detail
            )
        picked = self.args.part.picked
        present = [k for k, i in enumerate(picked) if aligned[i] is not None]

        def name_of(j: int) -> str:
            return _pytree.leaf_names(tuple(diff_args), "bwd_output")[picked[present[j]]]

        checked = _check_leaf_shapes(
            call,
            [aligned[picked[k]] for k in present],
            [like[k] for k in present],
            name_of,
            _BWD_FIX,
        )
        # With grad mode off no derivative of this backward pass is taken: a graph that bwd built
        # (e.g. by calling vjp) is not handed on.
        keep_graph = torch.is_grad_enabled()
        out: list[torch.Tensor | None] = [None] * len(picked)
        for k, g in zip(present, checked):
            out[k] = conj_if_complex(g.detach() if g.requires_grad and not keep_graph else g)
        return out


class _CustomVjpFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(*inputs: Any) -> Any:
        # inputs: the state, primal tensors, residual tensors, closed-over tensors, fwd's outputs
        state, tensors = _state_and_tensors(inputs)
        start = sum(state.n[:3])
        return _fresh(tensors[start : start + state.n[3]], tensors)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        state: _VjpState = inputs[0]
        n_in, n_res, n_cap, n_out = state.n
        ctx.meta = state
        # One set for both (torch's generated vmap rule tracks one set of saved tensors).
        kept = (*inputs[1 : 1 + n_in + n_res], *inputs[1 + n_in + n_res + n_cap :][:n_out])
        ctx.save_for_backward(*kept)
        ctx.save_for_forward(*kept)

    @staticmethod
    def backward(ctx: Any, *cts: torch.Tensor) -> Any:
        state: _VjpState = ctx.meta
        n_in, n_res, n_cap, n_out = state.n
        saved = ctx.saved_tensors
        grads = state.cotangents(saved[n_in : n_in + n_res], cts, saved[:n_in])
        return (None, *grads, *([None] * (n_res + n_cap + n_out)))


class _CustomVjpForwardFunction(_CustomVjpFunction):
    """With forward mode over the rule, for calls made under a jvp level (torch.compile cannot
    trace a Function that defines ``jvp``, so the other calls use the base class)."""

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        state: _VjpState = ctx.meta
        if state.forward_refusal is not None:
            raise TypeError(state.forward_refusal)
        outs = ctx.saved_tensors[state.n[0] + state.n[1] :]
        return tuple(
            torch.zeros_like(o) if t is None else t
            for o, t in zip(outs, tangents[1 + sum(state.n[:3]) :])
        )


def _forward_refusal(call: str) -> str | None:
    """Why forward mode over this call must be refused, if it must (read when the call is made)."""
    names = hooks.transform_names()
    if names.count("Jvp") >= 2:
        return _nested_forward_message(call)
    if "Jvp" in names and "Grad" not in names[len(names) - names[::-1].index("Jvp") :]:
        return message(
            call,
            "a custom_vjp function has no forward-mode rule, so jvp/jacfwd cannot differentiate it",
            "reverse mode (grad, vjp, jacrev), or forward mode over it (jvp(grad(f)), "
            "jacfwd(jacrev(f)))",
            "forward mode",
            "Define the rule with custom_jvp instead (it serves both modes).",
        )
    return None


class custom_vjp:
    """A function with a custom reverse-mode rule, as ``jax.custom_vjp``.

    ``f = custom_vjp(fun)``, then ``f.defvjp(fwd, bwd)``: ``fwd(*args)`` returns
    ``(out, residuals)`` (residuals any pytree; ``fwd`` may call ``f`` itself);
    ``bwd(*nondiff_args, residuals, ct)`` returns a tuple with one cotangent per differentiated
    argument (``None`` for zero, for a leaf or a whole argument; Python numbers for 0-d leaves).
    A call in which nothing is differentiated runs ``fun`` itself. The rule is used by ``grad``,
    ``vjp``, ``jacrev`` and ``vmap`` of them at any nesting; ``fwd`` and ``bwd`` are themselves
    differentiated for higher orders, including forward over reverse (``jvp(grad(f))``,
    ``jacfwd(jacrev(f))``), as in JAX. Forward mode of the function itself (``jvp(f)``,
    ``jacfwd(f)``) raises ``TypeError``: use :class:`custom_jvp` for that. ``fwd``'s ``out``
    must have the function's output structure, shapes and dtypes (``TypeError`` otherwise); when
    ``fwd`` does not call ``f`` on its own arguments, finding that type costs one run of ``fun``
    per argument signature, cached (docs/custom_rules.md). Keyword-only parameters cannot be
    passed (the rules take positional arguments): ``TypeError``.

    Example:
        >>> import torch
        >>> from functorch_utils import custom_vjp, grad
        >>> @custom_vjp
        ... def clip_gradient(x):
        ...     return x
        >>> def fwd(x):
        ...     return clip_gradient(x), None
        >>> def bwd(res, g):
        ...     return (g.clamp(-1.0, 1.0),)
        >>> clip_gradient.defvjp(fwd, bwd)
        >>> grad(lambda x: 5.0 * clip_gradient(x))(torch.tensor(2.0))
        tensor(1.)
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        nondiff_argnums: Sequence[int] = (),
        nondiff_argnames: Sequence[str] = (),
    ) -> None:
        check_callable("custom_vjp", fun)
        self.fun = fun
        self.nondiff_argnums = _normalize_nondiff(
            "custom_vjp", fun, nondiff_argnums, nondiff_argnames
        )
        self.fwd: Callable[..., Any] | None = None
        self.bwd: Callable[..., Any] | None = None
        # the function's output type per argument signature (NOTE [custom_vjp output type])
        self._out_types: collections.OrderedDict[Any, tuple[Any, ...]] = collections.OrderedDict()
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
        args = _bind(call, self.fun, args, kwargs)
        nondiff = _nondiff_positions(call, self.nondiff_argnums, len(args))
        state = _VjpState(call, self.bwd, _Args(args, nondiff))
        plain = _plain_result(self, self.fun, args)
        if plain is not _NOT_PLAIN:
            return plain
        if not _differentiating(args, self.fun, self.fwd):
            return self.fun(*args)
        _refuse_tracked_nondiff(call, args, nondiff)
        if _closure_tensors(self.fun, self.fwd):
            _refuse_closed_over_output(call, self, state.args)
        seen = _Seen(args)
        with _plain_calls(self, seen):
            res_out = self.fwd(*args)
        if not (isinstance(res_out, (tuple, list)) and len(res_out) == 2):
            raise_type(
                f"{call} fwd",
                "fwd must return a pair (output, residuals)",
                "a tuple of length 2",
                describe(res_out),
            )
        out_leaves, state.out_spec = _tensor_leaves(call, res_out[0], "out")
        _check_fwd_output(call, self, args, seen, res_out[0])
        res_tensors, state.res_part = _pytree.partition(res_out[1], _pytree.is_tensor)
        captured = _closure_tensors(self.bwd)
        tensors = state.args.take_tensors()
        state.n = (len(tensors), len(res_tensors), len(captured), len(out_leaves))
        state.forward_refusal = _forward_refusal(call) if _under_jvp() else None
        fn = _CustomVjpForwardFunction if _under_jvp() else _CustomVjpFunction
        new = _apply(call, fn, state, tensors, *res_tensors, *captured, *out_leaves)
        return _pytree.unflatten(state.out_spec, list(new))


# ---------------------------------------------------------------------------------------------
# custom_jvp


class _JvpState:
    """What one custom_jvp call's Function needs besides tensors."""

    __slots__ = ("args", "autodiff_rest", "call", "n", "out_spec", "owner", "rule")

    def __init__(self, call: str, owner: custom_jvp, args: _Args) -> None:
        self.call, self.owner, self.args = call, owner, args
        self.rule: Callable[..., Any] = owner.rule  # type: ignore[assignment]
        self.out_spec: Any = None
        self.autodiff_rest = False  # the output carries derivatives of closed-over values
        self.n = (0, 0, 0)  # primal tensors, closed-over tensors, outputs

    def tangent_out(
        self,
        primals: Sequence[torch.Tensor],
        tangents: Sequence[torch.Tensor],
        like: Sequence[torch.Tensor],
    ) -> tuple[torch.Tensor, ...]:
        """The rule's output tangent, checked against the output's structure and shapes."""
        diff_p = self.args.diff(primals)
        diff_t = self.args.tangents(tangents)
        res = self.rule(*self.args.nondiff, diff_p, diff_t)
        call = f"{self.call} rule"
        if not (isinstance(res, (tuple, list)) and len(res) == 2):
            raise_type(
                call,
                "the JVP rule must return a pair (primal_out, tangent_out)",
                "a tuple of length 2",
                describe(res),
            )
        out_type = (self.out_spec, tuple(_leaf_type(x) for x in like))
        wrong = _type_mismatch(res[0], out_type, "primal_out", numbers_for_0d=True)
        if wrong is not None:
            raise_type(
                call,
                *wrong,
                "The rule's primal output must have the function's output structure, shapes and "
                "dtypes (it may call the function: return f(*primals), tangent_out).",
            )
        fix = "Return a tangent with the output's structure and shapes."
        t_leaves, t_spec = _pytree.flatten(res[1])
        if t_spec != self.out_spec:
            raise ValueError(
                message(
                    call,
                    "tangent_out does not have the output's structure",
                    f"structure {self.out_spec}",
                    f"structure {t_spec}",
                    fix,
                )
            )
        names = functools.partial(_leaf_name, res[1], "tangent_out")
        return tuple(_check_leaf_shapes(call, t_leaves, like, names, fix))


class _CustomJvpFunction(torch.autograd.Function):
    generate_vmap_rule = True

    @staticmethod
    def forward(*inputs: Any) -> Any:
        # inputs: the state, primal tensors, closed-over tensors, fun's outputs
        state, tensors = _state_and_tensors(inputs)
        start = state.n[0] + state.n[1]
        return _fresh(tensors[start : start + state.n[2]], tensors)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        state: _JvpState = inputs[0]
        ctx.meta = state
        ctx.counts = state.n
        # The outputs, not fun's detached values: a rule that uses the primal output (``ans`` in
        # ``t * ans * (1 - ans)``) is then differentiated through it by this same rule.
        outputs = output if isinstance(output, tuple) else (output,)
        kept = (*inputs[1 : 1 + state.n[0]], *outputs)
        ctx.save_for_backward(*kept)
        ctx.save_for_forward(*kept)

    @staticmethod
    def backward(ctx: Any, *cts: torch.Tensor) -> Any:
        state: _JvpState = ctx.meta
        n_in, n_cap, n_out = ctx.counts
        saved = ctx.saved_tensors
        primals, outs = saved[:n_in], saved[n_in:]
        zeros = tuple(torch.zeros_like(p) for p in primals)

        live = [k for k, o in enumerate(outs) if _is_diff_tensor(o)]  # integer outputs: no ct

        def linear(*tangents: torch.Tensor) -> tuple[torch.Tensor, ...]:
            t_out = state.tangent_out(primals, tangents, outs)
            return tuple(t_out[k] for k in live)

        memo = (primals, _pytree.unflatten(state.out_spec, list(outs)))
        with _plain_calls(state.owner, memo):
            pull = torch.func.vjp(linear, *zeros)[1]
            grads = pull(tuple(cts[k] for k in live))
        rest = cts if state.autodiff_rest else (None,) * n_out
        return (None, *grads, *([None] * n_cap), *rest)


class _CustomJvpForwardFunction(_CustomJvpFunction):
    """With the rule as its ``jvp``, for calls made under a jvp level (torch.compile cannot trace
    a Function that defines ``jvp``, so the other calls use the base class)."""

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> Any:
        state: _JvpState = ctx.meta
        n_in = state.n[0]
        if hooks.forward_levels() >= 2:
            raise TypeError(_nested_forward_message(state.call))
        saved = ctx.saved_tensors
        primals, outs = saved[:n_in], saved[n_in:]
        tans = [torch.zeros_like(p) if t is None else t for p, t in zip(primals, tangents[1:])]
        memo = (primals, _pytree.unflatten(state.out_spec, list(outs)))
        with _plain_calls(state.owner, memo):  # the rule's own call on its primals: no rerun
            out_tangents = state.tangent_out(primals, tans, outs)
        if state.autodiff_rest:
            rest = tangents[1 + n_in + state.n[1] :]
            out_tangents = tuple(t if r is None else t + r for t, r in zip(out_tangents, rest))
        return tuple(t if _is_diff_tensor(o) else None for t, o in zip(out_tangents, outs))


class custom_jvp:
    """A function with a custom forward-mode rule, as ``jax.custom_jvp``.

    ``f.defjvp(rule)`` with ``rule(primals, tangents) -> (primal_out, tangent_out)``, or
    ``f.defjvps(*rules)`` with one ``rule_i(g_i, ans, *primals)`` per argument (``None`` for no
    dependence). The rule serves ``jvp``, ``jacfwd``, ``hessian`` and ``vmap``, and reverse mode
    uses its transpose (as JAX does), so ``grad`` of the function uses the custom rule too. The
    rule must be linear in the tangents; it may call the function itself, on the primals or on
    the tangents. Its ``primal_out`` must have the function's output structure, shapes and
    dtypes (``TypeError`` otherwise). A call in which nothing is differentiated runs the function
    itself; a Python number among the arguments is a constant, with a zero tangent.

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

    def __init__(
        self,
        fun: Callable[..., Any],
        nondiff_argnums: Sequence[int] = (),
        nondiff_argnames: Sequence[str] = (),
    ) -> None:
        check_callable("custom_jvp", fun)
        self.fun = fun
        self.nondiff_argnums = _normalize_nondiff(
            "custom_jvp", fun, nondiff_argnums, nondiff_argnames
        )
        self.rule: Callable[..., Any] | None = None
        functools.update_wrapper(self, fun)

    def defjvp(self, jvp: Callable[..., Any]) -> Callable[..., Any]:
        """Set the rule ``jvp(primals, tangents) -> (primal_out, tangent_out)``; returns it."""
        check_callable("custom_jvp.defjvp", jvp)
        self.rule = jvp
        return jvp

    def defjvps(self, *jvps: Callable[..., Any] | None) -> None:
        """One rule per argument: ``jvp_i(g_i, ans, *primals)`` gives its tangent contribution."""
        self.rule = functools.partial(_sum_of_rules, self.fun, jvps)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        call = f"custom_jvp({fun_name(self.fun)})"
        if self.rule is None:
            _no_rule(call, "JVP", "f.defjvp(rule)", "Call defjvp (or defjvps) on the function.")
        args = _bind(call, self.fun, args, kwargs)
        nondiff = _nondiff_positions(call, self.nondiff_argnums, len(args))
        state = _JvpState(call, self, _Args(args, nondiff))
        plain = _plain_result(self, self.fun, args)
        if plain is not _NOT_PLAIN:
            return plain
        if not _differentiating(args, self.fun):
            return self.fun(*args)
        tensors = state.args.take_tensors()
        detached = state.args.diff([t.detach() for t in tensors])
        # See NOTE [custom rules as autograd.Functions]: what still carries a derivative in this
        # output comes from closed-over values or nondiff arguments, and is differentiated by
        # autodiff of fun (the rule speaks only of the differentiated arguments).
        out = self.fun(*state.args.full(detached))
        out_leaves, state.out_spec = _tensor_leaves(call, out, "out")
        state.autodiff_rest = any(_tracked(o) for o in out_leaves)
        captured = _closure_tensors(self.rule)
        state.n = (len(tensors), len(captured), len(out_leaves))
        fn = _CustomJvpForwardFunction if _under_jvp() else _CustomJvpFunction
        new = _apply(call, fn, state, tensors, *captured, *out_leaves)
        return _pytree.unflatten(state.out_spec, list(new))


def _sum_of_rules(
    fun: Callable[..., Any],
    jvps: Sequence[Callable[..., Any] | None],
    primals: tuple[Any, ...],
    tangents: tuple[Any, ...],
) -> tuple[Any, Any]:
    """The JVP rule that ``defjvps`` defines: the sum of the per-argument contributions."""
    ans = fun(*primals)
    total: Any = None
    for jvp_i, t in zip(jvps, tangents):
        if jvp_i is None:
            continue
        part = jvp_i(t, ans, *primals)
        total = (
            part
            if total is None
            else optree.tree_map(torch.add, total, part, namespace=_pytree.NAMESPACE)
        )
    if total is None:
        total = optree.tree_map(torch.zeros_like, ans, namespace=_pytree.NAMESPACE)
    return ans, total


def _leaf_name(tree: Any, root: str, i: int) -> str:
    return _pytree.leaf_names(tree, root)[i]


def _nested_forward_message(call: str) -> str:
    return message(
        call,
        "forward-over-forward differentiation (jvp of jvp, jacfwd of jacfwd) of a custom rule is "
        "not supported: torch drops the outer tangent through an autograd.Function's jvp and "
        "would return zeros",
        "at most one forward-mode level over the rule",
        "nested forward mode",
        "Use reverse mode for the outer derivative: jacfwd(jacrev(f)), hessian(f), "
        "jvp(grad(f)) or grad(grad(f)) all work.",
    )


# ---------------------------------------------------------------------------------------------
# custom_gradient


def custom_gradient(fun: Callable[..., Any]) -> custom_vjp:
    """A custom gradient from one function returning ``(value, vjp_rule)``: ``jax.custom_gradient``.

    ``fun(*args)`` returns ``(out, rule)``, where ``rule(ct)`` gives the tuple of cotangents, one
    per argument, and may close over values computed in ``fun`` (sharing work between the two
    passes). The result is a :class:`custom_vjp` function: a plain call gives ``out``, and reverse
    mode uses ``rule``. Forward mode is refused, as for every ``custom_vjp``.

    Example:
        >>> import torch
        >>> from functorch_utils import custom_gradient, grad
        >>> @custom_gradient
        ... def f(x):
        ...     return x ** 2, lambda g: (g * x,)
        >>> f(torch.tensor(3.0)), grad(f)(torch.tensor(3.0))
        (tensor(9.), tensor(3.))
    """
    check_callable("custom_gradient", fun)
    name = fun_name(fun)

    def pair(args: tuple[Any, ...]) -> tuple[Any, Callable[..., Any]]:
        res = fun(*args)
        if not (isinstance(res, (tuple, list)) and len(res) == 2 and callable(res[1])):
            raise_type(
                f"custom_gradient({name})",
                "the function must return a pair (output, vjp_rule)",
                "a tuple (out, rule) with rule(ct) returning one cotangent per argument",
                describe(res),
                "Return the output together with the function that maps its cotangent to the "
                "arguments' cotangents.",
            )
        return res[0], res[1]

    def primal(*args: Any) -> Any:
        return pair(args)[0]

    def fwd(*args: Any) -> tuple[Any, Any]:
        out, rule = pair(args)
        return out, _Rule(rule)

    def bwd(rule: _Rule, ct: Any) -> Any:
        return rule.fn(ct)

    functools.update_wrapper(primal, fun)
    wrapped = custom_vjp(primal)
    wrapped.defvjp(fwd, bwd)
    return wrapped


class _Rule:
    """custom_gradient's rule, carried as a residual (a leaf that is not a tensor)."""

    __slots__ = ("fn",)

    def __init__(self, fn: Callable[..., Any]) -> None:
        self.fn = fn
