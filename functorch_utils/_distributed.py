"""``distributed.pmap``: a named axis whose members are the processes of a ``torch.distributed``
process group, and the ``torch.autograd.Function``s that reduce over it.

``pmap`` binds the name in ``_axes``; the public collectives (``_collectives.py``) see that the
bound axis has ``process`` set and call the process-group implementations here. Nothing here
imports ``_collectives`` or ``_vmap``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Hashable
from typing import Any, NamedTuple, TypeVar, overload

import torch
import torch.distributed as dist

from . import _torch_hooks as hooks
from ._axes import Axis, bind, check_name
from ._errors import check_callable, describe, fun_name, message, raise_type

__all__ = ["ProcessAxis", "all_gather_flat", "check_devices", "pmap", "psum_flat"]

_F = TypeVar("_F", bound=Callable[..., Any])

# ----------------------------------------------------------------------------------------------
# NOTE [pmap: named axes across processes]
# ``pmap(f, "i")`` runs ``f`` once on this process, with ``"i"`` bound (``_axes.bind``) to an
# ``Axis`` whose ``process`` field is a ``ProcessAxis`` (group, rank, size, backend) and whose
# token is the rank as a plain 0-d tensor. A collective over ``"i"`` then calls a
# ``torch.autograd.Function`` below, which runs the real collective of ``torch.distributed`` in its
# ``forward``. Its rules make every rank's program the slice of the one-process ``vmap`` program:
# - ``backward``/``jvp`` are collectives again (psum's transpose is psum, all_gather's is
#   psum_scatter), as the vmap collectives' rules in ``_collectives.py``: each rank seeds its own
#   cotangent (or tangent) and the rule meets them across processes, which is exactly what
#   ``vmap`` does with the members' cotangents. Derivatives of any order stay collectives.
# - ``vmap`` (any vmap level inside or outside ``pmap``, including the ones inside ``jacrev`` and
#   ``jacfwd``) re-applies the Function to the physical batched tensor and keeps the batch dim:
#   every rank holds the same batch size, so an elementwise reduction over processes reduces each
#   batch member with its peers.
# Why not ``torch.distributed._functional_collectives`` (funcol) itself: measured on torch 2.13,
# ``torch.func.grad`` through its ``all_reduce`` raises a ``setup_context`` error, ``jvp`` returns
# zero silently and ``vmap`` of it is silently wrong. Our Functions call the public in-place
# collectives on a fresh contiguous buffer (NOTE [pmap under torch.compile] for compilation).
# Every rank must run the same collectives in the same order (SPMD): a rank that calls a
# different collective waits until the process group's timeout (``init_process_group(timeout=)``).


class ProcessAxis(NamedTuple):
    """What ``pmap`` binds besides the name: the process group and this process's place in it."""

    group: Any  # a torch.distributed ProcessGroup
    rank: int
    size: int
    backend: str
    devices: frozenset[str] | None  # device types the backend reduces; None if unknown


# Which device types a backend reduces. gloo is documented for CPU tensors (it copies CUDA
# tensors through the host for some ops only); NCCL only takes CUDA tensors.
_BACKEND_DEVICES: dict[str, frozenset[str]] = {
    "gloo": frozenset({"cpu"}),
    "nccl": frozenset({"cuda"}),
    "xccl": frozenset({"xpu"}),
    "mpi": frozenset({"cpu", "cuda"}),
    "ucc": frozenset({"cpu", "cuda"}),
}


def _devices(backend: str) -> frozenset[str] | None:
    """Device types a backend string reduces (``"gloo"``, or ``"cpu:gloo,cuda:nccl"``)."""
    if ":" not in backend:
        return _BACKEND_DEVICES.get(backend.lower())
    found: set[str] = set()
    for part in backend.split(","):
        device, _, _name = part.partition(":")
        found.add(device.strip().lower())
    return frozenset(found)


_LAUNCH_HINT = (
    "Launch the script with `torchrun --nproc_per_node=N script.py` and call "
    "torch.distributed.init_process_group('gloo') (CPU tensors) or "
    "init_process_group('nccl') (CUDA tensors) on every process before calling the pmapped "
    "function; on one process, vmap(f, axis_name=...) runs the same code over simulated ranks."
)


def _process_axis(call: str, group: Any) -> ProcessAxis:
    if not dist.is_available():
        raise ValueError(
            message(
                call,
                "torch.distributed is not available in this build of PyTorch",
                "a PyTorch build with distributed support",
                "torch.distributed.is_available() == False",
                "Install a PyTorch build with distributed support.",
            )
        )
    if not dist.is_initialized():
        raise ValueError(
            message(
                call,
                "no torch.distributed process group is initialised",
                "torch.distributed.init_process_group(...) to have run on this process",
                "torch.distributed.is_initialized() == False",
                _LAUNCH_HINT,
            )
        )
    if group is dist.GroupMember.NON_GROUP_MEMBER:
        raise ValueError(
            message(
                call,
                "this process is not a member of the process group",
                "a group this process belongs to (every member must call the pmapped function)",
                f"dist.new_group(...)'s placeholder for a group without rank {dist.get_rank()}",
                "Call the pmapped function only on the group's members, or pass another group.",
            )
        )
    pg = dist.group.WORLD if group is None else group
    rank = dist.get_rank(pg)
    backend = str(dist.get_backend(pg))
    return ProcessAxis(pg, rank, dist.get_world_size(pg), backend, _devices(backend))


def _index_device(proc: ProcessAxis) -> torch.device:
    """Where ``axis_index`` lives: the CPU, unless the backend reduces CUDA tensors only (NCCL),
    where it is the current GPU, so that gathering it needs no copy."""
    if proc.devices is None or "cpu" in proc.devices or not torch.cuda.is_available():
        return torch.device("cpu")
    if "cuda" in proc.devices:
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


@overload
def pmap(fun: _F, axis_name: Hashable, *, group: Any = None) -> _F: ...


@overload
def pmap(
    fun: None = None, axis_name: Hashable = None, *, group: Any = None
) -> Callable[[_F], _F]: ...


def pmap(fun: Any = None, axis_name: Hashable = None, *, group: Any = None) -> Any:
    """Run ``fun`` on this process, with ``axis_name`` naming the processes of ``group``.

    The multi-process twin of ``vmap(fun, axis_name=...)``: inside ``fun``, ``psum``, ``pmean``,
    ``pmax``, ``pmin`` and ``all_gather`` over ``axis_name`` reduce across the processes of
    ``group`` (through ``torch.distributed``), and ``axis_index(axis_name)`` is this process's
    rank in it. Each process passes its own shard, without a leading axis. On rank ``r``,
    ``pmap(f, "i")(shards[r])`` equals slice ``r`` of ``vmap(f, axis_name="i")(shards)`` on one
    process, for values and for derivatives taken inside ``f`` or around the pmapped function
    (``grad``, ``vjp``, ``jvp``, ``jacrev``, ``jacfwd``, ``hessian``): psum's transpose is psum
    across the processes, as in ``jax.pmap``. See the Distributed guide.

    Every process of the group must call the pmapped function, with tensors of the same shapes
    and the same sequence of collectives; a rank that does otherwise waits until the process
    group's timeout (``torch.distributed.init_process_group(timeout=...)``).

    Args:
        fun: the per-process function. Omit it to get a decorator: ``@pmap(axis_name="i")``.
        axis_name: the name the collectives inside ``fun`` use (any hashable value, e.g. ``"i"``).
        group: a ``torch.distributed`` process group; ``None`` is the default (world) group.

    Returns:
        ``fun`` wrapped: same arguments, same outputs (any pytree), run with the name bound.

    Raises:
        ValueError: when called without an initialised process group, or on a process outside
            ``group``; a collective raises it for a tensor on a device the backend cannot reduce
            (gloo: CPU, NCCL: CUDA).

    Example:
        >>> import torch
        >>> import torch.distributed as dist
        >>> from functorch_utils import psum, axis_index
        >>> from functorch_utils.distributed import pmap
        >>> # One process here; under torchrun every process runs the same lines.
        >>> dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        >>> @pmap(axis_name="i")
        ... def normalise(x):
        ...     return x / psum(x.sum(), "i"), axis_index("i")
        >>> normalise(torch.tensor([1.0, 3.0]))
        (tensor([0.2500, 0.7500]), tensor(0))
        >>> dist.destroy_process_group()
    """
    if fun is None:
        if axis_name is None:
            raise_type(
                "pmap(fun=None, axis_name=None)",
                "axis_name is required",
                "a hashable name such as 'i'",
                "None",
                "Write pmap(f, axis_name='i'), or @pmap(axis_name='i') as a decorator.",
            )
        return functools.partial(pmap, axis_name=axis_name, group=group)
    if not callable(fun):
        if axis_name is None and isinstance(fun, Hashable):
            raise_type(
                "pmap(fun)",
                "fun is not callable",
                "a function",
                describe(fun),
                f"To use pmap as a decorator, pass the name by keyword: @pmap(axis_name={fun!r}).",
            )
        check_callable("pmap", fun)
    name = fun_name(fun)
    if axis_name is None:
        raise_type(
            f"pmap({name}, axis_name=None)",
            "axis_name is required",
            "a hashable name such as 'i'",
            "None",
            f"Name the axis the collectives reduce over: pmap({name}, axis_name='i').",
        )
    check_name(f"pmap({name}, axis_name={axis_name!r})", axis_name)
    ok_group = isinstance(group, dist.ProcessGroup) or group == dist.GroupMember.NON_GROUP_MEMBER
    if group is not None and not ok_group:
        raise_type(
            f"pmap({name}, axis_name={axis_name!r}, group=...)",
            "group is not a torch.distributed process group",
            "None (the default group) or a ProcessGroup such as dist.new_group([0, 1])",
            describe(group),
            "Make the group with torch.distributed.new_group(ranks) on every process.",
        )
    call = f"pmap({name}, axis_name={axis_name!r})(...)"

    @functools.wraps(fun)
    def pmapped(*args: Any, **kwargs: Any) -> Any:
        proc = _process_axis(call, group)
        token = torch.tensor(proc.rank, device=_index_device(proc))
        with bind(Axis(axis_name, proc.size, token, proc)):
            return fun(*args, **kwargs)

    return pmapped


# ----------------------------------------------------------------------------------------------
# Primitive process-group collectives (see NOTE [pmap: named axes across processes])


def _compiling() -> bool:
    return bool(torch.compiler.is_compiling())


# NOTE [pmap under torch.compile]
# Under torch.compile each collective across processes runs eagerly, between compiled graphs
# (a graph break; ``fullgraph=True`` refuses it). Tracing it would be possible for values and
# outer autograd (Dynamo rewrites the c10d calls into funcol's traceable ops), but not under a
# torch.func transform inside the compiled region: Dynamo then traces funcol's own
# autograd.Function, which torch.func refuses (it has no setup_context), and a custom ``jvp``
# staticmethod is not traceable at all. Running the Function eagerly keeps every transform's
# answer the eager one.
_EAGER_REASON = (
    "functorch_utils: a collective over a distributed.pmap axis (psum, pmean, pmax, pmin, "
    "all_gather) runs eagerly between compiled graphs; compile with fullgraph=False "
    "(jit(f, fullgraph=False)), or compile the code between the collectives"
)


@hooks.eager_only(reason=_EAGER_REASON)
def _eager_apply(fn: Any, x: torch.Tensor, proc: ProcessAxis) -> torch.Tensor:
    out: torch.Tensor = fn.apply(x, proc)
    return out


def _call(fn: Any, x: torch.Tensor, proc: ProcessAxis) -> torch.Tensor:
    """Run the collective Function ``fn`` on ``x``: eagerly under compilation (NOTE [pmap under
    torch.compile]), as a plain call where nothing tracks ``x``, else through autograd."""
    if _compiling():
        return _eager_apply(fn, x, proc)
    if _untracked(x):
        out: torch.Tensor = fn.forward(x, proc)
        return out
    out = fn.apply(x, proc)
    return out


def _untracked(*xs: torch.Tensor) -> bool:
    """No transform, no compilation and no autograd sees ``xs``: a Function's ``forward`` can run
    as a plain call, without building a node (its ``apply`` costs ~100 us per call on a small
    CPU; a training step's ``pmean`` of gradients takes this path)."""
    return (
        not _compiling()  # first: the level query is not traceable
        and hooks.current_level() is None
        and not any(hooks.carries_derivative(x) for x in xs)
    )


def _fresh(x: torch.Tensor) -> torch.Tensor:
    """A contiguous copy: the collectives write in place and must not touch the input."""
    return x.clone(memory_format=torch.contiguous_format)


# NOTE [pmap under the tape's batched backward]
# ``torch.autograd.grad(..., is_grads_batched=True)`` (which ``jacrev``/``hessian`` use on the
# autograd tape when no torch.func transform is active) batches the backward with torch's legacy
# vmap, which never calls an ``autograd.Function``'s ``vmap`` rule: the Function's ``forward``
# receives a legacy batched tensor, which the c10d ops cannot take. ``_batched`` peels that one
# level off (the physical tensor, batch dim first), runs the collective on it with the batch dims
# kept in front, and puts the level back.
def _batched(
    x: torch.Tensor, op: Callable[[torch.Tensor, int], torch.Tensor], call: str
) -> torch.Tensor:
    """``op(physical, number of leading batch dims)``, through one legacy vmap level if any."""
    if _compiling() or not hooks.is_legacy_batched(x):
        return op(x, 0)  # (the tape's batched backward never runs under compilation)
    level = hooks.legacy_vmap_level()
    phys = hooks.remove_legacy_batch_dim(x, level)
    if hooks.is_legacy_batched(phys):
        raise ValueError(
            message(
                call,
                "a collective across processes ran under nested legacy vmaps "
                "(torch.autograd.grad(..., is_grads_batched=True) inside another)",
                "at most one level of is_grads_batched",
                f"{describe(x)} batched at several legacy levels",
                "Use torch.func.vmap (or functorch_utils.vmap/jacrev) for the inner levels.",
            )
        )
    return hooks.add_legacy_batch_dim(op(phys, 1), level)


def _all_reduce_sum(x: torch.Tensor, group: Any) -> torch.Tensor:
    def op(x: torch.Tensor, nb: int) -> torch.Tensor:
        out = _fresh(x)
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=group)
        return out

    return _batched(x, op, "psum")


def _all_gather(x: torch.Tensor, group: Any, size: int) -> torch.Tensor:
    def op(x: torch.Tensor, nb: int) -> torch.Tensor:
        out = x.new_empty((size, *x.shape))
        dist.all_gather_single(out, _fresh(x).unsqueeze(0), group=group)
        return out.movedim(0, nb)

    return _batched(x, op, "all_gather")


def _reduce_scatter_sum(x: torch.Tensor, group: Any) -> torch.Tensor:
    def op(x: torch.Tensor, nb: int) -> torch.Tensor:
        x = x.movedim(nb, 0)
        out = x.new_empty(x.shape[1:])
        dist.reduce_scatter_single(out.unsqueeze(0), _fresh(x), op=dist.ReduceOp.SUM, group=group)
        return out

    return _batched(x, op, "psum_scatter")


class _PSum(torch.autograd.Function):
    """``psum`` across the processes of a group; its own transpose."""

    @staticmethod
    def forward(x: torch.Tensor, proc: ProcessAxis) -> torch.Tensor:
        return _all_reduce_sum(x, proc.group)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.proc = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _psum(g, ctx.proc), None

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor, _: Any) -> torch.Tensor:
        return _psum(t, ctx.proc)

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[int | None, None], x: torch.Tensor, proc: ProcessAxis
    ) -> tuple[torch.Tensor, int | None]:
        return _psum(x, proc), in_dims[0]


def _psum(x: torch.Tensor, proc: ProcessAxis) -> torch.Tensor:
    return _call(_PSum, x, proc)


class _AllGather(torch.autograd.Function):
    """Stack ``x`` from every process of the group (new leading dim, rank order)."""

    @staticmethod
    def forward(x: torch.Tensor, proc: ProcessAxis) -> torch.Tensor:
        return _all_gather(x, proc.group, proc.size)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.proc = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _psum_scatter(g, ctx.proc), None

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor, _: Any) -> torch.Tensor:
        return _gather(t, ctx.proc)

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[int | None, None], x: torch.Tensor, proc: ProcessAxis
    ) -> tuple[torch.Tensor, int | None]:
        x_dim = in_dims[0]
        return _gather(x, proc), None if x_dim is None else x_dim + 1


def _gather(x: torch.Tensor, proc: ProcessAxis) -> torch.Tensor:
    return _call(_AllGather, x, proc)


class _PSumScatter(torch.autograd.Function):
    """Process ``r`` gets ``sum_j x_j[r]``: the transpose of ``all_gather``."""

    @staticmethod
    def forward(x: torch.Tensor, proc: ProcessAxis) -> torch.Tensor:
        return _reduce_scatter_sum(x, proc.group)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.proc = inputs[1]

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, None]:
        return _gather(g, ctx.proc), None

    @staticmethod
    def jvp(ctx: Any, t: torch.Tensor, _: Any) -> torch.Tensor:
        return _psum_scatter(t, ctx.proc)

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[int | None, None], x: torch.Tensor, proc: ProcessAxis
    ) -> tuple[torch.Tensor, int | None]:
        x_dim = in_dims[0]
        if x_dim == 0:  # the scatter runs over the leading dim: move the batch dim off it
            x, x_dim = x.movedim(0, 1), 1
        return _psum_scatter(x, proc), None if x_dim is None else x_dim - 1


def _psum_scatter(x: torch.Tensor, proc: ProcessAxis) -> torch.Tensor:
    return _call(_PSumScatter, x, proc)


# ----------------------------------------------------------------------------------------------
# Pytrees of leaves: one collective per bucket, not one per leaf

# Leaves are concatenated into flat buffers of one dtype and device, each at most this many bytes
# (a leaf larger than the cap gets a buffer of its own), as DistributedDataParallel's buckets.
_BUCKET_BYTES = 25 * 1024 * 1024


def _buckets(leaves: list[torch.Tensor]) -> list[list[int]]:
    """Indices of ``leaves`` grouped into buckets: same dtype and device, capped in bytes."""
    open_: dict[tuple[torch.dtype, torch.device], tuple[list[int], int]] = {}
    done: list[list[int]] = []
    for k, v in enumerate(leaves):
        key = (v.dtype, v.device)
        nbytes = v.numel() * v.element_size()
        members, size = open_.get(key, ([], 0))
        if members and size + nbytes > _BUCKET_BYTES:
            done.append(members)
            members, size = [], 0
        members.append(k)
        open_[key] = (members, size + nbytes)
    return done + [m for m, _ in open_.values()]


class _PSumMany(torch.autograd.Function):
    """``psum`` of several tensors of one dtype in one all-reduce: the result is their flat
    concatenation, reduced (and divided by ``divide`` unless it is 1, for ``pmean``).

    The first ``nb`` dims of every input are batch dims that the flat buffer keeps in front (a
    ``vmap`` rule below adds one per level); the buffer is built here, so the all-reduce runs
    in place on it with no further copy.
    """

    @staticmethod
    def forward(proc: ProcessAxis, divide: int, nb: int, *leaves: torch.Tensor) -> torch.Tensor:
        flat = torch.cat([v.reshape(*v.shape[:nb], -1) for v in leaves], dim=nb)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM, group=proc.group)
        return flat if divide == 1 else flat.div_(divide)

    @staticmethod
    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
        ctx.proc, ctx.divide, ctx.nb = inputs[:3]
        ctx.shapes = [v.shape for v in inputs[3:]]
        ctx.dtype, ctx.device = inputs[3].dtype, inputs[3].device

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        g = _psum(g, ctx.proc)
        if ctx.divide != 1:
            g = g / ctx.divide
        nb = ctx.nb
        sizes = [math.prod(shape[nb:]) for shape in ctx.shapes]
        parts = g.split(sizes, dim=-1)
        return (None, None, None, *[p.reshape(s) for p, s in zip(parts, ctx.shapes)])

    @staticmethod
    def jvp(ctx: Any, *tangents: Any) -> torch.Tensor:
        ts = [
            torch.zeros(s, dtype=ctx.dtype, device=ctx.device) if t is None else t
            for t, s in zip(tangents[3:], ctx.shapes)
        ]
        return _psum_many(ctx.proc, ctx.divide, ctx.nb, ts)

    @staticmethod
    def vmap(
        info: Any, in_dims: tuple[int | None, ...], proc: ProcessAxis, divide: int, nb: int,
        *leaves: torch.Tensor,
    ) -> tuple[torch.Tensor, int]:  # fmt: skip
        size = info.batch_size
        moved = [
            v.unsqueeze(0).expand(size, *v.shape) if d is None else v.movedim(d, 0)
            for v, d in zip(leaves, in_dims[3:])
        ]
        return _psum_many(proc, divide, nb + 1, moved), 0


def _psum_many(proc: ProcessAxis, divide: int, nb: int, leaves: list[torch.Tensor]) -> torch.Tensor:
    if _compiling():  # NOTE [pmap under torch.compile]
        return _eager_apply_many(proc, divide, nb, leaves)
    if _untracked(*leaves):
        return _PSumMany.forward(proc, divide, nb, *leaves)
    out: torch.Tensor = _PSumMany.apply(proc, divide, nb, *leaves)
    return out


@hooks.eager_only(reason=_EAGER_REASON)
def _eager_apply_many(
    proc: ProcessAxis, divide: int, nb: int, leaves: list[torch.Tensor]
) -> torch.Tensor:
    out: torch.Tensor = _PSumMany.apply(proc, divide, nb, *leaves)
    return out


def psum_flat(leaves: list[torch.Tensor], proc: ProcessAxis, *, mean: bool = False) -> list[Any]:
    """``psum`` of each tensor across the processes, in one collective per bucket.

    ``mean=True`` divides the floating (and complex) buffers by the group size in place (that is
    ``pmean``) and leaves integer and bool tensors summed, for the caller to divide. Bool tensors
    are or-ed (``any``), as the ``vmap`` psum does; they carry no derivative.
    """
    result: list[torch.Tensor | None] = [None] * len(leaves)
    summed: list[int] = []
    for k, v in enumerate(leaves):
        if v.dtype == torch.bool:  # or-ed: a count of the ranks that hold True, then > 0
            result[k] = _psum(v.to(torch.int32), proc) > 0
        elif v.numel() == 0:
            result[k] = v * proc.size
        else:
            summed.append(k)
    group = [leaves[k] for k in summed]
    for members in _buckets(group):
        first = group[members[0]]
        floating = first.is_floating_point() or first.is_complex()
        divide = proc.size if mean and floating else 1
        if len(members) == 1 and divide == 1:  # one leaf: reduce it as it is
            result[summed[members[0]]] = _psum(first, proc)
            continue
        flat = _psum_many(proc, divide, 0, [group[m] for m in members])
        parts = flat.split([group[m].numel() for m in members])
        for m, part in zip(members, parts):
            result[summed[m]] = part.view(group[m].shape)
    return result


def all_gather_flat(leaves: list[torch.Tensor], proc: ProcessAxis) -> list[torch.Tensor]:
    """Each tensor stacked over the processes (new leading dim), one collective per bucket."""
    result: list[torch.Tensor | None] = [None] * len(leaves)
    gathered: list[int] = []
    for k, v in enumerate(leaves):
        if v.numel() == 0:
            result[k] = v.unsqueeze(0).expand(proc.size, *v.shape)
        else:
            gathered.append(k)
    if len(gathered) == 1:
        result[gathered[0]] = _gather(leaves[gathered[0]], proc)
    elif gathered:
        group = [leaves[k] for k in gathered]
        for members in _buckets(group):
            flat = torch.cat([group[m].reshape(-1) for m in members])
            parts = _gather(flat, proc).split([group[m].numel() for m in members], dim=1)
            for m, part in zip(members, parts):
                result[gathered[m]] = part.reshape(proc.size, *group[m].shape)
    return [r for r in result if r is not None]


def check_devices(
    call: str, leaves: list[torch.Tensor], names: Callable[[], list[str]], proc: ProcessAxis
) -> None:
    """A ``ValueError`` naming the first tensor on a device the group's backend cannot reduce.

    ``names()`` gives the leaves' key paths; it is only called on the error path.
    """
    if proc.devices is None:
        return
    for k, v in enumerate(leaves):
        if v.device.type not in proc.devices:
            name = names()[k]
            wanted = " or ".join(sorted(proc.devices))
            other = dist.Backend.default_device_backend_map.get(v.device.type, "another backend")
            raise ValueError(
                message(
                    call,
                    f"{name} is on device {v.device}, which the process group's backend "
                    f"{proc.backend!r} does not reduce",
                    f"tensors on {wanted}",
                    f"{describe(v)} on {v.device}",
                    f"Move it with .to({sorted(proc.devices)[0]!r}), or initialise the process "
                    f"group with a backend for {v.device.type} ({other!r}).",
                )
            )
