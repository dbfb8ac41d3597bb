"""A model ensemble with `vmap`: N copies of a network evaluated and trained in one call each.

`functorch_utils.nn.stack_modules` stacks the parameters of N modules of one architecture along
a new leading axis; `vmap(apply, in_axes=(0, None))` evaluates every member on the same batch,
and `vmap(grad(loss))` gives every member's gradient at once. Checked against a loop over the
members: the predictions, and the parameters after 50 steps of plain SGD trained both ways.

    python examples/ensemble.py

Exits non-zero if a check fails.
"""

from __future__ import annotations

import copy
import sys

import torch
import torch.nn.functional as F
from torch import nn

import functorch_utils as fu
from functorch_utils.nn import stack_modules

torch.manual_seed(0)
DT = torch.float64
N_MODELS, LR, STEPS = 5, 0.1, 50


def make_model() -> nn.Module:
    return nn.Sequential(
        nn.Linear(2, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 3)
    ).to(DT)


def main() -> int:
    failures = []
    models = [make_model() for _ in range(N_MODELS)]
    x = torch.randn(64, 2, dtype=DT)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()  # 3 classes

    stacked, apply = stack_modules(models)
    print({k: tuple(v.shape) for k, v in stacked.items()})

    # predictions of all members on the same batch, vs a loop
    preds = fu.vmap(apply, in_axes=(0, None))(stacked, x)
    loop = torch.stack([m(x) for m in models]).detach()
    err = (preds - loop).abs().max().item()
    print(f"predictions {tuple(preds.shape)}: max |vmap - loop| = {err:.2e}")
    if err > 1e-12:
        failures.append("predictions")

    # training every member with SGD: vmap(grad) vs a loop of optimizers over copies
    def loss(p, x, y):
        return F.cross_entropy(apply(p, x), y)

    member_grads = fu.vmap(fu.grad(loss), in_axes=(0, None, None))
    p = stacked
    for _ in range(STEPS):
        g = member_grads(p, x, y)
        p = {k: p[k] - LR * g[k] for k in p}

    copies = [copy.deepcopy(m) for m in models]
    for m in copies:
        opt = torch.optim.SGD(m.parameters(), lr=LR)
        for _ in range(STEPS):
            opt.zero_grad()
            F.cross_entropy(m(x), y).backward()
            opt.step()

    err = max(
        (p[name][i] - param.detach()).abs().max().item()
        for i, m in enumerate(copies)
        for name, param in m.named_parameters()
    )
    print(f"{STEPS} SGD steps: max |parameters trained with vmap - trained in a loop| = {err:.2e}")
    if err > 1e-10:
        failures.append("training")

    final = fu.vmap(loss, in_axes=(0, None, None))(p, x, y)
    acc = (fu.vmap(apply, in_axes=(0, None))(p, x).mean(0).argmax(-1) == y).float().mean()
    print(
        f"members' final losses {[round(v, 3) for v in final.tolist()]}; ensemble accuracy {acc:.2f}"
    )
    if any(q.grad is not None for m in models for q in m.parameters()):
        failures.append("original modules touched")

    print("OK" if not failures else f"FAILED: {failures}")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
