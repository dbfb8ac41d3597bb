"""The one place that chooses between the two engines for a call, and the shared input handling.

# NOTE [two engines]
# torch.func is the composable engine: its transforms keep levels, so ``grad(grad(f))`` and
# ``vmap(grad(f))`` are correct. It pays for that: ``torch.func.grad`` always builds a
# double-backward graph (1.6-2.5x the peak memory of a plain backward) and costs ~79 us per call on
# a tiny function. The autograd tape (``torch.autograd.grad``) is cheaper, needs no graph it will not
# use, and is the only engine that runs legacy ``torch.autograd.Function``s (no ``setup_context``).
#
# So: when no functorch transform is active and we are not being traced by torch.compile, reverse
# mode runs on the tape; otherwise it runs on torch.func. Nested calls of our own transforms at top
# level stay on the tape (each inner call sees inputs that require grad and keeps its graph), which
# is plain higher-order autograd. Forward mode always uses torch.func.jvp.
#
# Detecting "a functorch transform is active" uses ``torch._C._functorch.maybe_current_level()``,
# a private hook (there is no public one); tests/test_engine.py pins its behaviour.

# NOTE [outer autograd]
# Results stay connected to classic autograd outside the transform: if an argument requires grad,
# or the function's graph reaches a tensor that requires grad (a captured parameter), the tape
# path keeps the graph of the backward pass (create_graph=True) so an outer ``.backward()`` or
# ``torch.autograd.grad`` flows through the gradient. Otherwise the graph is freed at once.

# NOTE [complex conventions]
# torch's reverse mode computes ``ct -> conj(J)^T ct`` for holomorphic maps (grad of |z|^2 is 2z);
# JAX's vjp is the plain transpose of the (R-linear) JVP. The two agree up to conjugation:
# ``vjp_jax(ct) = conj(vjp_torch(conj(ct)))``. Every reverse-mode result on complex leaves goes
# through that identity; forward mode needs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.func

from . import _pytree
from ._errors import describe, raise_type

__all__ = [
    "Inputs",
    "prepare_inputs",
    "use_tape",
    "nested_forward_mode",
    "needs_outer_graph",
    "tape_leaf",
    "func_call",
    "conj_if_complex",
    "detach_tree",
    "split_aux",
    "LEGACY_FUNCTION_HINT",
    "LegacyFunctionError",
]

_maybe_current_level = torch._C._functorch.maybe_current_level
_is_compiling = torch.compiler.is_compiling


def nested_forward_mode() -> bool:
    """Whether two or more forward-mode (jvp) levels are active.

    torch drops the outer tangent through an ``autograd.Function``'s ``jvp`` staticmethod under
    nested forward mode (forward-over-forward gives zeros), so custom rules refuse it rather than
    return a wrong answer. Uses the private ``retrieve_all_functorch_interpreters``; pinned in
    tests/test_engine.py.
    """
    try:
        from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters
    except ImportError:  # pragma: no cover
        return False
    jvp = torch._C._functorch.TransformType.Jvp
    return sum(1 for i in retrieve_all_functorch_interpreters() if i.key() == jvp) >= 2


def use_tape() -> bool:
    """True when reverse mode can run on the autograd tape (see NOTE [two engines])."""
    return not _is_compiling() and _maybe_current_level() is None


# ---------------------------------------------------------------------------------------------
# Inputs: flatten the differentiated arguments once, classify their leaves, rebuild per call.


class Inputs:
    """The differentiated arguments of one call, flattened.

    ``primals`` are the differentiable leaves (floating/complex tensors; Python floats and complex
    numbers become 0-d tensors). Integer leaves (with ``allow_int``) stay as constants and get a
    ``None`` derivative.
    """

    __slots__ = ("argnums", "args", "leaves", "primals", "slots", "specs")

    def __init__(
        self,
        args: tuple[Any, ...],
        argnums: tuple[int, ...],
        specs: list[Any],
        leaves: list[list[Any]],
        slots: list[list[int]],
        primals: list[torch.Tensor],
    ) -> None:
        self.args = args
        self.argnums = argnums
        self.specs = specs  # treespec per argnum (None when the argument is a bare tensor)
        self.leaves = leaves  # leaves per argnum, as given
        self.slots = slots  # per argnum, per leaf: index into primals, or -1 (not differentiated)
        self.primals = primals

    def rebuild(self, primals: Sequence[Any]) -> tuple[Any, ...]:
        """The positional arguments with the differentiated leaves replaced by ``primals``."""
        args = list(self.args)
        for k, spec, leaves, slots in zip(self.argnums, self.specs, self.leaves, self.slots):
            if spec is None:
                if slots[0] >= 0:  # a bare integer argument (slot -1) stays as given
                    args[k] = primals[slots[0]]
            else:
                new = [leaf if s < 0 else primals[s] for leaf, s in zip(leaves, slots)]
                args[k] = _pytree.unflatten(spec, new)
        return tuple(args)

    def unflatten(self, flat: Sequence[Any], single: bool) -> Any:
        """Per-primal values (e.g. gradients) back into the structure of the argnums.

        Leaves that were not differentiated get ``None``. ``single``: argnums was an int.
        """
        out = []
        for spec, slots in zip(self.specs, self.slots):
            if spec is None:
                out.append(flat[slots[0]] if slots[0] >= 0 else None)
            else:
                out.append(_pytree.unflatten(spec, [None if s < 0 else flat[s] for s in slots]))
        return out[0] if single else tuple(out)


_FLOAT_DTYPE_HINT = "a floating-point or complex tensor, or a Python float"


def prepare_inputs(
    call: str,
    args: tuple[Any, ...],
    argnums: tuple[int, ...],
    *,
    allow_int: bool,
    holomorphic: bool,
    complex_ok: bool = True,
) -> Inputs:
    specs: list[Any] = []
    all_leaves: list[list[Any]] = []
    all_slots: list[list[int]] = []
    primals: list[torch.Tensor] = []
    for k in argnums:
        arg = args[k]
        if type(arg) is torch.Tensor or isinstance(arg, torch.Tensor):
            leaves: list[Any] = [arg]
            spec = None
        else:
            leaves, spec = _pytree.flatten(arg)
        slots = []
        for i, leaf in enumerate(leaves):
            if isinstance(leaf, torch.Tensor):
                if leaf.is_floating_point() or leaf.is_complex():
                    if holomorphic and not leaf.is_complex():
                        _holomorphic_input_error(call, k, arg, i, leaf)
                    if not complex_ok and not holomorphic and leaf.is_complex():
                        _complex_input_error(call, k, arg, i, leaf)
                    slots.append(len(primals))
                    primals.append(leaf)
                    continue
                if allow_int:
                    slots.append(-1)
                    continue
                _int_input_error(call, k, arg, i, leaf)
            elif isinstance(leaf, (float, complex)) and not isinstance(leaf, bool):
                if holomorphic and not isinstance(leaf, complex):
                    _holomorphic_input_error(call, k, arg, i, leaf)
                if not complex_ok and not holomorphic and isinstance(leaf, complex):
                    _complex_input_error(call, k, arg, i, leaf)
                slots.append(len(primals))
                if isinstance(leaf, complex):
                    primals.append(torch.tensor(leaf, dtype=_default_complex_dtype()))
                else:
                    primals.append(torch.tensor(leaf, dtype=torch.get_default_dtype()))
            elif isinstance(leaf, int):  # includes bool
                if allow_int:
                    slots.append(-1)
                    continue
                _int_input_error(call, k, arg, i, leaf)
            else:
                _non_tensor_input_error(call, k, arg, i, leaf)
        specs.append(spec)
        all_leaves.append(leaves)
        all_slots.append(slots)
    return Inputs(args, argnums, specs, all_leaves, all_slots, primals)


def _default_complex_dtype() -> torch.dtype:
    return torch.complex128 if torch.get_default_dtype() == torch.float64 else torch.complex64


def _leaf_name(argnum: int, arg: Any, index: int) -> str:
    if isinstance(arg, torch.Tensor):
        return f"args[{argnum}]"
    return _pytree.leaf_names(arg, f"args[{argnum}]")[index]


def _int_input_error(call: str, argnum: int, arg: Any, index: int, leaf: Any) -> None:
    raise_type(
        call,
        f"differentiated input {_leaf_name(argnum, arg, index)} has an integer or boolean type, "
        "which has no derivative",
        _FLOAT_DTYPE_HINT,
        describe(leaf),
        "Cast it to a floating dtype, leave it out of argnums, or pass allow_int=True to get a "
        "None derivative for it.",
    )


def _holomorphic_input_error(call: str, argnum: int, arg: Any, index: int, leaf: Any) -> None:
    raise_type(
        call,
        f"holomorphic=True requires complex inputs, but {_leaf_name(argnum, arg, index)} is real",
        "a complex tensor or Python complex",
        describe(leaf),
        "Cast the input to a complex dtype, or drop holomorphic=True for a real function.",
    )


def _complex_input_error(call: str, argnum: int, arg: Any, index: int, leaf: Any) -> None:
    raise_type(
        call,
        f"input {_leaf_name(argnum, arg, index)} is complex; forward-mode Jacobians are defined "
        "for real inputs, or for complex inputs of a holomorphic function",
        "a real floating-point input",
        describe(leaf),
        "Pass holomorphic=True for a holomorphic function, use jacrev for a real-valued "
        "function of complex inputs, or use jvp directly.",
    )


def _non_tensor_input_error(call: str, argnum: int, arg: Any, index: int, leaf: Any) -> None:
    raise_type(
        call,
        f"differentiated input {_leaf_name(argnum, arg, index)} is not a tensor",
        _FLOAT_DTYPE_HINT,
        describe(leaf),
        "Pass non-tensor values through an argument that is not in argnums (or close over them), "
        "or register the type as a pytree node with functorch_utils.tree_util.",
    )


# ---------------------------------------------------------------------------------------------
# Tape helpers


def tape_leaf(x: torch.Tensor) -> torch.Tensor:
    """A fresh tape leaf for ``x``; stays connected to outer autograd if ``x`` requires grad."""
    if x.requires_grad:
        return x.view_as(x)
    return x.detach().requires_grad_()


def needs_outer_graph(
    primals: Sequence[torch.Tensor],
    args: tuple[Any, ...],
    argnums: tuple[int, ...],
    kwargs: dict[str, Any],
    outs: Sequence[torch.Tensor],
    ours: Sequence[torch.Tensor],
) -> bool:
    """Whether the backward pass must keep its graph for classic autograd outside.

    See NOTE [outer autograd]: true when grad mode is on and an argument, or a tensor the
    function's graph reaches (a captured parameter), requires grad.
    """
    if not torch.is_grad_enabled():
        return False
    for p in primals:
        if p.requires_grad:
            return True
    if len(argnums) != len(args) or kwargs:
        rest = [a for i, a in enumerate(args) if i not in argnums]
        for t in _pytree.flatten((rest, kwargs))[0]:
            if isinstance(t, torch.Tensor) and t.requires_grad:
                return True
    own = {id(x) for x in ours}
    seen = set()
    stack = [t.grad_fn for t in outs if t.grad_fn is not None]
    while stack:
        node = stack.pop()
        for nxt, _ in node.next_functions:
            if nxt is None or nxt in seen:
                continue
            seen.add(nxt)
            var = getattr(nxt, "variable", None)
            if var is not None:
                if id(var) not in own:
                    return True
                continue
            stack.append(nxt)
    return False


# NOTE [direct engine call]
# ``torch.autograd.grad``'s Python wrapper costs ~15 us per call (argument normalisation, grad
# seeding), a third of the cost of a tiny gradient. The tape path calls the function it wraps,
# ``torch.autograd.graph._engine_run_backward`` (private), with everything already normalised, and
# falls back to ``torch.autograd.grad`` where it is missing. tests/test_engine.py pins both.
_run_backward: Callable[..., tuple[torch.Tensor | None, ...]] | None
try:
    from torch.autograd.graph import _engine_run_backward as _run_backward
except ImportError:  # pragma: no cover - older or newer torch
    _run_backward = None


def tape_grad(
    outs: Sequence[torch.Tensor],
    cts: Sequence[torch.Tensor],
    leaves: Sequence[torch.Tensor],
    *,
    create_graph: bool,
    retain_graph: bool,
) -> tuple[torch.Tensor, ...]:
    """``torch.autograd.grad`` on the tape, with zeros for leaves the outputs do not reach."""
    pairs = [(o, c) for o, c in zip(outs, cts) if o.requires_grad]
    if not pairs:
        return tuple(torch.zeros_like(x) for x in leaves)
    o, c = zip(*pairs)
    if _run_backward is not None:
        grads = _run_backward(
            o, c, retain_graph or create_graph, create_graph, tuple(leaves), True, False
        )
    else:  # pragma: no cover
        grads = torch.autograd.grad(
            o, leaves, c, retain_graph=retain_graph, create_graph=create_graph, allow_unused=True
        )
    return tuple(torch.zeros_like(x) if g is None else g for g, x in zip(grads, leaves))


# ---------------------------------------------------------------------------------------------
# torch.func calls: turn its refusal of legacy autograd.Functions into a clear TypeError.

LEGACY_FUNCTION_HINT = (
    "A legacy torch.autograd.Function (one without a setup_context staticmethod) was called "
    "inside a transform that needs torch.func ({where}). torch.func cannot run such functions; "
    "they work only under top-level grad/value_and_grad/vjp/jacrev. Rewrite it with "
    "`forward(*args)` + `setup_context(ctx, inputs, output)` (see the torch docs "
    "'Extending torch.func with autograd.Function'), or use functorch_utils.custom_vjp."
)


class LegacyFunctionError(TypeError):
    """torch.func refused a legacy ``autograd.Function`` (see LEGACY_FUNCTION_HINT)."""


def func_call(call: str, fn: Callable[..., Any], *args: Any) -> Any:
    try:
        return fn(*args)
    except RuntimeError as e:
        if "setup_context" in str(e) and "autograd.Function" in str(e):
            raise LegacyFunctionError(f"{call}: " + LEGACY_FUNCTION_HINT.format(where=call)) from e
        raise


def conj_if_complex(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.is_complex():
        return x.conj().resolve_conj()
    return x


def check_tensor_output(call: str, leaves: Sequence[Any], what: str, root: str, tree: Any) -> list:
    """Output leaves must be tensors; Python numbers become constant tensors."""
    out = []
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, torch.Tensor):
            out.append(leaf)
        elif isinstance(leaf, (int, float, complex)):
            out.append(torch.as_tensor(leaf))
        else:
            name = _pytree.leaf_names(tree, root)[i]
            raise_type(
                call,
                f"{what} {name} is not a tensor",
                "tensors (or Python numbers) at every leaf",
                describe(leaf),
                "Return non-tensor values through has_aux=True.",
            )
    return out


def detach_tree(tree: Any) -> Any:
    """The tree with its tensor leaves detached (aux and values that carry no derivative)."""
    leaves, spec = _pytree.flatten(tree)
    if not any(isinstance(x, torch.Tensor) for x in leaves):
        return tree
    return _pytree.unflatten(
        spec, [x.detach() if isinstance(x, torch.Tensor) else x for x in leaves]
    )


def split_aux(call: str, res: Any, has_aux: bool) -> tuple[Any, Any]:
    """``(output, aux)`` of a result under ``has_aux``, checked to be a pair."""
    if not has_aux:
        return res, None
    if not (isinstance(res, tuple) and len(res) == 2):
        raise_type(
            call,
            "with has_aux=True the function must return a pair (output, aux)",
            "a tuple of length 2",
            describe(res),
            "Return (output, aux), or drop has_aux=True.",
        )
    return res
