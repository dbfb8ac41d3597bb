"""Per-example dropout driven by keys, trained under `vmap`: JAX's recipe on PyTorch.

Each training step folds the step number into a base key; the batch's keys come from
`random.split`, one per example, and `vmap` maps the per-example loss (dropout included) over the
examples and their keys. Every example's dropout mask is a pure function of (seed, step,
example index), so it is the same whether the batch runs under `vmap` or in a Python loop, in
any batch order, on any device, and equal to the mask JAX draws with the same keys.

    python examples/per_example_dropout.py

Checks (exits non-zero if one fails):
1. vmap over keys gives the same per-example losses and gradients as a Python loop;
2. a batch's masks do not depend on which other examples share the batch;
3. the masks differ between examples and keep about 1 - rate of the units;
4. training with dropout reduces the held-out loss of a small regression MLP.
"""

from __future__ import annotations

import itertools
import sys

import torch

from functorch_utils import grad, random, vmap

RATE = 0.2
STEPS = 40
torch.manual_seed(0)


def init(key: torch.Tensor, sizes: list[int]) -> dict[str, torch.Tensor]:
    params = {}
    for i, (k, (m, n)) in enumerate(
        zip(random.split(key, len(sizes) - 1), itertools.pairwise(sizes))
    ):
        params[f"w{i}"] = random.normal(k, (m, n)) / m**0.5
        params[f"b{i}"] = torch.zeros(n)
    return params


def dropout(key: torch.Tensor, x: torch.Tensor, rate: float) -> torch.Tensor:
    keep = random.bernoulli(key, 1.0 - rate, x.shape)
    return torch.where(keep, x / (1.0 - rate), torch.zeros_like(x))


def mlp(params: dict[str, torch.Tensor], x: torch.Tensor, key: torch.Tensor | None) -> torch.Tensor:
    n = len(params) // 2
    for i in range(n):
        x = x @ params[f"w{i}"] + params[f"b{i}"]
        if i < n - 1:
            x = torch.tanh(x)
            if key is not None:
                x = dropout(random.fold_in(key, i), x, RATE)
    return x


def example_loss(params, x, y, key):  # one example: x (d,), y (1,), key (2,)
    return ((mlp(params, x, key) - y) ** 2).sum()


def batch_keys(base: torch.Tensor, step: int, n: int) -> torch.Tensor:
    return random.split(random.fold_in(base, step), n)


def main() -> int:
    failures = []
    data_key, init_key, drop_key = random.split(random.key(0), 3)
    kx, kn = random.split(data_key)
    x = random.uniform(kx, (384, 4), minval=-1.0, maxval=1.0)
    y = torch.sin(2 * x[:, :1]) + x[:, 1:2] * x[:, 2:3] + 0.05 * random.normal(kn, (384, 1))
    x_train, y_train, x_test, y_test = x[:256], y[:256], x[256:], y[256:]
    params = init(init_key, [4, 32, 32, 1])

    # 1. vmap over (example, key) equals the loop, values and gradients.
    keys = batch_keys(drop_key, 0, 8)
    per_example = vmap(example_loss, in_axes=(None, 0, 0, 0))(
        params, x_train[:8], y_train[:8], keys
    )
    looped = torch.stack([example_loss(params, x_train[i], y_train[i], keys[i]) for i in range(8)])
    g_vmap = vmap(grad(example_loss), in_axes=(None, 0, 0, 0))(
        params, x_train[:8], y_train[:8], keys
    )
    g_loop = [grad(example_loss)(params, x_train[i], y_train[i], keys[i]) for i in range(8)]
    if not torch.allclose(per_example, looped, rtol=1e-6, atol=1e-7):
        failures.append("vmap losses differ from the loop")
    for name in params:
        if not torch.allclose(
            g_vmap[name], torch.stack([g[name] for g in g_loop]), rtol=1e-5, atol=1e-6
        ):
            failures.append(f"vmap gradient of {name} differs from the loop")

    # 2. An example's mask depends on its key only, not on its batch mates.
    h = torch.ones(256)
    masks = vmap(lambda k: dropout(k, h, RATE))(keys)
    again = vmap(lambda k: dropout(k, h, RATE))(keys[[5, 2, 7]])
    if not torch.equal(masks[[5, 2, 7]], again):
        failures.append("a mask changed with the batch's composition")

    # 3. Masks differ between examples and keep ~80% of the units.
    kept = (masks != 0).double().mean().item()
    if abs(kept - (1 - RATE)) > 0.08 or torch.equal(masks[0], masks[1]):
        failures.append(f"masks look wrong: kept {kept:.3f}")

    # 4. Training with per-example dropout lowers the held-out loss.
    def batch_loss(params, xb, yb, keys):
        return vmap(example_loss, in_axes=(None, 0, 0, 0))(params, xb, yb, keys).mean()

    def test_loss(params):
        return ((mlp(params, x_test, None) - y_test) ** 2).mean().item()

    before = test_loss(params)
    step_grad = grad(batch_loss)
    for step in range(STEPS):
        idx = random.permutation(random.fold_in(drop_key, 10_000 + step), 256)[:32].long()
        g = step_grad(params, x_train[idx], y_train[idx], batch_keys(drop_key, step, 32))
        params = {k: v - 0.2 * g[k] for k, v in params.items()}
    after = test_loss(params)
    print(f"held-out MSE: {before:.4f} before, {after:.4f} after {STEPS} steps with dropout")
    if not after < 0.5 * before:
        failures.append(f"training did not help: {before:.4f} -> {after:.4f}")

    for f in failures:
        print("FAILED:", f)
    if not failures:
        print("per-example dropout: all checks passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
