"""stop_gradient and checkpoint (alias remat)."""

from __future__ import annotations

import pytest
import torch
import torch.func

import functorch_utils as fu

from .helpers import tree_allclose

D = torch.float64
X = torch.tensor([0.3, -1.2, 2.0], dtype=D)


def test_stop_gradient_both_modes_every_order():
    def f(x):
        return fu.stop_gradient(x) * x

    x = torch.tensor(3.0)
    assert fu.grad(f)(x).item() == 3.0
    assert fu.jvp(f, (x,), (torch.tensor(1.0),))[1].item() == 3.0
    assert fu.grad(fu.grad(f))(x).item() == 0.0
    assert fu.jacfwd(fu.grad(f))(x).item() == 0.0
    tree = fu.stop_gradient({"a": x, "s": "kept"})
    assert tree["s"] == "kept"


@pytest.mark.parametrize(
    "transform",
    ["grad", "vmap_grad", "jacrev", "jacfwd", "hessian"],
)
def test_checkpoint_equals_function(transform):
    def body(x):
        return (x.sin() * x.exp()).cumsum(0)

    ckpt = fu.checkpoint(body)
    t = {
        "grad": lambda f: fu.grad(lambda x: f(x).sum()),
        "vmap_grad": lambda f: torch.func.vmap(fu.grad(lambda x: f(x).sum())),
        "jacrev": fu.jacrev,
        "jacfwd": fu.jacfwd,
        "hessian": lambda f: fu.hessian(lambda x: f(x).sum()),
    }[transform]
    x = X if transform != "vmap_grad" else X.reshape(3, 1)
    tree_allclose(t(ckpt)(x), t(body)(x))
    assert fu.remat is fu.checkpoint


def test_checkpoint_saves_only_inputs():
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    x = torch.randn(1000, dtype=D, requires_grad=True)
    body = lambda x: x.sin().exp().cos().sum()  # noqa: E731
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fu.checkpoint(body)(x)
    ckpt_saved = sum(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        body(x)
    assert ckpt_saved == 1000 and sum(saved) >= 3000
