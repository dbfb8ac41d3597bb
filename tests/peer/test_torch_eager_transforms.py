"""Port of PyTorch's ``test/functorch/test_eager_transforms.py`` to functorch_utils.

Each test names the torch test it comes from. torch.func's names and conventions are translated to
ours (``in_axes``/``out_axes``, ``value_and_grad`` returning ``(value, grads)``, ``TypeError``/
``ValueError`` for user mistakes, JAX's conjugate for gradients of complex inputs). A torch
expectation that our documented semantics contradict is kept as a strict xfail citing the docs page,
usually next to a test of what we do instead; a library bug is a strict xfail starting "bug:".
Everything runs on CPU.
"""

from __future__ import annotations

import copy
import math
import re
from functools import partial

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.func import functional_call, stack_module_state

import functorch_utils as fu
from functorch_utils import tree_util

SHARP = "docs/sharp_edges.md#differences-from-torchfunc"

jacapis = pytest.mark.parametrize("jacapi", [fu.jacrev, fu.jacfwd], ids=["jacrev", "jacfwd"])


def assert_tree_close(actual, expected, **kw):
    la, sa = tree_util.tree_flatten(actual)
    le, se = tree_util.tree_flatten(expected)
    assert sa == se, f"structures differ: {sa} vs {se}"
    for a, e in zip(la, le):
        if isinstance(e, torch.Tensor) or isinstance(a, torch.Tensor):
            torch.testing.assert_close(a, e, **kw)
        else:
            assert a == e


# --------------------------------------------------------------------------------------------
# TestGradTransform
# --------------------------------------------------------------------------------------------


def test_primitive():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_primitive"""
    x = torch.randn([])
    torch.testing.assert_close(fu.grad(torch.sin)(x), torch.cos(x))


def test_composite_simple():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_composite_simple"""
    x = torch.randn(2, 3, 4)
    torch.testing.assert_close(fu.grad(lambda x: torch.flatten(x).sum())(x), torch.ones_like(x))


def test_linear_nd_inplace_activation():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_linear_nd_inplace_activation

    The dispatch-mode check of torch's internal linear fast path is not ported; the values are.
    """
    x = torch.randn(2, 3, 8, dtype=torch.double)
    w = torch.randn(16, 8, dtype=torch.double)
    b = torch.randn(16, dtype=torch.double)

    def f(x, w, b):
        return F.linear(x, w, b).relu_().sum()

    result = fu.grad(f, argnums=(0, 1, 2))(x, w, b)
    xr, wr, br = (t.clone().requires_grad_() for t in (x, w, b))
    (xr @ wr.t() + br).relu().sum().backward()
    assert_tree_close(result, (xr.grad, wr.grad, br.grad))


def test_fn_with_kwargs():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_fn_with_kwargs"""

    def foo(x, y):
        return (x * y).sum()

    x, y = torch.randn(3), torch.randn(3)
    torch.testing.assert_close(fu.grad(foo)(x, y=y), fu.grad(foo)(x, y))


def test_composite_complicated():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_composite_complicated"""
    x, y = torch.randn(3), torch.randn(3, 5)

    def foo(x, y):
        return (x @ y).sum()

    result = fu.grad(foo)(x, y)
    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(foo(xr, y), xr)
    torch.testing.assert_close(result, expected)


def test_composite_two_ops():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_composite_two_ops"""
    n, c = 2, 5
    y = torch.randn(n, c)
    targets = torch.randint(0, c, (n,))

    def foo(y, targets):
        return F.cross_entropy(y, targets)

    result = fu.grad(foo)(y, targets)
    yr = y.clone().requires_grad_()
    (expected,) = torch.autograd.grad(foo(yr, targets), yr)
    torch.testing.assert_close(result, expected)


@pytest.mark.parametrize(
    "get_attr",
    [lambda x: x.shape, lambda x: x.dtype, lambda x: x.is_cuda, lambda x: x.numel()],
    ids=["shape", "dtype", "is_cuda", "numel"],
)
def test_attributes(get_attr):
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_shape (and
    test_dtype, test_is_cuda, test_numel)"""
    x = torch.randn(2, 3, 5, dtype=torch.double)
    expected = get_attr(x)
    seen = []

    def foo(x):
        seen.append(get_attr(x))
        return x.sum()

    fu.grad(foo)(x)
    assert seen == [expected]


def test_layout_sparse():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_layout_sparse

    torch keeps the sparse layout through grad; here a sparse input is either treated the same way
    or refused with a TypeError that names the argument and says how to convert it.
    """
    indices = torch.tensor([[0, 1, 1], [2, 0, 2]])
    values = torch.tensor([3.0, 4.0, 5.0])
    with torch.sparse.check_sparse_tensor_invariants(True):
        sparse_x = torch.sparse_coo_tensor(indices, values, (2, 3))
    layouts = []

    def foo(x):
        layouts.append(x.layout)
        return x.coalesce()._values().sum()

    try:
        result = fu.grad(foo)(sparse_x)
    except TypeError as e:
        assert re.search(r"args\[0\].*sparse.*to_dense", str(e))
    else:
        assert layouts == [torch.sparse_coo]
        assert result.layout == torch.sparse_coo


def test_inplace():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inplace"""
    x = torch.randn([])
    torch.testing.assert_close(fu.grad(lambda x: x.clone().sin_())(x), x.cos())


def test_inplace_on_view():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inplace_on_view"""

    def foo(x):
        y = x.clone()
        y0 = y[0]
        y0.sin_()
        return y.sum()

    x = torch.randn(3)
    result = fu.grad(foo)(x)
    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(foo(xr), xr)
    torch.testing.assert_close(result, expected)


def test_inplace_on_view_base():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inplace_on_view_base"""

    def foo(x):
        y = x.clone()
        y0 = y[0]
        y.sin_()
        return y0

    x = torch.randn(3)
    result = fu.grad(foo)(x)
    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(foo(xr), xr)
    torch.testing.assert_close(result, expected)


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/sharp_edges.md#differences-from-torchfunc (a write into "
    "a closed-over tensor is not refused at top level, where reverse mode runs on the tape)",
)
def test_inplace_on_captures():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inplace_on_captures
    (also TestJvp::test_inplace_on_captures)"""
    x = torch.tensor([1.0, 2.0, 3.0])
    captured = torch.randn(3)
    before = captured.clone()

    def foo(x):
        captured.copy_(x)
        return (x * captured).sum()

    with pytest.raises((TypeError, ValueError), match="captur"):
        fu.grad(foo)(x)
    assert torch.equal(captured, before) and captured.grad_fn is None


def test_nesting_simple():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_nesting_simple"""
    x = torch.randn([])
    torch.testing.assert_close(fu.grad(fu.grad(torch.sin))(x), -torch.sin(x))


def test_escaped_wrappers_are_ignored():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_escaped_wrappers_are_ignored

    Public behaviour only: a value that escapes the transform is usable afterwards.
    """
    x = torch.randn([])
    escaped = []

    def foo(x):
        y = x.sin()
        escaped.append(y)
        return y

    fu.grad(foo)(x)
    torch.testing.assert_close(escaped[0].sum().detach(), x.sin().sum())


def test_manual_seed_inside_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_manual_seed_inside_grad"""
    x = torch.randn([])

    def f(x):
        torch.manual_seed(0)
        return x * torch.randn_like(x)

    result = fu.grad(f)(x)
    xr = x.clone().requires_grad_()
    (expected,) = torch.autograd.grad(f(xr), xr)
    torch.testing.assert_close(result, expected)


def test_vjp():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp"""
    x = torch.randn([])
    out, vjp_fn = fu.vjp(torch.sin, x)
    torch.testing.assert_close(out, x.sin())
    v = torch.randn([])
    (result,) = vjp_fn(v)
    torch.testing.assert_close(result, v * x.cos())


def test_vjp_two_outputs():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp_two_outputs"""
    result, vjp_fn = fu.vjp(lambda x: (x, x), torch.tensor(1.0))
    (g,) = vjp_fn(result)
    torch.testing.assert_close(g, torch.tensor(2.0))


def test_conj_bit():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_conj_bit

    Complex gradients follow JAX: the conjugate of torch's sgn(x) (docs/sharp_edges.md).
    """
    x = torch.tensor(1 + 1j)

    def foo(x):
        assert not x.is_conj()
        y = x.conj()
        assert y.is_conj()
        return y.abs()

    res = fu.grad(foo)(x)
    torch.testing.assert_close(res, torch.sgn(x).conj())


def test_composed_with_autograd():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_composed_with_autograd"""
    x = torch.randn([], requires_grad=True)
    y = fu.grad(torch.sin)(x)
    (result,) = torch.autograd.grad(y, x)
    torch.testing.assert_close(result, -x.sin().detach())


def test_grad_of_vjp_composition():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_grad_of_vjp_composition"""
    x, y = torch.randn([]), torch.randn([])

    def foo(x, y):
        _, vjp_fn = fu.vjp(torch.sin, x)
        return fu.grad(lambda y: vjp_fn(y)[0])(y)

    torch.testing.assert_close(foo(x, y), x.cos())


def test_vjp_of_grad_composition():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp_of_grad_composition"""
    x, y = torch.randn([]), torch.randn([])
    _, vjp_fn = fu.vjp(fu.grad(torch.sin), x)
    torch.testing.assert_close(vjp_fn(y)[0], -y * x.sin())


def test_grad_of_vjp_of_grad_composition():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_grad_of_vjp_of_grad_composition"""
    x, y = torch.randn([]), torch.randn([])

    def foo(x, y):
        _, vjp_fn = fu.vjp(fu.grad(lambda x: -torch.cos(x)), x)
        return fu.grad(lambda y: vjp_fn(y)[0])(y)

    torch.testing.assert_close(foo(x, y), x.cos())


def test_views():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_views"""
    x = torch.randn([], requires_grad=True)
    y = torch.randn([], requires_grad=True)

    def silly_sin(x):
        return x.view([]).sin()

    result = fu.grad(silly_sin)(x) + torch.cos(y)
    gx, gy = torch.autograd.grad(result, [x, y])
    torch.testing.assert_close(gx, -x.sin().detach())
    torch.testing.assert_close(gy, -y.sin().detach())


def test_view_inplace_simple():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_view_inplace_simple"""

    def foo(x):
        x = x.clone()
        x.view([]).sin_()
        return x

    x = torch.randn([], requires_grad=True)
    torch.testing.assert_close(fu.grad(foo)(x), x.cos().detach())


def test_invalid_argnums():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_invalid_argnums

    torch raises RuntimeError; here argnums mistakes are TypeErrors naming argnums. A list is
    accepted (JAX), so ``argnums=[0]`` is not an error here.
    """
    x, y = torch.randn([]), torch.randn([])
    msg = re.escape("grad(mul): argnums=-3 is out of range for a call with 2 positional arguments")
    with pytest.raises(TypeError, match=msg):
        fu.grad(torch.mul, argnums=-3)(x, y)
    with pytest.raises(TypeError, match=r"argnums=2 is out of range"):
        fu.grad(torch.mul, argnums=2)(x, y)
    with pytest.raises(TypeError, match=r"argnums=\('0',\).*argnums must be an int"):
        fu.grad(torch.mul, argnums=("0",))(x, y)
    (gx,) = fu.grad(torch.mul, argnums=[0])(x, y)
    torch.testing.assert_close(gx, y)


@pytest.mark.parametrize("argnums", [(0, 0), (0, -2)])
def test_duplicate_argnums(argnums):
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_invalid_argnums
    (the "must be unique" cases): a clear error, or each entry its own gradient."""
    x, y = torch.randn([]), torch.randn([])
    try:
        g = fu.grad(torch.mul, argnums=argnums)(x, y)
    except (TypeError, ValueError) as e:
        assert "argnums" in str(e)
    else:
        torch.testing.assert_close(g, (y, y))


def test_argnums():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_argnums"""
    x, y = torch.randn([]), torch.randn([])
    torch.testing.assert_close(fu.grad(torch.mul, argnums=0)(x, y), y)
    torch.testing.assert_close(fu.grad(torch.mul, argnums=1)(x, y), x)
    (gx,) = fu.grad(torch.mul, argnums=(0,))(x, y)
    torch.testing.assert_close(gx, y)
    gx, gy = fu.grad(torch.mul, argnums=(0, 1))(x, y)
    torch.testing.assert_close(gx, y)
    torch.testing.assert_close(gy, x)


def test_out_of_order_argnums():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_out_of_order_argnums"""
    x, y = torch.randn([]), torch.randn([])
    gy, gx = fu.grad(torch.mul, argnums=(1, 0))(x, y)
    torch.testing.assert_close(gx, y)
    torch.testing.assert_close(gy, x)


def test_negative_argnums():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_negative_argnums"""
    x, y = torch.randn([]), torch.randn([])
    torch.testing.assert_close(fu.grad(torch.mul, argnums=-2)(x, y), y)
    torch.testing.assert_close(fu.grad(torch.mul, argnums=-1)(x, y), x)
    (gx,) = fu.grad(torch.mul, argnums=(-2,))(x, y)
    torch.testing.assert_close(gx, y)
    gx, gy = fu.grad(torch.mul, argnums=(-2, -1))(x, y)
    torch.testing.assert_close(gx, y)
    torch.testing.assert_close(gy, x)


def test_grad_pytree_inputs():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_grad_pytree_inputs"""
    x = torch.randn([])

    def f(a, b):
        x, y = a
        return 1 * x + 2 * y + 3 * b["foo"]

    args = ((x, x), {"foo": x})
    one, two, three = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    gx, gy = fu.grad(f)(*args)
    torch.testing.assert_close((gx, gy), (one, two))
    ((gx, gy),) = fu.grad(f, argnums=(0,))(*args)
    torch.testing.assert_close((gx, gy), (one, two))
    (gx, gy), gz = fu.grad(f, argnums=(0, 1))(*args)
    torch.testing.assert_close((gx, gy, gz["foo"]), (one, two, three))


def test_grad_aux_tensor():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_grad_aux_tensor"""
    x = torch.randn(3)
    with pytest.raises(TypeError, match=r"grad\(<lambda>\)"):
        fu.grad(lambda t: [t, t], has_aux=True)(x)
    with pytest.raises(TypeError, match=r"grad\(<lambda>\): with has_aux=True .* pair"):
        fu.grad(lambda t: (t, t + 2, t + 3), has_aux=True)(x)

    def f(t):
        return t.sin().sum(), t.cos()

    out, aux = fu.grad(f, has_aux=True)(x)
    torch.testing.assert_close(aux, x.cos())
    torch.testing.assert_close(out, x.cos())


def test_grad_aux_pytree():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_grad_aux_pytree

    torch refuses non-tensor aux leaves; here aux may be any pytree and comes back unchanged.
    """

    def f(x):
        return x.sin().sum(), {"a": x.cos(), "b": [x.tan()]}

    x = torch.randn(3)
    out, aux = fu.grad(f, has_aux=True)(x)
    assert_tree_close(aux, f(x)[1])
    torch.testing.assert_close(out, x.cos())

    for extra in [1, 1.0, "abc"]:
        _, aux = fu.grad(lambda x, extra=extra: (x.sum(), extra), has_aux=True)(x)
        assert aux == extra
        _, aux = fu.grad(lambda x, extra=extra: (x.sum(), [x, extra]), has_aux=True)(x)
        assert aux[1] == extra and torch.equal(aux[0], x)


def test_zero_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_zero_grad"""

    def f(x):
        return (x["a"] ** 2.0).sum()

    inps = {"a": torch.randn(10) + 3, "b": torch.randn(10)}
    grads = fu.grad(f)(inps)
    assert grads["a"].sum() != 0.0
    torch.testing.assert_close(grads["b"], torch.zeros(10))


def test_unrelated_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_unrelated_grad"""
    x, y = torch.tensor(1.0), torch.tensor(2.0)
    torch.testing.assert_close(fu.grad(lambda x: y)(x), torch.zeros_like(x))


def test_unrelated_vjp():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_unrelated_vjp"""
    x, y, v = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(1.0)
    _, vjp_fn = fu.vjp(lambda x: y, x)
    torch.testing.assert_close(vjp_fn(v), (torch.zeros_like(x),))


def test_unrelated_vjp_multiple_inputs_outputs():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_unrelated_vjp_multiple_inputs_outputs"""
    w, x, y, v = torch.tensor(3.0), torch.tensor(4.0), torch.tensor(2.0), torch.tensor(1.0)
    _, vjp_fn = fu.vjp(lambda w, x: (y, y, x), w, x)
    torch.testing.assert_close(vjp_fn((v, v, v)), (torch.zeros_like(x), torch.ones_like(x)))


def test_unrelated_hessian():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_unrelated_hessian"""
    n, m = 5, 3
    w = torch.randn(n, m)
    x = torch.randn(m)
    result = fu.jacrev(fu.jacrev(lambda x: w @ x))(x)
    torch.testing.assert_close(result, torch.zeros(n, m, m))


def test_vjp_pytree_input():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp_pytree_input"""
    x, v = torch.randn([]), torch.randn([])
    out, vjp_fn = fu.vjp(lambda x: x[0] * x[1][0], (x, (x, x)))
    torch.testing.assert_close(out, x * x)
    assert_tree_close(vjp_fn(v), ((x * v, (x * v, torch.tensor(0.0))),))


def test_vjp_pytree_output():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp_pytree_output"""
    x, v1, v2, v3 = (torch.randn([]) for _ in range(4))
    _, vjp_fn = fu.vjp(lambda x: (x, (x, x)), x)
    (result,) = vjp_fn((v1, (v2, v3)))
    torch.testing.assert_close(result, v1 + v2 + v3)


def test_vjp_outputs_can_any_pytree():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp_outputs_can_any_pytree

    The container outputs; a string output is a TypeError naming the output.
    """
    x, t = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(TypeError, match=r"vjp\(<lambda>\): output out is not a tensor"):
        fu.vjp(lambda _: "abc", x)

    output, vjp_fn = fu.vjp(lambda x: [x, x.sum()], x)
    (vjp_out,) = vjp_fn([t, t.sum()])
    assert isinstance(output, list) and len(output) == 2
    torch.testing.assert_close(vjp_out, t + t.sum())

    output, vjp_fn = fu.vjp(lambda x: {"x": x, "xsum": x.sum()}, x)
    (vjp_out,) = vjp_fn({"x": t, "xsum": t.sum()})
    assert isinstance(output, dict) and set(output) == {"x", "xsum"}
    torch.testing.assert_close(vjp_out, t + t.sum())

    def composite_output(x):
        out = x.sum()
        return [(out, {"a": x, "out": [x, out]})]

    output, vjp_fn = fu.vjp(composite_output, x)
    (vjp_out,) = vjp_fn([(t.sum(), {"a": t, "out": [t, t.sum()]})])
    assert isinstance(output, list) and isinstance(output[0], tuple)
    assert isinstance(output[0][1], dict)
    torch.testing.assert_close(vjp_out, 2 * t + 2 * t.sum())


def test_vjp_empty_outputs():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp_outputs_can_any_pytree
    (the ``None``/``()`` outputs): torch refuses them in vjp itself. Here ``None`` is refused as a
    missing ``return`` and ``()`` is refused or (JAX) an empty pytree whose cotangent must be
    ``()`` too: either way a TypeError/ValueError naming the call."""
    x, t = torch.randn(2, 3), torch.randn(2, 3)
    for output in [None, ()]:
        with pytest.raises((TypeError, ValueError), match=r"vjp\(<lambda>\)"):
            _, vjp_fn = fu.vjp(lambda _, output=output: output, x)
            vjp_fn(t)


def test_vjp_pytree_error():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp_pytree_error"""
    x, v1, v2, v3 = (torch.randn([]) for _ in range(4))
    _, vjp_fn = fu.vjp(lambda x: (x, (x, x)), x)
    with pytest.raises(ValueError, match="cotangent does not have the structure"):
        vjp_fn(((v1, (v2, v3)),))


def test_vjp_aux_tensor():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp_aux_tensor"""
    x = torch.randn(3)
    with pytest.raises(TypeError, match=r"vjp\(<lambda>\): with has_aux=True .* pair"):
        fu.vjp(lambda t: (t, t + 2, t + 3), x, has_aux=True)

    def f(t):
        return t.sin(), t.cos()

    out, vjp_fn, aux = fu.vjp(f, x, has_aux=True)
    torch.testing.assert_close(aux, x.cos())
    torch.testing.assert_close(out, x.sin())
    v = torch.randn(3)
    (grad_x,) = vjp_fn(v)
    torch.testing.assert_close(grad_x, v * x.cos())


def test_vjp_aux_list_pair():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp_aux_tensor
    (the ``[t, t]`` case: torch refuses it, JAX unpacks any pair)"""
    x = torch.randn(3)
    out, _, aux = fu.vjp(lambda t: [t.sin(), t], x, has_aux=True)
    torch.testing.assert_close(out, x.sin())
    torch.testing.assert_close(aux, x)


def test_vjp_aux_pytree():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_vjp_aux_pytree"""

    def f(x):
        return x.sin(), {"a": x.cos(), "b": [x.tan()]}

    x = torch.randn(3)
    out, vjp_fn, aux = fu.vjp(f, x, has_aux=True)
    expected_out, expected_aux = f(x)
    torch.testing.assert_close(out, expected_out)
    assert_tree_close(aux, expected_aux)
    v = torch.randn(3)
    (grad_x,) = vjp_fn(v)
    torch.testing.assert_close(grad_x, v * x.cos())

    for extra in [1, 1.0, "abc"]:
        _, _, aux = fu.vjp(lambda x, extra=extra: (x, extra), x, has_aux=True)
        assert aux == extra


def test_advanced_indexing():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_advanced_indexing"""

    def f(value):
        log_prob = torch.ones(())
        val = torch.zeros(()) > 0
        log_prob[val] = 0
        return value

    result = fu.grad(f)(torch.randn(()))
    torch.testing.assert_close(result, torch.ones_like(result))

    def f2(value):
        value = value.clone()
        value[value > 0] = 0
        return value.sum()

    x = torch.randn(100)
    torch.testing.assert_close(fu.grad(f2)(x), (x <= 0).type_as(x))


def test_tensor_ctor_inside_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_tensor_ctor_inside_grad"""
    x = torch.tensor(3.14)
    torch.testing.assert_close(fu.grad(lambda x: x * torch.tensor(2.0))(x), torch.tensor(2.0))


def test_print_captured_tensor_inside_transform():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_print_captured_tensor_inside_transform"""
    x = torch.tensor([1.0, 2.0, 3.0])
    seen = []

    def f(y):
        seen.append(repr(x))
        return y

    fu.vjp(f, torch.randn(4))
    assert seen == [repr(x)]


def test_no_grad_outside():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_no_grad_outside"""
    x = torch.randn([], requires_grad=True)
    with torch.no_grad():
        y = fu.grad(torch.sin)(x)
    torch.testing.assert_close(y, x.cos().detach())
    assert not y.requires_grad


def test_no_grad_inside():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_no_grad_inside"""

    def f(x):
        with torch.no_grad():
            shift = x**2
        return x**2 - shift

    x = torch.randn([])
    torch.testing.assert_close(fu.grad(f)(x), 2 * x)
    torch.testing.assert_close(fu.grad(fu.grad(f))(x), torch.tensor(2.0))

    x = torch.randn([], requires_grad=True)
    y = fu.grad(f)(x)
    (z,) = torch.autograd.grad(y, x)
    torch.testing.assert_close(z, torch.tensor(2.0))


def test_no_grad_mixed():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_no_grad_mixed"""

    def f(x):
        with torch.no_grad():
            shift = x**2
        return x**2 - shift

    x = torch.randn([], requires_grad=True)
    with torch.no_grad():
        y = fu.grad(f)(x)
    torch.testing.assert_close(y, 2 * x.detach())
    assert not y.requires_grad


def test_no_grad_nested_simple():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_no_grad_nested_simple"""

    def h(x):
        with torch.no_grad():
            shift = fu.grad(lambda x: 0.25 * x**4)(x)
        return x**3 - shift

    x = torch.tensor(1.5, requires_grad=True)
    y = fu.grad(h)(x)
    torch.testing.assert_close(y, 3 * x.detach() ** 2)
    (z,) = torch.autograd.grad(y, x)
    torch.testing.assert_close(z, 6 * x.detach())


def test_no_grad_nested_complicated():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_no_grad_nested_complicated"""

    def f(x):
        with torch.no_grad():
            shift = x**3
        return x**3 - shift

    def g(x):
        r1 = fu.grad(f)(x)
        with torch.no_grad():
            shift = fu.grad(f)(x)
        return r1 - shift

    x = torch.randn([], requires_grad=True)
    y = fu.grad(g)(x)
    # the only differentiable part of g is x ** 3
    torch.testing.assert_close(y, 6 * x.detach())
    (z,) = torch.autograd.grad(y, x)
    torch.testing.assert_close(z, torch.tensor(6.0))


def test_no_grad_value():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_no_grad_value
    (grad_and_value becomes value_and_grad, JAX's order)"""

    def h(x):
        with torch.no_grad():
            value, _ = fu.value_and_grad(lambda x: x**3)(x)
        return x**3 - value

    x = torch.tensor(1.6, requires_grad=True)
    y = fu.grad(h)(x)
    torch.testing.assert_close(y, 3 * x.detach() ** 2)
    (z,) = torch.autograd.grad(y, x)
    torch.testing.assert_close(z, 6 * x.detach())


def test_no_grad_outside_vjp():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_no_grad_outside_vjp"""
    x = torch.tensor(2.0, requires_grad=True)
    with torch.no_grad():
        out, vjp_fn = fu.vjp(lambda x: x**2, x)
        (y,) = vjp_fn(torch.tensor(1.0))
    torch.testing.assert_close(y, 2 * x.detach())
    assert not y.requires_grad
    assert not out.requires_grad


def test_no_grad_outside_vjp_fn():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_no_grad_outside_vjp_fn"""
    x = torch.tensor(3.14, requires_grad=True)
    out, vjp_fn = fu.vjp(lambda x: x**2, x)
    with torch.no_grad():
        (y,) = vjp_fn(torch.tensor(1.0))
    torch.testing.assert_close(y.detach(), 2 * x.detach())
    assert out.requires_grad
    (z,) = torch.autograd.grad(out, x)
    torch.testing.assert_close(z, 2 * x.detach())


def test_no_grad_outside_vjp_fn_detached():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_no_grad_outside_vjp_fn
    (the requires_grad check)"""
    x = torch.tensor(3.14, requires_grad=True)
    _, vjp_fn = fu.vjp(lambda x: x**2, x)
    with torch.no_grad():
        (y,) = vjp_fn(torch.tensor(1.0))
    assert not y.requires_grad


def test_no_grad_outside_vjp_only():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_no_grad_outside_vjp_only"""
    x = torch.tensor(3.14, requires_grad=True)
    with torch.no_grad():
        out, vjp_fn = fu.vjp(lambda x: x**2, x)
    (y,) = vjp_fn(torch.tensor(1.0))
    torch.testing.assert_close(y, 2 * x.detach())
    assert not out.requires_grad


def test_inference_mode_outside_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inference_mode_outside_grad
    (and test_inference_mode_nograd_outside_grad)"""
    x = torch.randn(3)
    with torch.inference_mode():
        y = fu.grad(lambda x: (x**2).sum())(x)
    torch.testing.assert_close(y, 2 * x)
    with torch.inference_mode(), torch.no_grad():
        y = fu.grad(lambda x: (x**2).sum())(x)
    torch.testing.assert_close(y, 2 * x)


def test_inference_mode_outside_vjp():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inference_mode_outside_vjp"""
    x = torch.randn(3)
    with torch.inference_mode():
        _, vjp_fn = fu.vjp(lambda x: (x**2).sum(), x)
        (y,) = vjp_fn(torch.tensor(1.0))
    torch.testing.assert_close(y, 2 * x)


def test_inference_mode_outside_jvp():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inference_mode_outside_jvp"""
    x, t = torch.randn(3), torch.ones(3)
    with torch.inference_mode():
        _, y = fu.jvp(lambda x: (x**2).sum(), (x,), (t,))
    torch.testing.assert_close(y, (2 * x * t).sum())


def test_inference_mode_outside_jacrev():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inference_mode_outside_jacrev"""
    x = torch.randn(3)
    with torch.inference_mode():
        y = fu.jacrev(lambda x: x**2)(x)
    torch.testing.assert_close(y, torch.diag(2 * x))


def test_inference_mode_outside_vmap_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inference_mode_outside_vmap_grad"""
    xs = torch.randn(5, 3)
    with torch.inference_mode():
        ys = fu.vmap(fu.grad(lambda x: (x**2).sum()))(xs)
    torch.testing.assert_close(ys, 2 * xs)


def test_inference_mode_outside_grad_vmap():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inference_mode_outside_grad_vmap"""
    x = torch.randn(3)
    with torch.inference_mode():
        y = fu.grad(lambda x: fu.vmap(lambda x: (x**2).sum())(x).sum())(x)
    torch.testing.assert_close(y, 2 * x)


def test_inference_mode_nested_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inference_mode_nested_grad"""
    x = torch.randn([])
    with torch.inference_mode():
        y = fu.grad(fu.grad(lambda x: x**3))(x)
    torch.testing.assert_close(y, 6 * x)


def test_inference_mode_jacrev_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inference_mode_jacrev_grad"""
    x = torch.randn(3)
    with torch.inference_mode():
        h = fu.jacrev(fu.grad(lambda x: (x**3).sum()))(x)
    torch.testing.assert_close(h, torch.diag(6 * x))


def test_inference_mode_inside_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inference_mode_inside_grad"""

    def f(x):
        with torch.inference_mode():
            c = x**2
        return x - c

    x = torch.randn(3)
    with torch.inference_mode():
        y = fu.grad(lambda x: f(x).sum())(x)
    torch.testing.assert_close(y, torch.ones_like(x))


def test_inference_mode_restored():
    """torch test/functorch/test_eager_transforms.py::TestGradTransform::test_inference_mode_restored"""
    assert not torch.is_inference_mode_enabled()
    with torch.inference_mode():
        assert torch.is_inference_mode_enabled()
        fu.grad(lambda x: (x**2).sum())(torch.randn(3))
        assert torch.is_inference_mode_enabled()
    assert not torch.is_inference_mode_enabled()


# --------------------------------------------------------------------------------------------
# TestAutogradFunction, TestAutogradFunctionVmapAPI
# --------------------------------------------------------------------------------------------


def test_set_materialize_grads():
    """torch test/functorch/test_eager_transforms.py::TestAutogradFunction::test_set_materialize_grads"""
    seen = []

    class A(torch.autograd.Function):
        @staticmethod
        def forward(x, y):
            return x, y

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.set_materialize_grads(False)

        @staticmethod
        def backward(ctx, gx, gy):
            seen.append((gx is not None, gy is None))
            return gx, gy

    def f(y, x):
        x, y = A.apply(x, y)
        return x**2

    x, y = torch.tensor(2.0), torch.tensor(3.0)
    torch.testing.assert_close(fu.grad(f)(y, x), torch.tensor(0.0))
    torch.testing.assert_close(fu.grad(f, argnums=1)(y, x), torch.tensor(4.0))
    torch.testing.assert_close(fu.grad(fu.grad(f, argnums=1), argnums=1)(y, x), torch.tensor(2.0))
    assert seen and all(a and b for a, b in seen)


def test_needs_input_grads():
    """torch test/functorch/test_eager_transforms.py::TestAutogradFunction::test_needs_input_grads"""
    seen = []

    class A(torch.autograd.Function):
        @staticmethod
        def forward(x, y):
            return x * y

        @staticmethod
        def setup_context(ctx, inputs, output):
            return

        @staticmethod
        def backward(ctx, grad_output):
            seen.append(tuple(ctx.needs_input_grad))
            return None, None

    x, y = torch.tensor(2.0), torch.tensor(3.0)
    torch.testing.assert_close(fu.grad(A.apply)(x, y), torch.tensor(0.0))
    fu.grad(fu.grad(A.apply))(x, y)
    assert seen and all(s == (True, False) for s in seen)


@pytest.mark.parametrize("mark_dirty", [False, True])
@pytest.mark.parametrize("save_for", ["jvp", "vjp"])
def test_function_returns_input(save_for, mark_dirty):
    """torch test/functorch/test_eager_transforms.py::TestAutogradFunction::test_function_returns_input
    (the cases that save nothing, which torch runs without error)"""

    class A(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x

        @staticmethod
        def setup_context(ctx, inputs, output):
            if mark_dirty:
                ctx.mark_dirty(inputs[0])

        @staticmethod
        def backward(ctx, grad_output):
            return grad_output

        @staticmethod
        def jvp(ctx, x_t):
            return x_t.add_(0) if mark_dirty else x_t.view_as(x_t)

    def fn(x):
        return A.apply(x.clone())

    a, a_t = torch.tensor(2.0), torch.tensor(3.0)
    torch.testing.assert_close(fu.grad(fn)(a), torch.tensor(1.0))
    out, tangent = fu.jvp(fn, (a,), (a_t,))
    torch.testing.assert_close(out, a)
    torch.testing.assert_close(tangent, a_t)


def test_once_differentiable_autograd_vjp():
    """torch test/functorch/test_eager_transforms.py::TestAutogradFunction::test_once_differentiable_autograd_vjp"""

    class NumpyCubeNotComposable(torch.autograd.Function):
        @staticmethod
        def forward(input):
            input_np = input.cpu().numpy()
            return torch.tensor(input_np**3), input_np

        @staticmethod
        def setup_context(ctx, inputs, output):
            ctx.input_np = output[1]

        @staticmethod
        @torch.autograd.function.once_differentiable
        def backward(ctx, grad_output, grad_saved):
            return grad_output * torch.tensor(3 * ctx.input_np**2)

    def f(x):
        y, _ = NumpyCubeNotComposable.apply(x)
        return y

    x = torch.randn([], requires_grad=True)
    grad_y = torch.randn_like(x, requires_grad=True)
    _, vjp_fn = fu.vjp(f, x)
    (gx,) = vjp_fn(grad_y)
    torch.testing.assert_close(gx.detach(), (grad_y * 3 * x**2).detach())
    with pytest.raises(RuntimeError, match="marked with @once_differentiable"):
        gx.backward()


def test_autograd_function_vmap_info_object():
    """torch test/functorch/test_eager_transforms.py::TestAutogradFunctionVmapAPI::test_info_object"""
    batch_size = 10
    seen = []

    class Id(torch.autograd.Function):
        @staticmethod
        def forward(input):
            return input.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad_output):
            return grad_output

        @staticmethod
        def vmap(info, in_dims, input):
            seen.append((info.batch_size, info.randomness))
            return input, in_dims[0]

    x = torch.randn(batch_size, 3)
    for randomness in ("error", "different", "same"):
        out = fu.vmap(Id.apply, randomness=randomness)(x)
        torch.testing.assert_close(out, x)
    assert seen == [(batch_size, r) for r in ("error", "different", "same")]


def test_autograd_function_vmap_in_dims_single_input():
    """torch test/functorch/test_eager_transforms.py::TestAutogradFunctionVmapAPI::test_in_dims_single_input"""
    seen = []

    class Id(torch.autograd.Function):
        @staticmethod
        def forward(input):
            return input.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad_output):
            return grad_output

        @staticmethod
        def vmap(info, in_dims, input):
            seen.append(in_dims)
            return input, in_dims[0]

    x = torch.randn(3, 10)
    torch.testing.assert_close(fu.vmap(Id.apply, in_axes=1)(x), x.t())
    torch.testing.assert_close(fu.vmap(Id.apply, in_axes=(1,))(x), x.t())
    assert seen == [(1,), (1,)]


def test_autograd_function_vmap_in_dims_multiple_inputs():
    """torch test/functorch/test_eager_transforms.py::TestAutogradFunctionVmapAPI::test_in_dims_multiple_inputs"""
    seen = []

    class Id(torch.autograd.Function):
        @staticmethod
        def forward(x, y):
            return x.clone(), [t.clone() for t in y]

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, gx, gy):
            return gx, gy

        @staticmethod
        def vmap(info, in_dims, x, y):
            seen.append(in_dims)
            return (x, y), in_dims

    x = torch.randn(2)
    out = fu.vmap(Id.apply)(x, [x, x])
    assert seen == [(0, [0, 0])]
    assert isinstance(seen[0], tuple) and isinstance(seen[0][1], list)
    assert_tree_close(out, (x, [x, x]))


def test_autograd_function_vmap_skips_empty_layer():
    """torch test/functorch/test_eager_transforms.py::TestAutogradFunctionVmapAPI::test_skips_empty_layer"""

    class Id(torch.autograd.Function):
        @staticmethod
        def forward(input):
            return input

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad_output):
            return grad_output

        @staticmethod
        def vmap(info, in_dims, input):
            raise AssertionError("expected to not be called")

    def f(x):
        Id.apply(torch.tensor(1.0))
        return x * 1

    x = torch.randn(2, 3)
    torch.testing.assert_close(fu.vmap(f)(x), x)


def test_autograd_function_vmap_none_returns():
    """torch test/functorch/test_eager_transforms.py::TestAutogradFunctionVmapAPI::test_none_returns"""

    class TwoZeros(torch.autograd.Function):
        @staticmethod
        def forward(input):
            r = torch.zeros(input.shape)
            return r, r

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def vmap(info, in_dims, input):
            assert in_dims == (0,)
            r = torch.zeros(input.shape[1:])
            return (r, r), None

    x = torch.randn(2, 3)
    result = fu.vmap(TwoZeros.apply)(x)
    assert isinstance(result, tuple)
    torch.testing.assert_close(result[0], torch.zeros_like(x))
    torch.testing.assert_close(result[1], torch.zeros_like(x))


# --------------------------------------------------------------------------------------------
# TestVmapOfGrad
# --------------------------------------------------------------------------------------------


def test_per_sample_grads_inplace_view():
    """torch test/functorch/test_eager_transforms.py::TestVmapOfGrad::test_per_sample_grads_inplace_view"""

    def compute_loss(weight, x, t):
        x = x.mm(weight)
        y = x.squeeze_(0)
        return (y - t).sum()

    weight = torch.randn(16, 2)
    x = torch.randn(64, 1, 16)
    t = torch.randn(64, 2)
    result = fu.vmap(partial(fu.grad(compute_loss), weight))(x, t)
    expected = torch.stack([fu.grad(compute_loss)(weight, x[i], t[i]) for i in range(64)])
    torch.testing.assert_close(result, expected, atol=0, rtol=5e-4)


@pytest.mark.parametrize("factory", ["new_zeros", "new_empty"])
def test_new_factory_materializes_tensor(factory):
    """torch test/functorch/test_eager_transforms.py::TestVmapOfGrad::test_new_zeros_materializes_tensor
    (and test_new_empty_materializes_tensor)"""
    n, c = 3, 5

    def foo(y, x):
        result = getattr(x, factory)((c,))
        result.copy_(y)
        return result.sum()

    x, y = torch.randn(n), torch.randn(n, c)
    torch.testing.assert_close(fu.vmap(fu.grad(foo))(y, x), torch.ones_like(y))


def test_per_sample_grads_simple():
    """torch test/functorch/test_eager_transforms.py::TestVmapOfGrad::test_per_sample_grads_simple"""

    def compute_loss(weight, x, t):
        return ((x @ weight - t) ** 2).sum()

    weight = torch.randn(16, 2)
    x = torch.randn(64, 16)
    t = torch.randn(64, 2)
    result = fu.vmap(partial(fu.grad(compute_loss), weight))(x, t)
    expected = torch.stack([fu.grad(compute_loss)(weight, x[i], t[i]) for i in range(64)])
    torch.testing.assert_close(result, expected, atol=0, rtol=5e-4)


def test_per_sample_grads_embeddingnet():
    """torch test/functorch/test_eager_transforms.py::TestVmapOfGrad::test_per_sample_grads_embeddingnet
    (the functional_call mechanism; make_functional is not ported)"""

    class SampleNet(nn.Module):
        def __init__(self, vocab_size):
            super().__init__()
            self.emb = nn.Embedding(vocab_size, 16)
            self.fc1 = nn.Linear(16, 16)
            self.fc2 = nn.Linear(16, 2)

        def forward(self, x):
            x = self.emb(x)
            x = torch.transpose(x, -1, -2)
            x = torch.mean(x, -1)
            return self.fc2(F.relu(self.fc1(x)))

    vocab_size, batch, words = 1000, 16, 5
    data = torch.randint(0, vocab_size, (batch, words))
    targets = torch.randint(0, 1, (batch,))
    net = SampleNet(vocab_size)
    weights = {k: v.detach() for k, v in net.named_parameters()}

    def compute_loss(weights, data, target):
        return F.cross_entropy(functional_call(net, weights, (data,)), target)

    expected = [fu.grad(compute_loss)(weights, data[i], targets[i]) for i in range(batch)]
    expected = {k: torch.stack([e[k] for e in expected]) for k in weights}
    result = fu.vmap(partial(fu.grad(compute_loss), weights))(data, targets)
    assert_tree_close(result, expected, atol=0, rtol=1.5e-3)


def test_log_softmax():
    """torch test/functorch/test_eager_transforms.py::TestVmapOfGrad::test_log_softmax"""
    x, v = torch.randn(3, 5), torch.randn(5)

    def foo(x, v):
        _, vjp_fn = fu.vjp(partial(torch.log_softmax, dim=-1), x)
        return vjp_fn(v)[0]

    result = fu.vmap(foo, (0, None))(x, v)
    xr = x.clone().requires_grad_()
    torch.log_softmax(xr, dim=-1).backward(v.expand_as(x))
    torch.testing.assert_close(result, xr.grad)


# --------------------------------------------------------------------------------------------
# TestJac
# --------------------------------------------------------------------------------------------


@jacapis
def test_jac_simple(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_simple"""
    x = torch.randn(3)
    torch.testing.assert_close(jacapi(torch.sin)(x), torch.diagflat(x.cos()))


@jacapis
def test_jac_simple_not_flat(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_simple_not_flat"""
    x = torch.randn(2, 3)
    expected = torch.diagflat(x.view(-1).cos()).view(2, 3, 2, 3)
    torch.testing.assert_close(jacapi(torch.sin)(x), expected)


@jacapis
@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_jac_take(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_take"""
    x = torch.rand(5)

    def func(x):
        return torch.take(x, torch.ones(3, dtype=torch.long))

    torch.testing.assert_close(jacapi(func)(x), torch.autograd.functional.jacobian(func, x))


@jacapis
def test_jac_diff_numel(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_diff_numel"""
    x = torch.randn(2, 4)
    y = jacapi(lambda x: x[0, 1:].unsqueeze(-1))(x)
    expected = x.new_zeros(3, 1, 2, 4)
    expected[0, 0, 0, 1] = 1
    expected[1, 0, 0, 2] = 1
    expected[2, 0, 0, 3] = 1
    torch.testing.assert_close(y, expected)


@jacapis
def test_vmap_on_jac_simple(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_vmap_on_jac_simple"""
    x = torch.randn(2, 3)
    expected = torch.stack([torch.diagflat(x[i].cos()) for i in range(2)])
    torch.testing.assert_close(fu.vmap(jacapi(torch.sin))(x), expected)


@jacapis
def test_nested_jac_simple(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_nested_jac_simple"""
    x = torch.randn(3)
    y = jacapi(jacapi(lambda x: x.sin().sum()))(x)
    torch.testing.assert_close(y, torch.diagflat(-x.sin()))


@jacapis
def test_jac_multiple_args(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_multiple_args"""
    x, y = torch.randn(3), torch.randn(3)
    torch.testing.assert_close(jacapi(torch.multiply, argnums=1)(x, y), torch.diagflat(x))


@jacapis
def test_jac_multiple_outputs_multiple_argnums(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_multiple_outputs_multiple_argnums"""

    def f(x, y):
        return 2 * x + 3 * y, 4 * x + 5 * y

    x, y = torch.randn(3), torch.randn(3)
    z = jacapi(f, argnums=(0, 1))(x, y)
    d = [torch.diagflat(torch.full_like(x, c)) for c in (2, 3, 4, 5)]
    assert isinstance(z, tuple) and len(z) == 2
    assert isinstance(z[0], tuple) and len(z[0]) == 2
    assert_tree_close(z, ((d[0], d[1]), (d[2], d[3])))


@jacapis
def test_jac_multiple_outputs_single_argnums(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_multiple_outputs_single_argnums"""

    def f(x, y):
        return 2 * x + 3 * y, 4 * x + 5 * y

    x, y = torch.randn(3), torch.randn(3)
    e0 = torch.diagflat(torch.full_like(x, 2))
    e1 = torch.diagflat(torch.full_like(x, 4))
    z = jacapi(f, argnums=0)(x, y)
    assert isinstance(z, tuple) and len(z) == 2
    assert_tree_close(z, (e0, e1))
    z = jacapi(f, argnums=(0,))(x, y)
    assert isinstance(z, tuple) and isinstance(z[0], tuple)
    assert_tree_close(z, ((e0,), (e1,)))


@jacapis
def test_jac_multiple_outputs_pytree(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_multiple_outputs_pytree"""

    def f(x, y):
        return {"left": 2 * x + 3 * y, "right": 4 * x + 5 * y}

    x, y = torch.randn(3), torch.randn(3)
    z = jacapi(f, argnums=(0, 1))(x, y)
    d = [torch.diagflat(torch.full_like(x, c)) for c in (2, 3, 4, 5)]
    assert isinstance(z, dict) and isinstance(z["left"], tuple) and isinstance(z["right"], tuple)
    assert_tree_close(z, {"left": (d[0], d[1]), "right": (d[2], d[3])})


@jacapis
def test_jac_multiple_inputs_pytree(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_multiple_inputs_pytree"""

    def f(a, b, c):
        a0, a1 = a
        return a0 + a1 * 2 + b * 3 + c * 4

    x = torch.randn([])
    args = ((x, x), x, x)
    t = [torch.tensor(float(c)) for c in (1, 2, 3, 4)]
    assert_tree_close(jacapi(f, argnums=(0, 1, 2))(*args), ((t[0], t[1]), t[2], t[3]))
    assert_tree_close(jacapi(f, argnums=(0,))(*args), ((t[0], t[1]),))
    assert_tree_close(jacapi(f)(*args), (t[0], t[1]))


@jacapis
def test_jac_dimensionality(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_dimensionality"""
    x = torch.randn([])
    result = jacapi(lambda x: x)(x)
    assert result.dim() == 0
    torch.testing.assert_close(result, torch.ones_like(x))
    x = torch.randn([1])
    result = jacapi(lambda x: x)(x)
    assert result.dim() == 2
    torch.testing.assert_close(result, x.new_ones(1, 1))


@jacapis
def test_jac_aux_tensor(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_aux_tensor"""

    def f(x):
        y = x.clone()
        return y, y.cos()

    x = torch.randn(3)
    result, aux = jacapi(f, has_aux=True)(x)
    torch.testing.assert_close(result, torch.eye(3, 3))
    torch.testing.assert_close(aux, x.cos())


@jacapis
def test_jac_aux_pytree(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_aux_pytree

    torch refuses non-tensor aux leaves; here they come back unchanged.
    """

    def f(x):
        y = x.clone()
        return y, {"a": y.cos(), "b": [y.tan()]}

    x = torch.randn(3)
    result, aux = jacapi(f, has_aux=True)(x)
    torch.testing.assert_close(result, torch.eye(3, 3))
    assert_tree_close(aux, f(x)[1])
    for extra in [1, 1.0, "abc"]:
        _, aux = jacapi(lambda x, extra=extra: (x, extra), has_aux=True)(x)
        assert aux == extra
        _, aux = jacapi(lambda x, extra=extra: (x, [x, extra]), has_aux=True)(x)
        assert aux[1] == extra


@jacapis
def test_jac_outputs_can_any_pytree(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_outputs_can_any_pytree
    (the container outputs; a string output is a TypeError naming the output)"""
    x = torch.randn(2, 3)
    with pytest.raises(TypeError, match=r"output out is not a tensor"):
        jacapi(lambda _: "abc")(x)

    out = jacapi(lambda x: [x, x.sum()])(x)
    assert isinstance(out, list) and len(out) == 2
    assert out[0].shape == (2, 3, 2, 3) and out[1].shape == (2, 3)

    out = jacapi(lambda x: {"x": x, "xsum": x.sum()})(x)
    assert isinstance(out, dict) and set(out) == {"x", "xsum"}
    torch.testing.assert_close(out["xsum"], torch.ones(2, 3))

    def composite_output(x):
        out = x.sum()
        return [(out, {"a": x, "out": [x, out]})]

    out = jacapi(composite_output)(x)
    assert isinstance(out, list) and isinstance(out[0], tuple) and isinstance(out[0][1], dict)
    torch.testing.assert_close(out[0][1]["out"][1], torch.ones(2, 3))


@jacapis
def test_jac_empty_outputs(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_outputs_can_any_pytree and
    test_empty_output: torch refuses ``None``/``()`` outputs; here each is either a clear error
    naming the call or (JAX) an empty pytree whose Jacobian is the same empty pytree."""
    x, y = torch.randn(3), torch.randn(3)
    for f in (lambda x, y: None, lambda x, y: ()):
        try:
            jac = jacapi(f)(x, y)
        except (TypeError, ValueError) as e:
            assert f"{jacapi.__name__}(<lambda>)" in str(e)
        else:
            assert jac == f(x, y)


@jacapis
def test_jac_multiple_inputs_outputs_pytree(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_multiple_inputs_outputs_pytree"""

    def f(a, b, c):
        a0, a1 = a
        return a0 + a1 * 2, {"foo": b * 3 + c * 4}

    x = torch.randn([])
    zero = torch.zeros([])
    one, two, three = torch.tensor(1.0), torch.tensor(2.0), torch.tensor(3.0)
    args = ((x, x), x, x)
    assert_tree_close(jacapi(f)(*args), ((one, two), {"foo": (zero, zero)}))
    assert_tree_close(jacapi(f, argnums=(0,))(*args), (((one, two),), {"foo": ((zero, zero),)}))
    assert_tree_close(
        jacapi(f, argnums=(0, 1))(*args),
        (((one, two), zero), {"foo": ((zero, zero), three)}),
    )


@jacapis
def test_jac_multiple_inputs_outputs_pytree_multidim(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_multiple_inputs_outputs_pytree_multidim"""

    def f(dct):
        return {"c": dct["a"].sin(), "d": dct["b"].cos()}

    x = torch.randn(3)
    expected = {
        "c": {"a": x.cos().diagflat(), "b": x.new_zeros(3, 3)},
        "d": {"a": x.new_zeros(3, 3), "b": -x.sin().diagflat()},
    }
    assert_tree_close(jacapi(f)({"a": x, "b": x}), expected)


@jacapis
def test_jac_unrelated_input(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_unrelated_input"""
    x, y = torch.randn(2, 3), torch.randn(2, 3)
    result = jacapi(lambda x, y: x, argnums=(0, 1))(x, y)
    assert isinstance(result, tuple)
    assert_tree_close(result, (torch.eye(6, 6).view(2, 3, 2, 3), y.new_zeros(2, 3, 2, 3)))


@jacapis
def test_jac_unrelated_output(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_unrelated_output"""
    y = torch.randn(2, 3)
    x = torch.randn(2, 3)
    torch.testing.assert_close(jacapi(lambda x: y)(x), x.new_zeros(2, 3, 2, 3))


@jacapis
def test_jac_argnums_tuple(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_argnums_tuple"""
    x, y = torch.randn(3), torch.randn(3)
    z = jacapi(torch.multiply, argnums=(0, 1))(x, y)
    assert len(z) == 2
    assert_tree_close(z, (torch.diagflat(y), torch.diagflat(x)))


@jacapis
def test_jac_argnums_effect_on_return(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_argnums_effect_on_return"""
    x, y = torch.randn(3), torch.randn(3)
    z = jacapi(torch.multiply, argnums=(0,))(x, y)
    assert isinstance(z, tuple) and len(z) == 1
    torch.testing.assert_close(z[0], torch.diagflat(y))
    z = jacapi(torch.multiply, argnums=0)(x, y)
    assert isinstance(z, torch.Tensor)
    torch.testing.assert_close(z, torch.diagflat(y))


@jacapis
def test_jac_argnums_defaults_to_zero(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_argnums_defaults_to_zero"""
    x, y = torch.randn(3), torch.randn(3)
    z = jacapi(lambda x, y: x * 2 + y * 3)(x, y)
    torch.testing.assert_close(z, torch.diagflat(torch.full_like(x, 2)))


@jacapis
def test_jac_empty_argnums(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_empty_argnums"""
    x = torch.randn(3)
    name = jacapi.__name__
    with pytest.raises(TypeError, match=re.escape(f"{name}(sin, argnums=()): argnums must be")):
        jacapi(torch.sin, argnums=())(x)


@jacapis
@pytest.mark.parametrize("argnums", [2, -2])
def test_jac_out_of_bounds_argnums(jacapi, argnums):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_out_of_bounds_argnums
    (and test_negative_argnums)"""
    x = torch.randn(3)
    with pytest.raises(TypeError, match=rf"argnums={argnums} is out of range .* 1 positional"):
        jacapi(torch.sin, argnums=argnums)(x)


@jacapis
def test_jac_repeated_argnums(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_repeated_argnums: a clear error,
    or each entry its own Jacobian."""
    x, y = torch.randn(3), torch.randn(3)
    try:
        z = jacapi(torch.multiply, argnums=(0, 0))(x, y)
    except (TypeError, ValueError) as e:
        assert "argnums" in str(e)
    else:
        assert_tree_close(z, (torch.diagflat(y), torch.diagflat(y)))


@jacapis
def test_jac_float_argnums(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_float_argnums"""
    x = torch.randn(3)
    with pytest.raises(TypeError, match=r"argnums=0\.0\): argnums must be an int"):
        jacapi(torch.sin, argnums=0.0)(x)
    with pytest.raises(TypeError, match=r"argnums=\(1, 0\.0\)\): argnums must be an int"):
        jacapi(torch.multiply, argnums=(1, 0.0))(x, x)


def test_jac_hessian_simple():
    """torch test/functorch/test_eager_transforms.py::TestJac::test_hessian_simple"""
    x = torch.randn(3)
    h = fu.hessian(lambda x: x.sin())(x)
    torch.testing.assert_close(h, torch.diag_embed(torch.diagflat(-x.sin())))


def _against_reference(jacapi, f, inputs):
    expected = torch.autograd.functional.jacobian(f, inputs)
    result = jacapi(lambda inputs: f(*inputs))(inputs)
    assert_tree_close(result, expected)


@jacapis
def test_jac_against_reference_simple(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_against_reference_simple"""
    _against_reference(jacapi, lambda x: 3 * x**2, (torch.randn(2, 3, 5),))


@jacapis
def test_jac_against_reference_multi_input(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_against_reference_multi_input"""

    def f(x, y):
        return (x.cos() * x) @ y.sin()

    _against_reference(jacapi, f, (torch.randn(2, 3), torch.randn(3, 5)))


@jacapis
def test_jac_against_reference_multi_input_multi_output(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_against_reference_multi_input_multi_output"""

    def f(x, y):
        return (x * x) @ y, x @ (x.sum(1) * y), y.sum()

    _against_reference(jacapi, f, (torch.randn(5, 3), torch.randn(3, 5)))


@jacapis
def test_jac_against_reference_unrelated_outputs(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_against_reference_unrelated_outputs"""
    _against_reference(jacapi, lambda x, y: (x, y, x, y), (torch.randn(2), torch.randn(3)))


@jacapis
def test_jac_against_reference_zero_dim(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_against_reference_zero_dim"""
    _against_reference(
        jacapi, lambda x, y: (x.sum(), y.sum(), x * y), (torch.randn(3), torch.randn(3))
    )
    _against_reference(jacapi, lambda x: torch.stack([x, x, x]), (torch.randn([]),))
    _against_reference(jacapi, lambda x, y: (y.sum(), x * y), (torch.randn([]), torch.randn(1)))


@jacapis
def test_jac_against_reference_default_arg(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_against_reference_default_arg"""

    def f(x, y, z=3.0):
        return x * y * z

    _against_reference(jacapi, f, (torch.randn(3), torch.randn(3)))


@jacapis
def test_jac_inplace_into_other_argument(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_inplace (first case)"""

    def f(x, y):
        y.copy_(x)
        return y

    x, y = torch.randn(2), torch.randn(2)
    torch.testing.assert_close(jacapi(f, argnums=0)(x, y), torch.eye(2))


@jacapis
def test_jac_inplace_tuple_argnums(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_inplace (argnums=(1, 2) case)"""

    def g(x, y, z):
        x[:2] = y
        return torch.vstack([(x**2).sum(), (z**3).sum()])

    x, y, z = torch.randn(3), torch.randn(2), torch.randn(2)
    expected = (torch.zeros(2, 1, 2), torch.zeros(2, 1, 2))
    expected[0][0][0] = 2 * y
    expected[1][1][0] = 3 * (z**2)
    assert_tree_close(jacapi(g, argnums=(1, 2))(x, y, z), expected)


def test_chunk_jacrev():
    """torch test/functorch/test_eager_transforms.py::TestJac::test_chunk_jacrev"""
    x, y = torch.randn(10, 2), torch.randn(1, 2)

    def f(x, y):
        return (x.sin(), x + y), (x + 2, x.sum())

    expected = fu.jacrev(f, argnums=(0, 1))(x, y)
    for chunk_size in (1, 2, 3, 4, 7, 10, 1000):
        actual = fu.jacrev(f, argnums=(0, 1), chunk_size=chunk_size)(x, y)
        assert_tree_close(actual, expected)
    for bad in (0, -2):
        with pytest.raises(ValueError, match=rf"jacrev\(f, chunk_size={bad}\): chunk_size must"):
            fu.jacrev(f, argnums=(0,), chunk_size=bad)(x, y)


def test_chunk_jacrev_composition():
    """torch test/functorch/test_eager_transforms.py::TestJac::test_chunk_jacrev_composition"""
    x = torch.randn(10, 2)

    def f(x):
        return (x.sin(), x), (x + 2, x.sum())

    expected = fu.vmap(fu.jacrev(fu.jacrev(f)))(x)
    actual = fu.vmap(fu.jacrev(fu.jacrev(f, chunk_size=3), chunk_size=3))(x)
    assert_tree_close(actual, expected)


def test_chunk_jacrev_chunksize_one():
    """torch test/functorch/test_eager_transforms.py::TestJac::test_chunk_jacrev_chunksize_one"""

    class IdentityWithDynamicBackwardOp(torch.autograd.Function):
        @staticmethod
        def forward(input):
            return input

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, grad_output):
            grad_output.nonzero()  # a dynamic-shape op in the backward pass
            return grad_output

    def f(x):
        return IdentityWithDynamicBackwardOp.apply(x)

    x = torch.randn(3, 3)
    actual = fu.jacrev(f, chunk_size=1)(x)
    expected = torch.autograd.functional.jacobian(f, x, vectorize=False)
    torch.testing.assert_close(actual, expected)


def test_complex_error():
    """torch test/functorch/test_eager_transforms.py::TestJac::test_complex_error

    torch refuses complex inputs and outputs in both. Here (JAX) ``jacrev`` needs
    ``holomorphic=True`` for complex outputs and ``jacfwd`` refuses complex inputs without it: both
    TypeErrors that say so.
    """
    x = torch.randn(1, dtype=torch.cfloat)
    with pytest.raises(TypeError, match=r"jacrev\(<lambda>\): .*holomorphic=True"):
        fu.jacrev(lambda x: x.conj())(x)
    with pytest.raises(TypeError, match=r"jacfwd\(<lambda>\): input args\[0\] is complex"):
        fu.jacfwd(lambda x: x.conj())(x)
    x = torch.randn(1)
    with pytest.raises(TypeError, match=r"jacrev\(<lambda>\): .*holomorphic=True"):
        fu.jacrev(lambda x: torch.conj(x * 0.5j))(x)


def test_complex_output_jacfwd():
    """torch test/functorch/test_eager_transforms.py::TestJac::test_complex_error (R -> C, jacfwd)"""
    x = torch.randn(1)
    jac = fu.jacfwd(lambda x: torch.conj(x * 0.5j))(x)
    torch.testing.assert_close(jac, torch.tensor([[-0.5j]]))


@jacapis
def test_jac_with_non_tensor_args(jacapi):
    """torch test/functorch/test_eager_transforms.py::TestJac::test_jac_with_non_tensor_args"""

    def f(t, int_x):
        return t + int_x

    t = torch.randn(3, 3)
    expected = torch.autograd.functional.jacobian(partial(f, int_x=3), t)
    torch.testing.assert_close(jacapi(f)(t, 3), expected)


# --------------------------------------------------------------------------------------------
# TestHessian
# --------------------------------------------------------------------------------------------


def _hessian_against_reference(f, inputs):
    expected = torch.autograd.functional.hessian(f, inputs)
    result = fu.hessian(lambda inputs: f(*inputs))(inputs)
    assert_tree_close(result, expected)


def test_hessian_vectorize_correctness_simple():
    """torch test/functorch/test_eager_transforms.py::TestHessian::test_hessian_vectorize_correctness_simple"""
    _hessian_against_reference(lambda x: (3 * x**2).sum(), (torch.randn(2, 3, 5),))


def test_hessian_vectorize_correctness_multi_input():
    """torch test/functorch/test_eager_transforms.py::TestHessian::test_hessian_vectorize_correctness_multi_input"""

    def f(x, y, z):
        return ((x.relu() * x) @ y.sin() @ z).sum()

    _hessian_against_reference(f, (torch.randn(2, 3), torch.randn(3, 5), torch.randn(5, 5)))


def test_hessian_vectorize_correctness_unrelated_outputs():
    """torch test/functorch/test_eager_transforms.py::TestHessian::test_hessian_vectorize_correctness_unrelated_outputs"""
    _hessian_against_reference(lambda x, y: (x**2).sum(), (torch.randn(2), torch.randn(3)))
    _hessian_against_reference(lambda x, y: torch.ones([]), (torch.randn(2), torch.randn(3)))


def test_jacfwd_different_levels():
    """torch test/functorch/test_eager_transforms.py::TestHessian::test_jacfwd_different_levels"""
    b, n, d = 8, 100, 2
    x1 = torch.randn(b, n, d)
    x2 = x1
    a = 0.1 * torch.randn(b, d, d)

    def loss(a, x1, x2):
        x2_hat = (a @ (x1.T)).T
        return ((x2 - x2_hat) ** 2).sum()

    hess1 = fu.vmap(fu.jacrev(fu.jacrev(loss)))(a, x1, x2)
    hess2 = fu.vmap(fu.hessian(loss))(a, x1, x2)
    torch.testing.assert_close(hess2, hess1)


# --------------------------------------------------------------------------------------------
# TestJvp
# --------------------------------------------------------------------------------------------


def test_jvp_simple():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_simple"""
    x, t = torch.randn(2, 3), torch.randn(2, 3)
    result = fu.jvp(torch.sin, (x,), (t,))
    assert isinstance(result, tuple)
    assert_tree_close(result, (x.sin(), x.cos() * t))


def test_jvp_multiple_inputs():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_multiple_inputs"""
    x, y, tx, ty = (torch.randn(2, 3) for _ in range(4))
    result = fu.jvp(lambda x, y: x * y, (x, y), (tx, ty))
    assert isinstance(result, tuple)
    assert_tree_close(result, (x * y, y * tx + x * ty))


def test_jvp_pytree_inputs():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_pytree_inputs"""

    def f(x, y, z):
        a, b = x
        return a + 2 * b + 3 * y + 4 * z

    one = torch.tensor(1.0)
    primal_outs, tangent_outs = fu.jvp(f, ((one, one), one, one), ((one, one), one, one))
    torch.testing.assert_close(primal_outs, one * 10)
    torch.testing.assert_close(tangent_outs, one * 10)


def test_jvp_pytree_inputs_error_cases():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_pytree_inputs_error_cases

    Structure mistakes are TypeError/ValueError naming primals/tangents. torch refuses non-tensor
    primals; here (JAX) a Python number is an argument like any other, so those cases are not errors.
    """
    one = torch.tensor(1.0)
    with pytest.raises(TypeError, match=r"jvp\(<lambda>\): primals and tangents must be tuples"):
        fu.jvp(lambda x: x, one, one)
    with pytest.raises(ValueError, match=r"tangents\[0\] does not have the structure"):
        fu.jvp(lambda x, y: x, ((one, one), one), (one, one))


def test_jvp_unrelated_input():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_unrelated_input"""
    x, y, tx, ty = (torch.randn(2, 3) for _ in range(4))
    result = fu.jvp(lambda x, y: x, (x, y), (tx, ty))
    assert isinstance(result, tuple)
    assert_tree_close(result, (x, tx))


def test_jvp_unrelated_output():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_unrelated_output"""
    y = torch.randn(2, 3)
    x, tx = torch.randn(2, 3), torch.randn(2, 3)
    result = fu.jvp(lambda x: y, (x,), (tx,))
    assert isinstance(result, tuple)
    assert_tree_close(result, (y, torch.zeros_like(y)))


def test_jvp_multiple_outputs():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_multiple_outputs"""
    x, t = torch.randn(2, 3), torch.randn(2, 3)

    def f(x):
        return torch.sin(x), torch.cos(x)

    result = fu.jvp(f, (x,), (t,))
    assert isinstance(result, tuple)
    assert_tree_close(result, (f(x), (x.cos() * t, -x.sin() * t)))


def test_jvp_multiple_inputs_outputs():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_multiple_inputs_outputs"""
    x, y, tx, ty = (torch.randn(2, 3) for _ in range(4))

    def f(x, y):
        return 2 * x + 3 * y, 4 * x + 5 * y

    result = fu.jvp(f, (x, y), (tx, ty))
    assert isinstance(result, tuple)
    assert_tree_close(result, (f(x, y), f(tx, ty)))


def test_jvp_new_tensor():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_jvp_new_tensor"""

    def f(x):
        return x + x.new_tensor(0.5)

    x = torch.rand(10, 10)
    assert_tree_close(fu.jvp(f, (x,), (torch.zeros_like(x),)), (f(x), torch.zeros_like(x)))


def test_jvp_primals_tangents_length_mismatch():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_primals_tangents_length_mismatch"""
    x, t = torch.randn(2, 3), torch.randn(2, 3)
    msg = re.escape("jvp(sin): primals and tangents have different lengths")
    with pytest.raises(ValueError, match=msg):
        fu.jvp(torch.sin, (x,), (t, t))
    with pytest.raises(ValueError, match=msg):
        fu.jvp(torch.sin, (x, x), (t, t, t))


def test_jvp_empty_primals():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_nonempty_primals_and_tangents

    torch requires at least one primal; here (JAX) a function of no arguments is allowed and its
    tangent is zero.
    """
    out, tangent = fu.jvp(lambda: torch.ones(2), (), ())
    torch.testing.assert_close(out, torch.ones(2))
    torch.testing.assert_close(tangent, torch.zeros(2))


def test_jvp_inputs_are_tuples_of_tensors():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_inputs_are_tuples_of_tensors

    A list of tangents is accepted here (docs/sharp_edges.md); a bare tensor is not.
    """
    x, t = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises(TypeError, match=r"jvp\(sin\): primals and tangents must be tuples"):
        fu.jvp(torch.sin, x, (t,))
    with pytest.raises(TypeError, match=r"jvp\(sin\): primals and tangents must be tuples"):
        fu.jvp(torch.sin, (x,), t)
    assert_tree_close(fu.jvp(torch.sin, (x,), [t]), (x.sin(), x.cos() * t))
    with pytest.raises(ValueError, match=r"jvp\(sin\): tangents\[0\] has the wrong shape"):
        fu.jvp(torch.sin, (1.0,), (t,))
    with pytest.raises((TypeError, ValueError), match=r"jvp\(sin\): .*tangents\[0\]"):
        fu.jvp(torch.sin, (x,), (1.0,))


@pytest.mark.xfail(
    strict=True, reason="documented difference: " + SHARP + " (jvp takes tuples or lists)"
)
def test_jvp_tangent_list_refused():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_inputs_are_tuples_of_tensors
    (torch refuses a list of tangents for a tuple of primals)"""
    x, t = torch.randn(2, 3), torch.randn(2, 3)
    with pytest.raises((TypeError, ValueError)):
        fu.jvp(torch.sin, (x,), [t])


def test_jvp_outputs_can_any_pytree():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_outputs_can_any_pytree"""
    x, t = torch.randn(2, 3), torch.randn(2, 3)
    out = fu.jvp(lambda x: [x, x.sum()], (x,), (t,))
    for i in range(2):
        assert isinstance(out[i], list) and len(out[i]) == 2
    torch.testing.assert_close(out[1][1], t.sum())

    out = fu.jvp(lambda x: {"x": x, "xsum": x.sum()}, (x,), (t,))
    for i in range(2):
        assert isinstance(out[i], dict) and set(out[i]) == {"x", "xsum"}

    def composite_output(x):
        out = x.sum()
        return [(out, {"a": x, "out": [x, out]})]

    out = fu.jvp(composite_output, (x,), (t,))
    for i in range(2):
        assert isinstance(out[i], list)
        assert isinstance(out[i][0], tuple) and isinstance(out[i][0][1], dict)
    torch.testing.assert_close(out[1][0][1]["a"], t)


def test_jvp_empty_and_non_tensor_outputs():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_outputs_can_any_pytree
    (the None/() and non-tensor outputs)"""
    x, t = torch.randn(2, 3), torch.randn(2, 3)
    for output in [None, ()]:
        try:
            out, tangent = fu.jvp(lambda _, output=output: output, (x,), (t,))
        except (TypeError, ValueError) as e:
            assert "jvp(" in str(e)
        else:
            assert out == output and tangent == output
    with pytest.raises(TypeError, match="output out is not a tensor"):
        fu.jvp(lambda _: "abc", (x,), (t,))


def test_jvp_aux_tensor():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_aux_tensor"""
    x, t = torch.randn(3), torch.randn(3)
    with pytest.raises(TypeError, match=r"jvp\(<lambda>\): with has_aux=True .* pair"):
        fu.jvp(lambda t: (t, t + 2, t + 3), (x,), (t,), has_aux=True)

    def f(z):
        return z.sin(), z.cos()

    out, jvp_out, aux = fu.jvp(f, (x,), (t,), has_aux=True)
    torch.testing.assert_close(aux, x.cos())
    torch.testing.assert_close(out, x.sin())
    torch.testing.assert_close(jvp_out, t * x.cos())


def test_jvp_aux_pytree():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_aux_pytree"""

    def f(x):
        return x.sin(), {"a": x.cos(), "b": [x.tan()]}

    x, t = torch.randn(3), torch.randn(3)
    out, jvp_out, aux = fu.jvp(f, (x,), (t,), has_aux=True)
    expected_out, expected_aux = f(x)
    torch.testing.assert_close(out, expected_out)
    assert_tree_close(aux, expected_aux)
    torch.testing.assert_close(jvp_out, t * x.cos())
    for extra in [1, 1.0, "abc"]:
        _, _, aux = fu.jvp(lambda x, extra=extra: (x, extra), (x,), (t,), has_aux=True)
        assert aux == extra


def test_jvp_disable_fwd_grad_outside():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_disable_fwd_grad_outside"""
    import torch.autograd.forward_ad as fwAD

    x = torch.randn([])
    t = torch.ones_like(x)
    with fwAD._set_fwd_grad_enabled(False):
        _, y = fu.jvp(torch.sin, (x,), (t,))
    torch.testing.assert_close(y, x.cos())


def test_jvp_disable_fwd_grad_inside():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_disable_fwd_grad_inside"""
    import torch.autograd.forward_ad as fwAD

    def f(x):
        with fwAD._set_fwd_grad_enabled(False):
            shift = x**2
        return x**2 - shift

    x = torch.randn([])
    t = torch.ones_like(x)
    _, y = fu.jvp(f, (x,), (t,))
    torch.testing.assert_close(y, 2 * x)
    _, y = fu.jvp(lambda x: fu.jvp(f, (x,), (t,))[1], (x,), (t,))
    torch.testing.assert_close(y, torch.tensor(2.0))


def test_jvp_disable_fwd_grad_mixed():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_disable_fwd_grad_mixed"""
    import torch.autograd.forward_ad as fwAD

    def f(x):
        with fwAD._set_fwd_grad_enabled(False):
            shift = x**2
        return x**2 - shift

    x = torch.randn([])
    t = torch.ones_like(x)
    with fwAD._set_fwd_grad_enabled(True):
        _, y = fu.jvp(f, (x,), (t,))
    torch.testing.assert_close(y, 2 * x)


def test_jvp_inside_autograd_function():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_jvp_inside_autograd_function"""

    class MySin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            _, neg_sin_x = fu.jvp(torch.cos, (x,), (torch.ones_like(x),))
            ctx.save_for_backward(x)
            return -neg_sin_x

        @staticmethod
        def backward(ctx, gx):
            (x,) = ctx.saved_tensors
            _, cos_x = fu.jvp(torch.sin, (x,), (torch.ones_like(x),))
            return gx * cos_x

    x = torch.randn([], requires_grad=True)
    y = MySin.apply(x)
    torch.testing.assert_close(y.detach(), x.sin().detach())
    (gx,) = torch.autograd.grad(y, x)
    torch.testing.assert_close(gx, x.cos().detach())


def test_zerotensor_vmapjvp_interaction():
    """torch test/functorch/test_eager_transforms.py::TestJvp::test_zerotensor_vmapjvp_interaction"""
    dummy = torch.ones(4, 1)
    x = torch.randn(4, 2)
    x_tangent = torch.randn(2)

    def push_jvp(dummy, x):
        return fu.jvp(torch.cov, (x,), (x_tangent,))

    out, tangent = fu.vmap(fu.vmap(push_jvp, (0, None)))(dummy, x)
    expected = [fu.jvp(torch.cov, (x[i],), (x_tangent,)) for i in range(4)]
    torch.testing.assert_close(out, torch.stack([e[0] for e in expected]).unsqueeze(1))
    torch.testing.assert_close(tangent, torch.stack([e[1] for e in expected]).unsqueeze(1))


# --------------------------------------------------------------------------------------------
# TestLinearize
# --------------------------------------------------------------------------------------------


def test_linearize_basic():
    """torch test/functorch/test_eager_transforms.py::TestLinearize::test_linearize_basic"""
    x_p, x_t = torch.randn(3, 1), torch.randn(3, 1)
    out, jvp_fn = fu.linearize(torch.cos, x_p)
    expected_out, expected_jvp = fu.jvp(torch.cos, (x_p,), (x_t,))
    torch.testing.assert_close(out, expected_out)
    torch.testing.assert_close(jvp_fn(x_t), expected_jvp)


def test_linearize_return():
    """torch test/functorch/test_eager_transforms.py::TestLinearize::test_linearize_return"""
    x_p, x_t = torch.randn(3, 1), torch.randn(3, 1)

    def fn(x):
        return x.cos(), x.sum()

    out, jvp_fn = fu.linearize(fn, x_p)
    expected_out, expected_jvp = fu.jvp(fn, (x_p,), (x_t,))
    assert_tree_close(out, expected_out)
    assert_tree_close(jvp_fn(x_t), expected_jvp)


def test_linearize_composition_vmap():
    """torch test/functorch/test_eager_transforms.py::TestLinearize::test_linearize_composition_vmap"""
    x_p, x_t = torch.randn(3, 1), torch.randn(3, 3, 1)

    def fn(x):
        return x.cos(), x.sum()

    _, jvp_fn = fu.linearize(fn, x_p)
    actual = fu.vmap(jvp_fn)(x_t)
    expected = fu.vmap(lambda t: fu.jvp(fn, (x_p,), (t,))[1])(x_t)
    assert_tree_close(actual, expected)


def test_linearize_composition_grad():
    """torch test/functorch/test_eager_transforms.py::TestLinearize::test_linearize_composition_grad"""
    x_p, x_t = torch.randn(3), torch.randn(3)

    def fn(x):
        z = torch.ones(3)
        return fu.grad(lambda x: z @ x)(x)

    _, jvp_fn = fu.linearize(fn, x_p)
    torch.testing.assert_close(jvp_fn(x_t), fu.jvp(fn, (x_p,), (x_t,))[1])


def test_linearize_nested_input_nested_output():
    """torch test/functorch/test_eager_transforms.py::TestLinearize::test_linearize_nested_input_nested_output"""
    x_p, x_t, y_p, y_t, z_p, z_t = (torch.randn(3, 1) for _ in range(6))

    def fn(arg):
        x = arg["x"]
        y, z = arg["yz"]
        return {"a": x.sum(), "b": {"c": y + z, "d": (x * z, y.exp())}}

    inp_p = {"x": x_p, "yz": (y_p, z_p)}
    inp_t = {"x": x_t, "yz": (y_t, z_t)}
    out, jvp_fn = fu.linearize(fn, inp_p)
    expected_out, expected_jvp = fu.jvp(fn, (inp_p,), (inp_t,))
    assert_tree_close(out, expected_out)
    assert_tree_close(jvp_fn(inp_t), expected_jvp)


def test_linearize_errors():
    """torch test/functorch/test_eager_transforms.py::TestLinearize::test_linearize_errors
    (CUDA-only in torch for the device case; the structure, shape and dtype cases run on CPU)"""
    x_p, x_t = torch.randn(3, 1), torch.randn(3, 1)
    _, jvp_fn = fu.linearize(torch.sin, x_p)
    with pytest.raises(ValueError, match=r"tangents\[0\] does not have the structure"):
        jvp_fn((x_t, x_t))
    with pytest.raises(ValueError, match=r"tangents\[0\] has the wrong shape"):
        jvp_fn(x_t.unsqueeze(0))
    with pytest.raises(ValueError, match=r"tangents\[0\] has the wrong dtype"):
        jvp_fn(x_t.to(torch.double))


# --------------------------------------------------------------------------------------------
# TestVmapJvpInplaceView
# --------------------------------------------------------------------------------------------


def _push_jvp(f):
    def inner(x, xt, y, yt):
        return fu.jvp(f, (x, y), (xt, yt))

    return inner


def test_vmap_jvp_all_dual_no_view():
    """torch test/functorch/test_eager_transforms.py::TestVmapJvpInplaceView::test_all_dual_no_view"""
    b = 2

    def f(x, y):
        x.copy_(y)
        return x

    x, xt, y, yt = (torch.randn(3, b) for _ in range(4))
    out, out_tangent = fu.vmap(_push_jvp(f), in_axes=1)(x, xt, y, yt)
    torch.testing.assert_close(out, x.movedim(1, 0))
    torch.testing.assert_close(out_tangent, yt.movedim(1, 0))

    x, xt = torch.randn(3, b), torch.randn(3, b)
    y = torch.randn(3, 3)[:, 1]
    yt = torch.randn(6)[::2]
    out, out_tangent = fu.vmap(_push_jvp(f), in_axes=(1, 1, None, None))(x, xt, y, yt)
    torch.testing.assert_close(out, x.movedim(1, 0))
    torch.testing.assert_close(out_tangent, yt.expand(b, 3))


def test_vmap_jvp_all_dual_base_view_inplace():
    """torch test/functorch/test_eager_transforms.py::TestVmapJvpInplaceView::test_all_dual_base_view_inplace"""
    b = 2

    def f(x, y):
        view = x[:, ::2]
        view.copy_(y)
        return view, x

    orig_x, orig_xt = torch.randn(2, 6, b), torch.randn(2, 6, b)
    x, xt = orig_x.clone(), orig_xt.clone()
    y, yt = torch.randn(2, b, 3), torch.randn(2, b, 3)
    out, out_tangent = fu.vmap(_push_jvp(f), in_axes=(2, 2, 1, 1))(x, xt, y, yt)

    expected_out = fu.vmap(f, in_axes=(2, 1))(orig_x.clone(), y)
    assert_tree_close(out, expected_out)
    torch.testing.assert_close(out_tangent[0], yt.movedim(1, 0))
    expected_x_tangent = orig_xt.movedim(-1, 0).clone()
    expected_x_tangent[:, :, ::2].copy_(yt.movedim(1, 0))
    torch.testing.assert_close(out_tangent[1], expected_x_tangent)
    expected = orig_x.movedim(2, 0).clone()
    expected[:, :, ::2] = y.movedim(1, 0)
    torch.testing.assert_close(x.movedim(2, 0), expected)


def test_vmap_jvp_all_dual_base_inplace():
    """torch test/functorch/test_eager_transforms.py::TestVmapJvpInplaceView::test_all_dual_base_inplace"""
    b = 2

    def f(x, y):
        view = x[0, ::2]
        x.copy_(y)
        return x, view

    x = torch.randn(2, b, 6)
    xt = torch.randn(2, 6, b)
    y, yt = torch.randn(2, b, 6), torch.randn(2, b, 6)
    out, out_tangent = fu.vmap(_push_jvp(f), in_axes=(1, 2, 1, 1))(x.clone(), xt, y, yt)
    expected_out = fu.vmap(f, in_axes=(1, 1))(x.clone(), y)
    assert_tree_close(out, expected_out)
    torch.testing.assert_close(out_tangent[0], yt.movedim(1, 0))
    torch.testing.assert_close(out_tangent[1], yt.movedim(1, 0)[:, 0, ::2])


def test_vmap_jvp_right_dual_view_prop():
    """torch test/functorch/test_eager_transforms.py::TestVmapJvpInplaceView::test_right_dual_view_prop"""
    b = 2

    def f(x, y):
        x = x.clone()
        view = x[0]
        view.copy_(y)
        return view, x

    def push_jvp(x, y, yt):
        return fu.jvp(partial(f, x), (y,), (yt,))

    x = torch.randn(2, b, 6)
    y, yt = torch.randn(6, b), torch.randn(6, b)
    outs, tangents = fu.vmap(push_jvp, in_axes=(1, 1, 1))(x, y, yt)
    expected_out = fu.vmap(f, in_axes=(1, 1))(x.clone(), y)
    assert_tree_close(outs, expected_out)
    torch.testing.assert_close(tangents[0], yt.movedim(1, 0))
    expected_tangent_1 = torch.zeros_like(x).movedim(1, 0)
    expected_tangent_1[:, 0].copy_(yt.movedim(1, 0))
    torch.testing.assert_close(tangents[1], expected_tangent_1)


def test_vmap_jvp_right_dual_base_prop():
    """torch test/functorch/test_eager_transforms.py::TestVmapJvpInplaceView::test_right_dual_base_prop"""
    b = 2

    def f(x, y):
        x = x.clone()
        view = x[0]
        x.copy_(y)
        return view, x

    def push_jvp(x, y, yt):
        return fu.jvp(partial(f, x), (y,), (yt,))

    x = torch.randn(2, b, 6)
    y, yt = torch.randn(2, 6, b), torch.randn(2, 6, b)
    outs, tangents = fu.vmap(push_jvp, in_axes=(1, 2, 2))(x, y, yt)
    expected_out = fu.vmap(f, in_axes=(1, 2))(x, y)
    assert_tree_close(outs, expected_out)
    torch.testing.assert_close(tangents[0], yt.movedim(2, 0)[:, 0])
    torch.testing.assert_close(tangents[1], yt.movedim(2, 0))


# --------------------------------------------------------------------------------------------
# TestComposability
# --------------------------------------------------------------------------------------------


def test_grad_grad():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_grad_grad"""
    x = torch.randn([])
    torch.testing.assert_close(fu.grad(fu.grad(torch.sin))(x), -x.sin())


def test_grad_vmap():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_grad_vmap"""
    x = torch.randn(3)
    torch.testing.assert_close(fu.grad(lambda x: fu.vmap(torch.sin)(x).sum())(x), x.cos())


def test_grad_vjp():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_grad_vjp"""
    x = torch.randn(3)

    def foo(x):
        _, vjp_fn = fu.vjp(torch.sin, x)
        return vjp_fn(x)[0].sum()

    expected = fu.grad(lambda x: (x * x.cos()).sum())(x)
    torch.testing.assert_close(fu.grad(foo)(x), expected)


def test_vmap_grad():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_vmap_grad"""
    x = torch.randn(3)
    torch.testing.assert_close(fu.vmap(fu.grad(torch.sin))(x), x.cos())


def test_vmap_vmap():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_vmap_vmap"""
    x = torch.randn(2, 3)
    torch.testing.assert_close(fu.vmap(fu.vmap(torch.sin))(x), x.sin())


def test_vmap_vjp():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_vmap_vjp"""
    x = torch.randn(3)
    _, vjp_fn = fu.vjp(torch.sin, x)

    def foo(x):
        _, vjp_fn = fu.vjp(torch.sin, x)
        return vjp_fn(x)

    assert_tree_close(fu.vmap(foo)(x), vjp_fn(x))
    xs = torch.randn(5, 3)
    expected = torch.stack([vjp_fn(x)[0] for x in xs])
    torch.testing.assert_close(fu.vmap(lambda x: vjp_fn(x)[0])(xs), expected)


def test_vjp_grad():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_vjp_grad"""
    x = torch.randn([])
    y, vjp_fn = fu.vjp(fu.grad(torch.sin), x)
    torch.testing.assert_close(y, x.cos())
    v = torch.randn([])
    torch.testing.assert_close(vjp_fn(v)[0], -x.sin() * v)


def test_vjp_vmap():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_vjp_vmap"""
    x = torch.randn(3)
    y, vjp_fn = fu.vjp(fu.vmap(torch.sin), x)
    torch.testing.assert_close(y, x.sin())
    v = torch.randn(3)
    torch.testing.assert_close(vjp_fn(v)[0], x.cos() * v)


def test_vjp_vjp():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_vjp_vjp

    torch only checks that the last call runs; its value is d/dx [v * cos(x)] · w.
    """
    x = torch.randn(3)
    y, vjp_fn = fu.vjp(torch.sin, x)
    torch.testing.assert_close(y, x.sin())
    y, vjp_fn2 = fu.vjp(lambda v: vjp_fn(v)[0], x)
    torch.testing.assert_close(y, x * x.cos())
    (z,) = vjp_fn2(x)
    torch.testing.assert_close(z, x * x.cos())


def test_requires_grad_inside_vmap():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_requires_grad_inside_transform
    (the vmap cases)"""

    def f(x):
        x.requires_grad_()
        return x.sin().sum()

    with pytest.raises((TypeError, ValueError), match=r"vmap\(f\)"):
        fu.vmap(f)(torch.randn(3))


def test_requires_grad_inside_grad():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_requires_grad_inside_transform
    (the grad cases: torch raises; at top level the tape gives the right answer instead)"""

    def f(x):
        x.requires_grad_()
        return x.sin().sum()

    x = torch.randn(3)
    torch.testing.assert_close(fu.grad(f)(x), x.cos())
    x = torch.randn([])
    torch.testing.assert_close(fu.grad(fu.grad(f))(x), -x.sin())


def test_retain_grad_inside_transform():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_retain_grad_inside_transform
    (torch raises; at top level the tape gives the right answer instead)"""

    def f(x):
        y = x.sin()
        y.retain_grad()
        return y.sum()

    x = torch.randn(3)
    torch.testing.assert_close(fu.grad(f)(x), x.cos())


def test_autograd_functional_jacrev_inside_grad():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_autograd_functional_jacrev_inside_transform
    (the grad case: torch refuses; a wrong number is the one outcome not allowed)"""

    def f(x):
        return torch.autograd.functional.jacobian(lambda x: x.sin().sum(), x)

    x = torch.randn([])
    try:
        g = fu.grad(f)(x)
    except (TypeError, ValueError) as e:
        assert "grad(f)" in str(e) and "autograd.functional" in str(e)
    else:
        torch.testing.assert_close(g, -x.sin())


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
@pytest.mark.parametrize("api", ["jacobian", "vjp", "jvp", "jacobian_forward"])
def test_autograd_functional_inside_vmap(api):
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_autograd_functional_jacrev_inside_transform
    (and _vjp_, _jvp_, _jacfwd_inside_transform: the vmap cases)"""

    def f(x):
        g = lambda x: x.sin().sum()  # noqa: E731
        if api == "jvp":
            return torch.autograd.functional.jvp(g, (x,), (torch.ones_like(x),))
        if api == "jacobian_forward":
            return torch.autograd.functional.jacobian(g, x, strategy="forward-mode", vectorize=True)
        return getattr(torch.autograd.functional, api)(g, x)

    with pytest.raises((TypeError, ValueError), match=r"vmap\(f\)"):
        fu.vmap(f)(torch.randn(5, 3))


@pytest.mark.parametrize("transform", ["grad", "jacrev", "value_and_grad"])
def test_legacy_autograd_function_top_level(transform):
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_autograd_function_no_setup_context

    torch refuses a Function without setup_context in every transform; here top-level reverse mode
    runs it on the autograd tape (docs/sharp_edges.md).
    """

    class MySin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, gy):
            (x,) = ctx.saved_tensors
            return gy * x.cos()

    x = torch.randn(3)
    if transform == "jacrev":
        torch.testing.assert_close(fu.jacrev(MySin.apply)(x), torch.diagflat(x.cos()))
        return
    result = getattr(fu, transform)(lambda x: MySin.apply(x).sum())(x)
    g = result if transform == "grad" else result[1]
    torch.testing.assert_close(g, x.cos())


@pytest.mark.parametrize("transform", ["jacfwd", "hessian"])
def test_legacy_autograd_function_under_torch_func(transform):
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_autograd_function_no_setup_context
    (jacfwd and hessian: a TypeError naming the call where torch.func is needed, or the right
    answer where the autograd tape can serve)"""

    class MySin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, gy):
            (x,) = ctx.saved_tensors
            return gy * x.cos()

    f = (lambda x: MySin.apply(x).sum()) if transform == "hessian" else MySin.apply
    x = torch.randn(3)
    try:
        result = getattr(fu, transform)(f)(x)
    except TypeError as e:
        assert re.search(rf"{transform}\(.*setup_context", str(e))
    else:
        expected = -torch.diagflat(x.sin()) if transform == "hessian" else torch.diagflat(x.cos())
        torch.testing.assert_close(result, expected)


def test_legacy_autograd_function_vmap():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_autograd_function_no_setup_context
    (vmap)"""

    class MySin(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            ctx.save_for_backward(x)
            return x.sin()

        @staticmethod
        def backward(ctx, gy):
            (x,) = ctx.saved_tensors
            return gy * x.cos()

    with pytest.raises(TypeError, match=r"vmap\(.*setup_context"):
        fu.vmap(MySin.apply)(torch.randn(3))


@pytest.mark.parametrize("transform", ["grad", "jacrev", "value_and_grad"])
def test_saved_tensor_hooks_top_level(transform):
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_transforms_dont_support_saved_tensor_hooks

    torch.func refuses saved-tensor hooks; top-level reverse mode runs on the autograd tape, which
    supports them, so the right derivative comes back.
    """

    def f(x):
        return torch.sin(x).sum()

    def g(x):
        with torch.autograd.graph.save_on_cpu():
            return f(x)

    def run(fun, x):
        result = getattr(fu, transform)(fun)(x)
        return result[1] if transform == "value_and_grad" else result

    x = torch.randn(3)
    with torch.autograd.graph.save_on_cpu():
        torch.testing.assert_close(run(f, x), x.cos())
    torch.testing.assert_close(run(g, x), x.cos())


def test_saved_tensor_hooks_hessian():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_transforms_dont_support_saved_tensor_hooks
    (hessian runs on torch.func, which refuses the hooks)"""

    def f(x):
        return torch.sin(x).sum()

    x = torch.randn(3)
    with (
        pytest.raises(RuntimeError, match="saved tensor hooks"),
        torch.autograd.graph.save_on_cpu(),
    ):
        fu.hessian(f)(x)


def test_vjp_saved_tensor_hooks():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_vjp_doesnt_support_saved_tensor_hooks
    (torch refuses; the top-level tape supports the hooks)"""

    def f(x):
        return torch.sin(x).sum()

    def g(x):
        with torch.autograd.graph.save_on_cpu():
            return f(x)

    x = torch.randn(3)
    with torch.autograd.graph.save_on_cpu():
        _, vjp_fn = fu.vjp(f, x)
    torch.testing.assert_close(vjp_fn(torch.tensor(1.0))[0], x.cos())
    _, vjp_fn = fu.vjp(g, x)
    torch.testing.assert_close(vjp_fn(torch.tensor(1.0))[0], x.cos())


def test_jvp_supports_saved_tensor_hooks():
    """torch test/functorch/test_eager_transforms.py::TestComposability::test_jvp_supports_saved_tensor_hooks"""

    def f(x):
        return torch.sin(x).sum()

    def g(x):
        with torch.autograd.graph.save_on_cpu():
            return f(x)

    x, t = torch.randn(3), torch.randn(3)
    with torch.autograd.graph.save_on_cpu():
        _, tangent = fu.jvp(f, (x,), (t,))
    torch.testing.assert_close(tangent, (x.cos() * t).sum())
    _, tangent = fu.jvp(g, (x,), (t,))
    torch.testing.assert_close(tangent, (x.cos() * t).sum())


def test_grad_name_wrapping():
    """torch test/functorch/test_eager_transforms.py::TestHigherOrderOperatorInteraction::test_grad_name_wrapping"""

    def my_fn(x):
        return x.sum()

    assert fu.grad(my_fn).__name__ == "my_fn"


# --------------------------------------------------------------------------------------------
# TestExamplesCorrectness
# --------------------------------------------------------------------------------------------


def test_maml_regression():
    """torch test/functorch/test_eager_transforms.py::TestExamplesCorrectness::test_maml_regression
    (functional_call mechanism)"""

    class ThreeLayerNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(1, 40)
            self.fc2 = nn.Linear(40, 40)
            self.fc3 = nn.Linear(40, 1)

        def forward(self, x):
            return self.fc3(F.relu(self.fc2(F.relu(self.fc1(x)))))

    net = ThreeLayerNet()
    params = dict(net.named_parameters())

    def fnet(params, x):
        return functional_call(net, params, (x,))

    def mse_loss(x, y):
        return torch.mean((x - y) ** 2)

    k, num_tasks, alpha = 20, 4, 0.1
    gen = torch.Generator().manual_seed(0)
    amps = 0.1 + 0.4 * torch.rand(num_tasks, generator=gen)
    phases = math.pi * torch.rand(num_tasks, generator=gen)

    def get_batch():
        x = -5.0 + 10.0 * torch.rand(num_tasks, k, 1, generator=gen)
        return x, amps.view(-1, 1, 1) * torch.sin(x + phases.view(-1, 1, 1))

    x1, y1 = get_batch()
    x2, y2 = get_batch()

    def get_loss_for_task(use_transform, x1, y1, x2, y2):
        def inner_loss(params, x1, y1):
            return mse_loss(fnet(params, x1), y1)

        if use_transform:
            grads = fu.grad(inner_loss)(params, x1, y1)
        else:
            loss = inner_loss(params, x1, y1)
            flat = list(params.values())
            grads = dict(zip(params, torch.autograd.grad(loss, flat, create_graph=True)))
        new_params = {k: params[k] - alpha * grads[k] for k in params}
        return mse_loss(fnet(new_params, x2), y2)

    list_params = list(params.values())
    inner = fu.vmap(partial(get_loss_for_task, True))(x1, y1, x2, y2)
    result_grads = torch.autograd.grad(inner.sum() / num_tasks, list_params)
    inner = [get_loss_for_task(False, x1[i], y1[i], x2[i], y2[i]) for i in range(num_tasks)]
    expected_grads = torch.autograd.grad(sum(inner) / num_tasks, list_params)
    assert_tree_close(result_grads, expected_grads, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("jac", ["jacfwd", "jacrev"])
def test_lennard_jones_batched_jac(jac):
    """torch test/functorch/test_eager_transforms.py::TestExamplesCorrectness::test_lennard_jones_batched_jac"""
    sigma, epsilon = 0.5, 4.0
    jacapi = getattr(fu, jac)

    def lennard_jones(r):
        return epsilon * ((sigma / r) ** 12 - (sigma / r) ** 6)

    def lennard_jones_force(r):
        return -epsilon * ((-12 * sigma**12 / r**13) + (6 * sigma**6 / r**7))

    r = torch.linspace(0.5, 2 * sigma, steps=100)
    drs = torch.outer(r, torch.tensor([1.0, 0, 0]))
    norms = torch.norm(drs, dim=1).reshape(-1, 1)
    training_energies = torch.stack(list(map(lennard_jones, norms))).reshape(-1, 1)
    training_forces = torch.stack(
        [force * dr for force, dr in zip(map(lennard_jones_force, norms), drs)]
    )
    model = nn.Sequential(
        nn.Linear(1, 16), nn.Tanh(), nn.Linear(16, 16), nn.Tanh(), nn.Linear(16, 1)
    )

    def make_prediction(model, drs, use_functorch):
        norms = torch.norm(drs, dim=1).reshape(-1, 1)
        energies = model(norms)
        if use_functorch:
            network_derivs = fu.vmap(jacapi(model))(norms).squeeze(-1)
            forces = -network_derivs * drs / norms
        else:
            forces = []
            for r, dr in zip(norms, drs):
                network_deriv = torch.autograd.functional.jacobian(model, r, create_graph=True)
                forces.append(-network_deriv * dr / r)
            forces = torch.cat(forces)
        return energies, forces

    def loss_fn(energies, forces, predicted_energies, predicted_forces):
        return (
            F.mse_loss(energies, predicted_energies)
            + 0.01 * F.mse_loss(forces, predicted_forces) / 3
        )

    energies, forces = make_prediction(model, drs, use_functorch=True)
    loss = loss_fn(training_energies, training_forces, energies, forces)
    result = torch.autograd.grad(loss, model.parameters())
    energies, forces = make_prediction(model, drs, use_functorch=False)
    loss = loss_fn(training_energies, training_forces, energies, forces)
    expected = torch.autograd.grad(loss, model.parameters())
    assert_tree_close(result, expected, rtol=1e-4, atol=1e-5)


def _mlp_classifier(dropout=None):
    class MLPClassifier(nn.Module):
        def __init__(self, in_features=2, hidden_dim=32, n_classes=2):
            super().__init__()
            self.dropout = dropout() if dropout is not None else nn.Identity()
            self.fc1 = nn.Linear(in_features, hidden_dim)
            self.fc2 = nn.Linear(hidden_dim, n_classes)

        def forward(self, x):
            x = torch.flatten(self.dropout(x), start_dim=1)
            return F.log_softmax(self.fc2(F.relu(self.fc1(x))), -1)

    return MLPClassifier


def test_ensemble_regression():
    """torch test/functorch/test_eager_transforms.py::TestExamplesCorrectness::test_ensemble_regression
    (functional_call mechanism; grad_and_value becomes value_and_grad)"""
    points = torch.randn(100, 2)
    labels = torch.randint(0, 2, (100,))
    mlp = _mlp_classifier()
    model = mlp()

    def train_step_fn(use_transform, weights, batch, targets, lr=0.2):
        def compute_loss(weights, batch, targets):
            return F.nll_loss(functional_call(model, weights, (batch,)), targets)

        if use_transform:
            loss, grad_weights = fu.value_and_grad(compute_loss)(weights, batch, targets)
        else:
            loss = compute_loss(weights, batch, targets)
            grads = torch.autograd.grad(loss, list(weights.values()))
            grad_weights = dict(zip(weights, grads))
        return loss, {k: weights[k] - lr * grad_weights[k] for k in weights}

    batched_weights, _ = stack_module_state([mlp() for _ in range(2)])
    batched_weights = {k: v.detach() for k, v in batched_weights.items()}
    step = fu.vmap(partial(train_step_fn, True), in_axes=(0, None, None))
    result_loss, result_weights = step(batched_weights, points, labels)

    def slice_weights(index):
        return {k: w[index].detach().requires_grad_() for k, w in batched_weights.items()}

    loss0, weights0 = train_step_fn(False, slice_weights(0), points, labels)
    loss1, weights1 = train_step_fn(False, slice_weights(1), points, labels)
    torch.testing.assert_close(result_loss, torch.stack([loss0, loss1]).detach())
    expected = {k: torch.stack([weights0[k], weights1[k]]).detach() for k in weights0}
    assert_tree_close(result_weights, expected)


@pytest.mark.parametrize("dropout", [nn.Dropout, nn.AlphaDropout, nn.FeatureAlphaDropout])
def test_find_learning_rate_ensembling(dropout):
    """torch test/functorch/test_eager_transforms.py::TestExamplesCorrectness::test_find_learning_rate_ensembling
    (functional_call mechanism; randomness="same" shares the dropout masks)"""
    points = torch.randn(100, 2, 2, 2, 2)
    labels = torch.randint(0, 2, (100,))
    mlp = _mlp_classifier(dropout)
    og_model = mlp(in_features=16)

    def train_step_fn(weights, batch, targets, lr):
        def compute_loss(weights, batch, targets):
            return F.nll_loss(functional_call(og_model, weights, (batch,)), targets)

        loss, grad_weights = fu.value_and_grad(compute_loss)(weights, batch, targets)
        return loss, {k: weights[k] - lr * grad_weights[k] for k in weights}

    models = [copy.deepcopy(og_model) for _ in range(2)]
    batched_weights, _ = stack_module_state(models)
    batched_weights = {k: v.detach() for k, v in batched_weights.items()}
    step = fu.vmap(train_step_fn, in_axes=(0, None, None, 0), randomness="same")
    lrs = torch.tensor([0.2, 0.4])
    result_loss, result_weights = step(batched_weights, points, labels, lrs)
    torch.testing.assert_close(result_loss[0], result_loss[1])
    assert any(not torch.equal(w[0], w[1]) for w in result_weights.values())


# --------------------------------------------------------------------------------------------
# TestGradTrackingTensorToList
# --------------------------------------------------------------------------------------------


def test_tolist_with_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTrackingTensorToList::test_tolist_with_grad"""
    seen = []

    def f(x):
        seen.append(x.tolist())
        return (x**2).sum()

    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    torch.testing.assert_close(fu.grad(f)(x).detach(), torch.tensor([2.0, 4.0, 6.0]))
    assert seen == [[1.0, 2.0, 3.0]]


def test_tolist_nested_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTrackingTensorToList::test_tolist_nested_grad"""
    seen = []

    def f(x):
        def g(y):
            seen.append(y.tolist())
            return (y**2).sum()

        seen.append(x.tolist())
        return fu.grad(g)(x).sum()

    x = torch.tensor([1.0, 2.0, 3.0], requires_grad=True)
    torch.testing.assert_close(fu.grad(f)(x).detach(), torch.tensor([2.0, 2.0, 2.0]))
    assert seen == [[1.0, 2.0, 3.0]] * 2


def test_tolist_multidimensional_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTrackingTensorToList::test_tolist_multidimensional_grad"""
    seen = []

    def f(x):
        seen.append(x.tolist())
        return x.sum()

    x = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    torch.testing.assert_close(fu.grad(f)(x).detach(), torch.ones(2, 3))
    assert seen == [[[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]]


def test_tolist_conj_neg_grad():
    """torch test/functorch/test_eager_transforms.py::TestGradTrackingTensorToList::test_tolist_conj_neg_grad

    torch gives 2x; the gradient of a real function of complex inputs is its conjugate here (JAX).
    """
    seen = []

    def f(x):
        seen.append(x.conj().tolist())
        return (x * x.conj()).real.sum()

    x = torch.tensor([1.0 + 2.0j, 3.0 + 4.0j], requires_grad=True)
    result = fu.grad(f)(x).detach()
    torch.testing.assert_close(result, torch.tensor([2.0 - 4.0j, 6.0 - 8.0j]))
    assert seen == [[1.0 - 2.0j, 3.0 - 4.0j]]


# --------------------------------------------------------------------------------------------
# TestExamplesCorrectness (continued), TestMakeFunctional: the parts with a public counterpart
# --------------------------------------------------------------------------------------------


def test_maml_omniglot():
    """torch test/functorch/test_eager_transforms.py::TestExamplesCorrectness::test_maml_omniglot
    (functional_call mechanism; 8 channels and 14x14 images instead of 64 and 28x28, to keep the
    CPU time small)"""
    dtype = torch.double
    n_way, n_inner_iter, num_tasks = 5, 2, 2
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3),
        nn.GroupNorm(8, 8, affine=True),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Conv2d(8, 8, 3),
        nn.GroupNorm(8, 8, affine=True),
        nn.ReLU(),
        nn.MaxPool2d(2, 2),
        nn.Flatten(),
        nn.Linear(32, n_way),
    ).to(dtype)
    params = dict(net.named_parameters())

    def fnet(params, x):
        return functional_call(net, params, (x,))

    def loss_for_task(use_transform, x_spt, y_spt, x_qry, y_qry):
        def compute_loss(new_params, x, y):
            return F.cross_entropy(fnet(new_params, x), y)

        new_params = params
        for _ in range(n_inner_iter):
            if use_transform:
                grads = fu.grad(compute_loss)(new_params, x_spt, y_spt)
            else:
                res = compute_loss(new_params, x_spt, y_spt)
                flat = torch.autograd.grad(res, list(new_params.values()), create_graph=True)
                grads = dict(zip(new_params, flat))
            new_params = {k: new_params[k] - 0.1 * grads[k] for k in new_params}
        return F.cross_entropy(fnet(new_params, x_qry), y_qry)

    x_spt = torch.randn(num_tasks, 5, 1, 14, 14, dtype=dtype)
    y_spt = torch.randint(0, n_way, (num_tasks, 5))
    x_qry = torch.randn(num_tasks, 15, 1, 14, 14, dtype=dtype)
    y_qry = torch.randint(0, n_way, (num_tasks, 15))

    qry_losses = fu.vmap(partial(loss_for_task, True))(x_spt, y_spt, x_qry, y_qry)
    result_grads = torch.autograd.grad(qry_losses.sum(), list(params.values()))
    losses = [
        loss_for_task(False, x_spt[i], y_spt[i], x_qry[i], y_qry[i]) for i in range(num_tasks)
    ]
    expected_grads = torch.autograd.grad(sum(losses), list(params.values()))
    assert_tree_close(result_grads, expected_grads)


def test_update_batch_norm():
    """torch test/functorch/test_eager_transforms.py::TestExamplesCorrectness::test_update_batch_norm
    (functional_call mechanism, batch norm without running statistics; 8 channels and 10x10
    images instead of 64 and 28x28)"""
    dtype = torch.double
    classes, num_batches = 5, 2
    net = nn.Sequential(
        nn.Conv2d(8, 8, 3),
        nn.BatchNorm2d(8, affine=True, track_running_stats=False),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8 * 8 * 8, classes),
    ).to(dtype)
    torch.func.replace_all_batch_norm_modules_(net)
    params = {k: v.detach() for k, v in net.named_parameters()}

    def compute_loss(x, y, params):
        return F.cross_entropy(functional_call(net, params, (x,)), y)

    x = torch.randn(num_batches, 1, 8, 10, 10, dtype=dtype)
    y = torch.randint(0, classes, (num_batches, 1))
    result = fu.vmap(fu.grad(compute_loss, argnums=2), in_axes=(0, 0, None))(x, y, params)

    leaves = {k: v.clone().requires_grad_() for k, v in params.items()}
    per_batch = [
        torch.autograd.grad(compute_loss(x[i], y[i], leaves), list(leaves.values()))
        for i in range(num_batches)
    ]
    expected = {k: torch.stack([g[j] for g in per_batch]) for j, k in enumerate(leaves)}
    assert_tree_close(result, expected)


def test_parameter_tying_grad():
    """torch test/functorch/test_eager_transforms.py::TestMakeFunctional::test_parameter_tying_grad
    (make_functional_with_buffers becomes functorch_utils.nn.functionalize: a tied weight is one
    leaf, whose gradient sums both uses)"""

    class Foo(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)
            self.weight = self.linear.weight
            self.bias = self.linear.bias

        def forward(self, x):
            return F.linear(self.linear(x), self.weight, self.bias)

    x = torch.randn(2, 3)
    mod = Foo()
    expected = torch.autograd.grad(mod(x).sum(), list(mod.parameters()))
    params, apply = fu.nn.functionalize(mod)
    result = fu.grad(lambda p, x: apply(p, x).sum())(params, x)
    assert len(result) == len(expected) == 2
    assert_tree_close(tuple(result.values()), expected)


def test_stack_module_state_leaf():
    """torch test/functorch/test_eager_transforms.py::TestMakeFunctional::test_stack_module_state_leaf
    (stack_module_state becomes functorch_utils.nn.stack_modules, whose values are detached copies,
    docs/nn.md#compared-with-torchfunc)"""
    models = [nn.Linear(2, 2) for _ in range(3)]
    stacked, apply = fu.nn.stack_modules(models)
    for name, value in stacked.items():
        assert value.is_leaf and not value.requires_grad
        torch.testing.assert_close(
            value, torch.stack([dict(m.named_parameters())[name].detach() for m in models])
        )
    x = torch.randn(4, 2)
    out = fu.vmap(apply, in_axes=(0, None))(stacked, x)
    torch.testing.assert_close(out, torch.stack([m(x) for m in models]).detach())


def test_stack_module_state_error():
    """torch test/functorch/test_eager_transforms.py::TestMakeFunctional::test_stack_module_state_error
    (and test_combine_state_for_ensemble_error)"""
    with pytest.raises(TypeError, match=r"stack_modules\(modules\): modules is not a non-empty"):
        fu.nn.stack_modules([])
    models = [nn.Linear(2, 2) for _ in range(3)]
    models[1].eval()
    with pytest.raises(ValueError, match=r"stack_modules\(modules\): .*different training modes"):
        fu.nn.stack_modules(models)
    models = [nn.Linear(2, 2) for _ in range(3)]
    models[1] = nn.Conv2d(3, 3, (3, 3))
    with pytest.raises(ValueError, match=r"stack_modules\(modules\): modules\[1\]"):
        fu.nn.stack_modules(models)


@pytest.mark.xfail(
    strict=True,
    reason="bug: stack_modules of members whose parameters differ in requires_grad raises "
    "torch's raw RuntimeError",
)
def test_stack_module_state_mismatch_error():
    """torch test/functorch/test_eager_transforms.py::TestMakeFunctional::test_stack_module_state_mismatch_error"""
    models = [nn.Linear(2, 2) for _ in range(3)]
    models[0].weight.requires_grad_(False)
    try:
        stacked, _ = fu.nn.stack_modules(models)
    except (TypeError, ValueError) as e:
        assert "stack_modules(modules)" in str(e) and "requires_grad" in str(e)
    else:
        assert not any(v.requires_grad for v in stacked.values())


def test_parameter_tying_ensemble():
    """torch test/functorch/test_eager_transforms.py::TestMakeFunctional::test_parameter_tying_ensemble
    (combine_state_for_ensemble becomes functorch_utils.nn.stack_modules)"""

    class Foo(nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = nn.Linear(3, 3)
            self.weight = self.linear.weight
            self.bias = self.linear.bias
            self.buffer = nn.Buffer(torch.ones(3))
            self.buffer_tied = self.buffer

        def forward(self, x):
            x = F.linear(self.linear(x), self.weight, self.bias)
            return x + self.buffer + self.buffer_tied

    num_models = 2
    xs = torch.randn(num_models, 64, 3)
    models = [Foo() for _ in range(num_models)]
    stacked, apply = fu.nn.stack_modules(models)
    result = fu.vmap(apply)(stacked, xs)
    expected = torch.stack([model(x) for model, x in zip(models, xs)]).detach()
    torch.testing.assert_close(result, expected)
