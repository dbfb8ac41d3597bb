"""stop_gradient and checkpoint (alias remat): the same values and derivatives under every transform.

Reference values come from the same program without checkpoint and, where jax is installed, from
JAX (``jax.checkpoint``, ``jax.lax.stop_gradient``) in float64.
"""

from __future__ import annotations

import re
import types
import weakref

import numpy as np
import pytest
import torch

import functorch_utils as fu
from functorch_utils import _torch_hooks

from .helpers import tree_allclose

D = torch.float64
X = torch.tensor([0.3, -1.2, 2.0], dtype=D)
XS = torch.tensor([[0.3, -1.2, 2.0], [0.7, 0.1, -0.4]], dtype=D)


def _jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    return jax


def _to_np(tree):
    return fu.tree_util.tree_map(
        lambda x: x.detach().numpy() if isinstance(x, torch.Tensor) else x, tree
    )


def close_to_jax(ours, theirs, rtol=1e-10, atol=1e-12):
    jax = _jax()
    lo = fu.tree_util.tree_leaves(_to_np(ours))
    lt = jax.tree_util.tree_leaves(theirs)
    assert len(lo) == len(lt)
    for a, b in zip(lo, lt):
        np.testing.assert_allclose(a, np.asarray(b), rtol=rtol, atol=atol)


def _torch_ops():
    return types.SimpleNamespace(sin=torch.sin, cos=torch.cos, tanh=torch.tanh, cumsum=torch.cumsum)


def _jax_ops():
    jnp = _jax().numpy
    return types.SimpleNamespace(sin=jnp.sin, cos=jnp.cos, tanh=jnp.tanh, cumsum=jnp.cumsum)


# ---------------------------------------------------------------------------------------------
# stop_gradient


def test_stop_gradient_both_modes_every_order():
    def f(x):
        return fu.stop_gradient(x) * x

    x = torch.tensor(3.0)
    assert fu.grad(f)(x).item() == 3.0
    assert fu.jvp(f, (x,), (torch.tensor(1.0),))[1].item() == 3.0
    assert fu.grad(fu.grad(f))(x).item() == 0.0
    assert fu.jacfwd(fu.grad(f))(x).item() == 0.0
    assert fu.jacfwd(fu.jacfwd(f))(x).item() == 0.0
    assert fu.hessian(f)(x).item() == 0.0
    tree = fu.stop_gradient({"a": x, "s": "kept"})
    assert tree["s"] == "kept"


def _sg_program(sg, x):
    # stop_gradient of an intermediate, and inside a pytree with non-tensor leaves
    tree = sg({"y": x**2, "n": 3, "s": "tag", "none": None})
    return (tree["y"] * x).sum() * tree["n"] + (x**3).sum()


@pytest.mark.parametrize(
    "stack", ["grad", "grad_grad", "hessian", "jacfwd_jacfwd", "jvp", "jvp_jvp", "vmap_grad"]
)
def test_stop_gradient_matches_jax(stack):
    jax = _jax()
    jnp = jax.numpy

    def jax_sg(tree):  # jax.lax.stop_gradient accepts arrays only
        is_array = lambda v: isinstance(v, jax.Array)  # noqa: E731
        return jax.tree_util.tree_map(
            lambda v: jax.lax.stop_gradient(v) if is_array(v) else v, tree
        )

    ours = _sg_stack(stack, fu, lambda x: _sg_program(fu.stop_gradient, x), X, XS)
    theirs = _sg_stack(
        stack,
        jax,
        lambda x: _sg_program(jax_sg, x),
        jnp.asarray(X.numpy()),
        jnp.asarray(XS.numpy()),
    )
    close_to_jax(ours, theirs)


def _sg_stack(stack, m, f, x, xs):
    one = x * 0 + 1
    return {
        "grad": lambda: m.grad(f)(x),
        "grad_grad": lambda: m.grad(lambda x: m.grad(f)(x).sum())(x),
        "hessian": lambda: m.hessian(f)(x),
        "jacfwd_jacfwd": lambda: m.jacfwd(m.jacfwd(f))(x),
        "jvp": lambda: m.jvp(f, (x,), (one,)),
        "jvp_jvp": lambda: m.jvp(lambda x: m.jvp(f, (x,), (one,))[1], (x,), (one,)),
        "vmap_grad": lambda: m.vmap(m.grad(f))(xs),
    }[stack]()


def test_stop_gradient_under_vmap_stays_batched_and_passes_non_tensors():
    out = fu.vmap(lambda x: fu.stop_gradient((x * 2, "s", 1)))(XS)
    tree_allclose(out[0], XS * 2)
    assert out[1:] == ("s", 1)
    g = fu.vmap(fu.grad(lambda x: (fu.stop_gradient(x) * x).sum()))(XS)
    tree_allclose(g, XS)


# ---------------------------------------------------------------------------------------------
# checkpoint: closed-over tensors are differentiated


def _closure_program(m, ops, x):
    y = ops.sin(x)
    return m.checkpoint(lambda x: x * y)(x)


@pytest.mark.parametrize("stack", ["grad", "jacfwd", "jacrev", "grad_grad", "hessian", "jvp"])
def test_checkpoint_differentiates_closed_over_tensors(stack):
    def run(m, ops, x):
        f = lambda x: _closure_program(m, ops, x)  # noqa: E731
        return {
            "grad": lambda: m.grad(f)(x),
            "jacfwd": lambda: m.jacfwd(f)(x),
            "jacrev": lambda: m.jacrev(f)(x),
            "grad_grad": lambda: m.grad(m.grad(f))(x),
            "hessian": lambda: m.hessian(f)(x),
            "jvp": lambda: m.jvp(f, (x,), (x * 0 + 1,)),
        }[stack]()

    x = torch.tensor(1.0, dtype=D)
    plain = types.SimpleNamespace(**{**vars(fu), "checkpoint": lambda f: f})
    tree_allclose(run(fu, _torch_ops(), x), run(plain, _torch_ops(), x))
    if stack == "grad":  # d/dx x sin x = sin x + x cos x
        tree_allclose(run(fu, _torch_ops(), x), torch.sin(x) + x * torch.cos(x))
    jax = _jax()
    close_to_jax(run(fu, _torch_ops(), x), run(jax, _jax_ops(), jax.numpy.asarray(1.0)))


def test_checkpoint_differentiates_closed_over_parameters_on_the_tape():
    w = torch.tensor([0.5, -2.0], dtype=D, requires_grad=True)
    block = fu.checkpoint(lambda x: (x * w).sin())
    x = torch.tensor([1.0, 3.0], dtype=D)
    (gw,) = torch.autograd.grad(block(x).sum(), w)
    tree_allclose(gw, x * torch.cos(x * w.detach()))


# ---------------------------------------------------------------------------------------------
# checkpoint around transforms, differentiated outside


@pytest.mark.parametrize("inner", ["grad", "value_and_grad", "jacrev", "hessian", "vmap_grad"])
def test_checkpoint_around_a_transform_differentiated_outside(inner):
    def run(m, v):
        cube = lambda u: (u**3).sum()  # noqa: E731
        g = {
            "grad": lambda: m.grad(cube),
            "value_and_grad": lambda: lambda u: m.value_and_grad(cube)(u)[1],
            "jacrev": lambda: lambda u: m.jacrev(lambda u: u**3)(u).sum(0),
            "hessian": lambda: lambda u: m.hessian(cube)(u).sum(0),
            "vmap_grad": lambda: m.vmap(m.grad(lambda u: u**3)),
        }[inner]()
        return m.grad(lambda v: (m.checkpoint(g)(v) ** 2).sum())(v)

    v = torch.tensor([0.5, -1.0], dtype=D)
    expected = 36 * v**3 if inner != "hessian" else 72 * v  # d/dv sum((3v^2)^2), sum((6v)^2)
    tree_allclose(run(fu, v), expected)
    jax = _jax()
    close_to_jax(run(fu, v), run(jax, jax.numpy.asarray(v.numpy())))


# ---------------------------------------------------------------------------------------------
# checkpoint of a block returning an input, nested checkpoints, collectives, custom rules


def test_checkpoint_of_the_identity():
    ident = fu.checkpoint(lambda x, y: (x, y * 2))
    out = ident(X, X)
    assert out[0] is X or torch.equal(out[0], X)
    tree_allclose(fu.grad(lambda x: ident(x, x)[0].sum())(X), torch.ones_like(X))
    v = torch.tensor([1.0, 0.5, -2.0], dtype=D)

    def pullback(x):
        return fu.vjp(lambda x: ident(x, x)[0] * x, x)[1](v)[0]

    expected = 2 * X * v
    tree_allclose(pullback(X), expected)
    tree_allclose(fu.jvp(pullback, (X,), (v,))[1], 2 * v * v)
    tree_allclose(fu.vmap(pullback)(XS), 2 * XS * v)


def test_nested_checkpoints_under_hessian_and_forward_over_forward():
    inner = fu.checkpoint(lambda x: x.sin() * x)
    outer = fu.checkpoint(lambda x: inner(inner(x)).cumsum(0) + x)
    plain = lambda x: ((x.sin() * x).sin() * (x.sin() * x)).cumsum(0) + x  # noqa: E731
    tree_allclose(fu.hessian(lambda x: outer(x).sum())(X), fu.hessian(lambda x: plain(x).sum())(X))
    tree_allclose(fu.jacfwd(fu.jacfwd(outer))(X), fu.jacfwd(fu.jacfwd(plain))(X))
    tree_allclose(
        fu.grad(fu.grad(lambda x: outer(x).sum()))(X[0]),
        fu.grad(fu.grad(lambda x: plain(x).sum()))(X[0]),
    )


def test_collective_inside_checkpoint_differentiated_outside_its_vmap():
    block = fu.checkpoint(lambda r: fu.psum(r**2, "i") * r)

    def f(x):
        return fu.vmap(block, axis_name="i")(x).sum()

    # d/dx_j sum_k (S * x_k) with S = sum x^2: S + 2 x_j sum_k x_k
    expected = (X**2).sum() + 2 * X * X.sum()
    tree_allclose(fu.grad(f)(X), expected)
    tree_allclose(fu.jacfwd(f)(X), expected)
    outside = fu.checkpoint(lambda x: fu.vmap(lambda r: fu.psum(r**2, "i") * r, axis_name="i")(x))
    tree_allclose(fu.grad(lambda x: outside(x).sum())(X), expected)


def test_one_forward_level_over_a_checkpoint_holding_a_custom_rule():
    @fu.custom_jvp
    def softplus(x):
        return torch.nn.functional.softplus(x)

    @softplus.defjvp
    def rule(primals, tangents):
        (x,), (t,) = primals, tangents
        return softplus(x), t * torch.sigmoid(x)

    block = fu.checkpoint(lambda x: softplus(x) * 2)
    tree_allclose(fu.jacfwd(block)(X), torch.diag(2 * torch.sigmoid(X)))
    tree_allclose(fu.jvp(block, (X,), (torch.ones_like(X),))[1], 2 * torch.sigmoid(X))
    tree_allclose(fu.grad(lambda x: block(x).sum())(X), 2 * torch.sigmoid(X))


# ---------------------------------------------------------------------------------------------
# checkpoint with non-tensor leaves, pytrees and keyword arguments


def test_checkpoint_passes_non_tensor_output_leaves_through():
    block = fu.checkpoint(lambda x, name: {"y": x.sin(), "name": name, "n": 3, "none": None})
    out = block(X, "layer")
    assert out["name"] == "layer" and out["n"] == 3 and out["none"] is None
    tree_allclose(fu.grad(lambda x: block(x, "a")["y"].sum())(X), X.cos())
    tree_allclose(fu.jacrev(lambda x: block(x, "a")["y"])(X), torch.diag(X.cos()))
    tree_allclose(fu.jacfwd(lambda x: block(x, "a")["y"])(X), torch.diag(X.cos()))
    g, aux = fu.grad(lambda x: (block(x, "a")["y"].sum(), block(x, "a")), has_aux=True)(X)
    tree_allclose(g, X.cos())
    assert aux["name"] == "a" and aux["n"] == 3
    batched = fu.vmap(lambda x: block(x, "b"))(XS)
    assert batched["name"] == "b" and batched["n"] == 3
    tree_allclose(batched["y"], XS.sin())


def test_checkpoint_keyword_arguments_and_pytree_inputs():
    @fu.checkpoint
    def block(p, x, *, context_fn=1.0, use_reentrant=None):  # names torch.utils.checkpoint uses
        return (p["w"] * x).sin().sum() * context_fn

    p = {"w": torch.tensor([1.0, 2.0], dtype=D)}
    x = torch.tensor([0.5, -0.5], dtype=D)
    c = torch.tensor(3.0, dtype=D)
    g = fu.grad(lambda p, c: block(p, x, context_fn=c), argnums=(0, 1))(p, c)
    tree_allclose(g[0]["w"], 3 * x * (p["w"] * x).cos())
    tree_allclose(g[1], (p["w"] * x).sin().sum())


def test_checkpoint_refuses_a_non_callable():
    with pytest.raises(TypeError, match=re.escape("checkpoint(fun): fun is not callable")):
        fu.checkpoint(3)


def test_checkpoint_takes_jax_keywords():
    block = fu.checkpoint(lambda x, n: x**n, static_argnums=(1,), prevent_cse=False)
    tree_allclose(fu.grad(lambda x: block(x, 3).sum())(X), 3 * X**2)
    tree_allclose(fu.grad(fu.checkpoint(torch.sin, static_argnums=()))(X[0]), X[0].cos())
    with pytest.raises(TypeError, match=re.escape("checkpoint(sin, prevent_cse=1)")):
        fu.checkpoint(torch.sin, prevent_cse=1)
    with pytest.raises(TypeError, match=re.escape("static_argnums must be an int")):
        fu.checkpoint(torch.sin, static_argnums="0")
    with pytest.raises(TypeError, match=re.escape("static_argnums=2 is out of range")):
        fu.checkpoint(torch.sin, static_argnums=2)(X)


def test_remat_is_checkpoint():
    assert fu.remat is fu.checkpoint


# ---------------------------------------------------------------------------------------------
# every transform stack through checkpoint gives the values without it


def _program(m, ops, ckpt):
    def f(x):
        c = ops.cos(x)  # closed over by the block, differentiated

        def block(z):
            return ops.cumsum(ops.sin(z) * c, 0) + z**3 / 3

        b = m.checkpoint(block) if ckpt else block
        return ops.tanh(b(1.5 * x)) * x

    return f


def _stack(name, m, f, x, xs):
    s = lambda x: f(x).sum()  # noqa: E731
    v = x * 0 + 0.5
    return {
        "grad": lambda: m.grad(s)(x),
        "value_and_grad": lambda: m.value_and_grad(s)(x),
        "jacrev": lambda: m.jacrev(f)(x),
        "jacfwd": lambda: m.jacfwd(f)(x),
        "hessian": lambda: m.hessian(s)(x),
        "jvp": lambda: m.jvp(f, (x,), (v,)),
        "vjp": lambda: m.vjp(f, x)[1](v),
        "vmap": lambda: m.vmap(f)(xs),
        "grad_grad": lambda: m.grad(lambda x: m.grad(s)(x).sum())(x),
        "vmap_grad": lambda: m.vmap(m.grad(s))(xs),
        "jacfwd_jacrev": lambda: m.jacfwd(m.jacrev(f))(x),
        "jacfwd_jacfwd": lambda: m.jacfwd(m.jacfwd(f))(x),
        "jvp_grad": lambda: m.jvp(m.grad(s), (x,), (v,)),
        "vmap_vjp": lambda: m.vmap(lambda x: m.vjp(f, x)[1](v))(xs),
        "jvp_vjp": lambda: m.jvp(lambda x: m.vjp(f, x)[1](v), (x,), (v,)),
    }[name]()


STACKS = [
    "grad",
    "value_and_grad",
    "jacrev",
    "jacfwd",
    "hessian",
    "jvp",
    "vjp",
    "vmap",
    "grad_grad",
    "vmap_grad",
    "jacfwd_jacrev",
    "jacfwd_jacfwd",
    "jvp_grad",
    "vmap_vjp",
    "jvp_vjp",
]


@pytest.mark.parametrize("mode", ["plain", "no_grad", "requires_grad"])
@pytest.mark.parametrize("stack", STACKS)
def test_every_transform_through_checkpoint_equals_without(stack, mode):
    x, xs = X.clone(), XS.clone()
    if mode == "requires_grad":
        x.requires_grad_(True)
        xs.requires_grad_(True)

    def run(ckpt):
        f = _program(fu, _torch_ops(), ckpt)
        if mode == "no_grad":
            with torch.no_grad():
                return _stack(stack, fu, f, x, xs)
        return _stack(stack, fu, f, x, xs)

    tree_allclose(run(True), run(False))


@pytest.mark.parametrize("stack", STACKS)
def test_every_transform_through_checkpoint_matches_jax(stack):
    jax = _jax()
    jnp = jax.numpy
    ours = _stack(stack, fu, _program(fu, _torch_ops(), True), X, XS)
    theirs = _stack(
        stack, jax, _program(jax, _jax_ops(), True), jnp.asarray(X.numpy()), jnp.asarray(XS.numpy())
    )
    close_to_jax(ours, theirs)


def test_complex_inputs_through_checkpoint_equal_without():
    z = torch.tensor([1 + 2j, -0.5 + 0.3j], dtype=torch.complex128)
    w = torch.tensor([0.3 - 1j, 2 + 0j], dtype=torch.complex128)

    def run(ckpt):
        block = lambda z: (z * w).sin() * z.conj()  # noqa: E731
        b = fu.checkpoint(block) if ckpt else block
        real = fu.grad(lambda z: b(z).abs().pow(2).sum())(z)
        holo = fu.grad(
            lambda z: (fu.checkpoint(torch.sin) if ckpt else torch.sin)(z * w).sum(),
            holomorphic=True,
        )(z)
        return real, holo, fu.jacrev(b, holomorphic=True)(z)

    tree_allclose(run(True), run(False))


def test_outer_backward_through_a_gradient_of_a_checkpoint():
    def run(ckpt):
        x = X.clone().requires_grad_(True)
        g = fu.grad(lambda x: _program(fu, _torch_ops(), ckpt)(x).sum())(x)
        return torch.autograd.grad((g**2).sum(), x)[0]

    tree_allclose(run(True), run(False))


# ---------------------------------------------------------------------------------------------
# memory, random numbers and in-place modification


def test_checkpoint_saves_only_inputs():
    saved = []

    def pack(t):
        saved.append(t.numel())
        return t

    x = torch.randn(1000, dtype=D, requires_grad=True)
    body = lambda x: x.sin().exp().cos().sum()  # noqa: E731
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fu.checkpoint(body)(x)
    ckpt_saved = sum(saved)
    saved.clear()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        body(x)
    assert ckpt_saved == 1000 and sum(saved) >= 3000


@pytest.mark.parametrize("ckpt", [True, False])
def test_checkpoint_frees_intermediates_under_grad(ckpt):
    refs = []

    def body(x):
        a = x.sin()
        refs.append(weakref.ref(a))
        return (a * a * x).sum()  # a is saved for the backward pass

    block = fu.checkpoint(body) if ckpt else body
    alive = []

    def f(x):
        out = block(x)
        alive.append(refs[-1]() is not None)  # after the forward, before the backward
        return out

    g = fu.grad(f)(X)
    tree_allclose(g, fu.grad(body)(X))
    assert alive == [not ckpt]


def test_checkpoint_recomputes_with_the_same_random_numbers():
    drawn = []

    def body(x):
        r = torch.rand(3, dtype=D)
        drawn.append(r)
        return (x * r).sum()

    g = fu.grad(fu.checkpoint(body))(X)
    assert len(drawn) == 2 and torch.equal(drawn[0], drawn[1])
    tree_allclose(g, drawn[0])
    torch.manual_seed(1)
    # a block that enters a torch.func reverse transform runs again as is, from the same state
    per = fu.grad(lambda u: u**2 * torch.rand((), dtype=D))
    inner = fu.checkpoint(lambda x: fu.vmap(per, randomness="same")(x))
    a = fu.grad(lambda x: inner(x).sum())(X)
    after = torch.rand(())
    torch.manual_seed(1)
    b = fu.grad(lambda x: fu.vmap(per, randomness="same")(x).sum())(X)
    assert a.abs().min() > 0
    tree_allclose(a, b)
    assert torch.equal(after, torch.rand(()))


def test_modified_outside_tensor_is_refused_at_the_backward_pass():
    c = torch.full((2,), 2.0, dtype=D)
    x = torch.ones(2, dtype=D, requires_grad=True)
    out = fu.checkpoint(lambda x: (x * c).sin().sum())(x)
    c.mul_(3)
    expected = "checkpoint(<lambda>) backward pass: a tensor the block reads from outside was"
    with pytest.raises(ValueError, match=re.escape(expected)):
        torch.autograd.grad(out, x)

    buf = torch.ones(2, dtype=D)

    def updates_a_buffer(x):
        y = x * buf
        buf.add_(1)
        return y.sum()

    with pytest.raises(ValueError, match=re.escape("call the block without checkpoint")):
        fu.grad(fu.checkpoint(updates_a_buffer))(x.detach())


def test_saved_tensors_hooks_error_match_is_pinned():
    x = torch.tensor(1.0, requires_grad=True)
    hooks = torch.autograd.graph.saved_tensors_hooks(lambda t: t, lambda t: t)
    with hooks, pytest.raises(RuntimeError) as info:
        torch.func.grad(torch.sin)(x)
    assert _torch_hooks.is_saved_tensors_hooks_disabled_error(info.value)
    assert not _torch_hooks.is_saved_tensors_hooks_disabled_error(RuntimeError("other"))


# ---------------------------------------------------------------------------------------------
# policies (NOTE [checkpoint policies])


class _OpCount:
    """Counts the ATen operators that run inside the context (a dispatch mode)."""

    def __init__(self) -> None:
        from torch.utils._python_dispatch import TorchDispatchMode

        counts: dict[str, int] = {}

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                name = func.overloadpacket.__name__
                counts[name] = counts.get(name, 0) + 1
                return func(*args, **(kwargs or {}))

        self.counts = counts
        self.mode = Mode()

    def __enter__(self):
        self.mode.__enter__()
        return self.counts

    def __exit__(self, *exc):
        self.mode.__exit__(*exc)


def _block(w, v, x):
    h = torch.tanh(x @ w)  # mm, no batch dims
    scores = fu.checkpoint_name(h.unsqueeze(0) @ v, "scores")  # bmm, batched
    return torch.sin(scores).sum()


_POLICIES = {
    "none": None,
    "everything": fu.checkpoint_policies.everything_saveable,
    "nothing": fu.checkpoint_policies.nothing_saveable,
    "dots": fu.checkpoint_policies.dots_saveable,
    "dots_alias": fu.checkpoint_policies.checkpoint_dots,
    "dots_no_batch": fu.checkpoint_policies.dots_with_no_batch_dims_saveable,
    "names": fu.checkpoint_policies.save_only_these_names("scores"),
    "names_but": fu.checkpoint_policies.save_any_names_but_these("scores"),
    "except_names": fu.checkpoint_policies.save_anything_except_these_names("scores"),
    "both": fu.checkpoint_policies.save_from_both_policies(
        fu.checkpoint_policies.dots_with_no_batch_dims_saveable,
        lambda op, *args, **kwargs: op is torch.ops.aten.tanh.default,
    ),
}


@pytest.mark.parametrize("name", sorted(_POLICIES))
def test_every_policy_keeps_values_and_derivatives(name):
    g = torch.Generator().manual_seed(0)
    w = torch.randn(4, 5, generator=g, dtype=torch.float64)
    v = torch.randn(1, 5, 3, generator=g, dtype=torch.float64)
    x = torch.randn(2, 4, generator=g, dtype=torch.float64)
    block = fu.checkpoint(_block, policy=_POLICIES[name])
    want = fu.value_and_grad(_block, argnums=(0, 1, 2))(w, v, x)
    tree_allclose(fu.value_and_grad(block, argnums=(0, 1, 2))(w, v, x), want)
    # a parameter the block closes over, through an outer backward
    wr = w.clone().requires_grad_()
    fu.checkpoint(lambda x: _block(wr, v, x), policy=_POLICIES[name])(x).backward()
    tree_allclose(wr.grad, want[1][0])
    # off the tape (vmap, jvp): the block runs as is, the policy is not needed
    per_row = fu.vmap(block, in_axes=(None, None, 0))(w, v, x.unsqueeze(1))
    tree_allclose(per_row, torch.stack([_block(w, v, r.unsqueeze(0)) for r in x]))
    tangent = fu.jvp(lambda x: block(w, v, x), (x,), (torch.ones_like(x),))[1]
    tree_allclose(tangent, fu.jvp(lambda x: _block(w, v, x), (x,), (torch.ones_like(x),))[1])


def test_dots_policies_keep_the_products_instead_of_recomputing_them():
    w, v, x = torch.randn(4, 5), torch.randn(1, 5, 3), torch.randn(2, 4)

    def backward_ops(policy):
        block = fu.checkpoint(_block, policy=policy)
        leaves = [t.clone().requires_grad_() for t in (w, v, x)]
        out = block(*leaves)
        with _OpCount() as counts:
            out.backward()
        return counts

    plain, dots = backward_ops(None), backward_ops(fu.checkpoint_policies.dots_saveable)
    no_batch = backward_ops(fu.checkpoint_policies.dots_with_no_batch_dims_saveable)
    # the backward pass itself takes 2 products per product; recomputation adds the forward one
    assert (plain["mm"], plain["bmm"]) == (3, 3)
    assert (dots["mm"], dots["bmm"]) == (2, 2)
    assert (no_batch["mm"], no_batch["bmm"]) == (2, 3)
    assert plain["tanh"] == dots["tanh"] == 1  # elementwise results are recomputed
    everything = backward_ops(fu.checkpoint_policies.everything_saveable)
    assert everything.get("tanh", 0) == 0 and everything["mm"] == 2


def test_policy_and_name_errors():
    with pytest.raises(TypeError, match=r"policy must be None, one of checkpoint_policies"):
        fu.checkpoint(_block, policy="dots")
    with pytest.raises(TypeError, match=r"save_only_these_names\(\*names\): names must be strings"):
        fu.checkpoint_policies.save_only_these_names(1)
    with pytest.raises(TypeError, match=r"checkpoint_name\(x, name\): name must be a string"):
        fu.checkpoint_name(torch.ones(2), 3)
    with pytest.raises(ValueError, match=r"static_argnames names \['y'\] which the function"):
        fu.checkpoint(lambda x: x, static_argnames="y")
    assert fu.checkpoint(lambda x, n: x * n, static_argnames="n")(torch.ones(2), 2.0).sum() == 4
    tree = {"a": torch.ones(2), "b": 1}
    assert fu.checkpoint_name(tree, "t") is tree


@pytest.mark.parametrize("name", ["dots", "everything"])
def test_a_block_with_a_policy_can_be_differentiated_twice(name):
    # every recomputation replays the kept results (torch's own selective checkpointing frees
    # them at their first use, so a second backward pass would fail there)
    g = torch.Generator().manual_seed(1)
    w = torch.randn(4, 5, generator=g, dtype=torch.float64)
    v = torch.randn(1, 5, 3, generator=g, dtype=torch.float64)
    x = torch.randn(2, 4, generator=g, dtype=torch.float64)
    block = fu.checkpoint(_block, policy=_POLICIES[name])
    second = fu.grad(lambda w: fu.grad(block)(w, v, x).sum())(w)
    tree_allclose(second, fu.grad(lambda w: fu.grad(_block)(w, v, x).sum())(w))
    wr = w.clone().requires_grad_()
    out = block(wr, v, x)
    (first,) = torch.autograd.grad(out, wr, retain_graph=True)
    (again,) = torch.autograd.grad(out, wr)
    tree_allclose(first, again)
