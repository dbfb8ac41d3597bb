#!/usr/bin/env python
"""`lax.scan` against the Python loop it stands for, and against JAX's compiled `lax.scan`.

Workload: the forward pass and the gradient (``value_and_grad``) of a 200-step tanh RNN, batch
32, hidden 64, float32, one thread: ``h = tanh(h @ w + x @ u + b)`` per step, the loss the sum over
steps of ``mean(h**2)``, parameters a dict ``{"w", "u", "b"}``. Systems:

- ``fu lax.scan``: ``functorch_utils.value_and_grad`` of the RNN written with
  ``functorch_utils.lax.scan``;
- ``fu python loop`` (the baseline): the same with a hand-written Python ``for`` loop and
  ``torch.stack``;
- ``jax jit(value_and_grad(lax.scan))``: when ``jax`` is importable, the same program in JAX,
  compiled once (compile time not counted), one thread.

Method: correctness first (the scan's value and gradient equal the loop's, and JAX's to float32
rounding), then every system is warmed up. Each repetition times every system once, in an order
rotated from one repetition to the next, so the drift of a shared machine hits all alike; a sample
is a loop of calls calibrated to ``--sample-ms`` with the garbage collector off. Reported: the
median time per call of each system and the median over repetitions of the per-pair ratio (system
time / loop time in the same repetition) with its interquartile range.

    MALLOC_MMAP_THRESHOLD_=1000000000000 MALLOC_TRIM_THRESHOLD_=1000000000000 \\
        .venv/bin/python benchmarks/bench_lax.py [--quick] [--reps N] [--sample-ms MS]

Measured on a 2-core CPU VM shared with other jobs (load average about 2), torch 2.13 CPU,
jax 0.10.2 CPU, one thread, the malloc variables above set, 31 repetitions of 60 ms samples:

    system                                median  ratio to loop [IQR]
    fu python loop                      19.74 ms  1.00 (baseline)
    fu lax.scan                         19.84 ms  1.02 [0.97-1.07]
    jax jit(value_and_grad(lax.scan))    5.24 ms  0.26 [0.23-0.29]

A second run on the same machine: loop 21.19 ms, scan 23.74 ms (1.06 [0.99-1.13]), JAX 5.78 ms
(0.26 [0.24-0.28]). The scan costs a few percent over the loop (its per-step carry check); JAX's
compiled program is about 4x faster than either eager loop.

``--quick`` (5 repetitions, short samples) only checks that the script works.
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

import functorch_utils as fu
from functorch_utils import lax

STEPS, BATCH, HIDDEN = 200, 32, 64


def make_inputs(seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = {
        "w": torch.randn(HIDDEN, HIDDEN, generator=g) / HIDDEN**0.5,
        "u": torch.randn(HIDDEN, HIDDEN, generator=g) / HIDDEN**0.5,
        "b": torch.randn(HIDDEN, generator=g) * 0.1,
    }
    xs = torch.randn(STEPS, BATCH, HIDDEN, generator=g)
    return params, xs


def loss_scan(params: dict[str, torch.Tensor], xs: torch.Tensor) -> torch.Tensor:
    def step(h: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.tanh(h @ params["w"] + x @ params["u"] + params["b"])
        return h, (h * h).mean()

    _, ys = lax.scan(step, torch.zeros(BATCH, HIDDEN), xs)
    return ys.sum()


def loss_loop(params: dict[str, torch.Tensor], xs: torch.Tensor) -> torch.Tensor:
    h = torch.zeros(BATCH, HIDDEN)
    ys = []
    for x in xs:
        h = torch.tanh(h @ params["w"] + x @ params["u"] + params["b"])
        ys.append((h * h).mean())
    return torch.stack(ys).sum()


def jax_system(params: dict[str, torch.Tensor], xs: torch.Tensor) -> Callable[[], Any] | None:
    """JAX's jit(value_and_grad) of the same RNN in ``jax.lax.scan``, or None without jax."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None

    def loss(p: dict[str, Any], xs: Any) -> Any:
        def step(h: Any, x: Any) -> tuple[Any, Any]:
            h = jnp.tanh(h @ p["w"] + x @ p["u"] + p["b"])
            return h, (h * h).mean()

        _, ys = jax.lax.scan(step, jnp.zeros((BATCH, HIDDEN), jnp.float32), xs)
        return ys.sum()

    fn = jax.jit(jax.value_and_grad(loss))
    jp = {k: jnp.asarray(v.numpy()) for k, v in params.items()}
    jxs = jnp.asarray(xs.numpy())

    def run() -> Any:
        return jax.block_until_ready(fn(jp, jxs))

    return run


def check(params: dict[str, torch.Tensor], xs: torch.Tensor, jax_run: Any) -> None:
    v_scan, g_scan = fu.value_and_grad(loss_scan)(params, xs)
    v_loop, g_loop = fu.value_and_grad(loss_loop)(params, xs)
    torch.testing.assert_close(v_scan, v_loop, rtol=0, atol=0)
    for k in params:
        torch.testing.assert_close(g_scan[k], g_loop[k], rtol=0, atol=0)
    print("check: lax.scan value and gradient equal the Python loop's (bitwise)")
    if jax_run is not None:
        v_jax, g_jax = jax_run()
        torch.testing.assert_close(torch.tensor(float(v_jax)), v_loop, rtol=1e-4, atol=1e-4)
        for k in params:
            torch.testing.assert_close(
                torch.from_numpy(np.array(g_jax[k])),
                g_loop[k],
                rtol=1e-3,
                atol=1e-4,
            )
        print("check: JAX's value and gradient equal ours to float32 rounding")


def run(systems: dict[str, Callable[[], Any]], reps: int, sample_s: float) -> dict[str, list]:
    """bench_core's interleaved round-robin timer (wall clock) over argument-free systems."""
    timer = Timer("cpu", reps, sample_s, warmup_s=0.0, clock="wall")
    return timer.run([(name, fn, ()) for name, fn in systems.items()])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="5 repetitions, short samples")
    ap.add_argument("--reps", type=int, default=31)
    ap.add_argument("--sample-ms", type=float, default=60.0)
    args = ap.parse_args()
    reps, sample_ms = (5, 15.0) if args.quick else (args.reps, args.sample_ms)

    torch.set_num_threads(1)
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        print(f"{var}={os.environ.get(var, '(unset)')}")
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, python {sys.version[:6]}")

    params, xs = make_inputs()
    jax_run = jax_system(params, xs)
    if jax_run is None:
        print("jax is not importable: its row is skipped")
    else:
        import jax

        print(f"jax {jax.__version__}, XLA_FLAGS={os.environ['XLA_FLAGS']}")
    check(params, xs, jax_run)

    vg_scan, vg_loop = fu.value_and_grad(loss_scan), fu.value_and_grad(loss_loop)
    systems: dict[str, Callable[[], Any]] = {
        "fu python loop": lambda: vg_loop(params, xs),
        "fu lax.scan": lambda: vg_scan(params, xs),
    }
    if jax_run is not None:
        systems["jax jit(value_and_grad(lax.scan))"] = jax_run
    print(
        f"RNN: {STEPS} steps, batch {BATCH}, hidden {HIDDEN}, forward + gradient; "
        f"{reps} repetitions of ~{sample_ms:.0f} ms samples"
    )
    times = run(systems, reps, sample_ms / 1e3)

    base = times["fu python loop"]
    width = max(len(n) for n in systems)
    print(f"{'system'.ljust(width)}  {'median':>9}  ratio to loop [IQR]")
    for name, xs_t in times.items():
        q1, med, q3 = quartiles([a / b for a, b in zip(xs_t, base)])
        ratio = "1.00 (baseline)" if name == "fu python loop" else f"{med:.2f} [{q1:.2f}-{q3:.2f}]"
        print(f"{name.ljust(width)}  {statistics.median(xs_t) * 1e3:6.2f} ms  {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
