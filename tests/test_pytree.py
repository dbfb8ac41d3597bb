"""The optree bridge (functorch_utils/_pytree.py): the one partition/combine pair and the one
side channel every transform uses."""

from __future__ import annotations

import collections

import pytest
import torch

from functorch_utils import _pytree

from .helpers import Params, Point


def test_partition_picks_in_leaf_order_and_combine_puts_values_back():
    tree = {"b": [torch.tensor(1.0), 3, "s"], "a": Point(torch.tensor(2.0), None)}
    picked, part = _pytree.partition(tree, _pytree.is_float_like)
    assert [float(x) for x in picked] == [2.0, 1.0]  # dict keys sorted, as JAX
    back = part.combine([torch.tensor(20.0), torch.tensor(10.0)])
    assert back["a"].x.item() == 20.0 and back["b"][0].item() == 10.0
    assert back["b"][1:] == [3, "s"] and back["a"].y is None
    filled = part.fill([1, 2], rest=None)
    assert filled == {"a": Point(1, None), "b": [2, None, None]}


def test_partition_of_a_bare_tensor_needs_no_optree():
    x = torch.ones(2)
    picked, part = _pytree.partition(x, _pytree.is_float_like)
    assert picked == [x] and part.spec is None
    assert part.combine([torch.zeros(2)]).sum() == 0
    ints, part = _pytree.partition(torch.ones(2, dtype=torch.int64), _pytree.is_float_like)
    assert ints == [] and part.fill([], rest="r") == "r"


def test_partition_of_registered_dataclasses_keeps_static_fields():
    p = Params(torch.ones(2), torch.zeros(()), name="lin")
    picked, part = _pytree.partition(p, _pytree.is_tensor)
    assert len(picked) == 2
    q = part.combine([2 * t for t in picked])
    assert isinstance(q, Params) and q.name == "lin" and q.w.sum() == 4


def test_stash_carries_structure_and_non_tensor_leaves():
    stash = _pytree.Stash()
    aux = {"loss": torch.tensor(1.5), "note": "ok", "n": collections.OrderedDict(k=2)}
    tensors = stash.put(aux)
    assert len(tensors) == 1
    back = stash.get([tensors[0] * 2])
    assert back["note"] == "ok" and back["n"] == {"k": 2} and back["loss"].item() == 3.0
    # the last run's structure wins (a function run once per chunk gives the same each time)
    stash.put(("a", torch.ones(1)))
    assert stash.get([torch.zeros(1)])[0] == "a"


def test_stash_get_before_put_is_a_bug_in_the_caller():
    with pytest.raises(AssertionError):
        _pytree.Stash().get([])


def test_flatten_of_a_cyclic_tree_is_a_value_error():
    a: list = [torch.ones(1)]
    a.append(a)
    with pytest.raises(ValueError, match="cyclic"):
        _pytree.flatten(a)


def test_leaf_names_are_code_a_user_would_write():
    tree = {"w": [torch.ones(1), Point(torch.ones(1), torch.ones(1))]}
    assert _pytree.leaf_names(tree, "args[0]") == [
        "args[0]['w'][0]",
        "args[0]['w'][1].x",
        "args[0]['w'][1].y",
    ]
