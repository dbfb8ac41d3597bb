"""Data-parallel training with `distributed.pmap`: one MLP, its batch split over processes.

Every process holds the same parameters and its own shard of each batch. The training step takes
the gradient of the shard's loss and averages it over the processes with `pmean(grads, "data")`
(one all-reduce for the whole gradient pytree), so every process applies the same update. The
same `step` function, unchanged, runs on one process under `vmap(..., axis_name="data")` over
simulated ranks; the script checks that both reach the same weights, and that they equal plain
full-batch training.

    torchrun --nproc_per_node=2 examples/data_parallel.py   # 2 gloo processes
    python examples/data_parallel.py                        # spawns its own 2 processes

Exits non-zero if a check fails.
"""

from __future__ import annotations

import os
import sys
import tempfile

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

import functorch_utils as fu
from functorch_utils import pmean, vmap
from functorch_utils.distributed import pmap

DT = torch.float64
WORLD, STEPS, LR, SHARD = 2, 30, 0.5, 16
Params = dict[str, torch.Tensor]


def init_params() -> Params:
    g = torch.Generator().manual_seed(0)
    sizes = [(4, 32), (32, 32), (32, 3)]
    params: Params = {}
    for k, (i, o) in enumerate(sizes):
        params[f"w{k}"] = torch.randn(i, o, generator=g, dtype=DT) / i**0.5
        params[f"b{k}"] = torch.zeros(o, dtype=DT)
    return params


def batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The global batches, the same on every process: (WORLD * SHARD, 4) inputs, 3 classes."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        x = torch.randn(WORLD * SHARD, 4, generator=g, dtype=DT)
        y = (x[:, 0] > 0).long() + (x[:, 1] * x[:, 2] > 0).long()
        out.append((x, y))
    return out


def loss(params: Params, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    h = torch.tanh(x @ params["w0"] + params["b0"])
    h = torch.tanh(h @ params["w1"] + params["b1"])
    return F.cross_entropy(h @ params["w2"] + params["b2"], y)


def step(params: Params, x: torch.Tensor, y: torch.Tensor) -> Params:
    """One SGD step on this rank's shard; the gradient is averaged over the "data" axis."""
    grads = pmean(fu.grad(loss)(params, x, y), "data")
    return fu.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)


def train_distributed(rank: int) -> Params:
    """On each process: its shard of every batch, the step pmapped over the process group."""
    step_p = pmap(step, "data")
    params = init_params()
    for x, y in batches():
        params = step_p(params, x.chunk(WORLD)[rank], y.chunk(WORLD)[rank])
    return params


def train_simulated() -> Params:
    """On one process: the same step, vmapped over simulated ranks (params shared, out_axes=None
    because pmean makes the update the same on every rank)."""
    step_v = vmap(step, in_axes=(None, 0, 0), out_axes=None, axis_name="data")
    params = init_params()
    for x, y in batches():
        params = step_v(params, x.reshape(WORLD, SHARD, 4), y.reshape(WORLD, SHARD))
    return params


def train_full_batch() -> Params:
    params = init_params()
    for x, y in batches():
        grads = fu.grad(loss)(params, x, y)
        params = fu.tree_util.tree_map(lambda p, g: p - LR * g, params, grads)
    return params


def check(rank: int) -> int:
    torch.set_num_threads(1)
    got = train_distributed(rank)
    failures = []
    for name, want in (("vmap", train_simulated()), ("full batch", train_full_batch())):
        for k in got:
            if not torch.allclose(got[k], want[k], rtol=1e-10, atol=1e-12):
                err = (got[k] - want[k]).abs().max().item()
                failures.append(f"rank {rank}: {k} differs from the {name} run by {err:.3g}")
    first, last = (loss(init_params(), *batches()[-1]).item(), loss(got, *batches()[-1]).item())
    if rank == 0:
        print(
            f"{WORLD} processes ({dist.get_backend()}), {STEPS} steps: loss {first:.4f} -> "
            f"{last:.4f}; weights equal the vmap simulation and full-batch training"
            if not failures
            else "\n".join(failures)
        )
    if last >= first:
        failures.append(f"rank {rank}: the loss did not decrease ({first:.4f} -> {last:.4f})")
    for f in failures:
        print(f, file=sys.stderr)
    return 1 if failures else 0


def _spawned(rank: int, init_file: str) -> None:
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        status = check(rank)
    finally:
        dist.destroy_process_group()
    if status:
        raise SystemExit(status)


def main() -> int:
    if "RANK" in os.environ:  # launched by torchrun: the environment says where the others are
        dist.init_process_group("gloo")
        if dist.get_world_size() != WORLD:
            print(f"run with --nproc_per_node={WORLD}", file=sys.stderr)
            return 2
        try:
            return check(dist.get_rank())
        finally:
            dist.destroy_process_group()
    with tempfile.TemporaryDirectory() as tmp:  # a plain run: start the processes here
        try:
            mp.start_processes(
                _spawned, args=(os.path.join(tmp, "init"),), nprocs=WORLD, start_method="spawn"
            )
        except mp.ProcessRaisedException as err:
            print(err, file=sys.stderr)
            return 1
        except mp.ProcessExitedException as err:
            print(err, file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
