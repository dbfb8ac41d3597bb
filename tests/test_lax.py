"""``functorch_utils.lax``: JAX's control flow as eager loops.

Each primitive is checked against the plain Python loop it stands for, under every transform
(``grad``, ``value_and_grad``, ``jacrev``, ``jacfwd``, ``hessian``, ``jvp``, ``vjp``, ``vmap``), and,
when JAX is installed, against ``jax.lax`` on the same programs.
"""

from __future__ import annotations

import re
import types
from collections import namedtuple

import pytest
import torch

import functorch_utils as fu
from functorch_utils import lax
from tests.helpers import tree_allclose

# ---------------------------------------------------------------------------------------------
# The Python loops each primitive stands for (the reference, also under vmap: one example at a
# time).


def _ref_scan(f, init, xs=None, length=None, reverse=False, unroll=1):
    n = length if xs is None else fu.tree_util.tree_leaves(xs)[0].shape[0]
    carry, ys = init, []
    for i in reversed(range(n)) if reverse else range(n):
        carry, y = f(carry, None if xs is None else fu.tree_util.tree_map(lambda x, i=i: x[i], xs))
        ys.append(y)
    ys = ys[::-1] if reverse else ys
    return carry, fu.tree_util.tree_map(lambda *y: torch.stack(y), *ys)


def _ref_fori(lower, upper, body, val):
    for i in range(lower, upper):
        val = body(torch.tensor(i), val)
    return val


def _ref_while(cond_fun, body_fun, val):
    while cond_fun(val):
        val = body_fun(val)
    return val


def _ref_associative_scan(fn, elems, reverse=False, axis=0):
    leaves, spec = fu.tree_util.tree_flatten(elems)
    n = leaves[0].shape[axis]
    order = list(range(n))[::-1] if reverse else list(range(n))
    at = lambda i: fu.tree_util.tree_unflatten(spec, [x.select(axis, i) for x in leaves])  # noqa: E731
    acc, out = at(order[0]), {order[0]: at(order[0])}
    for i in order[1:]:
        acc = fn(acc, at(i))
        out[i] = acc
    return fu.tree_util.tree_map(lambda *v: torch.stack(v, axis), *[out[i] for i in range(n)])


REF = types.SimpleNamespace(
    scan=_ref_scan,
    fori_loop=_ref_fori,
    while_loop=_ref_while,
    cond=lambda p, t, f, *ops: t(*ops) if p else f(*ops),
    switch=lambda i, bs, *ops: bs[min(max(int(i), 0), len(bs) - 1)](*ops),
    map=lambda f, xs, batch_size=None: torch.stack([f(x) for x in xs]),
    associative_scan=_ref_associative_scan,
)

# ---------------------------------------------------------------------------------------------
# Programs written once for (lax, numpy-like module): ours, the reference, and JAX's.


def p_scan(lx, m, x):
    def body(c, xi):
        a = m.sin(c["a"] * xi) + c["b"]
        return {"a": a, "b": c["b"] * 0.9 + xi}, (a * c["b"], xi**2)

    c, (y1, y2) = lx.scan(body, {"a": x[0], "b": x[1]}, x)
    return m.stack([c["a"], c["b"], (y1 * m.cos(y2)).sum()])


def p_scan_reverse(lx, m, x):
    c, ys = lx.scan(lambda c, xi: (c * m.tanh(xi) + xi, c * xi), x[3], x[:3], reverse=True)
    return ys * c


def p_scan_length(lx, m, x):
    c, _ = lx.scan(lambda c, _: (m.sin(c) * 1.5 + x, None), x * 0.5, None, length=3)
    return c


def p_fori(lx, m, x):
    return lx.fori_loop(0, 3, lambda i, v: m.sin(v) * (i + 1) + m.flip(v, (0,)) * 0.5, x)


def p_while(lx, m, x):
    def body(c):
        return c[0] * 1.5 + m.sin(c[0]), c[1] + 1

    v, n = lx.while_loop(lambda c: (c[0] ** 2).sum() < 10.0, body, (x, 0))
    return v * n


def p_cond(lx, m, x):
    return lx.cond(x[0] > 0, lambda v: m.sqrt(v**2 + 1.0) * v, lambda v: m.sin(v) * x[1], x)


def p_switch(lx, m, x):
    branches = [lambda v: v * 2.0, lambda v: m.exp(v) - v, lambda v: m.cos(v) * v[0]]
    return lx.switch((x[:3] > 0).sum() * 2 - 1, branches, x)  # -1..5: clamped


def p_map(lx, m, x):
    return lx.map(lambda r: m.sin(r).sum() * r[0], x.reshape(2, 2))


def p_map_batched(lx, m, x):
    return lx.map(lambda r: m.sin(r) * r, x, batch_size=3)


def p_associative_scan(lx, m, x):
    # affine maps y -> a * y + b composed: associative, not commutative
    compose = lambda p, q: (p[0] * q[0], q[0] * p[1] + q[1])  # noqa: E731
    a, b = lx.associative_scan(compose, (m.tanh(x), x))
    r, s = lx.associative_scan(compose, (m.tanh(x), x), reverse=True)
    return a + b + r * s


PROGRAMS = {
    f.__name__[2:]: f
    for f in [
        p_scan,
        p_scan_reverse,
        p_scan_length,
        p_fori,
        p_while,
        p_cond,
        p_switch,
        p_map,
        p_map_batched,
        p_associative_scan,
    ]
}
TRANSFORMS = ["grad", "value_and_grad", "jacrev", "jacfwd", "hessian", "jvp", "vjp", "vmap"]
X = torch.tensor([0.7, -0.4, 0.3, -1.1], dtype=torch.float64)
# rows differ in every predicate above: cond's sign, switch's index (clamped at both ends), the
# while loop's trip count
BATCH = torch.tensor(
    [[0.7, -0.4, 0.3, -1.1], [-0.5, 0.6, -0.2, 0.9], [0.3, 0.8, 0.5, 0.4], [-0.3, -0.6, -0.2, 0.5]],
    dtype=torch.float64,
)
T = torch.tensor([0.3, -1.2, 0.5, 0.8], dtype=torch.float64)


def _apply(t, ns, f, x):
    """Transform ``t`` of ``f`` from namespace ``ns`` (functorch_utils or jax) at ``x``."""
    total = lambda x: f(x).sum()  # noqa: E731
    if t in ("grad", "value_and_grad", "jacrev", "jacfwd", "hessian"):
        g = getattr(ns, t)(total if t in ("grad", "value_and_grad", "hessian") else f)
        return g(x)
    if t == "jvp":
        return ns.jvp(
            f, (x,), (T[: x.shape[0]] if isinstance(x, torch.Tensor) else x * 0 + T.numpy(),)
        )
    if t == "vjp":
        out, vjp_fn = ns.vjp(f, x)
        return out, vjp_fn(out * 0 + 1.5)
    assert t == "vmap"
    return ns.vmap(f)(x)


@pytest.mark.parametrize("t", TRANSFORMS)
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_every_primitive_under_every_transform_equals_its_python_loop(name, t):
    prog = PROGRAMS[name]
    ours = lambda x: prog(lax, torch, x)  # noqa: E731
    ref = lambda x: prog(REF, torch, x)  # noqa: E731
    if t == "vmap":  # the reference cannot branch on a batched value: one example at a time
        tree_allclose(fu.vmap(ours)(BATCH), torch.stack([ref(row) for row in BATCH]))
        return
    tree_allclose(_apply(t, fu, ours, X), _apply(t, fu, ref, X))


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_transforms_nest_through_every_primitive(name):
    prog = PROGRAMS[name]
    ours = lambda x: prog(lax, torch, x).sum()  # noqa: E731
    ref = lambda x: prog(REF, torch, x).sum()  # noqa: E731
    tree_allclose(
        fu.vmap(fu.hessian(ours))(BATCH), torch.stack([fu.hessian(ref)(row) for row in BATCH])
    )
    tree_allclose(fu.jacfwd(fu.grad(ours))(X), fu.jacrev(fu.grad(ref))(X))


# ---------------------------------------------------------------------------------------------
# Against JAX


@pytest.fixture(scope="module")
def jx():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _to_torch(tree, jax):
    return jax.tree_util.tree_map(lambda a: torch.from_numpy(__import__("numpy").array(a)), tree)


# JAX refuses reverse mode through while_loop; its forward-mode equivalents give the values.
_FORWARD = {
    "grad": lambda jax, f: jax.jacfwd(lambda x: f(x).sum()),
    "value_and_grad": lambda jax, f: lambda x: (f(x).sum(), jax.jacfwd(lambda x: f(x).sum())(x)),
    "jacrev": lambda jax, f: jax.jacfwd(f),
    "hessian": lambda jax, f: jax.jacfwd(jax.jacfwd(lambda x: f(x).sum())),
    "vjp": lambda jax, f: lambda x: (f(x), jax.jacfwd(f)(x).T @ (f(x) * 0 + 1.5)),
}


@pytest.mark.parametrize("t", TRANSFORMS)
@pytest.mark.parametrize("name", list(PROGRAMS))
def test_every_primitive_under_every_transform_equals_jax(jx, name, t):
    jnp = jx.numpy
    prog = PROGRAMS[name]
    ours = lambda x: prog(lax, torch, x)  # noqa: E731
    theirs = lambda x: prog(jx.lax, jnp, x)  # noqa: E731
    x = BATCH if t == "vmap" else X
    got = _apply(t, fu, ours, x)
    if name == "while" and t in _FORWARD:
        want = _FORWARD[t](jx, theirs)(jnp.asarray(x.numpy()))
        if t == "vjp":
            got = (got[0], got[1][0])
    else:
        want = _apply(t, jx, theirs, jnp.asarray(x.numpy()))
    if t == "vjp" and name != "while":
        want = (want[0], tuple(want[1]))
    tree_allclose(got, _to_torch(want, jx))


def test_batched_select_gradients_are_finite_where_jaxs_are(jx):
    jnp = jx.numpy
    x = torch.tensor([-1.0, 0.0625, 4.0], dtype=torch.float64)
    ours = lambda x: lax.cond(x > 0, torch.sqrt, lambda v: 0 * v, x)  # noqa: E731
    theirs = lambda x: jx.lax.cond(x > 0, jnp.sqrt, lambda v: 0 * v, x)  # noqa: E731
    for tr in ("grad", "hessian_like"):
        if tr == "grad":
            got, want = fu.vmap(fu.grad(ours))(x), jx.vmap(jx.grad(theirs))(jnp.asarray(x.numpy()))
        else:
            got = fu.vmap(fu.grad(fu.grad(ours)))(x)
            want = jx.vmap(jx.grad(jx.grad(theirs)))(jnp.asarray(x.numpy()))
        tree_allclose(got, _to_torch(want, jx))
        assert torch.isfinite(got).all()


# ---------------------------------------------------------------------------------------------
# Batched predicates without JAX


def test_vmap_cond_with_a_singular_unselected_branch_has_finite_derivatives_of_every_order():
    f = lambda x: lax.cond(x > 0, torch.sqrt, lambda v: 0 * v, x)  # noqa: E731
    x = torch.tensor([-1.0, 0.0625], dtype=torch.float64)
    tree_allclose(fu.vmap(fu.grad(f))(x), torch.tensor([0.0, 2.0], dtype=torch.float64))
    tree_allclose(fu.vmap(fu.grad(fu.grad(f)))(x), torch.tensor([0.0, -16.0], dtype=torch.float64))
    tree_allclose(fu.vmap(fu.jacfwd(f))(x), torch.tensor([0.0, 2.0], dtype=torch.float64))
    _, tangents = fu.vmap(lambda x: fu.jvp(f, (x,), (torch.ones_like(x),)))(x)
    tree_allclose(tangents, torch.tensor([0.0, 2.0], dtype=torch.float64))


def test_vmap_switch_with_a_singular_unselected_branch_has_finite_gradients():
    branches = [torch.log, torch.sqrt, lambda v: v * 3]
    f = lambda i, x: lax.switch(i, branches, x)  # noqa: E731
    x = torch.tensor([-1.0, 4.0, -2.0], dtype=torch.float64)
    i = torch.tensor([2, 1, 7])
    got = fu.vmap(fu.grad(f, argnums=1))(i, x)
    tree_allclose(got, torch.tensor([3.0, 0.25, 3.0], dtype=torch.float64))


def test_vmap_while_loop_runs_until_no_member_continues_and_finished_members_keep_their_value():
    # sqrt(v - 1) is NaN for a finished member (v <= 1): the select drops it, gradients too
    body = lambda v: torch.sqrt(v - 1) + 0.5  # noqa: E731
    f = lambda x: lax.while_loop(lambda v: v > 1.5, body, x)  # noqa: E731
    x = torch.tensor([1.0, 5.0, 50.0], dtype=torch.float64)
    want = torch.stack([_ref_while(lambda v: v > 1.5, body, r) for r in x])
    tree_allclose(fu.vmap(f)(x), want)
    g = fu.vmap(fu.grad(f))(x)
    want_g = torch.stack([fu.grad(lambda r: _ref_while(lambda v: v > 1.5, body, r))(r) for r in x])
    tree_allclose(g, want_g)
    assert g[0] == 1.0 and torch.isfinite(g).all()


def test_vmap_fori_loop_with_batched_bounds_stops_each_member_at_its_own_bound():
    body = lambda i, v: v * 2 + i  # noqa: E731
    lower, upper = torch.tensor([0, 2, 1, 3]), torch.tensor([3, 2, 4, 1])
    x = torch.ones(4, dtype=torch.float64)
    got = fu.vmap(lambda lo, hi, v: lax.fori_loop(lo, hi, body, v))(lower, upper, x)
    want = torch.stack([_ref_fori(int(a), int(b), body, v) for a, b, v in zip(lower, upper, x)])
    tree_allclose(got, want)
    got = fu.vmap(lambda hi, v: lax.fori_loop(0, hi, body, v), in_axes=(0, None))(upper, x[0])
    tree_allclose(got, torch.stack([_ref_fori(0, int(b), body, x[0]) for b in upper]))


def test_vmap_with_an_unbatched_predicate_runs_one_branch():
    calls = []

    def branch(v):
        calls.append(1)
        return v + 1

    fu.vmap(lambda v: lax.cond(True, branch, lambda v: v * 0, v))(torch.ones(3))
    fu.vmap(lambda v, p: lax.cond(p, lambda v: v * 0, branch, v), in_axes=(0, None))(
        torch.ones(3), torch.tensor(False)
    )
    assert calls == [1, 1]


# ---------------------------------------------------------------------------------------------
# scan semantics


Pair = namedtuple("Pair", ["h", "n"])


def test_scan_pytree_carry_and_ys_equal_the_python_loop():
    xs = {"u": torch.randn(5, 3, dtype=torch.float64), "v": torch.arange(5)}

    def body(c, x):
        h = torch.tanh(c.h + x["u"] * x["v"])
        return Pair(h, c.n + 1), {"h": h, "k": [x["v"] * 2, None]}

    init = Pair(torch.zeros(3, dtype=torch.float64), 0)
    for reverse in (False, True):
        got = lax.scan(body, init, xs, reverse=reverse)
        want = _ref_scan(body, Pair(init.h, torch.tensor(0)), xs, reverse=reverse)
        tree_allclose(got, want)
        assert isinstance(got[0], Pair) and got[1]["k"][1] is None


def test_scan_python_numbers_in_the_carry_become_0d_tensors_and_ints_stay_integer():
    (i, f, b), ys = lax.scan(
        lambda c, _: ((c[0] + 1, c[1] * 2, c[2]), c[0]), (1, 1.5, True), length=2
    )
    assert (i.dtype, f.dtype, b.dtype) == (torch.int64, torch.get_default_dtype(), torch.bool)
    assert (i.item(), f.item(), b.item()) == (3, 6.0, True)
    assert ys.tolist() == [1, 2]
    # a body may return Python numbers where the carry has 0-d tensors of a kind that holds them
    c, _ = lax.scan(lambda c, _: (1.0, None), torch.tensor(0.0, dtype=torch.float64), length=2)
    assert c.dtype == torch.float64 and c.item() == 1.0


def test_scan_reverse_keeps_ys_in_input_order_and_none_ys():
    xs = torch.arange(4.0)
    c, ys = lax.scan(lambda c, x: (c * 10 + x, c), 0.0, xs, reverse=True)
    assert c.item() == 3210.0 and ys.tolist() == [321.0, 32.0, 3.0, 0.0]
    c, ys = lax.scan(lambda c, x: (c + x, None), 0.0, xs)
    assert c.item() == 6.0 and ys is None


def test_scan_of_length_zero_returns_init_and_empty_ys_of_the_right_type():
    c, ys = lax.scan(lambda c, x: (c + x.sum(), (x * 2, x.sum())), 1.0, torch.zeros(0, 3))
    assert c.item() == 1.0
    assert ys[0].shape == (0, 3) and ys[1].shape == (0,)


def test_scan_unroll_is_accepted_and_changes_nothing():
    xs = torch.arange(5.0)
    body = lambda c, x: (c + x, c)  # noqa: E731
    for unroll in (1, 2, 8, True):
        tree_allclose(lax.scan(body, 0.0, xs, unroll=unroll), lax.scan(body, 0.0, xs))


def test_scan_checkpointed_body_gives_the_same_gradient():
    w = torch.randn(4, 4, dtype=torch.float64) * 0.5
    xs = torch.randn(6, 4, dtype=torch.float64)
    body = lambda h, x: (torch.tanh(h @ w + x), None)  # noqa: E731

    def loss(w0, body):
        return lax.scan(body, w0, xs)[0].sum()

    h0 = torch.randn(4, dtype=torch.float64)
    tree_allclose(fu.grad(loss)(h0, fu.checkpoint(body)), fu.grad(loss)(h0, body))


# ---------------------------------------------------------------------------------------------
# Other primitives' semantics


def test_fori_loop_while_loop_cond_switch_map_values():
    assert lax.fori_loop(2, 5, lambda i, v: v + i, 0).item() == 9
    assert lax.fori_loop(5, 2, lambda i, v: v + i, 0).item() == 0
    assert lax.fori_loop(2, 5, lambda i, v: v + i, 0, unroll=2).item() == 9
    assert lax.fori_loop(torch.tensor(0), torch.tensor(3), lambda i, v: v * 2, 1.0).item() == 8.0
    assert lax.while_loop(lambda v: v[0] < 5, lambda v: (v[0] + 2, v[1] * 2), (0, 1.0)) == (
        torch.tensor(6),
        torch.tensor(8.0),
    )
    assert lax.cond(torch.tensor(True), lambda a, b: a + b, lambda a, b: a - b, 1, 2) == 3
    assert lax.cond(torch.tensor(0), lambda a: a, lambda a: -a, 5) == -5  # integer predicate
    branches = [lambda: "a", lambda: "b", lambda: "c"]
    assert [lax.switch(i, branches) for i in (-3, 0, 1, 2, 9)] == ["a", "a", "b", "c", "c"]
    assert lax.switch(torch.tensor(1), branches) == "b"
    xs = {"a": torch.arange(7.0), "b": torch.ones(7, 2)}
    f = lambda x: x["a"] * x["b"]  # noqa: E731
    want = torch.stack([f({"a": xs["a"][i], "b": xs["b"][i]}) for i in range(7)])
    for batch_size in (None, 1, 3, 7, 10):
        tree_allclose(lax.map(f, xs, batch_size=batch_size), want)
        empty = lax.map(lambda x: x * 2, torch.zeros(0, 3), batch_size=batch_size)
        assert empty.shape == (0, 3)


def test_while_loop_reverse_mode_through_a_data_dependent_trip_count():
    f = lambda x: lax.while_loop(lambda v: v < 100, lambda v: v * v, x)  # noqa: E731
    x = torch.tensor(1.5, dtype=torch.float64)  # 1.5 -> 2.25 -> 5.06 -> 25.6 -> 656.8: x**16
    tree_allclose(fu.grad(f)(x), 16 * x**15)


def test_reexports_are_the_librarys_collectives_and_stop_gradient():
    assert lax.psum is fu.psum and lax.pmean is fu.pmean and lax.pmax is fu.pmax
    assert lax.pmin is fu.pmin and lax.all_gather is fu.all_gather
    assert lax.axis_index is fu.axis_index and lax.stop_gradient is fu.stop_gradient
    x = torch.arange(3.0)
    tree_allclose(fu.vmap(lambda v: lax.psum(v, "i"), axis_name="i")(x), torch.full((3,), 3.0))


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("n", [1, 2, 3, 4, 5, 8, 13, 16, 33])
def test_associative_scan_equals_the_sequential_scan(n, axis, reverse):
    gen = torch.Generator().manual_seed(n)
    shape = [2, 3]
    shape.insert(axis % 3 if axis >= 0 else 2, n)
    a = torch.randn(shape, generator=gen, dtype=torch.float64)
    b = torch.randn(shape, generator=gen, dtype=torch.float64)
    compose = lambda p, q: (p[0] * q[0], q[0] * p[1] + q[1])  # noqa: E731
    got = lax.associative_scan(compose, (a, b), reverse=reverse, axis=axis)
    tree_allclose(got, _ref_associative_scan(compose, (a, b), reverse=reverse, axis=axis % 3))


def test_associative_scan_calls_fn_a_logarithmic_number_of_times():
    calls = []

    def add(a, b):
        calls.append(1)
        return a + b

    tree_allclose(lax.associative_scan(add, torch.ones(1024)), torch.arange(1.0, 1025.0))
    assert len(calls) <= 2 * 10


# ---------------------------------------------------------------------------------------------
# Errors


def test_scan_carry_type_change_is_a_type_error_naming_the_leaf():
    init = {"h": torch.zeros(3), "n": torch.tensor(0)}
    with pytest.raises(
        TypeError,
        match=re.escape(
            "scan(body, init, xs): f changed the carry at carry['h'] (the shapes do not match); "
            "expected a tensor of dtype torch.float32 and shape (3,), got a tensor of dtype "
            "torch.float32 and shape (1, 3). The output carry must keep"
        ),
    ):

        def body(c, x):
            return {"h": c["h"][None], "n": c["n"]}, None

        lax.scan(body, init, torch.ones(2))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "f changed the carry at carry['n'] (the dtypes do not match); expected a tensor of dtype "
            "torch.int64 and shape (), got a tensor of dtype torch.float32 and shape ()"
        ),
    ):
        lax.scan(lambda c, x: ({"h": c["h"], "n": c["n"] * 0.5}, None), init, torch.ones(2))
    with pytest.raises(TypeError, match=re.escape("f changed the carry's structure")):
        lax.scan(lambda c, x: ({"h": c["h"]}, None), init, torch.ones(2))
    with pytest.raises(TypeError, match=re.escape("f must return a pair (carry, y)")):
        lax.scan(lambda c, x: c, init, torch.ones(2))


def test_scan_xs_lengths_must_agree_with_each_other_and_with_length():
    xs = {"a": torch.ones(3), "b": torch.ones(4, 2)}
    with pytest.raises(
        ValueError,
        match=re.escape(
            "the xs leaves do not agree on their leading length; expected one leading length for "
            "every leaf, got xs['a'] with length 3, xs['b'] with length 4."
        ),
    ):
        lax.scan(lambda c, x: (c, None), 0.0, xs)
    with pytest.raises(
        ValueError,
        match=re.escape(
            "length disagrees with the leading length of xs; expected length=3 (or no length), "
            "got length=5."
        ),
    ):
        lax.scan(lambda c, x: (c, None), 0.0, torch.ones(3), length=5)
    with pytest.raises(ValueError, match=re.escape("Pass length=n when xs is None.")):
        lax.scan(lambda c, x: (c, None), 0.0)
    with pytest.raises(TypeError, match=re.escape("the xs leaf xs[0] has no leading axis")):
        lax.scan(lambda c, x: (c, None), 0.0, [torch.tensor(1.0)])
    with pytest.raises(TypeError, match=re.escape("the carry leaf carry[1] is not a tensor")):
        lax.scan(lambda c, x: (c, None), (0.0, "s"), length=1)


def test_loop_and_branch_errors():
    with pytest.raises(
        TypeError,
        match=re.escape(
            "while_loop(<lambda>, <lambda>, init_val): the output of cond_fun must be a scalar "
            "boolean; expected a Python bool or a 0-d tensor of dtype torch.bool, got a tensor of "
            "dtype torch.float32 and shape ()."
        ),
    ):
        lax.while_loop(lambda v: v, lambda v: v, torch.tensor(1.0))
    with pytest.raises(TypeError, match=re.escape("pred must be a scalar boolean")):
        lax.cond(torch.tensor([True, False]), lambda: 1, lambda: 2)
    with pytest.raises(TypeError, match=re.escape("index must be a scalar integer")):
        lax.switch(1.0, [lambda: 1])
    with pytest.raises(TypeError, match=re.escape("branches must be a non-empty sequence")):
        lax.switch(0, [])
    with pytest.raises(TypeError, match=re.escape("upper must be a scalar integer")):
        lax.fori_loop(0, 2.5, lambda i, v: v, 0.0)
    with pytest.raises(TypeError, match=re.escape("body_fun changed the carry at val")):
        lax.fori_loop(0, 2, lambda i, v: v.double(), torch.zeros(2))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "cond(pred, <lambda>, <lambda>, *operands): true_fun returns another type than "
            "false_fun at out; expected a tensor of dtype torch.float32 and shape (1,), got a "
            "tensor of dtype torch.float32 and shape (). With a predicate that differs across "
            "the vmap batch every branch runs"
        ),
    ):
        fu.vmap(lambda x: lax.cond(x > 0, lambda v: v, lambda v: v[None], x))(torch.ones(2))


# ---------------------------------------------------------------------------------------------
# Docs


def test_every_lax_name_is_documented():
    from tests.test_docs import _code_text, _mentioned

    text = _code_text()
    assert [n for n in lax.__all__ if not _mentioned(n, text)] == []


# ---------------------------------------------------------------------------------------------
# torch.compile


def test_loops_and_branches_under_torch_compile_give_the_eager_values():
    x = torch.tensor([1.5, 2.0])
    programs = [
        lambda x: lax.scan(lambda c, v: (c * v + 1, c), x[0], x),
        lambda x: lax.fori_loop(0, 3, lambda i, v: v * 2 + i, x),
        lambda x: lax.while_loop(lambda v: v.sum() < 100, lambda v: v * 2, x),
        lambda x: lax.cond(x.sum() > 0, lambda v: v * 2, lambda v: v - 1, x),
        lambda x: lax.switch(x.argmax(), [lambda v: v, lambda v: -v], x),
    ]
    for prog in programs:
        torch._dynamo.reset()
        tree_allclose(torch.compile(prog, backend="eager")(x), prog(x))


def test_a_fixed_length_scan_traces_without_a_graph_break():
    torch._dynamo.reset()
    prog = lambda x: lax.scan(lambda c, v: (c * v + 1, c), x[0], x)[1]  # noqa: E731
    assert torch._dynamo.explain(prog)(torch.tensor([1.5, 2.0])).graph_break_count == 0


# ---------------------------------------------------------------------------------------------
# More semantics: bodies with custom rules and checkpoint, linearize, batched loop indices


def test_linearize_custom_rules_and_checkpoint_inside_bodies():
    @fu.custom_vjp
    def clip_grad(x):
        return x

    clip_grad.defvjp(lambda x: (x, None), lambda _, g: (g.clamp(-0.1, 0.1),))
    xs = torch.tensor([0.5, -2.0, 1.5], dtype=torch.float64)

    def loss(w, body):
        return lax.scan(body, w, xs)[0]

    plain = lambda c, x: (c * x + torch.sin(c), None)  # noqa: E731
    clipped = lambda c, x: (clip_grad(c * x) + torch.sin(c), None)  # noqa: E731
    w = torch.tensor(0.8, dtype=torch.float64)
    g_plain, g_clipped = fu.grad(loss)(w, plain), fu.grad(loss)(w, clipped)
    want = fu.grad(lambda w: _ref_scan(clipped, w, xs)[0])(w)
    tree_allclose(g_clipped, want)
    assert not torch.allclose(g_plain, g_clipped)
    out, f_jvp = fu.linearize(lambda w: loss(w, plain), w)
    tree_allclose(out, _ref_scan(plain, w, xs)[0])
    tree_allclose(f_jvp(torch.ones_like(w)), g_plain)
    ws = torch.tensor([0.8, -0.3], dtype=torch.float64)
    tree_allclose(
        fu.vmap(fu.grad(lambda w: loss(w, fu.checkpoint(plain))))(ws),
        fu.vmap(fu.grad(lambda w: loss(w, plain)))(ws),
    )


def test_vmap_fori_loop_with_batched_bounds_can_index_with_i():
    xs = torch.tensor([1.0, 10.0, 100.0])
    upper = torch.tensor([3, 1, 0])
    got = fu.vmap(lambda n: lax.fori_loop(0, n, lambda i, v: v + xs[i], 0.0))(upper)
    assert got.tolist() == [111.0, 1.0, 0.0]


def test_batched_branches_returning_python_numbers_take_the_tensors_dtype():
    x = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    got = fu.vmap(lambda v: lax.cond(v > 0, lambda u: u * 2, lambda u: 0.0, v))(x)
    tree_allclose(got, torch.tensor([0.0, 4.0], dtype=torch.float64))
    got = fu.vmap(lambda v: lax.cond(v > 0, lambda u: (1, u), lambda u: (2, -u), v))(x)
    assert got[0].tolist() == [2, 1] and got[0].dtype == torch.int64
    with pytest.raises(
        TypeError, match=re.escape("true_fun returns another structure than false_fun")
    ):
        fu.vmap(lambda v: lax.cond(v > 0, lambda u: (u, u), lambda u: u, v))(x)


def test_cond_accepts_a_python_int_predicate_and_y_leaves_must_be_tensors():
    assert (
        lax.cond(2, lambda: "t", lambda: "f") == "t"
        and lax.cond(0, lambda: "t", lambda: "f") == "f"
    )
    with pytest.raises(
        TypeError,
        match=re.escape(
            "scan(<lambda>, init, xs): the y leaf y['a'] is not a tensor or a number; expected a "
            "tensor or a Python bool, int, float or complex, got str 's'."
        ),
    ):
        lax.scan(lambda c, x: (c, {"a": "s"}), 0.0, torch.ones(2))


@pytest.mark.parametrize("name", list(PROGRAMS))
def test_check_grads_orders_1_and_2_in_both_modes(name):
    from functorch_utils.testing import check_grads

    prog = PROGRAMS[name]
    check_grads(lambda x: prog(lax, torch, x), (X,), order=2, modes=("fwd", "rev"))


# ---------------------------------------------------------------------------------------------
# Properties


hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies


@hypothesis.given(
    data=st.data(), n=st.integers(1, 6), reverse=st.booleans(), scale=st.floats(-2.0, 2.0)
)
def test_scan_equals_its_python_loop_for_random_carries(data, n, reverse, scale):
    from functorch_utils.testing import strategies as fst

    carry = data.draw(fst.pytrees(fst.tensors(torch.float64, fst.shapes(max_numel=6))))
    xs = data.draw(fst.tensors(torch.float64, (n, 3)))

    def body(c, x):
        new = fu.tree_util.tree_map(lambda leaf: torch.sin(leaf) * scale + x.sum(), c)
        return new, (fu.tree_util.tree_map(lambda leaf: leaf * x[0], c), x[1])

    tree_allclose(
        lax.scan(body, carry, xs, reverse=reverse), _ref_scan(body, carry, xs, reverse=reverse)
    )


_OPS = {
    "add": (torch.add, 1),
    "mul": (torch.mul, 1),
    "max": (torch.maximum, 1),
    "min": (torch.minimum, 1),
    "affine": (lambda p, q: (p[0] * q[0], q[0] * p[1] + q[1]), 2),
    "logaddexp": (torch.logaddexp, 1),
}


@hypothesis.given(
    data=st.data(),
    op=st.sampled_from(sorted(_OPS)),
    n=st.integers(1, 33),
    axis=st.integers(-3, 2),
    reverse=st.booleans(),
)
def test_associative_scan_equals_the_sequential_scan_for_random_ops(data, op, n, axis, reverse):
    from functorch_utils.testing import strategies as fst

    fn, arity = _OPS[op]
    shape = [2, 2]
    shape.insert(axis % 3, n)
    elems = tuple(data.draw(fst.tensors(torch.float64, tuple(shape))) for _ in range(arity))
    elems = elems if arity > 1 else elems[0]
    got = lax.associative_scan(fn, elems, reverse=reverse, axis=axis)
    tree_allclose(got, _ref_associative_scan(fn, elems, reverse=reverse, axis=axis % 3))


def test_associative_scan_of_matrix_products_keeps_the_order():
    mats = torch.randn(9, 3, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    got = lax.associative_scan(torch.matmul, mats)
    tree_allclose(got, _ref_associative_scan(torch.matmul, mats))


@hypothesis.given(
    xs=st.lists(st.floats(-3.0, 3.0), min_size=1, max_size=6),
    threshold=st.floats(-1.0, 1.0),
)
def test_branches_and_while_loop_under_vmap_equal_the_loop_over_examples(xs, threshold):
    x = torch.tensor(xs, dtype=torch.float64)
    branches = [torch.sin, torch.exp, lambda v: v**3]
    programs = [
        lambda v: lax.cond(v > threshold, torch.cos, lambda u: u * 2, v),
        lambda v: lax.switch((v * 2).floor().long(), branches, v),
        lambda v: lax.while_loop(
            lambda c: c[0].abs() < 10, lambda c: (c[0] * 2 + 0.5, c[1] + 1), (v, 0)
        ),
        lambda v: lax.fori_loop(0, (v.abs() * 2).long(), lambda i, u: u * 1.5 + i, v),
    ]
    refs = [
        lambda v: REF.cond(v > threshold, torch.cos, lambda u: u * 2, v),
        lambda v: REF.switch((v * 2).floor().long(), branches, v),
        lambda v: _ref_while(
            lambda c: c[0].abs() < 10, lambda c: (c[0] * 2 + 0.5, c[1] + 1), (v, torch.tensor(0))
        ),
        lambda v: _ref_fori(0, int((v.abs() * 2).long()), lambda i, u: u * 1.5 + i, v),
    ]
    first = lambda f: lambda v: f(v)[0] if isinstance(f(v), tuple) else f(v)  # noqa: E731
    for prog, ref in zip(programs, refs):
        want = fu.tree_util.tree_map(lambda *r: torch.stack(r), *[ref(v) for v in x])
        tree_allclose(fu.vmap(prog)(x), want)
        want_grad = torch.stack([fu.grad(first(ref))(v) for v in x])
        tree_allclose(fu.vmap(fu.grad(first(prog)))(x), want_grad)


# ---------------------------------------------------------------------------------------------
# Nesting of batched predicates


def test_nested_vmaps_with_predicates_batched_at_either_level():
    f = lambda a, b: lax.cond(a > b, lambda u, v: u * v, lambda u, v: u - v, a, b)  # noqa: E731
    a, b = torch.tensor([1.0, -2.0, 3.0]), torch.tensor([0.5, 2.5])
    want = torch.stack([torch.stack([f(x, y) for y in b]) for x in a])
    tree_allclose(fu.vmap(fu.vmap(f, in_axes=(None, 0)), in_axes=(0, None))(a, b), want)
    g = lambda x: lax.while_loop(lambda v: v.sum() < 10, lambda v: v * 2, x)  # noqa: E731
    xs = torch.tensor([[[1.0, 0.5], [3.0, 4.0]], [[0.1, 0.1], [6.0, 6.0]]])
    want = torch.stack(
        [
            torch.stack([_ref_while(lambda v: v.sum() < 10, lambda v: v * 2, r) for r in m])
            for m in xs
        ]
    )
    tree_allclose(fu.vmap(fu.vmap(g))(xs), want)


def test_vmap_of_reverse_mode_through_a_batched_while_loop_with_a_closed_over_parameter():
    def f(w, x):
        return lax.while_loop(lambda c: c[1] < x, lambda c: (c[0] * w + 1, c[1] + 1), (w, 0))[0]

    def ref(w, x):
        return _ref_while(lambda c: c[1] < x, lambda c: (c[0] * w + 1, c[1] + 1), (w, 0))[0]

    w = torch.tensor(0.7, dtype=torch.float64)
    x = torch.tensor([0, 1, 4])
    got = fu.vmap(fu.grad(f), in_axes=(None, 0))(w, x)
    tree_allclose(got, torch.stack([fu.grad(ref)(w, int(n)) for n in x]))
    got = fu.vmap(fu.jacrev(f), in_axes=(None, 0))(w, x)
    tree_allclose(got, torch.stack([fu.grad(ref)(w, int(n)) for n in x]))


# ---------------------------------------------------------------------------------------------
# Tensors closed over by a branch are masked like operands


def _closure_program(lx, m, w, x):
    return lx.cond(x > 0, lambda v: m.sqrt(w) * v, lambda v: v * 2, x)


def test_closed_over_tensors_of_a_batched_branch_carry_no_nan_derivative():
    f = lambda w, x: _closure_program(lax, torch, w, x)  # noqa: E731
    w = torch.tensor([-1.0, 4.0], dtype=torch.float64)
    x = torch.tensor([-1.0, 2.0], dtype=torch.float64)
    tree_allclose(fu.vmap(fu.grad(f))(w, x), torch.tensor([0.0, 0.5], dtype=torch.float64))
    tree_allclose(
        fu.vmap(fu.grad(fu.grad(f)))(w, x), torch.tensor([0.0, -0.0625], dtype=torch.float64)
    )
    tree_allclose(
        fu.vmap(fu.grad(f, argnums=1))(w, x), torch.tensor([2.0, 2.0], dtype=torch.float64)
    )
    _, t = fu.vmap(lambda w, x: fu.jvp(f, (w, x), (torch.ones_like(w), torch.zeros_like(x))))(w, x)
    tree_allclose(t, torch.tensor([0.0, 0.5], dtype=torch.float64))


def test_closed_over_tensors_match_jax_closure_conversion(jx):
    jnp = jx.numpy
    w = torch.tensor([-1.0, 4.0, 9.0], dtype=torch.float64)
    x = torch.tensor([-1.0, 2.0, -3.0], dtype=torch.float64)
    ours = lambda w, x: _closure_program(lax, torch, w, x)  # noqa: E731
    theirs = lambda w, x: _closure_program(jx.lax, jnp, w, x)  # noqa: E731
    jw, jxx = jnp.asarray(w.numpy()), jnp.asarray(x.numpy())
    for argnums in (0, 1):
        got = fu.vmap(fu.grad(fu.grad(ours, argnums), argnums))(w, x)
        want = jx.vmap(jx.grad(jx.grad(theirs, argnums), argnums))(jw, jxx)
        tree_allclose(got, _to_torch(want, jx))
        got = fu.vmap(fu.grad(ours, argnums))(w, x)
        tree_allclose(got, _to_torch(jx.vmap(jx.grad(theirs, argnums))(jw, jxx), jx))


def test_batched_while_loop_body_closing_over_a_tensor_singular_for_finished_members():
    def f(w, x):  # finished members (v >= 3) may have v > w: sqrt(w - v) is NaN there
        return lax.while_loop(lambda v: v < 3, lambda v: v + torch.sqrt(w - v), x)

    def ref(w, x):
        return _ref_while(lambda v: v < 3, lambda v: v + torch.sqrt(w - v), x)

    w = torch.tensor(3.5, dtype=torch.float64)
    x = torch.tensor([1.0, 4.0], dtype=torch.float64)
    got = fu.vmap(fu.grad(f), in_axes=(None, 0))(w, x)
    tree_allclose(got, torch.stack([fu.grad(ref)(w, v) for v in x]))
    assert torch.isfinite(got).all()


def test_masking_keeps_in_place_writes_and_values():
    def branch(v, buf):
        y = v * torch.ones(2)
        y.add_(buf)  # in place into a tensor made in the branch
        z = buf.clone()
        z[0] = v  # __setitem__
        return (y * z).sum()

    f = lambda v, buf: lax.cond(v > 0, branch, lambda v, buf: v - buf.sum(), v, buf)  # noqa: E731
    x = torch.tensor([-1.0, 2.0])
    buf = torch.tensor([10.0, 20.0])
    want = torch.stack([f(v, buf) for v in x])
    tree_allclose(fu.vmap(f, in_axes=(0, None))(x, buf), want)


def test_eval_shape_through_control_flow_on_tensor_values():
    # NOTE [control flow under jit]: fake tensors have no values; cond/switch select, a loop
    # with a tensor predicate or bounds runs one checked step
    def f(x):
        y = lax.cond(x.sum() > 0, lambda v: v * 2, lambda v: v - 1, x)
        z = lax.switch((x.sum() > 1).long(), [lambda v: v, lambda v: v + 1.0], y)
        w = lax.while_loop(lambda c: c[0] < 10, lambda c: (c[0] + 1, c[1] * 2), (x.sum(), z))
        m = lax.fori_loop(0, (x > 0).sum(), lambda i, v: v * 2, x.double())
        return w, m

    x = torch.ones(3)
    got = fu.eval_shape(f, x)
    want = f(x)
    flat_got, flat_want = fu.tree_util.tree_leaves(got), fu.tree_util.tree_leaves(want)
    assert [(tuple(g.shape), g.dtype) for g in flat_got] == [
        (tuple(w.shape), w.dtype) for w in flat_want
    ]
    # a body that changes the carry's shape is still refused, as in the eager loop
    with pytest.raises(TypeError, match="body_fun"):
        fu.eval_shape(lambda x: lax.while_loop(lambda v: v.sum() < 5, lambda v: v[:1], x), x)
