"""Tests of functorch_utils.testing._problem: user functions of pytrees as flat problems."""

from __future__ import annotations

import re
from typing import Any

import pytest
import torch

from functorch_utils.testing import check_grads, check_jvp
from functorch_utils.testing._problem import (
    OutSelector,
    check_args_tuple,
    flat_problem,
    fwd_problem,
    prepare_args,
    resolve_eps,
    rev_problem,
)


def test_prepare_args_picks_float_leaves_and_keeps_the_rest() -> None:
    args = ({"w": torch.ones(2), "n": 3, "idx": torch.tensor([1, 0])}, 0.5, None)
    a = prepare_args("call", lambda *a: a, args)
    assert a.names == ["args[0]['w']", "args[1]"]
    assert a.xs[1].dtype == torch.get_default_dtype() and a.xs[1].dim() == 0  # a float leaf
    rebuilt = a.rebuild([torch.zeros(2), torch.tensor(2.0)])
    assert rebuilt[0]["n"] == 3 and rebuilt[2] is None
    assert torch.equal(rebuilt[0]["idx"], torch.tensor([1, 0]))
    tangent = a.rebuild_tangent([torch.ones(2), torch.tensor(1.0)])
    assert torch.equal(tangent[0]["idx"], torch.zeros(2, dtype=torch.long))  # zeros, same dtype
    assert tangent[0]["n"] == 3


def test_args_must_be_a_tuple_and_f_callable() -> None:
    with pytest.raises(TypeError, match=re.escape("call: args must be a tuple of positional")):
        check_args_tuple("call", torch.ones(2))
    assert check_args_tuple("call", [1, 2]) == (1, 2)
    with pytest.raises(TypeError, match=re.escape("call: f is not callable; expected a function")):
        prepare_args("call", 3, (torch.ones(1),))


def test_flat_problem_selects_float_outputs_and_names_them() -> None:
    def f(p: dict[str, Any]) -> dict[str, Any]:
        return {"y": torch.sin(p["x"]), "count": 2, "mask": p["x"] > 0}

    a = prepare_args("call", f, ({"x": torch.linspace(-1, 1, 3, dtype=torch.float64)},))
    prob, sel = flat_problem("call", f, a)
    assert prob.names == ["args[0]['x']"] and prob.out_names == ["out['y']"]
    (y,) = prob.fun(*prob.xs)
    torch.testing.assert_close(y, torch.sin(prob.xs[0]))
    ct = sel.rebuild_cotangent([torch.ones(3, dtype=torch.float64)])
    assert ct["count"] == 2 and not ct["mask"].any()


def test_out_selector_refuses_a_changed_structure() -> None:
    sel = OutSelector("call")
    sel.select({"a": torch.ones(1)})
    with pytest.raises(AssertionError, match="the output structure changed between calls"):
        sel.select({"b": torch.ones(1)})
    with pytest.raises(AssertionError, match="the tangent output does not have the output's"):
        sel.select_like([torch.ones(1)], "tangent output")


def test_a_bare_tensor_output_round_trips() -> None:
    sel = OutSelector("call")
    assert len(sel.select(torch.ones(2))) == 1
    assert len(sel.select_like(torch.zeros(2), "tangent output")) == 1
    assert torch.equal(sel.rebuild_cotangent([torch.full((2,), 3.0)]), torch.full((2,), 3.0))


def test_higher_order_problems() -> None:
    x = torch.tensor([0.3, -0.7], dtype=torch.float64)
    a = prepare_args("call", torch.sin, (x,))
    prob, _ = flat_problem("call", torch.sin, a)
    fwd = fwd_problem(prob)
    assert fwd.forward_levels == 1 and len(fwd.xs) == 2
    out, tangent = fwd.fun(x, torch.ones(2, dtype=torch.float64))
    torch.testing.assert_close(out, torch.sin(x))
    torch.testing.assert_close(tangent, torch.cos(x))
    rev = rev_problem(fwd)
    assert rev.forward_levels == 1  # a jvp level inside stays counted
    (ct,) = rev_problem(prob).fun(x)
    torch.testing.assert_close(ct, torch.sin(x) * torch.cos(x))


def test_per_leaf_eps() -> None:
    args = ({"w": torch.ones(2), "b": torch.ones(1)}, torch.ones(3))
    names = ["args[0]['b']", "args[0]['w']", "args[1]"]
    assert resolve_eps("call", {"args[0]['w']": 1e-3}, args, names) == [None, 1e-3, None]
    assert resolve_eps("call", ({"w": 1e-2, "b": None}, 1e-4), args, names) == [None, 1e-2, 1e-4]
    assert resolve_eps("call", 1e-3, args, names) == []  # one step for all: on the options
    with pytest.raises(ValueError, match="eps names key paths that are not floating leaves"):
        resolve_eps("call", {"args[0]['v']": 1e-3}, args, names)
    with pytest.raises(ValueError, match="must be a positive float or None"):
        resolve_eps("call", {"args[1]": -1.0}, args, names)


def test_options_are_validated() -> None:
    x = (torch.ones(2, dtype=torch.float64),)
    with pytest.raises(TypeError, match=re.escape("atol must be a number; expected a float or")):
        check_grads(torch.sin, x, atol="big")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("rtol must be finite and non-negative")):
        check_grads(torch.sin, x, rtol=-1.0)
    with pytest.raises(ValueError, match=re.escape("eps must be positive; expected a float > 0")):
        check_grads(torch.sin, x, eps=0.0)
    with pytest.raises(TypeError, match=re.escape("seed must be an int; expected an int")):
        check_jvp(torch.sin, lambda p, t: (p, t), x, seed=1.5)  # type: ignore[arg-type]
