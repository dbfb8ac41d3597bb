"""The transforms on CUDA tensors: same values as on CPU, results stay on the device.

Skipped without a CUDA device (CI has none; the GPU check script runs them).
"""

from __future__ import annotations

import pytest
import torch

import functorch_utils as fu

from .helpers import LegacySquare

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


@pytest.fixture(autouse=True)
def _highest_precision():
    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(old)


def f(p, x):
    return (torch.tanh(x @ p["w"]) * p["b"]).sum()


def args(device):
    gen = torch.Generator().manual_seed(0)
    p = {"w": torch.randn(4, 3, generator=gen), "b": torch.randn(3, generator=gen)}
    x = torch.randn(5, 4, generator=gen)
    return {k: v.to(device) for k, v in p.items()}, x.to(device)


TRANSFORMS = {
    "grad": lambda p, x: fu.grad(f)(p, x),
    "value_and_grad": lambda p, x: fu.value_and_grad(f)(p, x),
    "jacrev": lambda p, x: fu.jacrev(lambda p: torch.tanh(x @ p["w"]))(p),
    "jacfwd": lambda p, x: fu.jacfwd(lambda p: torch.tanh(x @ p["w"]))(p),
    "hessian": lambda p, x: fu.hessian(f)(p, x),
    "hvp": lambda p, x: fu.hvp(lambda p: f(p, x), (p,), (p,)),
    "per_sample": lambda p, x: fu.vmap(fu.grad(f), in_axes=(None, 0))(p, x[:, None]),
    "jvp": lambda p, x: fu.jvp(lambda p: f(p, x), (p,), (p,)),
    "vjp": lambda p, x: fu.vjp(lambda p: f(p, x), p)[1](torch.ones((), device=x.device)),
    "checkpoint": lambda p, x: fu.grad(lambda p: fu.checkpoint(f)(p, x))(p),
    "psum": lambda p, x: fu.vmap(lambda r: fu.psum(r, "i"), axis_name="i")(x),
}


@pytest.mark.parametrize("name", list(TRANSFORMS))
def test_cuda_matches_cpu_and_stays_on_device(name):
    on_gpu = TRANSFORMS[name](*args("cuda"))
    on_cpu = TRANSFORMS[name](*args("cpu"))
    gpu_leaves = fu.tree_util.tree_leaves(on_gpu)
    assert all(t.device.type == "cuda" for t in gpu_leaves)
    for a, b in zip(gpu_leaves, fu.tree_util.tree_leaves(on_cpu)):
        torch.testing.assert_close(a.cpu(), b, rtol=1e-4, atol=1e-5)


def test_cuda_compiled_per_sample_grads():
    torch._dynamo.reset()
    p, x = args("cuda")

    def per_sample(p, x):
        return torch.func.vmap(fu.grad(f), in_dims=(None, 0))(p, x[:, None])

    # aot_eager: dynamo and AOT autograd trace through the transforms on CUDA without code
    # generation (inductor on the GPU machine failed once for reasons outside this library).
    compiled = torch.compile(per_sample, fullgraph=True, backend="aot_eager")
    for a, b in zip(
        fu.tree_util.tree_leaves(compiled(p, x)), fu.tree_util.tree_leaves(per_sample(p, x))
    ):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_cuda_top_level_jacrev_of_a_legacy_function_falls_back_to_the_tape():
    x = torch.tensor([1.0, 2.0], device="cuda")
    torch.testing.assert_close(fu.jacrev(LegacySquare.apply)(x), torch.diag(2 * x))
