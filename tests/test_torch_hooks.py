"""Pins every private torch API in functorch_utils/_torch_hooks.py (one test per hook)."""

from __future__ import annotations

import pytest
import torch
import torch.func

from functorch_utils import _torch_hooks as hooks

from .helpers import LegacySquare

# ---------------------------------------------------------------------------------------------
# vmap_error_kind: torch.func.vmap's texts for a user's mistakes in the batched function


def _raw_vmap_error(fn, x):
    with pytest.raises(RuntimeError) as info:
        torch.func.vmap(fn)(x)
    return info.value


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_vmap_error_kind_recognises_torchs_messages():
    buf = torch.zeros(2)
    cases = [
        ("item", lambda v: v * v.sum().item(), torch.ones(3, 2)),
        ("control_flow", lambda v: v if v.sum() > 0 else -v, torch.ones(3, 2)),
        ("dynamic_shape", lambda v: v[v > 0], torch.ones(3, 2)),
        ("in_place", lambda v: buf.add_(v), torch.ones(3, 2)),
        ("randomness", lambda v: v + torch.rand(2), torch.ones(3, 2)),
        # an unbatched (2**62,) view batched to 4 members: numel overflows as torch expands it
        ("overflow", lambda v: torch.zeros(()).expand(2**62), torch.ones(4)),
        ("requires_grad", lambda v: v.requires_grad_().sum(), torch.ones(3, 2)),
        (
            "forward_ad",
            lambda v: torch.autograd.functional.jacobian(
                torch.sin, v, strategy="forward-mode", vectorize=True
            ),
            torch.ones(3, 2),
        ),
        ("legacy_function", LegacySquare.apply, torch.ones(3)),
    ]
    for kind, fn, x in cases:
        err = _raw_vmap_error(fn, x)
        assert hooks.vmap_error_kind(err) == kind, (kind, str(err)[:200])


def test_vmap_error_kind_is_none_for_other_errors():
    assert hooks.vmap_error_kind(RuntimeError("some other failure")) is None
    assert hooks.vmap_error_kind(ValueError("calling .item() on a Tensor")) is None


# ---------------------------------------------------------------------------------------------
# engine hooks: levels, the direct backward call, torch's error texts


def test_current_level_is_none_outside_transforms_and_set_inside():
    assert hooks.current_level() is None
    seen = []
    torch.func.vmap(lambda x: seen.append(hooks.current_level()) or x)(torch.ones(2))
    torch.func.grad(lambda x: seen.append(hooks.current_level()) or x.sum())(torch.ones(2))
    assert all(isinstance(level, int) for level in seen) and len(seen) == 2


def test_forward_levels_counts_nested_jvp():
    seen = []

    def probe(x):
        seen.append(hooks.forward_levels())
        return x

    one = torch.tensor(1.0)
    probe(one)
    torch.func.jvp(probe, (one,), (one,))
    torch.func.jvp(lambda x: torch.func.jvp(probe, (x,), (one,))[1], (one,), (one,))
    assert seen == [0, 1, 2]


def test_under_vmap():
    seen = []
    seen.append(hooks.under_vmap())
    torch.func.vmap(lambda x: seen.append(hooks.under_vmap()) or x)(torch.ones(2))
    torch.func.grad(lambda x: seen.append(hooks.under_vmap()) or x.sum())(torch.ones(2))
    assert seen == [False, True, False]


def test_run_backward_matches_autograd_grad():
    x = torch.randn(3, requires_grad=True)
    out = (x.sin() * x).sum()
    (ref,) = torch.autograd.grad(out, x, retain_graph=True)
    (ours,) = hooks.run_backward(
        (out,), (torch.ones_like(out),), (x,), create_graph=False, retain_graph=True
    )
    assert torch.equal(ref, ours)
    y = torch.randn(2, requires_grad=True)
    (unused,) = hooks.run_backward(
        (out,), (torch.ones_like(out),), (y,), create_graph=False, retain_graph=False
    )
    assert unused is None


def test_run_backward_create_graph_gives_a_differentiable_result():
    x = torch.tensor(2.0, requires_grad=True)
    (g,) = hooks.run_backward(
        (x**3,), (torch.ones(()),), (x,), create_graph=True, retain_graph=True
    )
    (h,) = torch.autograd.grad(g, x)
    assert g.item() == 12.0 and h.item() == 12.0


def test_legacy_function_error_text_is_recognised():
    with pytest.raises(RuntimeError) as info:
        torch.func.grad(lambda x: LegacySquare.apply(x).sum())(torch.ones(2))
    assert hooks.is_legacy_function_error(info.value)
    assert not hooks.is_legacy_function_error(RuntimeError("something else"))


def test_inference_tensor_save_error_text_is_recognised():
    with torch.inference_mode():
        w = torch.ones(2)
    x = torch.ones(2, requires_grad=True)
    with pytest.raises(RuntimeError) as info:
        (x * w).sum()
    assert hooks.is_inference_tensor_save_error(info.value)
    assert not hooks.is_inference_tensor_save_error(RuntimeError("other"))


def test_is_zero_tensor():
    assert not hooks.is_zero_tensor(torch.zeros(2))
    # torch's forward mode returns a ZeroTensor for an output that does not depend on the input
    _, z = torch.func.jvp(lambda x: torch.ones(2), (torch.ones(()),), (torch.ones(()),))
    if hooks.is_zero_tensor(z):
        with pytest.raises(RuntimeError):
            z.numpy()


def test_is_compiling_is_false_in_eager():
    assert hooks.is_compiling() is False


# ---------------------------------------------------------------------------------------------
# vmap_error_kind: torch.func.vmap's texts for a user's mistakes in the batched function


def test_wrap_for_level_lets_a_transformed_function_write_into_an_argument():
    buf = torch.zeros(2)

    def k(x):
        b = hooks.wrap_for_level(buf, hooks.current_level())
        b.copy_(x * 2)
        return (b * x).sum()

    torch.testing.assert_close(
        torch.func.grad(k)(torch.tensor([1.0, 2.0])), torch.tensor([4.0, 8.0])
    )


def test_unsupported_in_transform_error_texts_are_recognised():
    cap = torch.zeros(2)

    def mutate(x):
        cap.copy_(x)
        return x.sum()

    def functional(x):
        return torch.autograd.functional.jacobian(torch.sin, x).sum()

    for fn in (mutate, functional):
        with pytest.raises(RuntimeError) as info:
            torch.func.grad(fn)(torch.ones(2))
        assert hooks.is_unsupported_in_transform_error(info.value)
    assert not hooks.is_unsupported_in_transform_error(RuntimeError("other"))


def test_empty_output_error_text_is_recognised():
    with pytest.raises(RuntimeError) as info:
        torch.func.vjp(lambda v: (), torch.ones(2))
    assert hooks.is_empty_output_error(info.value)
    assert not hooks.is_empty_output_error(RuntimeError("other"))


def test_accumulate_grad_type_is_the_node_behind_a_leaf():
    w = torch.ones(2, requires_grad=True)
    node = (w * 2).grad_fn.next_functions[0][0]
    assert type(node) is hooks.ACCUMULATE_GRAD and node.variable is w


def test_private_torch_hooks_used_by_custom_rules():
    seen = []

    def probe(x):
        seen.append(hooks.transform_names())
        return x.sum()

    one = torch.ones(2)
    probe(one)
    torch.func.jvp(lambda x: torch.func.grad(probe)(x), (one,), (one,))
    torch.func.vmap(probe)(one)
    assert seen == [[], ["Jvp", "Grad"], ["Vmap"]]

    flags = []

    def inner(y, x):
        # an outer level's tracked value seen from an inner level, and a value tracked by none
        flags.append((hooks.carries_derivative(y.detach() * x), hooks.carries_derivative(y * 0)))
        return (y * x).sum()

    def outer(x):
        return torch.func.grad(inner)(torch.ones(2), x).sum()

    torch.func.grad(outer)(one)
    torch.func.jvp(lambda x: inner(torch.ones(2), x), (one,), (one,))
    torch.func.vmap(lambda x: inner(torch.ones(2), x))(torch.ones(3, 2))
    assert flags == [(True, True), (True, False), (False, False)]
    assert hooks.carries_derivative(torch.ones(1, requires_grad=True))
    assert not hooks.carries_derivative(torch.ones(1))


def test_is_batched_and_unwrap_all_walk_every_functorch_level():
    seen = []

    def probe(x):
        p = x > 0
        seen.append((hooks.is_batched(p), hooks.is_batched(torch.ones(())), hooks.unwrap_all(p)))
        return (x**2).sum()

    x = torch.tensor([-1.0, 2.0])
    torch.func.vmap(torch.func.grad(probe))(x)  # grad wrapper over a batched tensor
    torch.func.vmap(torch.func.vmap(probe))(x[None])  # two batched levels
    torch.func.grad(probe)(x)  # wrapped, not batched
    probe(x)  # plain
    assert [s[:2] for s in seen] == [(True, False), (True, False), (False, False), (False, False)]
    for _, _, plain in seen:
        assert not torch._C._functorch.is_functorch_wrapped_tensor(plain)
    assert seen[0][2].tolist() == [False, True] and seen[1][2].tolist() == [[False, True]]


# ---------------------------------------------------------------------------------------------
# legacy vmap levels of the tape's batched backward (used by the collectives across processes)


def test_legacy_batch_dims_round_trip_in_the_tapes_batched_backward():
    seen = {}

    class Probe(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.clone()

        @staticmethod
        def backward(ctx, g):
            seen["batched"] = hooks.is_legacy_batched(g)
            level = hooks.legacy_vmap_level()
            phys = hooks.remove_legacy_batch_dim(g, level)
            seen["physical"] = tuple(phys.shape)
            seen["peeled"] = hooks.is_legacy_batched(phys)
            return hooks.add_legacy_batch_dim(phys * 2, level)

    x = torch.ones(3, requires_grad=True)
    (g,) = torch.autograd.grad(Probe.apply(x), x, torch.eye(3), is_grads_batched=True)
    assert seen == {"batched": True, "physical": (3, 3), "peeled": False}
    torch.testing.assert_close(g, 2 * torch.eye(3))
    assert not hooks.is_legacy_batched(torch.ones(2))


# ---------------------------------------------------------------------------------------------
# eager_only: torch.compiler.disable applied when torch._dynamo is first imported


def test_import_does_not_load_dynamo_and_the_eager_only_helpers_are_disabled_later():
    import subprocess
    import sys

    code = (
        "import sys, torch, functorch_utils\n"
        "from functorch_utils import _torch_hooks as h, _distributed as d\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "assert not getattr(h.is_batched, '_torchdynamo_disable', False)\n"
        "torch.compile(lambda x: x + 1, backend='eager')(torch.ones(1))\n"
        "for f in (h.interpreter_keys, h.is_batched, h.unwrap_all, d._eager_apply):\n"
        "    assert getattr(f, '_torchdynamo_disable', False), f\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_eager_only_decorates_at_once_when_dynamo_is_loaded():
    import torch._dynamo  # noqa: F401

    @hooks.eager_only()
    def probe() -> int:
        return 1

    assert getattr(probe, "_torchdynamo_disable", False)
    assert probe() == 1


def test_fake_tensor_mode_and_its_data_dependent_refusal():
    mode = hooks.fake_tensor_mode()
    real = torch.ones(2)  # accepted as a captured constant
    with mode:
        x = torch.empty(4)
        assert (x * real.sum()).shape == (4,)
        with pytest.raises(Exception) as info:
            torch.nonzero(x)
    assert hooks.data_dependent_shape_reason(info.value) == "aten.nonzero.default"
    assert hooks.data_dependent_shape_reason(ValueError("other")) is None


def test_shapes_only_under_a_fake_tensor_mode_and_while_compiling():
    assert not hooks.shapes_only() and hooks.active_fake_mode() is None
    with hooks.fake_tensor_mode() as mode:
        assert hooks.shapes_only() and hooks.active_fake_mode() is mode
    assert not hooks.shapes_only() and hooks.active_fake_mode() is None
    seen = []

    def f(x):
        seen.append(hooks.shapes_only())
        return x + 1

    torch.compile(f, backend="eager", fullgraph=True)(torch.ones(2))
    assert seen == [True]
