"""Per-sample gradients of a small CNN on synthetic data, in one call.

`functorch_utils.nn.per_sample_grads` is `vmap(grad(loss))` over the examples of a batch, with
the module's parameters taken apart by `functionalize`. The result is checked against the obvious
reference: a Python loop that runs `torch.autograd.grad` on each example alone. The same
per-sample gradients are also computed "by hand" with `functionalize` + `vmap(grad)`, the recipe to
copy when you need something the helper does not do (clipping, a custom loss signature, ...).

    python examples/per_sample_grads.py

Exits non-zero if a check fails.
"""

from __future__ import annotations

import statistics
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

import functorch_utils as fu
from functorch_utils.nn import functionalize, per_sample_grads

torch.manual_seed(0)


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(torch.relu(self.conv1(x)), 2)  # 16x16 -> 8x8
        x = F.max_pool2d(torch.relu(self.conv2(x)), 2)  # 8x8 -> 4x4
        return self.fc(x.flatten(1))


def median_time(fn, warmup: int = 2, repeats: int = 5):
    """(the last result, the median wall time of ``repeats`` calls after ``warmup`` calls)."""
    for _ in range(warmup):  # the first calls pay one-off setup
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return out, statistics.median(times)


def main() -> int:
    model = SmallCNN().double()  # float64 so the comparison below can be tight
    batch = 32
    images = torch.randn(batch, 1, 16, 16, dtype=torch.float64)
    labels = torch.randint(0, 10, (batch,))

    # 1. one call (the median of 5 calls after 2 warm-up calls)
    grads, t_vmap = median_time(lambda: per_sample_grads(model, F.cross_entropy, images, labels))
    for name, g in grads.items():
        print(f"  {name:14s} per-sample gradient shape {tuple(g.shape)}")

    # 2. the same by hand: functionalize + vmap(grad)
    params, apply = functionalize(model)

    def loss_one(p, x, y):
        return F.cross_entropy(apply(p, x[None]), y[None])

    by_hand = fu.vmap(fu.grad(loss_one), in_axes=(None, 0, 0))(params, images, labels)

    # 3. the reference: one autograd.grad per example
    names = [n for n, _ in model.named_parameters()]

    def loop_of_grads():
        loop = {n: [] for n in names}
        for i in range(batch):
            loss = F.cross_entropy(model(images[i : i + 1]), labels[i : i + 1])
            for n, g in zip(names, torch.autograd.grad(loss, list(model.parameters()))):
                loop[n].append(g)
        return {n: torch.stack(gs) for n, gs in loop.items()}

    reference, t_loop = median_time(loop_of_grads)

    worst = max((grads[n] - reference[n]).abs().max().item() for n in names)
    worst_hand = max((by_hand[n] - reference[n]).abs().max().item() for n in names)
    untouched = all(p.grad is None for p in model.parameters())
    print(
        f"per_sample_grads: {t_vmap * 1e3:.1f} ms; loop of {batch} autograd.grad: "
        f"{t_loop * 1e3:.1f} ms (medians of 5 calls after 2 warm-up calls)"
    )
    print(
        f"max |per_sample_grads - loop| = {worst:.2e}; max |vmap(grad) - loop| = {worst_hand:.2e}"
    )
    print(f"module's .grad untouched: {untouched}")
    ok = worst < 1e-10 and worst_hand < 1e-10 and untouched
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
