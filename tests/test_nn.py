"""Tests for functorch_utils.nn: functionalize, per_sample_grads, stack_modules."""

from __future__ import annotations

import re
import threading
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import functorch_utils as fu
from functorch_utils.nn import functionalize, per_sample_grads, stack_modules

from .helpers import tree_allclose


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3)).double()


class SmallCNN(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3)
        self.fc = nn.Linear(3 * 4 * 4, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


class Tied(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.enc = nn.Linear(3, 3, bias=False)
        self.dec = nn.Linear(3, 3)
        self.dec.weight = self.enc.weight

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dec(torch.tanh(self.enc(x)))


def module_grads(module: nn.Module, loss: torch.Tensor) -> dict[str, torch.Tensor]:
    names = [n for n, _ in module.named_parameters()]
    grads = torch.autograd.grad(loss, [p for _, p in module.named_parameters()])
    return dict(zip(names, grads))


def snapshot(module: nn.Module) -> dict[str, tuple[torch.Tensor, bool, object]]:
    return {n: (p.detach().clone(), p.requires_grad, p.grad) for n, p in module.named_parameters()}


def assert_untouched(
    module: nn.Module, before: dict[str, tuple[torch.Tensor, bool, object]]
) -> None:
    for n, p in module.named_parameters():
        value, requires_grad, g = before[n]
        assert p.grad is None and g is None, n
        assert p.requires_grad == requires_grad, n
        assert torch.equal(p.detach(), value), n


# ---------------------------------------------------------------------------------------------
# functionalize


def test_params_are_flat_dotted_copies() -> None:
    model = mlp()
    params, apply = functionalize(model)
    assert list(params) == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert apply.names == tuple(params)
    for n, p in model.named_parameters():
        assert torch.equal(params[n], p.detach())
        assert params[n].data_ptr() != p.data_ptr()  # a copy, not a view
        assert not params[n].requires_grad
    params["0.weight"].add_(1.0)  # in-place on the copy leaves the module alone
    assert not torch.equal(params["0.weight"], model[0].weight.detach())


def test_apply_matches_module_and_is_pure() -> None:
    model = mlp()
    params, apply = functionalize(model)
    x = torch.randn(5, 4, dtype=torch.float64)
    torch.testing.assert_close(apply(params, x), model(x))
    with torch.no_grad():
        model[0].weight.add_(1.0)  # training the module later does not change apply(params)
    torch.testing.assert_close(apply(params, x), apply(params, x))
    assert not torch.allclose(apply(params, x), model(x))


def test_grad_of_apply_matches_autograd_and_module_untouched() -> None:
    model = mlp()
    model[2].bias.requires_grad_(False)  # a frozen parameter stays frozen
    before = snapshot(model)
    params, apply = functionalize(model)
    x = torch.randn(5, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (5,))

    def loss(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return F.cross_entropy(apply(p, x), y)

    got = fu.grad(loss)(params)
    # reference on a fresh copy of the module with every parameter trainable
    ref = mlp()
    ref.load_state_dict(model.state_dict())
    want = module_grads(ref, F.cross_entropy(ref(x), y))
    tree_allclose(got, want)
    # other transforms: vmap, jacrev, hessian of the flat params
    fu.jacrev(lambda p: apply(p, x))(params)
    fu.vmap(fu.grad(lambda p, xi: apply(p, xi).sum()), in_axes=(None, 0))(params, x)
    fu.hessian(lambda b: apply({**params, "2.bias": b}, x).pow(2).sum())(params["2.bias"])
    torch.func.grad(loss)(params)
    assert_untouched(model, before)


def test_requires_grad_module_params_never_get_grad_through_tape() -> None:
    model = nn.Linear(3, 2)
    before = snapshot(model)
    params, apply = functionalize(model)
    x = torch.randn(4, 3)
    out = fu.value_and_grad(lambda p: apply(p, x).pow(2).sum())(params)
    assert out[0].grad_fn is None
    assert_untouched(model, before)


def test_missing_key_is_pinned() -> None:
    params, apply = functionalize(nn.Linear(3, 2))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "functionalize(Linear) apply(params, ...): params is missing the key 'bias'; "
            "expected every key of ['weight', 'bias'], got a dict of 1 keys without ['bias']. "
            "Pass every key"
        ),
    ):
        apply({"weight": params["weight"]}, torch.ones(3))


def test_extra_key_is_pinned() -> None:
    params, apply = functionalize(nn.Linear(3, 2))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "functionalize(Linear) apply(params, ...): params has an unexpected key 'wieght'; "
            "expected only the keys ['weight', 'bias'], got the extra key 'wieght'. Remove it"
        ),
    ):
        apply({**params, "wieght": params["weight"]}, torch.ones(3))


def test_extra_key_is_an_error_even_when_not_strict() -> None:
    params, apply = functionalize(nn.Linear(3, 2), strict=False)
    with pytest.raises(ValueError, match=re.escape("params has an unexpected key 'w'")):
        apply({"w": params["weight"]}, torch.ones(3))


def test_not_strict_falls_back_to_the_copies() -> None:
    model = nn.Linear(3, 2)
    params, apply = functionalize(model, strict=False)
    with torch.no_grad():
        model.bias.fill_(100.0)  # not the module's live value: the copy taken at functionalize
    x = torch.ones(3)
    w = torch.zeros(2, 3)
    torch.testing.assert_close(apply({"weight": w}, x), params["bias"])
    g = fu.grad(lambda w: apply({"weight": w}, x).sum())(w)
    torch.testing.assert_close(g, torch.ones(2, 3))


def test_wrong_kind_and_shape_are_pinned() -> None:
    params, apply = functionalize(nn.Linear(3, 2))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "functionalize(Linear) apply(params, ...): params is not a dict; expected a dict of "
            "tensors with the keys ['weight', 'bias'], got list"
        ),
    ):
        apply([params["weight"], params["bias"]], torch.ones(3))
    with pytest.raises(
        TypeError,
        match=re.escape(
            "params['bias'] is not a tensor; expected a tensor of shape (2,), got float 1.0"
        ),
    ):
        apply({**params, "bias": 1.0}, torch.ones(3))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "params['weight'] has the wrong shape; expected shape (2, 3), got a tensor of dtype "
            "torch.float32 and shape (3, 2). Under vmap"
        ),
    ):
        apply({**params, "weight": torch.zeros(3, 2)}, torch.ones(3))


def test_not_a_module() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "functionalize(module): module is not a torch.nn.Module; expected an nn.Module "
            "instance, got type"
        ),
    ):
        functionalize(nn.Linear)  # type: ignore[arg-type]


def test_tied_weights_are_one_leaf() -> None:
    model = Tied().double()
    before = snapshot(model)
    params, apply = functionalize(model)
    assert list(params) == ["enc.weight", "dec.bias"]
    x = torch.randn(4, 3, dtype=torch.float64)
    torch.testing.assert_close(apply(params, x), model(x))
    # a new value of the tied leaf is used in both places
    w = torch.randn(3, 3, dtype=torch.float64)
    want = torch.tanh(x @ w.T) @ w.T + params["dec.bias"]
    torch.testing.assert_close(apply({**params, "enc.weight": w}, x), want)
    # its gradient is the sum over both uses, as in the module
    got = fu.grad(lambda p: apply(p, x).pow(2).sum())(params)
    ref = Tied().double()
    ref.load_state_dict(model.state_dict())
    tree_allclose(got, module_grads(ref, ref(x).pow(2).sum()))
    assert_untouched(model, before)


def test_tied_alias_key_is_pinned() -> None:
    params, apply = functionalize(Tied())
    with pytest.raises(
        ValueError,
        match=re.escape(
            "functionalize(Tied) apply(params, ...): params has the key 'dec.weight', which is "
            "tied to 'enc.weight' (one tensor used under both names); expected one leaf per tied "
            "tensor, under its first name 'enc.weight', got the key 'dec.weight'. Pass only "
            "'enc.weight'"
        ),
    ):
        apply({**params, "dec.weight": params["enc.weight"]}, torch.ones(3))


def test_buffers_held_or_included() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).eval()
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    params, apply = functionalize(model)
    assert list(params) == ["0.weight", "0.bias", "1.weight", "1.bias"]
    assert set(apply.buffers) == {"1.running_mean", "1.running_var", "1.num_batches_tracked"}
    x = torch.randn(5, 3)
    torch.testing.assert_close(apply(params, x), model(x))
    state, apply2 = functionalize(model, include_buffers=True)
    assert list(state)[-3:] == ["1.running_mean", "1.running_var", "1.num_batches_tracked"]
    torch.testing.assert_close(apply2(state, x), model(x))
    moved = {**state, "1.running_mean": torch.zeros(4)}
    assert not torch.allclose(apply2(moved, x), model(x))


def test_training_batchnorm_without_vmap_is_pure() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))  # training mode
    params, apply = functionalize(model)
    x = torch.randn(8, 3)
    first = apply(params, x)
    torch.testing.assert_close(apply(params, x), first)  # running stats did not leak
    torch.testing.assert_close(apply.buffers["1.running_mean"], torch.zeros(4))
    torch.testing.assert_close(model[1].running_mean, torch.zeros(4))
    assert int(model[1].num_batches_tracked) == 0
    torch.testing.assert_close(first, model(x))  # batch statistics, as the module


BN_MESSAGE = (
    "the module has BatchNorm '1' in training mode, which computes statistics over the batch "
    "and updates its running statistics in place, so it cannot run per example under vmap; "
    "expected BatchNorm in eval mode (or no BatchNorm) under vmap, got a training-mode "
    "BatchNorm. Call module.eval() before functionalize"
)


def test_training_batchnorm_refused_under_vmap() -> None:
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    params, apply = functionalize(model)
    with pytest.raises(
        ValueError,
        match=re.escape("functionalize(Sequential) apply(params, ...): " + BN_MESSAGE),
    ):
        fu.vmap(apply, in_axes=(None, 0))(params, torch.randn(5, 2, 3))
    with pytest.raises(
        ValueError, match=re.escape("per_sample_grads(Sequential, ...): " + BN_MESSAGE)
    ):
        per_sample_grads(model, F.mse_loss, torch.randn(5, 3), torch.randn(5, 4))
    # eval mode is fine under vmap
    model.eval()
    params, apply = functionalize(model)
    x = torch.randn(5, 2, 3)
    out = fu.vmap(apply, in_axes=(None, 0))(params, x)
    torch.testing.assert_close(out, torch.stack([model(xi) for xi in x]))


# ---------------------------------------------------------------------------------------------
# per_sample_grads


@pytest.mark.parametrize("chunk_size", [None, 2])
def test_per_sample_grads_mlp_vs_loop(chunk_size: int | None) -> None:
    model = mlp()
    before = snapshot(model)
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    got = per_sample_grads(model, F.cross_entropy, x, y, chunk_size=chunk_size)
    loop = [
        module_grads(model, F.cross_entropy(model(x[i : i + 1]), y[i : i + 1])) for i in range(6)
    ]
    want = {k: torch.stack([g[k] for g in loop]) for k in loop[0]}
    tree_allclose(got, want)
    assert_untouched(model, before)


def test_per_sample_grads_cnn_vs_loop() -> None:
    model = SmallCNN().double()
    x = torch.randn(5, 1, 6, 6, dtype=torch.float64)
    y = torch.randint(0, 2, (5,))
    got = per_sample_grads(model, F.cross_entropy, x, y)
    assert got["conv.weight"].shape == (5, 3, 1, 3, 3)
    for i in range(5):
        want = module_grads(model, F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]))
        tree_allclose({k: v[i] for k, v in got.items()}, want)


def test_per_sample_grads_at_given_params_and_mean_is_batch_grad() -> None:
    model = mlp()
    params, apply = functionalize(model)
    params = {k: v + 0.1 for k, v in params.items()}
    x = torch.randn(6, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (6,))
    got = per_sample_grads(model, F.cross_entropy, x, y, params=params)
    batch = fu.grad(lambda p: F.cross_entropy(apply(p, x), y))(params)
    tree_allclose({k: v.mean(0) for k, v in got.items()}, batch)


def test_per_sample_grads_errors() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "per_sample_grads(Linear, ...): loss_fn is not callable; expected a function "
            "loss_fn(outputs, targets) -> scalar, got int 3."
        ),
    ):
        per_sample_grads(nn.Linear(2, 1), 3, torch.ones(2, 2), torch.ones(2, 1))  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# stack_modules


def test_ensemble_vs_loop() -> None:
    models = [mlp() for _ in range(4)]
    before = [snapshot(m) for m in models]
    stacked, apply = stack_modules(models)
    assert stacked["0.weight"].shape == (4, 8, 4)
    x = torch.randn(5, 4, dtype=torch.float64)
    out = fu.vmap(apply, in_axes=(0, None))(stacked, x)
    torch.testing.assert_close(out, torch.stack([m(x) for m in models]))
    xs = torch.randn(4, 5, 4, dtype=torch.float64)
    out = fu.vmap(apply)(stacked, xs)
    torch.testing.assert_close(out, torch.stack([m(xi) for m, xi in zip(models, xs)]))
    # gradients of every member at once
    y = torch.randint(0, 3, (5,))
    grads = fu.vmap(fu.grad(lambda p: F.cross_entropy(apply(p, x), y)))(stacked)
    for i, m in enumerate(models):
        want = module_grads(m, F.cross_entropy(m(x), y))
        tree_allclose({k: v[i] for k, v in grads.items()}, want)
    for m, b in zip(models, before):
        assert_untouched(m, b)


def test_ensemble_with_differing_buffers() -> None:
    models = [nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4)).eval() for _ in range(3)]
    for i, m in enumerate(models):
        with torch.no_grad():
            m[1].running_mean.fill_(float(i))
    with pytest.raises(
        ValueError,
        match=re.escape(
            "stack_modules(modules): modules[1]'s buffer '1.running_mean' differs from "
            "modules[0]'s, so one copy cannot serve all members; expected equal buffers, or "
            "include_buffers=True, got different values."
        ),
    ):
        stack_modules(models)
    stacked, apply = stack_modules(models, include_buffers=True)
    x = torch.randn(5, 3)
    out = fu.vmap(apply, in_axes=(0, None))(stacked, x)
    torch.testing.assert_close(out, torch.stack([m(x) for m in models]))


def test_stack_modules_errors() -> None:
    with pytest.raises(
        TypeError,
        match=re.escape(
            "stack_modules(modules): modules is not a non-empty sequence of nn.Module; expected "
            "a list of modules with one architecture, got list []."
        ),
    ):
        stack_modules([])
    with pytest.raises(
        ValueError,
        match=re.escape(
            "stack_modules(modules): modules[1]'s '0.weight' has another shape than modules[0]'s; "
            "expected shape (8, 4), got a tensor of dtype torch.float64 and shape (8, 5)."
        ),
    ):
        stack_modules([mlp(), nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3)).double()])
    with pytest.raises(
        ValueError,
        match=re.escape("stack_modules(modules): modules[1] has other parameter names"),
    ):
        stack_modules([nn.Linear(2, 2), nn.Linear(2, 2, bias=False)])


def test_stack_modules_returns_detached_copies_and_refuses_mixed_modes() -> None:
    models = [mlp() for _ in range(2)]
    stacked, _ = stack_modules(models)
    assert all(not v.requires_grad for v in stacked.values())
    with torch.no_grad():
        stacked["0.weight"].add_(1.0)  # a copy: the modules do not change
    torch.testing.assert_close(models[0][0].weight, stacked["0.weight"][0] - 1.0)
    models[1].eval()
    with pytest.raises(
        ValueError,
        match=re.escape(
            "stack_modules(modules): the modules are in different training modes (some train(), "
            "some eval()); expected one mode for all members, got training flags [True, False]."
        ),
    ):
        stack_modules(models)


# ---------------------------------------------------------------------------------------------
# threads


class _SlowScale(nn.Module):
    """Reads its parameter twice with a pause between: a swap by another thread shows."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(3, dtype=torch.float64))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.w * x
        time.sleep(0.002)  # lets the other threads run while the parameters are swapped in
        return a + self.w


def test_apply_is_pure_and_correct_under_threads() -> None:
    module = _SlowScale()
    params, apply = functionalize(module)
    _, apply2 = functionalize(module)  # a second apply of the same module shares its lock
    x = torch.arange(3.0, dtype=torch.float64)
    members = [{"w": params["w"] * (i + 2)} for i in range(6)]
    wrong: list[int] = []

    def work(i: int) -> None:
        fn = apply if i % 2 else apply2
        for _ in range(10):
            out = fn(members[i], x)
            want = members[i]["w"] * x + members[i]["w"]
            if not torch.equal(out, want):
                wrong.append(i)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert torch.equal(module.w.detach(), torch.ones(3, dtype=torch.float64))
    assert module.w.grad is None
    torch.testing.assert_close(apply(params, x), module(x).detach())


def test_apply_compiles_without_a_trace_warning():
    # the vmap probe is skipped under torch.compile (its interpreter stack cannot be traced)
    params, apply = functionalize(torch.nn.Linear(3, 2))
    x = torch.randn(4, 3)
    out = torch.compile(lambda p, x: apply(p, x).sum(), backend="eager")(params, x)
    torch.testing.assert_close(out, apply(params, x).sum())
