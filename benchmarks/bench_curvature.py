"""Curvature and memory: hessian, hvp and checkpoint against the raw torch.func recipes.

Run: ``python benchmarks/bench_curvature.py [--device cpu|cuda] [--quick]``

Systems are interleaved round robin in one process; medians and ratios to the baseline (the raw
torch.func recipe) are printed. Results are compared before timing.

1. Hessian of a logsumexp of a linear map (n=200 on CPU, 2000 on CUDA): ``functorch_utils.hessian``
   vs ``torch.func.hessian`` (forward-over-reverse) and ``torch.func.jacrev(jacrev)``.
   Target: <= 0.4x of torch.func.hessian.
2. Hessian-vector product over a ~1M-parameter MLP loss: ``functorch_utils.hvp`` vs
   ``torch.func.jvp(torch.func.grad(f))``. Target: <= 0.65x.
3. checkpoint: bytes saved for backward after the forward pass of a long chain (counted with
   ``saved_tensors_hooks``), and on CUDA the peak memory of its gradient, with and without
   ``functorch_utils.checkpoint`` on each block.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import time
from collections.abc import Callable

import torch

import functorch_utils as fu


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def bench(
    systems: dict[str, Callable[[], object]], reps: int, device: str
) -> dict[str, list[float]]:
    for fn in systems.values():  # warm up
        fn()
        fn()
    times: dict[str, list[float]] = {k: [] for k in systems}
    for _ in range(reps):
        for name, fn in systems.items():
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[name].append(time.perf_counter() - t)
    return times


def report(title: str, times: dict[str, list[float]], baseline: str, target: float | None) -> None:
    base = times[baseline]
    print(f"\n{title}")
    for name, ts in times.items():
        med = statistics.median(ts)
        ratio = statistics.median(t / b for t, b in zip(ts, base))
        mark = ""
        if target is not None and name.startswith("functorch_utils"):
            mark = f"target <= {target}x: {'PASS' if ratio <= target else 'MISS'}"
        print(f"  {name:38s} {med * 1e3:9.3f} ms   ratio {ratio:5.2f}   {mark}")


def hessian_case(device: str, reps: int, quick: bool) -> None:
    n = 2000 if device == "cuda" else 200
    if quick:
        n = 50
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=gen, dtype=torch.float64).to(device) / n**0.5
    x = torch.randn(n, generator=gen, dtype=torch.float64).to(device)

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(a @ x, 0)

    systems = {
        "torch.func.hessian (fwd-over-rev)": lambda: torch.func.hessian(f)(x),
        "functorch_utils.hessian": lambda: fu.hessian(f)(x),
        "torch.func.jacrev(jacrev)": lambda: torch.func.jacrev(torch.func.jacrev(f))(x),
    }
    torch.testing.assert_close(
        systems["functorch_utils.hessian"](), systems["torch.func.hessian (fwd-over-rev)"]()
    )
    report(
        f"1. hessian, logsumexp(A x), n={n}, float64",
        bench(systems, reps, device),
        "torch.func.hessian (fwd-over-rev)",
        0.4,
    )


def hvp_case(device: str, reps: int, quick: bool) -> None:
    sizes = [128, 256, 128, 10] if quick else [512, 1024, 512, 10]
    gen = torch.Generator().manual_seed(0)
    params = {
        f"w{i}": (torch.randn(b, a, generator=gen) / a**0.5).to(device)
        for i, (a, b) in enumerate(itertools.pairwise(sizes))
    }
    x = torch.randn(64, sizes[0], generator=gen).to(device)
    y = torch.randint(0, 10, (64,), generator=gen).to(device)
    v = {k: torch.randn(p.shape, generator=gen).to(device) for k, p in params.items()}

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        h = x
        for i in range(len(sizes) - 1):
            h = h @ p[f"w{i}"].T
            if i < len(sizes) - 2:
                h = torch.tanh(h)
        return torch.nn.functional.cross_entropy(h, y)

    systems = {
        "torch.func jvp(grad)": lambda: torch.func.jvp(torch.func.grad(loss), (params,), (v,))[1],
        "functorch_utils.hvp": lambda: fu.hvp(loss, (params,), (v,))[1],
    }
    ref, ours = systems["torch.func jvp(grad)"](), systems["functorch_utils.hvp"]()
    for k in ref:
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-4, atol=1e-5)
    nparams = sum(p.numel() for p in params.values())
    report(
        f"2. hvp, MLP {sizes} ({nparams} params), B=64",
        bench(systems, reps, device),
        "torch.func jvp(grad)",
        0.65,
    )


def checkpoint_case(device: str, quick: bool) -> None:
    # Activations dominate (batch x width >> width x width), so the weights' gradients, which
    # both variants allocate, do not hide what checkpointing saves.
    depth, width, batch = (8, 64, 256) if quick else (32, 256, 8192)
    gen = torch.Generator().manual_seed(0)
    ws = [(torch.randn(width, width, generator=gen) / width**0.5).to(device) for _ in range(depth)]
    x = torch.randn(batch, width, generator=gen).to(device)

    def block(h: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.tanh(h @ w) * torch.sigmoid(h)

    ckpt_block = fu.checkpoint(block)

    def chain(ws: list[torch.Tensor], use_ckpt: bool) -> torch.Tensor:
        h = x
        for w in ws:
            h = ckpt_block(h, w) if use_ckpt else block(h, w)
        return (h**2).mean()

    saved = {}
    for use in (False, True):
        total = [0]

        def pack(t: torch.Tensor, total: list[int] = total) -> torch.Tensor:
            total[0] += t.numel() * t.element_size()
            return t

        leaves = [w.detach().requires_grad_() for w in ws]
        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            chain(leaves, use)
        saved[use] = total[0]
    g_plain = fu.grad(lambda ws: chain(ws, False))(ws)
    g_ckpt = fu.grad(lambda ws: chain(ws, True))(ws)
    for a, b in zip(g_plain, g_ckpt):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)
    print(
        f"\n3. checkpoint, chain of {depth} blocks tanh(h @ W) * sigmoid(h), batch {batch}, width {width}"
    )
    print(
        f"  saved for backward after forward: plain {saved[False] / 2**20:8.1f} MiB, "
        f"checkpointed {saved[True] / 2**20:8.1f} MiB ({saved[True] / saved[False]:.2f}x)"
    )
    if device == "cuda":
        peaks = {}
        for use in (False, True):
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            fu.grad(lambda ws, use=use: chain(ws, use))(ws)
            torch.cuda.synchronize()
            peaks[use] = torch.cuda.max_memory_allocated() - base
        print(
            f"  peak memory of grad: plain {peaks[False] / 2**20:8.1f} MiB, "
            f"checkpointed {peaks[True] / 2**20:8.1f} MiB ({peaks[True] / peaks[False]:.2f}x)"
        )
    else:
        print("  (peak memory of the gradient is measured with --device cuda)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--reps", type=int, default=None)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--only", default="hessian,hvp,checkpoint", help="comma-separated cases")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    reps = args.reps or (3 if args.quick else 21)
    print(
        f"torch {torch.__version__}, device {args.device}"
        + (f" ({torch.cuda.get_device_name()})" if args.device == "cuda" else "")
        + f", threads {torch.get_num_threads()}, reps {reps}, interleaved"
    )
    only = set(args.only.split(","))
    if "hessian" in only:
        hessian_case(args.device, reps, args.quick)
    if "hvp" in only:
        hvp_case(args.device, reps, args.quick)
    if "checkpoint" in only:
        checkpoint_case(args.device, args.quick)


if __name__ == "__main__":
    main()
