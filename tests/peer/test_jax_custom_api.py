"""JAX's own custom-rule tests, ported by hand: jax tests/custom_api_test.py.

CustomJVPTest and CustomVJPTest, for ``functorch_utils.custom_jvp`` / ``custom_vjp``. Each test
names its origin (``jax tests/custom_api_test.py::<Class>::<test>``). JAX arrays are torch
tensors, float64 where a value is compared; expected values are the JAX test's own.

JAX's ``fwd`` rules usually call the decorated function (``return f(x), res``). Most tests here
compute the primal in ``fwd`` directly so that they test what they are about; the tests
parametrized with ``fwd_calls_f`` run both forms. Tests that need what the library does not have
(jit, lax control flow, random keys, symbolic zeros, nondiff_argnames, custom_gradient,
closure_convert, optimize_remat, jaxpr inspection, ...) are not ported; tests/peer/README.md lists
them.
"""

from __future__ import annotations

import collections
import copy
import functools
import re
from functools import partial

import pytest
import torch

import functorch_utils as fu
from functorch_utils.testing import check_grads

from ..helpers import tree_allclose

D = torch.float64
JVP = "jax tests/custom_api_test.py::CustomJVPTest::"
VJP = "jax tests/custom_api_test.py::CustomVJPTest::"


def T(x, dtype=D):
    return torch.tensor(x, dtype=dtype)


def bug(reason):
    return pytest.mark.xfail(strict=True, reason=f"bug: {reason}")


def documented(anchor, reason):
    return pytest.mark.xfail(
        strict=True, reason=f"documented difference: docs/sharp_edges.md#{anchor} {reason}"
    )


FWD_CALLS_F = pytest.mark.parametrize(
    "fwd_calls_f", [False, True], ids=["fwd_direct", "fwd_calls_f"]
)

FWD_OVER_FWD = documented(
    "differences-from-jax", "forward-over-forward through a custom rule raises TypeError"
)


class Reentry:
    """Counts calls of a rule and stops a runaway recursion with an error instead of a hang."""

    def __init__(self, limit=50):
        self.calls, self.limit = 0, limit

    def tick(self):
        self.calls += 1
        if self.calls > self.limit:
            raise RecursionError(f"rule entered {self.calls} times")


def make_sin_jvp():
    """The JAX tests' ``f``: sin with the deliberately wrong derivative ``2 cos``."""

    @fu.custom_jvp
    def f(x):
        return torch.sin(x)

    def f_jvp(primals, tangents):
        (x,), (g,) = primals, tangents
        return f(x), 2 * torch.cos(x) * g

    f.defjvp(f_jvp)
    return f


def make_sin_vjp(fwd_calls_f=False):
    """The JAX tests' custom_vjp ``f``: sin with the deliberately wrong derivative ``2 cos``."""

    @fu.custom_vjp
    def f(x):
        return torch.sin(x)

    def f_fwd(x):
        return (f(x) if fwd_calls_f else torch.sin(x)), torch.cos(x)

    def f_rev(cos_x, g):
        return (2 * cos_x * g,)

    f.defvjp(f_fwd, f_rev)
    return f


# =================================================================================================
# CustomJVPTest
# =================================================================================================


def test_jvp_basic():
    """jax tests/custom_api_test.py::CustomJVPTest::test_basic"""
    f = make_sin_jvp()
    x = T(3.0)
    tree_allclose(f(x), torch.sin(x))
    tree_allclose(fu.jvp(f, (x,), (T(1.0),)), (torch.sin(x), 2 * torch.cos(x)))
    tree_allclose(fu.grad(f)(x), 2 * torch.cos(x))


@FWD_OVER_FWD
def test_jvp_invariance():
    """jax tests/custom_api_test.py::CustomJVPTest::test_invariance"""

    @fu.custom_jvp
    def f(x):
        return torch.cos(2 * x) / 2.0

    def f_jvp(primals, tangents):
        (x,), (g,) = primals, tangents
        return f(x), 3 * g

    f.defjvp(f_jvp)

    def f2(x):
        y, _ = fu.jvp(f, (x,), (x,))
        return y

    def f3(x):
        y, _ = fu.jvp(f2, (x,), (x,))
        return y

    x = T(1.0)
    tree_allclose(fu.jvp(f, (x,), (x,)), fu.jvp(f2, (x,), (x,)))
    tree_allclose(fu.jvp(f, (x,), (x,)), fu.jvp(f3, (x,), (x,)))


def test_jvp_invariance_reverse():
    """jax tests/custom_api_test.py::CustomJVPTest::test_invariance (grad over the inner jvp)

    One forward level over the rule, reverse mode outside: allowed, and the rule's value.
    """

    @fu.custom_jvp
    def f(x):
        return torch.cos(2 * x) / 2.0

    f.defjvp(lambda primals, tangents: (f(primals[0]), 3 * tangents[0]))

    def f2(x):
        y, _ = fu.jvp(f, (x,), (x,))
        return y

    x = T(1.0)
    tree_allclose(f2(x), f(x))
    tree_allclose(fu.grad(f2)(x), fu.grad(f)(x))
    tree_allclose(fu.grad(f)(x), T(3.0))


def test_jvp_deepcopy():
    """jax tests/custom_api_test.py::CustomJVPTest::test_deepcopy (a custom_jvp relu)"""

    @fu.custom_jvp
    def relu(x):
        return torch.clamp(x, min=0)

    relu.defjvp(lambda p, t: (relu(p[0]), torch.where(p[0] > 0, t[0], torch.zeros_like(t[0]))))
    f = copy.deepcopy(relu)
    tree_allclose(fu.grad(f)(T(1.0)), T(1.0))


def test_jvp_python_control_flow():
    """jax tests/custom_api_test.py::CustomJVPTest::test_python_control_flow"""

    @fu.custom_jvp
    def f(x):
        if x > 0:
            return torch.sin(x)
        return torch.cos(x)

    def f_jvp(primals, tangents):
        (x,), (g,) = primals, tangents
        return f(x), (2 if x > 0 else 3) * g

    f.defjvp(f_jvp)
    x = T(2.0)
    tree_allclose(f(x), torch.sin(x))
    tree_allclose(f(-x), torch.cos(-x))
    tree_allclose(fu.jvp(f, (x,), (T(1.0),)), (torch.sin(x), T(2.0)))
    tree_allclose(fu.jvp(f, (-x,), (T(1.0),)), (torch.cos(-x), T(3.0)))
    tree_allclose(fu.grad(f)(x), T(2.0))
    tree_allclose(fu.grad(f)(-x), T(3.0))


def test_jvp_vmap():
    """jax tests/custom_api_test.py::CustomJVPTest::test_vmap"""

    @fu.custom_jvp
    def f(x):
        assert x.ndim == 0
        return torch.sin(x)

    def f_jvp(primals, tangents):
        (x,), (g,) = primals, tangents
        assert x.ndim == g.ndim == 0
        return f(x), 2 * torch.cos(x) * g

    f.defjvp(f_jvp)
    x = torch.arange(3.0, dtype=D)
    xx = torch.arange(6.0, dtype=D).reshape(2, 3)
    # vmap of f
    tree_allclose(fu.vmap(f)(x), torch.sin(x))
    tree_allclose(fu.vmap(fu.vmap(f))(xx), torch.sin(xx))
    # vmap of jvp of f
    tree_allclose(fu.vmap(lambda x: fu.jvp(f, (x,), (x,)))(x), (torch.sin(x), 2 * torch.cos(x) * x))
    tree_allclose(
        fu.vmap(fu.vmap(lambda x: fu.jvp(f, (x,), (x,))))(xx),
        (torch.sin(xx), 2 * torch.cos(xx) * xx),
    )
    # jvp of vmap of f
    tree_allclose(fu.jvp(fu.vmap(f), (x,), (x,)), (torch.sin(x), 2 * torch.cos(x) * x))
    tree_allclose(
        fu.jvp(fu.vmap(fu.vmap(f)), (xx,), (xx,)), (torch.sin(xx), 2 * torch.cos(xx) * xx)
    )
    # vmap of jvp of vmap of f
    tree_allclose(
        fu.vmap(lambda x: fu.jvp(fu.vmap(f), (x,), (x,)))(xx),
        (torch.sin(xx), 2 * torch.cos(xx) * xx),
    )


def test_jvp_pytrees():
    """jax tests/custom_api_test.py::CustomJVPTest::test_pytrees"""

    @fu.custom_jvp
    def f(x):
        return {"b": torch.sin(x["a"])}

    def f_jvp(primals, tangents):
        (x,), (g,) = primals, tangents
        return f(x), {"b": 2 * torch.cos(x["a"]) * g["a"]}

    f.defjvp(f_jvp)
    x = {"a": T(3.0)}
    tree_allclose(f(x)["b"], torch.sin(x["a"]))
    tree_allclose(
        fu.jvp(f, (x,), (x,)),
        ({"b": torch.sin(x["a"])}, {"b": 2 * torch.cos(x["a"]) * x["a"]}),
    )


def _kwargs_fun():
    @fu.custom_jvp
    def my_fun(x, y, c=1.0):
        return c * (x + y)

    def my_jvp(primals, tangents):
        x, y, c = primals
        _, _, t_c = tangents
        return my_fun(x, y, c), t_c

    my_fun.defjvp(my_jvp)
    return my_fun


def test_jvp_kwargs():
    """jax tests/custom_api_test.py::CustomJVPTest::test_kwargs (tensor x, y; float keyword c)

    The rule's tangent is ``t_c``, the tangent of the keyword argument bound to its position.
    """
    my_fun = _kwargs_fun()

    def f(x, y):
        return torch.square(my_fun(x, y, c=2.0)).sum()

    tree_allclose(f(T(10.0), T(5.0)), T(900.0))
    out, tangent = fu.jvp(f, (T(10.0), T(5.0)), (T(1.0), T(1.0)))
    tree_allclose(out, T(900.0))
    tree_allclose(tangent, T(0.0))  # c is a constant: its tangent is zero


def test_jvp_kwargs_python_floats():
    """jax tests/custom_api_test.py::CustomJVPTest::test_kwargs (plain call with Python floats)"""
    my_fun = _kwargs_fun()
    assert float(my_fun(10.0, 5.0, c=2.0)) == 30.0


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/custom_rules.md (values a rule closes over) a custom_jvp "
    "function's closed-over value is differentiated by autodiff of the function; JAX refuses it",
)
def test_closed_over_tracers_error_message():
    """jax tests/custom_api_test.py::CustomJVPTest::test_closed_over_tracers_error_message"""

    def f(x):
        @fu.custom_jvp
        def g(y):
            return x + y

        def g_jvp(primals, tangents):
            return g(x), 2 * primals[0]

        g.defjvp(g_jvp)
        return g(torch.ones_like(x))

    with pytest.raises((TypeError, ValueError)):
        fu.jvp(f, (T(3.0),), (T(1.0),))
    with pytest.raises((TypeError, ValueError)):
        fu.grad(f)(T(3.0))


def test_closed_over_value_is_differentiated():
    """jax tests/custom_api_test.py::CustomJVPTest::test_closed_over_tracers_error_message

    The library's documented answer where JAX raises: the rule for the argument plus autodiff of
    the function for the closed-over value (docs/custom_rules.md).
    """

    def f(x):
        @fu.custom_jvp
        def g(y):
            return x * y

        g.defjvp(lambda primals, tangents: (g(primals[0]), x * tangents[0]))
        return g(T(2.0))

    tree_allclose(fu.grad(f)(T(3.0)), T(2.0))
    tree_allclose(fu.jvp(f, (T(3.0),), (T(1.0),)), (T(6.0), T(2.0)))


def test_jvp_nondiff_argnums():
    """jax tests/custom_api_test.py::CustomJVPTest::test_nondiff_argnums"""

    @partial(fu.custom_jvp, nondiff_argnums=(0,))
    def app(f, x):
        return f(x)

    def app_jvp(f, primals, tangents):
        (x,), (t,) = primals, tangents
        return app(f, x), 3 * t

    app.defjvp(app_jvp)
    tree_allclose(app(lambda x: 2 * x, T(1.0)), T(2.0))
    tree_allclose(fu.jvp(lambda x: app(lambda y: 2 * y, x), (T(1.0),), (T(1.0),)), (T(2.0), T(3.0)))
    tree_allclose(fu.grad(lambda x: app(lambda y: 2 * y, x))(T(1.0)), T(3.0))


def test_nondiff_arg_vmap_tracer():
    """jax tests/custom_api_test.py::CustomJVPTest::test_nondiff_arg_vmap_tracer"""

    @partial(fu.custom_jvp, nondiff_argnums=(0,))
    def f(x, y):
        return x * y

    def f_jvp(x, primals, tangents):
        (y,), (t_y,) = primals, tangents
        return f(x, y), 5 * t_y

    f.defjvp(f_jvp)
    g = fu.vmap(f)
    ans = fu.jvp(lambda y: g(T([2.0]), y), (T([3.0]),), (T([1.0]),))
    tree_allclose(ans, (T([6.0]), T([5.0])))


def test_missing_jvp_rule_error_message():
    """jax tests/custom_api_test.py::CustomJVPTest::test_missing_jvp_rule_error_message"""

    @fu.custom_jvp
    def foo(x):
        return x**2

    msg = re.escape("custom_jvp(foo): no JVP rule is defined")
    with pytest.raises(AttributeError, match=msg):
        foo(T(2.0))
    with pytest.raises(AttributeError, match=msg):
        fu.jvp(foo, (T(2.0),), (T(1.0),))
    with pytest.raises(AttributeError, match=msg):
        fu.grad(foo)(T(2.0))


def test_jvp_rule_inconsistent_pytree_structures_error_message():
    """jax tests/custom_api_test.py::CustomJVPTest::test_jvp_rule_inconsistent_pytree_structures_error_message

    A structure mismatch is a ``ValueError`` here (the library's contract; JAX: ``TypeError``).
    """

    @fu.custom_jvp
    def f(x):
        return (x**2,)

    @f.defjvp
    def foo_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return f(x), [2 * x * t, x]

    f(T(2.0))
    with pytest.raises(ValueError, match=r"custom_jvp\(f\) rule: tangent_out .*structure"):
        fu.jvp(f, (T(2.0),), (T(1.0),))


def test_primal_tangent_aval_disagreement_error_message():
    """jax tests/custom_api_test.py::CustomJVPTest::test_primal_tangent_aval_disagreement_error_message"""

    @fu.custom_jvp
    def f(x):
        return x**2

    @f.defjvp
    def foo_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return f(x), t.reshape(1)

    f(T(2.0))
    with pytest.raises((TypeError, ValueError), match="shape"):
        fu.jvp(f, (T(2.0),), (T(1.0),))


def test_jvp_rule_doesnt_return_pair_error_message():
    """jax tests/custom_api_test.py::CustomJVPTest::test_jvp_rule_doesnt_return_pair_error_message"""

    @fu.custom_jvp
    def f(x):
        return x**2

    @f.defjvp
    def foo_jvp(primals, tangents):
        return tangents[0]

    f(T(2.0))
    with pytest.raises(TypeError, match=r"custom_jvp\(f\) rule: the JVP rule must return a pair"):
        fu.jvp(f, (T(2.0),), (T(1.0),))


def test_jvp_rule_primal_out_type_doesnt_match_primal_error_message():
    """jax tests/custom_api_test.py::CustomJVPTest::test_jvp_rule_primal_out_type_doesnt_match_primal_error_message

    The rule returns a pair of primals where the function returns one value (no scan here). The
    library refuses it as a structure mismatch (``ValueError``, its contract; JAX: ``TypeError``).
    """

    @fu.custom_jvp
    def f(x):
        return x

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (xdot,) = primals, tangents
        return (x, x), (xdot, xdot)

    with pytest.raises((TypeError, ValueError), match="structure"):
        fu.jvp(f, (T(1.0),), (T(1.0),))


def test_jvp_rule_primal_out_shape_doesnt_match_primal_error_message():
    """jax tests/custom_api_test.py::CustomJVPTest::test_jvp_rule_primal_out_type_doesnt_match_primal_error_message

    The second half: the rule's primal output has shape (3,) where the function's has ().
    """

    @fu.custom_jvp
    def f(x):
        return x * 1.0

    @f.defjvp
    def f_jvp2(primals, tangents):
        (x,), (xdot,) = primals, tangents
        return torch.zeros((3, *x.shape), dtype=x.dtype), xdot

    with pytest.raises((TypeError, ValueError), match="shape"):
        fu.jvp(f, (T(1.0),), (T(1.0),))


def test_jvp_hard_stuff2():
    """jax tests/custom_api_test.py::CustomJVPTest::test_hard_stuff2 (jit not ported)"""

    @fu.custom_jvp
    def f(x):
        return torch.zeros(x.shape, dtype=x.dtype)

    @f.defjvp
    def f_jvp(primals, tangents):
        return f(primals[0]), tangents[0]

    x = torch.arange(3.0, dtype=D)
    tree_allclose(fu.vmap(f)(x), torch.zeros(3, dtype=D))
    tree_allclose(fu.vmap(fu.grad(f))(x), torch.ones(3, dtype=D))


def test_jvp_hard_stuff2_transform_of_vmap():
    """jax tests/custom_api_test.py::CustomJVPTest::test_hard_stuff2 (grad and jvp of vmap)

    The function's output does not depend on its (batched) input; the rule passes the tangent
    through, so every derivative is 1 (a regression test: the batch size, 3, came out once).
    """

    @fu.custom_jvp
    def f(x):
        return torch.zeros(x.shape, dtype=x.dtype)

    @f.defjvp
    def f_jvp(primals, tangents):
        return f(primals[0]), tangents[0]

    x = torch.arange(3.0, dtype=D)
    tree_allclose(fu.grad(lambda x: fu.vmap(f)(x).sum())(x), torch.ones(3, dtype=D))
    tree_allclose(
        fu.jvp(fu.vmap(f), (x,), (torch.ones(3, dtype=D),)),
        (torch.zeros(3, dtype=D), torch.ones(3, dtype=D)),
    )
    tree_allclose(
        fu.jvp(fu.vmap(f), (x,), (torch.ones(3, dtype=D),)),
        (torch.zeros(3, dtype=D), torch.ones(3, dtype=D)),
    )


def test_linear_in_scan():
    """jax tests/custom_api_test.py::CustomJVPTest::test_linear_in_scan (no scan: a direct call)"""
    guard = Reentry()

    @fu.custom_jvp
    def f(x):
        return -x

    @f.defjvp
    def f_jvp(primals, tangents):
        guard.tick()
        (x,), (x_dot,) = primals, tangents
        return f(x), f(x_dot)

    tree_allclose(fu.grad(f)(T(3.0)), T(-1.0))


def test_linear_rule_forward_mode():
    """jax tests/custom_api_test.py::CustomJVPTest::test_linear_in_scan (forward mode)"""
    guard = Reentry()

    @fu.custom_jvp
    def f(x):
        return -x

    @f.defjvp
    def f_jvp(primals, tangents):
        guard.tick()
        (x,), (x_dot,) = primals, tangents
        return f(x), f(x_dot)

    tree_allclose(fu.jvp(f, (T(3.0),), (T(1.0),)), (T(-3.0), T(-1.0)))


def test_jvp_initial_style():
    """jax tests/custom_api_test.py::CustomJVPTest::test_initial_style (one scan step unrolled)"""

    @fu.custom_jvp
    def f(x):
        return 3 * x

    f.defjvp(lambda primals, tangents: (f(primals[0]), 2 * tangents[0]))

    def foo(x):
        for _ in range(1):
            x = f(x)
        return x

    tree_allclose(fu.grad(foo)(T(3.0)), T(2.0))
    tree_allclose(fu.grad(fu.grad(foo))(T(3.0)), T(0.0))


def test_jvp_initial_style_vmap():
    """jax tests/custom_api_test.py::CustomJVPTest::test_initial_style_vmap (one step unrolled)"""

    @fu.custom_jvp
    def f(x):
        assert x.ndim == 0
        return 3 * x

    f.defjvp(lambda primals, tangents: (f(primals[0]), 2 * tangents[0]))
    ones = torch.ones(3, dtype=D)
    tree_allclose(fu.vmap(f)(ones), 3.0 * ones)
    tree_allclose(fu.grad(lambda x: fu.vmap(f)(x).sum())(ones), 2.0 * ones)


def test_initial_style_vmap_with_collective():
    """jax tests/custom_api_test.py::CustomJVPTest::test_initial_style_vmap_with_collective

    Without the jaxpr round trip: a custom_jvp around psum, under a named vmap.
    """

    @fu.custom_jvp
    def f(x):
        return fu.psum(x, "foo")

    @f.defjvp
    def f_jvp(xs, ts):
        return fu.psum(xs[0], "foo"), ts[0]

    v = fu.vmap(lambda _, x: f(x), axis_name="foo", in_axes=(0, None), out_axes=None)(
        torch.arange(4.0, dtype=D), T(2.0)
    )
    tree_allclose(v, T(8.0))


def _expit_custom_jvp():
    @fu.custom_jvp
    def expit(x):
        return 1 / (1 + torch.exp(-x))

    @expit.defjvp
    def _expit_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        ans = expit(x)
        return ans, t * ans * (1 - ans)

    return expit


def test_multiple_rule_invocations():
    """jax tests/custom_api_test.py::CustomJVPTest::test_multiple_rule_invocations

    lax.scan replaced by a Python loop; the derivatives are compared with plain autodiff.
    """

    def make_foo(expit):
        def foo(x):
            zero = torch.zeros_like(x)
            c = [x, zero, zero, zero, zero]
            for _ in range(10):
                c = [expit(c[0])] + [c[i - 1] + c[i] for i in range(1, len(c))]
            return c[-1]

        return foo

    foo, foo_ref = make_foo(_expit_custom_jvp()), make_foo(torch.sigmoid)
    tree_allclose(foo(T(3.0)), foo_ref(T(3.0)))
    tree_allclose(fu.grad(foo)(T(3.0)), fu.grad(foo_ref)(T(3.0)))
    xs = torch.arange(3.0, dtype=D)
    tree_allclose(
        fu.grad(lambda x: fu.vmap(foo)(x).sum())(xs),
        fu.grad(lambda x: fu.vmap(foo_ref)(x).sum())(xs),
    )


def test_hard_stuff3():
    """jax tests/custom_api_test.py::CustomJVPTest::test_hard_stuff3 (scan as a loop; jit not ported)"""

    @fu.custom_jvp
    def relu(x):
        return torch.clamp(x, min=0)

    @relu.defjvp
    def _relu_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        return relu(x), torch.where(x > 0, t, torch.zeros_like(t))

    def make_f(relu):
        def f(x):
            zero = torch.zeros_like(x)
            c = [x, zero, zero, zero, zero]
            for _ in range(10):
                c = [relu(c[0])] + [c[i - 1] + c[i] for i in range(1, len(c))]
            return c[-1]

        return f

    f, f_ref = make_f(relu), make_f(torch.relu)
    xs = torch.arange(3.0, dtype=D)
    tree_allclose(fu.vmap(f)(xs), fu.vmap(f_ref)(xs))
    tree_allclose(fu.vmap(fu.grad(f))(xs), fu.vmap(fu.grad(f_ref))(xs))
    tree_allclose(
        fu.grad(lambda x: fu.vmap(f)(x).sum())(xs),
        fu.grad(lambda x: fu.vmap(f_ref)(x).sum())(xs),
    )
    ones = torch.ones(3, dtype=D)
    tree_allclose(fu.jvp(fu.vmap(f), (xs,), (ones,)), fu.jvp(fu.vmap(f_ref), (xs,), (ones,)))


def test_jaxpr_zeros():
    """jax tests/custom_api_test.py::CustomJVPTest::test_jaxpr_zeros (scan as a loop)"""

    @fu.custom_jvp
    def f(A, b):
        return A @ b

    def f_jvp(primals, tangents):
        A, b = primals
        dA, db = tangents
        return f(A, b), A @ db + dA @ b

    f.defjvp(f_jvp)

    def experiment(theta):
        q = T(0.0)
        for _ in range(4):
            z = f(torch.eye(3, dtype=D), torch.ones(3, dtype=D) * theta)
            q = q + z[0]
        return q

    tree_allclose(fu.grad(experiment)(T(1.0)), T(4.0))


def test_custom_jvps_first_rule_is_none():
    """jax tests/custom_api_test.py::CustomJVPTest::test_custom_jvps_first_rule_is_none"""

    @fu.custom_jvp
    def f(x, y):
        return x**2 * y

    f.defjvps(None, lambda x_dot, primal_out, x, y: 2 * x * y * x_dot)
    tree_allclose(fu.grad(f, 1)(T(2.0), T(3.0)), T(12.0))


def test_closure_with_vmap2():
    """jax tests/custom_api_test.py::CustomJVPTest::test_closure_with_vmap2"""

    def h(z):
        def f(x):
            @fu.custom_jvp
            def g(y):
                return x * y

            @g.defjvp
            def g_jvp(primals, tangents):
                (y,), (ydot,) = primals, tangents
                return x * y, x * ydot

            return g(z)  # no vmapped argument: the rule closes over the batched x

        return fu.vmap(f)(torch.arange(3.0, dtype=D))

    primals, tangents = fu.jvp(h, (T(1.0),), (T(2.0),))
    tree_allclose(primals, torch.arange(3.0, dtype=D))
    tree_allclose(tangents, 2 * torch.arange(3.0, dtype=D))


def test_jvp_float0():
    """jax tests/custom_api_test.py::CustomJVPTest::test_float0 (an integer zero for float0)"""

    @fu.custom_jvp
    def f(x, y):
        return x * 1.0, y + 0

    def f_jvp(primals, _):
        x, y = primals
        return f(x, y), (T(2.0), torch.zeros_like(y))

    f.defjvp(f_jvp)
    primals = (T(2.0), torch.tensor(3))
    tangents = (T(1.0), torch.tensor(0))
    out, tangent_out = fu.jvp(f, primals, tangents)
    tree_allclose(out, primals)
    tree_allclose(tangent_out, (T(2.0), torch.tensor(0)))


def test_jvp_remat():
    """jax tests/custom_api_test.py::CustomJVPTest::test_remat"""
    f = make_sin_jvp()

    @fu.remat
    def g(x):
        return f(f(x))

    x = T(2.0)
    tree_allclose(g(x), torch.sin(torch.sin(x)))
    tree_allclose(fu.grad(g)(x), 4.0 * fu.grad(lambda x: torch.sin(torch.sin(x)))(x))


def test_jvp_remat_higher_order():
    """jax tests/custom_api_test.py::CustomJVPTest::test_remat_higher_order"""
    f = make_sin_jvp()

    def g(x):
        return f(f(x))

    x = T(2.0)
    expected2 = fu.grad(fu.grad(g))(x)
    tree_allclose(fu.grad(fu.grad(fu.checkpoint(g)))(x), expected2)
    tree_allclose(fu.grad(fu.checkpoint(fu.grad(g)))(x), expected2)
    tree_allclose(fu.grad(fu.grad(fu.grad(fu.checkpoint(g))))(x), fu.grad(fu.grad(fu.grad(g)))(x))


def test_custom_jvp_vmap_broadcasting_interaction():
    """jax tests/custom_api_test.py::CustomJVPTest::test_custom_jvp_vmap_broadcasting_interaction"""

    def f2(y, z):
        v1 = z
        v2 = torch.sum(y) + z
        return torch.logaddexp(v1, v2)

    def f1(y, z):
        v = fu.vmap(lambda _y: f2(_y, z))(y)
        return torch.sum(v)

    y = torch.ones((3, 2), dtype=D)
    val, g = fu.value_and_grad(lambda z: f1(y, z))(T(0.1))
    assert val.shape == () and g.shape == ()
    tree_allclose(g, T(3.0))  # d/dz logaddexp(z, 2 + z) = 1, for each of the 3 rows


def test_custom_jvp_vmap_broadcasting_interaction_2():
    """jax tests/custom_api_test.py::CustomJVPTest::test_custom_jvp_vmap_broadcasting_interaction_2"""
    guard = Reentry(limit=200)

    @fu.custom_jvp
    def transform(box, R):
        guard.tick()
        if box.numel() == 1:
            return R * box
        if box.ndim == 2:
            return torch.einsum("ij,j->i", box, R)
        raise ValueError()

    @transform.defjvp
    def transform_jvp(primals, tangents):
        box, R = primals
        dbox, dR = tangents
        return transform(box, R), dR + transform(dbox, R)

    def periodic_general(box):
        def displacement_fn(Ra, Rb, **kwargs):
            _box = kwargs.get("box", box)
            return transform(_box, Ra - Rb)

        return displacement_fn

    N = 25
    displacement = periodic_general(T(1.0))
    R = torch.rand((N, 2), generator=torch.Generator().manual_seed(0), dtype=D)

    def energy_fn(box):
        d = partial(displacement, box=box)
        d = fu.vmap(fu.vmap(d, (None, 0)), (0, None))
        return torch.sum(d(R, R) ** 2)

    g = fu.grad(energy_fn)(T(1.0))
    assert g.shape == ()
    # the rule: d/dbox sum((Ra - Rb) * box)^2 = 2 sum((Ra - Rb)^2) at box = 1
    diff = R[:, None, :] - R[None, :, :]
    tree_allclose(g, 2 * torch.sum(diff**2))


def test_custom_jvp_implicit_broadcasting():
    """jax tests/custom_api_test.py::CustomJVPTest::test_custom_jvp_implicit_broadcasting"""

    @fu.custom_jvp
    def projection_unit_simplex(x):
        s = 1.0
        n_features = x.shape[0]
        u = torch.sort(x, descending=True).values
        cssv = torch.cumsum(u, 0) - s
        ind = torch.arange(n_features, dtype=x.dtype) + 1
        cond = u - cssv / ind > 0
        idx = torch.count_nonzero(cond)
        threshold = cssv[idx - 1] / idx.to(x.dtype)
        return torch.relu(x - threshold)

    @projection_unit_simplex.defjvp
    def projection_unit_simplex_jvp(primals, tangents):
        (x,), (x_dot,) = primals, tangents
        primal_out = projection_unit_simplex(x)
        supp = (primal_out > 0).to(x_dot.dtype)
        card = torch.count_nonzero(supp).to(x_dot.dtype)
        tangent_out = supp * x_dot - (torch.dot(supp, x_dot) / card) * supp
        return primal_out, tangent_out

    gen = torch.Generator().manual_seed(0)
    x = torch.rand(5, generator=gen, dtype=D)
    J_rev = fu.jacrev(projection_unit_simplex)(x)
    J_fwd = fu.jacfwd(projection_unit_simplex)(x)
    p = projection_unit_simplex(x)
    support = (p > 0).to(D)
    cardinality = torch.count_nonzero(support).to(D)
    J_true = torch.diag(support) - torch.outer(support, support) / cardinality
    tree_allclose(J_fwd, J_true)
    tree_allclose(J_rev, J_true)

    proj = fu.vmap(projection_unit_simplex)

    def fun(X):
        return torch.sum(proj(X) ** 2)

    X = torch.rand(4, 5, generator=gen, dtype=D)
    U = torch.rand(4, 5, generator=gen, dtype=D)
    U /= torch.sqrt(torch.sum(U**2))
    eps = 1e-3
    dir_deriv_num = (fun(X + eps * U) - fun(X - eps * U)) / (2 * eps)
    dir_deriv = torch.sum(fu.grad(fun)(X) * U)
    tree_allclose(dir_deriv, dir_deriv_num, atol=1e-3, rtol=1e-3)


def test_vmap_inside_defjvp():
    """jax tests/custom_api_test.py::CustomJVPTest::test_vmap_inside_defjvp"""
    mat = torch.randn((2, 3), generator=torch.Generator().manual_seed(47), dtype=D)

    @fu.custom_jvp
    def f(mat, aux):
        num_rows, num_cols = mat.shape
        return torch.ones((num_rows, 1), dtype=mat.dtype) / num_cols

    @f.defjvp
    def f_jvp(primals, tangents):
        mat, aux = primals
        vec, _ = tangents
        output = f(*primals)
        num_rows, num_cols = mat.shape
        size = num_rows * num_cols
        bd_mat = mat.reshape(1, 1, num_rows, num_cols)
        bd_mat = torch.tile(bd_mat, (num_rows, num_cols))
        bd_mat = bd_mat.reshape(size, num_rows, num_cols)
        rowsum = torch.sum(mat, dim=1, keepdim=True)
        colsum = torch.sum(mat, dim=0, keepdim=True)
        bd_rowsum = torch.tile(rowsum, (1, num_rows))
        bd_colsum = torch.tile(colsum, (num_cols, 1))
        bd_vec = vec.reshape(size, 1)

        def operate(mx, val):
            buf = 0
            for i in range(2):
                buf = buf + torch.matmul(mx, bd_colsum) / torch.pow(aux, i)
            buf = torch.matmul(bd_rowsum, buf)
            return buf * val[None, :]

        bd_buf = fu.vmap(operate, in_axes=(0, 0), out_axes=0)(bd_mat, bd_vec)
        bd_buf = bd_buf / aux
        jvp = torch.sum(bd_buf, dim=0)
        jvp = torch.mean(jvp, dim=1, keepdim=True)
        return output, jvp

    g_mat, g_aux = fu.grad(lambda mat, aux: torch.sum(f(mat, aux)), argnums=(0, 1))(mat, T(0.5))
    assert g_mat.shape == mat.shape and g_aux.shape == ()
    # the rule's transpose, checked against forward mode along a random direction
    v = torch.randn((2, 3), generator=torch.Generator().manual_seed(1), dtype=D)
    _, t = fu.jvp(lambda m: torch.sum(f(m, T(0.5))), (mat,), (v,))
    tree_allclose(torch.sum(g_mat * v), t)


def test_custom_jvp_unbroadcasting():
    """jax tests/custom_api_test.py::CustomJVPTest::test_custom_jvp_unbroadcasting"""
    a = T([1.0, 1.0])

    @fu.custom_jvp
    def f(x):
        return a * x

    @f.defjvp
    def f_jvp(primals, tangents):
        (x,), (dx,) = primals, tangents
        return a * x, a * dx

    g = fu.grad(lambda x: torch.sum(f(x)))(T(1.0))
    assert g.shape == ()
    tree_allclose(g, T(2.0))


def test_custom_jvp_functools_partial():
    """jax tests/custom_api_test.py::CustomJVPTest::test_custom_jvp_functools_partial"""

    def fun(x, y, a):
        return x + y * a

    fun_wrapped = functools.partial(fun, a=0.1)

    def jvp_fn(primals, tangents):
        return fu.jvp(fun_wrapped, primals, tangents)

    fn = fu.custom_jvp(fun_wrapped)
    fn.defjvp(jvp_fn)
    tree_allclose(fu.grad(lambda args: fn(*args))((T(1.0), T(2.0))), (T(1.0), T(0.1)))


def test_jvp_dce():
    """jax tests/custom_api_test.py::CustomJVPTest::test_dce (the values, one output at a time)"""

    @fu.custom_jvp
    def f(x, y):
        return torch.sin(x), x + torch.cos(y)

    @f.defjvp
    def f_jvp(primals, tangents):
        x, y = primals
        dx, dy = tangents
        return f(x, y), (2.0 * torch.cos(x) * dx, 1.5 * dx - 0.5 * torch.sin(y) * dy)

    x, y = T(0.1), T(-1.3)
    one, zero = T(1.0), T(0.0)

    def f0(x, y):
        return f(x, y)[0]

    def f1(x, y):
        return f(x, y)[1]

    tree_allclose(fu.jvp(f0, (x, y), (one, zero)), (f0(x, y), 2.0 * torch.cos(x)))
    tree_allclose(fu.jvp(f0, (x, y), (zero, one)), (f0(x, y), zero))
    tree_allclose(fu.jvp(f1, (x, y), (one, zero)), (f1(x, y), T(1.5)))
    tree_allclose(fu.jvp(f1, (x, y), (zero, one)), (f1(x, y), -0.5 * torch.sin(y)))


def test_jvp_resolve_kwargs_error_message():
    """jax tests/custom_api_test.py::CustomJVPTest::test_resolve_kwargs_error_message"""

    @fu.custom_jvp
    def f(x, y, *, z=None):
        return torch.sin(x), x + torch.cos(y)

    @f.defjvp
    def f_jvp(primals, tangents):
        raise AssertionError("should not be executed")

    with pytest.raises(TypeError, match="y"):
        f(T(0.5))


def test_jvp_resolve_kwargs_error_message_kwonly():
    """jax tests/custom_api_test.py::CustomJVPTest::test_resolve_kwargs_error_message (keyword-only)"""

    @fu.custom_jvp
    def f(x, y, *, z=None):
        return torch.sin(x), x + torch.cos(y)

    @f.defjvp
    def f_jvp(primals, tangents):
        raise AssertionError("should not be executed")

    with pytest.raises(TypeError, match="z"):
        f(T(0.5), T(0.1), z=T(1.0))


def test_custom_jvp_transpose_vjp3():
    """jax tests/custom_api_test.py::CustomJVPTest::test_custom_jvp_transpose_vjp3"""
    guard = Reentry()

    @fu.custom_jvp
    def div(x, y):
        return x / y

    @div.defjvp
    def div_jvp(primals, tangents):
        guard.tick()
        (x, y), (x_dot, _) = primals, tangents
        return div(x, y), div(x_dot, y)

    _, f_vjp = fu.vjp(lambda x: div(x, T(2.0)), T(1.0))
    (ans,) = f_vjp(T(1.0))
    tree_allclose(ans, T(0.5))


def test_fun_with_nested_calls_2():
    """jax tests/custom_api_test.py::CustomJVPTest::test_fun_with_nested_calls_2 (jit not ported)"""

    def call(f, *args):
        f = fu.custom_jvp(f)
        f.defjvp(lambda primals, tangents: (f(*primals), sum(tangents)))
        return f(*args)

    def fun_with_nested_calls_2(x):
        def bar(y):
            def baz(w):
                q = call(lambda x: y, x)
                q = q + call(lambda: y)
                q = q + call(lambda y: w + y, y)
                q = call(lambda w: call(torch.sin, x) * y, T(1.0)) + q
                return q

            return baz(x)

        return call(bar, x)

    xs = torch.arange(3.0, dtype=D)
    expected = torch.stack([fun_with_nested_calls_2(x) for x in xs])
    tree_allclose(fu.vmap(fun_with_nested_calls_2)(xs), expected)


# =================================================================================================
# CustomVJPTest
# =================================================================================================


@FWD_CALLS_F
def test_vjp_basic(fwd_calls_f):
    """jax tests/custom_api_test.py::CustomVJPTest::test_basic"""
    f = make_sin_vjp(fwd_calls_f)
    x = T(3.0)
    tree_allclose(f(x), torch.sin(x))
    tree_allclose(fu.grad(f)(x), 2 * torch.cos(x))
    tree_allclose(fu.value_and_grad(f)(x), (torch.sin(x), 2 * torch.cos(x)))


@FWD_CALLS_F
def test_vjp_invariance(fwd_calls_f):
    """jax tests/custom_api_test.py::CustomVJPTest::test_invariance"""

    @fu.custom_vjp
    def f(x):
        return torch.cos(2 * x) / 2.0

    def f_fwd(x):
        return (f(x) if fwd_calls_f else torch.cos(2 * x) / 2.0), x

    def f_rev(x, g):
        return (g * 3,)

    f.defvjp(f_fwd, f_rev)

    def f2(x):
        y, _ = fu.value_and_grad(f)(x)
        return y

    def f3(x):
        y, _ = fu.value_and_grad(f2)(x)
        return y

    x = T(1.0)
    tree_allclose(f(x), f2(x))
    tree_allclose(f(x), f3(x))
    tree_allclose(fu.grad(f)(x), fu.grad(f2)(x))
    tree_allclose(fu.grad(f)(x), fu.grad(f3)(x))


def test_vjp_initial_style():
    """jax tests/custom_api_test.py::CustomVJPTest::test_initial_style (one scan step unrolled)"""
    f = make_sin_vjp()

    def foo(x):
        for _ in range(1):
            x = f(x)
        return x

    tree_allclose(fu.grad(foo)(T(3.0)), 2.0 * torch.cos(T(3.0)))
    tree_allclose(fu.grad(fu.grad(foo))(T(3.0)), -2.0 * torch.sin(T(3.0)))


def test_vjp_initial_style_vmap_3():
    """jax tests/custom_api_test.py::CustomVJPTest::test_initial_style_vmap_3 (one step unrolled)

    The function closes over an array constant.
    """
    y = torch.arange(1.0, 4.0, dtype=D)

    @fu.custom_vjp
    def f(x):
        assert x.ndim == 0
        return 3 * x * torch.sum(y)

    f.defvjp(lambda x: (f(x), torch.cos(x)), lambda cos_x, g: (2 * cos_x * g,))
    xs = torch.arange(3.0, dtype=D)
    tree_allclose(fu.vmap(f)(xs), 3.0 * xs * 6)
    tree_allclose(fu.grad(lambda x: fu.vmap(f)(x).sum())(xs), 2.0 * torch.cos(xs))


def test_vjp_initial_style_vmap_with_collective():
    """jax tests/custom_api_test.py::CustomVJPTest::test_initial_style_vmap_with_collective

    Without the jaxpr round trip: a custom_vjp around psum, under a named vmap.
    """

    @fu.custom_vjp
    def f(x):
        return fu.psum(x, "foo")

    f.defvjp(lambda x: (fu.psum(x, "foo"), None), lambda res, dx: (dx,))
    out = fu.vmap(lambda _, x: f(x), axis_name="foo", in_axes=(0, None), out_axes=None)(
        torch.arange(4.0, dtype=D), T(2.0)
    )
    tree_allclose(out, T(8.0))


def test_custom_vjp_scan_batching_edge_case():
    """jax tests/custom_api_test.py::CustomVJPTest::test_custom_vjp_scan_batching_edge_case

    lax.scan replaced by a Python loop: a custom_vjp with an unbatched coefficient under vmap, whose
    bwd sums over the (per-member) input to give the coefficient's cotangent.
    """

    @fu.custom_vjp
    def mul(x, coeff):
        return x * coeff

    def mul_bwd(res, g):
        x, coeff = res
        return g * coeff, (x * g).sum()

    mul.defvjp(lambda x, coeff: (x * coeff, (x, coeff)), mul_bwd)

    def scan_over_mul(x, coeff):
        for _ in range(3):
            x = mul(x, coeff)
        return x

    gen = torch.Generator().manual_seed(0)
    x_batch = torch.randn((3, 2), generator=gen, dtype=D)
    covector_batch = torch.randn((3, 2), generator=gen, dtype=D)
    coeff = T(1.0)
    batched = fu.vmap(scan_over_mul, in_axes=(0, None), out_axes=0)
    _, vjp_fun = fu.vjp(batched, x_batch, coeff)
    ct_x, ct_coeff = vjp_fun(covector_batch)
    # out = x * coeff**3: d/dx = coeff**3, d/dcoeff = 3 coeff**2 * sum(x * ct)
    tree_allclose(ct_x, covector_batch)
    tree_allclose(ct_coeff, 3 * torch.sum(x_batch * covector_batch))
    check_grads(batched, (x_batch, coeff), order=2, modes=("rev",))


def test_vjp_deepcopy():
    """jax tests/custom_api_test.py::CustomVJPTest::test_deepcopy"""

    @fu.custom_vjp
    def f(x):
        return torch.sin(x)

    f.defvjp(lambda x: (torch.sin(x), torch.cos(x)), lambda cos_x, g: (cos_x * g,))
    g = copy.deepcopy(f)
    tree_allclose(fu.grad(g)(T(1.0)), torch.cos(T(1.0)))


def test_vjp_python_control_flow():
    """jax tests/custom_api_test.py::CustomVJPTest::test_python_control_flow"""

    @fu.custom_vjp
    def f(x):
        if x > 0:
            return torch.sin(x)
        return torch.cos(x)

    def f_fwd(x):
        return (torch.sin(x) if x > 0 else torch.cos(x)), x

    def f_rev(x, g):
        return ((2 if x > 0 else 3) * g,)

    f.defvjp(f_fwd, f_rev)
    x = T(2.0)
    tree_allclose(f(x), torch.sin(x))
    tree_allclose(f(-x), torch.cos(-x))
    tree_allclose(fu.value_and_grad(f)(x), (torch.sin(x), T(2.0)))
    tree_allclose(fu.value_and_grad(f)(-x), (torch.cos(-x), T(3.0)))


def test_vjp_python_control_flow_bwd():
    """jax tests/custom_api_test.py::CustomVJPTest::test_python_control_flow_bwd"""

    @fu.custom_vjp
    def f(x):
        return torch.where(x > 0, torch.sin(x), torch.cos(x))  # no primal control flow

    def f_fwd(x):
        return (torch.sin(x) if x > 0 else torch.cos(x)), x

    def f_rev(x, g):
        return ((2 if x > 0 else 3) * g,)

    f.defvjp(f_fwd, f_rev)
    x = T(2.0)
    tree_allclose(f(x), torch.sin(x))
    tree_allclose(f(-x), torch.cos(-x))
    tree_allclose(fu.value_and_grad(f)(x), (torch.sin(x), T(2.0)))
    tree_allclose(fu.value_and_grad(f)(-x), (torch.cos(-x), T(3.0)))


@FWD_CALLS_F
def test_vjp_vmap(fwd_calls_f):
    """jax tests/custom_api_test.py::CustomVJPTest::test_vmap"""

    @fu.custom_vjp
    def f(x):
        assert x.ndim == 0
        return torch.sin(x)

    def f_fwd(x):
        assert x.ndim == 0
        return (f(x) if fwd_calls_f else torch.sin(x)), torch.cos(x)

    def f_rev(cos_x, g):
        return (2 * cos_x * g,)

    f.defvjp(f_fwd, f_rev)
    x = torch.arange(3.0, dtype=D)
    xx = torch.arange(6.0, dtype=D).reshape(2, 3)
    # vmap of f
    tree_allclose(fu.vmap(f)(x), torch.sin(x))
    tree_allclose(fu.vmap(fu.vmap(f))(xx), torch.sin(xx))
    # vmap of grad of f
    tree_allclose(fu.vmap(fu.grad(f))(x), 2 * torch.cos(x))
    tree_allclose(fu.vmap(fu.value_and_grad(f))(x), (torch.sin(x), 2 * torch.cos(x)))
    tree_allclose(fu.vmap(fu.vmap(fu.grad(f)))(xx), 2 * torch.cos(xx))
    tree_allclose(fu.vmap(fu.vmap(fu.value_and_grad(f)))(xx), (torch.sin(xx), 2 * torch.cos(xx)))
    # grad of vmap of f
    tree_allclose(fu.grad(lambda x: fu.vmap(f)(x).sum())(x), 2 * torch.cos(x))
    tree_allclose(fu.grad(lambda x: fu.vmap(fu.vmap(f))(x).sum())(xx), 2 * torch.cos(xx))
    # vmap of grad of vmap of f
    tree_allclose(fu.vmap(fu.grad(lambda x: fu.vmap(f)(x).sum()))(xx), 2 * torch.cos(xx))


@FWD_CALLS_F
def test_vjp_pytrees(fwd_calls_f):
    """jax tests/custom_api_test.py::CustomVJPTest::test_pytrees"""

    @fu.custom_vjp
    def f(x):
        return {"b": torch.sin(x["a"])}

    def f_fwd(x):
        out = f(x) if fwd_calls_f else {"b": torch.sin(x["a"])}
        return out, {"r": torch.cos(x["a"])}

    def f_bwd(res, g):
        return ({"a": 2 * res["r"] * g["b"]},)

    f.defvjp(f_fwd, f_bwd)
    x = {"a": T(3.0)}
    tree_allclose(f(x)["b"], torch.sin(x["a"]))
    tree_allclose(fu.grad(lambda x: f(x)["b"])(x), {"a": 2 * torch.cos(x["a"])})


def test_vjp_jvp_error():
    """jax tests/custom_api_test.py::CustomVJPTest::test_jvp_error (jit variant not ported)"""
    f = make_sin_vjp()
    with pytest.raises(TypeError, match="custom_vjp"):
        fu.jvp(f, (T(3.0),), (T(1.0),))


def test_vjp_jvp_error_vmap():
    """jax tests/custom_api_test.py::CustomVJPTest::test_jvp_error (jvp of vmap)"""
    f = make_sin_vjp()
    with pytest.raises(TypeError, match="custom_vjp"):
        fu.jvp(fu.vmap(f), (torch.arange(3.0, dtype=D),), (torch.ones(3, dtype=D),))


def test_vjp_kwargs():
    """jax tests/custom_api_test.py::CustomVJPTest::test_kwargs"""

    @fu.custom_vjp
    def my_fun(x, y, c=1.0):
        return c * (x + y)

    my_fun.defvjp(lambda x, y, c=1.0: (c * (x + y), None), lambda _, g: (g, g, g))

    def f(x, y):
        return torch.square(my_fun(x, y, c=2.0)).sum()

    tree_allclose(f(T(10.0), T(5.0)), T(900.0))
    # bwd's cotangent for x is g = d(out^2)/d(out) = 2 * 30 (the rule, not the chain rule)
    tree_allclose(fu.grad(f)(T(10.0), T(5.0)), T(60.0))


@FWD_CALLS_F
def test_vjp_nondiff_argnums(fwd_calls_f):
    """jax tests/custom_api_test.py::CustomVJPTest::test_nondiff_argnums"""

    @partial(fu.custom_vjp, nondiff_argnums=(0,))
    def app(f, x):
        return f(x)

    def app_fwd(f, x):
        return (app(f, x) if fwd_calls_f else f(x)), torch.cos(x)

    def app_rev(f, cos_x, g):
        return (cos_x * g,)

    app.defvjp(app_fwd, app_rev)
    tree_allclose(app(lambda x: 2 * x, T(1.0)), T(2.0))
    ans = fu.value_and_grad(lambda x: app(lambda y: 2 * y, x))(T(1.0))
    tree_allclose(ans, (T(2.0), torch.cos(T(1.0))))


def test_vjp_nondiff_argnums_unhashable():
    """jax tests/custom_api_test.py::CustomVJPTest::test_nondiff_argnums_unhashable (jit not ported)"""

    @partial(fu.custom_vjp, nondiff_argnums=(0,))
    def f(lst, x):
        return lst[0] * torch.sin(x)

    def f_fwd(lst, x):
        return lst[0] * torch.sin(x), torch.cos(x)

    def f_bwd(lst, cos_x, g):
        return (lst[0] * cos_x * g,)

    f.defvjp(f_fwd, f_bwd)
    lst = [2.0]  # unhashable
    tree_allclose(f(lst, T(3.0)), 2.0 * torch.sin(T(3.0)))
    tree_allclose(fu.grad(f, argnums=1)(lst, T(3.0)), 2.0 * torch.cos(T(3.0)))
    xs = torch.arange(3.0, dtype=D)
    tree_allclose(fu.vmap(fu.grad(lambda x: f(lst, x)))(xs), 2.0 * torch.cos(xs))


def test_closed_over_vmap_tracer():
    """jax tests/custom_api_test.py::CustomVJPTest::test_closed_over_vmap_tracer"""

    def outer(x):
        @fu.custom_vjp
        def f(y):
            return x * y

        f.defvjp(lambda y: (x * y, torch.cos(y)), lambda cos_y, g: (cos_y * g,))
        return f

    g = fu.vmap(lambda x: outer(x)(T(3.0)))
    tree_allclose(g(torch.arange(3.0, dtype=D)), torch.arange(3.0, dtype=D) * 3)


def test_closed_over_tracer3():
    """jax tests/custom_api_test.py::CustomVJPTest::test_closed_over_tracer3"""

    def outer(x):
        @fu.custom_vjp
        def f(y):
            return x * y

        def f_fwd(y):
            return x * y, (x, torch.cos(y))

        def f_rev(res, g):
            x, cos_y = res
            return (cos_y * g * x,)

        f.defvjp(f_fwd, f_rev)
        return fu.grad(f)

    g = fu.vmap(lambda x: outer(x)(T(3.0)))
    xs = torch.arange(3.0, dtype=D)
    tree_allclose(g(xs), torch.cos(T(3.0)) * xs)


def test_missing_vjp_rule_error():
    """jax tests/custom_api_test.py::CustomVJPTest::test_missing_vjp_rule_error"""

    @fu.custom_vjp
    def foo(x):
        return x**2

    msg = re.escape("custom_vjp(foo): no VJP rule is defined")
    with pytest.raises(AttributeError, match=msg):
        foo(T(2.0))
    with pytest.raises(AttributeError, match=msg):
        fu.grad(foo)(T(2.0))


def test_vjp_rule_inconsistent_pytree_structures_error():
    """jax tests/custom_api_test.py::CustomVJPTest::test_vjp_rule_inconsistent_pytree_structures_error"""

    @fu.custom_vjp
    def f(x):
        return x * 1.0

    f.defvjp(lambda x: (x * 1.0, None), lambda _, g: (g, g))
    f(T(2.0))
    with pytest.raises(ValueError, match=r"custom_vjp\(f\) bwd: .*wrong number of cotangents"):
        fu.grad(f)(T(2.0))


def test_vjp_bwd_returns_non_tuple_error():
    """jax tests/custom_api_test.py::CustomVJPTest::test_vjp_bwd_returns_non_tuple_error

    A ``ValueError`` here (the library's contract for a wrong bwd structure; JAX: ``TypeError``).
    """

    @fu.custom_vjp
    def f(x):
        return x * 1.0

    f.defvjp(lambda x: (x * 1.0, None), lambda _, g: 2.0 * g)
    with pytest.raises(ValueError, match=r"custom_vjp\(f\) bwd: .*expected a tuple"):
        fu.grad(f)(T(3.0))


def test_fwd_rule_primal_out_type_doesnt_match_primal_error_message():
    """jax tests/custom_api_test.py::CustomVJPTest::test_fwd_rule_primal_out_type_doesnt_match_primal_error_message

    No scan: the checks apply to a direct call under grad.
    """

    @fu.custom_vjp
    def f(x):
        return x * 1.0

    f.defvjp(lambda x: ((x, x), None), lambda _, y_bar: (y_bar,))
    with pytest.raises((TypeError, ValueError), match="fwd"):
        fu.grad(f)(T(1.0))

    f.defvjp(lambda x: (torch.zeros((3, *x.shape), dtype=x.dtype), None), lambda _, y: (y,))
    with pytest.raises((TypeError, ValueError), match="fwd"):
        fu.grad(f)(T(1.0))


def test_lowering_out_of_traces():
    """jax tests/custom_api_test.py::CustomVJPTest::test_lowering_out_of_traces (jit not ported)"""

    class F(collections.namedtuple("F", ["a"])):
        def __call__(self, x):
            return torch.relu(self.a) * x

    def g(f, x):
        return f(x)

    (gx,) = fu.grad(g, argnums=(1,))(F(T(2.0)), T(0.0))
    tree_allclose(gx, T(2.0))


def test_clip_gradient():
    """jax tests/custom_api_test.py::CustomVJPTest::test_clip_gradient"""

    @fu.custom_vjp
    def _clip_gradient(lo, hi, x):
        return x * 1.0  # identity function when not differentiating

    def clip_gradient_fwd(lo, hi, x):
        return x * 1.0, (lo, hi)

    def clip_gradient_bwd(res, g):
        lo, hi = res
        return (None, None, torch.clamp(g, torch.tensor(lo, dtype=g.dtype), hi))

    _clip_gradient.defvjp(clip_gradient_fwd, clip_gradient_bwd)

    def clip_gradient(x):
        lo = -0.1
        hi = x + 0.1
        return _clip_gradient(lo, hi, x)

    tree_allclose(fu.grad(clip_gradient)(T(0.1)), T(0.2))


def test_nestable_vjp():
    """jax tests/custom_api_test.py::CustomVJPTest::test_nestable_vjp (jit part not ported)"""

    def f(x):
        return x**2

    @fu.custom_vjp
    def g(x):
        return f(x)

    def g_fwd(x):
        y, f_vjp = fu.vjp(f, x)
        return y, f_vjp

    def g_bwd(f_vjp, y_bar):
        return f_vjp(y_bar)

    g.defvjp(g_fwd, g_bwd)
    _, g_vjp = fu.vjp(g, T(1.0))
    (y,) = g_vjp(T(1.0))
    tree_allclose(y, T(2.0))
    _, g_vjp = fu.vjp(g, T(1.0))
    (y,) = g_vjp(T(3.0))
    tree_allclose(y, T(6.0))


def _bwd_closes_over(y):
    @fu.custom_vjp
    def f(x):
        return 2.0 * torch.sin(x)

    def fwd(x):
        return 2.0 * torch.sin(x), ()

    def bwd(_, g):
        return (2.0 * torch.cos(y) * g,)  # capture!

    f.defvjp(fwd, bwd)
    return fu.grad(f)(T(1.0))


def test_bwd_closes_over_tracer():
    """jax tests/custom_api_test.py::CustomVJPTest::test_bwd_closes_over_tracer (jit not ported)"""
    xs = torch.arange(3.0, dtype=D)
    tree_allclose(_bwd_closes_over(T(2.0)), 2.0 * torch.cos(T(2.0)))
    tree_allclose(fu.vmap(_bwd_closes_over)(xs), 2.0 * torch.cos(xs))
    tree_allclose(fu.grad(_bwd_closes_over)(T(4.0)), -2.0 * torch.sin(T(4.0)))


def _fwd_closes_over(y):
    @fu.custom_vjp
    def f(x):
        return 2.0 * torch.sin(x)

    def fwd(x):
        return 2.0 * torch.sin(x), y

    def bwd(y, g):
        return (2.0 * torch.cos(y) * g,)

    f.defvjp(fwd, bwd)
    return fu.grad(f)(T(1.0))


def test_fwd_closes_over_tracer():
    """jax tests/custom_api_test.py::CustomVJPTest::test_fwd_closes_over_tracer (jit not ported)"""
    xs = torch.arange(3.0, dtype=D)
    tree_allclose(_fwd_closes_over(T(2.0)), 2.0 * torch.cos(T(2.0)))
    tree_allclose(fu.vmap(_fwd_closes_over)(xs), 2.0 * torch.cos(xs))
    tree_allclose(fu.grad(_fwd_closes_over)(T(4.0)), -2.0 * torch.sin(T(4.0)))


def test_vjp_float0():
    """jax tests/custom_api_test.py::CustomVJPTest::test_float0 (None for the integer: documented)"""

    @fu.custom_vjp
    def f(x, _):
        return x * 1.0

    f.defvjp(lambda x, _: (x * 1.0, (2.0, 1)), lambda *_: (2.0, None))
    ans = fu.grad(f, allow_int=True, argnums=(0, 1))(T(2.0), 3)
    tree_allclose(ans[0], T(2.0))
    assert ans[1] is None


@FWD_CALLS_F
def test_vjp_remat(fwd_calls_f):
    """jax tests/custom_api_test.py::CustomVJPTest::test_remat"""
    f = make_sin_vjp(fwd_calls_f)

    @fu.remat
    def g(x):
        return f(f(x))

    x = T(2.0)
    tree_allclose(g(x), torch.sin(torch.sin(x)))
    tree_allclose(fu.grad(g)(x), 4.0 * fu.grad(lambda x: torch.sin(torch.sin(x)))(x))


def test_remat_pytree_arg():
    """jax tests/custom_api_test.py::CustomVJPTest::test_remat_pytree_arg"""

    @fu.custom_vjp
    def f(xy):
        return xy["a"] * xy["b"]

    def f_fwd(xy):
        return xy["a"] * xy["b"], xy

    def f_bwd(xy, g):
        return ({"a": g * xy["b"], "b": g * xy["a"]},)

    f.defvjp(f_fwd, f_bwd)

    @fu.remat
    def g(xy):
        return torch.sin(f(xy))

    xy = {"a": T(2.0), "b": T(3.0)}
    tree_allclose(g(xy), torch.sin(T(6.0)))
    tree_allclose(fu.grad(g)(xy), {"a": torch.cos(T(6.0)) * 3.0, "b": torch.cos(T(6.0)) * 2.0})


def test_remat_nondiff_argnums():
    """jax tests/custom_api_test.py::CustomVJPTest::test_remat_nondiff_argnums"""

    @partial(fu.custom_vjp, nondiff_argnums=(0,))
    def f(k, x):
        return torch.sin(k * x)

    def f_fwd(k, x):
        return torch.sin(k * x), torch.cos(k * x)

    def f_bwd(k, cos_kx, g):
        return (k * cos_kx * g,)

    f.defvjp(f_fwd, f_bwd)

    @fu.remat
    def g(x):
        return f(2.0, x) * 3.0

    tree_allclose(g(T(0.5)), 3.0 * torch.sin(T(1.0)))
    tree_allclose(fu.grad(g)(T(0.5)), 3.0 * 2.0 * torch.cos(T(1.0)))


def test_vjp_remat_higher_order():
    """jax tests/custom_api_test.py::CustomVJPTest::test_remat_higher_order"""
    f = make_sin_vjp()

    def g(x):
        return f(f(x))

    x = T(2.0)
    expected2 = fu.grad(fu.grad(g))(x)
    tree_allclose(fu.grad(fu.grad(fu.remat(g)))(x), expected2)
    tree_allclose(fu.grad(fu.remat(fu.grad(g)))(x), expected2)
    tree_allclose(fu.grad(fu.grad(fu.grad(fu.remat(g))))(x), fu.grad(fu.grad(fu.grad(g)))(x))


def _bwd_nones_fun():
    @fu.custom_vjp
    def f(x, y):
        return x * torch.sin(y)

    f.defvjp(lambda x, y: (x * torch.sin(y), torch.cos(y)), lambda cos, g: (None, 2 * cos * g))
    return f


def test_bwd_nones():
    """jax tests/custom_api_test.py::CustomVJPTest::test_bwd_nones"""
    f = _bwd_nones_fun()
    tree_allclose(fu.grad(lambda x: f(x, x))(T(3.0)), 2 * torch.cos(T(3.0)))


def test_bwd_nones_vmap():
    """jax tests/custom_api_test.py::CustomVJPTest::test_bwd_nones_vmap"""
    f = _bwd_nones_fun()
    xs = torch.arange(3.0, dtype=D)
    tree_allclose(fu.grad(lambda x: fu.vmap(f)(x, x).sum())(xs), 2 * torch.cos(xs))


def test_bwd_nones_pytree():
    """jax tests/custom_api_test.py::CustomVJPTest::test_bwd_nones_pytree"""

    @fu.custom_vjp
    def f(xs, y):
        x1, x2 = xs
        return x1 * x2 * torch.sin(y)

    f.defvjp(
        lambda xs, y: (xs[0] * xs[1] * torch.sin(y), torch.cos(y)), lambda c, g: (None, 2 * c * g)
    )
    tree_allclose(fu.grad(lambda x: f((x, x), x))(T(3.0)), 2 * torch.cos(T(3.0)))


def test_float0_bwd_none():
    """jax tests/custom_api_test.py::CustomVJPTest::test_float0_bwd_none"""

    @fu.custom_vjp
    def f(i, x):
        return torch.sin(x)

    f.defvjp(lambda i, x: (torch.sin(x), torch.cos(x)), lambda cos_x, g: (None, 2 * cos_x * g))
    tree_allclose(fu.grad(f, 1)(torch.tensor([1, 2]), T(3.0)), 2 * torch.cos(T(3.0)))


def test_float0_cotangents_automatically_handled():
    """jax tests/custom_api_test.py::CustomVJPTest::test_float0_cotangents_automatically_handled"""

    @fu.custom_vjp
    def f(x, y):
        return x * 1.0

    f.defvjp(lambda x, y: (x * 1.0, None), lambda _, zbar: (0.0, 1))
    _, f_vjp = fu.vjp(f, T(0.0), torch.tensor(1))
    ct_x, ct_y = f_vjp(T(1.0))
    tree_allclose(ct_x, T(0.0))
    assert ct_y is None


def test_vjp_closure_with_vmap2():
    """jax tests/custom_api_test.py::CustomVJPTest::test_closure_with_vmap2"""

    def h(z):
        def f(x):
            @fu.custom_vjp
            def g(y):
                return x * y

            def g_fwd(y):
                return x * y, (x, x * y, y)

            def g_rev(res, w_bar):
                x, *_ = res
                return (x * w_bar,)

            g.defvjp(g_fwd, g_rev)
            return g(z)

        return fu.vmap(f)(torch.arange(3.0, dtype=D)).sum()

    check_grads(h, (T(3.14),), order=1, modes=("rev",))
    tree_allclose(fu.grad(h)(T(3.14)), T(3.0))


def test_pytrees_not_required_to_contain_nones():
    """jax tests/custom_api_test.py::CustomVJPTest::test_pytrees_not_required_to_contain_nones"""

    class A(list):
        pass

    def unflatten(_, children):
        assert children[0] is not None
        return A(children)

    fu.tree_util.register_pytree_node(A, lambda x: (list(x), None), unflatten)

    @fu.custom_vjp
    def f(x):
        return x[0] * 1.0

    f.defvjp(lambda x: (x[0] * 1.0, None), lambda _, g: (A([g]),))
    g = fu.grad(f)(A([T(1.0)]))
    assert isinstance(g, A)
    tree_allclose(list(g), [T(1.0)])


def test_vmap_vjp_called_twice():
    """jax tests/custom_api_test.py::CustomVJPTest::test_vmap_vjp_called_twice"""

    @fu.custom_vjp
    def f(x):
        return x * 1.0

    f.defvjp(lambda x: (x * 1.0, None), lambda _, y_bar: (y_bar,))
    _, f_vjp = fu.vjp(fu.vmap(f), T([3.0]))
    tree_allclose(f_vjp(T([3.0])), (T([3.0]),))
    tree_allclose(f_vjp(T([4.0])), (T([4.0]),))


def test_nones_representing_zeros_in_subtrees_returned_by_bwd():
    """jax tests/custom_api_test.py::CustomVJPTest::test_nones_representing_zeros_in_subtrees_returned_by_bwd"""

    @fu.custom_vjp
    def f(x):
        return x[0] * 1.0

    f.defvjp(lambda x: (x[0] * 1.0, None), lambda _, z_bar: ((z_bar, (None, None)),))
    g = fu.grad(f)((T(1.0), (T(2.0), T(3.0))))
    tree_allclose(g, (T(1.0), (T(0.0), T(0.0))))


def test_pytree_nones_returned_by_bwd():
    """jax tests/custom_api_test.py::CustomVJPTest::test_pytree_nones_returned_by_bwd"""

    @fu.custom_vjp
    def f(x):
        return x[0] * 1.0

    f.defvjp(lambda x: (x[0] * 1.0, None), lambda _, z_bar: ((z_bar, (None, None)),))
    g = fu.grad(f)((T(1.0), (T(2.0), None)))
    tree_allclose(g, (T(1.0), (T(0.0), None)))


def test_bwd_rule_shape_mismatch():
    """jax tests/custom_api_test.py::CustomVJPTest::test_bwd_rule_shape_mismatch"""

    @fu.custom_vjp
    def foo(x, y):
        return x * 1.0

    foo.defvjp(lambda x, y: (x * 1.0, None), lambda _, g: (torch.zeros(3), torch.zeros(3)))
    with pytest.raises(ValueError, match=r"custom_vjp\(foo\) bwd: bwd_output\[1\].*shape \(3,\)"):
        fu.grad(lambda x, y: foo(x, y * y).sum(), 1)(torch.ones(3), torch.ones(4))


def test_bwd_rule_can_produce_list_or_tuple():
    """jax tests/custom_api_test.py::CustomVJPTest::test_bwd_rule_can_produce_list_or_tuple"""

    @fu.custom_vjp
    def f(x, y):
        return x * y

    def f_bwd(xy, g):
        x, y = xy
        return [g * y, x * g]  # list, not tuple

    f.defvjp(lambda x, y: (x * y, (x, y)), f_bwd)
    tree_allclose(fu.grad(f, argnums=(0, 1))(T(1.0), T(2.0)), (T(2.0), T(1.0)))


def test_vjp_dce():
    """jax tests/custom_api_test.py::CustomVJPTest::test_dce (the values, one output at a time)"""

    @fu.custom_vjp
    def f(x, y):
        return torch.sin(x), x + torch.cos(y)

    def f_fwd(x, y):
        return (torch.sin(x), x + torch.cos(y)), (torch.cos(x), torch.sin(y))

    def f_bwd(res, cts):
        cos_x, sin_y = res
        ct_a, ct_b = cts
        return 2.0 * cos_x * ct_a + 1.5 * ct_b, -0.5 * sin_y * ct_b

    f.defvjp(f_fwd, f_bwd)
    x, y = T(0.1), T(-1.3)
    tree_allclose(
        fu.grad(lambda x, y: f(x, y)[0], argnums=(0, 1))(x, y), (2.0 * torch.cos(x), T(0.0))
    )
    tree_allclose(
        fu.grad(lambda x, y: f(x, y)[1], argnums=(0, 1))(x, y), (T(1.5), -0.5 * torch.sin(y))
    )


def test_vjp_resolve_kwargs_error_message():
    """jax tests/custom_api_test.py::CustomVJPTest::test_resolve_kwargs_error_message"""

    @fu.custom_vjp
    def f(x, y, *, z=None):
        return torch.sin(x), x + torch.cos(y)

    def f_fwd(x, y):
        raise AssertionError("should not be executed")

    def f_bwd(res, cts):
        raise AssertionError("should not be executed")

    f.defvjp(f_fwd, f_bwd)
    with pytest.raises(TypeError, match="y"):
        f(T(0.5))


def test_vjp_resolve_kwargs_error_message_kwonly():
    """jax tests/custom_api_test.py::CustomVJPTest::test_resolve_kwargs_error_message (keyword-only)"""

    @fu.custom_vjp
    def f(x, y, *, z=None):
        return torch.sin(x), x + torch.cos(y)

    def f_fwd(x, y):
        raise AssertionError("should not be executed")

    def f_bwd(res, cts):
        raise AssertionError("should not be executed")

    f.defvjp(f_fwd, f_bwd)
    with pytest.raises(TypeError, match="z"):
        f(T(0.5), T(0.1), z=T(1.0))
