"""custom_vjp, custom_jvp, linear_transpose, hvp."""

from __future__ import annotations

import contextlib
import functools
import gc
import re
import weakref

import pytest
import torch
import torch.func

import functorch_utils as fu
from functorch_utils.testing import check_grads

from .helpers import tree_allclose

D = torch.float64


def make_sin_vjp(factor=1.0):
    @fu.custom_vjp
    def mysin(x):
        return x.sin()

    mysin.defvjp(lambda x: (x.sin(), x.cos()), lambda c, g: (factor * g * c,))
    return mysin


def make_softplus_jvp(factor=1.0):
    @fu.custom_jvp
    def softplus(x):
        return torch.nn.functional.softplus(x)

    @softplus.defjvp
    def rule(primals, tangents):
        (x,), (t,) = primals, tangents
        return softplus(x), factor * t * torch.sigmoid(x)

    return softplus


X = torch.tensor([0.3, -1.2, 2.0], dtype=D)


def test_custom_vjp_matches_autodiff_at_every_order_and_under_vmap():
    mysin = make_sin_vjp()
    for t in (fu.grad, lambda f: fu.grad(fu.grad(f))):
        tree_allclose(torch.func.vmap(t(mysin))(X), torch.func.vmap(t(torch.sin))(X))
    tree_allclose(fu.jacrev(mysin)(X), fu.jacrev(torch.sin)(X))
    tree_allclose(fu.hessian(lambda x: mysin(x).sum())(X), torch.diag(-X.sin()))
    # vmap of the function itself vs a loop
    tree_allclose(torch.func.vmap(mysin)(X), torch.stack([mysin(x) for x in X]))


def test_custom_vjp_passes_check_grads_and_wrong_rule_is_caught():
    check_grads(make_sin_vjp(), (X,), order=2, modes=("rev",))
    with pytest.raises(AssertionError):
        check_grads(make_sin_vjp(1.001), (X,), order=1, modes=("rev",))


def test_custom_vjp_is_used():
    @fu.custom_vjp
    def clip_gradient(x):
        return x

    clip_gradient.defvjp(lambda x: (x, None), lambda _, g: (g.clamp(-1.0, 1.0),))
    assert fu.grad(lambda x: 5.0 * clip_gradient(x))(torch.tensor(2.0)).item() == 1.0


def test_custom_vjp_pytrees_residuals_and_nondiff_argnums():
    def f(scale, p):
        return {"o": p["a"] * p["b"] * scale}

    cf = fu.custom_vjp(f, nondiff_argnums=(0,))
    cf.defvjp(
        lambda scale, p: (f(scale, p), ("any residual", p)),
        lambda scale, res, ct: (
            {"a": ct["o"] * res[1]["b"] * scale, "b": ct["o"] * res[1]["a"] * scale},
        ),
    )
    p = {"a": torch.tensor(2.0, dtype=D), "b": torch.tensor(3.0, dtype=D)}
    g = fu.grad(lambda p: cf(2.0, p)["o"])(p)
    tree_allclose(g, {"a": torch.tensor(6.0, dtype=D), "b": torch.tensor(4.0, dtype=D)})


def test_custom_vjp_errors():
    f = fu.custom_vjp(lambda x: x * 2)
    with pytest.raises(AttributeError, match=re.escape("no VJP rule is defined")):
        f(torch.ones(2))
    f.defvjp(lambda x: (x * 2, None), lambda r, g: ({"x": g},))
    with pytest.raises(
        ValueError, match=re.escape("the cotangents do not have the arguments' structure")
    ):
        fu.grad(lambda x: f(x).sum())(torch.ones(2))
    f.defvjp(lambda x: (x * 2, None), lambda r, g: (g, g))
    with pytest.raises(ValueError, match=re.escape("bwd returned the wrong number of cotangents")):
        fu.grad(lambda x: f(x).sum())(torch.ones(2))
    f.defvjp(lambda x: (x * 2, None), lambda r, g: (g[:1],))
    with pytest.raises(ValueError, match=re.escape("bwd_output[0] has the wrong shape")):
        fu.grad(lambda x: f(x).sum())(torch.ones(2))
    with pytest.raises(TypeError, match=re.escape("Define the rule with custom_jvp")):
        fu.jvp(make_sin_vjp(), (X,), (X,))


def test_custom_jvp_forward_and_reverse_use_the_rule():
    softplus = make_softplus_jvp()
    sig = torch.sigmoid(X)
    tree_allclose(fu.jvp(softplus, (X,), (torch.ones_like(X),))[1], sig)
    tree_allclose(fu.jacfwd(softplus)(X), torch.diag(sig))
    tree_allclose(fu.jacrev(softplus)(X), torch.diag(sig))
    tree_allclose(torch.func.vmap(fu.grad(softplus))(X), sig)
    tree_allclose(fu.hessian(lambda x: softplus(x).sum())(X), torch.diag(sig * (1 - sig)))
    # the rule, not autodiff: a planted factor shows in both modes
    wrong = make_softplus_jvp(2.0)
    tree_allclose(fu.grad(lambda x: wrong(x).sum())(X), 2 * sig)
    tree_allclose(fu.jvp(wrong, (X,), (torch.ones_like(X),))[1], 2 * sig)


def test_custom_jvp_check_grads_and_planted_error():
    check_grads(make_softplus_jvp(), (X,), order=1)
    check_grads(make_softplus_jvp(), (X,), order=2, modes=("rev",))
    with pytest.raises(AssertionError):
        check_grads(make_softplus_jvp(1.001), (X,), order=1, modes=("fwd",))


def test_forward_over_forward_of_a_custom_rule_is_refused_not_wrong():
    softplus = make_softplus_jvp()
    with pytest.raises(TypeError, match=re.escape("forward-over-forward differentiation")):
        fu.jacfwd(fu.jacfwd(softplus))(X)
    # forward over reverse is fine
    tree_allclose(fu.jacfwd(fu.jacrev(softplus))(X), fu.jacrev(fu.jacrev(softplus))(X))


def test_custom_jvp_stable_where_autodiff_is_not():
    @fu.custom_jvp
    def log1pexp(x):
        return torch.log1p(torch.exp(x))

    log1pexp.defjvps(lambda t, ans, x: t * torch.sigmoid(x))
    assert fu.grad(log1pexp)(torch.tensor(100.0)).item() == 1.0
    assert torch.isnan(fu.grad(lambda x: torch.log1p(torch.exp(x)))(torch.tensor(100.0)))


def test_custom_jvp_defjvps_two_args():
    @fu.custom_jvp
    def mul(x, y):
        return x * y

    mul.defjvps(lambda g, ans, x, y: g * y, lambda g, ans, x, y: g * x)
    gx, gy = fu.grad(mul, argnums=(0, 1))(torch.tensor(2.0), torch.tensor(3.0))
    assert gx.item() == 3.0 and gy.item() == 2.0


def test_hvp_equals_hessian_times_v_and_vmaps():
    def f(x):
        return (x.sin() * x.sum()).sum()

    v = torch.randn(3, dtype=D)
    g, hv = fu.hvp(f, (X,), (v,))
    tree_allclose(g, fu.grad(f)(X))
    tree_allclose(hv, fu.hessian(f)(X) @ v)
    rows = torch.func.vmap(lambda v: fu.hvp(f, (X,), (v,))[1])(torch.eye(3, dtype=D))
    tree_allclose(rows, fu.hessian(f)(X))


def test_linear_transpose_is_the_matrix_transpose():
    A = torch.randn(4, 3, dtype=D)
    f_t = fu.linear_transpose(lambda x: A @ x, torch.zeros(3, dtype=D))
    ct = torch.randn(4, dtype=D)
    tree_allclose(f_t(ct), (A.T @ ct,))
    with pytest.raises(ValueError, match=re.escape("fun is not linear (fun(0) is not zero)")):
        fu.linear_transpose(lambda x: x + 1, torch.zeros(2))
    with pytest.raises(ValueError, match=re.escape("fun is not linear (fun(2x) != 2 fun(x))")):
        fu.linear_transpose(lambda x: x**2, torch.zeros(2))


@pytest.mark.filterwarnings("ignore:.*should not be instantiated:DeprecationWarning")
def test_custom_rules_under_compile():
    mysin = make_sin_vjp()
    softplus = make_softplus_jvp()
    for fn in (
        lambda x: fu.grad(lambda y: mysin(y).sum())(x),
        lambda x: fu.grad(lambda y: softplus(y).sum())(x),
    ):
        torch._dynamo.reset()
        compiled = torch.compile(fn, fullgraph=True, backend="eager")
        tree_allclose(compiled(X), fn(X))


# ---------------------------------------------------------------------------------------------
# JAX semantics (expected values are JAX's, from tests/custom_api_test.py, written analytically)

T = functools.partial(torch.tensor, dtype=D)


def sin_vjp_calling_itself():
    """JAX's canonical custom_vjp: fwd calls the decorated function; the rule is 2 cos(x)."""

    @fu.custom_vjp
    def f(x):
        return torch.sin(x)

    f.defvjp(lambda x: (f(x), torch.cos(x)), lambda cos_x, g: (2 * cos_x * g,))
    return f


def test_custom_vjp_plain_call_runs_the_function_and_fwd_may_call_it():
    calls = []

    @fu.custom_vjp
    def f(x):
        calls.append("fun")
        return torch.sin(x)

    def fwd(x):
        calls.append("fwd")
        return f(x), torch.cos(x)

    f.defvjp(fwd, lambda cos_x, g: (2 * cos_x * g,))
    x = T(3.0)
    tree_allclose(f(x), torch.sin(x))
    assert calls == ["fun"]
    calls.clear()
    value, g = fu.value_and_grad(f)(x)
    tree_allclose((value, g), (torch.sin(x), 2 * torch.cos(x)))
    assert calls == ["fwd", "fun"]
    f2 = sin_vjp_calling_itself()
    xs = torch.arange(3.0, dtype=D)
    tree_allclose(fu.vmap(fu.grad(f2))(xs), 2 * torch.cos(xs))
    tree_allclose(fu.grad(lambda x: fu.vmap(f2)(x).sum())(xs), 2 * torch.cos(xs))
    tree_allclose(fu.grad(fu.grad(f2))(x), -2 * torch.sin(x))


def test_custom_vjp_invariance_under_nested_value_and_grad():
    @fu.custom_vjp
    def f(x):
        return torch.cos(2 * x) / 2.0

    f.defvjp(lambda x: (f(x), x), lambda x, g: (g * 3,))

    def f2(x):
        return fu.value_and_grad(f)(x)[0]

    def f3(x):
        return fu.value_and_grad(f2)(x)[0]

    x = T(1.0)
    for h in (f, f2, f3):
        tree_allclose(h(x), f(x))
        tree_allclose(fu.grad(h)(x), T(3.0))


def test_custom_vjp_bwd_may_return_none_and_python_floats():
    @fu.custom_vjp
    def f(x, y):
        return x * torch.sin(y)

    f.defvjp(lambda x, y: (f(x, y), torch.cos(y)), lambda cos_y, g: (None, 2 * cos_y * g))
    x = T(3.0)
    tree_allclose(fu.grad(lambda x: f(x, x))(x), 2 * torch.cos(x))
    xs = torch.arange(3.0, dtype=D)
    tree_allclose(fu.grad(lambda x: fu.vmap(f)(x, x).sum())(xs), 2 * torch.cos(xs))

    @fu.custom_vjp
    def g(pair, y):
        return pair[0] * pair[1] * torch.sin(y)

    g.defvjp(lambda pair, y: (g(pair, y), torch.cos(y)), lambda cos_y, ct: (None, 2 * cos_y * ct))
    tree_allclose(fu.grad(lambda x: g((x, x), x))(x), 2 * torch.cos(x))
    # a None leaf inside a pytree cotangent
    g.defvjp(lambda pair, y: (g(pair, y), pair), lambda p, ct: ((None, ct * p[0]), None))
    tree_allclose(fu.grad(lambda a, b: g((a, b), T(0.5)), argnums=1)(T(2.0), x), T(2.0))

    @fu.custom_vjp
    def h(x):
        return x

    h.defvjp(lambda x: (x, None), lambda _, ct: (2.0,))
    tree_allclose(fu.grad(h)(T(2.0)), T(2.0))


def test_custom_vjp_jax_clip_gradient_with_an_argument_in_the_residuals():
    @fu.custom_vjp
    def clip(lo, hi, x):
        return x

    def clip_bwd(res, g):
        lo, hi = res
        return (None, None, torch.minimum(torch.maximum(g, lo), hi))

    clip.defvjp(lambda lo, hi, x: (x, (lo, hi)), clip_bwd)
    tree_allclose(fu.grad(lambda x: clip(T(-0.1), x + 0.1, x))(T(0.1)), T(0.2))


def test_custom_vjp_bwd_wrong_structure_is_a_clear_error():
    f = fu.custom_vjp(lambda x, y: x * y)
    x = T(2.0)
    f.defvjp(lambda x, y: (x * y, (x, y)), lambda r, g: (g * r[1],))
    with pytest.raises(ValueError, match=re.escape("bwd returned the wrong number of cotangents")):
        fu.grad(f)(x, x)
    f.defvjp(lambda x, y: (x * y, (x, y)), lambda r, g: g * r[1])
    with pytest.raises(ValueError, match=re.escape("expected a tuple of 2")):
        fu.grad(f)(x, x)
    f.defvjp(lambda x, y: (x * y, (x, y)), lambda r, g: ((g, g), g))
    with pytest.raises(ValueError, match=re.escape("do not have the arguments' structure")):
        fu.grad(f)(x, x)
    f.defvjp(lambda x, y: (x * y, (x, y)), lambda r, g: (g * torch.ones(2, dtype=D), g))
    with pytest.raises(ValueError, match=re.escape("bwd_output[0] has the wrong shape")):
        fu.grad(f)(x, x)


def test_custom_vjp_forward_over_reverse_differentiates_through_bwd():
    f = sin_vjp_calling_itself()
    x = T(3.0)
    value, tangent = fu.jvp(fu.grad(f), (x,), (T(1.0),))
    tree_allclose((value, tangent), (2 * torch.cos(x), -2 * torch.sin(x)))
    xs = T([1.0, 2.0])
    tree_allclose(fu.jacfwd(fu.jacrev(f))(xs), torch.diag_embed(torch.diag(-2 * torch.sin(xs))))
    tree_allclose(fu.hessian(lambda x: f(x).sum())(xs), torch.diag(-2 * torch.sin(xs)))
    refused = re.escape("a custom_vjp function has no forward-mode rule")
    with pytest.raises(TypeError, match=refused):
        fu.jvp(f, (x,), (T(1.0),))
    with pytest.raises(TypeError, match=refused):
        fu.grad(lambda x: fu.jvp(f, (x,), (T(1.0),))[1])(x)


def test_custom_vjp_bwd_closing_over_a_differentiated_value():
    def outer(y):
        @fu.custom_vjp
        def f(x):
            return 2.0 * torch.sin(x)

        f.defvjp(lambda x: (f(x), ()), lambda _, g: (2.0 * torch.cos(y) * g,))
        return fu.grad(f)(T(1.0))

    def outer_res(y):  # the same value through the residuals
        @fu.custom_vjp
        def f(x):
            return 2.0 * torch.sin(x)

        f.defvjp(lambda x: (f(x), y), lambda y, g: (2.0 * torch.cos(y) * g,))
        return fu.grad(f)(T(1.0))

    for h in (outer, outer_res):
        tree_allclose(h(T(2.0)), 2.0 * torch.cos(T(2.0)))
        ys = torch.arange(3.0, dtype=D)
        tree_allclose(fu.vmap(h)(ys), 2.0 * torch.cos(ys))
        tree_allclose(fu.grad(h)(T(4.0)), -2.0 * torch.sin(T(4.0)))
        tree_allclose(fu.jvp(h, (T(4.0),), (T(1.0),))[1], -2.0 * torch.sin(T(4.0)))


def test_custom_vjp_nestable_vjp_in_the_residuals():
    @fu.custom_vjp
    def g(x):
        return x**2

    def g_fwd(x):
        y, f_vjp = fu.vjp(lambda x: x**2, x)
        return y, f_vjp

    g.defvjp(g_fwd, lambda f_vjp, y_bar: f_vjp(y_bar))
    (ct,) = fu.vjp(g, T(1.0))[1](T(1.0))
    tree_allclose(ct, T(2.0))
    assert ct.grad_fn is None


def test_nondiff_argnums_out_of_range_or_differentiated_is_a_clear_error():
    for custom in (fu.custom_vjp, fu.custom_jvp):
        f = custom(lambda x: x, nondiff_argnums=(7,))
        if custom is fu.custom_vjp:
            f.defvjp(lambda x: (x, None), lambda r, g: (g,))
        else:
            f.defjvp(lambda p, t: (p[0], t[0]))
        name = custom.__name__
        with pytest.raises(
            TypeError,
            match=re.escape(
                f"{name}(<lambda>): nondiff_argnums=7 is out of range for a call with 1 positional "
                "argument; expected an index in [-1, 1), got nondiff_argnums=7. Pass the arguments "
                "positionally, not as keywords, or fix nondiff_argnums."
            ),
        ):
            f(T(1.0))
        with pytest.raises(TypeError, match=re.escape("nondiff_argnums must be an int or")):
            custom(lambda x: x, nondiff_argnums="0")
    app = fu.custom_vjp(lambda s, x: s * x, nondiff_argnums=(0,))
    app.defvjp(lambda s, x: (s * x, None), lambda s, r, g: (s * g,))
    tree_allclose(fu.grad(lambda x: app(2.0, x))(T(1.0)), T(2.0))
    with pytest.raises(TypeError, match=re.escape("argument 0 is in nondiff_argnums but is being")):
        fu.grad(lambda s: app(s, T(1.0)))(T(2.0))


# ---------------------------------------------------------------------------------------------
# custom_jvp


def test_custom_jvp_python_number_argument_has_a_zero_tangent():
    @fu.custom_jvp
    def f(c, x):
        return c * x

    f.defjvp(lambda p, t: (f(*p), p[0] * t[1] + t[0] * p[1]))
    x = T(1.0)
    tree_allclose(fu.grad(lambda x: f(2.0, x))(x), T(2.0))
    tree_allclose(fu.jvp(lambda x: f(2.0, x), (x,), (T(1.0),))[1], T(2.0))
    tree_allclose(fu.grad(lambda x: f(x, x))(x), T(2.0))


def test_custom_jvp_rule_may_call_the_function_on_the_tangents():
    @fu.custom_jvp
    def neg(x):
        return -x

    neg.defjvp(lambda p, t: (neg(p[0]), neg(t[0])))
    x = T([1.0, 2.0])
    tree_allclose(fu.grad(lambda x: neg(x).sum())(x), -torch.ones_like(x))
    tree_allclose(fu.jacrev(neg)(x), -torch.eye(2, dtype=D))
    tree_allclose(fu.jvp(neg, (x,), (T([1.0, 3.0]),))[1], T([-1.0, -3.0]))
    tree_allclose(fu.vmap(fu.grad(neg))(x), -torch.ones_like(x))
    tree_allclose(fu.hessian(lambda x: (neg(x) ** 2).sum())(x), 2 * torch.eye(2, dtype=D))


def test_custom_jvp_transpose_of_a_rule_that_ignores_an_input():
    @fu.custom_jvp
    def div(x, y):
        return x / y

    div.defjvp(lambda p, t: (div(*p), div(t[0], p[1])))
    (ct,) = fu.vjp(lambda x: div(x, T(2.0)), T(1.0))[1](T(1.0))
    tree_allclose(ct, T(0.5))


def test_custom_jvp_returning_its_input_works_on_every_call():
    ident = fu.custom_jvp(lambda x: x)
    ident.defjvp(lambda p, t: (p[0], t[0]))
    x = T([1.0, 2.0])
    for _ in range(2):
        tree_allclose(ident(x), x)
        tree_allclose(fu.grad(lambda x: ident(x).sum())(x), torch.ones_like(x))
        tree_allclose(fu.jvp(ident, (x,), (x,)), (x, x))
        tree_allclose(fu.vmap(ident)(x), x)
    y = x.clone().requires_grad_()
    out = ident(y)
    assert out is not y
    out.sum().backward()
    tree_allclose(y.grad, torch.ones_like(x))


@pytest.mark.parametrize("kind", ["custom_vjp", "custom_jvp"])
def test_no_reference_cycle_per_call(kind):
    f = make_sin_vjp() if kind == "custom_vjp" else make_softplus_jvp()
    gc.collect()
    gc.disable()
    try:
        for use in ("plain", "grad", "backward"):
            x = torch.randn(3, dtype=D, requires_grad=use == "backward")
            ref = weakref.ref(x)
            if use == "plain":
                f(x)
            elif use == "grad":
                fu.grad(lambda x: f(x).sum())(x)
            else:
                f(x).sum().backward()
            del x
            assert ref() is None, use
    finally:
        gc.enable()


def test_custom_jvp_tangent_of_the_wrong_shape_or_structure_is_a_clear_error():
    @fu.custom_jvp
    def f(x):
        return x**2

    f.defjvp(lambda p, t: (f(p[0]), t[0].reshape(1)))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "custom_jvp(f) rule: tangent_out has the wrong shape; expected shape () (the primal's),"
            " got a tensor of dtype torch.float64 and shape (1,)."
        ),
    ):
        fu.jvp(f, (T(2.0),), (T(1.0),))
    with pytest.raises(ValueError, match=re.escape("tangent_out has the wrong shape")):
        fu.grad(f)(T(2.0))
    f.defjvp(lambda p, t: (f(p[0]), [2 * p[0] * t[0], p[0]]))
    with pytest.raises(ValueError, match=re.escape("tangent_out does not have the output's")):
        fu.jvp(f, (T(2.0),), (T(1.0),))
    f.defjvp(lambda p, t: t[0])
    with pytest.raises(TypeError, match=re.escape("must return a pair (primal_out, tangent_out)")):
        fu.jvp(f, (T(2.0),), (T(1.0),))


def test_custom_jvp_closing_over_a_differentiated_value():
    # The rule gives the derivative with respect to the arguments; a closed-over value (or a
    # nondiff argument) is differentiated by autodiff of the function, on every engine.
    def f(x):
        @fu.custom_jvp
        def g(y):
            return x * y

        g.defjvp(lambda p, t: (g(p[0]), 3.0 * t[0]))
        return g(x)

    x = T(2.0)
    expected = T(3.0) + x  # the rule (3) plus d/dx of x * y at y = x, with y held
    tree_allclose(fu.grad(f)(x), expected)
    tree_allclose(fu.jvp(f, (x,), (T(1.0),))[1], expected)
    tree_allclose(fu.vmap(fu.grad(f))(T([2.0, 2.0])), T([5.0, 5.0]))
    tree_allclose(fu.grad(lambda x: f(x) * 1.0)(x), expected)

    def f_const(x):  # a constant argument: only the closed-over value carries a derivative
        @fu.custom_jvp
        def g(y):
            return x + y

        g.defjvp(lambda p, t: (g(p[0]), 2.0 * t[0]))
        return g(T(1.0))

    tree_allclose(fu.grad(f_const)(x), T(1.0))
    tree_allclose(fu.jvp(f_const, (x,), (T(1.0),))[1], T(1.0))
    tree_allclose(fu.vmap(fu.grad(f_const))(T([2.0, 3.0])), T([1.0, 1.0]))

    def h(z):  # a value vmap maps is not differentiated: fine (JAX's test_closure_with_vmap2)
        def per_x(x):
            @fu.custom_jvp
            def g(y):
                return x * y

            g.defjvp(lambda p, t: (x * p[0], x * t[0]))
            return g(z)

        return fu.vmap(per_x)(torch.arange(3.0, dtype=D))

    out, tangent = fu.jvp(h, (T(1.0),), (T(2.0),))
    tree_allclose((out, tangent), (torch.arange(3.0, dtype=D), 2 * torch.arange(3.0, dtype=D)))


def test_multi_output_custom_jvp_under_vmap_with_an_unmapped_input():
    @fu.custom_jvp
    def pair(a, b):
        return a * b, a * 1.0

    pair.defjvp(lambda p, t: (pair(*p), (t[0] * p[1] + p[0] * t[1], t[0] * 1.0)))
    y3 = T([1.0, 2.0, 3.0])
    for k, expected in ((0, y3.sum()), (1, T(3.0))):

        def loss(a, k=k):
            return fu.vmap(lambda a, b: pair(a, b)[k], in_axes=(None, 0))(a, y3).sum()

        tree_allclose(fu.grad(loss)(T(0.4)), expected)

    @fu.custom_vjp
    def pair_vjp(a, b):
        return a * b, a * 1.0

    pair_vjp.defvjp(
        lambda a, b: (pair_vjp(a, b), (a, b)),
        lambda r, ct: (ct[0] * r[1] + ct[1], ct[0] * r[0]),
    )
    got = fu.grad(lambda a: fu.vmap(lambda a, b: pair_vjp(a, b)[1], in_axes=(None, 0))(a, y3).sum())
    tree_allclose(got(T(0.4)), T(3.0))


# ---------------------------------------------------------------------------------------------
# Grad modes: the same derivatives under no_grad, inference_mode and with inputs that require grad

MODES = ["plain", "no_grad", "inference_mode", "requires_grad"]


def _in_mode(mode, fn, x):
    if mode == "requires_grad":
        return fn(x.clone().requires_grad_())
    ctx = {
        "plain": contextlib.nullcontext(),
        "no_grad": torch.no_grad(),
        "inference_mode": torch.inference_mode(),
    }[mode]
    with ctx:
        return fn(x)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("kind", ["custom_vjp", "custom_jvp"])
def test_custom_rules_give_the_same_derivatives_in_every_grad_mode(kind, mode):
    f = make_sin_vjp() if kind == "custom_vjp" else make_softplus_jvp()
    ref = torch.cos if kind == "custom_vjp" else torch.sigmoid
    x = T([0.3, -1.2, 2.0])
    transforms = {
        "grad": lambda x: fu.grad(lambda x: f(x).sum())(x),
        "vmap_grad": lambda x: fu.vmap(fu.grad(f))(x),
        "jacrev": lambda x: torch.diagonal(fu.jacrev(f)(x)),
    }
    if kind == "custom_jvp":
        transforms["jvp"] = lambda x: fu.jvp(f, (x,), (torch.ones_like(x),))[1]
    for name, t in transforms.items():
        got = _in_mode(mode, t, x)
        torch.testing.assert_close(got.detach(), ref(x), msg=f"{name} under {mode}")


def test_custom_vjp_output_closing_over_a_differentiated_value_is_refused():
    def f(x):
        @fu.custom_vjp
        def g(y):
            return x * y

        g.defvjp(lambda y: (g(y), None), lambda _, ct: (3.0 * ct,))
        return g(T(1.0))

    closure = re.escape(
        "custom_vjp(g): the function's output depends on a value it closes over that an enclosing"
        " transform is differentiating; the custom rule cannot give that derivative"
    )
    with pytest.raises(TypeError, match=closure):
        fu.grad(f)(T(3.0))
    with pytest.raises(TypeError, match=closure):
        fu.vmap(fu.grad(f))(T([3.0, 4.0]))
    tree_allclose(fu.vmap(f)(T([3.0, 4.0])), T([3.0, 4.0]))  # vmap alone differentiates nothing


def test_custom_jvp_rule_using_the_primal_output_at_second_order():
    @fu.custom_jvp
    def expit(x):
        return 1 / (1 + torch.exp(-x))

    @expit.defjvp
    def expit_jvp(primals, tangents):
        (x,), (t,) = primals, tangents
        ans = expit(x)
        return ans, t * ans * (1 - ans)

    x = T([0.3, -1.0])
    s = torch.sigmoid(x)
    expected = torch.diag(s * (1 - s) * (1 - 2 * s))
    tree_allclose(fu.hessian(lambda x: expit(x).sum())(x), expected)
    tree_allclose(fu.jacfwd(fu.jacrev(lambda x: expit(x).sum()))(x), expected)
    tree_allclose(fu.vmap(fu.grad(fu.grad(expit)))(x), torch.diagonal(expected))


def test_custom_jvp_integer_output_has_no_tangent():
    @fu.custom_jvp
    def f(x, n):
        return x * 2.0, n + 1

    f.defjvp(lambda p, t: (f(*p), (2.0 * t[0], torch.zeros_like(p[1]))))
    x, n = T(1.5), torch.tensor(3)
    out, tangent = fu.jvp(lambda x: f(x, n)[0], (x,), (T(1.0),))
    tree_allclose((out, tangent), (T(3.0), T(2.0)))
    tree_allclose(fu.grad(lambda x: f(x, n)[0])(x), T(2.0))
    assert f(x, n)[1].item() == 4


# -- primal outputs checked against the function's output type; keyword-only arguments ----------


_FWD_FIX = (
    "fwd must return (out, residuals) with out of the function's output structure, shapes and "
    "dtypes; fwd may call the function: return f(*args), residuals."
)


def test_custom_vjp_fwd_output_of_the_wrong_type_is_a_type_error():
    @fu.custom_vjp
    def f(x):
        return x * 1.0

    f.defvjp(lambda x: (torch.zeros(3, dtype=D), None), lambda _, g: (g.sum(),))
    x = T(1.0)
    expected = (
        "custom_vjp(f) fwd: out does not match the function's output; expected a tensor of dtype "
        "torch.float64 and shape () (the function's), got a tensor of dtype torch.float64 and "
        f"shape (3,). {_FWD_FIX}"
    )
    with pytest.raises(TypeError, match=re.escape(expected)):
        fu.vjp(f, x)
    # under vmap the shapes compared are per example, on both sides
    with pytest.raises(TypeError, match=re.escape(expected)):
        fu.vmap(fu.grad(f))(torch.ones(2, dtype=D))
    with pytest.raises(TypeError, match=re.escape(expected)):
        fu.grad(lambda xs: fu.vmap(f)(xs).sum())(torch.ones(2, dtype=D))

    f.defvjp(lambda x: (x.float(), None), lambda _, g: (g,))  # dtype
    with pytest.raises(TypeError, match=re.escape("got a tensor of dtype torch.float32")):
        fu.grad(f)(x)
    f.defvjp(lambda x: ((x, x), None), lambda _, g: (g,))  # structure
    with pytest.raises(TypeError, match=re.escape("fwd: out does not have the function's output")):
        fu.grad(f)(x)


def test_custom_vjp_fwd_output_check_keeps_the_value_and_runs_the_function_once_per_signature():
    calls = []

    @fu.custom_vjp
    def f(x, n):
        calls.append(tuple(x.shape))
        return x[:n] * 2.0

    f.defvjp(
        lambda x, n: (x[:n] * 2.0, x.shape),
        lambda shape, g: (torch.cat([g, g.new_zeros(shape[0] - g.shape[0])]) * 2.0, None),
    )
    x = torch.arange(4.0, dtype=D)
    # a value different from the function's is allowed (only the type is checked), as in JAX
    for _ in range(3):
        tree_allclose(fu.grad(lambda x: f(x, 2).sum())(x), T([2.0, 2.0, 0.0, 0.0]))
    assert calls == [(4,)]  # one run for the type, then the cache
    tree_allclose(fu.grad(lambda x: f(x, 3).sum())(x), T([2.0, 2.0, 2.0, 0.0]))  # n is in the key
    tree_allclose(
        fu.vmap(fu.grad(lambda x: f(x, 3).sum()))(x.expand(2, 4)), T([[2.0] * 3 + [0.0]] * 2)
    )
    assert calls == [(4,), (4,)]  # per-example shapes under vmap: the same signature
    # the cache is bounded
    for k in range(40):
        fu.grad(lambda x: f(x, 1).sum())(torch.ones(k + 1, dtype=D))
    assert len(f._out_types) == 32


def test_custom_vjp_fwd_output_check_needs_no_extra_run_when_fwd_calls_the_function():
    calls = []

    @fu.custom_vjp
    def f(x):
        calls.append("fun")
        return torch.sin(x)

    f.defvjp(lambda x: (f(x), torch.cos(x)), lambda c, g: (g * c,))
    tree_allclose(fu.grad(f)(T(0.5)), torch.cos(T(0.5)))
    assert calls == ["fun"]
    assert not f._out_types

    # fwd calling the function on other arguments says nothing of the call's output type
    @fu.custom_vjp
    def head(x, n):
        return x[:n]

    head.defvjp(lambda x, n: (head(x, n + 1)[:n], x.shape), lambda s, g: (g.new_ones(s), None))
    tree_allclose(
        fu.grad(lambda x: head(x, 2).sum())(torch.zeros(4, dtype=D)), torch.ones(4, dtype=D)
    )
    assert len(head._out_types) == 1


def test_custom_vjp_fwd_output_check_does_not_move_the_random_state():
    @fu.custom_vjp
    def f(x):
        return x * torch.rand(())

    f.defvjp(lambda x: (x * 0.5, None), lambda _, g: (g,))  # fwd draws nothing
    torch.manual_seed(0)
    fu.grad(f)(T(1.0))
    after = torch.rand(())
    torch.manual_seed(0)
    assert torch.equal(torch.rand(()), after)  # the run of f for its output type drew nothing


def test_custom_jvp_rule_primal_output_of_the_wrong_type_is_a_type_error():
    @fu.custom_jvp
    def g(x):
        return x * 1.0

    g.defjvp(lambda p, t: (torch.zeros(3, dtype=D), t[0]))
    x = T(1.0)
    fix = (
        "The rule's primal output must have the function's output structure, shapes and dtypes "
        "(it may call the function: return f(*primals), tangent_out)."
    )
    expected = (
        "custom_jvp(g) rule: primal_out does not match the function's output; expected a tensor "
        "of dtype torch.float64 and shape () (the function's), got a tensor of dtype "
        f"torch.float64 and shape (3,). {fix}"
    )
    for run in (
        lambda: fu.jvp(g, (x,), (x,)),
        lambda: fu.grad(g)(x),
        lambda: fu.vmap(fu.grad(g))(torch.ones(2, dtype=D)),
    ):
        with pytest.raises(TypeError, match=re.escape(expected)):
            run()
    g.defjvp(lambda p, t: (p[0].float(), t[0]))
    with pytest.raises(TypeError, match=re.escape("got a tensor of dtype torch.float32")):
        fu.jvp(g, (x,), (x,))
    g.defjvp(lambda p, t: ((p[0], p[0]), t[0]))
    with pytest.raises(TypeError, match=re.escape("primal_out does not have the function's")):
        fu.jvp(g, (x,), (x,))
    g.defjvp(lambda p, t: (1.0, 2.0 * t[0]))  # a Python number stands for a 0-d output
    assert fu.jvp(g, (x,), (x,)) == (x, 2.0 * x)


@pytest.mark.parametrize("kind", ["jvp", "vjp"])
def test_keyword_only_argument_names_it_and_the_fix(kind):
    def fun(x, y, *, z=None):
        return x + y

    if kind == "jvp":
        h = fu.custom_jvp(fun)
        h.defjvp(lambda p, t: (h(*p), t[0] + t[1]))
    else:
        h = fu.custom_vjp(fun)
        h.defvjp(lambda x, y: (x + y, None), lambda _, g: (g, g))
    x = T(1.0)
    expected = (
        f"custom_{kind}(fun): z cannot be passed to a custom rule: the rules receive positional "
        "arguments only, and a keyword-only parameter has no position; expected arguments that "
        "can be given by position, got keyword-only argument z. Make the parameter positional "
        "(drop the * before it), or close over the value (nondiff_argnums takes a positional "
        "argument that is not differentiated)."
    )
    with pytest.raises(TypeError, match=re.escape(expected)):
        h(x, x, z=x)
    with pytest.raises(TypeError, match=re.escape(expected)):
        fu.grad(lambda x: h(x, x, z=x))(x)
    # keywords that have a position are still resolved, and a default keyword-only one is fine
    assert h(x, y=x) == 2.0 and fu.grad(lambda x: h(x, y=x))(x) == 2.0


def test_stop_gradient_of_a_callable_leaf_names_it():
    expected = (
        "stop_gradient(tree): tree['f'][1] is a callable, not data; expected tensors and plain "
        "data (numbers, strings, None) at the leaves, got builtin_function_or_method <built-in "
        "function abs>. Call stop_gradient on values (a function's output), not on a function."
    )
    with pytest.raises(TypeError, match=re.escape(expected)):
        fu.stop_gradient({"f": [T(1.0), abs]})
    with pytest.raises(TypeError, match=re.escape("stop_gradient(tree): tree is a callable")):
        fu.stop_gradient(lambda x: x)
    assert fu.stop_gradient((1, "a", None, 2.5)) == (1, "a", None, 2.5)


def test_nondiff_argnames_name_positions_as_jax():
    # jax.custom_vjp/custom_jvp(fun, nondiff_argnums=(), nondiff_argnames=()): a named parameter
    # is non-differentiated as if its position were in nondiff_argnums
    def scale(x, n, y):
        return n * x * y

    vjp_f = fu.custom_vjp(scale, nondiff_argnames=("n",))
    vjp_f.defvjp(lambda x, n, y: (scale(x, n, y), (x, y)), lambda n, r, g: (n * g * r[1], g * r[0]))
    assert vjp_f.nondiff_argnums == (1,)
    gx, gy = fu.grad(lambda x, y: vjp_f(x, 3.0, y), argnums=(0, 1))(T(2.0), T(5.0))
    tree_allclose((gx, gy), (T(15.0), T(2.0)))
    # given by keyword at the call, as JAX resolves it to its position
    tree_allclose(fu.grad(lambda x: vjp_f(x, n=3.0, y=T(5.0)))(T(2.0)), T(15.0))

    jvp_f = fu.custom_jvp(scale, nondiff_argnames="n")
    jvp_f.defjvp(lambda n, p, t: (scale(p[0], n, p[1]), n * (t[0] * p[1] + p[0] * t[1])))
    out, tangent = fu.jvp(lambda x, y: jvp_f(x, 3.0, y), (T(2.0), T(5.0)), (T(1.0), T(0.0)))
    tree_allclose((out, tangent), (T(30.0), T(15.0)))
    # names and positions together, each position once
    both = fu.custom_vjp(scale, nondiff_argnums=(1,), nondiff_argnames=("n",))
    assert both.nondiff_argnums == (1,)


def test_nondiff_argnames_errors_name_the_argument():
    def f(x, n, *, mode="a"):
        return x

    for custom in (fu.custom_vjp, fu.custom_jvp):
        name = custom.__name__
        with pytest.raises(
            ValueError,
            match=re.escape(
                f"{name}(f, nondiff_argnames=('m',)): nondiff_argnames names ['m'], which are not "
                "positional parameters of the function; expected names among its positional "
                "parameters ['x', 'n'], got nondiff_argnames=('m',)."
            ),
        ):
            custom(f, nondiff_argnames=("m",))
        with pytest.raises(ValueError, match=r"names \['mode'\], which are not positional"):
            custom(f, nondiff_argnames="mode")  # keyword-only: the rules take positions
        with pytest.raises(TypeError, match="nondiff_argnames must be a string or a sequence"):
            custom(f, nondiff_argnames=(1,))


# ---------------------------------------------------------------------------------------------
# custom_gradient


def test_custom_gradient_uses_its_rule_everywhere_reverse_mode_runs():
    @fu.custom_gradient
    def f(x):
        return x**2, lambda g: (g * x,)  # deliberately not 2x: the rule must be used

    x = T(3.0)
    tree_allclose(f(x), T(9.0))
    tree_allclose(fu.grad(f)(x), T(3.0))
    tree_allclose(fu.grad(fu.grad(f))(x), T(1.0))  # the rule is differentiated, as JAX
    tree_allclose(fu.vmap(fu.grad(f))(torch.tensor([1.0, 2.0])), torch.tensor([1.0, 2.0]))
    tree_allclose(fu.jacrev(f)(torch.tensor([1.0, 2.0])), torch.diag(torch.tensor([1.0, 2.0])))
    tree_allclose(fu.jit(fu.grad(f), backend="eager")(x), T(3.0))
    xr = x.clone().requires_grad_()
    f(xr).backward()
    tree_allclose(xr.grad, T(3.0))

    @fu.custom_gradient
    def h(x, y):
        return x * y, lambda g: (g * y, g * x)

    tree_allclose(fu.grad(h, argnums=(0, 1))(T(3.0), T(4.0)), (T(4.0), T(3.0)))


def test_custom_gradient_errors():
    with pytest.raises(TypeError, match=re.escape("custom_gradient(<lambda>): the function must")):
        fu.grad(fu.custom_gradient(lambda x: x * 2))(T(1.0))
    with pytest.raises(TypeError, match="no forward-mode rule"):
        fu.jvp(fu.custom_gradient(lambda x: (x, lambda g: (g,))), (T(1.0),), (T(1.0),))
    with pytest.raises(TypeError, match=r"custom_gradient"):
        fu.custom_gradient(3)
