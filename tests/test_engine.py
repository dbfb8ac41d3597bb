"""The engine: one policy (tape vs torch.func), one reverse-mode core, and grad modes.

NOTE [grad mode] in functorch_utils/_engine.py: the ambient grad mode never changes an answer.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
import torch.func

import functorch_utils as fu
from functorch_utils import _engine

from .helpers import LegacySquare, tree_allclose

X = [0.3, -1.2, 2.0]


def f(x):
    return (x**3 * torch.sin(x)).sum()


def vec(x):
    return torch.sin(x) * x


# Each case: a transform applied to x, and the same thing computed by torch.func on a plain x.
CASES = {
    "grad": (lambda x: fu.grad(f)(x), lambda x: torch.func.grad(f)(x)),
    "value_and_grad": (lambda x: fu.value_and_grad(f)(x), lambda x: torch.func.grad_and_value(f)(x)[::-1]),
    "vjp": (lambda x: fu.vjp(vec, x)[1](torch.ones(3, dtype=x.dtype)), lambda x: torch.func.vjp(vec, x)[1](torch.ones(3, dtype=x.dtype))),
    "jacrev": (lambda x: fu.jacrev(vec)(x), lambda x: torch.func.jacrev(vec)(x)),
    "jacfwd": (lambda x: fu.jacfwd(vec)(x), lambda x: torch.func.jacfwd(vec)(x)),
    "hessian": (lambda x: fu.hessian(f)(x), lambda x: torch.func.hessian(f)(x)),
    "hvp": (lambda x: fu.hvp(f, (x,), (torch.ones_like(x),))[1], lambda x: torch.func.hessian(f)(x) @ torch.ones_like(x)),
    "jvp": (lambda x: fu.jvp(vec, (x,), (torch.ones_like(x),)), lambda x: torch.func.jvp(vec, (x,), (torch.ones_like(x),))),
    "linearize": (lambda x: fu.linearize(vec, x)[1](torch.ones_like(x)), lambda x: torch.func.jvp(vec, (x,), (torch.ones_like(x),))[1]),
    "grad_grad": (lambda x: fu.grad(fu.grad(lambda y: (y**3).sum() ** 2))(x[0]), lambda x: torch.func.grad(torch.func.grad(lambda y: (y**3).sum() ** 2))(x[0])),
    "vmap_grad": (lambda x: fu.vmap(fu.grad(lambda y: y**3 * torch.sin(y)))(x), lambda x: torch.func.vmap(torch.func.grad(lambda y: y**3 * torch.sin(y)))(x)),
    "linear_transpose": (lambda x: fu.linear_transpose(lambda v: 2.0 * v, x)(torch.ones_like(x)), lambda x: (2.0 * torch.ones_like(x),)),
}  # fmt: skip

MODES = {
    "enabled": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "grad_disabled": lambda: torch.set_grad_enabled(False),
    "inference_mode": torch.inference_mode,
}


def _plain(res):
    return fu.tree_util.tree_map(lambda t: t.detach().clone(), res)


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("kind", ["plain", "requires_grad", "parameter"])
def test_every_transform_gives_the_same_answer_in_every_grad_mode(case, mode, kind):
    ours, ref = CASES[case]
    base = torch.tensor(X, dtype=torch.float64)
    expected = ref(base)
    x = {
        "plain": base.clone(),
        "requires_grad": base.clone().requires_grad_(),
        "parameter": torch.nn.Parameter(base.clone()),
    }[kind]
    with MODES[mode]():
        got = ours(x)
    tree_allclose(_plain(got), _plain(expected))
    assert x.grad is None and x.requires_grad == (kind != "plain")


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_tensor_made_under_inference_mode_is_differentiated_outside_it(case):
    ours, ref = CASES[case]
    with torch.inference_mode():
        x = torch.tensor(X, dtype=torch.float64)
    tree_allclose(_plain(ours(x)), _plain(ref(torch.tensor(X, dtype=torch.float64))))


def test_closing_over_an_inference_tensor_is_differentiated():
    with torch.inference_mode():
        w = torch.tensor([3.0, 4.0])
    g = fu.grad(lambda x: (x * w).sum() ** 2)(torch.ones(2))
    torch.testing.assert_close(g, torch.tensor([42.0, 56.0]))


def test_issue_example_parameter_under_no_grad():
    w = torch.nn.Parameter(torch.tensor([1.0, 2.0]))
    with torch.no_grad():
        g = fu.grad(lambda w: (w**3).sum())(w)
    torch.testing.assert_close(g, torch.tensor([3.0, 12.0]))
    assert g.grad_fn is None and w.grad is None


def _fixed_point_sqrt():
    """JAX's fixed_point recipe: implicit differentiation whose bwd calls vjp (grad mode off)."""

    def iterate(a, x0):
        x = x0
        for _ in range(60):
            x = 0.5 * (x + a / x)
        return x

    fixed_point = fu.custom_vjp(iterate)

    def fwd(a, x0):
        x = iterate(a, x0)
        return x, (a, x)

    def bwd(res, ct):
        a, x = res
        step = lambda a, x: 0.5 * (x + a / x)  # noqa: E731
        _, vjp_a = fu.vjp(lambda a: step(a, x), a)
        _, vjp_x = fu.vjp(lambda x: step(a, x), x)
        w = ct
        for _ in range(60):  # w = ct + (d step / dx)^T w
            w = ct + vjp_x(w)[0]
        return vjp_a(w)[0], torch.zeros_like(x)

    fixed_point.defvjp(fwd, bwd)
    return fixed_point


def test_vjp_inside_a_custom_vjp_backward_is_not_zero():
    fixed_point = _fixed_point_sqrt()
    a = torch.tensor(4.0, dtype=torch.float64)
    g = fu.grad(lambda a: fixed_point(a, torch.tensor(1.0, dtype=torch.float64)))(a)
    torch.testing.assert_close(g, torch.tensor(0.25, dtype=torch.float64))  # d sqrt(a)/da at 4


def test_grad_inside_an_autograd_backward_is_not_zero():
    seen = []

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(x):
            return x.clone()

        @staticmethod
        def setup_context(ctx, inputs, output):
            pass

        @staticmethod
        def backward(ctx, g):
            seen.append(fu.grad(lambda y: (y**2).sum())(torch.tensor([3.0])))
            return g

    x = torch.ones(1, requires_grad=True)
    Probe.apply(x).sum().backward()
    torch.testing.assert_close(seen[0], torch.tensor([6.0]))


def test_policy_tape_only_at_top_level_with_grad_recording_possible():
    assert _engine.use_tape()
    with torch.no_grad():
        assert _engine.use_tape()
    with torch.inference_mode():
        assert not _engine.use_tape()
    seen = []
    torch.func.vmap(lambda x: seen.append(_engine.use_tape()) or x)(torch.ones(2))
    torch.func.grad(lambda x: seen.append(_engine.use_tape()) or x.sum())(torch.ones(2))
    assert seen == [False, False]


def test_tape_path_keeps_no_double_backward_graph():
    g = fu.grad(lambda x: (x.exp()).sum())(torch.ones(3))
    assert g.grad_fn is None


def test_outer_autograd_flows_through_a_gradient():
    x = torch.tensor([1.0, 2.0], requires_grad=True)
    g = fu.grad(lambda x: (x**3).sum())(x)
    (h,) = torch.autograd.grad(g.sum(), x)
    torch.testing.assert_close(h, torch.tensor([6.0, 12.0]))


def test_nested_top_level_transforms_stay_on_tape_and_are_correct():
    x = torch.tensor([0.2, 0.5], dtype=torch.float64)
    h = fu.jacrev(fu.grad(lambda x: (x.sin() * x).sum()))(x)
    ref = torch.func.hessian(lambda x: (x.sin() * x).sum())(x)
    torch.testing.assert_close(h, ref)


def test_legacy_function_runs_on_the_tape_even_under_no_grad():
    x = torch.tensor([1.0, 2.0])
    with torch.no_grad():
        g = fu.grad(lambda x: LegacySquare.apply(x).sum())(x)
    torch.testing.assert_close(g, torch.tensor([2.0, 4.0]))


def test_legacy_function_under_inference_mode_is_a_clear_error():
    with torch.inference_mode(), pytest.raises(_engine.LegacyFunctionError, match="legacy"):
        fu.grad(lambda x: LegacySquare.apply(x).sum())(torch.ones(2))


# NOTE [tape blind spots]: where the tape cannot give torch.func's answer, torch.func's path.


def test_autograd_functional_inside_grad_is_refused_not_zero():
    x = torch.tensor([1.0, 2.0])

    def g(x):
        return torch.autograd.functional.jacobian(lambda y: y**3, x).sum()

    with pytest.raises(TypeError, match=r"grad\(g\): the function does something"):
        fu.grad(g)(x)


def test_a_constant_function_still_gets_zeros_on_every_engine():
    c = torch.tensor(3.0)
    torch.testing.assert_close(fu.grad(lambda x: c)(torch.ones(2)), torch.zeros(2))
    torch.testing.assert_close(
        fu.jacrev(lambda x: c * torch.ones(2))(torch.ones(3)), torch.zeros(2, 3)
    )


@pytest.mark.parametrize("transform", ["jacfwd", "jacrev", "grad", "vmap_grad"])
def test_in_place_write_into_a_non_differentiated_argument(transform):
    # torch.func wraps every argument at its level; so do we (wrap_for_level)
    x = torch.tensor([1.0, 2.0])

    def k(x, buf):
        buf.copy_(x * 2)
        return (buf * x).sum() if transform.endswith("grad") else buf * x

    if transform == "jacfwd":
        got, want = fu.jacfwd(k)(x, torch.zeros(2)), torch.func.jacfwd(k)(x, torch.zeros(2))
    elif transform == "jacrev":
        got, want = fu.jacrev(k)(x, torch.zeros(2)), torch.func.jacrev(k)(x, torch.zeros(2))
    elif transform == "grad":
        got, want = fu.grad(k)(x, torch.zeros(2)), torch.func.grad(k)(x, torch.zeros(2))
    else:
        xs = torch.stack([x, 2 * x])
        got = fu.vmap(fu.grad(k))(xs, torch.zeros(2, 2))
        want = torch.func.vmap(torch.func.grad(k))(xs, torch.zeros(2, 2))
    torch.testing.assert_close(got, want)


def test_in_place_write_into_a_captured_tensor_under_a_transform_is_a_clear_error():
    cap = torch.zeros(2)

    def h(x):
        cap.copy_(x)
        return (cap * x).sum()

    with pytest.raises(TypeError, match="mutate a captured Tensor"):
        fu.vmap(fu.grad(h))(torch.ones(3, 2))
