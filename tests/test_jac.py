"""jacrev, jacfwd, jacobian, hessian: structures, values, chunking, complex, errors."""

from __future__ import annotations

import re

import pytest
import torch
import torch.func

import functorch_utils as fu

from .helpers import LegacySquare, Point, tree_allclose

D = torch.float64


def f_tree(p):
    return {"y": p["a"].sin() * p["b"].sum(), "z": (p["a"] ** 2).sum()}


@pytest.fixture
def p():
    return {"a": torch.randn(3, dtype=D), "b": torch.randn(2, dtype=D)}


@pytest.mark.parametrize("jac", [fu.jacrev, fu.jacfwd, fu.jacobian])
def test_structure_out_tree_of_in_trees(jac, p):
    j = jac(f_tree)(p)
    assert set(j) == {"y", "z"} and set(j["y"]) == {"a", "b"}
    assert j["y"]["a"].shape == (3, 3) and j["y"]["b"].shape == (3, 2)
    assert j["z"]["a"].shape == (3,) and j["z"]["b"].shape == (2,)
    ref = torch.func.jacrev(f_tree)(p)
    tree_allclose(j, ref)


@pytest.mark.parametrize("jac", [fu.jacrev, fu.jacfwd])
def test_argnums_tuple_gives_tuple_leaves(jac):
    x, y = torch.randn(3, dtype=D), torch.randn(3, dtype=D)
    j = jac(lambda x, y: Point(x * y, (x + y).sum()), argnums=(1, 0))(x, y)
    assert isinstance(j, Point) and isinstance(j.x, tuple)
    tree_allclose(j.x[0], torch.diag(x))
    tree_allclose(j.x[1], torch.diag(y))
    tree_allclose(j.y[0], torch.ones(3, dtype=D))


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 100])
def test_chunk_size(chunk_size, p):
    ref = torch.func.jacrev(f_tree)(p)
    tree_allclose(fu.jacrev(f_tree, chunk_size=chunk_size)(p), ref)
    tree_allclose(fu.jacfwd(f_tree, chunk_size=chunk_size)(p), ref)
    # also under the torch.func engine
    batched = torch.func.vmap(fu.jacrev(f_tree, chunk_size=chunk_size))(
        {"a": p["a"][None], "b": p["b"][None]}
    )
    tree_allclose(batched["y"]["a"][0], ref["y"]["a"])


def test_has_aux(p):
    for jac in (fu.jacrev, fu.jacfwd, fu.hessian):
        _j, aux = jac(lambda p: ((p["a"] ** 3).sum(), {"n": 3, "t": p["b"]}), has_aux=True)(p)
        assert aux["n"] == 3 and torch.equal(aux["t"], p["b"])


def test_hessian_values_and_structure(p):
    def f(p):
        return (p["a"].sin() * p["b"].sum()).sum() + (p["a"] ** 3).sum()

    h = fu.hessian(f)(p)
    ref = torch.func.hessian(f)(p)  # JAX's jacfwd(jacrev(f))
    tree_allclose(h, ref)
    assert h["a"]["b"].shape == (3, 2)
    # symmetric
    tree_allclose(h["a"]["b"], h["b"]["a"].T)


def test_hessian_argnums_and_vmap():
    def f(x, y):
        return (x**2 * y).sum()

    x, y = torch.randn(3, dtype=D), torch.randn(3, dtype=D)
    h = fu.hessian(f, argnums=(0, 1))(x, y)
    tree_allclose(h, torch.func.hessian(f, argnums=(0, 1))(x, y))
    hb = torch.func.vmap(fu.hessian(lambda x: (x**3).sum()))(torch.randn(4, 3, dtype=D))
    assert hb.shape == (4, 3, 3)


def test_jacrev_equals_jacfwd_on_mixed_tree():
    x = {"u": torch.randn(2, 2, dtype=D), "v": (torch.randn(3, dtype=D), None)}

    def f(t):
        return [t["u"] @ t["u"], t["v"][0].exp().sum() * t["u"]]

    tree_allclose(fu.jacrev(f)(x), fu.jacfwd(f)(x))


def test_complex():
    z = torch.tensor([1 + 2j, 3 - 1j], dtype=torch.complex128)
    # holomorphic: J = f'(z), both modes (JAX)
    jr = fu.jacrev(lambda z: z**2, holomorphic=True)(z)
    jf = fu.jacfwd(lambda z: z**2, holomorphic=True)(z)
    tree_allclose(jr, torch.diag(2 * z))
    tree_allclose(jf, torch.diag(2 * z))
    tree_allclose(fu.hessian(lambda z: (z**3).sum(), holomorphic=True)(z), torch.diag(6 * z))
    # the same under the torch.func engine (which refuses complex inputs in its own jacrev)
    batched = torch.func.vmap(fu.jacrev(lambda z: z**2, holomorphic=True, chunk_size=1))(z[:, None])
    tree_allclose(batched[:, 0, 0], 2 * z)
    tree_allclose(
        torch.func.vmap(fu.jacrev(lambda z: (z.abs() ** 2).sum()))(z[:, None])[:, 0], 2 * z.conj()
    )
    # real-valued function of complex input: jacrev gives JAX's conjugate gradient
    j = fu.jacrev(lambda z: (z.abs() ** 2).sum())(z)
    tree_allclose(j, 2 * z.conj())


def test_complex_errors():
    z = torch.tensor([1 + 2j])
    with pytest.raises(TypeError, match=re.escape("jacrev requires real-valued outputs")):
        fu.jacrev(lambda z: z**2)(z)
    with pytest.raises(TypeError, match=re.escape("forward-mode Jacobians are defined for real")):
        fu.jacfwd(lambda z: z.abs())(z)
    with pytest.raises(TypeError, match=re.escape("holomorphic=True requires complex inputs")):
        fu.jacfwd(lambda z: z, holomorphic=True)(torch.ones(1))


def test_allow_int_jacrev():
    j = fu.jacrev(lambda t: t[0] * t[1], allow_int=True)((torch.ones(2), torch.tensor(3)))
    assert j[1] is None and torch.equal(j[0], 3 * torch.eye(2))


def test_errors_pinned():
    with pytest.raises(ValueError, match=re.escape("chunk_size must be a positive int or None")):
        fu.jacrev(torch.sin, chunk_size=0)
    with pytest.raises(TypeError, match=re.escape("jacrev(fun): fun is not callable")):
        fu.jacrev(None)

    def f(x):
        return x.long()

    with pytest.raises(TypeError, match=re.escape("jacrev(f): an output has an integer")):
        fu.jacrev(f)(torch.ones(2))
    with pytest.raises(TypeError, match=re.escape("output out['s'] is not a tensor")):
        fu.jacrev(lambda x: {"s": "text"})(torch.ones(2))


def test_outputs_independent_of_input_are_zero():
    j = fu.jacrev(lambda x, y: (x * 2, y.sum()), argnums=(0, 1))(torch.ones(2), torch.ones(3))
    assert torch.equal(j[0][1], torch.zeros(2, 3)) and torch.equal(j[1][0], torch.zeros(2))


def test_top_level_jacrev_legacy_function():
    x = torch.tensor([1.0, 2.0])
    assert torch.equal(fu.jacrev(LegacySquare.apply)(x), torch.diag(2 * x))


def test_outer_autograd_through_jacobian():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    j = fu.jacrev(lambda x: x**3)(x)
    j.sum().backward()
    torch.testing.assert_close(x.grad, 6 * x.detach())


def test_hessian_inside_a_named_vmap_with_a_collective_is_jaxs_jacfwd_of_jacrev():
    # With psum the per-member matrix is not symmetric; JAX's hessian is jacfwd(jacrev(f)).
    def f(x):
        s = fu.psum(x, "i")
        return torch.sin(x[0]) * s[1] + x[1] ** 2 * s[0]

    xs = torch.tensor([[1.0, 2.0], [3.0, 4.0], [0.5, -1.0]], dtype=torch.float64)
    got = fu.vmap(fu.hessian(f), axis_name="i")(xs)
    want = fu.vmap(fu.jacfwd(fu.jacrev(f)), axis_name="i")(xs)
    torch.testing.assert_close(got, want)
    # values from jax.vmap(jax.hessian(f), axis_name="i") on the same inputs (float64)
    torch.testing.assert_close(
        got[0], torch.tensor([[-4.20735492, 11.62090692], [12.42789237, 9.0]], dtype=torch.float64)
    )


def test_jacfwd_aux_batched_by_an_outer_vmap():
    xs = torch.tensor([[0.5, 1.0], [2.0, -1.0]])
    jac, aux = fu.vmap(fu.jacfwd(lambda x: ((x**3).sum(), x.sin()), has_aux=True))(xs)
    torch.testing.assert_close(jac, 3 * xs**2)
    torch.testing.assert_close(aux, xs.sin())


def test_hessian_with_aux_inside_a_named_vmap():
    xs = torch.tensor([[0.5, 1.0], [2.0, -1.0]], dtype=torch.float64)
    h, aux = fu.vmap(fu.hessian(lambda x: ((x**3).sum(), x.cos()), has_aux=True), axis_name="i")(xs)
    torch.testing.assert_close(h, torch.diag_embed(6 * xs))
    torch.testing.assert_close(aux, xs.cos())
