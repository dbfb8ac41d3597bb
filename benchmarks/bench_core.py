#!/usr/bin/env python
"""Core benchmark: functorch_utils transforms against raw torch.func and hand-written autograd.

Run from the repository root::

    MALLOC_MMAP_THRESHOLD_=1000000000000 python benchmarks/bench_core.py [--device cpu|cuda]
        [--quick] [--threads N] [--only tiny,mlp,persample,jac,mem]

Method (see benchmarks/README.md):
- All systems of a workload run in ONE process, interleaved: every repetition times each system
  once (round robin, the order rotated each repetition), so drift of a noisy machine hits all
  systems alike. A sample is a loop of ``inner`` calls (calibrated to ``--sample-ms``) with the
  garbage collector off; on cuda the device is synchronized before and after each sample.
- Reported: the median per-call time per system, and the ratio to the workload's baseline as the
  median over repetitions of (system time / baseline time in the same repetition), with its
  interquartile range.
- Every workload first checks that all systems return the same values (torch.testing.assert_close)
  and warms each system up.
- Peak memory: on cuda, ``max_memory_allocated`` growth over the memory allocated after inputs are
  set up. On CPU each measurement runs in a fresh subprocess and reads the peak resident set size
  (``VmHWM``, reset with ``/proc/self/clear_refs`` after inputs are set up and each system has run
  once on a small batch), i.e. the numbers are RSS-based. ``ru_maxrss`` is not used for the child:
  after a vfork-based spawn it also counts the parent's high-water mark.
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.func
import torch.nn.functional as F

import functorch_utils as fu

WORKLOADS = ("tiny", "mlp", "persample", "jac", "mem")
MEM_SYSTEMS = ("functorch_utils.grad", "loss.backward()", "torch.func.grad")


# ------------------------------------------------------------------------------------------------
# Models


def init_mlp(sizes: Sequence[int], device: str, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        params[f"w{i}"] = (torch.randn(n_out, n_in, generator=g) / n_in**0.5).to(device)
        params[f"b{i}"] = (torch.randn(n_out, generator=g) * 0.1).to(device)
    return params


def mlp(params: dict[str, torch.Tensor], x: torch.Tensor, act: Callable = torch.relu) -> Any:
    n = len(params) // 2
    for i in range(n):
        x = F.linear(x, params[f"w{i}"], params[f"b{i}"])
        if i < n - 1:
            x = act(x)
    return x


def mlp_loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of a ReLU MLP; works for a batch (x: [B, d], y: [B]) or one sample."""
    return F.cross_entropy(mlp(params, x), y)


def make_data(sizes: Sequence[int], batch: int, device: str, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, sizes[0], generator=g).to(device)
    y = torch.randint(0, sizes[-1], (batch,), generator=g).to(device)
    return x, y


def backward_step(params_rg: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
    """What an nn.Module training step does: clear .grad, forward, loss.backward()."""
    for p in params_rg.values():
        p.grad = None
    loss = mlp_loss(params_rg, x, y)
    loss.backward()
    return loss.detach(), {k: p.grad for k, p in params_rg.items()}


def autograd_grad_step(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor):
    """Hand-written torch.autograd.grad on fresh leaves."""
    leaves = {k: p.detach().requires_grad_() for k, p in params.items()}
    with torch.enable_grad():
        loss = mlp_loss(leaves, x, y)
    grads = torch.autograd.grad(loss, tuple(leaves.values()))
    return loss.detach(), dict(zip(leaves.keys(), grads))


def with_requires_grad(params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone().requires_grad_() for k, p in params.items()}


# ------------------------------------------------------------------------------------------------
# Timing


class Timer:
    def __init__(
        self, device: str, reps: int, sample_s: float, warmup_s: float, clock: str = "wall"
    ) -> None:
        # "process": CPU time of this process (all its threads), which leaves out time spent
        # descheduled by other load on a shared machine; CPU only.
        self.clock = time.perf_counter if clock == "wall" else time.process_time
        self.sync: Callable[[], None] = (
            torch.cuda.synchronize if device == "cuda" else (lambda: None)
        )
        self.reps = reps
        self.sample_s = sample_s
        self.warmup_s = warmup_s

    def _sample(self, fn: Callable, args: tuple, inner: int) -> float:
        self.sync()
        t0 = self.clock()
        for _ in range(inner):
            fn(*args)
        self.sync()
        return (self.clock() - t0) / inner

    def _faulted_sample(self, fn: Callable, args: tuple, inner: int) -> tuple[float, float]:
        f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        t = self._sample(fn, args, inner)
        return t, (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0) / inner

    def run(self, systems: Sequence[tuple[str, Callable, tuple]]) -> dict[str, list[float]]:
        """Per-call times per system; minor page faults per call go to ``self.faults``."""
        inner: dict[str, int] = {}
        gc.collect()
        for name, fn, args in systems:  # warm up, then calibrate the loop length
            deadline = time.perf_counter() + self.warmup_s
            n = 0
            while n < 3 or time.perf_counter() < deadline:
                fn(*args)
                n += 1
            one = min(self._sample(fn, args, 1) for _ in range(3))
            inner[name] = max(1, round(self.sample_s / max(one, 1e-9)))
        times: dict[str, list[float]] = {name: [] for name, _, _ in systems}
        self.faults: dict[str, list[float]] = {name: [] for name, _, _ in systems}
        gc_was_enabled = gc.isenabled()
        gc.disable()
        try:
            for r in range(self.reps):
                k = r % len(systems)
                for name, fn, args in list(systems[k:]) + list(systems[:k]):
                    t, nf = self._faulted_sample(fn, args, inner[name])
                    times[name].append(t)
                    self.faults[name].append(nf)
                if r % 8 == 7:
                    gc.enable()
                    gc.collect()
                    gc.disable()
        finally:
            if gc_was_enabled:
                gc.enable()
        return times


class Row:
    def __init__(
        self,
        workload: str,
        system: str,
        value: float,
        unit: str,
        ratio: float,
        q1: float,
        q3: float,
        target: float | None,
        baseline: bool,
        faults: float | None = None,
    ) -> None:
        self.workload, self.system, self.value, self.unit = workload, system, value, unit
        self.faults = faults
        self.ratio, self.q1, self.q3, self.target, self.baseline = ratio, q1, q3, target, baseline


def quartiles(xs: Sequence[float]) -> tuple[float, float, float]:
    if len(xs) < 4:
        m = statistics.median(xs)
        return min(xs), m, max(xs)
    q = statistics.quantiles(xs, n=4, method="inclusive")
    return q[0], q[1], q[2]


def summarize(
    workload: str,
    samples: dict[str, list[float]],
    baseline: str,
    targets: dict[str, float],
    unit: str = "time",
    faults: dict[str, list[float]] | None = None,
) -> list[Row]:
    rows = []
    base = samples[baseline]
    for name, xs in samples.items():
        ratios = [a / b for a, b in zip(xs, base)]
        q1, med_ratio, q3 = quartiles(ratios)
        rows.append(
            Row(
                workload,
                name,
                statistics.median(xs),
                unit,
                med_ratio,
                q1,
                q3,
                targets.get(name),
                name == baseline,
                statistics.median(faults[name]) if faults else None,
            )
        )
    return rows


def fmt_value(v: float, unit: str) -> str:
    if unit == "time":
        if v < 1e-3:
            return f"{v * 1e6:8.1f} us"
        return f"{v * 1e3:8.2f} ms"
    return f"{v / 2**20:8.1f} MiB"


def print_table(rows: Sequence[Row]) -> bool:
    head = ("workload", "system", "median", "ratio [IQR]", "target", "", "minflt/call")
    lines = []
    all_pass = True
    for r in rows:
        ratio = "1.00 (baseline)" if r.baseline else f"{r.ratio:.2f} [{r.q1:.2f}-{r.q3:.2f}]"
        if r.target is None:
            tgt, verdict = "", ""
        else:
            ok = r.ratio <= r.target
            all_pass &= ok
            tgt, verdict = f"<= {r.target:.2f}x", "PASS" if ok else "MISS"
        nf = "" if r.faults is None else f"{r.faults:.0f}"
        lines.append((r.workload, r.system, fmt_value(r.value, r.unit), ratio, tgt, verdict, nf))
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    sep = "-+-".join("-" * w for w in widths)
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print(sep)
    last = None
    for line in lines:
        if last is not None and line[0] != last:
            print(sep)
        last = line[0]
        print(" | ".join(str(c).ljust(w) for c, w in zip(line, widths)))
    return all_pass


def check_same(label: str, results: dict[str, Any], **tol: Any) -> None:
    names = list(results)
    ref = results[names[0]]
    for name in names[1:]:
        try:
            torch.testing.assert_close(results[name], ref, **tol)
        except AssertionError as e:
            raise AssertionError(f"{label}: {name} disagrees with {names[0]}:\n{e}") from e


def vmap_rows() -> tuple[Any, str | None]:
    """Our vmap, for a third row under vmap, if this version exports one."""
    if hasattr(fu, "vmap"):
        return fu.vmap, "fu.vmap"
    return None, None


# ------------------------------------------------------------------------------------------------
# Workloads


def bench_tiny(timer: Timer, device: str) -> list[Row]:
    def f(x: torch.Tensor) -> torch.Tensor:
        return (x.sin() * x).sum()

    def manual(x: torch.Tensor) -> torch.Tensor:
        xx = x.detach().requires_grad_()
        with torch.enable_grad():
            y = f(xx)
        (g,) = torch.autograd.grad(y, xx)
        return g

    x = torch.tensor([0.3, -1.2, 2.0], device=device)
    systems = [
        ("torch.func.grad", torch.func.grad(f), (x,)),
        ("functorch_utils.grad", fu.grad(f), (x,)),
        ("hand-written autograd.grad", manual, (x,)),
    ]
    check_same("tiny", {n: fn(*a) for n, fn, a in systems})
    samples = timer.run(systems)
    return summarize(
        "1 tiny f, 3 elems",
        samples,
        "torch.func.grad",
        {"functorch_utils.grad": 0.4},
        faults=timer.faults,
    )


def bench_mlp(timer: Timer, device: str, sizes: Sequence[int], batch: int) -> list[Row]:
    params = init_mlp(sizes, device)
    params_rg = with_requires_grad(params)
    x, y = make_data(sizes, batch, device)
    vg_ours = fu.value_and_grad(mlp_loss)
    gv_func = torch.func.grad_and_value(mlp_loss)

    def func_vg(p, x, y):
        g, v = gv_func(p, x, y)
        return v, g

    systems = [
        ("loss.backward()", backward_step, (params_rg, x, y)),
        ("functorch_utils.value_and_grad", vg_ours, (params, x, y)),
        ("torch.func.grad_and_value", func_vg, (params, x, y)),
        ("hand-written autograd.grad", autograd_grad_step, (params, x, y)),
    ]
    check_same("mlp", {n: fn(*a) for n, fn, a in systems})
    samples = timer.run(systems)
    label = f"2 MLP {'-'.join(map(str, sizes))} B={batch}"
    return summarize(
        label,
        samples,
        "loss.backward()",
        {"functorch_utils.value_and_grad": 1.15},
        faults=timer.faults,
    )


def bench_persample(timer: Timer, device: str, sizes: Sequence[int], batch: int) -> list[Row]:
    params = init_mlp(sizes, device)
    x, y = make_data(sizes, batch, device)
    systems = [
        (
            "vmap(torch.func.grad)",
            torch.func.vmap(torch.func.grad(mlp_loss), in_dims=(None, 0, 0)),
            (params, x, y),
        ),
        (
            "vmap(functorch_utils.grad)",
            torch.func.vmap(fu.grad(mlp_loss), in_dims=(None, 0, 0)),
            (params, x, y),
        ),
    ]
    targets = {"vmap(functorch_utils.grad)": 1.03}
    our_vmap, vname = vmap_rows()
    if our_vmap is not None:
        name = f"{vname}(functorch_utils.grad)"
        systems.append((name, our_vmap(fu.grad(mlp_loss), in_axes=(None, 0, 0)), (params, x, y)))
        targets[name] = 1.03
    check_same("persample", {n: fn(*a) for n, fn, a in systems})
    samples = timer.run(systems)
    label = f"3 per-sample grads B={batch}"
    return summarize(label, samples, "vmap(torch.func.grad)", targets, faults=timer.faults)


def bench_jac(timer: Timer, device: str, batch: int) -> list[Row]:
    p = init_mlp((64, 128, 32), device, seed=2)

    def f(x: torch.Tensor) -> torch.Tensor:
        return mlp(p, x, act=torch.tanh)

    g = torch.Generator().manual_seed(3)
    x = torch.randn(64, generator=g).to(device)
    xs = torch.randn(batch, 64, generator=g).to(device)
    rows: list[Row] = []
    our_vmap, vname = vmap_rows()
    cases = [
        (
            "4a jacrev 64->32",
            [
                ("torch.func.jacrev", torch.func.jacrev(f), (x,)),
                ("functorch_utils.jacrev", fu.jacrev(f), (x,)),
            ],
        ),
        (
            "4b jacfwd 64->32",
            [
                ("torch.func.jacfwd", torch.func.jacfwd(f), (x,)),
                ("functorch_utils.jacfwd", fu.jacfwd(f), (x,)),
            ],
        ),
        (
            f"4c vmap(jacrev) B={batch}",
            [
                ("vmap(torch.func.jacrev)", torch.func.vmap(torch.func.jacrev(f)), (xs,)),
                ("vmap(functorch_utils.jacrev)", torch.func.vmap(fu.jacrev(f)), (xs,)),
            ]
            + (
                [(f"{vname}(functorch_utils.jacrev)", our_vmap(fu.jacrev(f)), (xs,))]
                if our_vmap is not None
                else []
            ),
        ),
    ]
    for label, systems in cases:
        check_same(label, {n: fn(*a) for n, fn, a in systems})
        samples = timer.run(systems)
        targets = {n: 1.03 for n, _, _ in systems[1:]}
        rows += summarize(label, samples, systems[0][0], targets, faults=timer.faults)
    return rows


# ------------------------------------------------------------------------------------------------
# Peak memory


def mem_system(name: str) -> Callable:
    if name == "functorch_utils.grad":
        return fu.grad(mlp_loss)
    if name == "torch.func.grad":
        return torch.func.grad(mlp_loss)
    if name == "loss.backward()":
        return lambda p, x, y: backward_step(p, x, y)[1]
    raise ValueError(name)


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def mem_child(name: str, device: str, sizes: Sequence[int], batch: int) -> None:
    """One measurement in a fresh process: prints a JSON line with the peak growth in bytes."""
    fn = mem_system(name)
    params = init_mlp(sizes, device)
    if name == "loss.backward()":
        params = with_requires_grad(params)
    # run the system once on a small batch so lazy one-time allocations are not counted
    xs, ys = make_data(sizes, 8, device, seed=5)
    fn(params, xs, ys)
    x, y = make_data(sizes, batch, device)
    del xs, ys
    if name == "loss.backward()":
        for p in params.values():
            p.grad = None
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        grads = fn(params, x, y)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated()
        method = "cuda max_memory_allocated"
    else:
        with open("/proc/self/clear_refs", "w") as fh:  # reset VmHWM to the current RSS
            fh.write("5")
        base = _status_kb("VmRSS") * 1024
        grads = fn(params, x, y)
        peak = _status_kb("VmHWM") * 1024
        method = "RSS (VmHWM)"
    del grads
    print(json.dumps({"name": name, "growth": peak - base, "method": method}))


def bench_mem(args: argparse.Namespace, sizes: Sequence[int], batch: int) -> list[Row]:
    samples: dict[str, list[float]] = {n: [] for n in MEM_SYSTEMS}
    method = ""
    for r in range(args.mem_reps):
        k = r % len(MEM_SYSTEMS)
        for name in MEM_SYSTEMS[k:] + MEM_SYSTEMS[:k]:
            cmd = [
                sys.executable,
                os.path.abspath(__file__),
                "--mem-child",
                name,
                "--device",
                args.device,
                "--mem-batch",
                str(batch),
                "--mem-width",
                str(args.mem_width),
            ]
            if args.threads:
                cmd += ["--threads", str(args.threads)]
            res = subprocess.run(cmd, capture_output=True, text=True, check=False)
            if res.returncode != 0:
                raise RuntimeError(f"memory child {name} failed:\n{res.stderr}")
            out = json.loads(res.stdout.strip().splitlines()[-1])
            samples[name].append(out["growth"])
            method = out["method"]
    label = f"5 peak mem MLP {'-'.join(map(str, sizes))} B={batch}"
    rows = summarize(label, samples, "loss.backward()", {"functorch_utils.grad": 1.2}, unit="bytes")
    print(
        f"peak memory: {method}, growth over a baseline taken after setup, "
        f"{args.mem_reps} fresh subprocess(es) per system, interleaved"
    )
    return rows


# ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--quick", action="store_true", help="few repetitions: checks the script")
    ap.add_argument(
        "--threads", type=int, default=None, help="torch.set_num_threads (default: leave as is)"
    )
    ap.add_argument(
        "--only",
        default=",".join(WORKLOADS),
        help=f"comma-separated subset of {','.join(WORKLOADS)}",
    )
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 41; quick 5)")
    ap.add_argument(
        "--sample-ms",
        type=float,
        default=None,
        help="target length of one timed sample (default 20; quick 5)",
    )
    ap.add_argument(
        "--mem-reps", type=int, default=None, help="subprocesses per system (default 3; quick 1)"
    )
    ap.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="wall: perf_counter (default); process: this process's CPU time, "
        "robust to other load on a shared CPU machine (cpu device only)",
    )
    ap.add_argument("--mem-batch", type=int, default=4096)
    ap.add_argument("--mem-width", type=int, default=1024)
    ap.add_argument("--mem-child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.reps is None:
        args.reps = 5 if args.quick else 41
    if args.sample_ms is None:
        args.sample_ms = 5.0 if args.quick else 20.0
    if args.mem_reps is None:
        args.mem_reps = 1 if args.quick else 3
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    for w in args.only:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}; choose from {','.join(WORKLOADS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.device == "cuda" and args.clock != "wall":
        print(
            "--clock process measures CPU time; use --clock wall with --device cuda",
            file=sys.stderr,
        )
        return 2
    if args.device == "cuda" and not torch.cuda.is_available():
        print("--device cuda: CUDA is not available", file=sys.stderr)
        return 2
    mem_sizes = (784, args.mem_width, args.mem_width, 10)
    if args.mem_child:
        mem_child(args.mem_child, args.device, mem_sizes, args.mem_batch)
        return 0

    print(
        f"torch {torch.__version__}, functorch_utils {fu.__version__}, "
        f"python {platform.python_version()}"
    )
    dev = args.device
    if dev == "cuda":
        dev += f" ({torch.cuda.get_device_name()})"
    print(f"device {dev}, torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}")
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"):
        print(f"{var}={os.environ.get(var, '<unset>')}")
    clock = "time.perf_counter" if args.clock == "wall" else "time.process_time, all threads"
    print(f"clock {args.clock} ({clock})")
    print(
        f"reps {args.reps}, sample ~{args.sample_ms:g} ms, interleaved round robin; "
        "ratio = median over reps of (system / baseline in the same rep)"
    )
    _, vname = vmap_rows()
    print(f"our vmap: {vname or 'not available'}")
    print(flush=True)

    timer = Timer(
        args.device,
        args.reps,
        args.sample_ms / 1e3,
        warmup_s=0.05 if args.quick else 0.3,
        clock=args.clock,
    )
    mlp_sizes = (784, 128, 128, 10)
    rows: list[Row] = []
    t0 = time.perf_counter()
    # memory first, while this process is small (each measurement is its own subprocess anyway)
    mem_rows = bench_mem(args, mem_sizes, args.mem_batch) if "mem" in args.only else []
    if "tiny" in args.only:
        rows += bench_tiny(timer, args.device)
    if "mlp" in args.only:
        rows += bench_mlp(timer, args.device, mlp_sizes, 64)
    if "persample" in args.only:
        rows += bench_persample(timer, args.device, mlp_sizes, 64)
    if "jac" in args.only:
        rows += bench_jac(timer, args.device, 32)
    rows += mem_rows
    print()
    ok = print_table(rows)
    print(
        f"\n{'all targets PASS' if ok else 'some targets MISS'} ({time.perf_counter() - t0:.0f} s)"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
