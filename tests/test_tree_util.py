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
    with pytest.raises(ValueError, match=re.escape("must be given together")):
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
