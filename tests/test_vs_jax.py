"""Differential tests against JAX on the same programs (skipped when jax is not installed).

Install the optional extra ``pip install -e ".[jax]"`` to run them.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import functorch_utils as fu

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)


def to_np(tree):
    return fu.tree_util.tree_map(
        lambda x: x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x, tree
    )


def close(ours, theirs, rtol=1e-10, atol=1e-12):
    lo, so = fu.tree_util.tree_flatten(to_np(ours))
    lt = jax.tree_util.tree_leaves(theirs)
    assert len(lo) == len(lt), (so, jax.tree_util.tree_structure(theirs))
    for a, b in zip(lo, lt):
        b = np.asarray(b)
        assert a.shape == b.shape, (a.shape, b.shape)
        np.testing.assert_allclose(a, b, rtol=rtol, atol=atol)


# (name, torch function, jax function, args as numpy) — the same program in both
def _programs():
    rng = np.random.default_rng(0)
    x = rng.standard_normal(3)
    y = rng.standard_normal((2, 3))
    z = np.array([1 + 2j, -0.5 + 0.3j])
    return [
        (
            "tree",
            lambda p: (p["a"].sin() * p["b"][0].sum()).sum(),
            lambda p: (jnp.sin(p["a"]) * p["b"][0].sum()).sum(),
            ({"a": x, "b": (y, None)},),
        ),
        (
            "two_args",
            lambda a, b: ((b @ a) ** 2).sum() + (a.sin() * a).sum(),
            lambda a, b: ((b @ a) ** 2).sum() + (jnp.sin(a) * a).sum(),
            (x, y),
        ),
        ("abs2", lambda z: (z.abs() ** 2).sum(), lambda z: (jnp.abs(z) ** 2).sum(), (z,)),
    ]


def _torch_args(args):
    return fu.tree_util.tree_map(lambda a: torch.tensor(a), args)


@pytest.mark.parametrize("argnums", [0, -1, (0,), [0]])
@pytest.mark.parametrize("prog", _programs(), ids=lambda p: p[0])
def test_grad_value_and_grad(prog, argnums):
    _, tf, jf, args = prog
    close(fu.grad(tf, argnums=argnums)(*_torch_args(args)), jax.grad(jf, argnums=argnums)(*args))
    v, g = fu.value_and_grad(tf, argnums=argnums)(*_torch_args(args))
    jv, jg = jax.value_and_grad(jf, argnums=argnums)(*args)
    close((v, g), (jv, jg))


@pytest.mark.parametrize("prog", _programs()[:2], ids=lambda p: p[0])
def test_jacobians_and_hessian(prog):
    _, tf, jf, args = prog
    n = len(args)
    argnums = tuple(range(n))
    close(
        fu.jacrev(tf, argnums=argnums)(*_torch_args(args)), jax.jacrev(jf, argnums=argnums)(*args)
    )
    close(
        fu.jacfwd(tf, argnums=argnums)(*_torch_args(args)), jax.jacfwd(jf, argnums=argnums)(*args)
    )
    close(
        fu.hessian(tf, argnums=argnums)(*_torch_args(args)), jax.hessian(jf, argnums=argnums)(*args)
    )


def test_vector_output_jacobian_structure():
    def tf(p):
        return {"u": p["a"] * p["b"].sum(), "v": (p["a"] ** 2).sum()}

    def jf(p):
        return {"u": p["a"] * p["b"].sum(), "v": (p["a"] ** 2).sum()}

    p = {"a": np.arange(3.0), "b": np.ones((2, 2))}
    close(fu.jacrev(tf)(_torch_args(p)), jax.jacrev(jf)(p))
    close(fu.jacfwd(tf)(_torch_args(p)), jax.jacfwd(jf)(p))


def test_complex_conventions():
    z = np.array([1 + 2j, -0.5 + 0.3j])
    zt = torch.tensor(z)
    close(
        fu.grad(lambda z: (z**3).sum(), holomorphic=True)(zt),
        jax.grad(lambda z: (z**3).sum(), holomorphic=True)(z),
    )
    close(
        fu.jacrev(lambda z: z**2, holomorphic=True)(zt),
        jax.jacrev(lambda z: z**2, holomorphic=True)(z),
    )
    close(
        fu.jacfwd(lambda z: z**2, holomorphic=True)(zt),
        jax.jacfwd(lambda z: z**2, holomorphic=True)(z),
    )
    close(
        fu.hessian(lambda z: (z**3).sum(), holomorphic=True)(zt),
        jax.hessian(lambda z: (z**3).sum(), holomorphic=True)(z),
    )
    ct = np.array([0.3 - 1j, 2 + 0.5j])
    _, f_vjp = fu.vjp(lambda z: z * z.conj() + z**2, zt)
    _, j_vjp = jax.vjp(lambda z: z * jnp.conj(z) + z**2, z)
    close(f_vjp(torch.tensor(ct)), j_vjp(ct))
    t = np.array([1.0 + 0j, 1j])
    close(
        fu.jvp(lambda z: z * z.conj(), (zt,), (torch.tensor(t),)),
        jax.jvp(lambda z: z * jnp.conj(z), (z,), (t,)),
    )


def test_jvp_vjp_linearize_has_aux():
    x = np.array([0.3, -1.1])
    xt = torch.tensor(x)
    close(
        fu.jvp(
            lambda x: (x.sin(), {"a": x}),
            (xt,),
            (torch.ones(2, dtype=torch.float64),),
            has_aux=True,
        )[:2],
        jax.jvp(lambda x: (jnp.sin(x), {"a": x}), (x,), (np.ones(2),), has_aux=True)[:2],
    )
    out, f_jvp = fu.linearize(lambda x: x.exp(), xt)
    jout, jf_jvp = jax.linearize(jnp.exp, x)
    close((out, f_jvp(torch.ones(2, dtype=torch.float64))), (jout, jf_jvp(np.ones(2))))
    f_t = fu.linear_transpose(lambda x: 3.0 * x, xt)
    jf_t = jax.linear_transpose(lambda x: 3.0 * x, x)
    close(f_t(torch.ones(2, dtype=torch.float64)), jf_t(np.ones(2)))


def test_custom_rules_and_stop_gradient():
    @fu.custom_jvp
    def f(x):
        return x.sin()

    f.defjvps(lambda t, ans, x: 2.0 * t * x.cos())

    @jax.custom_jvp
    def jf(x):
        return jnp.sin(x)

    jf.defjvps(lambda t, ans, x: 2.0 * t * jnp.cos(x))
    x = np.array([0.4, 1.3])
    close(fu.grad(lambda x: f(x).sum())(torch.tensor(x)), jax.grad(lambda x: jf(x).sum())(x))
    close(fu.hessian(lambda x: f(x).sum())(torch.tensor(x)), jax.hessian(lambda x: jf(x).sum())(x))
    close(
        fu.grad(fu.grad(lambda x: fu.stop_gradient(x) * x**2))(
            torch.tensor(1.5, dtype=torch.float64)
        ),
        jax.grad(jax.grad(lambda x: jax.lax.stop_gradient(x) * x**2))(1.5),
    )


def test_vmap_collectives():
    x = np.arange(6.0).reshape(3, 2)
    xt = torch.tensor(x)
    close(
        fu.vmap(lambda r: r / fu.psum(r, "i"), axis_name="i")(xt),
        jax.vmap(lambda r: r / jax.lax.psum(r, "i"), axis_name="i")(x),
    )
    close(
        fu.grad(lambda x: fu.vmap(lambda r: (r - fu.pmean(r, "i")) ** 2, axis_name="i")(x).sum())(
            xt
        ),
        jax.grad(
            lambda x: jax.vmap(lambda r: (r - jax.lax.pmean(r, "i")) ** 2, axis_name="i")(x).sum()
        )(x),
    )
    close(
        fu.vmap(lambda a, b: a + b, in_axes=(1, None))(xt, torch.tensor(1.0, dtype=torch.float64)),
        jax.vmap(lambda a, b: a + b, in_axes=(1, None))(x, 1.0),
    )


@pytest.mark.parametrize("kind", ["vjp", "jvp"])
def test_custom_rules_with_nondiff_argnames(kind):
    # nondiff_argnames: the named parameter reaches the rule first, as a nondiff_argnums entry
    def make(lib, custom):
        def f(x, n, y):
            return lib.sin(x) * n * y

        g = custom(f, nondiff_argnames=("n",))
        if kind == "vjp":
            g.defvjp(
                lambda x, n, y: (f(x, n, y), (x, y)),
                lambda n, r, ct: (2.0 * n * lib.cos(r[0]) * r[1] * ct, lib.sin(r[0]) * n * ct),
            )
        else:
            g.defjvp(
                lambda n, p, t: (
                    f(p[0], n, p[1]),
                    n * (2.0 * lib.cos(p[0]) * p[1] * t[0] + lib.sin(p[0]) * t[1]),
                )
            )
        return g

    custom = {"vjp": (fu.custom_vjp, jax.custom_vjp), "jvp": (fu.custom_jvp, jax.custom_jvp)}[kind]
    ours, theirs = make(torch, custom[0]), make(jnp, custom[1])
    x, y = np.array(0.5), np.array(1.5)
    if kind == "vjp":
        got = fu.grad(lambda x, y: ours(x, 3.0, y), argnums=(0, 1))(*_torch_args((x, y)))
        want = jax.grad(lambda x, y: theirs(x, 3.0, y), argnums=(0, 1))(x, y)
    else:
        got = fu.jvp(
            lambda x, y: ours(x, 3.0, y),
            _torch_args((x, y)),
            _torch_args((np.array(1.0), np.array(0.5))),
        )
        want = jax.jvp(lambda x, y: theirs(x, 3.0, y), (x, y), (np.array(1.0), np.array(0.5)))
    close(got, want)


def test_custom_gradient():
    def make(lib, custom_gradient):
        @custom_gradient
        def f(x, y):
            s = lib.sin(x)
            return s * y, lambda g: (3.0 * g * y * lib.cos(x), g * s)

        return f

    ours, theirs = make(torch, fu.custom_gradient), make(jnp, jax.custom_gradient)
    x, y = np.array(0.7), np.array(1.3)
    close(
        fu.grad(ours, argnums=(0, 1))(*_torch_args((x, y))),
        jax.grad(theirs, argnums=(0, 1))(x, y),
    )
    close(fu.grad(fu.grad(ours))(*_torch_args((x, y))), jax.grad(jax.grad(theirs))(x, y))


def test_tree_short_names_and_is_leaf_takes_path():
    def raw(path):  # JAX's key objects as the plain keys functorch_utils uses
        return tuple(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k))) for k in path)

    t = {"a": [1, 2], "b": (3, {"c": 4}), "d": None}
    for is_leaf in (lambda p, x: len(p) == 1, lambda p, x: isinstance(x, list)):
        ours = fu.tree.leaves_with_path(t, is_leaf=is_leaf, is_leaf_takes_path=True)
        theirs = jax.tree.leaves_with_path(
            t, is_leaf=lambda p, x, is_leaf=is_leaf: is_leaf(raw(p), x), is_leaf_takes_path=True
        )
        assert ours == [(raw(p), x) for p, x in theirs]
    assert fu.tree.map(lambda x: x * 2, t) == jax.tree.map(lambda x: x * 2, t)
    assert fu.tree.leaves(t) == jax.tree.leaves(t)
