"""Hypothesis property tests of every transform: finite differences and consistency.

Random smooth functions of random pytrees, in float32 and float64. Finite-difference checks go
through ``functorch_utils.testing.check_grads``; consistency properties use tight tolerances
(docs/testing.md, "The numbers": 16-32 eps * scale).
"""

from __future__ import annotations

import hypothesis.strategies as st
import torch
from hypothesis import given

import functorch_utils as fu
from functorch_utils import tree_util as tu
from functorch_utils.testing import check_grads
from functorch_utils.testing import strategies as fst

DTYPES = fst.dtypes()

# Smooth scalar maps applied leafwise, mixed by a contraction so leaves interact.
ELEMENTWISE = {
    "sin": torch.sin,
    "tanh": torch.tanh,
    "gauss": lambda x: torch.exp(-(x**2)),
    "cube": lambda x: x**3 / 3,
    "softplus": torch.nn.functional.softplus,
}


@st.composite
def trees(draw, dtype=None):
    """Random pytrees from the testing kit's strategies, one dtype for all leaves."""
    dtype = dtype or draw(DTYPES)
    leaves = fst.tensors(dtype, fst.shapes(max_dims=2, max_side=3), fst.real(-2.0, 2.0))
    return draw(fst.pytrees(leaves, max_leaves=3))


@st.composite
def functions(draw):
    names = draw(st.lists(st.sampled_from(sorted(ELEMENTWISE)), min_size=1, max_size=3))
    fs = [ELEMENTWISE[n] for n in names]

    def f(tree):
        total = 0.0
        acc = None
        for i, x in enumerate(tu.tree_leaves(tree)):
            y = fs[i % len(fs)](x)
            total = total + y.sum()
            acc = y.sum() if acc is None else acc * torch.cos(y.sum())
        return total + acc

    f.__name__ = "f_" + "_".join(names)
    return f


def vector_output(f):
    """A vector-valued companion: leafwise map, concatenated, mixed by the scalar f."""

    def g(tree):
        leaves = [x.reshape(-1) for x in tu.tree_leaves(tree)]
        s = f(tree)
        return {"v": torch.tanh(torch.cat(leaves)) * s, "s": s}

    return g


def close(a, b, dtype, factor=32.0):
    eps = torch.finfo(dtype).eps
    for x, y in zip(tu.tree_leaves(a), tu.tree_leaves(b)):
        scale = max(1.0, float(x.abs().max()) if x.numel() else 1.0)
        torch.testing.assert_close(x, y, rtol=factor * eps, atol=factor * eps * scale)


@given(functions(), trees())
def test_grad_against_finite_differences(f, tree):
    check_grads(f, (tree,), order=1, modes=("fwd", "rev"))


@given(functions(), trees(dtype=torch.float64))
def test_second_order_against_finite_differences(f, tree):
    check_grads(f, (tree,), order=2, modes=("rev",))


@given(functions(), trees())
def test_grad_equals_vjp_of_one_and_value_and_grad(f, tree):
    g = fu.grad(f)(tree)
    out, vjp_fn = fu.vjp(f, tree)
    (g2,) = vjp_fn(torch.ones_like(out))
    value, g3 = fu.value_and_grad(f)(tree)
    for a, b, c in zip(tu.tree_leaves(g), tu.tree_leaves(g2), tu.tree_leaves(g3)):
        assert torch.equal(a, b) and torch.equal(a, c)
    assert torch.equal(value, out)


@given(functions(), trees())
def test_jacrev_equals_jacfwd(f, tree):
    g = vector_output(f)
    dtype = tu.tree_leaves(tree)[0].dtype
    close(fu.jacrev(g)(tree), fu.jacfwd(g)(tree), dtype)


@given(functions(), trees(), st.integers(0, 2**31 - 1))
def test_adjointness(f, tree, seed):
    g = vector_output(f)
    gen = torch.Generator().manual_seed(seed)
    v = tu.tree_map(lambda x: torch.randn(x.shape, generator=gen, dtype=x.dtype), tree)
    out, jv = fu.jvp(g, (tree,), (v,))
    u = tu.tree_map(lambda x: torch.randn(x.shape, generator=gen, dtype=x.dtype), out)
    (vju,) = fu.vjp(g, tree)[1](u)
    lhs = sum((a * b).sum() for a, b in zip(tu.tree_leaves(u), tu.tree_leaves(jv)))
    rhs = sum((a * b).sum() for a, b in zip(tu.tree_leaves(vju), tu.tree_leaves(v)))
    dtype = tu.tree_leaves(tree)[0].dtype
    scale = sum(float(a.abs().sum() * 1) for a in tu.tree_leaves(jv)) + 1.0
    assert abs(float(lhs - rhs)) <= 64 * torch.finfo(dtype).eps * scale * 4


@given(functions(), trees())
def test_hessian_symmetric_and_equals_jacrev_jacrev(f, tree):
    h = fu.hessian(f)(tree)
    h2 = fu.jacrev(fu.jacrev(f))(tree)
    dtype = tu.tree_leaves(tree)[0].dtype
    close(h, h2, dtype)
    # symmetry: H[i][j] == H[j][i]^T (blockwise, flattening each leaf)
    leaves = tu.tree_leaves(tree)
    flat_h = tu.tree_leaves(h)
    n = len(leaves)
    for i in range(n):
        for j in range(n):
            hij = flat_h[i * n + j].reshape(leaves[i].numel(), leaves[j].numel())
            hji = flat_h[j * n + i].reshape(leaves[j].numel(), leaves[i].numel())
            close(hij, hji.T, dtype, factor=64.0)


@given(functions(), trees(), st.integers(0, 2**31 - 1))
def test_linearize_equals_jvp(f, tree, seed):
    gen = torch.Generator().manual_seed(seed)
    v = tu.tree_map(lambda x: torch.randn(x.shape, generator=gen, dtype=x.dtype), tree)
    out, f_jvp = fu.linearize(f, tree)
    out2, jv = fu.jvp(f, (tree,), (v,))
    assert torch.equal(out, out2)
    assert torch.equal(f_jvp(v), jv)


@given(functions(), trees(dtype=torch.float64))
def test_per_sample_grads_equal_loop(f, tree):
    batch = tu.tree_map(lambda x: torch.stack([x, 0.5 * x, -x]), tree)
    batched = fu.vmap(fu.grad(f))(batch)
    for b in range(3):
        one = fu.grad(f)(tu.tree_map(lambda x, b=b: x[b], batch))
        close(tu.tree_map(lambda x, b=b: x[b], batched), one, torch.float64)
