"""Every private torch API the package uses, and every match on torch's error text.

Each hook has a fallback that raises :class:`TorchHookMissing` (never one that silently answers
``False``), and ``tests/test_torch_hooks.py`` pins each one, so that a torch upgrade that moves
one fails in CI, not in a user's derivative.
"""

from __future__ import annotations

import functools
import importlib.abc
import importlib.machinery
import os
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

import torch

__all__ = [
    "TorchHookMissing",
    "current_level",
    "interpreter_keys",
    "forward_levels",
    "under_vmap",
    "run_backward",
    "is_compiling",
    "is_legacy_function_error",
    "transform_names",
    "carries_derivative",
    "vmap_error_kind",
    "is_saved_tensors_hooks_disabled_error",
    "is_inference_tensor_save_error",
    "is_zero_tensor",
    "wrap_for_level",
    "is_empty_output_error",
    "ACCUMULATE_GRAD",
    "is_unsupported_in_transform_error",
    "is_batched",
    "unwrap_all",
]


class TorchHookMissing(RuntimeError):
    """A private torch API this package relies on is missing from the installed torch."""


def _missing(what: str) -> TorchHookMissing:
    return TorchHookMissing(
        f"functorch_utils relies on the private torch API {what}, which this torch "
        f"({torch.__version__}) does not have. Please report this with your torch version."
    )


# NOTE [eager-only helpers without importing dynamo]
# A few helpers must run eagerly under torch.compile (dynamo cannot trace functorch's interpreter
# stack or its wrappers; the collectives across processes run between graphs), which
# ``torch.compiler.disable`` arranges. Applying it imports ``torch._dynamo``, 1.3 s or half of
# this package's import time. Nothing can be compiling before ``torch._dynamo`` is imported, so
# the decoration is applied then: at once if it is already imported, else by an import hook the
# moment anyone imports it. The helper's module global is replaced, so callers must look it up
# at call time (``hooks.is_batched(...)``, or a bare name inside the defining module).
_PENDING: list[tuple[dict[str, Any], str, Callable[..., Any], str | None]] = []


def _dynamo_loaded() -> bool:
    mod = sys.modules.get("torch._dynamo")
    return mod is not None and hasattr(mod, "disable")


def _disable(fn: Callable[..., Any], reason: str | None) -> Callable[..., Any]:
    if reason is None:
        return torch.compiler.disable(fn)
    return torch.compiler.disable(fn, reason=reason)


def _apply_pending() -> None:
    while _PENDING:
        namespace, name, fn, reason = _PENDING.pop()
        if namespace.get(name) is fn:
            namespace[name] = _disable(fn, reason)


class _OnDynamoImport(importlib.abc.MetaPathFinder):
    """Runs ``_apply_pending`` right after ``torch._dynamo`` is first imported."""

    def find_spec(self, name: str, path: Any, target: Any = None) -> Any:
        if name != "torch._dynamo":
            return None
        sys.meta_path[:] = [f for f in sys.meta_path if f is not self]
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        run = loader.exec_module

        def exec_module(module: Any) -> None:
            run(module)
            _apply_pending()

        loader.exec_module = exec_module
        return spec


def eager_only(reason: str | None = None) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """``torch.compiler.disable`` applied without importing dynamo first (see the NOTE above)."""

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if _dynamo_loaded():
            return _disable(fn, reason)
        _PENDING.append((fn.__globals__, fn.__name__, fn, reason))
        if not any(isinstance(f, _OnDynamoImport) for f in sys.meta_path):
            sys.meta_path.insert(0, _OnDynamoImport())
        return fn

    return decorate


# torch.func has no public "is a transform active?"; maybe_current_level is None outside all.
try:
    _maybe_current_level: Callable[[], int | None] = torch._C._functorch.maybe_current_level
except AttributeError:  # pragma: no cover - depends on the torch version

    def _maybe_current_level() -> int | None:
        raise _missing("torch._C._functorch.maybe_current_level")


def current_level() -> int | None:
    """The innermost active functorch level, or ``None`` when no transform is active."""
    return _maybe_current_level()


# Eager-only: dynamo cannot trace the interpreter stack (it warns); where a graph break hands a
# caller's frame back to dynamo, this runs eagerly instead of being traced.
@eager_only()
def interpreter_keys() -> list[Any]:
    """The transform types of the active functorch interpreters, outermost first."""
    try:
        stack = torch._C._functorch.get_interpreter_stack()
    except AttributeError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._C._functorch.get_interpreter_stack") from e
    return [i.key() for i in (stack or [])]


def _transform_type(name: str) -> Any:
    try:
        return getattr(torch._C._functorch.TransformType, name)
    except AttributeError as e:  # pragma: no cover - depends on the torch version
        raise _missing(f"torch._C._functorch.TransformType.{name}") from e


def forward_levels() -> int:
    """How many forward-mode (jvp) levels are active."""
    jvp = _transform_type("Jvp")
    return sum(1 for k in interpreter_keys() if k == jvp)


def under_vmap() -> bool:
    """Whether a torch.func vmap level is active."""
    vmap = _transform_type("Vmap")
    return any(k == vmap for k in interpreter_keys())


is_compiling: Callable[[], bool] = torch.compiler.is_compiling


# NOTE [direct engine call]
# ``torch.autograd.grad``'s Python wrapper costs ~15 us per call (argument normalisation, grad
# seeding), a third of the cost of a tiny gradient. The tape path calls the function it wraps,
# ``torch.autograd.graph._engine_run_backward`` (private), with everything already normalised.
# Its arguments are bound by keyword so that a signature change fails loudly (TypeError), and
# tests/test_torch_hooks.py pins it against torch.autograd.grad.
_engine_run_backward: Callable[..., tuple[torch.Tensor | None, ...]] | None
try:
    from torch.autograd.graph import _engine_run_backward
except ImportError:  # pragma: no cover - depends on the torch version
    _engine_run_backward = None


def run_backward(
    outputs: Sequence[torch.Tensor],
    cotangents: Sequence[torch.Tensor],
    inputs: Sequence[torch.Tensor],
    *,
    create_graph: bool,
    retain_graph: bool,
) -> tuple[torch.Tensor | None, ...]:
    """The gradients of ``outputs`` (seeded with ``cotangents``) w.r.t. ``inputs``; None if unused."""
    if _engine_run_backward is None:  # pragma: no cover - depends on the torch version
        return torch.autograd.grad(
            outputs,
            inputs,
            cotangents,
            retain_graph=retain_graph or create_graph,
            create_graph=create_graph,
            allow_unused=True,
        )
    return _engine_run_backward(
        tuple(outputs),
        grad_tensors=tuple(cotangents),
        keep_graph=retain_graph or create_graph,
        create_graph=create_graph,
        inputs=tuple(inputs),
        allow_unreachable=True,
        accumulate_grad=False,
    )


def is_legacy_function_error(err: BaseException) -> bool:
    """torch.func's refusal of an ``autograd.Function`` without ``setup_context``."""
    text = str(err)
    return isinstance(err, RuntimeError) and "setup_context" in text and "autograd.Function" in text


def is_inference_tensor_save_error(err: BaseException) -> bool:
    """autograd's refusal to save a tensor created under ``inference_mode`` for backward."""
    return isinstance(
        err, RuntimeError
    ) and "Inference tensors cannot be saved for backward" in str(err)


_IS_ZEROTENSOR: Callable[[torch.Tensor], bool] | None = getattr(
    torch.Tensor, "_is_zerotensor", None
)


def is_zero_tensor(x: torch.Tensor) -> bool:
    """Whether ``x`` is torch's internal ZeroTensor (forward mode returns it for zero tangents)."""
    if _IS_ZEROTENSOR is None:  # pragma: no cover - depends on the torch version
        raise _missing("Tensor._is_zerotensor")
    return _IS_ZEROTENSOR(x)


def is_saved_tensors_hooks_disabled_error(err: BaseException) -> bool:
    """torch.func's ``grad``/``vjp`` refusing to run while saved-tensor hooks are active."""
    text = str(err)
    return isinstance(err, RuntimeError) and "support saved tensor hooks" in text


# torch.func.vmap reports a user's mistake inside the batched function as a bare RuntimeError;
# vmap says it in the package's words. These are the texts of torch's messages (torch 2.4-2.13).
_VMAP_ERRORS: tuple[tuple[str, str], ...] = (
    ("item", r"calling \.item\(\) on a Tensor"),
    ("control_flow", r"data-dependent control flow"),
    ("dynamic_shape", r"dynamic shape|boolean mask"),
    ("in_place", r"inplace arithmetic|doesn't match the broadcast shape"),
    ("randomness", r"random operation while in randomness error mode"),
    ("overflow", r"integer multiplication overflow|[Ss]ize calculation overflowed"),
    ("requires_grad", r"Tensor\.requires_grad_\(\) \(or perhaps using torch\.autograd\.functional"),
    ("forward_ad", r"Batching rule not implemented for aten::_make_dual"),
)


def vmap_error_kind(err: BaseException) -> str | None:
    """Which user mistake a RuntimeError from inside ``torch.func.vmap`` reports, if known.

    One of ``"item"`` (``.item()``/``int()`` on a batched tensor), ``"control_flow"`` (``if`` on
    one), ``"dynamic_shape"`` (``x[mask]``, ``nonzero``), ``"in_place"`` (a batched value written
    into an unbatched tensor), ``"randomness"`` (a random op with ``randomness="error"``),
    ``"overflow"`` (a batched size past int64), ``"requires_grad"`` (``requires_grad_()`` or
    ``torch.autograd.functional`` on a batched value), ``"forward_ad"`` (``torch.autograd``'s
    forward mode on one) or ``"legacy_function"`` (an ``autograd.Function`` without
    ``setup_context``); ``None`` for any other error.
    """
    if not isinstance(err, RuntimeError):
        return None
    if is_legacy_function_error(err):
        return "legacy_function"
    text = str(err)
    for kind, pattern in _VMAP_ERRORS:
        if re.search(pattern, text):
            return kind
    return None


# Custom rules ask two things torch.func has no public answer for: which transforms are active
# (to tell forward-over-reverse from plain forward mode), and whether a tensor carries a
# derivative at any active level (a value a rule closes over that an enclosing transform is
# differentiating), not only at the innermost one that ``requires_grad`` reports.
_TRANSFORM_NAMES = ("Grad", "Jvp", "Vmap", "Functionalize")


def transform_names() -> list[str]:
    """The active torch.func transforms, outermost first: ``"Grad"``, ``"Jvp"``, ``"Vmap"``..."""
    names = {_transform_type(n): n for n in _TRANSFORM_NAMES}
    return [names.get(k, "other") for k in interpreter_keys()]


def carries_derivative(x: torch.Tensor) -> bool:
    """Whether autograd, or a torch.func ``grad``/``jvp`` level at any depth, tracks ``x``.

    Walks the functorch wrappers from the innermost level out; forward-mode tangents are seen at
    the innermost forward level (custom rules refuse nested forward mode anyway). While
    torch.compile traces, the wrappers cannot be walked; there the traced tensor answers
    ``requires_grad`` (reverse mode) and carries the tangent (forward mode) for every level
    (pinned for grad, jvp and vmap around either under jit in tests/test_random.py).
    """
    from torch.autograd.forward_ad import unpack_dual

    if is_compiling():
        return x.requires_grad or unpack_dual(x).tangent is not None
    try:
        is_wrapped = torch._C._functorch.is_functorch_wrapped_tensor
        is_batched = torch._C._functorch.is_batchedtensor
        unwrap = torch._C._functorch.get_unwrapped
    except AttributeError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._C._functorch.get_unwrapped") from e
    while True:
        if x.requires_grad:
            return True
        if not is_batched(x) and unpack_dual(x).tangent is not None:  # no batching rule for it
            return True
        if not is_wrapped(x):
            return False
        x = unwrap(x)


def wrap_for_level(x: torch.Tensor, level: int) -> torch.Tensor:
    """``x`` wrapped at functorch ``level`` without tracking, as torch.func wraps every argument.

    torch.func's transforms wrap all tensor arguments at their level, so a function may write in
    place into an argument it does not differentiate; a tensor that is not wrapped counts as
    captured, and writing into it is refused. Arguments our transforms do not differentiate
    reach the function through a closure, so they are wrapped the same way.
    """
    try:
        wrap = torch._C._functorch._wrap_for_grad
    except AttributeError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._C._functorch._wrap_for_grad") from e
    return wrap(x, level)


_UNSUPPORTED_INSIDE_TRANSFORM = (
    # torch.autograd.functional.* or requires_grad_() on a transformed input
    "inside of a function being transformed by a functorch transform",
    # an in-place write into a tensor the function closes over
    "that would mutate a captured Tensor",
)


def is_unsupported_in_transform_error(err: BaseException) -> bool:
    """torch.func's refusal of an operation a transformed function may not do."""
    text = str(err)
    return isinstance(err, RuntimeError) and any(t in text for t in _UNSUPPORTED_INSIDE_TRANSFORM)


def is_empty_output_error(err: BaseException) -> bool:
    """torch.func's refusal of a function with no outputs (JAX gives empty results)."""
    return isinstance(err, RuntimeError) and "has non-empty output" in str(err)


def _accumulate_grad_type() -> type:
    # The node autograd puts behind a leaf that requires grad; found from a tiny graph rather
    # than by its private name, and checked to carry the leaf as ``.variable``.
    leaf = torch.zeros(1, requires_grad=True)
    node = leaf.view(1).grad_fn.next_functions[0][0]  # type: ignore[union-attr]
    if getattr(node, "variable", None) is not leaf:  # pragma: no cover - depends on torch
        raise _missing("AccumulateGrad.variable")
    return type(node)


ACCUMULATE_GRAD: type = _accumulate_grad_type()


# Control flow under ``vmap`` (``lax``) must know whether a predicate differs between batch members,
# and a batched ``while_loop`` must know whether any member still continues: torch.func has no
# public answer to either. Both walk the functorch wrappers (grad/jvp wrappers and batched
# tensors) from the innermost level out.
def _functorch_unwrap_api() -> tuple[Callable[..., bool], Callable[..., bool], Callable[..., Any]]:
    try:
        f = torch._C._functorch
        return f.is_functorch_wrapped_tensor, f.is_batchedtensor, f.get_unwrapped
    except AttributeError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._C._functorch.get_unwrapped") from e


@eager_only()  # dynamo cannot trace the wrapper queries; run them eagerly
def is_batched(x: torch.Tensor) -> bool:
    """Whether ``x`` is batched at any active ``vmap`` level (its value differs across members)."""
    is_wrapped, is_batched_tensor, unwrap = _functorch_unwrap_api()
    while is_wrapped(x):
        if is_batched_tensor(x):
            return True
        x = unwrap(x)
    return False


@eager_only()
def unwrap_all(x: torch.Tensor) -> torch.Tensor:
    """The plain tensor under every functorch wrapper: all batch members' values at once.

    Only for reading values (e.g. "does any member continue?"); it carries no derivative.
    """
    is_wrapped, _, unwrap = _functorch_unwrap_api()
    while is_wrapped(x):
        x = unwrap(x)
    return x


# ---------------------------------------------------------------------------------------------
# torch.compile: backends, its exceptions, and where the on-disk caches live (used by ``jit``).


def compile_backend(backend: Any, mode: str | None, options: dict | None, dynamic: Any) -> Any:
    """The backend object ``torch.compile(backend=..., mode=..., options=...)`` would build.

    ``jit`` wraps it to count compiles; building it the way torch.compile does keeps ``mode``
    and ``options`` working (torch.compile accepts them only with a backend given by name).
    """
    if callable(backend):
        if mode is not None or options:
            raise ValueError("mode and options apply to a backend given by name, not a callable")
        return backend
    try:
        if backend == "inductor":
            return torch._TorchCompileInductorWrapper(mode, options, dynamic)
        return torch._TorchCompileWrapper(backend, mode, options, dynamic)
    except AttributeError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._TorchCompileInductorWrapper") from e


def dynamo_exception_types() -> tuple[type[BaseException], ...]:
    """The exceptions torch.compile raises when it cannot trace or compile a function."""
    try:
        from torch._dynamo.exc import BackendCompilerFailed, TorchDynamoException
    except ImportError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._dynamo.exc.TorchDynamoException") from e
    return (TorchDynamoException, BackendCompilerFailed)


def compile_failure_reason(err: BaseException) -> str:
    """torch's reason for a compile failure, in a few lines (its first paragraph)."""
    text = str(err).strip()
    cause = err.__cause__
    if cause is not None and type(cause).__name__.startswith("Observed"):
        # a Python exception raised while dynamo traced the function: name it
        text = f"{text.splitlines()[0] if text else type(err).__name__}: {cause}"
    lines: list[str] = []
    for line in text.splitlines():
        if not line.strip() and lines:
            break
        if line.strip():
            lines.append(line.strip())
    return " ".join(lines[:4]) or type(err).__name__


def inductor_default_cache_dir() -> str:
    """torch's own default for the inductor cache directory (under the temp directory)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import default_cache_dir
    except ImportError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._inductor.runtime.cache_dir_utils.default_cache_dir") from e
    return os.path.abspath(default_cache_dir())


def inductor_cache_dir() -> str:
    """Where inductor keeps its on-disk caches (FX graphs, AOTAutograd), as torch resolves it."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
    except ImportError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._inductor.runtime.cache_dir_utils.cache_dir") from e
    return cache_dir()


# ---------------------------------------------------------------------------------------------
# The tape's batched backward (``torch.autograd.grad(..., is_grads_batched=True)``) batches with
# torch's legacy vmap, which never calls an ``autograd.Function``'s ``vmap`` rule: a Function
# whose backward must see the physical tensor (the collectives across processes) peels the level.


def is_legacy_batched(x: torch.Tensor) -> bool:
    """Whether ``x`` is batched by torch's legacy vmap (the tape's batched backward)."""
    try:
        return bool(torch._C._functorch.is_legacy_batchedtensor(x))
    except AttributeError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._C._functorch.is_legacy_batchedtensor") from e


def legacy_vmap_level() -> int:
    """The innermost active legacy-vmap level (its nesting counter, read without change)."""
    try:
        level = int(torch._C._vmapmode_increment_nesting())
        torch._C._vmapmode_decrement_nesting()
    except AttributeError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._C._vmapmode_increment_nesting") from e
    return level - 1


def remove_legacy_batch_dim(x: torch.Tensor, level: int) -> torch.Tensor:
    """The physical tensor of ``x`` at legacy ``level``, its batch dimension first."""
    try:
        return torch._remove_batch_dim(x, level, 1, 0)
    except AttributeError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._remove_batch_dim") from e


def add_legacy_batch_dim(x: torch.Tensor, level: int) -> torch.Tensor:
    """``x`` batched along its first dimension at legacy ``level`` (inverse of the above)."""
    try:
        return torch._add_batch_dim(x, 0, level)
    except AttributeError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._add_batch_dim") from e


# ---------------------------------------------------------------------------------------------
# Fake tensors (``eval_shape``)


def fake_tensor_mode() -> Any:
    """A ``FakeTensorMode`` that also accepts real tensors (a function's captured constants)."""
    try:
        from torch._subclasses.fake_tensor import FakeTensorMode
    except ImportError as e:  # pragma: no cover - depends on the torch version
        raise _missing("torch._subclasses.fake_tensor.FakeTensorMode") from e
    return FakeTensorMode(allow_non_fake_inputs=True)


try:
    # The active FakeTensorMode or None. A partial of the C function, so that no Python frame
    # runs: dynamo compiles the frames an eagerly running caller calls, and a frame compiled on
    # its own would answer "compiling" to that eager caller.
    active_fake_mode: Callable[[], Any] = functools.partial(
        torch._C._get_dispatch_mode, torch._C._TorchDispatchModeKey.FAKE
    )
except AttributeError:  # pragma: no cover - depends on the torch version

    def active_fake_mode() -> Any:
        raise _missing("torch._C._get_dispatch_mode")


def shapes_only() -> bool:
    """Whether tensors here carry shapes but no values: torch.compile is tracing, or a fake tensor
    mode is active (``eval_shape``). Code whose control flow reads values takes another route.

    Where dynamo compiles the caller's callee on its own (after a graph break) this can answer
    True to an eagerly running caller; use it only where both routes give the same values.
    """
    return is_compiling() or active_fake_mode() is not None


def data_dependent_shape_reason(err: BaseException) -> str | None:
    """What fake tensors could not know, when ``err`` is their refusal of a data-dependent shape."""
    name = type(err).__name__
    if name in ("DynamicOutputShapeException", "DataDependentOutputException"):
        return str(err).split("\n")[0][:80] or name
    if name in ("GuardOnDataDependentSymNode", "UnsupportedOperatorException") or (
        "data-dependent" in str(err).lower() or "Data dependent" in str(err)
    ):
        return "a data-dependent operation"
    return None


def synchronize(device: torch.device) -> None:
    """Wait for the kernels queued on ``device`` (an accelerator) to finish."""
    accelerator = getattr(torch, "accelerator", None)
    if accelerator is not None and hasattr(accelerator, "synchronize"):
        accelerator.synchronize(device)
        return
    module = getattr(torch, device.type, None)  # pragma: no cover - depends on the torch version
    if module is None or not hasattr(module, "synchronize"):
        raise _missing(f"torch.{device.type}.synchronize")
    module.synchronize(device)
