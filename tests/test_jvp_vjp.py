"""jvp, vjp, linearize: values, structures, reuse, errors."""

from __future__ import annotations

import re

import pytest
import torch
import torch.func

import functorch_utils as fu

from .helpers import Params, tree_allclose

D = torch.float64


def f(p, x):
    return {"y": p.w * x.sin(), "s": (p.b * x).sum()}


@pytest.fixture
def args():
    return Params(torch.randn(3, dtype=D), torch.randn(3, dtype=D)), torch.randn(3, dtype=D)


def test_vjp_values_structure_and_reuse(args):
    out, vjp_fn = fu.vjp(f, *args)
    ref_out, ref_vjp = torch.func.vjp(
        lambda w, b, x: f(Params(w, b), x), args[0].w, args[0].b, args[1]
    )
    tree_allclose(out, ref_out)
    for _ in range(2):  # reusable
        ct = {"y": torch.randn(3, dtype=D), "s": torch.tensor(0.7, dtype=D)}
        gp, gx = vjp_fn(ct)
        rw, rb, rx = ref_vjp(ct)
        assert isinstance(gp, Params)
        tree_allclose((gp.w, gp.b, gx), (rw, rb, rx))


def test_vjp_has_aux_and_int_primals():
    _out, vjp_fn, aux = fu.vjp(lambda x, n: (x * n, "aux"), torch.ones(2), 3, has_aux=True)
    assert aux == "aux"
    gx, gn = vjp_fn(torch.ones(2))
    assert gn is None and torch.equal(gx, torch.full((2,), 3.0))


def test_vjp_cotangent_errors_pinned(args):
    _, vjp_fn = fu.vjp(f, *args)

    def ct(**kw):
        return {"y": torch.ones(3, dtype=D), "s": torch.tensor(1.0, dtype=D), **kw}

    with pytest.raises(
        ValueError,
        match=re.escape(
            "vjp(f) -> vjp_fn(ct): cotangent['y'] has the wrong shape; expected shape (3,), got "
            "shape (2,). Pass a cotangent shaped like the function's output."
        ),
    ):
        vjp_fn(ct(y=torch.ones(2, dtype=D)))
    with pytest.raises(ValueError, match=re.escape("cotangent['s'] has the wrong dtype")):
        vjp_fn(ct(s=torch.tensor(1.0)))
    with pytest.raises(TypeError, match=re.escape("has the wrong dtype")):  # also a TypeError
        vjp_fn(ct(s=torch.tensor(1.0)))
    with pytest.raises(ValueError, match=re.escape("missing key(s)")):
        vjp_fn({"y": torch.ones(3, dtype=D)})


def test_vjp_complex_convention():
    z = torch.tensor([1 + 2j], dtype=torch.complex128)
    # JAX: vjp of z**2 at z with ct 1 is 2z (transpose, no conjugation)
    _, vjp_fn = fu.vjp(lambda z: z**2, z)
    tree_allclose(vjp_fn(torch.ones_like(z))[0], 2 * z)
    _, vjp_fn = torch.func.vmap(lambda z: fu.vjp(lambda z: z**2, z)[0], in_dims=0), None
    out = torch.func.vmap(lambda z: fu.vjp(lambda z: z**2, z)[1](torch.ones_like(z))[0])(z)
    tree_allclose(out, 2 * z)


def test_jvp_values_and_pytrees(args):
    tangents = (Params(torch.ones(3, dtype=D), torch.zeros(3, dtype=D)), torch.ones(3, dtype=D))
    out, tout = fu.jvp(f, args, tangents)
    p, x = args
    tree_allclose(tout["y"], x.sin() + p.w * x.cos())
    tree_allclose(tout["s"], p.b.sum())
    assert fu.jvp(f, list(args), list(tangents))[0].keys() == out.keys()


def test_jvp_has_aux():
    _out, tout, aux = fu.jvp(
        lambda x: (x**2, {"k": 1}), (torch.tensor(3.0),), (torch.tensor(1.0),), has_aux=True
    )
    assert aux == {"k": 1} and tout.item() == 6.0


def test_jvp_python_float_primal():
    out, tout = fu.jvp(lambda x: x**3, (2.0,), (1.0,))
    assert out.item() == 8.0 and tout.item() == 12.0


def test_jvp_errors_pinned():
    x = torch.ones(3)
    with pytest.raises(
        TypeError, match=re.escape("jvp(sin): primals and tangents must be tuples or lists")
    ):
        fu.jvp(torch.sin, x, x)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "jvp(sin): tangents[0] has the wrong shape; expected shape (3,), got shape (2,)."
        ),
    ):
        fu.jvp(torch.sin, (x,), (torch.ones(2),))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "tangents[0] has the wrong dtype; expected dtype torch.float32, got dtype torch.float64"
        ),
    ):
        fu.jvp(torch.sin, (x,), (torch.ones(3, dtype=D),))
    with pytest.raises(ValueError, match=re.escape("does not have the structure")):
        fu.jvp(lambda t: t[0], ((x, x),), ((x,),))
    with pytest.raises(ValueError, match=re.escape("different lengths")):
        fu.jvp(torch.sin, (x,), (x, x))


def test_linearize():
    out, f_jvp, aux = fu.linearize(
        lambda x: (x.sin(), "a"), torch.tensor(0.5, dtype=D), has_aux=True
    )
    assert aux == "a"
    tree_allclose(out, torch.tensor(0.5, dtype=D).sin())
    tree_allclose(f_jvp(torch.tensor(2.0, dtype=D)), 2 * torch.tensor(0.5, dtype=D).cos())
    with pytest.raises(TypeError, match=re.escape("f_jvp takes one tangent per primal")):
        f_jvp()


def test_grad_equals_vjp_of_one(args):
    def scalar(p, x):
        return (p.w * x.sin()).sum() + (p.b**2).sum()

    g = fu.grad(scalar, argnums=(0, 1))(*args)
    _, vjp_fn = fu.vjp(scalar, *args)
    tree_allclose(g, vjp_fn(torch.tensor(1.0, dtype=D)), rtol=0, atol=0)


def test_vjp_inside_grad_and_jvp_inside_grad():
    x = torch.tensor([0.3, 0.4], dtype=D)
    # d/dx sum(vjp(sin)(x)(1)) = d/dx sum(cos x) = -sin x
    g = fu.grad(lambda x: fu.vjp(torch.sin, x)[1](torch.ones_like(x))[0].sum())(x)
    tree_allclose(g, -x.sin())
    g = fu.grad(lambda x: fu.jvp(torch.sin, (x,), (torch.ones_like(x),))[1].sum())(x)
    tree_allclose(g, -x.sin())


# --- issue-driven regressions: scalars, devices, argument counts, integers, layouts -----------


def test_vjp_accepts_a_python_scalar_cotangent():
    _, f_vjp = fu.vjp(lambda x: (x**2).sum(), torch.tensor([1.0, 2.0]))
    (g,) = f_vjp(1.0)
    torch.testing.assert_close(g, torch.tensor([2.0, 4.0]))


def test_vjp_fn_called_with_the_wrong_number_of_arguments():
    _, f_vjp = fu.vjp(lambda x, y: x * y, torch.ones(2), torch.ones(2))
    with pytest.raises(TypeError, match=re.escape("vjp_fn takes exactly one argument")):
        f_vjp(torch.ones(2), torch.ones(2))


def test_an_integer_tangent_tensor_for_a_float_primal_is_refused():
    with pytest.raises(ValueError, match="wrong dtype"):
        fu.jvp(torch.sin, (torch.ones(2),), (torch.ones(2, dtype=torch.int64),))


def test_a_cotangent_on_another_device_is_named():
    _, f_vjp = fu.vjp(torch.sin, torch.ones(2))
    meta = torch.ones(2, device="meta")
    with pytest.raises(ValueError, match=re.escape("is on another device; expected device cpu")):
        f_vjp(meta)


@pytest.mark.parametrize("api", ["jvp", "linearize", "jacfwd", "hessian"])
def test_a_function_returning_none_is_a_clear_error(api):
    def f(x):
        x * 2  # a missing return

    x = torch.ones(2)
    with pytest.raises(TypeError, match=r"returned None|must return|not a tensor"):
        if api == "jvp":
            fu.jvp(f, (x,), (x,))
        elif api == "linearize":
            fu.linearize(f, x)
        elif api == "jacfwd":
            fu.jacfwd(f)(x)
        else:
            fu.hessian(f)(x)


def test_jvp_and_linearize_with_a_huge_python_int_argument():
    f = lambda x, n: x * 2  # noqa: E731
    _, t = fu.jvp(f, (torch.ones(2), 2**100), (torch.ones(2), 0))
    torch.testing.assert_close(t, torch.full((2,), 2.0))
    _, f_jvp = fu.linearize(f, torch.ones(2), 2**100)
    torch.testing.assert_close(f_jvp(torch.ones(2), 0), torch.full((2,), 2.0))


def test_jacfwd_of_a_real_input_complex_output_function():
    x = torch.tensor([0.5, 1.5], dtype=torch.float64)
    jac = fu.jacfwd(lambda x: torch.exp(1j * x))(x)
    torch.testing.assert_close(jac, torch.diag(1j * torch.exp(1j * x)))


def test_forward_mode_through_an_expanded_input():
    x = torch.tensor(1.0).expand(3)
    _, t = fu.jvp(lambda x: x * 2, (x,), (torch.zeros(3),))
    torch.testing.assert_close(t, torch.zeros(3))
    torch.testing.assert_close(fu.jacfwd(lambda x: x * 2)(x), 2 * torch.eye(3))


def test_reverse_over_forward_never_returns_torchs_zero_tensor():
    # the tangent does not depend on the primal: torch returns an internal ZeroTensor
    g = fu.grad(lambda x: fu.jvp(lambda y: y * 3.0, (x,), (torch.ones(()),))[1])(torch.tensor(2.0))
    assert g.numpy() == 0.0
    _, t = fu.jvp(lambda x: torch.ones(2), (torch.ones(()),), (torch.ones(()),))
    assert t.numpy().tolist() == [0.0, 0.0]


def test_linear_transpose_with_integer_and_shape_dtype_primals():
    class Spec:
        def __init__(self, shape, dtype):
            self.shape, self.dtype = shape, dtype

    f_t = fu.linear_transpose(lambda x, n: 3.0 * x, torch.zeros(2), 5)
    g, none = f_t(torch.ones(2))
    torch.testing.assert_close(g, torch.full((2,), 3.0))
    assert none is None
    f_t = fu.linear_transpose(lambda x: x.sum(-1), Spec((2, 3), torch.float64))
    (g,) = f_t(torch.tensor([1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(g, torch.tensor([[1.0] * 3, [2.0] * 3], dtype=torch.float64))


def test_linear_transpose_under_inference_mode():
    with torch.inference_mode():
        (g,) = fu.linear_transpose(lambda v: 2.0 * v, torch.zeros(2))(torch.ones(2))
    torch.testing.assert_close(g, torch.full((2,), 2.0))


@pytest.mark.parametrize("api", ["vjp", "jvp", "linearize", "jacrev", "jacfwd", "hessian"])
def test_a_function_with_no_outputs_gives_empty_results(api):
    x = torch.ones(2)
    f = lambda v: ()  # noqa: E731
    if api == "vjp":
        out, f_vjp = fu.vjp(f, x)
        assert out == () and torch.equal(f_vjp(())[0], torch.zeros(2))
    elif api == "jvp":
        assert fu.jvp(f, (x,), (x,)) == ((), ())
    elif api == "linearize":
        out, f_jvp = fu.linearize(f, x)
        assert out == () and f_jvp(x) == ()
    else:
        assert getattr(fu, api)(f)(x) == ()


def test_a_vjp_pulled_under_no_grad_carries_no_graph():
    x = torch.tensor(3.0, requires_grad=True)
    _, f_vjp = fu.vjp(lambda v: v**2, x)
    with torch.no_grad():
        (g,) = f_vjp(torch.tensor(1.0))
    assert not g.requires_grad and g.item() == 6.0
    (g2,) = f_vjp(torch.tensor(1.0))
    assert g2.requires_grad  # outside no_grad it stays connected to outer autograd


def test_jacfwd_of_a_random_function_is_a_clear_error():
    with pytest.raises(TypeError, match=re.escape("jacfwd(bernoulli): the function draws random")):
        fu.jacfwd(torch.bernoulli)(torch.rand(3))
