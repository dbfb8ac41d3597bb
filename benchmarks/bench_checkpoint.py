#!/usr/bin/env python
"""``checkpoint`` and its ``policy``: time and peak memory of a gradient, against no checkpoint.

Workload: ``value_and_grad`` of a stack of 8 residual MLP blocks (``x + gelu(x @ w1) @ w2``,
width 256, hidden 1024, batch 2048, float32: the activations, 18 MiB a block, outweigh the
weight gradients, 2 MiB a block), each block wrapped in ``checkpoint`` or not. Systems:

- ``no checkpoint``;
- ``checkpoint`` (``policy=None``: only each block's input is kept, everything is recomputed);
- ``checkpoint, dots_saveable`` (the products are kept, the elementwise ops recomputed);
- ``checkpoint, everything_saveable`` (nothing is recomputed: checkpoint's own cost).

Time: one process, one thread, bench_core's interleaved Timer (process clock), the median of
per-pair ratios to ``no checkpoint``. Peak memory: each system in fresh subprocesses (interleaved)
with ``MALLOC_MMAP_THRESHOLD_=65536`` (so that freed blocks leave the resident set), the growth of
the resident set's high-water mark (``VmHWM``, reset with ``/proc/self/clear_refs`` after setup
and a warm-up call) during one call.

    MALLOC_MMAP_THRESHOLD_=1000000000000 MALLOC_TRIM_THRESHOLD_=1000000000000 \\
        .venv/bin/python benchmarks/bench_checkpoint.py [--reps N] [--mem-reps N]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_core as bc

import functorch_utils as fu

SYSTEMS = ("no checkpoint", "checkpoint", "checkpoint, dots_saveable", "checkpoint, everything")
POLICIES: dict[str, Any] = {
    "checkpoint": None,
    "checkpoint, dots_saveable": fu.checkpoint_policies.dots_saveable,
    "checkpoint, everything": fu.checkpoint_policies.everything_saveable,
}
DEPTH, WIDTH, HIDDEN, BATCH = 8, 256, 1024, 2048


def setup() -> tuple[list[tuple[torch.Tensor, torch.Tensor]], torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    params = [
        (
            torch.randn(WIDTH, HIDDEN, generator=g) / WIDTH**0.5,
            torch.randn(HIDDEN, WIDTH, generator=g) / HIDDEN**0.5,
        )
        for _ in range(DEPTH)
    ]
    return params, torch.randn(BATCH, WIDTH, generator=g)


def block(w: tuple[torch.Tensor, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return x + torch.nn.functional.gelu(x @ w[0]) @ w[1]


def system(name: str) -> Callable[..., Any]:
    step = block if name == "no checkpoint" else fu.checkpoint(block, policy=POLICIES[name])

    def loss(params: list, x: torch.Tensor) -> torch.Tensor:
        for w in params:
            x = step(w, x)
        return (x * x).mean()

    return fu.value_and_grad(loss)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(field)


def mem_child(name: str) -> None:
    torch.set_num_threads(1)
    params, x = setup()
    fn = system(name)
    fn(params, x)  # warm-up: allocator caches and lazy init outside the measurement
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")
    base = _status_kb("VmRSS")
    fn(params, x)
    print(json.dumps({"growth": (_status_kb("VmHWM") - base) * 1024}))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=21)
    ap.add_argument("--mem-reps", type=int, default=3)
    ap.add_argument("--mem-child", default=None)
    args = ap.parse_args()
    if args.mem_child:
        mem_child(args.mem_child)
        return 0
    torch.set_num_threads(1)
    params, x = setup()
    systems = [(n, system(n), (params, x)) for n in SYSTEMS]
    bc.check_same("checkpoint", {n: fn(*a) for n, fn, a in systems}, rtol=1e-5, atol=1e-6)
    print(f"torch {torch.__version__}, one thread; {DEPTH} blocks {WIDTH}-{HIDDEN}, batch {BATCH}")
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        print(f"{var}={os.environ.get(var, '(unset)')}")
    samples = bc.Timer("cpu", args.reps, 0.2, 1.0, "process").run(systems)
    mem: dict[str, list[float]] = {n: [] for n in SYSTEMS}
    for r in range(args.mem_reps):
        for name in SYSTEMS[r % 4 :] + SYSTEMS[: r % 4]:
            cmd = [sys.executable, os.path.abspath(__file__), "--mem-child", name]
            # a fixed 64 KiB mmap threshold (glibc's own rises as blocks are freed): every
            # tensor block is mmapped and returned when freed, so the resident set follows the
            # live tensors
            env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
            env["MALLOC_MMAP_THRESHOLD_"] = "65536"
            out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=env).stdout
            mem[name].append(json.loads(out.strip().splitlines()[-1])["growth"])
    base = samples["no checkpoint"]
    print(f"\n{'system':34s} {'time':>9s}  {'ratio [IQR]':>18s}  {'peak growth':>12s}")
    for name in SYSTEMS:
        r = sorted(a / b for a, b in zip(samples[name], base))
        q1, q3 = r[len(r) // 4], r[(3 * len(r)) // 4]
        t = statistics.median(samples[name]) * 1e3
        m = statistics.median(mem[name]) / 2**20
        ratio = f"{statistics.median(r):.2f} [{q1:.2f}-{q3:.2f}]"
        print(f"{name:34s} {t:7.1f} ms  {ratio:>18s}  {m:9.1f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
