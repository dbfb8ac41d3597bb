"""JAX's own pytree tests, ported by hand: jax tests/tree_util_test.py.

Each test names its origin (TreeTest, RavelUtilTest, TreePrefixErrorsTest, RegistrationTest).
``functorch_utils.tree_util`` is optree underneath, so a treedef is optree's ``PyTreeSpec`` and
key paths are tuples of plain keys (docs/sharp_edges.md): where JAX's test reads
``SequenceKey``/``DictKey`` objects, the port reads the plain keys, and the JAX form itself is a
strict xfail. Tests of jit caching, key classes, proto serialisation and the private prefix_errors
are not ported (tests/peer/README.md lists them).
"""

from __future__ import annotations

import collections
import dataclasses
import functools
import pickle
import re

import pytest
import torch

from functorch_utils import flatten_util
from functorch_utils import tree_util as tu

# ---------------------------------------------------------------------------------------------
# The trees of JAX's test module, registered with functorch_utils.tree_util

ATuple = collections.namedtuple("ATuple", ("foo", "bar"))


class ANamedTupleSubclass(ATuple):
    pass


class AnObject:
    def __init__(self, x, y, z):
        self.x, self.y, self.z = x, y, z

    def __eq__(self, other):
        return (self.x, self.y, self.z) == (other.x, other.y, other.z)

    def __hash__(self):
        return hash((self.x, self.y, self.z))

    def __repr__(self):
        return f"AnObject({self.x},{self.y},{self.z})"


tu.register_pytree_node(
    AnObject, lambda o: ((o.x, o.y), o.z), lambda z, xy: AnObject(xy[0], xy[1], z)
)


@tu.register_pytree_node_class
class Special:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __repr__(self):
        return f"Special(x={self.x}, y={self.y})"

    def tree_flatten(self):
        return ((self.x, self.y), None)

    @classmethod
    def tree_unflatten(cls, aux_data, children):
        return cls(*children)

    def __eq__(self, other):
        return type(self) is type(other) and (self.x, self.y) == (other.x, other.y)


@tu.register_pytree_node_class
class FlatCache:
    def __init__(self, structured, *, leaves=None, treedef=None):
        if treedef is None:
            leaves, treedef = tu.tree_flatten(structured)
        self._structured = structured
        self.treedef = treedef
        self.leaves = leaves

    def __hash__(self):
        return hash(self.structured)

    def __eq__(self, other):
        return self.structured == other.structured

    def __repr__(self):
        return f"FlatCache({self.structured!r})"

    @property
    def structured(self):
        if self._structured is None:
            self._structured = tu.tree_unflatten(self.treedef, self.leaves)
        return self._structured

    def tree_flatten(self):
        return self.leaves, self.treedef

    @classmethod
    def tree_unflatten(cls, meta, data):
        if not tu.all_leaves(data):
            data, meta = tu.tree_flatten(tu.tree_unflatten(meta, data))
        return FlatCache(None, leaves=data, treedef=meta)


@tu.register_static
class StaticInt(int):
    pass


@tu.register_static
class StaticTuple(tuple):
    pass


@tu.register_static
@dataclasses.dataclass
class BlackBox:
    """Stores a value but pretends to be equal to every other black box."""

    value: int

    def __hash__(self):
        return 0

    def __eq__(self, other):
        return isinstance(other, BlackBox)


@tu.register_dataclass
@dataclasses.dataclass
class ADataclass:
    x: tuple
    y: int


@tu.register_dataclass
@dataclasses.dataclass
class ADataclassWithMeta:
    x: tuple
    y: int
    z: int = dataclasses.field(metadata={"static": True})


TREES = [
    None,
    (None,),
    (),
    [()],
    (1, 2),
    ((1, "foo"), ["bar", (3, None, 7)]),
    [3],
    [3, ATuple(foo=(3, ATuple(foo=3, bar=None)), bar={"baz": 34})],
    [AnObject(3, None, [4, "foo"])],
    Special(2, 3.0),
    {"a": 1, "b": 2},
    StaticInt(1),
    StaticTuple((2, 3)),
    ADataclass(x=(1, 2), y=3),
    ADataclassWithMeta(x=(1, 2), y=3, z=4),
    collections.OrderedDict([("foo", 34), ("baz", 101), ("something", -42)]),
    collections.defaultdict(dict, [("foo", 34), ("baz", 101), ("something", -42)]),
    ANamedTupleSubclass(foo="hello", bar=3.5),
    FlatCache(None),
    FlatCache(1),
    FlatCache({"a": [1, 2]}),
    BlackBox(value=2),
]
LEAVES = ["foo", 0.1, 1, object()]
IDS = [f"tree{i}" for i in range(len(TREES))]

# ---------------------------------------------------------------------------------------------
# TreeTest


@pytest.mark.parametrize("inputs", TREES + LEAVES)
def test_roundtrip(inputs):
    """jax tests/tree_util_test.py::TreeTest::testRoundtrip"""
    xs, tree = tu.tree_flatten(inputs)
    assert tu.tree_unflatten(tree, xs) == inputs


@pytest.mark.parametrize("inputs", TREES + LEAVES)
def test_roundtrip_with_flatten_up_to(inputs):
    """jax tests/tree_util_test.py::TreeTest::testRoundtripWithFlattenUpTo"""
    _, tree = tu.tree_flatten(inputs)
    assert tu.tree_unflatten(tree, tree.flatten_up_to(inputs)) == inputs


def _dummy_func(*args, **kwargs):
    return None


@pytest.mark.parametrize(
    "inputs",
    [
        tu.Partial(_dummy_func),
        tu.Partial(_dummy_func, 1, 2),
        tu.Partial(_dummy_func, x="a"),
        tu.Partial(_dummy_func, 1, 2, 3, x=4, y=5),
    ],
)
def test_roundtrip_partial(inputs):
    """jax tests/tree_util_test.py::TreeTest::testRoundtripPartial"""
    xs, tree = tu.tree_flatten(inputs)
    actual = tu.tree_unflatten(tree, xs)
    assert actual.func == inputs.func
    assert actual.args == inputs.args
    assert actual.keywords == inputs.keywords


def test_partial_does_not_merge_with_other_partials():
    """jax tests/tree_util_test.py::TreeTest::testPartialDoesNotMergeWithOtherPartials"""

    def f(a, b, c):
        pass

    g = functools.partial(f, 2)
    h = tu.Partial(g, 3)
    assert h.args == (3,)


def test_partial_func_attribute_has_stable_hash():
    """jax tests/tree_util_test.py::TreeTest::testPartialFuncAttributeHasStableHash"""
    fun = functools.partial(print, 1)
    p1, p2 = tu.Partial(fun, 2), tu.Partial(fun, 2)
    assert fun == p1.func and p1.func == fun
    assert p1.func == p2.func
    assert hash(p1.func) == hash(p2.func)


def test_partial_leaves_are_the_bound_arguments():
    """jax tests/tree_util_test.py::TreeTest::testRoundtripPartial (tensors as leaves)"""
    p = tu.Partial(torch.mul, torch.tensor(3.0))
    assert tu.tree_leaves(p) == [torch.tensor(3.0)]
    assert tu.tree_map(lambda x: x * 2, p)(torch.tensor(1.0)) == torch.tensor(6.0)


def test_is_tree_node():
    """jax tests/tree_util_test.py::TreeTest::testIsTreeNode"""
    for node in (list, dict, tuple, type(None), AnObject, ATuple, ANamedTupleSubclass):
        assert tu.is_tree_node(node), node
    for leaf in (int, str, float):
        assert not tu.is_tree_node(leaf), leaf


def test_children():
    """jax tests/tree_util_test.py::TreeTest::testChildren"""
    _, tree = tu.tree_flatten(((1, 2, 3), (4,)))
    _, c0 = tu.tree_flatten((0, 0, 0))
    _, c1 = tu.tree_flatten((7,))
    assert tree.children() == [c0, c1]
    assert tu.treedef_children(tree) == [c0, c1]


def test_treedef_tuple_from_children():
    """jax tests/tree_util_test.py::TreeTest::testTreedefTupleFromChildren"""
    leaves, treedef1 = tu.tree_flatten(((1, 2, (3, 4)), (5,)))
    treedef2 = tu.treedef_tuple(treedef1.children())
    assert treedef1.num_leaves == len(leaves) == treedef2.num_leaves
    assert treedef1.num_nodes == treedef2.num_nodes


def test_treedef_tuple_compares_equal():
    """jax tests/tree_util_test.py::TreeTest::testTreedefTupleComparesEqual"""
    assert tu.tree_structure((3,)) == tu.treedef_tuple((tu.tree_structure(3),))


def test_flatten_order():
    """jax tests/tree_util_test.py::TreeTest::testFlattenOrder"""
    flat1, _ = tu.tree_flatten([0, ((1, 2), 3, (4, (5, 6, 7))), 8, 9])
    flat3, _ = tu.tree_flatten([0, ((1, (2, 3)), (4, (5, 6, 7))), 8, 9])
    assert flat1 == list(range(10)) == flat3


@pytest.mark.parametrize(
    "tree, xs, expected",
    [
        (
            [(1, 2), None, ATuple(foo=3, bar=7)],
            [({"foo": 7}, (3, 4)), None, ATuple(foo=(11, 9), bar=None)],
            [{"foo": 7}, (3, 4), (11, 9), None],
        ),
        ([1], [{"a": 7}], [{"a": 7}]),
        ([1], [[7]], [[7]]),
        ([1], [(7,)], [(7,)]),
        ((1, 2), ({"a": 7}, {"a": 8}), [{"a": 7}, {"a": 8}]),
        ((1,), ([7],), [[7]]),
        ((1,), ((7,),), [(7,)]),
        ({"a": 1, "b": (2, 3)}, {"a": [7], "b": ([8], (9,))}, [[7], [8], (9,)]),
        ({"a": 1}, {"a": (7,)}, [(7,)]),
        ({"a": 1}, {"a": {"a": 7}}, [{"a": 7}]),
        (None, None, []),
    ],
)
def test_flatten_up_to(tree, xs, expected):
    """jax tests/tree_util_test.py::TreeTest::testFlattenUpTo"""
    _, tree_def = tu.tree_flatten(tree)
    assert tree_def.flatten_up_to(xs) == expected


@pytest.mark.parametrize(
    "tree, xs",
    [
        ([1, 2], [7]),
        ((1,), (7, 8)),
        ({"a": 1}, {"a": 7, "b": 8}),
        ({"a": 1}, {"b": 7}),
        ([1], {"a": 7}),
        ([1], (7,)),
        ((1,), [7]),
        ({"a": 1}, (7,)),
        ([[1]], [7]),
        ([(1,)], [[7]]),
        ([{"a": 1}], [{"b": 7}]),
        (({"a": 1},), ([7],)),
        ({"a": [1]}, {"a": (7,)}),
        ({"a": {"a": 1}}, {"a": {"b": 7}}),
        ([ATuple(foo=1, bar=2)], [(1, 2)]),
        ([AnObject(x=[1], y=(2,), z={"a": [1]})], [([1], (2,), {"a": [1]})]),
        (None, [2]),
    ],
)
def test_flatten_up_to_errors(tree, xs):
    """jax tests/tree_util_test.py::TreeTest::testFlattenUpToErrors (the same mistakes; optree's
    wording), and tree_map, which uses it, names the key path"""
    _, tree_def = tu.tree_flatten(tree)
    with pytest.raises(ValueError):
        tree_def.flatten_up_to(xs)
    with pytest.raises(
        ValueError, match=re.escape("tree_map(f, tree, *rest): rest[0] does not have the structure")
    ):
        tu.tree_map(lambda a, b: b, tree, xs)


def test_tree_map():
    """jax tests/tree_util_test.py::TreeTest::testTreeMap"""
    x = ((1, 2), (3, 4, 5))
    y = (([3], None), ({"foo": "bar"}, 7, [5, 6]))
    out = tu.tree_map(lambda *xs: tuple(xs), x, y)
    assert out == (((1, [3]), (2, None)), ((3, {"foo": "bar"}), (4, 7), (5, [5, 6])))


def test_tree_map_with_is_leaf_argument():
    """jax tests/tree_util_test.py::TreeTest::testTreeMapWithIsLeafArgument"""
    x = ((1, 2), [3, 4, 5])
    y = (([3], None), ({"foo": "bar"}, 7, [5, 6]))
    out = tu.tree_map(lambda *xs: tuple(xs), x, y, is_leaf=lambda n: isinstance(n, list))
    assert out == (((1, [3]), (2, None)), ([3, 4, 5], ({"foo": "bar"}, 7, [5, 6])))


def test_tree_reduce_with_is_leaf_argument():
    """jax tests/tree_util_test.py::TreeTest::testTreeReduceWithIsLeafArgument"""
    out = tu.tree_reduce(
        lambda x, y: x + y, [(1, 2), [(3, 4), (5, 6)]], is_leaf=lambda n: isinstance(n, tuple)
    )
    assert out == (1, 2, 3, 4, 5, 6)


def test_tree_reduce_associative_with_is_leaf_argument():
    """jax tests/tree_util_test.py::TreeTest::testTreeReduceAssociativeWithIsLeafArgument"""
    out = tu.tree_reduce_associative(
        lambda x, y: x + y, [(1, 2), [(3, 4), (5, 6)]], is_leaf=lambda n: isinstance(n, tuple)
    )
    assert out == (1, 2, 3, 4, 5, 6)


@pytest.mark.parametrize(
    "leaf_fn", [tu.tree_leaves, lambda tree, is_leaf: tu.tree_flatten(tree, is_leaf)[0]]
)
def test_flatten_is_leaf(leaf_fn):
    """jax tests/tree_util_test.py::TreeTest::testFlattenIsLeaf"""
    x = [(1, 2), (3, 4), (5, 6)]
    assert leaf_fn(x, is_leaf=lambda t: False) == [1, 2, 3, 4, 5, 6]
    assert leaf_fn(x, is_leaf=lambda t: isinstance(t, tuple)) == x
    assert leaf_fn(x, is_leaf=lambda t: isinstance(t, list)) == [x]
    assert leaf_fn(x, is_leaf=lambda t: True) == [x]
    y = [[[(1,)], [[(2,)], {"a": (3,)}]]]
    assert leaf_fn(y, is_leaf=lambda t: isinstance(t, tuple)) == [(1,), (2,), (3,)]


@pytest.mark.parametrize(
    "structure_fn", [tu.tree_structure, lambda tree, is_leaf: tu.tree_flatten(tree, is_leaf)[1]]
)
def test_structure_is_leaf(structure_fn):
    """jax tests/tree_util_test.py::TreeTest::testStructureIsLeaf"""
    x = [(1, 2), (3, 4), (5, 6)]
    assert structure_fn(x, is_leaf=lambda t: False).num_leaves == 6
    assert structure_fn(x, is_leaf=lambda t: isinstance(t, tuple)).num_leaves == 3
    assert structure_fn(x, is_leaf=lambda t: isinstance(t, list)).num_leaves == 1
    assert structure_fn(x, is_leaf=lambda t: True).num_leaves == 1
    y = [[[(1,)], [[(2,)], {"a": (3,)}]]]
    assert structure_fn(y, is_leaf=lambda t: isinstance(t, tuple)).num_leaves == 3


@pytest.mark.parametrize("tree", TREES, ids=IDS)
def test_roundtrip_is_leaf(tree):
    """jax tests/tree_util_test.py::TreeTest::testRoundtripIsLeaf"""
    xs, treedef = tu.tree_flatten(tree, is_leaf=lambda t: isinstance(t, tuple))
    assert tu.tree_unflatten(treedef, xs) == tree


@pytest.mark.parametrize("tree", TREES, ids=IDS)
def test_all_leaves_with_trees(tree):
    """jax tests/tree_util_test.py::TreeTest::testAllLeavesWithTrees"""
    assert tu.all_leaves(tu.tree_leaves(tree))
    assert not tu.all_leaves([tree])


@pytest.mark.parametrize("leaf", LEAVES)
def test_all_leaves_with_leaves(leaf):
    """jax tests/tree_util_test.py::TreeTest::testAllLeavesWithLeaves (and ...AndCustomIsLeaf)"""
    assert tu.all_leaves([leaf])
    assert tu.all_leaves([leaf], is_leaf=lambda t: tu.all_leaves([t]))


@pytest.mark.parametrize("tree", TREES, ids=IDS)
def test_all_leaves_with_trees_and_custom_is_leaf(tree):
    """jax tests/tree_util_test.py::TreeTest::testAllLeavesWithTreesAndCustomIsLeaf"""
    assert not tu.all_leaves([tree], is_leaf=lambda t: tu.all_leaves([t]))


@pytest.mark.parametrize("tree", TREES, ids=IDS)
def test_compose(tree):
    """jax tests/tree_util_test.py::TreeTest::testCompose"""
    treedef = tu.tree_structure(tree)
    inner_treedef = tu.tree_structure(["*", "*", "*"])
    composed = treedef.compose(inner_treedef)
    expected_leaves = treedef.num_leaves * inner_treedef.num_leaves
    assert composed.num_leaves == expected_leaves
    expected_nodes = (treedef.num_nodes - treedef.num_leaves) + (
        inner_treedef.num_nodes * treedef.num_leaves
    )
    assert composed.num_nodes == expected_nodes
    leaves = [1] * expected_leaves
    assert tu.tree_leaves(tu.tree_unflatten(composed, leaves)) == leaves


def _nonempty(tree):
    if not tu.tree_structure(tree).num_leaves:
        pytest.skip("empty tree (as JAX's test)")


@pytest.mark.parametrize("tree", TREES, ids=IDS)
def test_transpose(tree):
    """jax tests/tree_util_test.py::TreeTest::testTranspose"""
    _nonempty(tree)

    def make_inner(x):
        return [x, x, x]

    outer_treedef = tu.tree_structure(tree)
    inner_treedef = tu.tree_structure(make_inner(1))
    nested = tu.tree_map(make_inner, tree)
    assert tu.tree_transpose(outer_treedef, inner_treedef, nested) == make_inner(tree)


@pytest.mark.parametrize("tree", TREES, ids=IDS)
def test_transpose_infer_inner_treedef(tree):
    """jax tests/tree_util_test.py::TreeTest::testTransposeInferInnerTreedef"""
    _nonempty(tree)
    if isinstance(tree, FlatCache):
        pytest.skip("the tree_map construction does not work for FlatCache (as JAX's test)")

    def make_inner(x):
        return [x, {"a": x}, (x,)]

    nested = tu.tree_map(make_inner, tree)
    assert tu.tree_transpose(tu.tree_structure(tree), None, nested) == make_inner(tree)


def test_transpose_mismatch_outer():
    """jax tests/tree_util_test.py::TreeTest::testTransposeMismatchOuter"""
    tree = {"a": [1, 2], "b": [3, 4]}
    outer = tu.tree_structure({"a": 1, "b": 2, "c": 3})
    with pytest.raises(TypeError, match="mismatch"):
        tu.tree_transpose(outer, tu.tree_structure([1, 2]), tree)


def test_transpose_mismatch_inner():
    """jax tests/tree_util_test.py::TreeTest::testTransposeMismatchInner"""
    tree = {"a": [1, 2], "b": [3, 4]}
    outer = tu.tree_structure({"a": 1, "b": 2})
    with pytest.raises(TypeError, match="mismatch"):
        tu.tree_transpose(outer, tu.tree_structure([1, 2, 3]), tree)


def test_transpose_with_custom_object():
    """jax tests/tree_util_test.py::TreeTest::testTransposeWithCustomObject"""
    outer = tu.tree_structure(FlatCache({"a": 1, "b": 2}))
    inner = tu.tree_structure([1, 2])
    expected = [FlatCache({"a": 3, "b": 5}), FlatCache({"a": 4, "b": 6})]
    assert tu.tree_transpose(outer, inner, FlatCache({"a": [3, 4], "b": [5, 6]})) == expected


@pytest.mark.parametrize("tree", TREES, ids=IDS)
def test_broadcast(tree):
    """jax tests/tree_util_test.py::TreeTest::testBroadcast"""
    if isinstance(tree, FlatCache):
        pytest.skip("the tree_map construction does not work for FlatCache (as JAX's test)")
    nested = tu.tree_map(lambda x: [x, x, x], tree)
    assert tu.tree_broadcast(tree, nested) == nested


def test_broadcast_simple():
    """jax tests/tree_util_test.py::TreeTest::testBroadcastSimple"""
    actual = tu.tree_broadcast((1, 2, 3), (0, {"a": 0, "b": 0}, (0, 0)))
    assert actual == (1, {"a": 2, "b": 2}, (3, 3))


@pytest.mark.parametrize(
    "prefix, full",
    [
        ((1, 2, 3), (0, {"a": 0, "b": 0})),
        ((1, 2), (0, {"a": 0, "b": 0}, (0, 0))),
        ((1, {"a": 0}), (0, {"a": 0, "b": 0})),
    ],
)
def test_broadcast_error(prefix, full):
    """jax tests/tree_util_test.py::TreeTest::testBroadcastError"""
    with pytest.raises(ValueError, match="pytree structure error"):
        tu.tree_broadcast(prefix, full)


@pytest.mark.parametrize(
    "tree, jax_string",
    [
        (None, "PyTreeDef(None)"),
        ((None,), "PyTreeDef((None,))"),
        ((), "PyTreeDef(())"),
        ([()], "PyTreeDef([()])"),
        ((1, 2), "PyTreeDef((*, *))"),
        (((1, "foo"), ["bar", (3, None, 7)]), "PyTreeDef(((*, *), [*, (*, None, *)]))"),
        ([3], "PyTreeDef([*])"),
        ({"a": 1, "b": 2}, "PyTreeDef({'a': *, 'b': *})"),
        ({}, "PyTreeDef({})"),
    ],
)
def test_string_representation(tree, jax_string):
    """jax tests/tree_util_test.py::TreeTest::testStringRepresentation (builtin containers;
    optree names the class PyTreeSpec) and testTreeDefWithEmptyDictStringRepresentation"""
    assert str(tu.tree_structure(tree)).replace("PyTreeSpec", "PyTreeDef") == jax_string


@pytest.mark.parametrize("tree", TREES[:18] + TREES[21:], ids=IDS[:18] + IDS[21:])
def test_pickle_round_trip(tree):
    """jax tests/tree_util_test.py::TreeTest::testPickleRoundTrip"""
    leaves, treedef = tu.tree_flatten(tree)
    restored = pickle.loads(pickle.dumps(treedef))
    assert restored == treedef
    assert restored.unflatten(leaves) == tree


def test_flatten_dict_key_order():
    """jax tests/tree_util_test.py::TreeTest::testFlattenDictKeyOrder (leaves, structure)"""
    d = {"b": 2, "a": 1, "c": {"b": 2, "a": 1}}
    leaves, treedef = tu.tree_flatten(d)
    assert leaves == [1, 2, 1, 2]
    assert str(treedef) == "PyTreeSpec({'a': *, 'b': *, 'c': {'a': *, 'b': *}})"
    assert tu.tree_unflatten(treedef, leaves) == d


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/sharp_edges.md#differences-from-torchfunc "
    "(rebuilt dicts keep their own key order; JAX rebuilds them sorted)",
)
@pytest.mark.parametrize("kind", ["dict", "defaultdict"])
def test_flatten_dict_key_order_rebuilt_sorted(kind):
    """jax tests/tree_util_test.py::TreeTest::testFlattenDictKeyOrder and
    testFlattenDefaultDictKeyOrder (the rebuilt key order)"""
    d = {"b": 2, "a": 1, "c": {"b": 2, "a": 1}}
    if kind == "defaultdict":
        d = collections.defaultdict(int, d)
    leaves, treedef = tu.tree_flatten(d)
    assert list(tu.tree_unflatten(treedef, leaves).keys()) == ["a", "b", "c"]


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/api/tree_util.md#pytrees-functorch_utilstree_util "
    "(keys that do not compare flatten in optree's fallback order instead of raising)",
)
def test_dict_keys_sortable():
    """jax tests/tree_util_test.py::TreeTest::testDictKeysSortable"""
    with pytest.raises((TypeError, ValueError)):
        tu.tree_flatten({"a": 1, 2: "b"})


def test_dict_keys_that_do_not_compare_flatten_in_a_fixed_order():
    """jax tests/tree_util_test.py::TreeTest::testDictKeysSortable (this library's rule)"""
    leaves, treedef = tu.tree_flatten({"a": 1, 2: "b"})
    assert tu.tree_flatten({2: "b", "a": 1})[0] == leaves
    assert tu.tree_unflatten(treedef, leaves) == {"a": 1, 2: "b"}


# ---------------------------------------------------------------------------------------------
# Key paths (plain keys here: docs/sharp_edges.md#differences-from-jax)


@pytest.mark.parametrize("inputs", TREES[:11] + TREES[15:18] + LEAVES)
def test_roundtrip_with_path(inputs):
    """jax tests/tree_util_test.py::TreeTest::testRoundtripWithPath"""
    key_leaves, treedef = tu.tree_flatten_with_path(inputs)
    assert tu.tree_unflatten(treedef, [leaf for _, leaf in key_leaves]) == inputs


def test_tree_map_with_path():
    """jax tests/tree_util_test.py::TreeTest::testTreeMapWithPath (plain keys)"""
    tree = [{i: i for i in range(10)}]
    all_zeros = tu.tree_map_with_path(lambda kp, val: val - kp[1] + kp[0], tree)
    assert all_zeros == [{i: 0 for i in range(10)}]


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/sharp_edges.md#differences-from-jax "
    "(key paths are tuples of plain keys, not SequenceKey/DictKey objects)",
)
def test_tree_map_with_path_jax_key_objects():
    """jax tests/tree_util_test.py::TreeTest::testTreeMapWithPath (JAX's key objects)"""
    tree = [{i: i for i in range(10)}]
    all_zeros = tu.tree_map_with_path(lambda kp, val: val - kp[1].key + kp[0].idx, tree)
    assert all_zeros == [{i: 0 for i in range(10)}]


def test_tree_map_with_path_multiple_trees():
    """jax tests/tree_util_test.py::TreeTest::testTreeMapWithPathMultipleTrees"""
    tree1 = [AnObject(x=12, y={"cin": [1, 4, 10], "bar": None}, z="constantdef"), 5]
    tree2 = [AnObject(x=2, y={"cin": [2, 2, 2], "bar": None}, z="constantdef"), 2]
    from_two = tu.tree_map_with_path(lambda kp, a, b: a + b, tree1, tree2)
    assert from_two == tu.tree_map(lambda a: a + 2, tree1)


def test_tree_leaves_with_path():
    """jax tests/tree_util_test.py::TreeTest::testTreeLeavesWithPath (plain keys)"""
    tree = [{i: i for i in range(10)}]
    assert tu.tree_leaves_with_path(tree) == [((0, i), i) for i in range(10)]


def test_key_str():
    """jax tests/tree_util_test.py::TreeTest::testKeyStr (plain keys: a namedtuple field is its
    index)"""
    tree1 = [ATuple(12, {"cin": [1, 4, 10], "bar": None}), torch.arange(5)]
    flattened, _ = tu.tree_flatten_with_path(tree1)
    strs = [tu.keystr(kp) for kp, _ in flattened]
    assert strs == ["[0][0]", "[0][1]['cin'][0]", "[0][1]['cin'][1]", "[0][1]['cin'][2]", "[1]"]
    strs = [tu.keystr(kp, simple=True, separator="/") for kp, _ in flattened]
    assert strs == ["0/0", "0/1/cin/0", "0/1/cin/1", "0/1/cin/2", "1"]


@pytest.mark.xfail(
    strict=True,
    reason="documented difference: docs/sharp_edges.md#differences-from-jax "
    "(key paths are plain keys, so a namedtuple field prints as [0], not .foo)",
)
def test_key_str_jax_attribute_form():
    """jax tests/tree_util_test.py::TreeTest::testKeyStr (JAX's strings)"""
    flattened, _ = tu.tree_flatten_with_path([ATuple(12, {"cin": [1]})])
    assert [tu.keystr(kp) for kp, _ in flattened] == ["[0].foo", "[0].bar['cin'][0]"]


def test_tree_flatten_with_path_builtin():
    """jax tests/tree_util_test.py::TreeTest::testTreeFlattenWithPathBuiltin"""
    x = (1, {"a": 2, "b": 3})
    flattened = tu.tree_flatten_with_path(x)
    assert flattened[0] == [((0,), 1), ((1, "a"), 2), ((1, "b"), 3)]
    assert flattened[1] == tu.tree_flatten(x)[1]


def test_tree_flatten_with_path_custom():
    """jax tests/tree_util_test.py::TreeTest::testTreeFlattenWithPathCustom (registered without
    keys: children get their flat index)"""
    x = [AnObject(x=12, y={"foo": Special(x=2, y=3), "bar": None}, z="constantdef"), 5]
    flattened, _ = tu.tree_flatten_with_path(x)
    assert flattened == [((0, 0), 12), ((0, 1, "foo", 0), 2), ((0, 1, "foo", 1), 3), ((1,), 5)]


@pytest.mark.parametrize(
    "d, keys",
    [
        (collections.defaultdict(int, {"b": 2, "a": 1, "c": {"b": 2, "a": 1}}), "abc"),
        (collections.OrderedDict({"b": 2, "a": 1, "c": {"b": 2, "a": 1}}), "bac"),
    ],
)
def test_flatten_with_path_default_and_ordered_dict(d, keys):
    """jax tests/tree_util_test.py::TreeTest::testFlattenWithPathDefaultDict and
    testFlattenWithPathOrderedDict"""
    leaves, treedef = tu.tree_flatten_with_path(d)
    expected_top = [((k,), d[k]) for k in keys if k != "c"]
    assert leaves == [*expected_top, (("c", "a"), 1), (("c", "b"), 2)]
    assert tu.tree_unflatten(treedef, [v for _, v in leaves]) == d
    assert treedef == tu.tree_flatten(d)[1]


def test_tree_map_with_path_with_is_leaf_argument():
    """jax tests/tree_util_test.py::TreeTest::testTreeMapWithPathWithIsLeafArgument"""
    x = ((1, 2), [3, 4, 5])
    y = (([3], torch.tensor(0)), ([0], 7, [5, 6]))
    out = tu.tree_map_with_path(
        lambda kp, *xs: (kp[0], *xs), x, y, is_leaf=lambda n: isinstance(n, list)
    )
    assert out[0] == ((0, 1, [3]), (0, 2, torch.tensor(0)))
    assert out[1] == (1, [3, 4, 5], ([0], 7, [5, 6]))


def test_flatten_one_level():
    """jax tests/tree_util_test.py::TreeTest::testFlattenOneLevel"""
    EmptyTuple = collections.namedtuple("EmptyTuple", ())
    tree1 = {
        "a": 1,
        "sub": [torch.tensor((1, 2)), ATuple(foo=(), bar=[None])],
        "obj": AnObject(x=EmptyTuple(), y=0, z="constantdef"),
    }
    assert tu.flatten_one_level(tree1["sub"])[0] == tree1["sub"]
    assert tu.flatten_one_level(tree1["sub"][1])[0] == [(), [None]]
    assert tu.flatten_one_level(tree1["obj"])[0] == [EmptyTuple(), 0]
    children, meta = tu.flatten_one_level(tree1)
    assert list(meta) == ["a", "obj", "sub"] and children[0] == 1
    for leaf in (1, torch.tensor((1, 2))):
        with pytest.raises(ValueError, match="can't tree-flatten type"):
            tu.flatten_one_level(leaf)


def test_pytree_without_keys_isnt_treated_as_leaf():
    """jax tests/tree_util_test.py::TreeTest::testPyTreeWithoutKeysIsntTreatedAsLeaf"""
    leaves, _ = tu.tree_flatten_with_path(Special([1, 2], [3, 4]))
    assert len(leaves) == 4


def test_namedtuple_registered_without_keys_isnt_treated_as_leaf():
    """jax tests/tree_util_test.py::TreeTest::testNamedTupleRegisteredWithoutKeysIsntTreatedAsLeaf"""
    ATuple2 = collections.namedtuple("ATuple2", ("foo", "bar"))
    with pytest.warns(UserWarning, match="namedtuple"):  # optree: overriding a namedtuple type
        tu.register_pytree_node(
            ATuple2, lambda o: ((o.foo,), o.bar), lambda bar, foo: ATuple2(foo[0], bar)
        )
    leaves, _ = tu.tree_flatten_with_path(ATuple2(1, "hi"))
    assert len(leaves) == 1


class _BadFlatten:
    def __init__(self, foo, bar):
        self.foo, self.bar = foo, bar


@pytest.mark.parametrize(
    "name, flatten_func, got",
    [
        ("NonTuple", lambda o: "hello", "str 'hello'"),
        ("BadArityTuple", lambda o: (2, 3, 4), "tuple (2, 3, 4)"),
        ("NonIterableLeaves", lambda o: (7, 7), "tuple (7, 7)"),
    ],
)
def test_bad_flatten(name, flatten_func, got):
    """jax tests/tree_util_test.py::TreeTest::testBadFlattenNonTuple, testBadFlattenBadArityTuple
    and testBadFlattenNonIterableLeaves"""
    cls = type(f"BadFlatten{name}", (_BadFlatten,), {})
    tu.register_pytree_node(cls, flatten_func, lambda bar, foo: cls(foo[0], bar))
    msg = (
        f"register_pytree_node(BadFlatten{name}, flatten_func, unflatten_func): flatten_func "
        "must return a (children, aux_data) tuple with iterable children; expected e.g. "
        f"((x.a, x.b), None), got {got}."
    )
    with pytest.raises(ValueError, match=re.escape(msg)):
        tu.tree_flatten(cls(3, 4))


# ---------------------------------------------------------------------------------------------
# RavelUtilTest


@pytest.mark.parametrize(
    "tree, dtype",
    [
        ([torch.tensor([3.0]), torch.tensor([[1.0, 2.0], [3.0, 4.0]])], torch.float32),
        (
            [
                torch.tensor([3], dtype=torch.int32),
                torch.tensor([[1, 2], [3, 4]], dtype=torch.int32),
            ],
            torch.int32,
        ),
        (
            [torch.tensor([3], dtype=torch.int32), torch.tensor([[1.0, 2.0], [3.0, 4.0]])],
            torch.float32,
        ),
        (
            [torch.tensor([False]), torch.tensor([[1, 2], [3, 4]], dtype=torch.int32)],
            torch.int32,
        ),
        (
            [torch.tensor([1.0]), torch.tensor([[1, 2 + 3j], [3, 4]], dtype=torch.complex64)],
            torch.complex64,
        ),
    ],
    ids=["Floats", "Ints", "MixedFloatInt", "MixedIntBool", "MixedFloatComplex"],
)
def test_ravel(tree, dtype):
    """jax tests/tree_util_test.py::RavelUtilTest::testFloats, testInts, testMixedFloatInt,
    testMixedIntBool and testMixedFloatComplex"""
    raveled, unravel = flatten_util.ravel_pytree(tree)
    assert raveled.dtype == dtype
    back = unravel(raveled)
    for a, b in zip(back, tree):
        assert a.dtype == b.dtype
        assert torch.equal(a, b)


def test_ravel_empty():
    """jax tests/tree_util_test.py::RavelUtilTest::testEmpty"""
    raveled, unravel = flatten_util.ravel_pytree([])
    assert raveled.dtype == torch.float32  # convention (the default dtype)
    assert unravel(raveled) == []


def test_ravel_dtype_polymorphic_unravel():
    """jax tests/tree_util_test.py::RavelUtilTest::testDtypePolymorphicUnravel"""
    x = torch.arange(10, dtype=torch.float32)
    x_flat, unravel = flatten_util.ravel_pytree(x)
    y = x_flat < 5.3
    assert unravel(y).dtype == y.dtype


def test_ravel_dtype_monomorphic_unravel():
    """jax tests/tree_util_test.py::RavelUtilTest::testDtypeMonomorphicUnravel"""
    x1, x2 = torch.arange(10, dtype=torch.float32), torch.arange(10, dtype=torch.int32)
    x_flat, unravel = flatten_util.ravel_pytree((x1, x2))
    with pytest.raises(TypeError, match=re.escape("expected dtype torch.float32, got dtype")):
        unravel(x_flat < 5.3)


# ---------------------------------------------------------------------------------------------
# TreePrefixErrorsTest, through the public calls that report prefix errors


@pytest.mark.parametrize(
    "prefix, full, expected",
    [
        ((1, 2), [1, 2], "different types at key path\n    prefix_tree"),
        (((1,), (2,)), ([3], (4,)), "different types at key path\n    prefix_tree[0]"),
        ((1,), (2, 3), "different numbers of pytree children at key path\n    prefix_tree"),
        ([[1]], [[2, 3]], "different numbers of pytree children at key path\n    prefix_tree[0]"),
        ({"a": 1}, {"a": 2, "b": 3}, "different pytree keys at key path\n    prefix_tree"),
        ([{1: 2}], [{3: 4}], "different pytree keys at key path\n    prefix_tree[0]"),
        (
            {"{oops}": []},
            {"{oops}": [{}]},
            "different numbers of pytree children at key path\n    prefix_tree['{oops}']",
        ),
        ({"{oops}": {}}, {"{oops}": 1}, "different types at key path\n    prefix_tree['{oops}']"),
    ],
)
def test_prefix_errors(prefix, full, expected):
    """jax tests/tree_util_test.py::TreePrefixErrorsTest (test_different_types,
    ..._types_nested, ..._num_children_tuple, ..._num_children_nested, ..._print_key_diff,
    ..._metadata_nested, test_curly_braces_in_keys_*), read from tree_broadcast's error"""
    with pytest.raises(ValueError, match=re.escape("pytree structure error: " + expected)):
        tu.tree_broadcast(prefix, full)


def test_prefix_no_errors():
    """jax tests/tree_util_test.py::TreePrefixErrorsTest::test_no_errors"""
    assert tu.tree_broadcast((1, 2), ((11, 12, 13), 2)) == ((1, 1, 1), 2)


# ---------------------------------------------------------------------------------------------
# RegistrationTest


def test_register_dataclass_with_field_specifier():
    """jax tests/tree_util_test.py::RegistrationTest::test_register_dataclass_with_field_specifier"""

    @tu.register_dataclass
    @dataclasses.dataclass
    class Foo:
        x: int
        y: int = dataclasses.field(metadata=dict(static=True))

    assert len(tu.tree_leaves(Foo(2, 3))) == 1


def test_register_dataclass_field_errors():
    """jax tests/tree_util_test.py::RegistrationTest::test_register_dataclass_field_errors"""

    class Foo:  # not a dataclass
        x: int
        y: int

    with pytest.raises(TypeError, match=re.escape("may be omitted only for a dataclass")):
        tu.register_dataclass(Foo)
    with pytest.raises(TypeError, match=re.escape("data_fields=['x'], meta_fields=None")):
        tu.register_dataclass(Foo, data_fields=["x"])
    with pytest.raises(TypeError, match=re.escape("data_fields=None, meta_fields=['y']")):
        tu.register_dataclass(Foo, meta_fields=["y"])


def test_register_dataclass_missing_fields():
    """jax tests/tree_util_test.py::RegistrationTest::test_register_dataclass_missing_fields"""

    @dataclasses.dataclass
    class Foo:
        x: int
        y: int
        z: float = dataclasses.field(init=False)

    with pytest.raises(ValueError, match=re.escape("init fields ['y'] are in neither")):
        tu.register_dataclass(Foo, data_fields=["x"], meta_fields=[])
    tu.register_dataclass(Foo, data_fields=["x"], meta_fields=["y"])  # z is not in __init__


def test_register_dataclass_unexpected_fields():
    """jax tests/tree_util_test.py::RegistrationTest::test_register_dataclass_unexpected_fields"""

    @dataclasses.dataclass
    class Foo:
        x: int
        y: float

    with pytest.raises(ValueError, match=re.escape("fields ['z'] are not fields of Foo")):
        tu.register_dataclass(Foo, data_fields=["x"], meta_fields=["y", "z"])


def test_register_dataclass_overlapping_fields():
    """jax tests/tree_util_test.py::RegistrationTest::test_register_dataclass_overlapping_fields"""

    @dataclasses.dataclass
    class Foo:
        x: int
        y: float

    with pytest.raises(
        ValueError, match=re.escape("fields ['x'] are in both data_fields and meta_fields")
    ):
        tu.register_dataclass(Foo, data_fields=["x", "y"], meta_fields=["x"])


def test_register_dataclass_drop_fields():
    """jax tests/tree_util_test.py::RegistrationTest::test_register_dataclass_drop_fields"""

    @dataclasses.dataclass
    class Foo:
        x: int
        y: int = dataclasses.field(default=42)
        z: int = dataclasses.field(default=42)

    tu.register_dataclass(Foo, data_fields=["x"], meta_fields=[], drop_fields=["y", "z"])
    leaves, treedef = tu.tree_flatten(Foo(1, 2, 3))
    assert leaves == [1]
    assert tu.tree_unflatten(treedef, [5]) == Foo(5)


def test_register_dataclass_invalid_plain_class():
    """jax tests/tree_util_test.py::RegistrationTest::test_register_dataclass_invalid_plain_class"""

    class Foo:
        x: int
        y: int

        def __init__(self, x, y):
            self.x, self.y = x, y

    tu.register_dataclass(Foo, data_fields=["x"], meta_fields=[])  # no validation, as JAX


def test_static_types_have_no_leaves():
    """jax tests/tree_util_test.py::StaticTest::test_name (and register_static's meaning)"""
    assert StaticInt.__name__ == "StaticInt" and BlackBox.__name__ == "BlackBox"
    assert tu.tree_leaves([StaticInt(2), StaticTuple((2, None)), BlackBox(3)]) == []
    assert tu.tree_structure(BlackBox(1)) == tu.tree_structure(BlackBox(2))
    assert tu.tree_structure(StaticInt(1)) != tu.tree_structure(StaticInt(2))
