#!/usr/bin/env python
"""A data-parallel training step with `distributed.pmap` against DistributedDataParallel.

Workload: one SGD step of an MLP 784-128-128-10 (ReLU, cross-entropy), float32, batch 64 per
process, 2 processes, gloo on the CPU, one thread per process. Systems, each a full step
(gradient, all-reduce of the gradients, update):

- ``pmap + pmean``: ``pmap(step, "i")`` where ``step`` takes ``functorch_utils.grad`` of the loss
  of a dict of parameters and averages the gradient pytree with ``pmean(grads, "i")`` (one
  all-reduce of the flattened gradients), then ``p - lr * g`` (one ``torch._foreach_add``);
- ``DDP`` (the baseline): ``torch.nn.parallel.DistributedDataParallel`` around the same
  ``nn.Sequential``, ``loss.backward()`` and ``torch.optim.SGD.step()``;
- ``raw all_reduce``: the plain module, ``loss.backward()``, then ``dist.all_reduce`` of each
  parameter's gradient (one call per parameter) and ``SGD.step()``.

Method: correctness first (after three steps from the same weights, every system holds the same
weights on every rank), then warm-up. Each repetition times every system once, in an order
rotated from one repetition to the next; a sample is ``--steps`` steps between two barriers, its
time the slower rank's (an all-reduce of the per-rank times with MAX). Reported: the median time
per step of each system, and the median over repetitions of the ratio to DDP's time in the same
repetition, with its interquartile range.

    .venv/bin/python benchmarks/bench_distributed.py [--quick] [--reps N] [--steps N]

Measured on a 2-core CPU VM shared with other jobs, torch 2.13 CPU, 2 processes, one thread each,
21 repetitions of 50 steps: see docs/distributed.md (and re-run for your machine).

``--quick`` (3 repetitions, 5 steps) only checks that the script works.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

import functorch_utils as fu
from functorch_utils import pmean
from functorch_utils.distributed import pmap

WORLD, BATCH, LR = 2, 64, 0.05
SIZES = (784, 128, 128, 10)


def make_module() -> nn.Sequential:
    torch.manual_seed(0)
    layers: list[nn.Module] = []
    for k in range(len(SIZES) - 1):
        layers.append(nn.Linear(SIZES[k], SIZES[k + 1]))
        if k < len(SIZES) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def as_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.named_parameters()}


def loss_fn(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    h = x
    n = len(SIZES) - 1
    for k in range(n):
        h = F.linear(h, params[f"{2 * k}.weight"], params[f"{2 * k}.bias"])
        if k < n - 1:
            h = torch.relu(h)
    return F.cross_entropy(h, y)


class PmapSystem:
    name = "pmap + pmean"

    def __init__(self) -> None:
        self.params = as_dict(make_module())

        def step(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> Any:
            grads = pmean(fu.grad(loss_fn)(p, x, y), "i")
            new = torch._foreach_add(list(p.values()), list(grads.values()), alpha=-LR)
            return dict(zip(p, new))

        self.step_fn = pmap(step, "i")

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.params = self.step_fn(self.params, x, y)

    def weights(self) -> dict[str, torch.Tensor]:
        return self.params


class DDPSystem:
    name = "DDP"

    def __init__(self) -> None:
        self.module = DistributedDataParallel(make_module())
        self.opt = torch.optim.SGD(self.module.parameters(), lr=LR)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.module(x), y).backward()
        self.opt.step()

    def weights(self) -> dict[str, torch.Tensor]:
        return as_dict(self.module.module)


class RawSystem:
    name = "raw all_reduce"

    def __init__(self) -> None:
        self.module = make_module()
        self.opt = torch.optim.SGD(self.module.parameters(), lr=LR)

    def step(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.opt.zero_grad(set_to_none=True)
        F.cross_entropy(self.module(x), y).backward()
        for p in self.module.parameters():
            assert p.grad is not None
            dist.all_reduce(p.grad)
            p.grad /= WORLD
        self.opt.step()

    def weights(self) -> dict[str, torch.Tensor]:
        return as_dict(self.module)


def data(rank: int, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(100 + rank)
    return [
        (
            torch.randn(BATCH, SIZES[0], generator=g),
            torch.randint(0, SIZES[-1], (BATCH,), generator=g),
        )
        for _ in range(n)
    ]


def check(rank: int) -> None:
    systems = [PmapSystem(), DDPSystem(), RawSystem()]
    for x, y in data(rank, 3):
        for s in systems:
            s.step(x, y)
    ref = systems[1].weights()
    for s in systems:
        for k, w in s.weights().items():
            torch.testing.assert_close(w, ref[k], rtol=1e-5, atol=1e-6, msg=f"{s.name} {k}")
            gathered = [torch.empty_like(w) for _ in range(WORLD)]
            dist.all_gather(gathered, w.contiguous())
            torch.testing.assert_close(gathered[0], gathered[-1], msg=f"{s.name} {k} ranks")


def sample(system: Any, batches: list[tuple[torch.Tensor, torch.Tensor]]) -> float:
    dist.barrier()
    t0 = time.perf_counter()
    for x, y in batches:
        system.step(x, y)
    elapsed = torch.tensor([(time.perf_counter() - t0) / len(batches)], dtype=torch.float64)
    dist.all_reduce(elapsed, op=dist.ReduceOp.MAX)
    return float(elapsed.item())


def run(rank: int, init_file: str, reps: int, steps: int, out: Callable[[str], None]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    try:
        check(rank)
        systems = [PmapSystem(), DDPSystem(), RawSystem()]
        batches = data(rank, steps)
        for s in systems:  # warm-up
            sample(s, batches[: max(1, steps // 5)])
        times: dict[str, list[float]] = {s.name: [] for s in systems}
        ratios: dict[str, list[float]] = {s.name: [] for s in systems}
        gc.disable()
        try:
            for rep in range(reps):
                order = systems[rep % 3 :] + systems[: rep % 3]
                got = {s.name: sample(s, batches) for s in order}
                for name, t in got.items():
                    times[name].append(t)
                    ratios[name].append(t / got["DDP"])
        finally:
            gc.enable()
        if rank == 0:
            out(
                f"{WORLD} processes, gloo, MLP 784-128-128-10, batch {BATCH} per process, "
                f"{reps} repetitions of {steps} steps; torch {torch.__version__}"
            )
            out(f"{'system':<18}{'median/step':>14}  ratio to DDP [IQR]")
            for name in times:
                q = statistics.quantiles(ratios[name], n=4) if reps >= 2 else [ratios[name][0]] * 3
                out(
                    f"{name:<18}{statistics.median(times[name]) * 1e3:>11.3f} ms  "
                    f"{statistics.median(ratios[name]):.3f} [{q[0]:.3f}-{q[2]:.3f}]"
                )
    finally:
        dist.destroy_process_group()


def _worker(rank: int, init_file: str, reps: int, steps: int) -> None:
    run(rank, init_file, reps, steps, lambda line: print(line, flush=True))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 repetitions of 5 steps")
    parser.add_argument("--reps", type=int, default=21)
    parser.add_argument("--steps", type=int, default=50)
    args = parser.parse_args()
    reps, steps = (3, 5) if args.quick else (args.reps, args.steps)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    with tempfile.TemporaryDirectory() as tmp:
        mp.start_processes(
            _worker,
            args=(os.path.join(tmp, "init"), reps, steps),
            nprocs=WORLD,
            start_method="spawn",
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
