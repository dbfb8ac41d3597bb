"""JAX's own vmap tests, ported by hand: jax tests/batching_test.py (BatchingTest).

Each test names its origin. Arrays are torch tensors (float64 where a value is compared); JAX's
``lax``/``jnp`` ops are replaced by the torch op that computes the same thing, so the batching of
that op under ``functorch_utils.vmap`` is what is tested. Expected values are JAX's: a loop over
the members, a NumPy formula, or the literal the JAX test states. Tests that need capabilities the
library does not have (jit, random keys, while_loop, ppermute, all_to_all, ...) are not ported;
they are listed in tests/peer/README.md.
"""

from __future__ import annotations

import itertools as it
import re
from functools import partial

import pytest
import torch
import torch.nn.functional as F

import functorch_utils as fu
from functorch_utils import grad, hessian, jacfwd, jacrev, jvp, vjp, vmap
from functorch_utils.testing import check_grads

from ..helpers import tree_allclose

F64 = torch.float64
ORIGIN = "jax tests/batching_test.py::BatchingTest::"


def R(*shape, seed=0):
    """JAX's ``self.rng().randn``: seeded standard normals, float64."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=F64)


def close(a, b, **kw):
    torch.testing.assert_close(a, b, **kw)


def stack_loop(fun, n, *getters):
    """``stack([fun(*(g(i) for g in getters)) for i in range(n)])``: the loop vmap stands for."""
    return torch.stack([fun(*(g(i) for g in getters)) for i in range(n)])


# ---------------------------------------------------------------------------------------------
# Constants, matmuls, per-example gradients, Jacobians


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/vmap.md#how-it-differs-from-torchfuncvmap "
    "(non-tensor outputs pass through unmapped, so a Python constant is not broadcast)",
)
def test_constant_function():
    """jax tests/batching_test.py::BatchingTest::testConstantFunction"""
    ans = vmap(lambda x: 3)(torch.ones(4))
    close(ans, 3 * torch.ones(4), check_dtype=False)


def test_constant_function_tensor_output_is_broadcast():
    """jax tests/batching_test.py::BatchingTest::testConstantFunction (a tensor constant)"""
    ans = vmap(lambda x: torch.tensor(3.0, dtype=F64))(torch.ones(4))
    close(ans, 3 * torch.ones(4, dtype=F64))


def test_nested_batching_mat_mat():
    """jax tests/batching_test.py::BatchingTest::testNestedBatchingMatMat"""
    matvec = vmap(torch.vdot, in_axes=(0, None))
    matmat = vmap(matvec, in_axes=(None, 1), out_axes=1)
    A, B = R(4, 3), R(3, 2, seed=1)
    close(matmat(A, B), A @ B)


def _predict(params, inputs):
    for W, b in params:
        outputs = W @ inputs + b
        inputs = torch.tanh(outputs)
    return outputs


def _loss(params, data):
    inputs, targets = data
    return torch.sum((_predict(params, inputs) - targets) ** 2)


def test_per_example_gradients():
    """jax tests/batching_test.py::BatchingTest::testPerExampleGradients"""
    layer_sizes = [3, 2, 4]
    params = [
        (R(m, n, seed=i), R(m, seed=10 + i))
        for i, (m, n) in enumerate(zip(layer_sizes[1:], layer_sizes[:-1]))
    ]
    batch = (R(5, 3, seed=20), R(5, 4, seed=21))
    ans = vmap(partial(grad(_loss), params))(batch)
    for (dW, db), (W, b) in zip(ans, params):
        assert dW.shape == (5, *W.shape)
        assert db.shape == (5, *b.shape)
    for i in range(5):  # and the values are the per-example gradients
        one = grad(_loss)(params, (batch[0][i], batch[1][i]))
        tree_allclose([(dW[i], db[i]) for dW, db in ans], one)


def test_jacobians():
    """jax tests/batching_test.py::BatchingTest::testJacobians"""

    def jacbwd(f, x):
        y, pullback = vjp(f, x)
        std_basis = torch.eye(y.numel(), dtype=F64).reshape((-1, *y.shape))
        (jac_flat,) = vmap(pullback, out_axes=y.dim())(std_basis)
        return jac_flat.reshape(y.shape + x.shape)

    def jacfwd_(f, x):
        def pushfwd(v):
            return jvp(f, (x,), (v,))

        std_basis = torch.eye(x.numel(), dtype=F64).reshape((-1, *x.shape))
        y, jac_flat = vmap(pushfwd, out_axes=(None, 0))(std_basis)
        return jac_flat.reshape(y.shape + x.shape)

    A, b = R(4, 3), R(4, seed=1)

    def f(x):
        return torch.tanh(A @ x + b)

    x = R(3, seed=2)
    close(jacfwd_(f, x), jacbwd(f, x))
    # both reshape the (3, 4) stack of J.T rows as JAX's test does; check it against jacrev too
    close(jacbwd(f, x), jacrev(f)(x).T.reshape(4, 3))


# ---------------------------------------------------------------------------------------------
# Slicing, reversal, elementwise ops


def test_slice_lax():
    """jax tests/batching_test.py::BatchingTest::testSliceLax"""
    x = R(5, 10)
    close(vmap(lambda x: torch.narrow(x, 0, 2, 2))(x), x[:, 2:4])


def test_slice_numpy():
    """jax tests/batching_test.py::BatchingTest::testSliceNumpy"""
    x = R(10, 5, 3, 7)
    close(vmap(lambda x: x[:, 2])(x), x[:, :, 2])


def test_rev_lax():
    """jax tests/batching_test.py::BatchingTest::testRevLax"""
    x = R(2, 3)

    def fun(x):
        return torch.flip(x, [0])

    close(vmap(fun)(x), x.flip(1))
    close(vmap(fun, (1,), 1)(x), x.flip(0))


def test_rev_numpy():
    """jax tests/batching_test.py::BatchingTest::testRevNumpy"""
    x = R(3, 2, 4)

    def fun(x):
        return x.flip(1)  # x[:, ::-1]

    close(vmap(fun)(x), x.flip(2))
    close(vmap(fun, (1,), 1)(x), x.flip(2))
    close(vmap(fun, (2,), 2)(x), x.flip(1))


def test_np_maximum():
    """jax tests/batching_test.py::BatchingTest::testNpMaximum"""
    x = R(10, 5, 3, 7)
    ans = vmap(lambda x: torch.maximum(x, torch.tensor(0.0, dtype=F64)))(x)
    close(ans, x.clamp_min(0.0))


def test_np_gtr_than():
    """jax tests/batching_test.py::BatchingTest::testNpGtrThan"""
    x = R(10, 5, 3, 7)
    ans = vmap(lambda x: x > 1.0)(x)
    assert ans.dtype == torch.bool
    assert torch.equal(ans, x > 1.0)


def test_np_maximum_per_example_grad():
    """jax tests/batching_test.py::BatchingTest::testNpMaximumPerExampleGrad"""
    x, W = R(10, 5), R(5, 5, seed=1)

    def fun(W, x):
        return torch.sum(torch.maximum(x @ W, torch.tensor(0.0, dtype=F64)) ** 2)

    ans = vmap(partial(grad(fun), W))(x)
    for i in range(10):
        x_ex = x[i : i + 1]
        expected = (2.0 * torch.maximum(W.T @ x_ex.T, torch.tensor(0.0, dtype=F64)) @ x_ex).T
        close(ans[i], expected)


# ---------------------------------------------------------------------------------------------
# dot_general, dot


def _bmm(x, y):
    """lax.dot_general(x, y, [((2,), (1,)), ((0,), (0,))]): batch dim 0, contract x2 with y1."""
    return torch.einsum("bij,bjk->bik", x, y)


def test_dot_general_both_mapped_axis_0():
    """jax tests/batching_test.py::BatchingTest::testDotGeneral (first case)"""
    x, y = R(10, 3, 4, 5), R(10, 3, 5, 6, seed=1)
    close(vmap(_bmm)(x, y), torch.einsum("nbij,nbjk->nbik", x, y))


@pytest.mark.parametrize(
    "xs, ys, in_axes",
    [
        ((3, 4, 10, 5), (3, 10, 5, 6), (2, 1)),
        ((3, 4, 5, 10), (3, 5, 6), (3, None)),
        ((3, 4, 5), (3, 5, 10, 6), (None, 2)),
    ],
)
def test_dot_general_other_axes(xs, ys, in_axes):
    """jax tests/batching_test.py::BatchingTest::testDotGeneral (mapped and unmapped axes)"""
    x, y = R(*xs), R(*ys, seed=1)
    ans = vmap(_bmm, in_axes=in_axes)(x, y)

    def member(t, ax, i):
        return t if ax is None else t.select(ax, i)

    expected = stack_loop(
        _bmm, 10, lambda i: member(x, in_axes[0], i), lambda i: member(y, in_axes[1], i)
    )
    close(ans, expected)


def test_dot_general_no_batch_dims():
    """jax tests/batching_test.py::BatchingTest::testDotGeneral (contract only, last case)"""
    x, y = R(4), R(4, 10, seed=1)

    def fun(x, y):
        return torch.tensordot(x, y, dims=([0], [0]))

    ans = vmap(fun, in_axes=(None, 1))(x, y)
    close(ans, stack_loop(fun, 10, lambda i: x, lambda i: y[..., i]))


def test_dot():
    """jax tests/batching_test.py::BatchingTest::testDot"""

    def vecvec(a, b):
        dot = torch.matmul
        for ndim in range(1, max(a.dim(), b.dim())):
            a_ax = 0 if a.dim() > ndim else None
            b_ax = 0 if b.dim() > ndim else None
            dot = vmap(dot, in_axes=(a_ax, b_ax))
        return dot(a, b)

    assert vecvec(torch.zeros(3), torch.zeros(3)).shape == ()
    assert vecvec(torch.zeros(2, 3), torch.zeros(3)).shape == (2,)
    assert vecvec(torch.zeros(4, 2, 3), torch.zeros(3)).shape == (4, 2)


def test_dot2():
    """jax tests/batching_test.py::BatchingTest::testDot2"""
    xs, ys = R(10, 3), R(10, 3, seed=1)
    close(vmap(torch.dot)(xs, ys), torch.einsum("ni,ni->n", xs, ys))


def test_dot3():
    """jax tests/batching_test.py::BatchingTest::testDot3"""
    xs, ys = R(5, 8, 10), R(10, 1, seed=1)
    ans = vmap(torch.matmul, in_axes=(1, None))(xs, ys)
    close(ans, torch.einsum("inj,jk->nik", xs, ys))


def test_dot4():
    """jax tests/batching_test.py::BatchingTest::testDot4"""
    xs, ys = R(3, 2), R(3, seed=1)
    ans = vmap(torch.matmul, in_axes=(1, None))(xs, ys)
    close(ans, torch.einsum("ij,i->j", xs, ys))


# ---------------------------------------------------------------------------------------------
# pad, concatenate


def _lax_pad(x, config):
    """lax.pad(x, 0, config) with (low, high, interior) per dimension, from out-of-place ops."""
    for dim, (low, high, interior) in enumerate(config):
        if interior:
            moved = x.movedim(dim, -1)
            gaps = torch.zeros(*moved.shape, interior, dtype=x.dtype)
            woven = torch.cat([moved.unsqueeze(-1), gaps], -1).flatten(-2)
            x = woven[..., : woven.shape[-1] - interior].movedim(-1, dim)
        pad = [0, 0] * (x.dim() - dim - 1) + [low, high]
        x = F.pad(x, pad)
    return x


def test_lax_pad_helper_matches_jax_shape_rule():
    """jax tests/batching_test.py::BatchingTest::testPad (the helper itself, unbatched)"""
    out = _lax_pad(torch.tensor([1.0, 2.0, 3.0]), [(1, 2, 1)])
    assert torch.equal(out, torch.tensor([0.0, 1.0, 0.0, 2.0, 0.0, 3.0, 0.0, 0.0]))


@pytest.mark.parametrize(
    "shape, config", [((5, 10), [(1, 2, 1)]), ((5, 10, 3), [(1, 2, 1), (0, 1, 0)])]
)
def test_pad(shape, config):
    """jax tests/batching_test.py::BatchingTest::testPad"""
    x = R(*shape).float()

    def fun(x):
        return _lax_pad(x, config)

    close(vmap(fun)(x), torch.stack([fun(m) for m in x]))


def test_concatenate():
    """jax tests/batching_test.py::BatchingTest::testConcatenate"""
    x, y, z = R(10, 2, 3), R(1, 10, 3, seed=1), R(4, 3, seed=2)

    def fun0(*args):
        return torch.cat(args, 0)

    ans = vmap(fun0, in_axes=(0, 1, None))(x, y, z)
    expected = torch.cat([x, y.swapaxes(0, 1), z.expand(10, 4, 3)], 1)
    close(ans, expected)

    x, y, z = R(10, 2, 1), R(2, 3, seed=1), R(2, 4, 10, seed=2)

    def fun1(*args):
        return torch.cat(args, 1)

    ans = vmap(fun1, in_axes=(0, None, 2))(x, y, z)
    expected = torch.cat([x, y.expand(10, 2, 3), z.movedim(2, 0)], 2)
    close(ans, expected)


# ---------------------------------------------------------------------------------------------
# Jacobians and Hessians of batched code


def test_jacobian_issue54():
    """jax tests/batching_test.py::BatchingTest::testJacobianIssue54"""

    def func(xs):
        return torch.stack(list(xs))

    xs = torch.ones(5, 1, dtype=F64)
    eye = torch.eye(5, dtype=F64).reshape(5, 1, 5, 1)
    close(jacrev(func)(xs), eye)  # JAX only asks that these do not crash
    close(jacfwd(func)(xs), eye)


def test_any():
    """jax tests/batching_test.py::BatchingTest::testAny"""
    ans = vmap(torch.any)(torch.tensor([[True, False], [False, False]]))
    assert torch.equal(ans, torch.tensor([True, False]))


def test_hessian():
    """jax tests/batching_test.py::BatchingTest::testHessian"""

    def fun(x, t):
        return torch.sum(torch.pow(torch.maximum(x, torch.zeros_like(x)), 2)) + t

    x = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0], dtype=F64)
    ans = hessian(lambda x: fun(x, 0.0))(x)
    expected = torch.diag(torch.tensor([0.0, 0.0, 0.5, 2.0, 2.0], dtype=F64))
    close(ans, expected)


# ---------------------------------------------------------------------------------------------
# Indexing: dynamic slices and updates, gathers, scatters


def test_dynamic_slice():
    """jax tests/batching_test.py::BatchingTest::testDynamicSlice"""
    x = torch.arange(30).reshape(10, 3)
    ans = vmap(lambda x, i: x[i], in_axes=(0, None))(x, 1)
    assert torch.equal(ans, x[:, 1])

    idx = torch.tensor([0, 1, 2, 1, 0] * 2)
    ans = vmap(lambda x, i: x[i], in_axes=(0, 0))(x, idx)
    assert torch.equal(ans, x[torch.arange(10), idx])

    x = torch.arange(3)
    ans = vmap(lambda x, i: x[i], in_axes=(None, 0))(x, idx)
    assert torch.equal(ans, x[idx])


def _update_index(x, y, i):
    """lax.dynamic_update_index_in_dim(x, y, i, axis=0), out of place."""
    return torch.index_put(x, (torch.as_tensor(i),), y)


def test_dynamic_update_slice():
    """jax tests/batching_test.py::BatchingTest::testDynamicUpdateSlice"""
    x, y = R(10, 3), R(10, seed=1)
    ans = vmap(_update_index, in_axes=(0, 0, None))(x, y, 1)
    expected = x.clone()
    expected[:, 1] = y
    close(ans, expected)

    x = R(3, seed=2)
    idx = torch.tensor([0, 1, 2, 1, 0] * 2)
    ans = vmap(_update_index, in_axes=(None, 0, 0))(x, y, idx)
    expected = x.expand(10, 3).clone()
    expected[torch.arange(10), idx] = y
    close(ans, expected)


def test_sort():
    """jax tests/batching_test.py::BatchingTest::testSort"""
    v = torch.arange(12).flip(0).reshape(3, 4)

    def sort0(x):
        return torch.sort(x, dim=0).values

    def sort_last(x):
        return torch.sort(x, dim=-1).values

    assert torch.equal(vmap(sort0, (0,))(v), v.flip(1))
    assert torch.equal(vmap(sort_last, (0,))(v), v.flip(1))
    assert torch.equal(vmap(sort0, (1,))(v), v.flip(0).T)
    assert torch.equal(vmap(sort0, (1,), 1)(v), v.flip(0))


def _sort_key_val(k, v):
    """lax.sort_key_val(k, v, dimension=0): sort the keys, carry the values along."""
    sk, order = torch.sort(k, dim=0, stable=True)
    return sk, torch.gather(v, 0, order)


@pytest.mark.parametrize(
    "in_axes, out_axes, transpose_k, transpose_v, first_k, first_v",
    [
        ((0, 0), 0, False, False, False, False),
        ((1, 1), 1, False, False, False, False),
        ((0, 1), 0, False, True, False, False),
        ((1, 0), 0, True, False, False, False),
        ((None, 0), 0, False, False, True, False),
        ((1, None), 0, True, False, False, True),
    ],
)
def test_sort_key_val(in_axes, out_axes, transpose_k, transpose_v, first_k, first_v):
    """jax tests/batching_test.py::BatchingTest::testSortKeyVal"""
    k = torch.arange(12).flip(0).reshape(3, 4)
    v = torch.randperm(12, generator=torch.Generator().manual_seed(0)).reshape(3, 4)
    k_in = k[0] if first_k else (k.T if transpose_k else k)
    v_in = v[0] if first_v else (v.T if transpose_v else v)
    sk, sv = vmap(_sort_key_val, in_axes, out_axes)(k_in, v_in)
    if out_axes == 1:
        assert torch.equal(sk, k.flip(0)) and torch.equal(sv, v.flip(0))
        return
    assert torch.equal(sk, k[0].flip(0).expand(3, 4) if first_k else k.flip(1))
    assert torch.equal(sv, v[0].flip(0).expand(3, 4) if first_v else v.flip(1))


# ---------------------------------------------------------------------------------------------
# Convolutions and pooling (NCHW/OIHW, torch's layout, for JAX's NHWC/HWIO)


def _conv(params, x):
    return F.conv2d(x, params, padding="same")


def _per_example_grads(f, W, X, rtol=1e-7, atol=1e-9):
    """vmap(grad(loss)) over examples of shape (1, C, H, W) against a loop."""

    def grad_loss(params, x):
        return torch.mean(f(params, x) ** 2)

    g = grad(grad_loss)
    per_example = vmap(partial(g, W))(X.unsqueeze(1))
    looped = torch.stack([g(W, X[i : i + 1]) for i in range(X.shape[0])])
    close(per_example, looped, rtol=rtol, atol=atol)


def test_conv_general_dilated():
    """jax tests/batching_test.py::BatchingTest::testConvGeneralDilated"""
    W, X = R(5, 1, 3, 3), R(10, 1, 5, 5, seed=1)
    per_example = vmap(partial(_conv, W))(X.unsqueeze(1)).reshape(10, 5, 5, 5)
    close(per_example, _conv(W, X))
    _per_example_grads(_conv, W, X)


def test_conv_general_dilated_batch_not_major():
    """jax tests/batching_test.py::BatchingTest::testConvGeneralDilatedBatchNotMajor"""
    W = R(4, 1, 3, 3)
    x = R(3, 5, 7, 5, 1, seed=1)  # vmapped over 3, each member HNWC: H=5, N=7, W=5, C=1

    def f(params, x):  # HNWC in, HWNC out
        y = _conv(params, x.permute(1, 3, 0, 2))  # NCHW
        return y.permute(2, 3, 0, 1)

    per_example = vmap(partial(f, W))(x)  # (3, H, W, N, O)
    per_example = per_example.permute(1, 2, 0, 3, 4).reshape(5, 5, 21, 4)
    direct = f(W, x.permute(1, 0, 2, 3, 4).reshape(5, 21, 5, 1))
    close(per_example, direct)


def _pool(y, op):
    """lax.reduce_window(y, unit, op, (1, 1, 2, 2), (1, 1, 1, 1), 'SAME') for NCHW."""
    fill = float("-inf") if op == "max" else float("inf")
    if op == "sum":
        fill = 0.0
    y = F.pad(y, (0, 1, 0, 1), value=fill)  # SAME for a window of 2, stride 1: pad high by 1
    if op == "max":
        return F.max_pool2d(y, 2, 1)
    if op == "min":
        return -F.max_pool2d(-y, 2, 1)
    return F.avg_pool2d(y, 2, 1) * 4


@pytest.mark.parametrize("op", ["max", "min"])
def test_min_max_pool(op):
    """jax tests/batching_test.py::BatchingTest::testMinMaxPool"""
    W, X = R(5, 1, 3, 3), R(10, 1, 5, 5, seed=1)

    def f(params, x):
        return _pool(_conv(params, x), op)

    per_example = vmap(partial(f, W))(X.unsqueeze(1)).reshape(10, 5, 5, 5)
    close(per_example, f(W, X))
    _per_example_grads(f, W, X)


def test_sum_pool():
    """jax tests/batching_test.py::BatchingTest::testSumPool"""
    W, X = R(5, 1, 3, 3), R(10, 1, 5, 5, seed=1)

    def f(params, x):
        return _pool(_conv(params, x), "sum")

    per_example = vmap(partial(f, W))(X.unsqueeze(1)).reshape(10, 5, 5, 5)
    close(per_example, f(W, X))
    _per_example_grads(f, W, X)


def test_cumprod():
    """jax tests/batching_test.py::BatchingTest::testCumProd"""
    x = torch.arange(9).reshape(3, 3) + 1
    y = vmap(lambda x: torch.cumprod(x, dim=-1))(x)
    assert torch.equal(y, torch.cumprod(x, dim=1))


def _select(pred, on_true, on_false):
    return torch.where(torch.as_tensor(pred), on_true, on_false)


def test_select():
    """jax tests/batching_test.py::BatchingTest::testSelect"""
    ans = vmap(_select)(torch.tensor([True, False]), torch.tensor([0, 1]), torch.tensor([2, 3]))
    assert torch.equal(ans, torch.tensor([0, 3]))

    ans = vmap(_select, (0, None, None))(
        torch.tensor([False, True]), torch.tensor([0, 1]), torch.tensor([2, 3])
    )
    assert torch.equal(ans, torch.tensor([[2, 3], [0, 1]]))

    on_true, on_false = torch.tensor([0.0, 1.0]), torch.tensor(3.0)
    ans = vmap(_select, (None, 0, None))(True, on_true, on_false)
    assert torch.equal(ans, torch.tensor([0.0, 1.0]))

    ans = vmap(_select, (0, 0, None))(torch.tensor([False, True]), on_true, on_false)
    assert torch.equal(ans, torch.tensor([3.0, 1.0]))

    ans = vmap(_select, (0, None, 1), 1)(
        torch.tensor([False, True]), torch.tensor([2.0]), torch.tensor([[3.0, 4.0]])
    )
    assert torch.equal(ans, torch.tensor([[3.0, 2.0]]))


# ---------------------------------------------------------------------------------------------
# Linear algebra


def _spd(n_batch, n, seed):
    a = R(n_batch, n, n, seed=seed)
    return a @ a.mT + n * torch.eye(n, dtype=F64)


def test_lax_linalg_cholesky():
    """jax tests/batching_test.py::BatchingTest::testLaxLinalgCholesky"""
    a = _spd(10, 5, 0)
    close(vmap(torch.linalg.cholesky)(a), torch.linalg.cholesky(a))
    b = _spd(10, 5, 1)
    ans = vmap(torch.linalg.cholesky, in_axes=1, out_axes=0)(b.swapaxes(0, 1))
    close(ans, torch.linalg.cholesky(b))


def _tri_solve(a, b):
    """lax.linalg.triangular_solve(a, b): x @ a = b, a upper triangular (JAX's defaults)."""
    return torch.linalg.solve_triangular(a, b, upper=True, left=False)


def test_lax_linalg_triangular_solve():
    """jax tests/batching_test.py::BatchingTest::testLaxLinalgTriangularSolve"""
    a = R(4, 10, 4) + torch.eye(4, dtype=F64)[:, None, :] * 4
    b = R(5, 4, 10, seed=1)
    ans = vmap(_tri_solve, in_axes=(1, 2))(a, b)
    close(ans, stack_loop(_tri_solve, 10, lambda i: a[:, i], lambda i: b[..., i]))
    ans = vmap(_tri_solve, in_axes=(None, 2))(a[:, 0], b)
    close(ans, stack_loop(_tri_solve, 10, lambda i: a[:, 0], lambda i: b[..., i]))
    ans = vmap(_tri_solve, in_axes=(1, None))(a, b[..., 0])
    close(ans, stack_loop(_tri_solve, 10, lambda i: a[:, i], lambda i: b[..., 0]))


def _tridiagonal_solve(dl, d, du, b):
    """lax.linalg.tridiagonal_solve: dl[0] and du[-1] are unused, as in LAPACK's gtsv."""
    A = torch.diag_embed(d) + torch.diag_embed(dl[1:], -1) + torch.diag_embed(du[:-1], 1)
    return torch.linalg.solve(A, b)


def test_lax_linalg_tridiagonal_solve():
    """jax tests/batching_test.py::BatchingTest::testLaxLinalgTridiagonalSolve"""
    dl, d, du = R(4, 10), R(4, 10, seed=1) + 4.0, R(4, 10, seed=2)
    b = R(4, 5, 10, seed=3)
    ans = vmap(_tridiagonal_solve, in_axes=(1, 1, 1, 2))(dl, d, du, b)
    expected = torch.stack(
        [_tridiagonal_solve(dl[:, i], d[:, i], du[:, i], b[..., i]) for i in range(10)]
    )
    close(ans, expected)
    ans = vmap(_tridiagonal_solve, in_axes=(None, None, None, 2))(dl[:, 0], d[:, 0], du[:, 0], b)
    expected = torch.stack(
        [_tridiagonal_solve(dl[:, 0], d[:, 0], du[:, 0], b[..., i]) for i in range(10)]
    )
    close(ans, expected)
    ans = vmap(_tridiagonal_solve, in_axes=(1, 1, 1, None))(dl, d, du, b[..., 0])
    expected = torch.stack(
        [_tridiagonal_solve(dl[:, i], d[:, i], du[:, i], b[..., 0]) for i in range(10)]
    )
    close(ans, expected)


# ---------------------------------------------------------------------------------------------
# Gathers: lax.gather with the dimension numbers of the JAX cases, as torch indexing.
# Each gather below is the indexing that lax.gather with those numbers computes.


def _gather_windows(x, idx):
    """offset_dims=(1,), collapsed=(), start_index_map=(0,), slice (2,): x[i:i+2] per index."""
    starts = idx[..., 0]
    return x[starts.unsqueeze(-1) + torch.arange(2)]


def _gather_rows(x, idx):
    """offset_dims=(1,), collapsed=(0,), start_index_map=(0,), slice (1, 3): rows, 3 columns."""
    return x[idx[..., 0]][..., :3]


def _gather_points(x, idx):
    """offset_dims=(), collapsed=(0,), start_index_map=(0,), slice (1,): x[idx[..., 0]]."""
    return x[idx[..., 0]]


_OPERAND_CASES = [
    # axis, operand shape, indices, gather
    (0, (3, 5), [[0], [2]], _gather_points),
    (1, (10, 3), [[0], [0], [0]], _gather_windows),
    (1, (10, 3, 5), [[0], [2], [1]], _gather_rows),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
@pytest.mark.parametrize("axis, shape, idxs, fun", _OPERAND_CASES)
def test_gather_batched_operand(axis, shape, idxs, fun, dtype):
    """jax tests/batching_test.py::BatchingTest::testGatherBatchedOperand"""
    operand = (R(*shape) * 5).to(dtype)
    idxs = torch.tensor(idxs)
    ans = vmap(fun, (axis, None))(operand, idxs)
    expected = stack_loop(fun, shape[axis], lambda i: operand.select(axis, i), lambda i: idxs)
    assert torch.equal(ans, expected)


@pytest.mark.parametrize("axis, shape, idxs, fun", _OPERAND_CASES)
def test_gather_grad_batched_operand(axis, shape, idxs, fun):
    """jax tests/batching_test.py::BatchingTest::testGatherGradBatchedOperand"""
    gfun = grad(lambda x, idx: torch.sum(torch.sin(fun(x, idx))))
    operand, idxs = R(*shape), torch.tensor(idxs)
    ans = vmap(gfun, (axis, None))(operand, idxs)
    expected = stack_loop(gfun, shape[axis], lambda i: operand.select(axis, i), lambda i: idxs)
    close(ans, expected)


_INDEX_CASES = [
    (0, (5,), [[[0], [2]], [[1], [3]]], _gather_points),
    (1, (10,), [[[0], [0]], [[0], [2]], [[0], [1]]], _gather_windows),
    (1, (10, 5), [[[0], [0]], [[2], [3]], [[1], [3]]], _gather_rows),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.int32])
@pytest.mark.parametrize("axis, shape, idxs, fun", _INDEX_CASES)
def test_gather_batched_indices(axis, shape, idxs, fun, dtype):
    """jax tests/batching_test.py::BatchingTest::testGatherBatchedIndices"""
    operand, idxs = (R(*shape) * 5).to(dtype), torch.tensor(idxs)
    ans = vmap(fun, (None, axis))(operand, idxs)
    expected = stack_loop(fun, idxs.shape[axis], lambda i: operand, lambda i: idxs.select(axis, i))
    assert torch.equal(ans, expected)


@pytest.mark.parametrize("axis, shape, idxs, fun", _INDEX_CASES)
def test_gather_grad_batched_indices(axis, shape, idxs, fun):
    """jax tests/batching_test.py::BatchingTest::testGatherGradBatchedIndices"""
    gfun = grad(lambda x, idx: torch.sum(torch.sin(fun(x, idx))))
    operand, idxs = R(*shape), torch.tensor(idxs)
    ans = vmap(gfun, (None, axis))(operand, idxs)
    expected = stack_loop(gfun, idxs.shape[axis], lambda i: operand, lambda i: idxs.select(axis, i))
    close(ans, expected)


_BOTH_CASES = [
    (0, 0, (2, 5), [[[0], [2]], [[1], [3]]], _gather_points),
    (1, 1, (10, 2), [[[0], [0]], [[0], [2]], [[0], [1]]], _gather_windows),
    (0, 1, (2, 10, 5), [[[0], [0]], [[2], [3]], [[1], [3]]], _gather_rows),
]


@pytest.mark.parametrize("op_axis, idxs_axis, shape, idxs, fun", _BOTH_CASES)
def test_gather_batched_both(op_axis, idxs_axis, shape, idxs, fun):
    """jax tests/batching_test.py::BatchingTest::testGatherBatchedBoth"""
    operand, idxs = R(*shape), torch.tensor(idxs)
    assert operand.shape[op_axis] == idxs.shape[idxs_axis]
    ans = vmap(fun, (op_axis, idxs_axis))(operand, idxs)
    expected = stack_loop(
        fun,
        idxs.shape[idxs_axis],
        lambda i: operand.select(op_axis, i),
        lambda i: idxs.select(idxs_axis, i),
    )
    close(ans, expected)


@pytest.mark.parametrize("op_axis, idxs_axis, shape, idxs, fun", _BOTH_CASES)
def test_gather_grad_batched_both(op_axis, idxs_axis, shape, idxs, fun):
    """jax tests/batching_test.py::BatchingTest::testGatherGradBatchedBoth"""
    gfun = grad(lambda x, idx: torch.sum(torch.sin(fun(x, idx))))
    operand, idxs = R(*shape), torch.tensor(idxs)
    ans = vmap(gfun, (op_axis, idxs_axis))(operand, idxs)
    expected = stack_loop(
        gfun,
        idxs.shape[idxs_axis],
        lambda i: operand.select(op_axis, i),
        lambda i: idxs.select(idxs_axis, i),
    )
    close(ans, expected)


def test_numpy_indexing1():
    """jax tests/batching_test.py::BatchingTest::testNumpyIndexing1"""
    a = torch.arange(2 * 3 * 4).reshape(2, 3, 4)
    ind = torch.tensor([[0, 1], [2, 0]])

    def f(a, ind):
        return a[:, ind]

    expected = torch.stack([f(a, ind[i, :]) for i in range(ind.shape[0])])
    assert torch.equal(vmap(f, (None, 0))(a, ind), expected)


def test_numpy_indexing2():
    """jax tests/batching_test.py::BatchingTest::testNumpyIndexing2"""
    a = torch.arange(2 * 3 * 4).reshape(2, 3, 4)

    def f(a):
        return a[:, torch.tensor([0, 2])]

    expected = torch.stack([f(a[:, i, :]) for i in range(a.shape[1])], dim=1)
    assert torch.equal(vmap(f)(a), expected)


def test_transpose():
    """jax tests/batching_test.py::BatchingTest::testTranspose"""
    x = torch.arange(4 * 3 * 3).reshape(4, 3, 3)
    assert torch.equal(vmap(lambda x: x + x.T)(x), x + x.swapaxes(-1, -2))


def test_transpose_permutation():
    """jax tests/batching_test.py::BatchingTest::testTransposePermutation"""
    x = torch.arange(6 * 3 * 4 * 5).reshape(6, 3, 4, 5)
    assert torch.equal(vmap(lambda x: x.permute(1, 0, 2))(x), x.permute(0, 2, 1, 3))
    assert torch.equal(vmap(lambda x: x.permute(1, 2, 0))(x), x.permute(0, 2, 3, 1))
    x = torch.arange(6 * 3 * 4 * 5).reshape(3, 4, 6, 5)
    ans = vmap(lambda x: x.permute(1, 2, 0), in_axes=2)(x)
    assert torch.equal(ans, x.permute(2, 1, 3, 0))


def test_issue354():
    """jax tests/batching_test.py::BatchingTest::testIssue354"""
    psd_mat = R(20, 10)
    psd_mat = psd_mat.T @ psd_mat
    vec = R(10, seed=1)

    def f(scale):
        chol = torch.linalg.cholesky(scale[None] * psd_mat)
        return -0.5 * torch.sum(torch.einsum("ij,j->i", chol, vec) ** 2)

    vmapped_f_grad = grad(lambda x: torch.sum(vmap(f)(x)))
    scales = torch.tensor([[0.1], [0.2], [0.3], [0.4], [0.5]], dtype=F64)
    ans = vmapped_f_grad(scales)
    expected = torch.stack([grad(f)(scale) for scale in scales])
    close(ans, expected)


def test_issue387_hessian_with_dead_code():
    """jax tests/batching_test.py::BatchingTest::testIssue387 (without jit)"""
    Rm = torch.rand(20, 2, generator=torch.Generator().manual_seed(0), dtype=F64)

    def dist_sq(R):
        dR = R[:, None, :] - R[None, :, :]
        dR = dR - torch.where(dR.abs() < 0.5, torch.zeros_like(dR), 0.5 * torch.sign(dR))
        return torch.sum(dR**2, dim=2)

    def f(R):
        _ = dist_sq(R)
        return torch.sum(R**2)

    H = hessian(f)(Rm)
    close(H, 2 * torch.eye(40, dtype=F64).reshape(20, 2, 20, 2))


def test_empty_tuples():
    """jax tests/batching_test.py::BatchingTest::testEmptyTuples"""
    result = vmap(lambda x, _: x + 1)(torch.tensor([0, 1]), ())
    assert torch.equal(result, torch.tensor([1, 2]))
    result, empty_tuple = vmap(lambda x: (x + 1, ()))(torch.tensor([0, 1]))
    assert torch.equal(result, torch.tensor([1, 2]))
    assert empty_tuple == ()


def test_index_add_batched_indexes_only():
    """jax tests/batching_test.py::BatchingTest::testIndexAddBatchedIndexesOnly"""

    def f(x, idx, y):  # x.at[idx].add(y)
        return x.index_put((idx,), torch.as_tensor(y, dtype=x.dtype), accumulate=True)

    result = vmap(f, (None, 0, None))(torch.zeros(10, dtype=F64), torch.arange(10), 1.0)
    close(result, torch.eye(10, dtype=F64))


def test_issue3883():
    """jax tests/batching_test.py::BatchingTest::testIssue3883"""

    def scalar_f(x):  # lax.dynamic_slice(x, [], [])
        return x[()]

    xs = torch.tensor([1, 2, 3, 4])
    assert torch.equal(vmap(scalar_f)(xs), torch.stack([scalar_f(x) for x in xs]))

    def scalar_f2(x):  # lax.dynamic_update_slice(x, 7, [])
        return torch.full_like(x, 7)

    assert torch.equal(vmap(scalar_f2)(xs), torch.stack([scalar_f2(x) for x in xs]))


# ---------------------------------------------------------------------------------------------
# Collectives over named axes


_COLLECTIVES = {
    "psum": (fu.psum, lambda x, axes: x.sum(dim=axes, keepdim=True)),
    "pmax": (fu.pmax, lambda x, axes: x.amax(dim=axes, keepdim=True)),
    "pmin": (fu.pmin, lambda x, axes: x.amin(dim=axes, keepdim=True)),
}
_NAME_CASES = [
    (vmap_names, collective_names)
    for vmap_names in [("i",), ("i", "j"), ("i", "j", "k")]
    for size in range(1, len(vmap_names) + 1)
    for subset in it.combinations(vmap_names, size)
    for collective_names in it.permutations(subset)
]


@pytest.mark.parametrize("collective", sorted(_COLLECTIVES))
@pytest.mark.parametrize(
    "vmap_names, collective_names",
    _NAME_CASES,
    ids=["".join(a) + "-" + "".join(b) for a, b in _NAME_CASES],
)
def test_comm_assoc_collective(collective, vmap_names, collective_names):
    """jax tests/batching_test.py::BatchingTest::testCommAssocCollective"""
    op, bulk = _COLLECTIVES[collective]
    x = torch.arange(8, dtype=F64).reshape(2, 2, 2)

    def f(x):
        return x - op(x, collective_names)

    for i, name in enumerate(vmap_names):  # non-zero in and out axes, as JAX
        f = vmap(f, axis_name=name, in_axes=i, out_axes=i)
    pos_axis = [i for i, name in enumerate(vmap_names) if name in collective_names]
    close(f(x), x - bulk(x, pos_axis))
    if collective == "psum":
        check_grads(f, (x,), order=2, modes=("rev",))


def test_negative_axes():
    """jax tests/batching_test.py::BatchingTest::testNegativeAxes"""
    x = torch.arange(3 * 4 * 5).reshape(3, 4, 5)
    assert torch.equal(vmap(torch.sum, in_axes=-3)(x), x.sum(dim=(1, 2)))
    assert torch.equal(vmap(torch.sum, in_axes=-2)(x), x.sum(dim=(0, 2)))
    assert torch.equal(vmap(torch.sum, in_axes=-1)(x), x.sum(dim=(0, 1)))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "axis -4 is out of range for args[0], which has 3 dimensions (shape (3, 4, 5)); "
            "expected an axis in [-3, 2], got -4."
        ),
    ):
        vmap(torch.sum, in_axes=-4)(x)

    def ident(y):
        return y

    assert torch.equal(vmap(ident, in_axes=0, out_axes=-3)(x), x)
    assert torch.equal(vmap(ident, in_axes=0, out_axes=-2)(x), x.permute(1, 0, 2))
    assert torch.equal(vmap(ident, in_axes=0, out_axes=-1)(x), x.permute(1, 2, 0))
    with pytest.raises(ValueError, match=re.escape("out_axes -4 is out of range for out")):
        vmap(ident, in_axes=0, out_axes=-4)(x)


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/vmap.md#how-it-differs-from-torchfuncvmap "
    "(a Python number in the output is passed through unmapped, not broadcast to out_axes)",
)
def test_negative_axes_python_number_output():
    """jax tests/batching_test.py::BatchingTest::testNegativeAxes (the unmapped 7)"""
    out = vmap(lambda *xs: xs, in_axes=(0, None), out_axes=(0, -1))(torch.arange(5), 7)[1]
    assert torch.equal(torch.as_tensor(out), torch.full((5,), 7))


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/vmap.md#how-it-differs-from-torchfuncvmap "
    "(non-tensor output leaves are never mapped, so their out_axes is not checked)",
)
def test_negative_axes_python_number_output_out_of_bounds():
    """jax tests/batching_test.py::BatchingTest::testNegativeAxes (out_axes -2 on the 7)"""
    with pytest.raises(ValueError, match="out of"):
        vmap(lambda *xs: xs, in_axes=(0, None), out_axes=(0, -2))(torch.arange(5), 7)


def test_axis_index():
    """jax tests/batching_test.py::BatchingTest::testAxisIndex"""
    x = torch.arange(10, dtype=torch.int32)
    ans = vmap(lambda x: x - fu.axis_index("i"), axis_name="i")(x)
    assert torch.equal(ans, x - torch.arange(10))


def test_vmap_kwargs():
    """jax tests/batching_test.py::BatchingTest::testVmapKwargs"""

    def f(a, b):
        return (2 * a, 3 * b)

    x = vmap(f)(torch.tensor([1]), torch.tensor([2]))
    y = vmap(f)(a=torch.tensor([1]), b=torch.tensor([2]))
    tree_allclose(x, y)


def test_grad_of_psum():
    """jax tests/batching_test.py::BatchingTest::testGradOfPsum (JAX's value, -5, as literal)"""
    f = vmap(grad(lambda x: -fu.psum(x, "i")), out_axes=None, axis_name="i")
    close(f(torch.ones(5, dtype=F64)), torch.tensor(-5.0, dtype=F64))


def _gather_i(x):
    return fu.all_gather(x, axis_name="i")


def test_all_gather_to_unmapped():
    """jax tests/batching_test.py::BatchingTest::testAllGatherToUnmapped"""
    x = torch.arange(15).reshape(3, 5)
    ans = vmap(_gather_i, axis_name="i", in_axes=1, out_axes=None)(x)
    assert torch.equal(ans, x.T)


def test_batched_all_gather():
    """jax tests/batching_test.py::BatchingTest::testBatchedAllGather"""
    x = torch.arange(15).reshape(3, 5)
    res = vmap(vmap(_gather_i, axis_name="i", out_axes=None), axis_name="j")(x)
    assert torch.equal(res, x)
    res = vmap(vmap(_gather_i, axis_name="j"), axis_name="i", out_axes=None)
    assert torch.equal(res(x), x.T)


def test_all_gather_tiled():
    """jax tests/batching_test.py::BatchingTest::testAllGatherTiled"""
    x = torch.arange(60).reshape(4, 3, 5)
    f = vmap(
        lambda x: fu.all_gather(x, "i", tiled=True), axis_name="i", in_axes=(1,), out_axes=None
    )
    assert torch.equal(f(x), x.permute(1, 0, 2).reshape(-1, 5))


def test_batched_all_gather_tiled():
    """jax tests/batching_test.py::BatchingTest::testBatchedAllGatherTiled"""
    x = torch.arange(60).reshape(4, 3, 5)

    def f(x):
        return fu.all_gather(x, "i", tiled=True)

    res = vmap(vmap(f, in_axes=1, out_axes=1), axis_name="i", in_axes=1, out_axes=None)(x)
    assert torch.equal(res, x.permute(1, 0, 2).reshape(-1, 5))


def test_all_gather_vjp():
    """jax tests/batching_test.py::BatchingTest::testAllGatherVjp"""
    x, y_bar = R(3, 4), R(3, 3, 4, seed=1)
    (x_bar,) = vmap(lambda x, y_bar: vjp(_gather_i, x)[1](y_bar), axis_name="i")(x, y_bar)
    close(x_bar, y_bar.sum(0))


def test_all_gather_of_const():
    """jax tests/batching_test.py::BatchingTest::testAllGatherOfConst"""

    def f(x):
        a = fu.all_gather(torch.ones_like(x), axis_name="i")
        b = fu.all_gather(1, axis_name="i")
        return a, b

    x = torch.arange(15).reshape(3, 5)
    a, b = vmap(f, axis_name="i", in_axes=1, out_axes=None)(x)
    assert torch.equal(a, torch.ones(5, 3, dtype=x.dtype))
    assert torch.equal(torch.as_tensor(b), torch.ones(5, dtype=torch.as_tensor(b).dtype))


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/vmap.md#how-it-differs-from-torchfuncvmap "
    "(non-tensor outputs such as strings pass through unmapped instead of raising TypeError)",
)
def test_non_jax_typed_output():
    """jax tests/batching_test.py::BatchingTest::testNonJaxTypedOutput"""
    with pytest.raises(TypeError):
        vmap(lambda x: "hello")(torch.arange(5))


def test_non_tensor_output_passes_through():
    """jax tests/batching_test.py::BatchingTest::testNonJaxTypedOutput (this library's rule)"""
    assert vmap(lambda x: "hello")(torch.arange(5)) == "hello"
