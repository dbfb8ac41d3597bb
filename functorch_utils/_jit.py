"""``jit`` and ``eval_shape``: JAX's compile entry points, on ``torch.compile``.

``jit(fun)`` returns a :class:`Jitted` function. Each call splits the arguments into static ones
(part of the cache key, passed to ``fun`` as Python values) and dynamic ones (pytrees of tensors;
Python numbers become 0-d tensors, as JAX traces them), then runs the cache entry for the static
values and the arguments' structure and shape class (dtype, rank, device, requires_grad of each
leaf). Each entry is its own ``torch.compile`` with its own dynamo cache; sizes vary inside an
entry, where torch's automatic dynamic shapes make the second size compile a size-generic graph.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np
import torch

from . import _pytree
from . import _torch_hooks as hooks
from ._argnums import check_argnames, check_names_taken, optional_argnums, positional_params
from ._errors import check_callable, describe, fun_name, message, raise_type, raise_value

__all__ = [
    "jit",
    "Jitted",
    "JitCompileError",
    "JitRecompileWarning",
    "JitFallbackWarning",
    "eval_shape",
    "ShapeDtypeStruct",
    "cache_dir",
    "disable_jit",
    "block_until_ready",
    "device_put",
    "named_scope",
    "named_call",
]

logger = logging.getLogger("functorch_utils.jit")

#: Seconds a compile may take before ``jit`` says what it is doing (NOTE [compile progress]).
PROGRESS_AFTER_S = 5.0


class JitCompileError(RuntimeError):
    """``torch.compile`` could not compile a jitted function (a graph break, an unsupported op).

    The message names the function and torch's reason. ``jit(..., fallback=True)`` runs such a
    function eagerly instead, with a :class:`JitFallbackWarning`.

    Example:
        >>> import torch
        >>> import functorch_utils as fu
        >>> def f(x):  # Python control flow on a tensor value: a graph break
        ...     return x if x.sum() > 0 else -x
        >>> try:
        ...     fu.jit(f, backend="eager")(torch.ones(2))
        ... except fu.JitCompileError as e:
        ...     print(str(e).split(";")[0])
        jit(f): torch.compile could not compile the function (fullgraph=True)
    """


class JitRecompileWarning(UserWarning):
    """A jitted function's cache was full and an entry was evicted: its next use recompiles.

    Example:
        >>> import warnings
        >>> import torch
        >>> import functorch_utils as fu
        >>> f = fu.jit(lambda x, k: x * k, static_argnums=1, cache_size=1, backend="eager")
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     _ = f(torch.ones(1), 2), f(torch.ones(1), 3)
        >>> [w.category.__name__ for w in caught]
        ['JitRecompileWarning']
    """


class JitFallbackWarning(UserWarning):
    """A jitted function with ``fallback=True`` could not be compiled and runs eagerly.

    Example:
        >>> import warnings
        >>> import torch
        >>> import functorch_utils as fu
        >>> def f(x):
        ...     return x if x.sum() > 0 else -x
        >>> with warnings.catch_warnings(record=True) as caught:
        ...     warnings.simplefilter("always")
        ...     out = fu.jit(f, backend="eager", fallback=True)(-torch.ones(2))
        >>> out, [w.category.__name__ for w in caught]
        (tensor([1., 1.]), ['JitFallbackWarning'])
    """


# ---------------------------------------------------------------------------------------------
# The on-disk cache


# NOTE [compile cache]
# torch's inductor keeps compiled FX graphs and AOTAutograd results on disk (on by default since
# torch 2.5), so a second process that compiles the same function with the same shapes loads the
# kernels instead of generating them (measured in docs/jit.md). torch puts them under
# /tmp/torchinductor_<user>, which is wiped at reboot. ``jit`` points them at a project cache
# directory instead, the first time it compiles, unless the user already chose one:
# ``TORCHINDUCTOR_CACHE_DIR`` wins (unless it holds torch's own default), then ``FUNCTORCH_UTILS_CACHE_DIR``, then
# ``$XDG_CACHE_HOME/functorch_utils/inductor`` (``~/.cache/...``).
_cache_lock = threading.Lock()
_cache_chosen = False


def cache_dir() -> str:
    """The directory of the on-disk compile cache ``jit`` uses (created if missing).

    Example:
        >>> import functorch_utils as fu
        >>> isinstance(fu.cache_dir(), str)
        True
    """
    global _cache_chosen
    with _cache_lock:
        if not _cache_chosen:
            _cache_chosen = True
            current = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
            # torch writes its default into the variable the first time it resolves the
            # directory, so torch's own default does not count as the user's choice
            if current is None or os.path.abspath(current) == hooks.inductor_default_cache_dir():
                chosen = os.environ.get("FUNCTORCH_UTILS_CACHE_DIR")
                if not chosen:
                    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(
                        os.path.expanduser("~"), ".cache"
                    )
                    chosen = os.path.join(base, "functorch_utils", "inductor")
                os.environ["TORCHINDUCTOR_CACHE_DIR"] = os.path.abspath(chosen)
    return hooks.inductor_cache_dir()


# ---------------------------------------------------------------------------------------------
# Static arguments


class _Statics:
    """Which arguments are static, checked against ``fun``'s signature when ``jit`` is built.

    As JAX: ``static_argnums`` given alone also makes the same parameters static when they are
    passed by keyword, and ``static_argnames`` alone also covers them when passed positionally.
    """

    def __init__(self, call: str, fun: Callable[..., Any], argnums: Any, argnames: Any) -> None:
        self.argnums = optional_argnums("jit", fun_name(fun), argnums, what="static_argnums")
        self.argnames = check_argnames(call, "static_argnames", argnames)
        params = positional_params(fun)
        if params is not None:
            names, has_varargs = params[0], params[1]
            if not has_varargs:
                for k in self.argnums:
                    if not -len(names) <= k < len(names):
                        raise_value(
                            call,
                            f"static_argnums={k} is out of range: the function takes "
                            f"{len(names)} positional argument{'' if len(names) == 1 else 's'}",
                            f"an index in [{-len(names)}, {len(names)})",
                            f"static_argnums={k}",
                            "Fix static_argnums, or name the argument in static_argnames.",
                        )
            check_names_taken(call, "static_argnames", self.argnames, params)
            if argnames is None:  # infer names from positions
                self.argnames = tuple(
                    names[k] for k in self.argnums if -len(names) <= k < len(names)
                )
            if argnums is None:  # infer positions from names
                self.argnums = tuple(i for i, n in enumerate(names) if n in self.argnames)
        self.any = bool(self.argnums or self.argnames)

    def split(
        self, call: str, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[Hashable, dict[int, Any], dict[str, Any], list[Any], dict[str, Any]]:
        """(cache key, static positionals, static keywords, dynamic positionals, dynamic kw)."""
        n = len(args)
        pos = {k + n if k < 0 else k for k in self.argnums}
        s_args = {i: args[i] for i in sorted(pos) if 0 <= i < n}
        s_kw = {k: v for k, v in kwargs.items() if k in self.argnames}
        d_args = [a for i, a in enumerate(args) if i not in s_args]
        d_kw = {k: v for k, v in kwargs.items() if k not in s_kw}
        key = (tuple(s_args.items()), tuple(sorted(s_kw.items())))
        try:
            hash(key)
        except TypeError:
            for where, v in [(f"args[{i}]", v) for i, v in s_args.items()] + [
                (f"{k}=", v) for k, v in s_kw.items()
            ]:
                try:
                    hash(v)
                except TypeError as e:
                    raise ValueError(
                        message(
                            call,
                            f"static argument {where} is not hashable (static arguments are "
                            f"part of the compile cache key; the error was: {e})",
                            "a hashable value (a number, string, tuple, frozen dataclass...)",
                            describe(v),
                            "Pass it as a tuple instead of a list, or make it a dynamic "
                            "(tensor) argument by removing it from static_argnums/argnames.",
                        )
                    ) from None
            raise
        return key, s_args, s_kw, d_args, d_kw


# ---------------------------------------------------------------------------------------------
# Dynamic arguments


def _to_tensor_leaf(call: str, leaf: Any, where: str) -> torch.Tensor:
    """A dynamic leaf as a tensor: a Python number becomes a 0-d tensor (JAX traces it too).

    The 0-d tensor keeps the number's full precision (float64, int64, complex128) and, like a
    Python number in torch's type promotion, does not change the dtype of the tensors it meets
    (``x_float32 * s`` stays float32), so results equal the eager call's.
    """
    if isinstance(leaf, bool):
        return torch.tensor(leaf)
    if isinstance(leaf, int):
        return torch.tensor(leaf, dtype=torch.int64)
    if isinstance(leaf, float):
        return torch.tensor(leaf, dtype=torch.float64)
    if isinstance(leaf, complex):
        return torch.tensor(leaf, dtype=torch.complex128)
    raise_type(
        call,
        f"argument {where} is not a tensor, a Python number or a pytree of them, so it cannot be "
        "a dynamic argument",
        "a tensor (or a Python number, which becomes a 0-d tensor)",
        describe(leaf),
        "Mark the argument static with static_argnums/static_argnames (its value is then part "
        "of the compile cache key), or close over it.",
    )


_NO_STATICS: dict[Any, Any] = {}


# ---------------------------------------------------------------------------------------------
# Cache entries


# NOTE [one dynamo cache per entry]
# dynamo caches compiled code per *code object*, and stops (fullgraph=True: fails) after
# ``recompile_limit`` (8) versions of one. ``jit`` keys its own cache by the static values and the
# arguments' structure and shape class, and gives every entry a fresh copy of the code object it
# compiles, so static values never share dynamo's per-code budget; inside an entry only sizes
# vary, which automatic dynamic shapes cover after one recompile. The entries are bounded
# (``cache_size``, least recently used evicted with a JitRecompileWarning).
def _entry_function(fun: Callable[..., Any], name: str) -> Callable[..., Any]:
    def jitted(*args: Any, **kwargs: Any) -> Any:
        return fun(*args, **kwargs)

    jitted.__code__ = jitted.__code__.replace(co_name=f"jit_{name}"[:60])
    jitted.__name__ = f"jit_{name}"
    return jitted


class _CountingBackend:
    """torch.compile's backend for one entry, counting the graphs it compiles.

    NOTE [compile progress]: a compile that takes more than ``PROGRESS_AFTER_S`` seconds is
    announced on the ``functorch_utils.jit`` logger (a warning, so it shows by default), and its
    time reported when it ends.
    """

    def __init__(self, real: Any, entry: _Entry) -> None:
        self.real = real
        self.entry = entry

    def __call__(self, gm: Any, example_inputs: Any, **kwargs: Any) -> Any:
        self.entry.compiles += 1
        name = fun_name(self.entry.owner._fun)
        started = time.perf_counter()
        timer = threading.Timer(PROGRESS_AFTER_S, _announce, (name,))
        timer.daemon = True
        timer.start()
        try:
            return self.real(gm, example_inputs, **kwargs)
        finally:
            timer.cancel()
            took = time.perf_counter() - started
            if took > PROGRESS_AFTER_S:
                logger.warning("jit(%s): compiled in %.1f s", name, took)

    def __getattr__(self, attr: str) -> Any:  # compiler_name, get_compiler_config, reset...
        return getattr(self.real, attr)


def _announce(name: str) -> None:
    logger.warning(
        "jit(%s): compiling (torch.compile); a first compile on CPU can take tens of seconds. "
        "Compiled kernels are cached on disk under %s, so later processes start faster.",
        name,
        os.environ.get("TORCHINDUCTOR_CACHE_DIR", "torch's cache directory"),
    )


class _Entry:
    __slots__ = ("compiled", "compiles", "eager", "owner")

    def __init__(self, owner: Jitted) -> None:
        self.owner = owner
        self.compiles = 0
        self.eager = False
        opts = owner._compile_options
        try:
            real = hooks.compile_backend(
                opts["backend"], opts["mode"], opts["options"], opts["dynamic"]
            )
        except hooks.dynamo_exception_types() as e:  # an unknown backend name
            raise ValueError(
                message(
                    owner._call,
                    "torch.compile does not know this backend",
                    "a backend name from torch._dynamo.list_backends() (e.g. 'inductor', "
                    "'aot_eager', 'eager') or a callable",
                    f"backend={opts['backend']!r}",
                    "Fix the name.",
                )
            ) from e
        backend = _CountingBackend(real, self)
        self.compiled = torch.compile(
            _entry_function(owner._fun, fun_name(owner._fun)),
            fullgraph=opts["fullgraph"],
            dynamic=opts["dynamic"],
            backend=backend,
        )


# ---------------------------------------------------------------------------------------------
# jit


_JAX_PLATFORMS = frozenset(["cpu", "gpu", "cuda", "rocm", "tpu", "metal"])
_COMPILE_OPTIONS = ("fullgraph", "backend", "mode", "dynamic", "options")


class Jitted:
    """A function compiled by :func:`jit`; call it like the original.

    ``_cache_size()`` counts the graphs compiled for the live cache entries (JAX's name);
    ``clear_cache()`` drops them.
    """

    def __init__(
        self,
        fun: Callable[..., Any],
        statics: _Statics,
        donate_argnums: tuple[int, ...],
        compile_options: dict[str, Any],
        fallback: bool,
        cache_size: int,
    ) -> None:
        functools.update_wrapper(self, fun)
        self._fun = fun
        self._statics = statics
        self._donate_argnums = donate_argnums
        self._compile_options = compile_options
        self._fallback = fallback
        self._max_entries = cache_size
        self._entries: OrderedDict[Hashable, _Entry] = OrderedDict()
        self._lock = threading.Lock()
        self._call = f"jit({fun_name(fun)})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # NOTE [jit under transforms]: inside another jit or torch.compile the function is traced
        # as part of the outer graph; under an active torch.func transform (vmap, jvp, jacfwd,
        # hessian...) torch cannot compile, so the function runs eagerly and the transform sees
        # through it, with the same values.
        if hooks.is_compiling() or _SWITCH.disabled or hooks.current_level() is not None:
            return self._fun(*args, **kwargs)
        if not kwargs and not self._statics.any:  # fast path: tensors only, no flatten
            classes = []
            for a in args:
                if not isinstance(a, torch.Tensor):
                    break
                classes.append((a.dtype, a.dim(), a.device, a.requires_grad))
            else:
                return self._run(self._entry((len(args), tuple(classes))), args, {})
        call = self._call
        if self._statics.any:
            key, s_args, s_kw, d_args, d_kw = self._statics.split(call, args, kwargs)
        else:
            key, s_args, s_kw, d_args, d_kw = None, _NO_STATICS, _NO_STATICS, list(args), kwargs
        leaves, spec = _pytree.flatten((d_args, d_kw), call=call, root="args")
        classes = []
        numbers = False
        for i, leaf in enumerate(leaves):
            if not isinstance(leaf, torch.Tensor):
                leaves[i] = leaf = _to_tensor_leaf(call, leaf, _arg_name(d_args, d_kw, s_args, i))
                numbers = True
            classes.append((leaf.dtype, leaf.dim(), leaf.device, leaf.requires_grad))
        if numbers:
            d_args, d_kw = _pytree.unflatten(spec, leaves)
        entry = self._entry((key, spec, tuple(classes)))
        full = _merge(d_args, s_args) if s_args else d_args
        if s_kw:
            d_kw = {**d_kw, **s_kw}
        return self._run(entry, full, d_kw)

    def _run(self, entry: _Entry, args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
        if entry.eager:
            return self._fun(*args, **kwargs)
        try:
            return entry.compiled(*args, **kwargs)
        except hooks.dynamo_exception_types() as e:
            return self._compile_failed(entry, e, args, kwargs)

    def __get__(self, obj: Any, objtype: Any = None) -> Any:
        """As a method: ``self`` is the first argument (a pytree, or static)."""
        if obj is None:
            return self
        return functools.partial(self, obj)

    def _entry(self, key: Hashable) -> _Entry:
        entry = self._entries.get(key)
        if entry is not None:
            with contextlib.suppress(KeyError):  # evicted by another thread: still usable
                self._entries.move_to_end(key)
            return entry
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                return entry
            if len(self._entries) >= self._max_entries:
                self._entries.popitem(last=False)
                warnings.warn(
                    f"{self._call}: the compile cache holds {self._max_entries} entries (one "
                    "per set of static argument values and argument structure, dtypes and "
                    "ranks); the least recently used was evicted and recompiles if used again. "
                    "Many entries usually mean a value marked static changes on every call: "
                    "make it a tensor argument, or raise jit(..., cache_size=N).",
                    JitRecompileWarning,
                    stacklevel=3,
                )
            cache_dir()  # NOTE [compile cache]
            entry = self._entries[key] = _Entry(self)
            return entry

    def _compile_failed(
        self, entry: _Entry, err: BaseException, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> Any:
        # A failure to compile may be the user's own error met while tracing (a shape mismatch,
        # an exception the function raises): run the function eagerly, so such an error comes
        # out exactly as without jit. Only when the eager call succeeds is it a compile failure.
        out = self._fun(*args, **kwargs)
        reason = hooks.compile_failure_reason(err)
        if self._fallback:
            entry.eager = True
            warnings.warn(
                f"{self._call}: torch.compile could not compile the function, so it runs "
                f"eagerly (fallback=True); torch says: {reason}",
                JitFallbackWarning,
                stacklevel=3,
            )
            return out
        raise JitCompileError(
            f"{self._call}: torch.compile could not compile the function "
            f"(fullgraph={self._compile_options['fullgraph']}); torch says: {reason} "
            "Rewrite the construct torch names (e.g. lax.cond/lax.while_loop for control flow "
            "on tensor values), pass fullgraph=False to let parts run eagerly, or fallback=True "
            "to run the whole function eagerly when compiling fails."
        ) from err

    def _cache_size(self) -> int:
        """The number of graphs compiled for the live cache entries."""
        with self._lock:
            return sum(e.compiles for e in self._entries.values())

    def clear_cache(self) -> None:
        """Drop every compiled entry: the next call compiles again."""
        with self._lock:
            self._entries.clear()

    def __repr__(self) -> str:
        return f"<jitted function {fun_name(self._fun)}>"


def _arg_name(d_args: list[Any], d_kw: dict[str, Any], s_args: dict[int, Any], i: int) -> str:
    """The key path of dynamic leaf ``i`` as the user passed it (error paths only)."""
    names = _pytree.leaf_names((d_args, d_kw), "")
    name = names[i]  # "[0][1]['w']" (positional) or "[1]['x']" (keyword)
    if name.startswith("[0]["):
        rest = name[len("[0][") :]
        j, _, tail = rest.partition("]")
        k = int(j)
        for s in sorted(s_args):  # back to the caller's position
            if s <= k:
                k += 1
        return f"args[{k}]{tail}"
    return name[len("[1]") :].replace("['", "", 1).replace("']", "", 1)


def _merge(d_args: Sequence[Any], s_args: dict[int, Any]) -> list[Any]:
    if not s_args:
        return list(d_args)
    out = list(d_args)
    for i in sorted(s_args):
        out.insert(i, s_args[i])
    return out


def jit(
    fun: Callable[..., Any] | None = None,
    static_argnums: int | Sequence[int] | None = None,
    static_argnames: str | Sequence[str] | None = None,
    donate_argnums: int | Sequence[int] | None = None,
    donate_argnames: str | Sequence[str] | None = None,
    keep_unused: bool = False,
    *,
    fullgraph: bool = True,
    backend: Any = "inductor",
    mode: str | None = None,
    dynamic: bool | None = None,
    options: dict[str, Any] | None = None,
    fallback: bool = False,
    cache_size: int = 64,
    inline: bool = False,
) -> Any:
    """Compile ``fun`` with ``torch.compile``, as ``jax.jit``.

    Args:
        fun: The function to compile. Its arguments are pytrees of tensors (Python numbers
            become 0-d tensors: ``int`` → int64, ``float`` → float64, which like Python numbers
            do not change the dtype of the tensors they meet), except the static ones. Its results may be any pytree. Without ``fun``, ``jit(**options)`` returns a
            decorator.
        static_argnums: Positions of static arguments: their values are Python values (hashable)
            that are part of the cache key, so each new value compiles again. Given alone, the
            same parameters passed by keyword are static too (as JAX).
        static_argnames: Names of static arguments (keyword use); given alone, the same
            parameters passed positionally are static too.
        donate_argnums: Accepted for source compatibility with JAX and checked; PyTorch has no
            buffer donation here, so donated tensors are neither reused nor invalidated.
        donate_argnames: As ``donate_argnums``, by name.
        keep_unused: Accepted for compatibility; unused arguments cost nothing here.
        fullgraph: torch.compile's ``fullgraph``: a graph break is an error
            (:class:`JitCompileError`) instead of running part of the function eagerly.
        backend: torch.compile's backend (``"inductor"``, ``"eager"``, ``"aot_eager"``, or a
            callable).
        mode: torch.compile's mode (``"reduce-overhead"`` for CUDA graphs, ``"max-autotune"``).
        dynamic: torch.compile's ``dynamic``; the default lets the second size of an argument
            compile a size-generic graph (see the docs page "jit").
        options: inductor options (torch.compile's ``options``).
        fallback: When compiling fails, run ``fun`` eagerly (with a :class:`JitFallbackWarning`)
            instead of raising :class:`JitCompileError`.
        cache_size: At most this many cache entries (static values times argument structures, dtypes
            and ranks) are kept; the least recently used is evicted with a
            :class:`JitRecompileWarning`.
        inline: Accepted for compatibility with JAX: a ``jit`` inside a jitted function is
            always traced into the outer graph here.

    Returns:
        A :class:`Jitted` function with ``fun``'s signature.

    Example:
        >>> import torch
        >>> import functorch_utils as fu
        >>> @fu.jit
        ... def f(x, y):
        ...     return {"sum": x + y, "prod": x * y}
        >>> f(torch.tensor([1.0, 2.0]), 3.0)
        {'sum': tensor([4., 5.]), 'prod': tensor([3., 6.])}
        >>> g = fu.jit(lambda x, n: x ** n, static_argnums=1, backend="eager")
        >>> g(torch.tensor(2.0), 3), g._cache_size()
        (tensor(8.), 1)
    """
    given = dict(
        static_argnums=static_argnums,
        static_argnames=static_argnames,
        donate_argnums=donate_argnums,
        donate_argnames=donate_argnames,
        keep_unused=keep_unused,
        fullgraph=fullgraph,
        backend=backend,
        mode=mode,
        dynamic=dynamic,
        options=options,
        fallback=fallback,
        cache_size=cache_size,
        inline=inline,
    )
    if fun is None:
        return lambda f: jit(f, **given)
    check_callable("jit", fun)
    call = f"jit({fun_name(fun)})"
    statics = _Statics(call, fun, static_argnums, static_argnames)
    donate = optional_argnums("jit", fun_name(fun), donate_argnums, what="donate_argnums")
    check_argnames(call, "donate_argnames", donate_argnames)
    for name in ("keep_unused", "fullgraph", "fallback", "inline"):
        if not isinstance(given[name], bool):
            raise_type(call, f"{name} must be a bool", "True or False", describe(given[name]))
    if not isinstance(cache_size, int) or isinstance(cache_size, bool) or cache_size < 1:
        raise_value(call, "cache_size must be a positive int", "e.g. 64", describe(cache_size))
    if not (callable(backend) or isinstance(backend, str)):
        raise_type(
            call, "backend must be a backend name or a callable", "e.g. 'inductor'",
            describe(backend),
        )  # fmt: skip
    if isinstance(backend, str) and backend.lower() in _JAX_PLATFORMS:
        raise_value(
            call,
            f"backend={backend!r} names a JAX/XLA platform, but here backend is torch.compile's "
            "backend and the arguments' device decides where the code runs",
            "a torch.compile backend: 'inductor' (the default), 'aot_eager', 'eager' or a callable",
            f"backend={backend!r}",
            "Drop backend=..., and move the arguments to the device with .to(device).",
        )
    if callable(backend) and (mode is not None or options):
        raise_value(
            call,
            "mode and options apply to a backend given by name",
            "backend='inductor' with mode/options, or a callable backend alone",
            f"backend={fun_name(backend)}, mode={mode!r}, options={options!r}",
        )
    compile_options = {k: given[k] for k in _COMPILE_OPTIONS}
    return Jitted(fun, statics, donate, compile_options, fallback, cache_size)


# ---------------------------------------------------------------------------------------------
# eval_shape


class ShapeDtypeStruct:
    """The shape and dtype of an array, without its values (``jax.ShapeDtypeStruct``).

    ``eval_shape`` returns them, and accepts them as arguments in place of tensors.

    Example:
        >>> import torch
        >>> from functorch_utils import ShapeDtypeStruct
        >>> ShapeDtypeStruct((2, 3), torch.float32)
        ShapeDtypeStruct(shape=(2, 3), dtype=float32)
    """

    __slots__ = ("device", "dtype", "shape")

    def __init__(
        self, shape: Sequence[int], dtype: torch.dtype, device: torch.device | str | None = None
    ) -> None:
        if not isinstance(dtype, torch.dtype):
            raise_type(
                "ShapeDtypeStruct(shape, dtype)",
                "dtype must be a torch.dtype",
                "e.g. torch.float32",
                describe(dtype),
            )
        self.shape = tuple(int(s) for s in shape)
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else None

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n

    def __repr__(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        shown = self.device is not None and self.device.type != "cpu"
        extra = f", device={self.device}" if shown else ""
        return f"ShapeDtypeStruct(shape={self.shape}, dtype={dtype}{extra})"

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ShapeDtypeStruct)
            and self.shape == other.shape
            and self.dtype == other.dtype
            and (self.device is None or other.device is None or self.device == other.device)
        )

    def __hash__(self) -> int:
        return hash((self.shape, self.dtype))


def eval_shape(fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """The shapes and dtypes of ``fun(*args, **kwargs)``'s results, computing nothing.

    As ``jax.eval_shape``: the function runs on fake tensors (torch's ``FakeTensorMode``), which
    carry shapes, dtypes and devices but no data, so even a huge matmul allocates nothing.
    Arguments may be tensors, :class:`ShapeDtypeStruct`\\ s (or anything with ``.shape`` and
    ``.dtype``) or Python values; tensors the function closes over are used as they are.

    Returns:
        The result's pytree with a :class:`ShapeDtypeStruct` at each tensor leaf (other leaves
        unchanged).

    Raises:
        ValueError: an output's shape depends on tensor values (``nonzero``, boolean masks,
            ``.item()``), which cannot be known without computing.

    Example:
        >>> import torch
        >>> import functorch_utils as fu
        >>> w = fu.ShapeDtypeStruct((50_000, 50_000), torch.float32)
        >>> fu.eval_shape(lambda w, x: {"y": x @ w}, w, torch.ones(8, 50_000))
        {'y': ShapeDtypeStruct(shape=(8, 50000), dtype=float32)}
    """
    check_callable("eval_shape", fun)
    call = f"eval_shape({fun_name(fun)})"
    mode = hooks.fake_tensor_mode()

    def to_fake(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return mode.from_tensor(x)
        if isinstance(x, ShapeDtypeStruct) or (
            hasattr(x, "shape") and hasattr(x, "dtype") and isinstance(x.dtype, torch.dtype)
        ):
            device = getattr(x, "device", None) or torch.device("cpu")
            with mode:
                return torch.empty(tuple(x.shape), dtype=x.dtype, device=device)
        return x

    fargs, fkwargs = _pytree.tree_map(to_fake, (args, kwargs))
    try:
        with mode:
            out = fun(*fargs, **fkwargs)
    except Exception as e:
        kind = hooks.data_dependent_shape_reason(e)
        if kind is None:
            raise
        raise_value(
            call,
            f"a result's shape depends on tensor values ({kind}), which eval_shape cannot know "
            "without computing them",
            "a function whose output shapes follow from its input shapes",
            f"torch's {type(e).__name__}",
            "Run the function on real tensors, or make the shape static (e.g. a fixed-size "
            "mask with torch.where instead of boolean indexing).",
        )

    def to_struct(x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            if any(not isinstance(s, int) for s in x.shape):
                raise_value(
                    call,
                    "a result's shape depends on tensor values",
                    "shapes that follow from the input shapes",
                    f"a tensor of shape {tuple(x.shape)}",
                    "Run the function on real tensors.",
                )
            return ShapeDtypeStruct(tuple(x.shape), x.dtype, x.device)
        return x

    return _pytree.tree_map(to_struct, out)


# ---------------------------------------------------------------------------------------------
# Running: disable_jit, block_until_ready, device_put


class _Switch(threading.local):
    disabled = False


_SWITCH = _Switch()


@contextlib.contextmanager
def disable_jit(disable: bool = True) -> Any:
    """Run jitted functions as plain Python in this block (on this thread): ``jax.disable_jit``.

    For debugging: prints, breakpoints and Python control flow on tensor values work inside a
    function that is jitted elsewhere, and nothing is compiled. Plain ``torch.compile`` is not
    affected.

    Example:
        >>> import torch
        >>> import functorch_utils as fu
        >>> @fu.jit
        ... def f(x):
        ...     return x.sin() if x.sum() > 0 else x.cos()  # a value-dependent branch
        >>> with fu.disable_jit():
        ...     f(torch.tensor([0.5]))
        tensor([0.4794])
    """
    if not isinstance(disable, bool):
        raise_type(
            "disable_jit(disable)", "disable must be a bool", "True or False", describe(disable)
        )
    before = _SWITCH.disabled
    _SWITCH.disabled = disable
    try:
        yield
    finally:
        _SWITCH.disabled = before


def block_until_ready(x: Any) -> Any:
    """Wait until the tensors of the pytree ``x`` are computed, and return ``x``:
    ``jax.block_until_ready``.

    CPU work in PyTorch is synchronous; on an accelerator (CUDA, ...) kernels run asynchronously,
    and this synchronizes each device that holds a tensor of ``x`` (for honest timings).

    Example:
        >>> import torch
        >>> import functorch_utils as fu
        >>> fu.block_until_ready({"y": torch.ones(2)})
        {'y': tensor([1., 1.])}
    """
    devices = {
        leaf.device
        for leaf in _pytree.flatten(x, call="block_until_ready(x)", root="x")[0]
        if isinstance(leaf, torch.Tensor) and leaf.device.type not in ("cpu", "meta")
    }
    for device in devices:
        hooks.synchronize(device)
    return x


def device_put(x: Any, device: Any = None) -> Any:
    """``x`` (a pytree) with its arrays as tensors on ``device``: ``jax.device_put``.

    Tensors move with ``.to(device)`` (no copy when already there); NumPy arrays and Python
    numbers become tensors (``torch.as_tensor``, on ``device``). Other leaves are returned as
    they are. ``device=None`` leaves tensors where they are.

    Example:
        >>> import numpy as np
        >>> import functorch_utils as fu
        >>> fu.device_put({"a": np.arange(3), "b": 2.5}, "cpu")
        {'a': tensor([0, 1, 2]), 'b': tensor(2.5000)}
    """
    if device is not None and not isinstance(device, (str, int, torch.device)):
        raise_type(
            "device_put(x, device)",
            "device must be a torch device",
            "e.g. 'cuda:0', torch.device('cpu') or None",
            describe(device),
        )
    target = None if device is None else torch.device(device)

    def put(leaf: Any) -> Any:
        if isinstance(leaf, torch.Tensor):
            return leaf if target is None else leaf.to(target)
        if isinstance(leaf, (np.ndarray, np.generic, int, float, complex)) and not isinstance(
            leaf, bool
        ):
            return torch.as_tensor(leaf, device=target)
        return leaf

    return _pytree.tree_map(put, x)


class named_scope:
    """A context naming the operations inside it for the profiler: ``jax.named_scope``.

    Eagerly it is ``torch.profiler.record_function(name)`` (the name shows in
    ``torch.profiler`` traces); while ``torch.compile`` traces (``jit``) it does nothing, since
    dynamo drops profiler ranges anyway.

    Example:
        >>> import torch
        >>> import functorch_utils as fu
        >>> with fu.named_scope("attention"):
        ...     y = torch.ones(2) * 2
        >>> y
        tensor([2., 2.])
    """

    __slots__ = ("_name", "_range")

    def __init__(self, name: str) -> None:
        if not isinstance(name, str):
            raise_type("named_scope(name)", "name must be a string", "e.g. 'block'", describe(name))
        self._name = name
        self._range: Any = None

    def __enter__(self) -> None:
        if not hooks.is_compiling():
            self._range = torch.profiler.record_function(self._name)
            self._range.__enter__()

    def __exit__(self, *exc: Any) -> None:
        if self._range is not None:
            self._range.__exit__(*exc)
            self._range = None


def named_call(fun: Callable[..., Any], *, name: str | None = None) -> Callable[..., Any]:
    """``fun`` with its calls in a :class:`named_scope` (its name by default): ``jax.named_call``.

    Example:
        >>> import torch
        >>> import functorch_utils as fu
        >>> layer = fu.named_call(lambda x: x * 2, name="double")
        >>> layer(torch.ones(2))
        tensor([2., 2.])
    """
    check_callable("named_call", fun)
    scope = name if name is not None else fun_name(fun)
    if not isinstance(scope, str):
        raise_type("named_call(fun, name)", "name must be a string", "e.g. 'block'", describe(name))

    @functools.wraps(fun)
    def named(*args: Any, **kwargs: Any) -> Any:
        with named_scope(scope):
            return fun(*args, **kwargs)

    return named
