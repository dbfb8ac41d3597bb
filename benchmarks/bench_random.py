#!/usr/bin/env python
"""`functorch_utils.random` throughput: JAX's streams on torch vs torch's generator vs JAX.

Workload: 2**20 float32 draws, ``uniform`` and ``normal``, one thread. Systems:

- ``torch.rand`` / ``torch.randn`` (the baselines): torch's stateful Philox/MT generator;
- ``fu eager``: ``random.uniform(key, (n,))`` / ``random.normal(key, (n,))`` with a threefry key,
  op by op (one kernel per threefry round step);
- ``fu compiled``: the same under ``torch.compile(fullgraph=True)`` (inductor; compile time not
  counted);
- ``fu rbg``: a ``random.key(0, impl="rbg")`` key (torch's generator seeded from the key: fast,
  not JAX-stream-compatible);
- ``jax jit``: ``jax.jit(jax.random.uniform/normal)`` when jax is importable (one thread).

Method: correctness first (the eager, compiled and JAX draws agree: uniform bit for bit, normal to
a few ulps), then warm-up. Each repetition times every system once, in an order rotated from one
repetition to the next, so that the drift of a shared machine hits all alike; a sample is a loop of
calls calibrated to ``--sample-ms`` with the garbage collector off. Reported: the median time per
call and the median over repetitions of the per-pair ratio to the torch baseline of the same
repetition, with its interquartile range.

    .venv/bin/python benchmarks/bench_random.py [--quick] [--reps N] [--sample-ms MS]

The figures are in docs/random.md ("Speed"). ``--quick`` (3 repetitions, short samples) only
checks that the script works.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from collections.abc import Callable
from typing import Any

# one thread for XLA too; must be set before jax is imported
os.environ.setdefault(
    "XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import numpy as np
import torch
from bench_core import Timer, quartiles

from functorch_utils import random

N = 1 << 20


def jax_systems() -> dict[str, Callable[[], Any]] | None:
    try:
        import jax
        import jax.random as jr
    except ImportError:
        return None
    key = jr.PRNGKey(0)
    u = jax.jit(lambda k: jr.uniform(k, (N,)))
    z = jax.jit(lambda k: jr.normal(k, (N,)))
    return {
        "uniform": lambda: jax.block_until_ready(u(key)),
        "normal": lambda: jax.block_until_ready(z(key)),
    }


def run(systems: dict[str, Callable[[], Any]], reps: int, sample_s: float) -> dict[str, list]:
    """bench_core's interleaved round-robin timer (wall clock) over argument-free systems."""
    timer = Timer("cpu", reps, sample_s, warmup_s=0.0, clock="wall")
    return timer.run([(name, fn, ()) for name, fn in systems.items()])


def report(title: str, times: dict[str, list[float]], baseline: str) -> None:
    print(f"\n{title}")
    print(f"    {'system':<22}{'median':>10}  ratio to {baseline} [IQR]")
    for name, ts in times.items():
        ratios = [t / b for t, b in zip(ts, times[baseline])]
        lo, med, hi = quartiles(ratios)
        text = "1.00 (baseline)" if name == baseline else f"{med:.2f} [{lo:.2f}-{hi:.2f}]"
        print(f"    {name:<22}{statistics.median(ts) * 1e3:>8.2f} ms  {text}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="3 repetitions, short samples")
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--sample-ms", type=float, default=100.0)
    args = ap.parse_args()
    reps, sample_ms = (3, 10.0) if args.quick else (args.reps, args.sample_ms)

    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {sys.version[:6]}")
    key = random.key(0)
    rbg = random.key(0, impl="rbg")
    cu = torch.compile(lambda k: random.uniform(k, (N,)), fullgraph=True)
    cn = torch.compile(lambda k: random.normal(k, (N,)), fullgraph=True)
    jx = jax_systems()
    if jx is None:
        print("jax is not importable: its rows are skipped")
    else:
        import jax

        print(f"jax {jax.__version__}, XLA_FLAGS={os.environ['XLA_FLAGS']}")

    # correctness first
    u = random.uniform(key, (N,))
    assert torch.equal(cu(key), u), "compiled uniform differs from eager"
    torch.testing.assert_close(cn(key), random.normal(key, (N,)), rtol=1e-6, atol=1e-6)
    if jx is not None:
        assert np.array_equal(u.numpy(), np.asarray(jx["uniform"]())), "uniform differs from JAX"
        np.testing.assert_allclose(
            random.normal(key, (N,)).numpy(), np.asarray(jx["normal"]()), rtol=1e-5, atol=1e-6
        )
        print("check: uniform equals JAX's bit for bit; normal agrees to a few ulps")

    uniform: dict[str, Callable[[], Any]] = {
        "torch.rand": lambda: torch.rand(N),
        "fu eager": lambda: random.uniform(key, (N,)),
        "fu compiled": lambda: cu(key),
        "fu rbg": lambda: random.uniform(rbg, (N,)),
    }
    normal: dict[str, Callable[[], Any]] = {
        "torch.randn": lambda: torch.randn(N),
        "fu eager": lambda: random.normal(key, (N,)),
        "fu compiled": lambda: cn(key),
        "fu rbg": lambda: random.normal(rbg, (N,)),
    }
    if jx is not None:
        uniform["jax jit"] = jx["uniform"]
        normal["jax jit"] = jx["normal"]
    report(f"uniform, {N} float32 draws", run(uniform, reps, sample_ms / 1e3), "torch.rand")
    report(f"normal, {N} float32 draws", run(normal, reps, sample_ms / 1e3), "torch.randn")
    return 0


if __name__ == "__main__":
    sys.exit(main())
