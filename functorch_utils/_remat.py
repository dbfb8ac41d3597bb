"""``stop_gradient`` and ``checkpoint`` (alias ``remat``): gradient control and memory.

# NOTE [how checkpoint recomputes]
# ``checkpoint`` must give exactly the values and derivatives of the function it wraps, under every
# transform, including derivatives through tensors the function closes over (JAX differentiates
# those too). An ``autograd.Function`` sees only its explicit inputs, so it cannot be that vehicle.
# Two paths, chosen per call:
#
# * Recorded on the autograd tape (no torch.func transform active, grad mode on, not traced by
#   torch.compile): ``torch.utils.checkpoint`` without reentrancy. Its saved-tensor hooks drop what
#   the forward pass saves and recompute it in the backward pass, whatever the tensors came from, so
#   closed-over tensors, higher orders, forward-mode duals and our own tape-based transforms inside
#   the block are all differentiated as without checkpoint. Only the inputs are kept.
# * Anything else (inside ``vmap``/``jvp``/``jacfwd``/``hessian`` or a nested transform, which run
#   on torch.func; grad mode off; compile tracing): the function runs as is. torch.func refuses
#   saved-tensor hooks, and no other mechanism sees closed-over tensors, so the answer stays right
#   and only the memory saving is lost. Also when the block itself enters a torch.func reverse
#   transform (its ``grad``/``vjp`` refuse the hooks): the block is rerun as is, RNG restored.
#
# Recomputation reads the tensors the block reads from outside (closed-over buffers, parameters)
# again at backward time. torch checks the explicit inputs' version counters, not those; so the
# tape path records, through a TorchFunctionMode, every tensor the block reads that it did not
# create, with its version when first read, and refuses to recompute if one has been modified in
# place since (by the block itself, or by the caller between the forward and backward passes):
# the recomputation would silently see other values.
"""

from __future__ import annotations

import functools
import types
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
import torch.utils.checkpoint
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from . import _pytree, _torch_hooks
from ._argnums import (
    check_argnames,
    check_names_taken,
    optional_argnums,
    positional_params,
    resolve_argnums,
)
from ._errors import (
    check_bool,
    check_callable,
    describe,
    fun_name,
    message,
    raise_type,
)

__all__ = ["checkpoint", "checkpoint_name", "checkpoint_policies", "remat", "stop_gradient"]


# ---------------------------------------------------------------------------------------------
# stop_gradient


def stop_gradient(tree: Any, /) -> Any:
    """The same values with a zero derivative, in both modes and at every order (JAX's).

    Every tensor leaf is detached from every active transform (unlike ``torch.no_grad()`` inside
    a function, which forward mode ignores; pytorch/pytorch#128600); under ``vmap`` the result
    stays batched. Non-tensor leaves that are plain data (numbers, strings, ``None``, NumPy
    arrays) pass through unchanged, as constants. A callable leaf (a function, a module, a class)
    is not data and has no derivative to stop: it raises ``TypeError`` naming its key path, as
    JAX refuses a leaf that is not an array. Objects that are neither are passed through.

    Example:
        >>> import torch
        >>> from functorch_utils import grad, jvp, stop_gradient
        >>> f = lambda x: stop_gradient(x) * x
        >>> grad(f)(torch.tensor(3.0)), jvp(f, (torch.tensor(3.0),), (torch.tensor(1.0),))[1]
        (tensor(3.), tensor(3.))
        >>> stop_gradient({"w": torch.tensor(1.0), "name": "layer"})
        {'w': tensor(1.), 'name': 'layer'}
        >>> stop_gradient({"f": abs})
        Traceback (most recent call last):
            ...
        TypeError: stop_gradient(tree): tree['f'] is a callable, not data; ...
    """
    tensors, part = _pytree.partition(tree, _pytree.is_tensor)
    for i, leaf in enumerate(part.leaves):
        if callable(leaf) and not isinstance(leaf, torch.Tensor):
            raise_type(
                "stop_gradient(tree)",
                f"{_pytree.leaf_names(tree, 'tree')[i]} is a callable, not data",
                "tensors and plain data (numbers, strings, None) at the leaves",
                describe(leaf),
                "Call stop_gradient on values (a function's output), not on a function.",
            )
    return part.combine([x.detach() for x in tensors])


# ---------------------------------------------------------------------------------------------
# checkpoint


def checkpoint(
    fun: Callable[..., Any],
    *,
    prevent_cse: bool = True,
    policy: Callable[..., bool] | None = None,
    static_argnums: int | Sequence[int] = (),
    static_argnames: str | Sequence[str] = (),
) -> Callable[..., Any]:
    """Recompute ``fun``'s forward pass in the backward pass instead of storing it (``jax.checkpoint``).

    Same values and derivatives as ``fun`` under every transform and at every order, including
    derivatives through tensors ``fun`` closes over; arguments and outputs may be any pytrees,
    with non-tensor leaves. Alias: ``remat``.

    Memory: when the call is recorded on the autograd tape (top-level ``grad``,
    ``value_and_grad``, ``vjp``, ``jacrev`` on the CPU, an outer ``.backward()``), only the inputs
    are kept and the rest is recomputed, with the same random numbers. Inside ``vmap``, ``jvp``,
    ``jacfwd``, ``hessian`` or a nested transform (torch.func, which refuses the saved-tensor hooks
    this needs), and under ``torch.no_grad()``, ``fun`` runs as is: the same answer, without the
    memory saving.

    Recomputation reads again the tensors ``fun`` reads from outside; if one of them was modified
    in place since the forward pass (a buffer ``fun`` updates, such as BatchNorm's running
    statistics, or a tensor the caller changed before the backward pass), the backward pass raises
    ``ValueError`` instead of recomputing with other values.

    Args:
        fun: the function to checkpoint, of any pytrees.
        prevent_cse: taken for JAX compatibility; nothing here merges common subexpressions, so
            it changes nothing.
        policy: which results of the block to save instead of recomputing, as JAX's
            ``policy``: ``None`` (save nothing, recompute everything but the inputs), one of
            :data:`checkpoint_policies`, or a callable ``policy(op, *args, **kwargs) -> bool``
            called with each torch operator (an ``OpOverload`` such as ``torch.ops.aten.mm.default``)
            and its arguments, True to save its result. It applies where the call is recorded
            on the tape (above); elsewhere ``fun`` runs as is.
        static_argnums: taken for JAX compatibility (positions of arguments JAX does not trace);
            every argument may be a non-tensor here already, so they are only checked to exist.
        static_argnames: the same, by name.

    Example:
        >>> import torch
        >>> from functorch_utils import checkpoint, grad
        >>> block = checkpoint(lambda x: torch.sin(x) * x)
        >>> grad(lambda x: block(x).sum())(torch.tensor([0.0, 1.0]))
        tensor([0.0000, 1.3818])
        >>> y = torch.tensor(2.0)
        >>> grad(lambda y: checkpoint(lambda x: x * y)(torch.sin(y)))(y)  # y is closed over
        tensor(0.0770)
    """
    check_callable("checkpoint", fun)
    check_bool("checkpoint", fun, "prevent_cse", prevent_cse)
    static = optional_argnums("checkpoint", fun_name(fun), static_argnums, what="static_argnums")
    _check_static_argnames(fun, static_argnames)
    if policy is not None and not callable(policy):
        raise_type(
            f"checkpoint({fun_name(fun)}, policy=...)",
            "policy must be None, one of checkpoint_policies, or a callable",
            "policy(op, *args, **kwargs) -> bool",
            describe(policy),
            "Pass e.g. policy=checkpoint_policies.dots_saveable.",
        )

    @functools.wraps(fun)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        if static:
            call = f"checkpoint({fun_name(fun)})(...)"
            resolve_argnums(call, static, len(args), what="static_argnums")
        if not _on_tape():
            return fun(*args, **kwargs)
        return _recompute_on_tape(fun, args, kwargs, policy)

    return wrapped


remat = checkpoint


def _check_static_argnames(fun: Callable[..., Any], static_argnames: Any) -> None:
    call = f"checkpoint({fun_name(fun)}, static_argnames={static_argnames!r})"
    names = check_argnames(call, "static_argnames", static_argnames)
    params = positional_params(fun)
    if names and params is not None:
        check_names_taken(call, "static_argnames", names, params)


def _on_tape() -> bool:
    """Whether this call is recorded on the autograd tape (NOTE [how checkpoint recomputes])."""
    return (
        torch.is_grad_enabled()
        and not _torch_hooks.is_compiling()
        and _torch_hooks.current_level() is None
    )


def _recompute_on_tape(
    fun: Callable[..., Any], args: tuple, kwargs: dict[str, Any], policy: Any
) -> Any:
    names = tuple(kwargs)
    n = len(args)

    def run(*flat: Any) -> Any:
        # Keyword arguments travel positionally, so that torch checks their version counters too
        # and no name of the user's can clash with torch.utils.checkpoint's own keywords.
        return fun(*flat[:n], **dict(zip(names, flat[n:])))

    flat = (*args, *kwargs.values())
    rng = _RngState(flat)
    reads = _OutsideReads(f"checkpoint({fun_name(fun)})")
    if policy is None or policy is _nothing_saveable:  # torch's own checkpoint saves nothing
        contexts = reads.contexts
    else:
        contexts = functools.partial(_with_policy, reads, policy)
    try:
        return torch.utils.checkpoint.checkpoint(
            run, *flat, use_reentrant=False, context_fn=contexts
        )
    except RuntimeError as e:
        if not _torch_hooks.is_saved_tensors_hooks_disabled_error(e):
            raise
    # The block enters a torch.func reverse transform, which refuses saved-tensor hooks: run it as
    # is, with the random state it first saw.
    rng.restore()
    return fun(*args, **kwargs)


class _RngState:
    """The CPU and accelerator random states at the start of a call, to run it again."""

    __slots__ = ("cpu", "devices", "states")

    def __init__(self, args: tuple[Any, ...]) -> None:
        self.cpu = torch.get_rng_state()
        tensors = [x for x in _pytree.flatten(args)[0] if isinstance(x, torch.Tensor)]
        self.devices: list[Any] = []
        self.states: list[Any] = []
        if any(x.device.type != "cpu" for x in tensors):  # get_device_states costs ~50 us
            self.devices, self.states = torch.utils.checkpoint.get_device_states(*tensors)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.devices:
            torch.utils.checkpoint.set_device_states(self.devices, self.states)


class _OutsideReads(TorchFunctionMode):
    """Records the tensors a block reads but did not create, each with its version when first read.

    Used as the forward context of ``torch.utils.checkpoint``; the recompute context checks that
    none of them changed (NOTE [how checkpoint recomputes]). Only weak references are kept, so the
    block's intermediate tensors are freed as without the record.
    """

    def __init__(self, call: str) -> None:
        super().__init__()
        self.call = call
        self.made: dict[int, weakref.ref[torch.Tensor]] = {}
        self.read: dict[int, tuple[weakref.ref[torch.Tensor], int]] = {}

    def contexts(self) -> tuple[Any, Any]:
        return self, _CheckBeforeRecompute(self)

    def __torch_function__(
        self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None
    ) -> Any:
        kwargs = kwargs or {}
        for x in _tensors_in((*args, *kwargs.values())):
            self._note_read(x)
        out = func(*args, **kwargs)
        for x in _tensors_in(out if isinstance(out, (tuple, list)) else (out,)):
            key = id(x)
            if key not in self.read and key not in self.made:
                self.made[key] = weakref.ref(x, functools.partial(_forget, self.made, key))
        return out

    def _note_read(self, x: torch.Tensor) -> None:
        key = id(x)
        if key in self.made or key in self.read:
            return
        try:
            version = x._version
        except RuntimeError:  # a functorch wrapper made by a transform inside the block
            return
        self.read[key] = (weakref.ref(x, functools.partial(_forget, self.read, key)), version)

    def check(self) -> None:
        """Raise if a tensor the block read from outside has been modified in place since."""
        for ref, version in self.read.values():
            x = ref()
            if x is not None and x._version != version:
                raise ValueError(
                    message(
                        f"{self.call} backward pass",
                        "a tensor the block reads from outside was modified in place after the "
                        "block first read it, so recomputing the block would use other values",
                        f"its version {version}",
                        f"version {x._version} ({tuple(x.shape)}, {x.dtype})",
                        "Do not modify tensors the checkpointed block reads (return an updated "
                        "copy instead), or call the block without checkpoint.",
                    )
                )


class _CheckBeforeRecompute:
    """The recompute context of ``torch.utils.checkpoint``: entered once per recomputation."""

    __slots__ = ("reads",)

    def __init__(self, reads: _OutsideReads) -> None:
        self.reads = reads

    def __enter__(self) -> None:
        self.reads.check()

    def __exit__(self, *exc: object) -> None:
        return None


def _forget(table: dict[int, Any], key: int, _: object) -> None:
    # Entries leave with their tensor, so an id in a table always names a live tensor.
    table.pop(key, None)


def _tensors_in(items: Any) -> Iterator[torch.Tensor]:
    """The tensors among ``items`` and inside its lists and tuples (torch ops nest one level)."""
    for x in items:
        if isinstance(x, torch.Tensor):
            yield x
        elif isinstance(x, (tuple, list)):
            for y in x:
                if isinstance(y, torch.Tensor):
                    yield y


# ---------------------------------------------------------------------------------------------
# checkpoint policies


# NOTE [checkpoint policies]
# JAX's ``policy`` decides, per primitive, whether a result of the block is saved in the forward
# pass instead of recomputed in the backward pass. Here the same decision is made per torch
# operator: a dispatch mode keeps the results the policy marks in the forward pass, and another
# hands them back during the recomputation instead of running those operators again (as torch's
# selective activation checkpointing does, except that every recomputation replays them, so the
# block can be differentiated twice, where torch's frees each result at its first use). A policy
# is a callable ``policy(op, *args, **kwargs) -> bool`` on ATen operators; ``checkpoint_policies``
# gives JAX's named ones. Values and derivatives are the same whatever the policy; only memory and
# recomputation differ. Names (``checkpoint_name``) cannot steer it: torch recomputes a block by
# running it again in program order and decides about each operator as it runs, before any name
# is given to its result. So the name-based policies are accepted with the nearest operator-level
# meaning: ``save_only_these_names`` and ``save_any_names_but_these`` save nothing (JAX's default,
# less the named values), ``save_anything_except_these_names`` saves everything.
_DOTS_NO_BATCH = frozenset(["mm", "addmm", "mv", "addmv", "dot", "vdot", "_addmm_activation"])
_DOTS_BATCHED = frozenset(["bmm", "baddbmm"])


def _op_name(op: Any) -> str:
    packet = getattr(op, "overloadpacket", None)
    return getattr(packet, "__name__", "") if packet is not None else ""


def checkpoint_name(x: Any, name: str) -> Any:
    """Name an intermediate value, as JAX's ``jax.ad_checkpoint.checkpoint_name``: returns ``x``.

    Accepted so that code written for JAX's name-based :data:`checkpoint_policies` runs
    unchanged, with the same values and derivatives. The names do not change what
    :func:`checkpoint` saves (NOTE [checkpoint policies]): torch recomputes a block by running it
    again in program order, so the operation that made a named value runs again whether or not
    the value is kept.

    Example:
        >>> import torch
        >>> from functorch_utils import checkpoint, checkpoint_name, checkpoint_policies, grad
        >>> def block(x):
        ...     h = checkpoint_name(torch.sin(x), "h")
        ...     return (h * h).sum()
        >>> keep_h = checkpoint(block, policy=checkpoint_policies.save_only_these_names("h"))
        >>> grad(keep_h)(torch.tensor([0.5, 1.0]))
        tensor([0.8415, 0.9093])
    """
    if not isinstance(name, str):
        raise_type(
            "checkpoint_name(x, name)",
            "name must be a string",
            "e.g. 'attention_scores'",
            describe(name),
        )
    return x


def _with_policy(reads: _OutsideReads, policy: Any) -> tuple[Any, Any]:
    """torch.utils.checkpoint's contexts: the outside-reads record and the policy's modes."""
    kept = _Kept(policy)
    fwd, rec = reads.contexts()
    return _Both(fwd, _KeepMode(kept)), _Both(rec, _ReplayMode(kept))


# Operators never kept: autograd calls detach a different number of times in the forward pass
# and in a recomputation, and a view must be made from the recomputed base (views are free).
_NEVER_KEPT = frozenset([torch.ops.aten.detach.default, torch.ops.prim.device.default])


def _keepable(op: Any, args: tuple, kwargs: dict[str, Any], policy: Any) -> bool:
    return (
        op not in _NEVER_KEPT and not getattr(op, "is_view", False) and policy(op, *args, **kwargs)
    )


class _Both:
    """Two context managers entered in order and left in reverse; re-enterable (torch enters the
    recompute context once per recomputation)."""

    __slots__ = ("first", "second")

    def __init__(self, first: Any, second: Any) -> None:
        self.first, self.second = first, second

    def __enter__(self) -> None:
        self.first.__enter__()
        try:
            self.second.__enter__()
        except BaseException:
            self.first.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: Any) -> None:
        try:
            self.second.__exit__(*exc)
        finally:
            self.first.__exit__(*exc)


class _Kept:
    """The results a policy keeps, per operator in call order, with their inputs' shapes."""

    __slots__ = ("policy", "results")

    def __init__(self, policy: Any) -> None:
        self.policy = policy
        self.results: dict[Any, list[tuple[Any, Any]]] = {}


def _signature(args: tuple) -> tuple:
    return tuple((a.shape, a.dtype) for a in args if isinstance(a, torch.Tensor))


class _KeepMode(TorchDispatchMode):
    """Forward pass: keeps the results of the operators the policy marks (NOTE [checkpoint
    policies])."""

    def __init__(self, kept: _Kept) -> None:
        super().__init__()
        self.kept = kept

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if _keepable(func, args, kwargs, self.kept.policy):
            value = _pytree.tree_map(
                lambda t: t.detach() if isinstance(t, torch.Tensor) else t, out
            )
            self.kept.results.setdefault(func, []).append((_signature(args), value))
        return out


class _ReplayMode(TorchDispatchMode):
    """Recomputation: hands back the kept results instead of running those operators again.

    Every recomputation replays from the first kept result, so the block can be differentiated
    more than once (a second backward pass, or a gradient of a gradient), unlike torch's own
    selective checkpointing, which frees each result at its first use.
    """

    def __init__(self, kept: _Kept) -> None:
        super().__init__()
        self.kept = kept
        self.next: dict[Any, int] = {}

    def __enter__(self) -> Any:
        self.next = {}
        return super().__enter__()

    def __torch_dispatch__(
        self, func: Any, types: Any, args: tuple = (), kwargs: Any = None
    ) -> Any:
        kwargs = kwargs or {}
        results = self.kept.results.get(func)
        if results is not None and _keepable(func, args, kwargs, self.kept.policy):
            i = self.next.get(func, 0)
            self.next[func] = i + 1
            if i < len(results) and results[i][0] == _signature(args):
                value = results[i][1]
                return _pytree.tree_map(
                    lambda t: t.detach() if isinstance(t, torch.Tensor) else t, value
                )
            raise RuntimeError(  # the recomputation did not follow the forward pass
                f"checkpoint: the recomputed block called {func} differently from its forward "
                "pass, so the kept results cannot be matched; a checkpointed block must compute "
                "the same operations each time it runs."
            )
        return func(*args, **kwargs)


def _everything_saveable(op: Any, *args: Any, **kwargs: Any) -> bool:
    return True


def _nothing_saveable(op: Any, *args: Any, **kwargs: Any) -> bool:
    return False


def _dots_saveable(op: Any, *args: Any, **kwargs: Any) -> bool:
    name = _op_name(op)
    return name in _DOTS_NO_BATCH or name in _DOTS_BATCHED


def _dots_with_no_batch_dims_saveable(op: Any, *args: Any, **kwargs: Any) -> bool:
    return _op_name(op) in _DOTS_NO_BATCH


def _check_names(call: str, names: tuple[Any, ...]) -> None:
    for n in names:
        if not isinstance(n, str):
            raise_type(call, "names must be strings", "e.g. 'h'", describe(n))


def _save_only_these_names(*names: str) -> Callable[..., bool]:
    _check_names("checkpoint_policies.save_only_these_names(*names)", names)
    return _nothing_saveable  # NOTE [checkpoint policies]: names do not reach the operators


def _save_any_names_but_these(*names: str) -> Callable[..., bool]:
    _check_names("checkpoint_policies.save_any_names_but_these(*names)", names)
    return _nothing_saveable


def _save_anything_except_these_names(*names: str) -> Callable[..., bool]:
    _check_names("checkpoint_policies.save_anything_except_these_names(*names)", names)
    return _everything_saveable


def _save_from_both_policies(
    policy_1: Callable[..., bool], policy_2: Callable[..., bool]
) -> Callable[..., bool]:
    def policy(op: Any, *args: Any, **kwargs: Any) -> bool:
        return bool(policy_1(op, *args, **kwargs)) or bool(policy_2(op, *args, **kwargs))

    return policy


checkpoint_policies = types.SimpleNamespace(
    everything_saveable=_everything_saveable,
    nothing_saveable=_nothing_saveable,
    dots_saveable=_dots_saveable,
    checkpoint_dots=_dots_saveable,
    dots_with_no_batch_dims_saveable=_dots_with_no_batch_dims_saveable,
    checkpoint_dots_with_no_batch_dims=_dots_with_no_batch_dims_saveable,
    save_only_these_names=_save_only_these_names,
    save_any_names_but_these=_save_any_names_but_these,
    save_anything_except_these_names=_save_anything_except_these_names,
    save_from_both_policies=_save_from_both_policies,
)
checkpoint_policies.__doc__ = """JAX's ``jax.checkpoint_policies`` for :func:`checkpoint`'s ``policy``.

``everything_saveable``, ``nothing_saveable``, ``dots_saveable`` (alias ``checkpoint_dots``:
the results of matrix products, ``mm``/``addmm``/``bmm``/``baddbmm``/``mv``/``dot``...),
``dots_with_no_batch_dims_saveable`` (alias ``checkpoint_dots_with_no_batch_dims``: those without
batch dimensions, i.e. not ``bmm``/``baddbmm``) and ``save_from_both_policies(p1, p2)`` act as in
JAX. ``save_only_these_names(*names)``, ``save_any_names_but_these(*names)`` and
``save_anything_except_these_names(*names)`` are accepted, but names cannot steer what torch
saves: the first two save nothing, the third everything (NOTE [checkpoint policies] in
``_remat.py``). JAX's offloading policies have no counterpart.
"""
