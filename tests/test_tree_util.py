"""tree_util and flatten_util."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

import functorch_utils as fu
from functorch_utils import tree_util as tu
from functorch_utils.flatten_util import ravel_pytree

from .helpers import Params, Point


def test_none_is_an_empty_subtree():
    assert tu.tree_leaves({"a": None, "b": 1}) == [1]
    assert tu.tree_map(lambda x: x * 2, (None, 3)) == (None, 6)


def test_register_dataclass_meta_fields_are_static():
    p = Params(torch.ones(1), torch.zeros(1), name="x")
    leaves, spec = tu.tree_flatten(p)
    assert len(leaves) == 2
    q = tu.tree_unflatten(spec, [torch.zeros(1), torch.ones(1)])
    assert isinstance(q, Params) and q.name == "x"
    paths = [path for path, _ in tu.tree_leaves_with_path(p)]
    assert paths == [("w",), ("b",)]


def test_register_dataclass_explicit_fields_and_errors():
    @dataclasses.dataclass
    class C:
        a: torch.Tensor
        k: int

    tu.register_dataclass(C, data_fields=["a"], meta_fields=["k"])
    g = fu.grad(lambda c: (c.a * c.k).sum())(C(torch.ones(2), 3))
    assert g.k == 3 and torch.equal(g.a, torch.full((2,), 3.0))
    with pytest.raises(TypeError, match=re.escape("must be given together")):
        tu.register_dataclass(C, data_fields=["a"])

    @dataclasses.dataclass
    class D:
        a: torch.Tensor
        b: torch.Tensor

    with pytest.raises(ValueError, match=re.escape("init fields ['b'] are in neither")):
        tu.register_dataclass(D, data_fields=["a"], meta_fields=[])


def test_namedtuple_and_transpose():
    leaves, _spec = tu.tree_flatten(Point(1, (2, 3)))
    assert leaves == [1, 2, 3]
    outer, inner = tu.tree_structure([0, 0]), tu.tree_structure(Point(0, 0))
    assert tu.tree_transpose(outer, inner, [Point(1, 2), Point(3, 4)]) == Point([1, 3], [2, 4])


def test_ravel_pytree_roundtrip_and_promotion():
    tree = {
        "a": torch.ones(2, 2, dtype=torch.float32),
        "b": (torch.arange(3, dtype=torch.float64), None),
    }
    flat, unravel = ravel_pytree(tree)
    assert flat.shape == (7,) and flat.dtype == torch.float64
    back = unravel(flat)
    assert back["a"].dtype == torch.float32 and back["b"][1] is None
    assert torch.equal(back["b"][0], tree["b"][0])
    with pytest.raises(ValueError, match=re.escape("unravel(vec): vec does not match")):
        unravel(torch.ones(3))
    empty, unravel_empty = ravel_pytree({})
    assert empty.shape == (0,) and unravel_empty(empty) == {}


def test_ravel_pytree_is_differentiable():
    tree = {"a": torch.tensor([1.0, 2.0]), "b": torch.tensor(3.0)}
    flat, unravel = ravel_pytree(tree)
    g = fu.grad(lambda v: (unravel(v)["a"] ** 2).sum() * unravel(v)["b"])(flat)
    assert torch.equal(g, torch.tensor([6.0, 12.0, 5.0]))


# ---------------------------------------------------------------------------------------------
# Clear errors: cyclic trees, structure mismatches, a non-treedef given to tree_unflatten.


def _cyclic_list():
    a = [1]
    a.append(a)
    return a


@pytest.mark.parametrize(
    "call, run",
    [
        ("tree_leaves(tree)", tu.tree_leaves),
        ("tree_flatten(tree)", tu.tree_flatten),
        ("tree_structure(tree)", tu.tree_structure),
        ("tree_flatten_with_path(tree)", tu.tree_flatten_with_path),
        ("tree_map(f, tree, *rest)", lambda t: tu.tree_map(lambda x: x, t)),
        ("tree_map_with_path(f, tree, *rest)", lambda t: tu.tree_map_with_path(lambda p, x: x, t)),
        ("tree_reduce(function, tree)", lambda t: tu.tree_reduce(lambda a, b: a + b, t)),
    ],
)
def test_cyclic_tree_is_a_value_error_naming_the_cycle(call, run):
    with pytest.raises(
        ValueError, match=re.escape(f"{call}: the pytree is cyclic: tree[1] is tree")
    ):
        run(_cyclic_list())


def test_cyclic_tree_error_gives_the_key_path_of_the_cycle():
    inner = []
    tree = {"x": [1, (2, inner)]}
    inner.append(tree["x"])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "tree_flatten(tree): the pytree is cyclic: tree['x'][1][1][0] is tree['x'] itself; "
            "expected a tree whose containers do not hold themselves"
        ),
    ):
        tu.tree_flatten(tree)


def test_shared_subtrees_are_not_cycles():
    shared = [1, 2]
    assert tu.tree_leaves([shared, {"k": shared}, (shared,)]) == [1, 2] * 3


def test_too_deep_tree_is_a_value_error():
    deep: list = []
    node = deep
    for _ in range(3000):
        node.append([])
        node = node[0]
    with pytest.raises(ValueError, match=re.escape("the pytree is nested too deeply to flatten")):
        tu.tree_leaves(deep)


def test_cyclic_argument_to_a_transform_is_a_value_error():
    with pytest.raises(ValueError, match=re.escape("the pytree is cyclic: tree[1] is tree itself")):
        fu.grad(lambda t: t[0])(_cyclic_list())


def test_cyclic_argument_to_vmap_is_a_value_error():
    a = [torch.ones(3)]
    a.append(a)
    with pytest.raises(ValueError, match=re.escape("the pytree is cyclic")):
        fu.vmap(lambda t: t[0])(a)


def test_cyclic_tree_in_ravel_pytree():
    with pytest.raises(
        ValueError,
        match=re.escape("ravel_pytree(pytree): the pytree is cyclic: pytree[1] is pytree itself"),
    ):
        ravel_pytree(_cyclic_list())


def test_tree_map_structure_mismatch_explains_where():
    msg = (
        "tree_map(f, tree, *rest): rest[0] does not have the structure of tree; expected tree's "
        "structure PyTreeSpec([*, *]) (deeper subtrees at its leaves are fine), got "
        "PyTreeSpec([*, *, *]). Where they part:\npytree structure error: different numbers of "
        "pytree children at key path"
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        tu.tree_map(lambda a, b: a + b, [1, 2], [1, 2, 3])


def test_tree_map_mismatch_names_the_rest_tree_and_key_path():
    with pytest.raises(ValueError) as info:
        tu.tree_map(lambda *xs: xs, (1, {"a": (2, 3)}), (1, {"a": (2, 3)}), (1, {"a": [2, 3]}))
    text = str(info.value)
    assert text.startswith("tree_map(f, tree, *rest): rest[1] does not have the structure of tree")
    assert "different types at key path\n    tree[1]['a']" in text


def test_tree_map_dict_keys_mismatch_lists_missing_and_extra_keys():
    with pytest.raises(ValueError) as info:
        tu.tree_map(lambda a, b: a, {"a": 1}, {"b": 1})
    assert "missing key(s):\n    ['a']\nextra key(s):\n    ['b']" in str(info.value)


def test_tree_map_with_path_structure_mismatch():
    with pytest.raises(
        ValueError,
        match=re.escape("tree_map_with_path(f, tree, *rest): rest[0] does not have the structure"),
    ):
        tu.tree_map_with_path(lambda p, a, b: a, (1, 2), [1, 2])


def test_tree_map_errors_of_f_pass_through_unchanged():
    def f(x, y):
        raise ValueError("from f")

    with pytest.raises(ValueError, match=r"^from f$"):
        tu.tree_map(f, [1], [2])


def test_tree_map_recursion_error_of_f_passes_through():
    def f(x):
        return f(x)

    with pytest.raises(RecursionError):
        tu.tree_map(f, [1, (2,)])


def test_tree_transpose_infers_inner_and_checks_outer():
    outer = tu.tree_structure([0, 0])
    assert tu.tree_transpose(outer, None, [{"a": 1}, {"a": 2}]) == {"a": [1, 2]}
    with pytest.raises(
        TypeError, match=re.escape("structure mismatch: pytree does not have outer_treedef's")
    ):
        tu.tree_transpose(outer, None, ({"a": 1}, {"a": 2}))


@pytest.mark.parametrize(
    "leaves, where",
    [
        ([1], "(the first missing leaf is tree['b'][0]); expected 3 leaves, got 1."),
        ([1, 2, 3, 4], "(1 too many); expected 3 leaves, got 4."),
    ],
)
def test_tree_unflatten_wrong_number_of_leaves(leaves, where):
    spec = tu.tree_structure({"a": 0, "b": (0, 0)})
    msg = f"tree_unflatten(treedef, leaves): wrong number of leaves for {spec} {where}"
    with pytest.raises(ValueError, match=re.escape(msg)):
        tu.tree_unflatten(spec, leaves)


def test_tree_unflatten_given_a_non_treedef():
    with pytest.raises(
        TypeError,
        match=re.escape(
            "tree_unflatten(treedef, leaves): treedef is not a treedef; expected a PyTreeDef from "
            "tree_flatten(tree)[1] or tree_structure(tree), got list [1, 2]. Build it with"
        ),
    ):
        tu.tree_unflatten([1, 2], [1, 2])
    spec = tu.tree_structure([0, 0])
    with pytest.raises(TypeError, match=re.escape("The treedef comes first")):
        tu.tree_unflatten([1, 2], spec)  # type: ignore[arg-type]


def test_tree_unflatten_takes_any_iterable_of_leaves():
    spec = tu.tree_structure((0, [0, None]))
    assert tu.tree_unflatten(spec, iter([1, 2])) == (1, [2, None])


def test_tree_transpose_mismatch_is_a_type_error():
    outer = tu.tree_structure({"a": 1, "b": 2, "c": 3})
    with pytest.raises(TypeError, match=re.escape("structure mismatch: pytree is not")):
        tu.tree_transpose(outer, tu.tree_structure([1, 2]), {"a": [1, 2], "b": [3, 4]})
    with pytest.raises(TypeError, match=re.escape("inner_treedef is not a treedef")):
        tu.tree_transpose(outer, [1, 2], {"a": [1, 2], "b": [3, 4], "c": [5, 6]})


def test_ravel_pytree_unravel_dtypes():
    x = torch.arange(4, dtype=torch.float32)
    flat, unravel = ravel_pytree(x)
    assert unravel(flat < 1.5).dtype == torch.bool  # one dtype: unravel keeps vec's dtype
    flat, unravel = ravel_pytree((x, torch.arange(2)))
    assert flat.dtype == torch.float32
    with pytest.raises(
        TypeError,
        match=re.escape(
            "unravel(vec): vec has another dtype than the raveled pytree of mixed dtypes; "
            "expected dtype torch.float32, got dtype torch.bool."
        ),
    ):
        unravel(flat < 1.5)


def test_tree_module_has_jaxs_short_names():
    from functorch_utils import tree, tree_util

    for name in tree.__all__:
        assert getattr(tree, name) is getattr(tree_util, f"tree_{name}"), name
    assert tree.map(lambda x, y: x + y, {"a": 1}, {"a": 2}) == {"a": 3}


def test_is_leaf_takes_path():
    from functorch_utils import tree_util as tu

    t = {"a": [1, 2], "b": (3, {"c": 4})}
    got = tu.tree_leaves_with_path(t, is_leaf=lambda p, x: p == ("a",), is_leaf_takes_path=True)
    assert got == [(("a",), [1, 2]), (("b", 0), 3), (("b", 1, "c"), 4)]
    out = tu.tree_map_with_path(
        lambda p, x: len(p), t, is_leaf=lambda p, x: len(p) == 2, is_leaf_takes_path=True
    )
    assert out == {"a": [2, 2], "b": (2, 2)}
    leaves, spec = tu.tree_flatten_with_path([1, [2, 3]], lambda p, x: p == (1,), True)
    assert [leaf for _, leaf in leaves] == [1, [2, 3]] and spec.num_leaves == 2
    # without the flag is_leaf gets the node only, as before
    assert tu.tree_leaves_with_path(t, is_leaf=lambda x: isinstance(x, list))[0] == (("a",), [1, 2])
    with pytest.raises(TypeError, match="is_leaf_takes_path must be a bool"):
        tu.tree_leaves_with_path(t, is_leaf=lambda p, x: False, is_leaf_takes_path="yes")
