"""The engine: the one reverse-mode core every reverse path uses, and the inputs it works on.

``reverse`` evaluates a flat function (tensors in, a tuple of tensors and an aux tree out) and
returns a :class:`Reverse` whose ``pull``/``pull_batched`` map cotangents back to the inputs.
``grad``, ``value_and_grad``, ``vjp``, ``jacrev``, ``hessian`` and ``hvp`` all go through it;
``use_tape`` is the one place that chooses the engine for a call.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.func

from . import _pytree
from . import _torch_hooks as hooks
from ._errors import describe, raise_type

__all__ = [
    "Inputs",
    "prepare_inputs",
    "use_tape",
    "Reverse",
    "reverse",
    "func_call",
    "conj_if_complex",
    "detach_tree",
    "split_aux",
    "materialize",
    "forward_primals",
    "check_tensor_output",
    "LEGACY_FUNCTION_HINT",
    "LegacyFunctionError",
]

FlatFn = Callable[..., tuple[tuple[torch.Tensor, ...], Any]]


# NOTE [two engines]
# torch.func is the composable engine: its transforms keep levels, so ``grad(grad(f))`` and
# ``vmap(grad(f))`` are correct. It pays for that: ``torch.func`` always builds a double-backward
# graph (1.6-2.5x the peak memory of a plain backward) and costs ~79 us per call on a tiny
# function. The autograd tape (``torch.autograd.grad``) is cheaper, needs no graph it will not
# use, and is the only engine that runs legacy ``torch.autograd.Function``s (no
# ``setup_context``).
#
# So reverse mode runs on the tape when no functorch transform is active, torch.compile is not
# tracing and inference mode is off; otherwise on torch.func. Nested calls of our own transforms
# at top level stay on the tape (each inner call sees inputs that require grad and keeps its
# graph), which is plain higher-order autograd. Forward mode always uses torch.func.jvp.
#
# NOTE [grad mode]
# The ambient grad mode never changes an answer. The tape records only with grad mode on, so the
# tape leaves are made and the function runs under ``torch.enable_grad()`` whatever the caller's
# mode (``no_grad``, ``set_grad_enabled(False)``, or autograd running a custom rule's backward,
# which turns grad mode off). The caller's mode decides only whether the result stays connected
# to outer autograd (NOTE [outer autograd]): under ``no_grad`` it never does. Inference mode
# cannot record a tape at all, and torch.func handles it (inference tensors included), so under
# ``inference_mode`` reverse mode runs on torch.func. A tensor created under inference mode and
# used outside is cloned into a tape leaf; if the function closes over one (autograd refuses to
# save it), the call is re-run on torch.func, which accepts it.
def use_tape() -> bool:
    """True when reverse mode runs on the autograd tape (NOTE [two engines], [grad mode])."""
    return not hooks.is_compiling() and _no_level_no_inference()  # first: level query untraceable


def _no_level_no_inference() -> bool:
    return hooks.current_level() is None and not torch.is_inference_mode_enabled()


# ---------------------------------------------------------------------------------------------
# Inputs: the differentiated arguments of one call, flattened once.


class Inputs:
    """The differentiated arguments of one call: their float leaves are the ``primals``.

    Python floats and complex numbers become 0-d tensors. Integer leaves (with ``allow_int``)
    stay as given and get a ``None`` derivative. A position named twice in ``argnums`` is
    differentiated once and its derivative returned in both places.
    """

    __slots__ = ("argnums", "args", "parts", "positions", "primals", "spans")

    def __init__(self, args: tuple[Any, ...], argnums: tuple[int, ...]) -> None:
        self.args = args
        self.argnums = argnums
        self.positions: list[int] = list(dict.fromkeys(argnums))  # unique, first-seen order
        self.parts: list[_pytree.Partition] = []
        self.spans: dict[int, tuple[int, int]] = {}
        self.primals: list[torch.Tensor] = []

    def rebuild(self, primals: Sequence[Any]) -> tuple[Any, ...]:
        """The positional arguments with the differentiated leaves replaced by ``primals``.

        Inside a torch.func level, the arguments that are not differentiated are wrapped at that
        level, as torch.func wraps its own arguments (see ``_torch_hooks.wrap_for_level``).
        """
        args = list(self.args)
        level = None
        if len(self.positions) < len(args) and not hooks.is_compiling():
            level = hooks.current_level()
        if level is not None:
            wrap = lambda x: hooks.wrap_for_level(x, level) if isinstance(x, torch.Tensor) else x  # noqa: E731
            for k, a in enumerate(args):
                if k not in self.spans:
                    args[k] = wrap(a) if isinstance(a, torch.Tensor) else _pytree.tree_map(wrap, a)
        for k, part in zip(self.positions, self.parts):
            lo, hi = self.spans[k]
            args[k] = part.combine(primals[lo:hi])
        return tuple(args)

    def unflatten(self, flat: Sequence[Any], single: bool) -> Any:
        """Per-primal values (e.g. gradients) in the structure of the requested argnums.

        Leaves that were not differentiated get ``None``. ``single``: argnums was an int.
        """
        if single:  # one position, one part
            lo, hi = self.spans[self.argnums[0]]
            return self.parts[0].fill(flat[lo:hi], None)
        parts = dict(zip(self.positions, self.parts))
        out = []
        for k in self.argnums:
            lo, hi = self.spans[k]
            out.append(parts[k].fill(flat[lo:hi], None))
        return tuple(out)


_STRIDED = torch.strided
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
    inputs = Inputs(args, argnums)
    primals = inputs.primals
    for k in inputs.positions:
        arg = args[k]
        lo = len(primals)
        if type(arg) is torch.Tensor:  # a bare tensor: no flatten
            leaves: list[Any] = [arg]
            spec = None
        else:
            leaves, spec = _pytree.flatten(arg)
        picked = []
        for i, leaf in enumerate(leaves):
            if (  # the common case, checked cheaply: a dense real floating tensor
                isinstance(leaf, torch.Tensor)
                and leaf.is_floating_point()
                and not holomorphic
                and leaf.layout is _STRIDED
                and not leaf.is_nested
            ):
                primals.append(leaf)
            elif _pytree.is_float_like(leaf):
                primals.append(_as_primal(call, k, arg, i, leaf, holomorphic, complex_ok))
            else:
                _check_constant_leaf(call, k, arg, i, leaf, allow_int)
                continue
            picked.append(i)
        inputs.parts.append(_pytree.Partition(spec, leaves, picked))
        inputs.spans[k] = (lo, len(primals))
    return inputs


def _as_primal(
    call: str, k: int, arg: Any, i: int, leaf: Any, holomorphic: bool, complex_ok: bool
) -> torch.Tensor:
    is_complex = leaf.is_complex() if isinstance(leaf, torch.Tensor) else isinstance(leaf, complex)
    if holomorphic and not is_complex:
        _holomorphic_input_error(call, k, arg, i, leaf)
    if not complex_ok and not holomorphic and is_complex:
        _complex_input_error(call, k, arg, i, leaf)
    if isinstance(leaf, torch.Tensor):
        if leaf.layout != torch.strided or leaf.is_nested:
            _layout_error(call, k, arg, i, leaf)
        return leaf
    if isinstance(leaf, complex):
        return torch.tensor(leaf, dtype=_default_complex_dtype())
    return torch.tensor(leaf, dtype=torch.get_default_dtype())


def _check_constant_leaf(call: str, k: int, arg: Any, i: int, leaf: Any, allow_int: bool) -> None:
    """A leaf that is not differentiated: integers with ``allow_int``; anything else is refused."""
    is_int = isinstance(leaf, int) or (
        isinstance(leaf, torch.Tensor) and not (leaf.is_floating_point() or leaf.is_complex())
    )
    if not is_int:
        _non_tensor_input_error(call, k, arg, i, leaf)
    if not allow_int:
        _int_input_error(call, k, arg, i, leaf)


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


def _layout_error(call: str, argnum: int, arg: Any, index: int, leaf: torch.Tensor) -> None:
    kind = "nested" if leaf.is_nested else f"{leaf.layout}"
    raise_type(
        call,
        f"differentiated input {_leaf_name(argnum, arg, index)} is a {kind} tensor, which the "
        "transforms do not support",
        "a dense (strided) tensor",
        f"a {kind} tensor of dtype {leaf.dtype}",
        "Convert it with .to_dense() (sparse) or .to_padded_tensor(0.0) (nested) first.",
    )


# ---------------------------------------------------------------------------------------------
# The reverse-mode core


class Reverse:
    """``fn`` evaluated at the primals, ready to pull cotangents back to them.

    ``outs``: the outputs (connected to outer autograd only where NOTE [outer autograd] says);
    ``aux``: the aux tree. ``pull(cts)`` returns one derivative per primal (zeros where the outputs
    do not reach it), in JAX's complex convention (NOTE [complex conventions]). ``pull_batched``
    pulls back a batch of cotangents stacked on a new leading axis.
    """

    __slots__ = ("_graph_outs", "_leaves", "_outer", "_vjp", "aux", "outs")

    def __init__(self, outs: tuple[torch.Tensor, ...], aux: Any) -> None:
        self.outs = outs
        self.aux = aux
        self._graph_outs: tuple[torch.Tensor, ...] = ()
        self._leaves: list[torch.Tensor] = []
        self._outer = False
        self._vjp: Callable[..., Any] | None = None

    def pull(self, cts: Sequence[torch.Tensor], *, keep: bool = True) -> tuple[torch.Tensor, ...]:
        """``J^T ct`` per primal. ``keep=False`` frees the tape graph (a single pull)."""
        cts = [conj_if_complex(c) for c in cts]
        if self._vjp is not None:
            grads = self._vjp(tuple(cts))
            return tuple([materialize(conj_if_complex(g)) for g in grads])
        # the tape runs eagerly (never under torch.compile): no compile check per leaf
        outs = self._graph_outs
        if len(outs) == 1 and outs[0].requires_grad:  # one live output: no pairing needed
            # NOTE [grad mode]: a pull under no_grad carries no graph, whatever the forward kept
            create = torch.is_grad_enabled() and (self._outer or cts[0].requires_grad)
            raw = hooks.run_backward(
                outs, cts, self._leaves, create_graph=create, retain_graph=keep or create
            )
        else:
            raw = self._tape_pull(cts, keep=keep, batched=False)
        out = []
        for g, x in zip(raw, self._leaves):
            if g is None:
                g = x.new_zeros(x.shape)
            else:
                if g.is_complex():
                    g = g.conj().resolve_conj()
                if hooks.is_zero_tensor(g):
                    g = torch.zeros_like(g)
            out.append(g)
        return tuple(out)

    def pull_batched(self, cts: Sequence[torch.Tensor], call: str) -> tuple[torch.Tensor, ...]:
        """``pull`` of cotangents stacked on axis 0: one ``J^T ct`` per row."""
        cts = [conj_if_complex(c) for c in cts]
        if self._vjp is not None:
            grads = func_call(call, _batched_pull(len(cts)), self._vjp, *cts)
        else:
            grads = self._tape_pull(cts, keep=True, batched=True)
        return tuple(materialize(conj_if_complex(g)) for g in grads)

    def _tape_pull(
        self, cts: Sequence[torch.Tensor], *, keep: bool, batched: bool
    ) -> tuple[torch.Tensor, ...]:
        leaves = self._leaves
        pairs = [(o, c) for o, c in zip(self._graph_outs, cts) if o.requires_grad]
        lead = (cts[0].shape[0],) if batched and cts else ()
        if not pairs:
            return tuple(x.new_zeros(lead + x.shape) for x in leaves)
        outs, live = zip(*pairs)
        # NOTE [grad mode]: a pull under no_grad carries no graph, whatever the forward kept
        create = torch.is_grad_enabled() and (self._outer or any([c.requires_grad for c in cts]))
        grads: tuple[torch.Tensor | None, ...]
        if batched:
            grads = torch.autograd.grad(
                outs, leaves, live, retain_graph=True, create_graph=create,
                allow_unused=True, is_grads_batched=True,
            )  # fmt: skip
        else:
            grads = hooks.run_backward(
                outs, live, leaves, create_graph=create, retain_graph=keep or create
            )
        return tuple(
            [x.new_zeros(lead + x.shape) if g is None else g for g, x in zip(grads, leaves)]
        )


def _call_vjp(vjp: Callable[..., Any], *cts: torch.Tensor) -> Any:
    return vjp(cts)


_BATCHED_PULLS: dict[int, Callable[..., Any]] = {}  # by number of outputs; a handful at most


def _batched_pull(n: int) -> Callable[..., Any]:
    """``vmap`` of a torch.func pullback over stacked cotangents, built once per output count."""
    if hooks.is_compiling():  # a cache read while tracing becomes a guard that a later call fails
        return torch.func.vmap(_call_vjp, in_dims=(None,) + (0,) * n)
    fn = _BATCHED_PULLS.get(n)
    if fn is None:
        fn = _BATCHED_PULLS[n] = torch.func.vmap(_call_vjp, in_dims=(None,) + (0,) * n)
    return fn


def reverse(
    call: str,
    fn: FlatFn,
    primals: Sequence[torch.Tensor],
    *,
    has_aux: bool,
    tape: bool | None = None,
    gradient: bool = False,
) -> Reverse:
    """Evaluate ``fn(*primals) -> (outs, aux)`` for reverse mode on the engine ``use_tape`` picks.

    ``tape=False`` forces torch.func (a caller that measured it faster), falling back to the tape
    for legacy ``autograd.Function``s where the tape may run. ``gradient=True``: the output is one
    real scalar and the caller pulls back ``1`` once (``grad``).
    """
    compiling = hooks.is_compiling()
    if gradient and compiling:
        # torch.compile cannot trace torch.func.vjp around an autograd.Function whose backward
        # runs a torch.func transform itself (a custom rule); torch.func.grad_and_value it can.
        return _compiled_gradient(call, fn, primals, has_aux)
    can_tape = not compiling and _no_level_no_inference()
    if can_tape and tape is not False:
        try:
            rev = _tape_forward(fn, primals, has_aux)
        except RuntimeError as e:
            if not hooks.is_inference_tensor_save_error(e):
                raise
            # NOTE [grad mode]: a closed-over inference tensor; torch.func accepts it.
        else:
            outs = rev._graph_outs
            if not primals or not outs or any([o.requires_grad for o in outs]):
                return rev
            # NOTE [tape blind spots]: outputs that reach no input are confirmed on torch.func.
    try:
        return _func_forward(call, fn, primals, has_aux)
    except LegacyFunctionError:
        if not can_tape:
            raise
        return _tape_forward(fn, primals, has_aux)


def _compiled_gradient(
    call: str, fn: FlatFn, primals: Sequence[torch.Tensor], has_aux: bool
) -> Reverse:
    if not primals:
        return _func_forward(call, fn, primals, has_aux)
    stash = _pytree.Stash()

    def scalar(*p: torch.Tensor) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
        outs, aux = fn(*p)
        return outs[0], (stash.put(aux) if has_aux else ())

    argnums = tuple(range(len(primals)))
    grads, (value, aux_t) = func_call(
        call, torch.func.grad_and_value(scalar, argnums=argnums, has_aux=True), *primals
    )
    rev = Reverse((value,), stash.get(aux_t) if has_aux else None)
    rev._vjp = lambda cts: grads  # the one pull of a gradient: the seed is 1
    return rev


# NOTE [tape blind spots]
# The tape cannot see what torch.func's levels see. A function that detaches its input and
# differentiates it again inside (``torch.autograd.functional.jacobian`` without create_graph)
# gives an output that reaches no input: the tape would answer zero, torch.func refuses the call.
# So an output that reaches no input is re-run on torch.func (a rare, cheap case: such a function
# is constant), which either agrees (zeros) or raises its clear error. A write into a tensor the
# function closes over is refused by torch.func but not seen by the tape (docs/sharp_edges.md).
def _tape_forward(fn: FlatFn, primals: Sequence[torch.Tensor], has_aux: bool) -> Reverse:
    connected = False  # an argument requires grad: the result stays connected (NOTE [outer ...])
    leaves = []
    with torch.enable_grad():  # NOTE [grad mode]
        for x in primals:  # a fresh tape leaf per primal
            if x.requires_grad:
                connected = True
                leaves.append(x.view_as(x))
            elif x.is_inference():  # NOTE [grad mode]: an inference tensor cannot be a leaf
                leaves.append(x.clone().requires_grad_())
            else:
                leaves.append(x.detach().requires_grad_())
        outs, aux = fn(*leaves)
    outer = bool(leaves) and torch.is_grad_enabled() and (connected or _reaches_outer(outs, leaves))
    if outer:
        rev = Reverse(outs, aux)
    else:
        rev = Reverse(tuple([o.detach() for o in outs]), detach_tree(aux) if has_aux else aux)
    rev._graph_outs = outs
    rev._leaves = leaves
    rev._outer = outer
    return rev


def _func_forward(call: str, fn: FlatFn, primals: Sequence[torch.Tensor], has_aux: bool) -> Reverse:
    if primals:
        try:
            return _func_vjp(call, fn, primals, has_aux)
        except RuntimeError as e:
            if not hooks.is_empty_output_error(e):
                raise
    # no primals, or no outputs (torch.func refuses both; JAX gives empty results)
    outs, aux = fn(*primals)
    rev = Reverse(tuple(outs), aux)
    rev._vjp = lambda cts: tuple(torch.zeros_like(p) for p in primals)
    return rev


def _func_vjp(call: str, fn: FlatFn, primals: Sequence[torch.Tensor], has_aux: bool) -> Reverse:
    # A lone output goes to torch.func bare, not as a 1-tuple: its tuple handling costs
    # measurable time per call under vmap (benchmarks/bench_core.py, vmap(jacrev)).
    stash = _pytree.Stash()
    lone = [False]  # set by the one run inside torch.func.vjp

    def bare(*p: torch.Tensor) -> Any:
        outs, aux = fn(*p)
        lone[0] = len(outs) == 1
        out = outs[0] if lone[0] else outs
        return (out, stash.put(aux)) if has_aux else out

    res = func_call(call, torch.func.vjp, bare, *primals, has_aux=has_aux)
    out, vjp = res[0], res[1]
    if lone[0]:
        rev = Reverse((out,), stash.get(res[2]) if has_aux else None)
        rev._vjp = lambda cts: vjp(cts[0])
    else:
        rev = Reverse(tuple(out), stash.get(res[2]) if has_aux else None)
        rev._vjp = vjp
    return rev


# NOTE [outer autograd]
# Results stay connected to classic autograd outside the transform: if grad mode is on and an
# argument, or a tensor the function's graph reaches (a captured parameter), requires grad, the
# tape keeps the graph of the backward pass (create_graph=True) so an outer ``.backward()`` or
# ``torch.autograd.grad`` flows through the gradient. Otherwise the graph is freed at once and
# the outputs are detached.
def _reaches_outer(outs: Sequence[torch.Tensor], ours: Sequence[torch.Tensor]) -> bool:
    """Whether the graph of ``outs`` reaches a tensor that requires grad other than ``ours``."""
    own = None
    leaf_node = hooks.ACCUMULATE_GRAD  # a type check, not getattr: a miss raised inside (slow)
    seen = set()
    stack = [t.grad_fn for t in outs]
    while stack:
        node = stack.pop()
        if node is None:
            continue
        for nxt, _ in node.next_functions:
            if nxt is None or nxt in seen:
                continue
            seen.add(nxt)
            if type(nxt) is leaf_node:
                if own is None:
                    own = {id(x) for x in ours}
                if id(nxt.variable) not in own:  # type: ignore[attr-defined]
                    return True
            else:
                stack.append(nxt)
    return False


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


def func_call(call: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    try:
        return fn(*args, **kwargs)
    except RuntimeError as e:
        if hooks.is_legacy_function_error(e):
            raise LegacyFunctionError(f"{call}: " + LEGACY_FUNCTION_HINT.format(where=call)) from e
        if hooks.is_unsupported_in_transform_error(e):
            text = str(e).split("\n")[0]
            raise TypeError(
                f"{call}: the function does something a transformed function may not do; "
                f"torch says: {text} Pass the tensor as an argument, or use this library's "
                "transforms (grad, jacrev, jacfwd, vjp, jvp) instead of torch.autograd inside."
            ) from e
        raise


# NOTE [complex conventions]
# torch's reverse mode computes ``ct -> conj(J)^T ct`` for holomorphic maps (grad of |z|^2 is 2z);
# JAX's vjp is the plain transpose of the (R-linear) JVP. The two agree up to conjugation:
# ``vjp_jax(ct) = conj(vjp_torch(conj(ct)))``. ``Reverse.pull`` applies that identity, so every
# reverse-mode result is in JAX's convention; forward mode needs nothing.
def conj_if_complex(x: Any) -> Any:
    if isinstance(x, torch.Tensor) and x.is_complex():
        return x.conj().resolve_conj()
    return x


def forward_primals(primals: Sequence[torch.Tensor]) -> tuple[torch.Tensor, ...]:
    """Primals torch's forward mode accepts: an expanded (stride-0) tensor is made dense.

    torch refuses to attach a tangent to a tensor whose elements share memory; JAX has no
    layouts, so the values are the same.
    """
    return tuple(
        p.contiguous() if any(st == 0 and n > 1 for st, n in zip(p.stride(), p.shape)) else p
        for p in primals
    )


def materialize(x: torch.Tensor) -> torch.Tensor:
    """A plain tensor for torch's internal ZeroTensor (which ``.numpy()`` and others refuse)."""
    if hooks.is_compiling():  # traced code has no ZeroTensor to fix (and cannot ask)
        return x
    return _dense(x)


def _dense(x: torch.Tensor) -> torch.Tensor:
    return torch.zeros_like(x) if hooks.is_zero_tensor(x) else x


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
    tensors, part = _pytree.partition(tree, _pytree.is_tensor)
    if not tensors:
        return tree
    return part.combine([x.detach() for x in tensors])


def split_aux(call: str, res: Any, has_aux: bool) -> tuple[Any, Any]:
    """``(output, aux)`` of a result under ``has_aux``: a pair, as a tuple or a list (JAX)."""
    if not has_aux:
        return res, None
    if not (isinstance(res, (tuple, list)) and len(res) == 2):
        raise_type(
            call,
            "with has_aux=True the function must return a pair (output, aux)",
            "a tuple of length 2",
            describe(res),
            "Return (output, aux), or drop has_aux=True.",
        )
    return res[0], res[1]
