"""The engine choice and the private torch hooks it relies on (NOTE [two engines])."""

from __future__ import annotations

import torch
import torch.func

import functorch_utils as fu
from functorch_utils import _engine


def test_maybe_current_level_hook():
    # Our tape/torch.func switch relies on this private hook: None outside transforms.
    assert torch._C._functorch.maybe_current_level() is None
    assert _engine.use_tape()
    seen = []
    torch.func.vmap(lambda x: seen.append(_engine.use_tape()) or x)(torch.ones(2))
    torch.func.grad(lambda x: seen.append(_engine.use_tape()) or x.sum())(torch.ones(2))
    assert seen == [False, False]


def test_direct_engine_call_matches_autograd_grad():
    x = torch.randn(3, requires_grad=True)
    out = (x.sin() * x).sum()
    (ref,) = torch.autograd.grad(out, x, retain_graph=True)
    (ours,) = _engine.tape_grad(
        (out,), (torch.ones_like(out),), (x,), create_graph=False, retain_graph=True
    )
    assert torch.equal(ref, ours)
    y = torch.randn(2, requires_grad=True)
    (z,) = _engine.tape_grad(
        (out,), (torch.ones_like(out),), (y,), create_graph=False, retain_graph=False
    )
    assert torch.equal(z, torch.zeros(2))


def test_tape_path_keeps_no_double_backward_graph():
    # first-order grad at top level frees its graph (no create_graph)
    g = fu.grad(lambda x: (x.exp()).sum())(torch.ones(3))
    assert g.grad_fn is None


def test_nested_top_level_transforms_stay_on_tape_and_are_correct():
    x = torch.tensor([0.2, 0.5], dtype=torch.float64)
    h = fu.jacrev(fu.grad(lambda x: (x.sin() * x).sum()))(x)
    ref = torch.func.hessian(lambda x: (x.sin() * x).sum())(x)
    torch.testing.assert_close(h, ref)


def test_nested_forward_mode_hook():
    seen = []

    def probe(x):
        seen.append(_engine.nested_forward_mode())
        return x

    one = torch.tensor(1.0)
    torch.func.jvp(probe, (one,), (one,))
    torch.func.jvp(lambda x: torch.func.jvp(probe, (x,), (one,))[1], (one,), (one,))
    assert seen == [False, True]
