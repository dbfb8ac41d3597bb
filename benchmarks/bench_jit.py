#!/usr/bin/env python
"""jit benchmark: ``functorch_utils.jit`` against eager torch.func, raw torch.compile and jax.jit.

Run from the repository root::

    MALLOC_MMAP_THRESHOLD_=1000000000000 MALLOC_TRIM_THRESHOLD_=1000000000000 MALLOC_ARENA_MAX=1 \\
        python benchmarks/bench_jit.py [--quick] [--only W1,W2,W3,W4,counts,compile]
        [--clock wall|process] [--reps N] [--sample-ms MS] [--no-jax]

Workloads (CPU, float32, one torch thread; JAX's XLA CPU client is also limited to one thread):

- W1 per-sample gradients of an MLP 784-128-128-10 cross-entropy, B=64 and B=256:
  ``vmap(grad(loss), in_axes=(None, 0, 0))``.
- W2 batch Jacobians of a tanh MLP 16-32-16, B=1024: ``vmap(jacrev(f))``.
- W3 Hessian of ``logsumexp(A @ x)``, x of 200 elements: ``hessian(f)``.
- W4 Hessian-vector product of an MLP 512-1024-512-10 cross-entropy over its 1.05M parameters,
  B=64: ``fu.hvp`` (double backward), torch.func / JAX ``jvp(grad(loss))``.

Systems per workload: ``fu.jit`` of the functorch_utils transform, the eager torch.func version,
``torch.compile(fullgraph=True)`` of the torch.func version, and ``jax.jit`` of the JAX version
(skipped when jax is not importable). Every system's result is checked against the others
(``torch.testing.assert_close``) before timing; the dynamo caches are reset before each workload so
no compiled graph carries over from an earlier workload.

malloc: as in bench_core.py, both thresholds keep freed buffers in the heap (no page faults per
call). They act on glibc's main arena only: JAX runs its computations on a thread of its own, whose
arena maps and unmaps large buffers on every call whatever the thresholds (measured: 2500 minor
faults per call at B=64, 25000 at B=256, 3-7x slower), so ``MALLOC_ARENA_MAX=1`` puts every thread
on the main arena; the script prints all three.

Timing: bench_core's Timer: all systems in one process, interleaved pair by pair (round robin,
the order rotated each repetition), a sample is a calibrated loop with the GC off; reported are the
median per-call time and the median over repetitions of (system / jax.jit in the same repetition).
Targets: fu.jit <= 1.0x jax.jit on W1 and W2, <= 1.5x on W3 and W4.

``counts``: ``_cache_size()`` of a fresh ``fu.jit`` of W1 after calls with 5 batch sizes (target
<= 2 compiles), each result checked against eager torch.func; raw torch.compile's graph count for
the same calls beside it. Twice: with W1's ``F.cross_entropy`` loss, and with the same loss
written with a one-hot mask (torch's batching rule for gather, which nll_loss uses, fixes the
batch size under torch.compile, so the first one recompiles for every new size).

``compile``: the first call's wall time in fresh subprocesses: a cold one (empty
``TORCHINDUCTOR_CACHE_DIR`` in a temporary directory) and a warm one (the same directory, now
holding the first process's FX graph / AOTAutograd cache), target warm <= 30% of cold, beside the
first ``jax.jit`` call (trace + XLA compile) in a fresh process.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# JAX's CPU client: one thread, as torch (set before jax is imported anywhere in this process).
XLA_ONE_THREAD = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") + " " + XLA_ONE_THREAD).strip()

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
import torch._dynamo  # noqa: E402
import torch.func  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from bench_core import Row, Timer, check_same, print_table, summarize  # noqa: E402

import functorch_utils as fu  # noqa: E402

WORKLOADS = ("W1", "W2", "W3", "W4", "counts", "compile")
TIMED = ("W1", "W2", "W3", "W4")
TARGETS = {"W1": 1.0, "W2": 1.0, "W3": 1.5, "W4": 1.5}
COUNT_BATCHES = (64, 256, 32, 100, 128)
FU = "fu.jit"
EAGER = "torch.func (eager)"
RAW = "torch.compile(torch.func)"
JAX = "jax.jit"


def import_jax() -> Any:
    try:
        import jax
        import jax.numpy
    except Exception:  # not installed, or broken: the JAX rows are optional
        return None
    return jax


# ------------------------------------------------------------------------------------------------
# Models (torch and JAX versions compute the same function on the same numbers)


def init_mlp(sizes: Sequence[int], seed: int, bias: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    params = {}
    for i, (n_in, n_out) in enumerate(itertools.pairwise(sizes)):
        params[f"w{i}"] = torch.randn(n_out, n_in, generator=g) / n_in**0.5
        if bias:
            params[f"b{i}"] = torch.randn(n_out, generator=g) * 0.1
    return params


def mlp(params: dict[str, torch.Tensor], x: torch.Tensor, act: Callable) -> torch.Tensor:
    n = sum(k.startswith("w") for k in params)
    for i in range(n):
        x = F.linear(x, params[f"w{i}"], params.get(f"b{i}"))
        if i < n - 1:
            x = act(x)
    return x


def jax_mlp(jnp: Any, params: dict[str, Any], x: Any, act: Callable) -> Any:
    n = sum(k.startswith("w") for k in params)
    for i in range(n):
        x = x @ params[f"w{i}"].T
        if f"b{i}" in params:
            x = x + params[f"b{i}"]
        if i < n - 1:
            x = act(x)
    return x


def to_jax(jax: Any, tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda t: jax.device_put(t.numpy()), tree)


def to_torch(jax: Any, tree: Any) -> Any:
    import numpy as np

    return jax.tree_util.tree_map(lambda a: torch.from_numpy(np.array(a)), tree)


@dataclass
class Workload:
    key: str
    label: str
    fu_fn: Callable  # the functorch_utils transform (to be jitted)
    torch_fn: Callable  # the torch.func version (eager, and raw torch.compile)
    args: tuple
    jax_fn: Callable | None = None  # the JAX version (to be jitted)
    jax_args: tuple = ()
    tol: dict[str, float] = field(default_factory=lambda: {"rtol": 1e-4, "atol": 1e-5})


def mlp_loss(params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of one sample (``F.cross_entropy``, what bench_core.py uses)."""
    return F.cross_entropy(mlp(params, x, torch.relu), y)


def mlp_loss_mask(
    params: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor
) -> torch.Tensor:
    """The same value, the label's log-probability picked by a one-hot mask (no gather/nll_loss:
    torch's gather batching rule specializes the batch size under torch.compile)."""
    logp = torch.log_softmax(mlp(params, x, torch.relu), -1)
    return -(logp * (torch.arange(logp.shape[-1]) == y)).sum(-1)


W1_LOSSES = {"cross_entropy": mlp_loss, "one-hot mask": mlp_loss_mask}


def w1(batch: int, jax: Any, loss: str = "cross_entropy") -> Workload:
    sizes = (784, 128, 128, 10)
    params = init_mlp(sizes, seed=0)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(batch, sizes[0], generator=g)
    y = torch.randint(0, sizes[-1], (batch,), generator=g)
    fn = W1_LOSSES[loss]
    wl = Workload(
        "W1",
        f"W1 per-sample grads MLP 784-128-128-10 B={batch}",
        fu.vmap(fu.grad(fn), in_axes=(None, 0, 0)),
        torch.func.vmap(torch.func.grad(fn), in_dims=(None, 0, 0)),
        (params, x, y),
    )
    if jax is not None:
        jnp = jax.numpy

        def jloss(p: Any, x: Any, y: Any) -> Any:
            return -jax.nn.log_softmax(jax_mlp(jnp, p, x, jax.nn.relu))[y]

        wl.jax_fn = jax.vmap(jax.grad(jloss), in_axes=(None, 0, 0))
        wl.jax_args = to_jax(jax, (params, x, y))
    return wl


def w2(jax: Any, batch: int = 1024) -> Workload:
    sizes = (16, 32, 16)
    params = init_mlp(sizes, seed=2)

    def f(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return mlp(p, x, torch.tanh)

    g = torch.Generator().manual_seed(3)
    xs = torch.randn(batch, sizes[0], generator=g)
    wl = Workload(
        "W2",
        f"W2 vmap(jacrev) tanh MLP 16-32-16 B={batch}",
        fu.vmap(fu.jacrev(f, argnums=1), in_axes=(None, 0)),
        torch.func.vmap(torch.func.jacrev(f, argnums=1), in_dims=(None, 0)),
        (params, xs),
    )
    if jax is not None:
        jnp = jax.numpy

        def jf(p: Any, x: Any) -> Any:
            return jax_mlp(jnp, p, x, jnp.tanh)

        wl.jax_fn = jax.vmap(jax.jacrev(jf, argnums=1), in_axes=(None, 0))
        wl.jax_args = to_jax(jax, (params, xs))
    return wl


def w3(jax: Any, n: int = 200) -> Workload:
    g = torch.Generator().manual_seed(4)
    a = torch.randn(n, n, generator=g) / n**0.5
    x = torch.randn(n, generator=g)

    def f(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(a @ x, 0)

    wl = Workload(
        "W3",
        f"W3 hessian logsumexp(A x) n={n}",
        fu.hessian(f, argnums=1),
        torch.func.hessian(f, argnums=1),
        (a, x),
    )
    if jax is not None:

        def jf(a: Any, x: Any) -> Any:
            return jax.nn.logsumexp(a @ x, 0)

        wl.jax_fn = jax.hessian(jf, argnums=1)
        wl.jax_args = to_jax(jax, (a, x))
    return wl


def w4(jax: Any, batch: int = 64) -> Workload:
    sizes = (512, 1024, 512, 10)
    params = init_mlp(sizes, seed=5, bias=False)
    g = torch.Generator().manual_seed(6)
    v = {k: torch.randn(p.shape, generator=g) for k, p in params.items()}
    x = torch.randn(batch, sizes[0], generator=g)
    y = torch.randint(0, sizes[-1], (batch,), generator=g)

    def loss(p: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(mlp(p, x, torch.tanh), y)

    def fu_hvp(p: Any, v: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
        return fu.hvp(lambda q: loss(q, x, y), (p,), (v,))

    def tf_hvp(p: Any, v: Any, x: torch.Tensor, y: torch.Tensor) -> Any:
        def loss_p(q: Any) -> torch.Tensor:
            return loss(q, x, y)

        return torch.func.jvp(torch.func.grad(loss_p), (p,), (v,))

    nparams = sum(p.numel() for p in params.values())
    wl = Workload(
        "W4",
        f"W4 hvp MLP 512-1024-512-10 ({nparams / 1e6:.2f}M params) B={batch}",
        fu_hvp,
        tf_hvp,
        (params, v, x, y),
        tol={"rtol": 1e-3, "atol": 1e-5},
    )
    if jax is not None:
        jnp = jax.numpy

        def jloss(p: Any, x: Any, y: Any) -> Any:
            logits = jax_mlp(jnp, p, x, jnp.tanh)
            return -jnp.take_along_axis(jax.nn.log_softmax(logits), y[:, None], 1).mean()

        def j_hvp(p: Any, v: Any, x: Any, y: Any) -> Any:
            return jax.jvp(jax.grad(lambda q: jloss(q, x, y)), (p,), (v,))

        wl.jax_fn = j_hvp
        wl.jax_args = to_jax(jax, (params, v, x, y))
    return wl


def build(key: str, jax: Any, batch: int | None = None) -> Workload:
    if key == "W1":
        return w1(batch or 64, jax)
    if key == "W2":
        return w2(jax)
    if key == "W3":
        return w3(jax)
    if key == "W4":
        return w4(jax)
    raise ValueError(key)


def fresh(fn: Callable) -> Callable:
    """A plain function calling ``fn``, with a code object of its own (its own dynamo cache)."""

    def call(*args: Any) -> Any:
        return fn(*args)

    call.__code__ = call.__code__.replace(co_name=f"raw_{id(fn)}")
    return call


def jax_system(jax: Any, jitted: Callable) -> Callable:
    def run(*args: Any) -> Any:
        return jax.block_until_ready(jitted(*args))

    return run


# ------------------------------------------------------------------------------------------------
# Steady state


def bench_workload(timer: Timer, wl: Workload, jax: Any) -> list[Row]:
    torch._dynamo.reset()  # nothing compiled for an earlier workload is reused
    systems: list[tuple[str, Callable, tuple]] = [
        (FU, fu.jit(wl.fu_fn), wl.args),
        (EAGER, wl.torch_fn, wl.args),
        (RAW, torch.compile(fresh(wl.torch_fn), fullgraph=True), wl.args),
    ]
    if jax is not None and wl.jax_fn is not None:
        systems.append((JAX, jax_system(jax, jax.jit(wl.jax_fn)), wl.jax_args))
    results = {}
    first = {}
    for name, fn, args in systems:  # compiles; the first call's time includes it
        t0 = time.perf_counter()
        out = fn(*args)
        first[name] = time.perf_counter() - t0
        results[name] = to_torch(jax, out) if name == JAX else out
    check_same(wl.label, results, **wl.tol)
    print(
        f"{wl.label}: results agree ({', '.join(results)}); first call (this process, "
        "on-disk caches as found) " + ", ".join(f"{n} {t:.1f} s" for n, t in first.items()),
        flush=True,
    )
    samples = timer.run(systems)
    if JAX in samples:
        baseline, targets = JAX, {FU: TARGETS[wl.key]}
    else:
        baseline, targets = EAGER, {}
    return summarize(wl.label, samples, baseline, targets, faults=timer.faults)


# ------------------------------------------------------------------------------------------------
# Compile counts over batch sizes


def count_graphs(batches: Sequence[int], loss: str) -> int:
    """Compiles of a fresh fu.jit (and a fresh raw torch.compile) over ``batches``, in order."""
    torch._dynamo.reset()
    print(f"\ncompile counts, W1 per-sample grads, loss {loss}, batch sizes {list(batches)}")
    from torch._inductor.compile_fx import compile_fx

    raw_graphs = [0]

    def counting_inductor(gm: Any, example_inputs: Any) -> Any:
        raw_graphs[0] += 1
        return compile_fx(gm, example_inputs)

    first = w1(batches[0], None, loss)
    f = fu.jit(first.fu_fn)
    raw_fn = torch.compile(fresh(first.torch_fn), fullgraph=True, backend=counting_inductor)
    for b in batches:
        wl = w1(b, None, loss)
        ref = wl.torch_fn(*wl.args)
        t0 = time.perf_counter()
        out = f(*wl.args)
        t_fu = time.perf_counter() - t0
        t0 = time.perf_counter()
        out_raw = raw_fn(*wl.args)
        t_raw = time.perf_counter() - t0
        check_same(f"counts B={b}", {EAGER: ref, FU: out, RAW: out_raw}, **wl.tol)
        print(
            f"  B={b:4d}: fu.jit _cache_size()={f._cache_size()} (call {t_fu:.1f} s), "
            f"raw torch.compile graphs={raw_graphs[0]} (call {t_raw:.1f} s); values agree",
            flush=True,
        )
    n = f._cache_size()
    print(
        f"  fu.jit compiles for {len(batches)} batch sizes: {n}, target <= 2: "
        f"{'PASS' if n <= 2 else 'MISS'}; raw torch.compile: {raw_graphs[0]}",
        flush=True,
    )
    return n


# ------------------------------------------------------------------------------------------------
# Cold and warm compile in fresh processes


def compile_child(key: str, system: str) -> None:
    """In a fresh process: time the first (compiling) call and the second; print JSON."""
    t0 = time.perf_counter()
    jax = import_jax() if system == "jax" else None
    if system == "jax" and jax is None:
        print(json.dumps({"error": "jax not importable"}))
        return
    t_import = time.perf_counter() - t0
    wl = build(key, jax)
    jitted = fu.jit(wl.fu_fn)
    if jax is not None:
        fn, args = jax_system(jax, jax.jit(wl.jax_fn)), wl.jax_args
    else:
        fn, args = jitted, wl.args
    t0 = time.perf_counter()
    fn(*args)
    first = time.perf_counter() - t0
    phases = compile_phases() if system == "fu" else {}  # of the first call alone
    t0 = time.perf_counter()
    fn(*args)
    second = time.perf_counter() - t0
    out: dict[str, Any] = {"first": first, "second": second, "import": t_import}
    if system == "fu":
        out["compiles"] = jitted._cache_size()  # after both calls
        out["cache_dir"] = fu.cache_dir()
        out["phases"] = phases
    print(json.dumps(out))


def compile_phases(top: int = 8) -> dict[str, float]:
    """torch's own timing of its compile phases (seconds; the phases nest), the longest first."""
    try:
        names, values = torch._dynamo.utils.compile_times("csv", aggregate=True)
        phases = {str(n): float(str(v)) for n, v in zip(names, values)}
    except Exception:  # private API: the breakdown is optional
        return {}
    return dict(sorted(phases.items(), key=lambda kv: -kv[1])[:top])


def run_child(key: str, system: str, env: dict[str, str], threads: int) -> dict[str, Any]:
    cmd = [sys.executable, os.path.abspath(__file__), "--compile-child", key, "--system", system]
    cmd += ["--threads", str(threads)]
    res = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=1800)
    if res.returncode != 0:
        raise RuntimeError(f"compile child {key}/{system} failed:\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def bench_compile(keys: Sequence[str], threads: int, with_jax: bool) -> None:
    print(
        "\ncold vs warm compile: first call's wall time in fresh processes "
        "(cold: empty TORCHINDUCTOR_CACHE_DIR; warm: a second process on the same directory)"
    )
    head = (
        "workload",
        "fu.jit cold",
        "fu.jit warm",
        "warm/cold",
        "target <=0.30",
        "JAX first call",
        "cold/JAX",
        "warm/JAX",
        "graphs after 2 calls",
    )
    lines = []
    for key in keys:
        with tempfile.TemporaryDirectory(prefix="bench_jit_cache_") as tmp:
            env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=tmp)
            env.pop("FUNCTORCH_UTILS_CACHE_DIR", None)
            cold = run_child(key, "fu", env, threads)
            warm = run_child(key, "fu", env, threads)
        jx: dict[str, Any] = (
            run_child(key, "jax", dict(os.environ), threads) if with_jax else {"error": "off"}
        )
        ratio = warm["first"] / cold["first"]
        jfirst = jx.get("first")
        lines.append(
            (
                key,
                f"{cold['first']:.1f} s",
                f"{warm['first']:.1f} s",
                f"{ratio:.2f}",
                "PASS" if ratio <= 0.30 else "MISS",
                f"{jfirst:.2f} s" if jfirst else "n/a",
                f"{cold['first'] / jfirst:.0f}x" if jfirst else "",
                f"{warm['first'] / jfirst:.0f}x" if jfirst else "",
                f"cold {cold['compiles']}, warm {warm['compiles']}",
            )
        )
        print(
            f"  {key}: fu.jit cold {cold['first']:.2f} s (then {cold['second'] * 1e3:.2f} ms), "
            f"warm {warm['first']:.2f} s (then {warm['second'] * 1e3:.2f} ms); "
            + (
                f"jax.jit {jfirst:.2f} s (then {jx['second'] * 1e3:.2f} ms)"
                if jfirst
                else "jax.jit not measured"
            ),
            flush=True,
        )
        for which, res in (("cold", cold), ("warm", warm)):
            phases = ", ".join(f"{k} {v:.2f}" for k, v in res.get("phases", {}).items())
            print(f"    torch's phase times, {which}, first call (s, nested): {phases}")
    widths = [max(len(str(x[i])) for x in [head, *lines]) for i in range(len(head))]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-+-".join("-" * w for w in widths))
    for line in lines:
        print(" | ".join(str(c).ljust(w) for c, w in zip(line, widths)))


# ------------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="few repetitions, W1 at B=64 only")
    ap.add_argument(
        "--only", default=",".join(WORKLOADS), help=f"comma-separated subset of {WORKLOADS}"
    )
    ap.add_argument("--reps", type=int, default=None, help="repetitions (default 41; quick 5)")
    ap.add_argument("--sample-ms", type=float, default=None, help="default 20; quick 5")
    ap.add_argument(
        "--clock",
        choices=("wall", "process"),
        default="wall",
        help="wall: perf_counter; process: this process's CPU time (robust to other load)",
    )
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1)")
    ap.add_argument("--no-jax", action="store_true", help="leave JAX out even if importable")
    ap.add_argument("--compile-child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--system", default="fu", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.reps = args.reps or (5 if args.quick else 41)
    args.sample_ms = args.sample_ms or (5.0 if args.quick else 20.0)
    args.only = [w.strip() for w in args.only.split(",") if w.strip()]
    for w in args.only:
        if w not in WORKLOADS:
            ap.error(f"unknown workload {w!r}; choose from {','.join(WORKLOADS)}")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.compile_child:
        compile_child(args.compile_child, args.system)
        return 0
    jax = None if args.no_jax else import_jax()
    print(
        f"torch {torch.__version__}, functorch_utils {fu.__version__}, "
        f"jax {jax.__version__ if jax else 'not used'}, python {platform.python_version()}"
    )
    print(
        f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, XLA_FLAGS={os.environ['XLA_FLAGS']}"
    )
    for var in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_ARENA_MAX"):
        print(f"{var}={os.environ.get(var, '<unset>')}")
    print(f"load average {' '.join(f'{x:.1f}' for x in os.getloadavg())}")
    clock = "time.perf_counter" if args.clock == "wall" else "time.process_time, all threads"
    print(f"clock {args.clock} ({clock})")
    print(
        f"reps {args.reps}, sample ~{args.sample_ms:g} ms, interleaved round robin; ratio = median "
        f"over reps of (system / {'jax.jit' if jax else 'torch.func eager'} in the same rep)\n",
        flush=True,
    )
    timer = Timer(
        "cpu", args.reps, args.sample_ms / 1e3, warmup_s=0.05 if args.quick else 0.3,
        clock=args.clock,
    )  # fmt: skip
    t_start = time.perf_counter()
    rows: list[Row] = []
    for key in TIMED:
        if key not in args.only:
            continue
        batches = (64,) if key != "W1" or args.quick else (64, 256)
        for b in batches:
            rows += bench_workload(timer, build(key, jax, b), jax)
    if rows:
        print()
        ok = print_table(rows)
        if jax is not None:
            print(f"\nsteady-state targets: {'all PASS' if ok else 'some MISS'}")
    if "counts" in args.only:
        for loss in W1_LOSSES:
            count_graphs(COUNT_BATCHES[:3] if args.quick else COUNT_BATCHES, loss)
    if "compile" in args.only:
        keys = ["W1"] if args.quick else [k for k in TIMED if k in args.only] or ["W1"]
        bench_compile(keys, args.threads, jax is not None)
    print(f"\ntotal {time.perf_counter() - t_start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
