"""Each transform works inside torch.compile(fullgraph=True) where torch.func's does."""

from __future__ import annotations

import pytest
import torch

import functorch_utils as fu

CASES = {
    "grad": lambda x: fu.grad(lambda y: (y.sin() ** 2).sum())(x),
    "value_and_grad": lambda x: fu.value_and_grad(lambda y: (y.sin() ** 2).sum())(x),
    "grad_pytree_aux": lambda x: fu.grad(lambda p: ((p["a"] * p["b"]).sum(), p["a"]), has_aux=True)(
        {"a": x, "b": x.cos()}
    ),
    "vjp": lambda x: fu.vjp(torch.sin, x)[1](torch.ones_like(x)),
    "jvp": lambda x: fu.jvp(torch.sin, (x,), (torch.ones_like(x),)),
    "jacrev": lambda x: fu.jacrev(torch.sin)(x),
    "jacfwd": lambda x: fu.jacfwd(torch.sin)(x),
    "hessian": lambda x: fu.hessian(lambda y: y.sin().sum())(x),
}


@pytest.mark.parametrize("name", list(CASES))
def test_fullgraph_compile(name):
    torch._dynamo.reset()
    fn = CASES[name]
    x = torch.tensor([0.1, 0.7, -0.4])
    compiled = torch.compile(fn, fullgraph=True, backend="eager")
    torch.testing.assert_close(compiled(x), fn(x))


def test_inductor_per_sample_grads():
    # The real compiler once (the others trace with the eager backend to keep CI fast).
    torch._dynamo.reset()

    def per_sample(w, xs):
        return torch.func.vmap(fu.grad(lambda w, x: (x @ w).tanh().sum()), in_dims=(None, 0))(w, xs)

    w, xs = torch.randn(4, 3), torch.randn(5, 4)
    torch.testing.assert_close(torch.compile(per_sample, fullgraph=True)(w, xs), per_sample(w, xs))
