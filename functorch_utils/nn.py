"""``nn.Module`` ⇄ pure function bridge.

``params, apply = functionalize(module)`` turns a module into a pytree of parameters and a pure
function ``apply(params, *args, **kwargs)`` that every transform of this library (and of
``torch.func``) accepts. Helpers build on it: ``per_sample_grads`` (per-example gradients of a
module's loss in one call) and ``stack_modules`` (an ensemble of N copies evaluated with one
``vmap``).

See ``docs/nn.md`` for a guide.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
import torch.func
from torch import nn

from ._errors import describe, message, raise_type, raise_value
from ._grad import grad
from ._torch_hooks import is_compiling, under_vmap
from ._vmap import vmap
from .tree_util import tree_map

# NOTE [nn bridge: params layout, copies and purity]
# - ``params`` is a FLAT dict keyed by dotted names, exactly the names of
#   ``module.named_parameters()`` (so the keys match ``state_dict()`` and ``torch.func``'s
#   ``functional_call``/``stack_module_state``). A flat dict is a pytree like any other: every
#   transform, ``tree_util`` and ``ravel_pytree`` work on it.
# - The values are COPIES (``detach().clone()``), not views: updating them in place never changes
#   the module, training the module never changes them, and no transform ever sees the module's
#   own ``nn.Parameter``s, so ``.grad`` and ``requires_grad`` of those stay as they were.
# - Tied weights (one ``nn.Parameter`` reachable under two names) are ONE leaf, under the first
#   name ``named_parameters()`` gives; ``functional_call(tie_weights=True)`` uses it everywhere the
#   module uses the tensor, so its gradient is the sum over the uses.
# - Buffers are snapshotted (copied) by ``functionalize`` and, with ``include_buffers=True``, are
#   keys of ``params`` too. Every call hands the module fresh clones of them, so in-place buffer
#   updates (BatchNorm running statistics in training mode) are dropped: ``apply`` stays pure.
# - ``torch.func.functional_call`` silently falls back to the module's own tensor for a missing
#   key; ``apply`` checks the keys (and shapes) first and raises instead.
# - Training-mode BatchNorm under vmap is detected with ``_torch_hooks.under_vmap()`` (torch.func
#   has no public "am I inside vmap?") and refused with a message instead of torch's in-place
#   error about batched running statistics.
#
# NOTE [nn bridge: threads]
# ``torch.func.functional_call`` swaps the given tensors into the module in place for the length
# of the call and swaps the module's own back afterwards. Two threads doing that on one module at
# once see each other's tensors, and the last one out "restores" the other's, leaving the module
# changed. So every ``apply`` holds a lock for its module (one per module, shared by every
# ``apply`` built from it; reentrant, so a forward may call ``apply`` again) for the length of the
# swap. Calls on one module from several threads are therefore pure and correct, and run one at a
# time; calling the module itself from another thread while ``apply`` runs is not guarded (it may
# see the swapped-in tensors).

__all__ = [
    "Apply",
    "functionalize",
    "per_sample_grads",
    "stack_modules",
]


def _name_list(names: Sequence[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    if len(names) > limit:
        shown += f", ... ({len(names)} in all)"
    return f"[{shown}]"


def _training_batchnorm(module: nn.Module) -> str | None:
    """The dotted name of the first BatchNorm submodule in training mode, if any."""
    for name, sub in module.named_modules():
        if isinstance(sub, nn.modules.batchnorm._BatchNorm) and sub.training:
            return name or type(sub).__name__
    return None


_LOCKS: weakref.WeakKeyDictionary[nn.Module, threading.RLock] = weakref.WeakKeyDictionary()
_LOCKS_LOCK = threading.Lock()


def _module_lock(module: nn.Module) -> threading.RLock:
    """The one lock that guards ``module``'s tensors while ``apply`` swaps them (NOTE above)."""
    with _LOCKS_LOCK:
        lock = _LOCKS.get(module)
        if lock is None:
            lock = _LOCKS[module] = threading.RLock()
        return lock


def _batchnorm_message(call: str, name: str) -> str:
    return message(
        call,
        f"the module has BatchNorm {name!r} in training mode, which computes statistics over the "
        "batch and updates its running statistics in place, so it cannot run per example under "
        "vmap",
        "BatchNorm in eval mode (or no BatchNorm) under vmap",
        "a training-mode BatchNorm",
        "Call module.eval() before functionalize (BatchNorm then uses its running statistics), "
        "or replace BatchNorm with GroupNorm or LayerNorm, which need no batch.",
    )


class Apply:
    """The pure function returned by ``functionalize``: ``apply(params, *args, **kwargs)``.

    Calls the module's ``forward`` with the tensors of ``params`` in place of its parameters (and,
    with ``include_buffers=True``, its buffers), through ``torch.func.functional_call``. The keys
    of ``params`` are checked first (see ``functionalize``), then their shapes. The swap of the
    module's tensors runs under a per-module lock, so threads sharing the module do not see each
    other's parameters.

    Attributes:
        module: the module whose ``forward`` runs. Its own parameters are never used.
        names: the keys ``params`` must have, in ``named_parameters()`` order.
        buffers: the copies of the module's buffers taken by ``functionalize`` (used when they are
            not keys of ``params``).
        tied: alias name -> the key that holds the tensor, for tied weights.
        strict: whether a missing key is an error (``True``) or falls back to the copy taken by
            ``functionalize``.
    """

    def __init__(
        self,
        module: nn.Module,
        defaults: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        tied: dict[str, str],
        strict: bool,
        buffer_names: frozenset[str] = frozenset(),
    ) -> None:
        self.module = module
        self.names: tuple[str, ...] = tuple(defaults)
        self.buffers = buffers
        self.tied = tied
        self.strict = strict
        self._defaults = defaults
        self._shapes = {k: v.shape for k, v in defaults.items()}
        self._buffer_names = frozenset(buffers) | buffer_names
        self._call = f"functionalize({type(module).__name__}) apply(params, ...)"
        self._lock = _module_lock(module)

    def __repr__(self) -> str:
        return f"<apply of functionalize({type(self.module).__name__}): {len(self.names)} keys>"

    def _check(self, params: Any) -> dict[str, torch.Tensor]:
        call = self._call
        if not isinstance(params, Mapping):
            raise_type(
                call,
                "params is not a dict",
                f"a dict of tensors with the keys {_name_list(self.names)}",
                describe(params),
                "Pass the params that functionalize returned (or a tree_map of them) as the "
                "first argument.",
            )
        for key in params:
            if key in self._shapes:
                continue
            if key in self.tied:
                target = self.tied[key]
                raise_value(
                    call,
                    f"params has the key {key!r}, which is tied to {target!r} (one tensor used "
                    "under both names)",
                    f"one leaf per tied tensor, under its first name {target!r}",
                    f"the key {key!r}",
                    f"Pass only {target!r}: the module uses it in both places, and its gradient "
                    "is the sum over the uses.",
                )
            raise_value(
                call,
                f"params has an unexpected key {key!r}",
                f"only the keys {_name_list(self.names)}",
                f"the extra key {key!r}",
                "Remove it, or check its spelling against the keys functionalize returned.",
            )
        missing = [k for k in self.names if k not in params]
        if missing and self.strict:
            what = "key" if len(missing) == 1 else "keys"
            raise_value(
                call,
                f"params is missing the {what} {', '.join(repr(k) for k in missing)}",
                f"every key of {_name_list(self.names)}",
                f"a dict of {len(params)} keys without {_name_list(missing)}",
                "Pass every key (start from the params functionalize returned and replace "
                "values), or build apply with functionalize(module, strict=False) to use the "
                "values copied at functionalize time for missing keys.",
            )
        for key, value in params.items():
            if not isinstance(value, torch.Tensor):
                raise_type(
                    call,
                    f"params[{key!r}] is not a tensor",
                    f"a tensor of shape {tuple(self._shapes[key])}",
                    describe(value),
                )
            if value.shape != self._shapes[key]:
                raise_value(
                    call,
                    f"params[{key!r}] has the wrong shape",
                    f"shape {tuple(self._shapes[key])}",
                    describe(value),
                    "Under vmap, give the mapped axis with in_axes (stacked params are mapped "
                    "over axis 0 by vmap(apply, in_axes=(0, None))).",
                )
        return dict(params)

    def __call__(self, params: Any, /, *args: Any, **kwargs: Any) -> Any:
        given = self._check(params)
        # under torch.compile the interpreter stack cannot be traced: torch's own error stands
        if not is_compiling() and under_vmap():
            bn = _training_batchnorm(self.module)
            if bn is not None:
                raise ValueError(_batchnorm_message(self._call, bn))
        tensors: dict[str, torch.Tensor] = {}
        for key in self.names:
            value = given[key] if key in given else self._defaults[key]
            # Buffers are cloned per call: in-place updates (running statistics) must not leak.
            tensors[key] = value.clone() if key in self._buffer_names else value
        for key, value in self.buffers.items():
            if key not in tensors:
                tensors[key] = value.clone()
        with self._lock:  # NOTE [nn bridge: threads]
            return torch.func.functional_call(
                self.module, tensors, args, kwargs, tie_weights=True, strict=False
            )


def _copies(named: Any) -> dict[str, torch.Tensor]:
    return {name: t.detach().clone() for name, t in named}


def _tied(module: nn.Module) -> dict[str, str]:
    """alias -> first name, for every parameter or buffer reachable under several names."""
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    named = [
        *module.named_parameters(remove_duplicate=False),
        *module.named_buffers(remove_duplicate=False),
    ]
    for name, t in named:
        canonical = first.setdefault(id(t), name)
        if canonical != name:
            tied[name] = canonical
    return tied


def functionalize(
    module: nn.Module, *, include_buffers: bool = False, strict: bool = True
) -> tuple[dict[str, torch.Tensor], Apply]:
    """Split a module into a pytree of parameters and a pure function that applies it.

    ``params`` is a flat dict keyed by dotted names (the names of ``module.named_parameters()``,
    as in ``state_dict()``), whose values are detached COPIES of the module's parameters. The
    module itself is never changed: not its parameters, their ``.grad`` or ``requires_grad``, nor
    its buffers. ``apply(params, *args, **kwargs)`` runs ``module(*args, **kwargs)`` with those
    tensors instead, and is pure, so ``grad``, ``vmap``, ``jacrev``, ``hessian`` etc. accept it.

    Tied weights (one parameter reachable under two names, e.g. a shared embedding and output
    layer) are one leaf, under the first name; passing the other name is an error that says so.

    Buffers (e.g. BatchNorm running statistics) are copied now and, by default, held by ``apply``
    (``apply.buffers``); with ``include_buffers=True`` they are keys of ``params`` too, so they can
    be replaced, stacked or mapped (integer buffers then need ``allow_int=True`` if you
    differentiate the whole dict). Each call gives the module fresh clones of the buffers, so
    in-place updates of running statistics in training mode are dropped rather than leaking out.
    A BatchNorm in training mode under ``vmap`` is refused with a ``ValueError``: call
    ``module.eval()`` first, or use GroupNorm/LayerNorm.

    Threads: ``apply`` may be called from several threads at once. Each call swaps its tensors
    into the module (as ``torch.func.functional_call`` does) under a lock held per module, so
    every call sees its own parameters and the module is left as it was; calls on one module run
    one at a time. Calling the module itself from another thread while ``apply`` runs is not
    guarded; for parallel evaluation, functionalize one copy of the module per thread.

    Args:
        module: the ``torch.nn.Module`` to take apart.
        include_buffers: also put the buffers in ``params`` (default: ``apply`` holds them).
        strict: with ``True`` (default) a missing key of ``params`` is a ``ValueError`` naming it;
            with ``False`` a missing key uses the copy taken now. An unknown key is an error
            either way, so a misspelled name never goes unnoticed.

    Returns:
        ``(params, apply)``: the dict of copies, and the ``Apply`` function.

    Raises:
        TypeError: ``module`` is not an ``nn.Module``.

    Example:
        >>> import torch
        >>> import functorch_utils as fu
        >>> from functorch_utils.nn import functionalize
        >>> model = torch.nn.Linear(3, 1)
        >>> params, apply = functionalize(model)
        >>> sorted(params)
        ['bias', 'weight']
        >>> x = torch.ones(4, 3)
        >>> grads = fu.grad(lambda p: apply(p, x).sum())(params)
        >>> grads["weight"]
        tensor([[4., 4., 4.]])
        >>> model.weight.grad is None
        True
        >>> apply({"weight": params["weight"]}, x)
        Traceback (most recent call last):
        ...
        ValueError: functionalize(Linear) apply(params, ...): params is missing the key 'bias'; ...
    """
    if not isinstance(module, nn.Module):
        raise_type(
            "functionalize(module)",
            "module is not a torch.nn.Module",
            "an nn.Module instance",
            describe(module),
            "Pass the module itself (an instance, not its class).",
        )
    params = _copies(module.named_parameters())
    buffers = _copies(module.named_buffers())
    tied = _tied(module)
    if include_buffers:
        defaults = {**params, **buffers}
        held: dict[str, torch.Tensor] = {}
    else:
        defaults = params
        held = buffers
    apply = Apply(module, defaults, held, tied, strict, frozenset(buffers))
    out = {k: v.clone() for k, v in defaults.items()}
    return out, apply


def per_sample_grads(
    module: nn.Module,
    loss_fn: Callable[[Any, Any], torch.Tensor],
    inputs: Any,
    targets: Any,
    *,
    params: dict[str, torch.Tensor] | None = None,
    chunk_size: int | None = None,
    randomness: str = "error",
) -> dict[str, torch.Tensor]:
    """Per-example gradients of a module's loss, in one call (``vmap`` of ``grad``).

    For every ``i`` along the leading axis of ``inputs`` and ``targets`` (tensors or pytrees of
    tensors), the gradient with respect to the parameters of
    ``loss_fn(module(inputs[i:i+1]), targets[i:i+1])``, i.e. of the loss of a batch of one; the
    module sees a batch dimension as usual. The result is a dict like
    ``functionalize(module)[0]`` whose values have a leading axis of length ``B``.

    Args:
        module: the model; it is not changed. BatchNorm in training mode is refused
            (``ValueError``): per-example statistics are not what a batch of one means; call
            ``module.eval()`` or use GroupNorm/LayerNorm.
        loss_fn: ``loss_fn(outputs, targets) -> scalar tensor``, e.g.
            ``torch.nn.functional.cross_entropy``.
        inputs: the batch of inputs, leading axis ``B``.
        targets: the batch of targets, leading axis ``B``.
        params: the parameters to differentiate at (a dict as ``functionalize`` returns); default
            the module's current parameters.
        chunk_size: passed to ``vmap``: map this many examples at a time to bound memory.
        randomness: passed to ``vmap`` (``"error"``, ``"different"`` or ``"same"``), for modules
            with dropout in training mode.

    Returns:
        A dict of per-example gradients, ``grads[name].shape == (B, *param.shape)``.

    Example:
        >>> import torch
        >>> from functorch_utils.nn import per_sample_grads
        >>> model = torch.nn.Linear(2, 1, bias=False)
        >>> x, y = torch.tensor([[1.0, 0.0], [0.0, 2.0]]), torch.zeros(2, 1)
        >>> with torch.no_grad():
        ...     _ = model.weight.fill_(1.0)
        >>> g = per_sample_grads(model, torch.nn.functional.mse_loss, x, y)
        >>> g["weight"]  # d/dw (w.x)^2 = 2 (w.x) x, for each example
        tensor([[[2., 0.]],
        <BLANKLINE>
                [[0., 8.]]])
    """
    call = f"per_sample_grads({type(module).__name__}, ...)"
    if not isinstance(module, nn.Module):
        raise_type(
            "per_sample_grads(module, ...)",
            "module is not a torch.nn.Module",
            "an nn.Module instance",
            describe(module),
        )
    if not callable(loss_fn):
        raise_type(
            call,
            "loss_fn is not callable",
            "a function loss_fn(outputs, targets) -> scalar",
            describe(loss_fn),
        )
    bn = _training_batchnorm(module)
    if bn is not None:
        raise ValueError(_batchnorm_message(call, bn))
    own, apply = functionalize(module)
    p = own if params is None else params

    def unsqueeze(t: Any) -> Any:
        return t.unsqueeze(0) if isinstance(t, torch.Tensor) else t

    def sample_loss(p: Any, x: Any, y: Any) -> torch.Tensor:
        return loss_fn(apply(p, tree_map(unsqueeze, x)), tree_map(unsqueeze, y))

    batched = vmap(
        grad(sample_loss), in_axes=(None, 0, 0), chunk_size=chunk_size, randomness=randomness
    )
    out: dict[str, torch.Tensor] = batched(p, inputs, targets)
    return out


def stack_modules(
    modules: Sequence[nn.Module], *, include_buffers: bool = False
) -> tuple[dict[str, torch.Tensor], Apply]:
    """Stack the parameters of N modules of one architecture, for an ensemble under ``vmap``.

    ``stacked, apply = stack_modules(models)`` gives a dict like ``functionalize(models[0])[0]``
    whose values have a leading axis of length ``N`` (copies; the modules are not changed), and
    the ``apply`` of ``models[0]``. Evaluate all members with one call:
    ``vmap(apply, in_axes=(0, None))(stacked, x)`` (same input for all) or
    ``vmap(apply)(stacked, xs)`` (one input each).

    Buffers are held by ``apply`` when all modules have equal buffers; when they differ (e.g.
    BatchNorm running statistics), pass ``include_buffers=True`` to stack them into the dict too.

    Args:
        modules: a non-empty sequence of modules with the same parameter names and shapes.
        include_buffers: stack the buffers as well (keys of the returned dict).

    Returns:
        ``(stacked, apply)``.

    Raises:
        TypeError: ``modules`` is empty or holds something that is not an ``nn.Module``.
        ValueError: the modules differ in parameter names or shapes, or in buffer values
            without ``include_buffers=True``.

    Example:
        >>> import torch
        >>> import functorch_utils as fu
        >>> from functorch_utils.nn import stack_modules
        >>> models = [torch.nn.Linear(3, 2) for _ in range(4)]
        >>> stacked, apply = stack_modules(models)
        >>> stacked["weight"].shape
        torch.Size([4, 2, 3])
        >>> x = torch.randn(5, 3)
        >>> out = fu.vmap(apply, in_axes=(0, None))(stacked, x)
        >>> out.shape
        torch.Size([4, 5, 2])
        >>> torch.allclose(out[2], models[2](x))
        True
    """
    call = "stack_modules(modules)"
    if (
        not isinstance(modules, Sequence)
        or len(modules) == 0
        or not all(isinstance(m, nn.Module) for m in modules)
    ):
        raise_type(
            call,
            "modules is not a non-empty sequence of nn.Module",
            "a list of modules with one architecture",
            describe(modules),
        )
    first = dict(modules[0].named_parameters())
    for i, m in enumerate(modules[1:], start=1):
        _check_member(call, i, m, modules[0], first, include_buffers)
    # torch.func.stack_module_state refuses members in different training modes with a bare
    # RuntimeError; the members all run modules[0]'s forward, so say so first.
    modes = {m.training for m in modules}
    if len(modes) > 1:
        raise_value(
            call,
            "the modules are in different training modes (some train(), some eval())",
            "one mode for all members",
            f"training flags {[m.training for m in modules]}",
            "Call .train() or .eval() on every member before stacking.",
        )
    _, apply = functionalize(modules[0], include_buffers=include_buffers)
    params, buffers = torch.func.stack_module_state(list(modules))
    stacked = {k: v.detach() for k, v in params.items()}  # copies, not leaves needing grad
    if include_buffers:
        stacked.update({k: v.detach() for k, v in buffers.items()})
    return stacked, apply


def _check_member(
    call: str,
    i: int,
    m: nn.Module,
    m0: nn.Module,
    first: Mapping[str, torch.Tensor],
    include_buffers: bool,
) -> None:
    """``modules[i]`` has ``modules[0]``'s parameter names and shapes (and buffers if held)."""
    own = dict(m.named_parameters())
    if list(own) != list(first):
        raise_value(
            call,
            f"modules[{i}] has other parameter names than modules[0]",
            f"the keys {_name_list(list(first))}",
            f"the keys {_name_list(list(own))}",
            "Stack only copies of one architecture.",
        )
    for k, t in first.items():
        if own[k].shape != t.shape:
            raise_value(
                call,
                f"modules[{i}]'s {k!r} has another shape than modules[0]'s",
                f"shape {tuple(t.shape)}",
                describe(own[k].detach()),
                "Stack only copies of one architecture.",
            )
    if include_buffers:
        return
    for (k, b0), (_, b) in zip(m0.named_buffers(), m.named_buffers()):
        if not torch.equal(b0, b):
            raise_value(
                call,
                f"modules[{i}]'s buffer {k!r} differs from modules[0]'s, so one copy "
                "cannot serve all members",
                "equal buffers, or include_buffers=True",
                "different values",
                "Pass stack_modules(modules, include_buffers=True) to stack the buffers too.",
            )
