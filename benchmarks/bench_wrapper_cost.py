#!/usr/bin/env python
"""Where the cost of ``value_and_grad`` over ``loss.backward()`` goes (bench_core's workload 2).

Workload: ``value_and_grad`` of the cross-entropy of an MLP 784-128-128-10, B=64, parameters a
dict of 6 tensors that do not require grad; one thread. Systems, all in one process, interleaved
with bench_core's Timer (rotated round robin, ratio = median over repetitions of the per-pair
ratio to ``loss.backward()``):

- ``loss.backward()``: the baseline (parameters with ``requires_grad``, ``.grad = None``);
- ``fu.value_and_grad``: the package as shipped;
- ``fu.value_and_grad, no outer check``: the same with the check for tensors outside the call
  (NOTE [outer autograd] in ``_engine.py``) replaced by ``False``. Not correct in general (a
  function closing over a tensor that requires grad would lose its outer graph); it measures what
  the check costs;
- ``minimal wrapper``: the least a pytree ``value_and_grad`` on the tape does (flatten, fresh
  leaves, forward, the outer check, one engine call, rebuild), no argument checks;
- ``minimal wrapper, no outer check``;
- ``hand-written autograd.grad`` (bench_core's).

Run from the repository root::

    MALLOC_MMAP_THRESHOLD_=1000000000000 MALLOC_TRIM_THRESHOLD_=1000000000000 \\
        MALLOC_ARENA_MAX=1 .venv/bin/python benchmarks/bench_wrapper_cost.py [--reps N]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from typing import Any

import optree
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_core as bc

import functorch_utils as fu
from functorch_utils import _engine, _torch_hooks


def minimal(params: dict, x: torch.Tensor, y: torch.Tensor, outer_check: bool = True) -> Any:
    leaves, spec = optree.tree_flatten(params)
    with torch.enable_grad():
        tape = [leaf.detach().requires_grad_() for leaf in leaves]
        out = bc.mlp_loss(optree.tree_unflatten(spec, tape), x, y)
    outer = outer_check and _engine._reaches_outer((out,), tape)
    grads = _torch_hooks.run_backward(
        (out,), (torch.ones_like(out),), tape, create_graph=outer, retain_graph=outer
    )
    return out.detach(), optree.tree_unflatten(spec, list(grads))


def minimal_no_check(params: dict, x: torch.Tensor, y: torch.Tensor) -> Any:
    return minimal(params, x, y, outer_check=False)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=41)
    args = ap.parse_args()
    torch.set_num_threads(1)
    sizes = (784, 128, 128, 10)
    params = bc.init_mlp(sizes, "cpu")
    params_rg = bc.with_requires_grad(params)
    x, y = bc.make_data(sizes, 64, "cpu")
    ours = fu.value_and_grad(bc.mlp_loss)
    real_check = _engine._reaches_outer

    def ours_no_check(p: dict, x: torch.Tensor, y: torch.Tensor) -> Any:
        _engine._reaches_outer = lambda outs, leaves: False
        try:
            return ours(p, x, y)
        finally:
            _engine._reaches_outer = real_check

    systems = [
        ("loss.backward()", bc.backward_step, (params_rg, x, y)),
        ("fu.value_and_grad", ours, (params, x, y)),
        ("fu.value_and_grad, no outer check", ours_no_check, (params, x, y)),
        ("minimal wrapper", minimal, (params, x, y)),
        ("minimal wrapper, no outer check", minimal_no_check, (params, x, y)),
        ("hand-written autograd.grad", bc.autograd_grad_step, (params, x, y)),
    ]
    bc.check_same("wrapper cost", {n: fn(*a) for n, fn, a in systems})
    print(f"torch {torch.__version__}, one thread, {args.reps} repetitions, process clock")
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX"):
        print(f"{var}={os.environ.get(var, '(unset)')}")
    timer = bc.Timer("cpu", args.reps, 0.02, 0.3, "process")
    samples = timer.run(systems)
    base = samples["loss.backward()"]
    width = max(len(n) for n, _, _ in systems)
    for name, _, _ in systems:
        ratios = sorted(a / b for a, b in zip(samples[name], base))
        q1, q3 = ratios[len(ratios) // 4], ratios[(3 * len(ratios)) // 4]
        med = statistics.median(samples[name]) * 1e6
        print(
            f"{name:{width}s}  {med:8.1f} us  {statistics.median(ratios):.3f} [{q1:.3f}-{q3:.3f}]"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
