"""custom_vjp, custom_jvp, linear_transpose, hvp."""

from __future__ import annotations

import re

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
    with pytest.raises(ValueError, match=re.escape("does not have the argument's structure")):
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
