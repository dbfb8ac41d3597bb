"""grad and value_and_grad: semantics (JAX's), pytrees, errors, engines."""

from __future__ import annotations

import re

import pytest
import torch
import torch.func

import functorch_utils as fu
from functorch_utils import tree_util

from .helpers import LegacySquare, Params, Point, tree_allclose


def loss(p, x):
    return ((x @ p["w"] + p["b"]) ** 2).mean()


def test_grad_matches_torch_func_on_pytree():
    p = {"w": torch.randn(3, dtype=torch.float64), "b": torch.tensor(0.3, dtype=torch.float64)}
    x = torch.randn(5, 3, dtype=torch.float64)
    tree_allclose(fu.grad(loss)(p, x), torch.func.grad(loss)(p, x))


def test_value_and_grad_order_is_jax():
    x = torch.tensor([1.0, 2.0])
    (value, aux), g = fu.value_and_grad(lambda x: ((x**2).sum(), "note"), has_aux=True)(x)
    assert torch.equal(value, torch.tensor(5.0)) and aux == "note"
    tree_allclose(g, 2 * x)
    value, g = fu.value_and_grad(lambda x: (x**2).sum())(x)
    assert torch.equal(value, torch.tensor(5.0))


@pytest.mark.parametrize(
    "make",
    [
        lambda t: {"a": t[0], "b": [t[1], None]},
        lambda t: Point(t[0], t[1]),
        lambda t: Params(t[0], t[1]),
        lambda t: (t[0], (t[1],)),
    ],
    ids=["dict-list-None", "namedtuple", "dataclass", "nested-tuple"],
)
def test_pytree_inputs_keep_their_structure(make):
    t = [torch.randn(3, dtype=torch.float64), torch.randn(2, dtype=torch.float64)]
    tree = make(t)

    def f(tree):
        a, b = tree_util.tree_leaves(tree)
        return (a.sin().sum() * b**2).sum()

    g = fu.grad(f)(tree)
    assert tree_util.tree_structure(g) == tree_util.tree_structure(tree)
    a, b = t
    expected = make([a.cos() * (b**2).sum(), 2 * b * a.sin().sum()])
    tree_allclose(g, expected)


def test_custom_registered_class():
    class Pair:
        def __init__(self, a, b):
            self.a, self.b = a, b

    tree_util.register_pytree_node(Pair, lambda p: ((p.a, p.b), None), lambda _, c: Pair(*c))
    g = fu.grad(lambda p: p.a * p.b)(Pair(torch.tensor(2.0), torch.tensor(3.0)))
    assert isinstance(g, Pair) and g.a.item() == 3.0 and g.b.item() == 2.0


@pytest.mark.parametrize("argnums", [1, -1, (1,), [1]])
def test_argnums_forms(argnums):
    x, y = torch.tensor(2.0), torch.tensor(3.0)
    g = fu.grad(lambda x, y: x * y**2, argnums=argnums)(x, y)
    if isinstance(argnums, int):
        assert torch.equal(g, torch.tensor(12.0))
    else:
        assert isinstance(g, tuple) and len(g) == 1 and torch.equal(g[0], torch.tensor(12.0))


def test_argnums_order_as_asked():
    g = fu.grad(lambda x, y: x * y**2, argnums=(1, 0))(torch.tensor(2.0), torch.tensor(3.0))
    assert torch.equal(g[0], torch.tensor(12.0)) and torch.equal(g[1], torch.tensor(9.0))


def test_python_float_input_gives_0d_tensor_of_default_dtype():
    g = fu.grad(lambda x: x**3)(2.0)
    assert isinstance(g, torch.Tensor) and g.shape == () and g.dtype == torch.get_default_dtype()
    assert g.item() == 12.0
    assert fu.grad(fu.grad(lambda x: x**3))(2.0).item() == 12.0


def test_unused_input_gets_zeros():
    g = fu.grad(lambda x, y: (x**2).sum(), argnums=(0, 1))(torch.ones(2), torch.ones(3))
    assert torch.equal(g[1], torch.zeros(3))
    g = fu.grad(lambda x: torch.tensor(1.0))(torch.ones(2))
    assert torch.equal(g, torch.zeros(2))


def test_constant_python_output():
    assert torch.equal(fu.grad(lambda x: 1.0)(torch.ones(2)), torch.zeros(2))


def test_allow_int_gives_none():
    tree = {"x": torch.tensor([1.0, 2.0]), "n": torch.tensor(3), "k": 4}
    g = fu.grad(lambda t: (t["x"] * t["n"]).sum() * t["k"], allow_int=True)(tree)
    assert g["n"] is None and g["k"] is None
    assert torch.equal(g["x"], torch.tensor([12.0, 12.0]))


def test_int_input_error_names_key_path():
    msg = (
        "grad(f): differentiated input args[0]['n'] has an integer or boolean type, which has no "
        "derivative; expected a floating-point or complex tensor, or a Python float, got a tensor "
        "of dtype torch.int64 and shape (). Cast it to a floating dtype, leave it out of argnums, "
        "or pass allow_int=True to get a None derivative for it."
    )

    def f(t):
        return t["x"].sum()

    with pytest.raises(TypeError, match=re.escape(msg)):
        fu.grad(f)({"x": torch.ones(2), "n": torch.tensor(3)})


def test_non_tensor_leaf_error():
    with pytest.raises(
        TypeError, match=re.escape("differentiated input args[0][1] is not a tensor")
    ):
        fu.grad(lambda t: t[0].sum())((torch.ones(2), "text"))


def test_has_aux_any_aux_and_no_derivative():
    x = torch.tensor([1.0, 2.0])
    aux_in = {"s": "label", "f": 0.5, "t": None}

    def f(x):
        return (x**2).sum(), {**aux_in, "t": x * 2}

    _g, aux = fu.grad(f, has_aux=True)(x)
    assert aux["s"] == "label" and aux["f"] == 0.5
    assert torch.equal(aux["t"], x * 2) and not aux["t"].requires_grad
    # under a transform (torch.func engine), aux comes back unwrapped and non-tensors intact
    seen = []

    def inner(x):
        g, aux = fu.grad(f, has_aux=True)(x)
        seen.append(aux["s"])
        return g, aux["t"]

    _gs, ts = torch.func.vmap(inner)(torch.ones(3, 2))
    assert seen == ["label"] and ts.shape == (3, 2) and torch.equal(ts, torch.full((3, 2), 2.0))


def test_complex_conventions_follow_jax():
    # JAX: grad(lambda z: abs(z)**2)(3+4j) == 6-8j
    z = torch.tensor(3 + 4j, dtype=torch.complex128)
    assert fu.grad(lambda z: z.abs() ** 2)(z).item() == pytest.approx(6 - 8j)
    # JAX: grad(lambda z: z**2, holomorphic=True)(z) == 2z
    assert fu.grad(lambda z: z**2, holomorphic=True)(z).item() == pytest.approx(6 + 8j)
    # the same under torch.func (inside vmap)
    zs = z.reshape(1)
    assert torch.func.vmap(fu.grad(lambda z: z.abs() ** 2))(zs).item() == pytest.approx(6 - 8j)
    assert torch.func.vmap(fu.grad(lambda z: z**2, holomorphic=True))(zs).item() == pytest.approx(
        6 + 8j
    )


def test_complex_output_needs_holomorphic():
    with pytest.raises(TypeError, match=re.escape("Pass holomorphic=True")):
        fu.grad(lambda z: z**2)(torch.tensor(1 + 1j))


def test_holomorphic_needs_complex_input():
    with pytest.raises(TypeError, match=re.escape("holomorphic=True requires complex inputs")):
        fu.grad(lambda z: z**2, holomorphic=True)(torch.tensor(1.0))


def test_non_scalar_output_error():
    msg = (
        "grad(f): gradient is only defined for scalar-output functions; expected an output of "
        "shape (), got output of shape (2,). Reduce the output (e.g. .sum()), or use jacrev/vjp "
        "for non-scalar outputs."
    )

    def f(x):
        return x * 2

    with pytest.raises(TypeError, match=re.escape(msg)):
        fu.grad(f)(torch.ones(2))
    with pytest.raises(TypeError, match=re.escape("scalar-output")):
        torch.func.vmap(fu.grad(f))(torch.ones(3, 2))


def test_build_time_errors():
    with pytest.raises(TypeError, match=re.escape("grad(fun): fun is not callable")):
        fu.grad(3)
    with pytest.raises(TypeError, match=re.escape("argnums must be an int or a non-empty tuple")):
        fu.grad(lambda x: x, argnums="0")
    with pytest.raises(TypeError, match=re.escape("has_aux must be a bool")):
        fu.grad(lambda x: x, has_aux=1)


def test_argnums_out_of_range_error():
    msg = "grad(f): argnums=2 is out of range for a call with 1 positional argument; expected an index in [-1, 1), got argnums=2."

    def f(x):
        return x

    with pytest.raises(TypeError, match=re.escape(msg)):
        fu.grad(f, argnums=2)(torch.tensor(1.0))


def test_has_aux_wrong_return():
    with pytest.raises(TypeError, match=re.escape("must return a pair (output, aux)")):
        fu.grad(lambda x: x.sum(), has_aux=True)(torch.ones(2))


def test_second_order_and_perturbation_confusion():
    # JAX: grad(lambda x: grad(lambda y: x * y)(x))(2.) == 1.
    assert fu.grad(lambda x: fu.grad(lambda y: x * y)(x))(2.0).item() == 1.0
    x = torch.tensor(0.7, dtype=torch.float64)
    third = fu.grad(fu.grad(fu.grad(torch.sin)))(x)
    torch.testing.assert_close(third, -torch.cos(x))


def test_kwargs_are_passed_and_not_differentiated():
    g = fu.grad(lambda x, *, scale: (scale * x**2).sum())(torch.ones(2), scale=torch.tensor(3.0))
    assert torch.equal(g, torch.full((2,), 6.0))


def test_user_tensors_untouched_and_outer_autograd_connected():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    w = torch.tensor(2.0, requires_grad=True)
    g = fu.grad(lambda x: (w * x**3).sum())(x)
    assert x.grad is None and w.grad is None and x.requires_grad
    g.sum().backward()
    torch.testing.assert_close(x.grad, 2 * 6 * x.detach())
    torch.testing.assert_close(w.grad, (3 * x.detach() ** 2).sum())
    # a captured parameter alone also keeps the connection (closure, not argument)
    w.grad = None
    g = fu.grad(lambda x: (w * x**3).sum())(torch.tensor([1.0, 2.0]))
    g.sum().backward()
    torch.testing.assert_close(w.grad, torch.tensor(15.0))


def test_first_order_keeps_no_graph_it_does_not_need():
    g = fu.grad(lambda x: (x**3).sum())(torch.ones(2))
    assert not g.requires_grad and g.grad_fn is None


def test_outer_no_grad_does_not_stop_grad():
    with torch.no_grad():
        g = fu.grad(lambda x: (x**3).sum())(torch.tensor([1.0, 2.0]))
    assert torch.equal(g, torch.tensor([3.0, 12.0]))


def test_dtype_preserved():
    x = torch.ones(2, dtype=torch.float64)
    assert fu.grad(lambda x: (x**2).sum())(x).dtype == torch.float64


def test_legacy_autograd_function_top_level_and_error_under_vmap():
    x = torch.tensor([1.0, 2.0])
    assert torch.equal(fu.grad(lambda x: LegacySquare.apply(x).sum())(x), 2 * x)
    _v, g = fu.value_and_grad(lambda x: LegacySquare.apply(x).sum())(x)
    assert torch.equal(g, 2 * x)
    with pytest.raises(TypeError, match=re.escape("legacy torch.autograd.Function")):
        torch.func.vmap(fu.grad(lambda x: LegacySquare.apply(x).sum()))(torch.ones(3, 2))


def test_engines_agree():
    # Tape at top level and torch.func under vmap give identical results.
    xs = torch.randn(4, 3, dtype=torch.float64)

    def f(x):
        return (x.tanh() * x.sin()).sum()

    looped = torch.stack([fu.grad(f)(x) for x in xs])
    batched = torch.func.vmap(fu.grad(f))(xs)
    torch.testing.assert_close(looped, batched, rtol=0, atol=1e-15)


def test_bare_integer_argument_is_kept_and_gets_none():
    a, n = torch.tensor([1.0, 2.0]), torch.tensor([10, 20])
    (v, _aux), g = fu.value_and_grad(
        lambda a, n: ((a * n).sum(), a * n), argnums=(0, 1), has_aux=True, allow_int=True
    )(a, n)
    assert v.item() == 50.0 and g[1] is None and torch.equal(g[0], torch.tensor([10.0, 20.0]))
    out, vjp_fn = fu.vjp(lambda a, n: a * n, a, n)
    assert torch.equal(out, torch.tensor([10.0, 40.0]))
    assert vjp_fn(torch.ones(2))[1] is None
    assert torch.equal(fu.jvp(lambda a, n: a * n, (a, n), (a, n))[0], torch.tensor([10.0, 40.0]))


# --- duplicate argnums: each entry gets its full derivative (docs/sharp_edges.md) -------------


@pytest.mark.parametrize("argnums", [(0, 0), (0, -2), (-2, 0, 1)])
def test_duplicate_argnums_give_each_entry_its_gradient(argnums):
    def f(x, y):
        return (x**2 * y).sum()

    x, y = torch.tensor([1.0, 2.0]), torch.tensor(3.0)
    got = fu.grad(f, argnums=argnums)(x, y)
    full = {0: torch.tensor([6.0, 12.0]), 1: torch.tensor(5.0)}
    want = tuple(full[a % 2] for a in argnums)
    tree_allclose(got, want)


def test_duplicate_argnums_in_jacrev_and_hessian():
    def f(x):
        return (x**3).sum()

    x = torch.tensor([1.0, 2.0], dtype=torch.float64)
    j0, j1 = fu.jacrev(lambda x: x**2, argnums=(0, 0))(x)
    torch.testing.assert_close(j0, torch.diag(2 * x))
    torch.testing.assert_close(j1, torch.diag(2 * x))
    h = fu.hessian(f, argnums=(0, 0))(x)
    for row in h:
        for block in row:
            torch.testing.assert_close(block, torch.diag(6 * x))


def test_has_aux_accepts_a_list_pair_as_jax():
    g, aux = fu.grad(lambda x: [(x**2).sum(), "note"], has_aux=True)(torch.tensor([1.0, 2.0]))
    torch.testing.assert_close(g, torch.tensor([2.0, 4.0]))
    assert aux == "note"


def test_sparse_and_nested_inputs_are_clear_errors():
    sparse = torch.eye(2).to_sparse()
    with pytest.raises(TypeError, match=re.escape("grad(<lambda>): differentiated input args[0]")):
        fu.grad(lambda x: x.sum())(sparse)
    nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)], layout=torch.jagged)
    with pytest.raises(TypeError, match="is a nested tensor"):
        fu.grad(lambda x: x.sum())(nested)
