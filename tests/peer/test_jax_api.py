"""JAX's own API tests, ported by hand: jax tests/api_test.py (APITest, RematTest).

Covers grad, value_and_grad, argnums, has_aux, holomorphic, jvp, vjp, linearize,
linear_transpose, jacfwd/jacrev/hessian, checkpoint (remat) and stop_gradient. Each test names its
origin (``jax tests/api_test.py::<Class>::<test>``). JAX arrays are torch tensors: float64 where a
value is compared, Python floats where the JAX test is about Python scalars (they become 0-d
tensors of the default dtype here). Expected values are the JAX test's own.

Where the library differs from JAX in a way docs/sharp_edges.md writes down (``None`` instead of
``float0`` for integer inputs; ``ValueError`` for tangent/cotangent structure and shape
mismatches), the test asserts the documented behaviour and says so. Tests that need what the
library does not have (jit, lax control flow, random keys, checkpoint policies, eval_shape, ...)
are not ported; tests/peer/README.md lists them.
"""

from __future__ import annotations

import collections
import re
import types

import numpy as np
import pytest
import torch

import functorch_utils as fu
from functorch_utils.testing import check_grads

from ..helpers import tree_allclose

D = torch.float64
C = torch.complex128


def T(x, dtype=D):
    return torch.tensor(x, dtype=dtype)


def randn(*shape, seed=0, dtype=D):
    """JAX's ``self.rng().randn``: seeded standard normals."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def bug(reason):
    return pytest.mark.xfail(strict=True, reason=f"bug: {reason}")


def documented(anchor, reason):
    return pytest.mark.xfail(
        strict=True, reason=f"documented difference: docs/sharp_edges.md#{anchor} {reason}"
    )


# =================================================================================================
# grad, value_and_grad, argnums
# =================================================================================================


def test_grad_item():
    """jax tests/api_test.py::APITest::test_grad_item"""

    def f(x):
        if x.bool().item():
            return x**2
        return x

    assert fu.grad(f)(2.0) == 4


def test_grad_bad_input():
    """jax tests/api_test.py::APITest::test_grad_bad_input (and test_bad_input, grad part)"""
    with pytest.raises(TypeError, match=r"args\[0\].*got str 'foo'"):
        fu.grad(lambda x: x)("foo")


def test_grad_argnums():
    """jax tests/api_test.py::APITest::test_grad_argnums"""

    def f(x, y, z, flag=False):
        assert flag
        return 1.0 * x + 2.0 * y + 3.0 * z

    assert fu.grad(f)(1.0, 1.0, 1.0, flag=True) == 1.0
    assert fu.grad(f, argnums=1)(1.0, 1.0, 1.0, flag=True) == 2.0
    assert fu.grad(f, argnums=(2, 0))(1.0, 1.0, 1.0, flag=True) == (3.0, 1.0)


def test_value_and_grad_argnums():
    """jax tests/api_test.py::APITest::test_value_and_grad_argnums"""

    def f(x, y, z, flag=False):
        assert flag
        return 1.0 * x + 2.0 * y + 3.0 * z

    y = f(1.0, 1.0, 1.0, flag=True)
    assert fu.value_and_grad(f)(1.0, 1.0, 1.0, flag=True) == (y, 1.0)
    assert fu.value_and_grad(f, argnums=1)(1.0, 1.0, 1.0, flag=True) == (y, 2.0)
    assert fu.value_and_grad(f, argnums=(2, 0))(1.0, 1.0, 1.0, flag=True) == (y, (3.0, 1.0))


@pytest.mark.parametrize("name", ["grad", "jacfwd", "jacrev"])
def test_grad_wrap(name):
    """jax tests/api_test.py::APITest::test_grad_wrap (the transform's signature; jit not ported)"""
    transform = getattr(fu, name)

    @transform
    def my_function(x, flag):
        return x if flag else torch.zeros_like(x)

    assert my_function(T(1.0), False) == 0.0
    assert my_function(T(1.0), True) == 1.0
    assert my_function(T(1.0), flag=True) == 1.0


def test_jvp_jit_cached():
    """jax tests/api_test.py::APITest::test_jvp_jit_cached (the values; jit not ported)"""

    def func(x):
        def inner(y):
            return y * x

        return inner(T(4.0)) + inner(T(5.0))

    tree_allclose(fu.jvp(func, (T(5.0),), (T(1.0),)), (T(45.0), T(9.0)))


def test_grad_tuple_output():
    """jax tests/api_test.py::APITest::test_grad_tuple_output"""
    with pytest.raises(TypeError, match="scalar"):
        fu.grad(lambda x: (x, x))(1.0)


def test_grad_unit_output():
    """jax tests/api_test.py::APITest::test_grad_unit_output"""
    with pytest.raises(TypeError, match="scalar"):
        fu.grad(lambda x: ())(torch.zeros(3))


def test_grad_nonscalar_output():
    """jax tests/api_test.py::APITest::test_grad_nonscalar_output"""
    with pytest.raises(TypeError, match="scalar-output"):
        fu.grad(lambda x: x)(torch.zeros(3))


def test_grad_nonscalar_output_hint():
    """jax tests/api_test.py::APITest::test_grad_nonscalar_output_hint

    The message names the output's shape and suggests reducing it or taking a Jacobian (the
    library names ``jacrev``; JAX's extra ``reshape(())`` advice for size-1 outputs is not ported).
    """
    cases = [
        (fu.grad, lambda x: torch.stack([x**2]), 1.0, "(1,)"),
        (fu.value_and_grad, lambda x: x, torch.zeros(3), "(3,)"),
        (fu.grad, lambda x: (x**2).reshape(1, 1), 1.0, "(1, 1)"),
    ]
    for transform, fun, arg, shape in cases:
        with pytest.raises(TypeError) as info:
            transform(fun)(arg)
        msg = str(info.value)
        assert f"shape {shape}" in msg
        assert ".sum()" in msg
        assert "jacrev" in msg


def test_unwrapped_numpy():
    """jax tests/api_test.py::APITest::test_unwrapped_numpy"""
    with pytest.raises(Exception, match="numpy"):
        fu.grad(lambda x: np.exp(x).sum())(torch.zeros(3))


def test_binop_mismatch():
    """jax tests/api_test.py::APITest::test_binop_mismatch (torch's broadcasting error surfaces)"""

    def f(x, y):
        return (x + y).sum()

    with pytest.raises(RuntimeError, match=r"\(3\).*\(4\)"):
        f(torch.zeros(3), torch.zeros(4))
    with pytest.raises(RuntimeError, match=r"\(3\).*\(4\)"):
        fu.grad(f)(torch.zeros(3), torch.zeros(4))


def test_dot_mismatch():
    """jax tests/api_test.py::APITest::test_dot_mismatch (torch's error surfaces)"""
    with pytest.raises(RuntimeError, match=r"3.*4"):
        fu.grad(torch.dot)(torch.zeros(3), torch.zeros(4))


def test_switch_value_jit():
    """jax tests/api_test.py::APITest::test_switch_value_jit (the grad part; jit not ported)"""

    def f(x):
        if x > 0:
            return x
        return -x

    assert fu.grad(f)(1.0) == 1.0
    assert fu.grad(f)(-1.0) == -1.0


def test_grad_negative_argnums():
    """jax tests/api_test.py::APITest::test_grad_negative_argnums"""

    def f(x, y):
        return x.sum() * y.sum()

    x, y = randn(4, 4, seed=0), randn(4, 4, seed=1)
    g = fu.grad(f, argnums=-1)(x, y)
    tree_allclose(g, torch.full_like(y, float(x.sum())))


def test_grad_without_enough_args_error_message():
    """jax tests/api_test.py::APITest::test_grad_without_enough_args_error_message"""

    def f(x, y):
        return x + y

    with pytest.raises(TypeError, match=r"argnums=0.*0 positional arguments"):
        fu.grad(f, argnums=0)(x=0.0, y=1.0)


def test_grad_object_array_error():
    """jax tests/api_test.py::APITest::test_grad_object_array_error"""
    with pytest.raises(TypeError, match="not a tensor"):
        fu.grad(lambda x: x)(np.array([1, 2, 3], dtype=object))


def test_grad_does_not_unflatten_tree_with_none():
    """jax tests/api_test.py::APITest::test_grad_does_not_unflatten_tree_with_none"""

    class CustomNode(list):
        pass

    seen = []

    def unflatten(unused_aux_data, children):
        seen.append(children[0])
        assert children[0] is not None
        return CustomNode(children)

    fu.tree_util.register_pytree_node(CustomNode, lambda x: (list(x), None), unflatten)
    g = fu.grad(lambda x: x[0])(CustomNode([T(0.0)]))
    assert isinstance(g, CustomNode)
    tree_allclose(list(g), [T(1.0)])
    assert all(c is not None for c in seen)


def test_grad_conj_symbolic_zeros():
    """jax tests/api_test.py::APITest::test_grad_conj_symbolic_zeros (jit not ported)"""

    def f(x):
        return (lambda a, b: (a, b))(x, torch.conj(x))[0]

    tree_allclose(fu.grad(f)(T(3.0)), T(1.0))


def test_namedtuple_transparency():
    """jax tests/api_test.py::APITest::test_namedtuple_transparency"""
    Point = collections.namedtuple("Point", ["x", "y"])

    def f(pt):
        return torch.sqrt(pt.x**2 + pt.y**2)

    pt = Point(T(1.0), T(2.0))
    f(pt)
    g = fu.grad(f)(pt)
    assert isinstance(g, Point)
    tree_allclose(g, Point(1 / torch.sqrt(T(5.0)), 2 / torch.sqrt(T(5.0))))


def test_namedtuple_subclass_transparency():
    """jax tests/api_test.py::APITest::test_namedtuple_subclass_transparency"""
    Point = collections.namedtuple("Point", ["x", "y"])

    class ZeroPoint(Point):
        def is_zero(self):
            return (self.x == 0) and (self.y == 0)

    pt = ZeroPoint(T(0.0), T(0.0))

    def f(pt):
        return T(0.0) if pt.is_zero() else torch.sqrt(pt.x**2 + pt.y**2)

    f(pt)
    g = fu.grad(f)(pt)
    assert isinstance(pt, ZeroPoint)
    tree_allclose(tuple(g), (T(0.0), T(0.0)))


# =================================================================================================
# has_aux
# =================================================================================================


def test_grad_and_aux_basic():
    """jax tests/api_test.py::APITest::test_grad_and_aux_basic"""
    g, aux = fu.grad(lambda x: (x**3, [x**2]), has_aux=True)(T(3.0))
    tree_allclose(g, fu.grad(lambda x: x**3)(T(3.0)))
    tree_allclose(aux, [T(9.0)])


def test_grad_and_aux_error():
    """jax tests/api_test.py::APITest::test_grad_and_aux_error"""
    for fun in (lambda x: (1, 2, 3), lambda x: x, lambda x: (x,)):
        with pytest.raises(TypeError, match="pair"):
            fu.grad(fun, has_aux=True)(1.0)


def test_grad_and_aux_list_pair():
    """jax tests/api_test.py::APITest::test_grad_and_aux_error (the accepted-pair side)"""
    g, aux = fu.grad(lambda x: [x**2, x], has_aux=True)(T(3.0))
    tree_allclose((g, aux), (T(6.0), T(3.0)))


def test_grad_and_aux_nested():
    """jax tests/api_test.py::APITest::test_grad_and_aux_nested (jit variants not ported)"""

    def f(x):
        _, aux = fu.grad(lambda x: (x**3, [x**3]), has_aux=True)(x)
        return aux[0]

    tree_allclose(fu.grad(f)(T(4.0)), fu.grad(lambda x: x**3)(T(4.0)))

    def f2(x):
        _, aux = fu.grad(lambda x: (x**3, [x**3]), has_aux=True)(x)
        return aux[0] * torch.sin(x)

    tree_allclose(fu.grad(f2)(T(4.0)), fu.grad(lambda x: x**3 * torch.sin(x))(T(4.0)))


def test_grad_and_aux_constant():
    """jax tests/api_test.py::APITest::test_grad_and_aux_constant"""
    g, aux = fu.grad(lambda x: (x**3, [4.0]), has_aux=True)(T(4.0))
    tree_allclose(g, fu.grad(lambda x: x**3)(T(4.0)))
    assert aux == [4.0]

    g, aux = fu.grad(lambda x: (x**3, [x**2, 4.0]), has_aux=True)(T(4.0))
    tree_allclose(g, fu.grad(lambda x: x**3)(T(4.0)))
    tree_allclose(aux[0], T(16.0))
    assert aux[1] == 4.0


def test_grad_and_aux_no_tracers():
    """jax tests/api_test.py::APITest::test_grad_and_aux_no_tracers"""

    def f(x):
        return x**2, dict(identity=x, p1=x + 1)

    _, aux = fu.grad(f, has_aux=True)(T(3.0))
    assert isinstance(aux, dict)
    for val in aux.values():
        assert type(val) is torch.Tensor and not val.requires_grad
    tree_allclose(aux, {"identity": T(3.0), "p1": T(4.0)})
    # nested: the aux of an inner grad is a plain value for the outer one too
    _, aux = fu.vmap(fu.grad(f, has_aux=True))(torch.arange(3.0, dtype=D))
    tree_allclose(
        aux, {"identity": torch.arange(3.0, dtype=D), "p1": torch.arange(1.0, 4.0, dtype=D)}
    )


def test_jacfwd_and_aux_basic():
    """jax tests/api_test.py::APITest::test_jacfwd_and_aux_basic"""
    jac, aux = fu.jacfwd(lambda x: (x**3, [x**2]), has_aux=True)(T(3.0))
    tree_allclose(jac, fu.jacfwd(lambda x: x**3)(T(3.0)))
    tree_allclose(aux, [T(9.0)])


def test_jacrev_and_aux_basic():
    """jax tests/api_test.py::APITest::test_jacrev_and_aux_basic"""
    jac, aux = fu.jacrev(lambda x: (x**3, [x**2]), has_aux=True)(T(3.0))
    tree_allclose(jac, fu.jacrev(lambda x: x**3)(T(3.0)))
    tree_allclose(aux, [T(9.0)])


@pytest.mark.parametrize("jac", [fu.jacfwd, fu.jacrev], ids=["jacfwd", "jacrev"])
def test_jac_and_aux_nested(jac):
    """jax tests/api_test.py::APITest::test_jacfwd_and_aux_nested / test_jacrev_and_aux_nested"""

    def f(x):
        _, aux = jac(lambda x: (x**3, [x**3]), has_aux=True)(x)
        return aux[0]

    tree_allclose(jac(f)(T(4.0)), jac(lambda x: x**3)(T(4.0)))

    def f2(x):
        _, aux = jac(lambda x: (x**3, [x**3]), has_aux=True)(x)
        return aux[0] * torch.sin(x)

    tree_allclose(jac(f2)(T(4.0)), jac(lambda x: x**3 * torch.sin(x))(T(4.0)))


def test_jvp_and_aux_basic():
    """jax tests/api_test.py::APITest::test_jvp_and_aux_basic"""
    out, tangent, aux = fu.jvp(lambda x: (x**3, [x**2]), (T(3.0),), (T(4.0),), has_aux=True)
    expected_out, expected_tangent = fu.jvp(lambda x: x**3, (T(3.0),), (T(4.0),))
    tree_allclose((out, tangent), (expected_out, expected_tangent))
    tree_allclose(aux, [T(9.0)])


def test_linearize_aux():
    """jax tests/api_test.py::APITest::test_linearize_aux"""

    def fn(x):
        return x * 2 - 3, x > 0

    out, lin_fn, aux = fu.linearize(fn, T(3.4), has_aux=True)
    tree_allclose(out, T(3.8))
    tree_allclose(lin_fn(T(5.0)), T(10.0))
    assert bool(aux) is True


def test_hessian_aux():
    """jax tests/api_test.py::APITest::test_hessian_aux"""
    A, x = randn(4, 4), randn(4, seed=1)
    h, aux = fu.hessian(lambda x: (x @ (A @ x), x), has_aux=True)(x)
    tree_allclose(h, A + A.T)
    tree_allclose(aux, x)


# =================================================================================================
# jacobians and hessians
# =================================================================================================


def test_jacobian():
    """jax tests/api_test.py::APITest::test_jacobian"""
    A, x = randn(4, 3), randn(3, seed=1)
    tree_allclose(fu.jacfwd(lambda x: A @ x)(x), A)
    tree_allclose(fu.jacrev(lambda x: A @ x)(x), A)
    f = lambda x: torch.tanh(A @ x)  # noqa: E731
    tree_allclose(fu.jacfwd(f)(x), fu.jacrev(f)(x))


def test_hessian():
    """jax tests/api_test.py::APITest::test_hessian"""
    A, x = randn(4, 4), randn(4, seed=1)
    tree_allclose(fu.hessian(lambda x: x @ (A @ x))(x), A + A.T)


def test_hessian_holomorphic():
    """jax tests/api_test.py::APITest::test_hessian_holomorphic"""
    A = randn(4, 4)
    x = randn(4, seed=1).to(C) * (1 + 2j)
    h = fu.hessian(lambda x: x @ (A.to(x.dtype) @ x), holomorphic=True)(x)
    tree_allclose(h, (A + A.T).to(C))


@pytest.mark.parametrize("jac", [fu.jacfwd, fu.jacrev], ids=["jacfwd", "jacrev"])
def test_jacobian_on_pytrees(jac):
    """jax tests/api_test.py::APITest::test_jacobian_on_pytrees"""
    z, o = T(0.0), T(1.0)
    tree_allclose(jac(lambda x, y: (x, y))(z, o), (o, z))
    tree_allclose(jac(lambda x, y: (x, y), 1)(z, o), (z, o))
    tree_allclose(jac(lambda x, y: (x, y), (0, 1))(z, o), ((o, z), (z, o)))
    tree_allclose(
        jac(lambda x: x[:2])((T(1.0), T(2.0), T(3.0))),
        ((o, z, z), (z, o, z)),
    )
    x, y = randn(2), randn(3, seed=1)
    ans = jac(lambda x, y: {"x": x, "xy": torch.outer(x, y)})(x, y)
    expected = {"x": torch.eye(2, dtype=D), "xy": torch.kron(torch.eye(2, dtype=D), y[:, None])}
    expected["xy"] = expected["xy"].reshape(2, 3, 2)
    tree_allclose(ans, expected)


def test_hessian_on_pytrees():
    """jax tests/api_test.py::APITest::test_hessian_on_pytrees"""
    ans = fu.hessian(lambda x: torch.stack(x) ** 2)((T(1.0), T(2.0)))
    expected = ((T([2.0, 0.0]), T([0.0, 0.0])), (T([0.0, 0.0]), T([0.0, 2.0])))
    tree_allclose(ans, expected)


def test_issue1372():
    """jax tests/api_test.py::APITest::test_issue1372"""

    def quad(x):
        return x @ x

    def f(x, u):
        return quad(x) + quad(u)

    x, u = torch.ones(5, dtype=D), torch.ones(2, dtype=D)
    rev, fwd = fu.jacrev, fu.jacfwd
    for outer in (rev, fwd):
        for inner in (rev, fwd):
            assert outer(inner(f, 0), 0)(x, u).shape == (5, 5)
            assert outer(inner(f, 1), 1)(x, u).shape == (2, 2)
            assert outer(inner(f, 1), 0)(x, u).shape == (2, 5)
            assert outer(inner(f, 0), 1)(x, u).shape == (5, 2)


def test_heterogeneous_jacfwd():
    """jax tests/api_test.py::APITest::test_heterogeneous_jacfwd (leaves take the output's dtype)"""
    x = torch.tensor([2.0], dtype=torch.float16)
    y = torch.tensor([3.0], dtype=torch.float32)

    def f(tup):
        assert tup[0].dtype == torch.float16 and tup[1].dtype == torch.float32
        x, y = tup
        return x, y, x + y

    h, s = torch.float16, torch.float32
    actual = fu.jacfwd(f)((x, y))
    desired = (
        (T([[1.0]], h), T([[0.0]], h)),
        (T([[0.0]], s), T([[1.0]], s)),
        (T([[1.0]], s), T([[1.0]], s)),
    )
    tree_allclose(actual, desired)


def test_heterogeneous_jacrev():
    """jax tests/api_test.py::APITest::test_heterogeneous_jacrev (leaves take the input's dtype)"""
    x = torch.tensor([2.0], dtype=torch.float16)
    y = torch.tensor([3.0], dtype=torch.float32)

    def f(tup):
        assert tup[0].dtype == torch.float16 and tup[1].dtype == torch.float32
        x, y = tup
        return x, y, x + y

    h, s = torch.float16, torch.float32
    actual = fu.jacrev(f)((x, y))
    desired = (
        (T([[1.0]], h), T([[0.0]], s)),
        (T([[0.0]], h), T([[1.0]], s)),
        (T([[1.0]], h), T([[1.0]], s)),
    )
    tree_allclose(actual, desired)


def test_heterogeneous_grad():
    """jax tests/api_test.py::APITest::test_heterogeneous_grad"""
    a = (T(1.0 + 1j, C), T(2.0))

    def f(tup):
        assert tup[0].dtype == C and tup[1].dtype == D
        x, y = tup
        return torch.square(torch.abs(x)) + y

    tree_allclose(fu.grad(f)(a), (T(2 - 2j, C), T(1.0)))


# =================================================================================================
# complex numbers and holomorphic
# =================================================================================================


def test_complex_grad_raises_error():
    """jax tests/api_test.py::APITest::test_complex_grad_raises_error"""
    with pytest.raises(TypeError, match="holomorphic"):
        fu.grad(torch.sin)(T(1 + 2j, C))


def test_holomorphic_grad():
    """jax tests/api_test.py::APITest::test_holomorphic_grad"""
    out = fu.grad(torch.sin, holomorphic=True)(T(1 + 2j, C))
    tree_allclose(out, T(2.0327230070196656 - 3.0518977991518j, C))


def test_nonholomorphic_grad():
    """jax tests/api_test.py::APITest::test_nonholomorphic_grad"""
    zs = (0.5j * torch.arange(5) + torch.arange(5)).to(C)

    def f(z):
        return torch.sum(torch.cos(torch.abs(z)))

    expected = T(
        [
            0.0 + 0.0j,
            -0.80430663 + 0.40215331j,
            -0.70368982 + 0.35184491j,
            0.1886467 - 0.09432335j,
            0.86873727 - 0.43436864j,
        ],
        C,
    )
    tree_allclose(fu.grad(f)(zs), expected, rtol=1e-6, atol=1e-7)


def test_complex_output_jacrev_raises_error():
    """jax tests/api_test.py::APITest::test_complex_output_jacrev_raises_error"""
    with pytest.raises(TypeError, match="holomorphic"):
        fu.jacrev(torch.sin)(T(1 + 2j, C))


def test_nonholomorphic_jacrev():
    """jax tests/api_test.py::APITest::test_nonholomorphic_jacrev"""
    zs = (0.5j * torch.arange(5) + torch.arange(5)).to(C)

    def f(z):
        return torch.cos(torch.linalg.norm(2 * z))

    tree_allclose(fu.jacrev(f)(zs), fu.grad(f)(zs))


def test_complex_input_jacfwd_raises_error():
    """jax tests/api_test.py::APITest::test_complex_input_jacfwd_raises_error"""
    with pytest.raises(TypeError, match="holomorphic"):
        fu.jacfwd(torch.sin)(T(1 + 2j, C))


def test_grad_complex_result_errors():
    """jax tests/api_test.py::APITest::test_grad_complex_result_errors"""
    with pytest.raises(TypeError, match="output is complex"):
        fu.grad(lambda x: x**2 + 1j)(3.0)


@pytest.mark.parametrize("name", ["grad", "jacrev", "jacfwd"])
def test_holomorphic_of_float_errors(name):
    """jax tests/api_test.py::APITest::test_holomorphic_{grad,jacrev,jacfwd}_of_float_errors"""
    transform = getattr(fu, name)
    with pytest.raises(TypeError, match=re.escape(f"{name}(<lambda>): holomorphic=True requires")):
        transform(lambda x: x**2, holomorphic=True)(3.0)


def test_jacfwd_of_complex_errors():
    """jax tests/api_test.py::APITest::test_jacfwd_of_complex_errors"""
    with pytest.raises(TypeError, match="complex"):
        fu.jacfwd(lambda x: x**2)(T(3.0 + 1j, C))


# =================================================================================================
# integer and boolean inputs (None where JAX has float0: docs/sharp_edges.md#differences-from-jax)
# =================================================================================================


def test_grad_of_int_errors():
    """jax tests/api_test.py::APITest::test_grad_of_int_errors"""
    with pytest.raises(TypeError, match=r"integer or boolean.*got int 3"):
        fu.grad(lambda x: x**2)(3)


def test_grad_of_int():
    """jax tests/api_test.py::APITest::test_grad_of_int (None, not float0: documented)"""
    assert fu.grad(lambda x: x + 0.0, allow_int=True)(1) is None
    assert fu.grad(lambda x: x + 0.0, allow_int=True)(torch.tensor(1)) is None


def test_grad_of_bool():
    """jax tests/api_test.py::APITest::test_grad_of_bool (lax.cond replaced by torch.where)"""

    def cond(pred):
        return torch.where(pred, 1.0, 2.0)

    value, grd = fu.value_and_grad(cond, allow_int=True)(torch.tensor(True))
    assert value == 1.0
    assert grd is None


def test_grad_of_bool_vjp3():
    """jax tests/api_test.py::APITest::test_grad_of_bool_vjp3"""

    def cond(pred):
        return torch.where(pred, 1.0, 2.0)

    value, f_vjp = fu.vjp(cond, torch.tensor(True))
    (grd,) = f_vjp(torch.tensor(1.0))
    assert value == 1.0
    assert grd is None


def test_grad_of_int_index():
    """jax tests/api_test.py::APITest::test_grad_of_int_index"""
    grad_x, grad_i = fu.grad(lambda x, i: x[i], argnums=(0, 1), allow_int=True)(
        torch.ones(2, dtype=D), 1
    )
    tree_allclose(grad_x, T([0.0, 1.0]))
    assert grad_i is None


def test_vjp_of_int_index():
    """jax tests/api_test.py::APITest::test_vjp_of_int_index"""
    primal, fn_vjp = fu.vjp(lambda x, i: x[i], torch.ones(2, dtype=D) * 2, 1)
    tangent_x, tangent_i = fn_vjp(1.0)  # a Python-float cotangent, as in JAX
    tree_allclose(primal, T(2.0))
    tree_allclose(tangent_x, T([0.0, 1.0]))
    assert tangent_i is None


def test_vjp_of_int_shapes():
    """jax tests/api_test.py::APITest::test_vjp_of_int_shapes"""
    out, fn_vjp = fu.vjp(lambda x: x.reshape(2, 2), torch.ones((4, 1), dtype=torch.int64))
    assert out.shape == (2, 2)
    (tangent,) = fn_vjp(torch.zeros((2, 2), dtype=torch.int64))
    assert tangent is None


def test_jit_vjp_of_int():
    """jax tests/api_test.py::APITest::test_jit_vjp_of_int (the vjp part; jit not ported)"""
    primal, fn_vjp = fu.vjp(lambda x, y: x + y, torch.tensor(2), torch.tensor(1))
    assert primal == 3
    tangent_x, tangent_i = fn_vjp(torch.tensor(0))
    assert tangent_x is None and tangent_i is None


def test_vjp_of_int_fulllike():
    """jax tests/api_test.py::APITest::test_vjp_of_int_fulllike"""
    out, f_vjp = fu.vjp(torch.full_like, torch.zeros((2, 2), dtype=D), 1)
    tree_allclose(out, torch.ones((2, 2), dtype=D))
    tangent_x, tangent_y = f_vjp(out)
    tree_allclose(tangent_x, torch.zeros((2, 2), dtype=D))
    assert tangent_y is None


def test_jvp_of_int_identity():
    """jax tests/api_test.py::APITest::test_jvp_of_int_identity (a zero integer tangent for float0)"""
    _, out = fu.jvp(lambda x: x, (torch.tensor(1),), (torch.tensor(0),))
    assert out == 0


def test_jvp_of_int_add():
    """jax tests/api_test.py::APITest::test_jvp_of_int_add (a zero integer tangent for float0)"""
    primal, out_tangent = fu.jvp(lambda x: x + 1, (torch.tensor(2),), (torch.tensor(0),))
    assert primal == 3
    assert out_tangent == 0


def test_jvp_of_convert_element_type():
    """jax tests/api_test.py::APITest::test_jvp_of_convert_element_type"""
    primal, tangent = fu.jvp(lambda x: x.to(torch.int32) + 1, (T(2.0),), (T(1.0),))
    assert primal == 3 and primal.dtype == torch.int32
    assert tangent == 0 and not tangent.is_floating_point()


# =================================================================================================
# jvp / vjp argument checking
# =================================================================================================


def test_jvp_mismatched_arguments():
    """jax tests/api_test.py::APITest::test_jvp_mismatched_arguments

    Structure and shape mismatches are ``ValueError`` here (JAX: ``TypeError`` for structure),
    and a dtype mismatch is both kinds: docs/sharp_edges.md#differences-from-jax.
    """
    f2 = lambda x, y: x * y  # noqa: E731
    with pytest.raises(ValueError, match="tangents"):
        fu.jvp(f2, (torch.tensor(2.0),), ())
    with pytest.raises(TypeError, match="dtype"):
        fu.jvp(lambda x: -x, (torch.tensor(2.0, dtype=torch.float16),), (torch.tensor(4.0),))
    fun = lambda x: x + 1  # noqa: E731
    shape_cases = [
        (torch.tensor([1.0, 2.0, 3.0]), torch.tensor([1.0, 2.0, 3.0, 4.0])),
        (torch.tensor(10.0), torch.tensor([1.0, 2.0, 3.0])),
        (torch.tensor([1.0, 2.0, 3.0]), torch.tensor(20.0)),
    ]
    for primal, tangent in shape_cases:
        with pytest.raises(ValueError, match=r"tangents\[0\] has the wrong shape"):
            fu.jvp(fun, (primal,), (tangent,))
    # a Python float for a 1-d tensor primal: JAX reports the shapes (ValueError); here it is the
    # wrong kind of value (TypeError)
    with pytest.raises(TypeError, match=r"tangents\[0\] is not a tensor"):
        fu.jvp(fun, (torch.tensor([1.0, 2.0, 3.0]),), (20.0,))


@documented("differences-from-torchfunc", "jvp takes tuples or lists, and accepts a mix of both")
def test_jvp_mismatched_arguments_tuple_vs_list():
    """jax tests/api_test.py::APITest::test_jvp_mismatched_arguments (tuple primals, list tangents)"""
    with pytest.raises(TypeError):
        fu.jvp(lambda x: x * 2, (torch.tensor(2.0),), [torch.tensor(2.0)])


def test_jvp_non_tuple_arguments():
    """jax tests/api_test.py::APITest::test_jvp_non_tuple_arguments"""

    def f(x, y):
        return x + y

    with pytest.raises(TypeError, match=r"tuples or lists.*primals=float 0.0, tangents=tuple"):
        fu.jvp(f, 0.0, (1.0,))
    with pytest.raises(TypeError, match=r"tuples or lists.*tangents=a tensor"):
        fu.jvp(f, (0.0,), torch.tensor([1.0, 2.0]))


def test_jvp_asarray_returns_array():
    """jax tests/api_test.py::APITest::test_jvp_asarray_returns_array"""
    p, t = fu.jvp(torch.as_tensor, (1.0,), (2.0,))
    assert isinstance(p, torch.Tensor) and isinstance(t, torch.Tensor)
    assert (p, t) == (1.0, 2.0)


def test_vjp_mismatched_arguments():
    """jax tests/api_test.py::APITest::test_vjp_mismatched_arguments"""
    _, pullback = fu.vjp(lambda x, y: x * y, torch.tensor(3.0), torch.tensor(4.0))
    with pytest.raises(ValueError, match="structure"):
        pullback((torch.tensor(7.0), torch.tensor(100.0)))
    with pytest.raises(ValueError, match="dtype"):
        pullback(torch.tensor(42.0, dtype=torch.float16))


def test_vjp_bad_cotangent_shape():
    """jax tests/api_test.py::APITest::test_vjp_bad_cotangent_shape"""
    x, y = torch.ones((2, 5)), torch.ones((5, 3))
    _, pullback = fu.vjp(torch.matmul, x, y)
    with pytest.raises(ValueError, match=re.escape("expected shape (2, 3), got shape (2, 4)")):
        pullback(torch.ones((2, 4)))


def test_vjp_too_many_args():
    """jax tests/api_test.py::APITest::test_vjp_too_many_args"""

    def f(x):
        return x, x

    _, pullback = fu.vjp(f, T(1.0))
    with pytest.raises(TypeError):
        pullback(T(1.0), T(1.0))


def test_vjp_multiple_arguments_error_message():
    """jax tests/api_test.py::APITest::test_vjp_multiple_arguments_error_message"""

    def foo(x):
        return (x, x)

    _, f_vjp = fu.vjp(foo, T(1.0))
    with pytest.raises(TypeError, match="foo"):
        f_vjp(T(1.0), T(1.0))


# =================================================================================================
# linearize
# =================================================================================================


def test_issue_871():
    """jax tests/api_test.py::APITest::test_issue_871 (jit variant not ported)"""
    Tm = T([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    x = T([1.0, 2.0, 3.0])
    _, f_jvp = fu.linearize(torch.sum, x)
    with pytest.raises(ValueError, match="shape"):
        f_jvp(Tm)


def test_linearize_instantiates_zero_outputs():
    """jax tests/api_test.py::APITest::test_linearize_instantiates_zero_outputs"""
    _, f_lin = fu.linearize(lambda x: (x, 1.0), 3.0)
    _, y = f_lin(1.0)
    assert y + 1 == 1


def test_linearize_aval_error():
    """jax tests/api_test.py::APITest::test_linearize_aval_error"""
    f = lambda x: x  # noqa: E731
    _, f_jvp = fu.linearize(f, 1.0)
    tree_allclose(f_jvp(1.0), torch.tensor(1.0))
    _, f_jvp = fu.linearize(f, torch.tensor(1.0))
    with pytest.raises(ValueError, match="dtype"):
        f_jvp(torch.tensor(1))


def test_linearize_aval_error_python_int_tangent():
    """jax tests/api_test.py::APITest::test_linearize_aval_error (f_jvp(1) after linearize(f, 1.))"""
    _, f_jvp = fu.linearize(lambda x: x, 1.0)
    with pytest.raises((TypeError, ValueError)):
        f_jvp(1)


# =================================================================================================
# linear_transpose
# =================================================================================================


def test_linear_transpose_abstract():
    """jax tests/api_test.py::APITest::test_linear_transpose_abstract"""
    x = types.SimpleNamespace(shape=(3,), dtype=torch.float32)
    y = torch.arange(3, dtype=torch.float32)
    (z,) = fu.linear_transpose(lambda x: 2 * x, x)(y)
    tree_allclose(z, 2 * y)


@documented(
    "differences-from-jax", "integer leaves get a None cotangent (JAX transposes integer maps)"
)
def test_linear_transpose_integer():
    """jax tests/api_test.py::APITest::test_linear_transpose_integer"""
    (actual,) = fu.linear_transpose(lambda x: 2 * x, 1)(3)
    assert actual == 6


def test_linear_transpose_dce():
    """jax tests/api_test.py::APITest::test_linear_transpose_dce (jit not ported)"""
    g = lambda x: (2 * x, x > 0)[0]  # noqa: E731
    (ct,) = fu.linear_transpose(g, 1.0)(1.0)
    assert ct == 2.0


def test_linear_transpose_error():
    """jax tests/api_test.py::APITest::test_linear_transpose_error (mismatched cotangents)

    Structure and shape mismatches are ``ValueError`` here (JAX: ``TypeError``), dtype
    mismatches are both kinds: docs/sharp_edges.md#differences-from-jax.
    """
    one = torch.tensor(1.0)
    with pytest.raises(ValueError, match="structure"):
        fu.linear_transpose(lambda x: [x, x], one)(one)
    with pytest.raises(ValueError, match="shape"):
        fu.linear_transpose(lambda x: torch.stack([x, x]), one)(one)
    with pytest.raises(TypeError, match="dtype"):
        fu.linear_transpose(lambda x: 1j * x, one)(one)
    with pytest.raises(TypeError, match="dtype"):
        fu.linear_transpose(lambda x: x, one)(torch.tensor(1j))


@documented(
    "differences-from-jax", "integer leaves get a None cotangent, so an integer primal is accepted"
)
def test_linear_transpose_error_integer_primal():
    """jax tests/api_test.py::APITest::test_linear_transpose_error (integer primal)"""
    with pytest.raises(TypeError):
        fu.linear_transpose(lambda x: 2.0 * x, 1)


def test_linear_transpose_complex():
    """jax tests/api_test.py::APITest::test_linear_transpose_complex"""
    (actual,) = fu.linear_transpose(lambda x: (1 + 2j) * x, T(1j, C))(T(3 + 4j, C))
    tree_allclose(actual, T(-5 + 10j, C))


def test_linear_transpose_zeros():
    """jax tests/api_test.py::APITest::test_linear_transpose_zeros"""
    (actual,) = fu.linear_transpose(lambda x: x[0], [T(1.0), T(2.0)])(T(3.0))
    tree_allclose(actual, [T(3.0), T(0.0)])


# =================================================================================================
# stop_gradient
# =================================================================================================


def test_stop_gradient():
    """jax tests/lax_autodiff_test.py::LaxAutodiffTest::testStopGradient (values)"""

    def f(x):
        return torch.sin(x) * torch.cos(fu.stop_gradient(x))

    def f2(x, y):
        return torch.sin(x) * torch.cos(y)

    x = T(3.14)
    tree_allclose(fu.grad(f)(x), fu.grad(f2)(x, x))
    tree_allclose(fu.grad(fu.grad(f))(x), fu.grad(fu.grad(f2))(x, x))
    tree_allclose(fu.grad(lambda x: fu.stop_gradient({"foo": x})["foo"])(T(3.0)), T(0.0))
    # forward mode too
    tree_allclose(
        fu.jvp(f, (x,), (T(1.0),))[1], fu.jvp(lambda x: f2(x, T(3.14)), (x,), (T(1.0),))[1]
    )


def test_stop_gradient_of_callable():
    """jax tests/lax_autodiff_test.py::LaxAutodiffTest::testStopGradient (callable argument)"""
    with pytest.raises(TypeError):
        fu.stop_gradient(lambda x: x)


# =================================================================================================
# checkpoint / remat
# =================================================================================================


def _sin_sin(x):
    return torch.sin(torch.sin(x))


def test_remat_basic():
    """jax tests/api_test.py::RematTest::test_remat_basic

    Values, linearize and grad; JAX's count of sin/cos evaluations inside ``f_lin`` is not ported
    (``linearize`` re-runs the forward pass per call: docs/sharp_edges.md#differences-from-jax).
    """

    @fu.remat
    def g(x):
        return torch.sin(torch.sin(x)), 3.0

    def f(x):
        return g(x)[0]

    x = T(2.0)
    tree_allclose(f(x), _sin_sin(x))
    ans, f_lin = fu.linearize(f, x)
    tree_allclose(ans, _sin_sin(x))
    tree_allclose(f_lin(T(3.0)), torch.cos(torch.sin(x)) * torch.cos(x) * 3.0)
    tree_allclose(fu.grad(f)(x), torch.cos(torch.sin(x)) * torch.cos(x))


def test_remat_freevars():
    """jax tests/api_test.py::RematTest::test_remat_freevars"""

    def f1(x):
        y = 2 * torch.sin(x)
        return torch.cos(x) * torch.sin(y)

    def f2(x):
        y = 2 * torch.sin(x)
        return fu.remat(lambda x: torch.cos(x) * torch.sin(y))(x)

    ans, f_lin = fu.linearize(f2, T(2.0))
    expected, f_lin_expected = fu.linearize(f1, T(2.0))
    tree_allclose(ans, expected)
    tree_allclose(f_lin(T(3.0)), f_lin_expected(T(3.0)))
    tree_allclose(fu.grad(f2)(T(2.0)), fu.grad(f1)(T(2.0)))


@pytest.mark.parametrize("remat", [fu.remat, fu.checkpoint], ids=["remat", "checkpoint"])
def test_remat_vmap(remat):
    """jax tests/api_test.py::RematTest::test_remat_vmap"""
    g = remat(_sin_sin)
    x = torch.arange(3.0, dtype=D)
    tree_allclose(fu.vmap(g)(x), _sin_sin(x))
    expected = torch.diag(torch.cos(torch.sin(x)) * torch.cos(x))
    tree_allclose(fu.jacfwd(g)(x), expected)
    tree_allclose(fu.jacrev(g)(x), expected)


def test_remat_vmap_not_leading_dim():
    """jax tests/api_test.py::RematTest::test_remat_vmap_not_leading_dim"""
    g = fu.remat(_sin_sin)
    x = torch.arange(3 * 5.0, dtype=D).reshape(3, 5)
    tree_allclose(fu.vmap(g, 1, 0)(x), _sin_sin(x).T)


@pytest.mark.parametrize("remat", [fu.remat, fu.checkpoint], ids=["remat", "checkpoint"])
def test_remat_higher_order_autodiff(remat):
    """jax tests/api_test.py::RematTest::test_remat_higher_order_autodiff"""

    def f(x):
        return torch.cos(torch.sin(x))

    g = remat(f)
    tree_allclose(fu.grad(fu.grad(g))(T(3.0)), fu.grad(fu.grad(f))(T(3.0)))


def test_remat_higher_order_ad_preserves_remat_primitive():
    """jax tests/api_test.py::RematTest::test_remat_higher_order_ad_preserves_remat_primitive

    The values part (the jaxpr inspection has no counterpart).
    """
    f = _sin_sin
    g = fu.remat(f)
    tree_allclose(fu.grad(fu.grad(g))(T(0.3)), fu.grad(fu.grad(f))(T(0.3)))


def test_remat_binomial_checkpointing():
    """jax tests/api_test.py::RematTest::test_remat_binomial_checkpointing"""

    def binom_checkpoint(funs):
        if len(funs) == 1:
            return funs[0]
        f1 = binom_checkpoint(funs[: len(funs) // 2])
        f2 = binom_checkpoint(funs[len(funs) // 2 :])
        return fu.remat(lambda x: f1(f2(x)))

    f1 = binom_checkpoint([torch.sin, torch.sin, torch.sin, torch.sin])

    def f2(x):
        return torch.sin(torch.sin(torch.sin(torch.sin(x))))

    x = T(4.0)
    tree_allclose(f1(x), f2(x))
    tree_allclose(fu.grad(f1)(x), fu.grad(f2)(x))


def test_remat_jit2():
    """jax tests/api_test.py::RematTest::test_remat_jit2 (without jit: a closure, no arguments)"""

    def f(x):
        y = 2 * x

        @fu.remat
        def g():
            return y

        return g()

    tree_allclose(f(T(3.0)), T(6.0))


def test_remat_jit3():
    """jax tests/api_test.py::RematTest::test_remat_jit3 (jit not ported)"""

    def f(w, x):
        a = x @ w
        b = torch.einsum("btd,bTd->btT", a, a)
        c = torch.einsum("btT,btd->btd", b, a)
        return torch.sum(c)

    w, x = torch.ones([1, 1], dtype=D), torch.ones([1, 1, 1], dtype=D)
    tree_allclose(fu.grad(fu.remat(f))(w, x), fu.grad(f)(w, x))

    def mul(a, b):
        return a * b

    def f2(w, x):
        a = mul(w, x)
        return mul(a, a)

    tree_allclose(fu.grad(fu.remat(f2))(T(1.0), T(1.0)), T(2.0))


def test_remat_nontrivial_env():
    """jax tests/api_test.py::RematTest::test_remat_nontrivial_env (a Python loop for the scan)"""

    @fu.remat
    def foo(state, dt=0.5, c=1):
        u, u_t = state
        u_tt = c**2 * u
        u_t = u_t + u_tt * dt
        return (u, u_t)

    def loss(u0, target, steps, dt=2**-0.5, c=1):
        state = (u0, torch.zeros_like(u0))
        for _ in range(steps):
            state = foo(state, dt, c)
        uf = state[0]
        return ((uf - target) ** 2).mean()

    target = torch.zeros((8, 8), dtype=D)
    u0 = torch.ones_like(target)
    tree_allclose(loss(u0, target, 10), T(1.0))
    tree_allclose(fu.grad(loss)(u0, target, 10), 2 * u0 / u0.numel())


def _counting_add_one():
    """JAX's ``add_one`` primitive: counted, and its derivative uses its output (here ``exp``).

    The derivative needing the output is what makes the backward pass recompute it.
    """
    count = [0]

    def add_one(x):
        count[0] += 1
        return torch.exp(x)

    return add_one, count


def test_remat_eval_counter():
    """jax tests/api_test.py::RematTest::test_remat_eval_counter (first half: nested remat)"""
    add_one, count = _counting_add_one()
    v = torch.zeros((1,), dtype=D)
    f = fu.remat(add_one)
    g = fu.remat(lambda x: add_one(f(x)))
    count[0] = 0
    _, vjp = fu.vjp(g, v)
    assert count[0] == 2  # 2 calls to evaluate g
    count[0] = 0
    (ct,) = vjp(v)
    assert count[0] == 3  # 2 while transposing g, 1 while transposing f
    tree_allclose(ct, v * torch.exp(torch.exp(v)) * torch.exp(v))


def test_remat_recursive_checkpoint_recompute_counts():
    """jax tests/api_test.py::RematTest::test_remat_recursive_checkpoint_recompute_counts"""
    add_one, count = _counting_add_one()

    def recursive_checkpoint(funs):
        if len(funs) == 1:
            return funs[0]
        if len(funs) == 2:
            f1, f2 = funs
            return lambda x: f1(f2(x))
        f1 = recursive_checkpoint(funs[: len(funs) // 2])
        f2 = recursive_checkpoint(funs[len(funs) // 2 :])
        return lambda x: f1(fu.checkpoint(f2)(x))

    for n, expected_bwd_evals in [(4, 2), (8, 8), (16, 24)]:
        f = recursive_checkpoint([add_one] * n)
        count[0] = 0
        _, vjp = fu.vjp(f, torch.full((), 0.01, dtype=D))
        assert count[0] == n
        count[0] = 0
        vjp(torch.ones((), dtype=D))
        assert count[0] == expected_bwd_evals


def test_remat_dropvar_policy():
    """jax tests/api_test.py::RematTest::test_remat_dropvar_policy (no policy: none exist here)"""

    def f(x):
        return x, x

    @fu.checkpoint
    def g(x):
        return fu.grad(lambda x: f(x)[0])(x)

    tree_allclose(fu.grad(g)(T(3.0)), T(0.0))


def test_remat_of_grad():
    """jax tests/custom_api_test.py::CustomJVPTest::test_remat_higher_order (grad(remat(grad(g))))

    Here with a plain function (the custom-rule version lives in test_jax_custom_api.py).
    """
    g = lambda x: torch.sin(torch.sin(x))  # noqa: E731
    tree_allclose(fu.grad(fu.checkpoint(fu.grad(g)))(T(2.0)), fu.grad(fu.grad(g))(T(2.0)))


def _sin_custom_jvp():
    @fu.custom_jvp
    def sin(x):
        return torch.sin(x)

    sin.defjvp(lambda primals, tangents: (sin(primals[0]), torch.cos(primals[0]) * tangents[0]))
    return sin


def _remat_custom_jvp_block():
    sin = _sin_custom_jvp()

    @fu.remat
    def f(x):
        for _ in range(3):
            x = x @ x if x.ndim else x * x
            x = sin(x * 1e-3)
        return x

    return f


def test_remat_custom_jvp_policy():
    """jax tests/api_test.py::RematTest::test_remat_custom_jvp_policy (no policy; reverse modes)

    A custom_jvp inside a remat block, checked against finite differences to second order.
    """
    check_grads(_remat_custom_jvp_block(), (T(3.0),), order=2, modes=("rev",))


@documented("differences-from-jax", "forward-over-forward through a custom rule raises TypeError")
def test_remat_custom_jvp_policy_forward_order2():
    """jax tests/api_test.py::RematTest::test_remat_custom_jvp_policy (modes fwd and rev, order 2)"""
    check_grads(_remat_custom_jvp_block(), (T(3.0),), order=2, modes=("fwd", "rev"))


def test_remat_custom_vjp_policy():
    """jax tests/api_test.py::RematTest::test_remat_custom_vjp_policy (no policy, no named_call)"""

    @fu.custom_vjp
    def sin(x):
        return torch.sin(x)

    sin.defvjp(lambda x: (sin(x), x), lambda x, y_bar: (torch.cos(x) * y_bar,))

    @fu.remat
    def f(x):
        def dot2(y, z):
            return x * (y * z)  # closes over the block's input, as JAX's dot2 does

        for _ in range(3):
            x = dot2(x, x)
            x = sin(x * 1e-3)
        return x

    check_grads(f, (T(3.0),), order=2, modes=("rev",))


def test_remat_custom_jvp_linear_policy():
    """jax tests/api_test.py::RematTest::test_remat_custom_jvp_linear_policy (reverse modes)

    The rule calls its own function on the tangents (a linear custom_jvp).
    """

    @fu.custom_jvp
    def sum0(x):
        return torch.sum(x, dim=0)

    @sum0.defjvp
    def sum_jvp(primals, tangents):
        (x,), (xdot,) = primals, tangents
        return sum0(x), sum0(xdot)

    f = fu.remat(lambda x: sum0(x))
    check_grads(f, (torch.ones(3, dtype=D),), order=2, modes=("rev",))
    tree_allclose(fu.jacrev(f)(torch.ones(3, dtype=D)), torch.ones(3, dtype=D))
    tree_allclose(
        fu.jvp(f, (torch.ones(3, dtype=D),), (torch.arange(3.0, dtype=D),)), (T(3.0), T(3.0))
    )


def test_leak_checker_remat3_zero_tangent_output_stays_concrete():
    """jax tests/api_test.py::APITest::test_leak_checker_remat3_zero_tangent_output_stays_concrete

    The aux output of the remat block is a stop_gradient value: a plain tensor, no derivative.
    """
    seen = []

    def f(x):
        y, aux = fu.remat(lambda x: (torch.sin(x), fu.stop_gradient(x) * 2.0))(x)
        seen.append(aux)
        return y

    value, g = fu.value_and_grad(f)(T(3.0))
    tree_allclose((value, g), (torch.sin(T(3.0)), torch.cos(T(3.0))))
    tree_allclose(seen[-1].detach(), T(6.0))


def test_leak_checker_remat3_linearize_zero_tangent_output():
    """jax tests/api_test.py::APITest::test_leak_checker_remat3_linearize_zero_tangent_output"""

    def f(x):
        y, _ = fu.remat(lambda x: (torch.sin(x), fu.stop_gradient(x) * 2.0))(x)
        return y

    _, f_jvp = fu.linearize(f, T(3.0))
    tree_allclose(f_jvp(T(1.0)), torch.cos(T(3.0)))
