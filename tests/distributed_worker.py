"""One process of the ``distributed.pmap`` tests (run by tests/test_distributed.py).

``python -m tests.distributed_worker RANK WORLD INIT_FILE OUT_DIR`` joins a gloo process group of
WORLD processes, runs every check in ``CHECKS`` (or ``CHECKS_4``) and writes one JSON file
``OUT_DIR/rank{RANK}.json``: check name -> ``"ok"`` or the traceback. Each check computes the
one-process reference (``vmap`` over all the ranks' shards, which every rank can build from the
same seed) and compares slice ``rank`` of it with what ``pmap`` gives on this rank's shard.
"""

from __future__ import annotations

import datetime
import json
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import torch
import torch.distributed as dist

import functorch_utils as fu
from functorch_utils import all_gather, axis_index, pmax, pmean, pmin, psum, vmap
from functorch_utils.distributed import pmap

F64 = torch.float64


class Pair(NamedTuple):
    u: Any
    v: Any


def close(got: Any, want: Any) -> None:
    import optree

    lg, sg = optree.tree_flatten(got, namespace="functorch_utils")
    lw, sw = optree.tree_flatten(want, namespace="functorch_utils")
    assert sg == sw, f"structures differ: {sg} vs {sw}"
    for a, b in zip(lg, lw):
        if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
            assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor), (a, b)
            assert a.shape == b.shape and a.dtype == b.dtype, (a.shape, b.shape, a.dtype, b.dtype)
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        else:
            assert a == b, (a, b)


def members(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The same data on every rank: member r is rank r's shard."""
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=F64)


def slice_of(tree: Any, r: int) -> Any:
    return fu.tree_util.tree_map(lambda t: t[r] if isinstance(t, torch.Tensor) else t, tree)


# ---------------------------------------------------------------------------------------------
# Functions with collectives (the same as tests/test_vmap.py's zoo)


def zoo(v: torch.Tensor) -> torch.Tensor:
    g = all_gather(v, "i")
    e = torch.exp(v)
    return (
        torch.sin(v) * pmean(v**2, "i")
        + pmax(v * 1.5, "i") * 0.25
        - pmin(v, "i") * v
        + (g[0] * g[-1]) * axis_index("i")
        + e / psum(e, "i")
    )


def member_loss(v: torch.Tensor) -> torch.Tensor:
    return (zoo(v) * v).sum()


# ---------------------------------------------------------------------------------------------
# The checks: each takes (rank, world) and raises on a mismatch.

Check = Callable[[int, int], None]
CHECKS: dict[str, Check] = {}  # run by 2 processes
CHECKS_4: dict[str, Check] = {}  # run by 4 processes (few: 4 processes on a 2-core machine)


def check(*tables: dict[str, Check]) -> Callable[[Check], Check]:
    def register(fn: Check) -> Check:
        for table in tables or (CHECKS,):
            table[fn.__name__] = fn
        return fn

    return register


def same_as_vmap(f: Callable[..., Any], *xs: torch.Tensor, r: int) -> None:
    """``pmap(f)(x[r]...)`` on this rank equals slice ``r`` of ``vmap(f)(xs...)``."""
    want = slice_of(vmap(f, axis_name="i")(*xs), r)
    got = pmap(f, "i")(*[x[r] for x in xs])
    close(got, want)


@check(CHECKS, CHECKS_4)
def each_collective(r: int, n: int) -> None:
    xs = members(n, (3, 2), 1)
    for coll in (psum, pmean, pmax, pmin):
        same_as_vmap(lambda v, c=coll: c(v, "i"), xs, r=r)
    for axis in (0, 1, -1, 2):
        same_as_vmap(lambda v, a=axis: all_gather(v, "i", axis=a), xs, r=r)
    for axis in (0, 1):
        same_as_vmap(lambda v, a=axis: all_gather(v, "i", axis=a, tiled=True), xs, r=r)
    same_as_vmap(lambda v: v * axis_index("i"), xs, r=r)
    assert pmap(lambda: axis_index("i"), "i")().dtype == torch.int64
    same_as_vmap(lambda v: (psum(1, "i"), pmean(2.0, "i"), pmax(3, "i")), xs, r=r)
    # 0-d, integer and bool tensors
    same_as_vmap(lambda v: psum(v.sum(), "i"), xs, r=r)
    ints = torch.arange(n * 3).reshape(n, 3) * 7 - 5
    same_as_vmap(lambda v: (psum(v, "i"), pmax(v, "i"), all_gather(v, "i")), ints, r=r)
    bools = torch.tensor([[True, False, False], [False, False, True]] * n)[:n]
    same_as_vmap(lambda v: psum(v, "i"), bools, r=r)
    # bool inside an inner vmap, complex tensors
    same_as_vmap(vmap(lambda v: psum(v > 0, "i")), xs, r=r)
    zs = torch.complex(xs, members(n, (3, 2), 16))
    same_as_vmap(lambda v: (psum(v, "i"), pmean({"z": v, "w": v.real}, "i")), zs, r=r)
    same_as_vmap(lambda v: all_gather(v, "i", axis=1), zs, r=r)
    same_as_vmap(lambda v: fu.grad(lambda u: psum(u * u.conj(), "i").real.sum())(v), zs, r=r)
    # empty tensors
    same_as_vmap(lambda v: (psum(v[:0], "i"), all_gather(v[:0], "i")), xs, r=r)


@check()
def pytrees_in_and_out(r: int, n: int) -> None:
    ws, bs = members(n, (3, 2), 2), members(n, (2,), 3)

    def f(p: dict[str, Any], pair: Pair) -> Any:
        tree = {"w": p["w"], "b": [p["b"], None], "pair": pair, "n": 2.0}
        s = psum(tree, "i")
        return {
            "sum": s,
            "mean": pmean(tree, "i"),
            "max": pmax(tree, "i"),
            "gather": all_gather(tree, "i"),
            "ratio": Pair(p["w"] / s["w"], s["n"]),
        }

    want = slice_of(vmap(f, axis_name="i")({"w": ws, "b": bs}, Pair(bs * 2, ws.sum(-1))), r)
    got = pmap(f, "i")({"w": ws[r], "b": bs[r]}, Pair(bs[r] * 2, ws[r].sum(-1)))
    close(got, want)


@check()
def pytree_reductions_under_transforms(r: int, n: int) -> None:
    """psum/pmean of a pytree (one flat buffer) under every transform, with leaves that the
    transform's vmap batches and leaves it does not (a constant)."""
    as_, bs = members(n, (3,), 12), members(n, (2,), 13)
    ta, tb = members(n, (3,), 14), members(n, (2,), 15)

    def f(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        m = pmean({"a": a**2, "b": torch.sin(b), "c": torch.ones(2, dtype=F64)}, "i")
        s = psum([a * b.sum(), torch.cos(b), torch.full((), 3.0, dtype=F64)], "i")
        return (m["a"].sum() * m["b"] * s[1]).sum() + (m["c"] * s[2]).sum() * (a * s[0]).sum()

    tf = torch.func
    same_as_vmap(f, as_, bs, r=r)
    for argnums in (0, 1, (0, 1)):
        for t in (fu.grad, fu.jacrev, fu.jacfwd, fu.hessian, tf.grad, tf.jacrev):
            same_as_vmap(t(f, argnums=argnums), as_, bs, r=r)
    same_as_vmap(lambda a, b, u, v: fu.jvp(f, (a, b), (u, v)), as_, bs, ta, tb, r=r)
    same_as_vmap(lambda a, b: fu.vjp(f, a, b)[1](torch.tensor(1.5, dtype=F64)), as_, bs, r=r)
    same_as_vmap(vmap(f, in_axes=(0, None)), as_[:, None].expand(n, 2, 3) * 1.0, bs, r=r)
    # around pmap, with each rank's own seed
    p = pmap(f, "i")
    want = vmap(fu.grad(f, (0, 1)), axis_name="i")(as_, bs)
    close(fu.grad(p, argnums=(0, 1))(as_[r], bs[r]), slice_of(want, r))
    want = fu.jvp(vmap(f, axis_name="i"), (as_, bs), (ta, tb))
    close(fu.jvp(p, (as_[r], bs[r]), (ta[r], tb[r])), slice_of(want, r))


@check(CHECKS)
def one_all_reduce_per_bucket(r: int, n: int) -> None:
    from functorch_utils import _distributed

    calls: list[tuple[torch.dtype, int]] = []
    real = dist.all_reduce

    def counting(t: torch.Tensor, *a: Any, **k: Any) -> Any:
        calls.append((t.dtype, t.numel()))
        return real(t, *a, **k)

    tree = {
        "a": torch.ones(3, 4, dtype=F64) * (r + 1),
        "b": [torch.ones(5, dtype=F64), torch.ones((), dtype=F64)],
        "c": torch.ones(2, 2),  # float32: a bucket of its own
    }
    dist.all_reduce = counting  # type: ignore[assignment]
    try:
        out = pmap(lambda t: psum(t, "i"), "i")(tree)
        assert calls == [(F64, 18), (torch.float32, 4)], calls
        del calls[:]
        g = pmap(fu.grad(lambda t: pmean(t, "i")["a"].sum() + psum(t, "i")["b"][0].sum()), "i")(
            tree
        )
        # forward: pmean and psum, one all-reduce per dtype each; backward: one per psum call,
        # float64 only (the float32 leaf reaches no output)
        assert calls == [(F64, 18), (torch.float32, 4)] * 2 + [(F64, 18)] * 2, calls
        del calls[:]
        old = _distributed._BUCKET_BYTES
        _distributed._BUCKET_BYTES = 12 * 8  # 12 float64 per bucket: a is one, b another
        try:
            out2 = pmap(lambda t: psum(t, "i"), "i")(tree)
        finally:
            _distributed._BUCKET_BYTES = old
        assert calls == [(F64, 12), (F64, 6), (torch.float32, 4)], calls
    finally:
        dist.all_reduce = real  # type: ignore[assignment]
    total = n * (n + 1) / 2
    close(out["a"], torch.full((3, 4), total, dtype=F64))
    close(out["b"][1], torch.tensor(float(n), dtype=F64))
    close(out2, out)
    close(g["a"], torch.full((3, 4), 1.0, dtype=F64))
    close(g["b"][0], torch.full((5,), float(n), dtype=F64))
    close(g["c"], torch.zeros(2, 2))


@check(CHECKS, CHECKS_4)
def zoo_values(r: int, n: int) -> None:
    same_as_vmap(zoo, members(n, (3,), 4), r=r)


@check()
def derivatives_inside(r: int, n: int) -> None:
    """Transforms inside the pmapped function: every rank's cotangents meet, as in vmap."""
    xs, ts = members(n, (3,), 5), members(n, (3,), 6)
    tf = torch.func
    for g in (tf.grad, fu.grad, tf.jacrev, fu.jacrev, tf.jacfwd, fu.jacfwd, fu.hessian):
        same_as_vmap(g(member_loss), xs, r=r)
    same_as_vmap(fu.jacrev(zoo), xs, r=r)
    same_as_vmap(fu.jacfwd(zoo), xs, r=r)
    same_as_vmap(lambda v: fu.value_and_grad(member_loss)(v), xs, r=r)
    same_as_vmap(lambda v, t: tf.jvp(zoo, (v,), (t,)), xs, ts, r=r)
    same_as_vmap(lambda v, t: fu.jvp(zoo, (v,), (t,)), xs, ts, r=r)
    same_as_vmap(lambda v, u: tf.vjp(zoo, v)[1](u), xs, ts, r=r)
    same_as_vmap(lambda v, u: fu.vjp(zoo, v)[1](u), xs, ts, r=r)
    # second order: grad of grad, and jvp of grad
    same_as_vmap(fu.grad(lambda v: fu.grad(member_loss)(v).pow(2).sum()), xs, r=r)
    same_as_vmap(lambda v, t: fu.jvp(fu.grad(member_loss), (v,), (t,)), xs, ts, r=r)


@check()
def derivatives_outside(r: int, n: int) -> None:
    """Transforms around the pmapped function: each rank seeds its own (co)tangent."""
    xs, ts = members(n, (3,), 7), members(n, (3,), 8)
    x, t = xs[r], ts[r]
    p, v = pmap(zoo, "i"), vmap(zoo, axis_name="i")
    tf = torch.func
    # grad/vjp/jvp around pmap: slice r of the same transform around vmap
    for g in (tf.grad, fu.grad):
        close(g(lambda a: (p(a) * a).sum())(x), g(lambda a: (v(a) * a).sum())(xs)[r])
    close(fu.vjp(p, x)[1](t), slice_of(fu.vjp(v, xs)[1](ts), r))
    close(tf.vjp(p, x)[1](t), slice_of(tf.vjp(v, xs)[1](ts), r))
    close(fu.jvp(p, (x,), (t,)), slice_of(fu.jvp(v, (xs,), (ts,)), r))
    close(tf.jvp(p, (x,), (t,)), slice_of(tf.jvp(v, (xs,), (ts,)), r))
    # Jacobians and Hessians around pmap: the transform applied per rank, i.e. pmap of it
    for j in (fu.jacrev, fu.jacfwd, tf.jacrev, tf.jacfwd):
        close(j(p)(x), vmap(j(zoo), axis_name="i")(xs)[r])
    for h in (fu.hessian, tf.hessian):
        close(h(pmap(member_loss, "i"))(x), vmap(h(member_loss), axis_name="i")(xs)[r])
    # classic autograd: .backward() through the collectives
    a = x.clone().requires_grad_()
    (p(a) * a).sum().backward()
    assert a.grad is not None
    close(a.grad, tf.grad(lambda b: (v(b) * b).sum())(xs)[r])


@check()
def nested_vmap_inside_and_outside(r: int, n: int) -> None:
    m = 3
    xs = members(n, (m, 2), 9)

    def body(v: torch.Tensor) -> Any:
        return {
            "i": psum(v, "i"),
            "j": psum(v, "j"),
            "ij": psum(v, ("i", "j")),
            "ji": pmean(v, ("j", "i")),
            "max_i": pmax(v, "i"),
            "gather": all_gather(v, ("i", "j")),
            "gather_ji": all_gather(v, ("j", "i"), axis=1),
            "index": axis_index(("i", "j")),
            "index_j": axis_index("j"),
        }

    same_as_vmap(vmap(body, axis_name="j"), xs, r=r)
    # an unnamed vmap inside and outside pmap: collectives pass through it
    same_as_vmap(vmap(zoo), xs, r=r)
    close(vmap(pmap(zoo, "i"))(xs[r]), vmap(vmap(zoo), axis_name="i")(xs)[r])
    # the same name bound by an inner vmap shadows pmap's
    same_as_vmap(vmap(lambda v: psum(v, "i"), axis_name="i"), xs, r=r)
    # derivatives through both levels
    same_as_vmap(fu.grad(lambda v: vmap(zoo, axis_name="j")(v).pow(2).sum()), xs, r=r)


@check()
def errors(r: int, n: int) -> None:
    import re

    def raises(kind: type[BaseException], text: str, fn: Callable[[], Any]) -> None:
        try:
            fn()
        except kind as e:
            assert re.search(re.escape(text), str(e)), str(e)
        else:
            raise AssertionError(f"no {kind.__name__}")

    raises(
        NameError,
        "psum(x, axis_name='j'): unbound axis name 'j'; expected a name bound by an enclosing "
        "vmap(..., axis_name=...) (bound here: 'i'), got 'j'.",
        lambda: pmap(lambda x: psum(x, "j"), "i")(torch.ones(2)),
    )
    raises(
        ValueError,
        "psum(x, axis_name='i'): x['w'][1] is on device meta, which the process group's "
        "backend 'gloo' does not reduce; expected tensors on cpu, got a tensor of dtype "
        "torch.float32 and shape (2,) on meta. Move it with .to('cpu'), or initialise the "
        "process group with a backend for meta",
        lambda: pmap(lambda x: psum(x, "i"), "i")(
            {"w": [torch.ones(2), torch.ones(2, device="meta")]}
        ),
    )
    raises(
        ValueError,
        "all_gather(x, axis_name='i', axis=0, tiled=False): x[0] is on device meta",
        lambda: pmap(lambda x: all_gather(x, "i"), "i")([torch.ones(2, device="meta")]),
    )
    raises(
        ValueError,
        "pmax(x, axis_name='i'): x is on device meta",
        lambda: pmap(lambda x: pmax(x, "i"), "i")(torch.ones(2, device="meta")),
    )
    # a failed check runs no collective: the group still works afterwards
    close(pmap(lambda x: psum(x, "i"), "i")(torch.ones(())), torch.tensor(float(n)))


@check(CHECKS)
def compiled(r: int, n: int) -> None:
    """Under torch.compile the collectives run eagerly between graphs: eager's numbers."""
    xs = members(n, (3,), 10)

    def body(v: torch.Tensor) -> torch.Tensor:
        return torch.sin(v) * psum(v**2, "i") + all_gather(v, "i")[0]

    f, ref = pmap(body, "i"), vmap(body, axis_name="i")
    # torch's own noise while Dynamo traces (not ours): a .grad probe and a Function() instance
    warnings.filterwarnings("ignore", message="The .grad attribute of a Tensor that is not a leaf")
    warnings.filterwarnings("ignore", message=".*should not be instantiated")
    close(torch.compile(f, backend="eager")(xs[r]), ref(xs)[r])
    # jit compiles with fullgraph=True: a clear error that says what to do; fullgraph=False runs
    if hasattr(fu, "jit"):
        try:
            fu.jit(f, backend="eager")(xs[r])
        except Exception as e:
            assert "a collective over a distributed.pmap axis" in str(e), str(e)
            assert "fullgraph=False" in str(e), str(e)
        else:
            raise AssertionError("jit(fullgraph=True) of a collective across processes ran")
        close(fu.jit(f, fullgraph=False, backend="eager")(xs[r]), ref(xs)[r])
    # outer autograd through the compiled forward
    a = xs[r].clone().requires_grad_()
    torch.compile(f, backend="eager")(a).sum().backward()
    assert a.grad is not None
    close(a.grad, torch.func.grad(lambda b: ref(b).sum())(xs)[r])


@check(CHECKS_4)
def subgroups_and_a_mesh(r: int, n: int) -> None:
    """4 processes as a 2x2 mesh: rows and columns are process groups; nested pmaps equal
    nested vmaps over the (2, 2) grid of shards."""
    assert n == 4
    rows = [dist.new_group([0, 1]), dist.new_group([2, 3])]
    cols = [dist.new_group([0, 2]), dist.new_group([1, 3])]
    i, j = divmod(r, 2)
    xs = members(4, (3,), 11).reshape(2, 2, 3)

    def body(v: torch.Tensor) -> Any:
        return {
            "i": psum(v, "i"),
            "j": pmean(v, "j"),
            "ij": psum(v, ("i", "j")),
            "gather": all_gather(v, ("i", "j")),
            "index": axis_index(("i", "j")),
            "grad": fu.grad(lambda u: (zoo_j(u) * psum(u, "i")).sum())(v),
        }

    def zoo_j(u: torch.Tensor) -> torch.Tensor:
        return torch.exp(u) / psum(torch.exp(u), "j") + pmax(u, "j")

    want = vmap(vmap(body, axis_name="j"), axis_name="i")(xs)
    got = pmap(pmap(body, "j", group=rows[i]), "i", group=cols[j])(xs[i, j])
    close(got, fu.tree_util.tree_map(lambda t: t[i, j], want))
    # a process outside the group: the placeholder new_group returns there is refused
    outside = dist.new_group([0, 1])
    if r >= 2:
        try:
            pmap(lambda v: psum(v, "k"), "k", group=outside)(xs[i, j])
        except ValueError as e:
            assert "this process is not a member of the process group" in str(e), str(e)
        else:
            raise AssertionError("no ValueError outside the group")
    # a pmap over a subgroup: ranks {0, 1} and {2, 3} reduce separately
    got_row = pmap(lambda v: (psum(v, "k"), axis_index("k")), "k", group=rows[i])(xs[i, j])
    close(got_row, (xs[i].sum(0), torch.tensor(j)))


# ---------------------------------------------------------------------------------------------


def main() -> None:
    rank, world, init_file, out_dir = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    warnings.simplefilter("error")
    # torch's own deprecation noise, as in pyproject.toml's filterwarnings
    warnings.filterwarnings("ignore", message="`torch.jit.script` is deprecated")
    warnings.filterwarnings("ignore", message="`torch.jit.script_method` is deprecated")
    warnings.filterwarnings("ignore", message="`torch._prims_common.check` is deprecated")
    torch.manual_seed(0)
    dist.init_process_group(
        "gloo",
        init_method=f"file://{init_file}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=float(os.environ.get("PMAP_TEST_TIMEOUT", "60"))),
    )
    results: dict[str, str] = {}
    try:
        for name, fn in (CHECKS_4 if world == 4 else CHECKS).items():
            try:
                fn(rank, world)
                results[name] = "ok"
            except Exception:
                results[name] = traceback.format_exc()
            # the ranks leave each check together: a failed check cannot shift the next one
            dist.barrier()
    finally:
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as fh:
            json.dump(results, fh)
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
