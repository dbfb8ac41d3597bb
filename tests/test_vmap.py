"""Tests of vmap (_vmap), the named axes (_axes) and the collectives (_collectives): vmap against
a Python loop, collectives, derivatives, errors."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from typing import Any, NamedTuple

import optree
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import functorch_utils
from functorch_utils._axes import UnboundAxisNameError
from functorch_utils._collectives import all_gather, axis_index, pmax, pmean, pmin, psum
from functorch_utils._vmap import vmap
from functorch_utils.testing import assert_trees_allclose

# torch imports its forward-AD decompositions on the first forward-mode call, and that import
# runs torch.jit.script, which warns (torch 2.13); the suite turns warnings into errors.
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning"
)

NS = "functorch_utils"
F64 = torch.float64


class Pair(NamedTuple):
    u: Any
    v: Any


# ---------------------------------------------------------------------------------------------
# The reference: a Python loop over the mapped axis, outputs stacked at out_axes.


def loop_vmap(
    f: Callable[..., Any], args: tuple[Any, ...], in_axes: Any, out_axes: Any, n: int, **kw: Any
) -> Any:
    if isinstance(in_axes, list):
        in_axes = tuple(in_axes)
    axes = optree.broadcast_prefix((in_axes, 0), (args, kw), none_is_leaf=True, namespace=NS)
    leaves, spec = optree.tree_flatten((args, kw), none_is_leaf=True, namespace=NS)
    outs = []
    for b in range(n):
        sliced = [
            x.select(ax, b) if isinstance(x, torch.Tensor) and ax is not None else x
            for x, ax in zip(leaves, axes)
        ]
        a, k = optree.tree_unflatten(spec, sliced)
        outs.append(f(*a, **k))
    out_leaves = [optree.tree_flatten(o, none_is_leaf=True, namespace=NS)[0] for o in outs]
    out_spec = optree.tree_structure(outs[0], none_is_leaf=True, namespace=NS)
    o_axes = optree.broadcast_prefix(out_axes, outs[0], none_is_leaf=True, namespace=NS)
    stacked = []
    for j, ax in enumerate(o_axes):
        col = [ol[j] for ol in out_leaves]
        if not isinstance(col[0], torch.Tensor) or ax is None:
            stacked.append(col[0])
        else:
            stacked.append(torch.stack(col, dim=ax))
    return optree.tree_unflatten(out_spec, stacked)


def close(a: Any, b: Any) -> None:
    # Consistency tolerance from docs/testing.md ("The numbers"): 32 eps * scale; float64 here.
    assert_trees_allclose(a, b, rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# Property: vmap(f) == loop of f, for random pytrees, shapes, in_axes and out_axes.

CONTAINERS = ("tuple", "list", "dict", "pair")


@st.composite
def batched_args(draw: st.DrawFn) -> tuple[tuple[Any, ...], Any, int, dict[str, Any]]:
    """Positional args (pytrees with some non-tensor leaves), their in_axes, n, kwargs."""
    n = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**16))
    gen = torch.Generator().manual_seed(seed)

    def tensor(mapped_axis: int | None) -> torch.Tensor:
        shape = draw(st.lists(st.integers(1, 3), min_size=0, max_size=2))
        if mapped_axis is not None:
            pos = mapped_axis % (len(shape) + 1)
            shape.insert(pos, n)
        return torch.randn(shape, generator=gen, dtype=F64)

    def axis(ndim_unbatched: int) -> int | None:
        if draw(st.booleans()) and draw(st.booleans()):
            return None
        return draw(st.integers(-(ndim_unbatched + 1), ndim_unbatched))

    def leaf_and_axis() -> tuple[Any, Any]:
        kind = draw(st.sampled_from(["tensor", "tensor", "tensor", "float", "str", "none"]))
        if kind == "float":
            return 0.5, 0
        if kind == "str":
            return "tag", 0
        if kind == "none":
            return None, None
        ax = axis(draw(st.integers(0, 2)))
        t = tensor(ax)
        while ax is not None and not -t.dim() <= ax < t.dim():
            t = tensor(ax)
        return t, ax

    args: list[Any] = []
    axes: list[Any] = []
    for _ in range(draw(st.integers(1, 3))):
        container = draw(st.sampled_from(("leaf", *CONTAINERS)))
        if container == "leaf":
            t, ax = leaf_and_axis()
            if not isinstance(t, torch.Tensor):
                t, ax = tensor(0), 0
            args.append(t)
            axes.append(ax)
            continue
        parts = [leaf_and_axis() for _ in range(2)]
        vals, axs = [p[0] for p in parts], [p[1] for p in parts]
        if container == "tuple":
            args.append(tuple(vals))
            axes.append(tuple(axs))
        elif container == "list":
            args.append(list(vals))
            axes.append(list(axs))
        elif container == "dict":
            args.append({"a": vals[0], "b": vals[1]})
            axes.append({"a": axs[0], "b": axs[1]})
        else:
            args.append(Pair(*vals))
            axes.append(Pair(*axs))
    # Guarantee one mapped tensor.
    args.append(tensor(0))
    axes.append(0)
    kwargs: dict[str, Any] = {}
    if draw(st.booleans()):
        kwargs = {"scale": torch.randn(n, generator=gen, dtype=F64), "label": "k"}
    # Unmapped arguments may have any size along their own axes; mapped ones all have n.
    return tuple(args), tuple(axes), n, kwargs


def combine(*args: Any, scale: Any = 1.0, label: str = "") -> Any:
    tensors = [x for x in optree.tree_leaves(args, namespace=NS) if isinstance(x, torch.Tensor)]
    first = tensors[0]
    total = sum(torch.sin(t).sum() for t in tensors)
    return {
        "total": total * scale,
        "first": torch.tanh(first) * 2.0 + total,
        "pair": Pair(torch.cos(tensors[-1]), label + "!"),
        "none": None,
    }


def out_axes_for(draw: st.DrawFn, out: Any) -> Any:
    choice = draw(st.sampled_from(["int", "tree"]))
    nd_first = out["first"].dim()
    nd_last = out["pair"].u.dim()
    if choice == "int":
        return draw(st.integers(-1, 0))
    return {
        "total": draw(st.integers(-1, 0)),
        "first": draw(st.integers(-(nd_first + 1), nd_first)),
        "pair": Pair(draw(st.integers(-(nd_last + 1), nd_last)), None),
        "none": None,
    }


@given(batched_args(), st.data())
def test_vmap_equals_loop(case: Any, data: st.DataObject) -> None:
    args, in_axes, n, kwargs = case
    probe = loop_vmap(combine, args, in_axes, 0, n, **kwargs)
    per_member = optree.tree_map(
        lambda x: x.select(0, 0) if isinstance(x, torch.Tensor) else x,
        probe,
        none_is_leaf=True,
        namespace=NS,
    )
    out_axes = out_axes_for(data.draw, per_member)
    expected = loop_vmap(combine, args, in_axes, out_axes, n, **kwargs)
    got = vmap(combine, in_axes=in_axes, out_axes=out_axes)(*args, **kwargs)
    close(got, expected)


@given(st.integers(1, 4), st.integers(0, 2), st.integers(0, 1000))
def test_vmap_list_in_axes_is_a_tuple(n: int, extra: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, extra + 1, generator=gen, dtype=F64)
    y = torch.randn(extra + 1, generator=gen, dtype=F64)
    got = vmap(lambda a, b: a * b, in_axes=[0, None])(x, y)
    close(got, loop_vmap(lambda a, b: a * b, (x, y), (0, None), 0, n))


# ---------------------------------------------------------------------------------------------
# vmap of differentiation transforms equals the loop of them.


def _mlp(p: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    return (torch.tanh(x @ p["w"] + p["b"]) ** 2).sum()


def _vec(x: torch.Tensor) -> torch.Tensor:
    return torch.sin(x) * x.sum()


def _transforms() -> list[tuple[str, Callable[..., Any], str]]:
    tf = torch.func
    out: list[tuple[str, Callable[..., Any], str]] = [
        ("torch.func.grad", tf.grad, "scalar"),
        ("torch.func.jacrev", tf.jacrev, "vector"),
        ("torch.func.jacfwd", tf.jacfwd, "vector"),
    ]
    for name, kind in (("grad", "scalar"), ("jacrev", "vector"), ("jacfwd", "vector")):
        fn = getattr(functorch_utils, name, None)
        if fn is not None:
            out.append((f"functorch_utils.{name}", fn, kind))
    return out


@pytest.mark.parametrize(("name", "transform", "kind"), _transforms(), ids=lambda v: str(v))
@given(st.integers(1, 4), st.integers(1, 3), st.integers(0, 1000))
def test_vmap_of_transform_equals_loop(
    name: str, transform: Callable[..., Any], kind: str, n: int, d: int, seed: int
) -> None:
    gen = torch.Generator().manual_seed(seed)
    if kind == "scalar":
        p = {"w": torch.randn(d, 2, generator=gen, dtype=F64), "b": torch.randn(2, dtype=F64)}
        xs = torch.randn(n, d, generator=gen, dtype=F64)
        f = transform(_mlp)
        close(vmap(f, in_axes=(None, 0))(p, xs), loop_vmap(f, (p, xs), (None, 0), 0, n))
    else:
        xs = torch.randn(d, n, generator=gen, dtype=F64)
        f = transform(_vec)
        close(vmap(f, in_axes=1, out_axes=-1)(xs), loop_vmap(f, (xs,), 1, -1, n))


def test_vmap_of_jvp_and_vjp_equals_loop() -> None:
    xs = torch.randn(3, 4, dtype=F64)
    ts = torch.randn(3, 4, dtype=F64)
    jvp = getattr(functorch_utils, "jvp", None) or torch.func.jvp
    vjp = getattr(functorch_utils, "vjp", None) or torch.func.vjp

    def f_jvp(x: torch.Tensor, t: torch.Tensor) -> Any:
        return jvp(_vec, (x,), (t,))

    def f_vjp(x: torch.Tensor, u: torch.Tensor) -> Any:
        out, fn = vjp(_vec, x)
        return out, fn(u)

    close(vmap(f_jvp)(xs, ts), loop_vmap(f_jvp, (xs, ts), 0, 0, 3))
    close(vmap(f_vjp)(xs, ts), loop_vmap(f_vjp, (xs, ts), 0, 0, 3))


def test_grad_of_vmap_and_outer_autograd() -> None:
    p = {"w": torch.randn(4, 2, dtype=F64), "b": torch.randn(2, dtype=F64)}
    xs = torch.randn(5, 4, dtype=F64)

    def loss_vmap(p: Any) -> torch.Tensor:
        return vmap(_mlp, in_axes=(None, 0))(p, xs).sum()

    def loss_loop(p: Any) -> torch.Tensor:
        return sum(_mlp(p, x) for x in xs)  # type: ignore[return-value]

    close(torch.func.grad(loss_vmap)(p), torch.func.grad(loss_loop)(p))
    w = p["w"].clone().requires_grad_()
    loss_vmap({"w": w, "b": p["b"]}).backward()
    close(w.grad, torch.func.grad(loss_loop)(p)["w"])


# ---------------------------------------------------------------------------------------------
# Semantics beyond the loop: axis_size, non-tensor outputs, kwargs, options.


def test_axis_size_broadcasts_when_nothing_is_mapped() -> None:
    out = vmap(lambda c: c * torch.ones(2), in_axes=None, axis_size=3)(2.0)
    close(out, torch.full((3, 2), 2.0))
    x = torch.ones(2, dtype=F64)
    close(vmap(lambda a: a + 1, in_axes=None, axis_size=4)(x), torch.full((4, 2), 2.0, dtype=F64))


def test_axis_size_agrees_with_arguments() -> None:
    close(vmap(torch.sin, axis_size=3)(torch.zeros(3)), torch.zeros(3))


def test_non_tensor_leaves_pass_through() -> None:
    out = vmap(lambda x, s, k: (x * k, s, None, k), in_axes=(0, 0, 0))(torch.ones(2), "s", 3)
    assert out[1:] == ("s", None, 3)
    close(out[0], torch.full((2,), 3.0))


def test_kwargs_are_mapped_over_axis_zero() -> None:
    x = torch.arange(6.0).reshape(2, 3)
    out = vmap(lambda a, *, b: a + b, in_axes=None)(torch.ones(3), b=x)
    close(out, x + 1)


def test_out_axes_none_for_unbatched_output() -> None:
    c = torch.ones(3)
    out = vmap(lambda x: (x * 2, c * 2), out_axes=(0, None))(torch.arange(4.0))
    assert out[1].shape == (3,)


def test_randomness_and_chunk_size_are_torchs() -> None:
    x = torch.zeros(4, 3)
    out = vmap(lambda v: v + torch.rand(3), randomness="different")(x)
    assert not torch.equal(out[0], out[1])
    out = vmap(lambda v: v + torch.rand(3), randomness="same")(x)
    assert torch.equal(out[0], out[1])
    close(vmap(torch.cos, chunk_size=3)(x), torch.ones(4, 3))


def test_nested_vmap_and_dtype_device_kept() -> None:
    x = torch.randn(2, 3, 4)
    out = vmap(vmap(torch.sum, in_axes=1), in_axes=0)(x)
    assert out.dtype == torch.float32 and out.device == x.device
    torch.testing.assert_close(out, x.sum(1))


def test_wraps_metadata() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        """Docs."""
        return x

    assert vmap(f).__name__ == "f" and vmap(f).__doc__ == "Docs."


# ---------------------------------------------------------------------------------------------
# Collectives equal their loop definitions.


def _members(n: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    return torch.randn((n, *shape), generator=torch.Generator().manual_seed(seed), dtype=F64)


shapes = st.lists(st.integers(1, 3), min_size=0, max_size=2).map(tuple)


@given(st.integers(1, 5), shapes, st.integers(0, 1000))
def test_psum_pmean_pmax_pmin_equal_loop(n: int, shape: tuple[int, ...], seed: int) -> None:
    xs = _members(n, shape, seed)
    for coll, ref in (
        (psum, xs.sum(0)),
        (pmean, xs.mean(0)),
        (pmax, xs.amax(0)),
        (pmin, xs.amin(0)),
    ):
        out = vmap(lambda v, c=coll: c(v, "i"), axis_name="i")(xs)
        close(out, ref.expand_as(xs))


@given(st.integers(1, 4), shapes, st.integers(0, 1000), st.data())
def test_all_gather_equals_loop(
    n: int, shape: tuple[int, ...], seed: int, data: st.DataObject
) -> None:
    xs = _members(n, shape, seed)
    tiled = bool(shape) and data.draw(st.booleans())
    nd = len(shape)
    axis = data.draw(st.integers(-nd, nd - 1) if tiled else st.integers(-nd - 1, nd))
    out = vmap(lambda v: all_gather(v, "i", axis=axis, tiled=tiled), axis_name="i")(xs)
    ref = torch.cat(list(xs), dim=axis) if tiled else torch.stack(list(xs), dim=axis)
    close(out, ref.expand(n, *ref.shape))


@given(st.integers(1, 3), st.integers(1, 3), shapes, st.integers(0, 1000))
def test_nested_names_reduce_their_own_level(
    n: int, m: int, shape: tuple[int, ...], seed: int
) -> None:
    xs = _members(n * m, shape, seed).reshape(n, m, *shape)

    def body(v: torch.Tensor) -> Any:
        return {
            "i": psum(v, "i"),
            "j": psum(v, "j"),
            "ij": psum(v, ("i", "j")),
            "max_i": pmax(v, "i"),
            "gather": all_gather(v, ("i", "j")),
            "index": axis_index(("i", "j")),
            "index_i": axis_index("i"),
            "index_j": axis_index("j"),
        }

    out = vmap(vmap(body, axis_name="j"), axis_name="i")(xs)
    close(out["i"], xs.sum(0, keepdim=True).expand_as(xs))
    close(out["j"], xs.sum(1, keepdim=True).expand_as(xs))
    close(out["ij"], xs.sum((0, 1), keepdim=True).expand_as(xs))
    close(out["max_i"], xs.amax(0, keepdim=True).expand_as(xs))
    flat = xs.reshape(n * m, *shape)
    close(out["gather"], flat.expand(n, m, *flat.shape))
    assert torch.equal(out["index"], torch.arange(n * m).reshape(n, m))
    assert torch.equal(out["index_i"], torch.arange(n)[:, None].expand(n, m))
    assert torch.equal(out["index_j"], torch.arange(m)[None, :].expand(n, m))


def test_collective_deep_inside_inner_transforms_and_unnamed_vmaps() -> None:
    xs = torch.randn(3, 2, dtype=F64)

    def inner(v: torch.Tensor) -> torch.Tensor:
        # an unnamed inner vmap, then grad, then the collective over the outer name
        return torch.func.grad(lambda u: psum(u, "outer").sin().sum())(v)

    out = vmap(vmap(inner), axis_name="outer")(xs[..., None])
    # psum transposes to psum: d/dv_i sum_j sin(psum(v)) = n * cos(psum(v))
    ref = 3 * torch.cos(xs.sum(0, keepdim=True)).expand_as(xs)
    close(out[..., 0], ref)


def test_inner_name_shadows_outer() -> None:
    xs = torch.arange(6.0, dtype=F64).reshape(2, 3)
    out = vmap(vmap(lambda v: psum(v, "i"), axis_name="i"), axis_name="i")(xs)
    close(out, xs.sum(1, keepdim=True).expand_as(xs))


def test_psum_of_numbers_and_pytrees() -> None:
    xs = torch.arange(3.0)
    out = vmap(lambda v: psum({"a": v, "n": 1, "s": Pair(v, None)}, "i"), axis_name="i")(xs)
    assert out["n"] == 3 and out["s"].v is None
    close(out["a"], torch.full((3,), 3.0))


def test_collective_with_chunk_size_or_vmapped_input_unbatched() -> None:
    # x captured from outside: psum of a constant is size * x, as in JAX.
    c = torch.tensor([1.0, 2.0])
    out = vmap(lambda v: psum(c, "i") + 0 * v, axis_name="i")(torch.zeros(4, 2))
    close(out, (4 * c).expand(4, 2))


# ---------------------------------------------------------------------------------------------
# Derivatives of collectives (JAX's rules: psum <-> psum, all_gather <-> psum_scatter).


def _softmax_psum(v: torch.Tensor) -> torch.Tensor:
    e = torch.exp(v)
    return e / psum(e, "i")


def _collective_zoo(v: torch.Tensor) -> torch.Tensor:
    g = all_gather(v, "i")
    return (
        torch.sin(v) * pmean(v**2, "i")
        + pmax(v * 1.5, "i") * 0.25
        - pmin(v, "i") * v
        + (g[0] * g[-1]) * axis_index("i")
        + _softmax_psum(v)
    )


def _loop_zoo(xs: torch.Tensor) -> torch.Tensor:
    n = xs.shape[0]
    e = torch.exp(xs)
    idx = torch.arange(n, dtype=F64).reshape(-1, *[1] * (xs.dim() - 1))
    return (
        torch.sin(xs) * (xs**2).mean(0)
        + (xs * 1.5).amax(0) * 0.25
        - xs.amin(0) * xs
        + (xs[0] * xs[-1]) * idx
        + e / e.sum(0)
    )


@given(st.integers(2, 4), st.integers(1, 3), st.integers(0, 1000))
def test_collectives_values_and_outer_derivatives(n: int, d: int, seed: int) -> None:
    xs = _members(n, (d,), seed)
    f = vmap(_collective_zoo, axis_name="i")
    close(f(xs), _loop_zoo(xs))
    u = _members(n, (d,), seed + 1)
    close(
        torch.func.vjp(f, xs)[1](u),
        torch.func.vjp(_loop_zoo, xs)[1](u),
    )
    close(torch.func.jvp(f, (xs,), (u,)), torch.func.jvp(_loop_zoo, (xs,), (u,)))
    close(torch.func.jacrev(f)(xs), torch.func.jacfwd(_loop_zoo)(xs))
    close(torch.func.jacfwd(f)(xs), torch.func.jacrev(_loop_zoo)(xs))
    close(
        torch.func.hessian(lambda x: f(x).sum())(xs),
        torch.func.hessian(lambda x: _loop_zoo(x).sum())(xs),
    )


@given(st.integers(2, 4), st.integers(1, 3), st.integers(0, 1000))
def test_collectives_inner_derivatives_follow_jax(n: int, d: int, seed: int) -> None:
    """Inside the vmap, the cotangents of every member meet (psum's transpose is psum).

    So vmap(grad(f_i)) gives d/dx_i of sum_j f_j, and vmap(jvp(f)) gives the full J t.
    """
    xs = _members(n, (d,), seed)
    ts = _members(n, (d,), seed + 1)

    def member(v: torch.Tensor) -> torch.Tensor:
        return _collective_zoo(v).sum()

    got = vmap(torch.func.grad(member), axis_name="i")(xs)
    close(got, torch.func.grad(lambda x: _loop_zoo(x).sum())(xs))
    got = vmap(torch.func.jacrev(member), axis_name="i")(xs)
    close(got, torch.func.grad(lambda x: _loop_zoo(x).sum())(xs))
    got_t = vmap(lambda v, t: torch.func.jvp(_collective_zoo, (v,), (t,))[1], axis_name="i")(xs, ts)
    close(got_t, torch.func.jvp(_loop_zoo, (xs,), (ts,))[1])
    # jacfwd inside: the basis tangent is the same for every member.
    got_j = vmap(torch.func.jacfwd(_collective_zoo), axis_name="i")(xs)
    eye = torch.eye(d, dtype=F64)
    ref = torch.stack(
        [torch.func.jvp(_loop_zoo, (xs,), (eye[k].expand(n, d),))[1] for k in range(d)], -1
    )
    close(got_j, ref)
    # Second order inside: grad of grad.
    got2 = vmap(torch.func.grad(lambda v: torch.func.grad(member)(v).sum()), axis_name="i")(xs)
    ref2 = torch.func.grad(lambda x: torch.func.grad(lambda y: _loop_zoo(y).sum())(x).sum())(xs)
    close(got2, ref2)


def test_softmax_with_psum_has_the_right_gradient() -> None:
    x = torch.randn(5, dtype=F64)
    w = torch.randn(5, dtype=F64)
    got = torch.func.grad(lambda x: (vmap(_softmax_psum, axis_name="i")(x) * w).sum())(x)
    ref = torch.func.grad(lambda x: (torch.softmax(x, 0) * w).sum())(x)
    close(got, ref)


def test_collective_gradients_pass_check_grads() -> None:
    testing = pytest.importorskip("functorch_utils.testing")
    if not (hasattr(functorch_utils, "jvp") and hasattr(functorch_utils, "vjp")):
        pytest.skip("check_grads needs functorch_utils.jvp/vjp, not exported yet")
    xs = _members(4, (2,), 7).abs() + 0.5  # away from pmax/pmin ties
    f = vmap(_collective_zoo, axis_name="i")
    testing.check_grads(f, (xs,), order=2, modes=("fwd", "rev"))
    testing.check_grads(
        vmap(torch.func.grad(lambda v: _collective_zoo(v).sum()), axis_name="i"), (xs,), order=1
    )


# ---------------------------------------------------------------------------------------------
# Error messages (pinned: error text is API).


def _raises(kind: type[BaseException], text: str) -> Any:
    return pytest.raises(kind, match=re.escape(text))


def test_error_sizes_disagree() -> None:
    def f(x: torch.Tensor, y: Any) -> torch.Tensor:
        return x

    with _raises(
        ValueError,
        "vmap(f, in_axes=(0, {'w': 1}))(...): the mapped axes have different sizes; expected the same size for every "
        "mapped argument, got x with size 3 along axis 0 (shape (3, 2)), y['w'] with size 4 "
        "along axis 1 (shape (2, 4)). Map axes of one length, or pass None in in_axes for "
        "arguments that should not be mapped.",
    ):
        vmap(f, in_axes=(0, {"w": 1}))(torch.ones(3, 2), {"w": torch.ones(2, 4)})


def test_error_axis_size_disagrees() -> None:
    with _raises(ValueError, "got axis_size=2; x with size 3 along axis 0 (shape (3,))"):
        vmap(lambda x: x, axis_size=2)(torch.ones(3))


def test_error_nothing_mapped() -> None:
    with _raises(
        ValueError,
        "nothing is mapped, so the axis size is unknown; expected at least one tensor with a "
        "non-None in_axes, or axis_size",
    ):
        vmap(lambda x: x, in_axes=None)(torch.ones(3))


def test_error_in_axes_not_a_prefix() -> None:
    with pytest.raises(ValueError) as info:
        vmap(lambda x, y: x, in_axes=(0, [0, 1]))(torch.ones(2), (torch.ones(2), torch.ones(2)))
    text = str(info.value)
    assert text.startswith(
        "vmap(<lambda>, in_axes=(0, [0, 1]))(...): in_axes is not a pytree prefix of the "
        "positional arguments; expected one entry per positional argument (2)"
    )
    assert "pytree structure error: different types at key path\n    in_axes[1]" in text
    with _raises(ValueError, "with 3 children, but at the same key path the full pytree"):
        vmap(lambda x: x, in_axes=(0, 0, 0))(torch.ones(2))


def test_error_in_axes_nested_entry_for_a_tensor_argument() -> None:
    with _raises(ValueError, "in_axes is not a pytree prefix of the positional arguments"):
        vmap(lambda x, y: x, in_axes=(0, {"a": 0}))(torch.ones(2), torch.ones(2))
    with _raises(ValueError, "expected one entry per positional argument (2)"):
        vmap(lambda x, y: x, in_axes=(0,))(torch.ones(2), torch.ones(2))


def test_parameters_and_tensor_subclasses_are_leaves() -> None:
    p = torch.nn.Parameter(torch.ones(3, 2))
    out = vmap(lambda a, b: a * b, in_axes=(0, None))(p, torch.tensor([1.0, 2.0]))
    close(out.detach(), torch.tensor([[1.0, 2.0]] * 3))
    assert out.requires_grad


def test_error_in_axes_top_level_dict() -> None:
    with _raises(
        TypeError,
        "vmap(<lambda>, in_axes={'a': 0}): in_axes must be an int, None, or a tuple with one "
        "entry per positional argument; expected an int, None or a tuple, got dict {'a': 0}. "
        "To give axes for the leaves of one argument, wrap its prefix in a tuple",
    ):
        vmap(lambda x: x, in_axes={"a": 0})


def test_error_in_axes_leaf_type() -> None:
    with _raises(
        TypeError,
        "vmap(<lambda>, in_axes=(0, 'a')): in_axes leaves must be ints or None; expected an int "
        "or None at in_axes[1], got str 'a'.",
    ):
        vmap(lambda x: x, in_axes=(0, "a"))


def test_error_axis_out_of_range() -> None:
    def f(x: Any) -> Any:
        return x

    with _raises(
        ValueError,
        "vmap(f, in_axes=({'a': 2},))(...): axis 2 is out of range for x['a'], which has 2 "
        "dimensions (shape (3, 4)); expected an axis in [-2, 1], got 2. Map a dimension x['a'] "
        "has, or pass None in in_axes to leave it unmapped.",
    ):
        vmap(f, in_axes=({"a": 2},))({"a": torch.ones(3, 4)})
    with _raises(ValueError, "axis 0 is out of range for y, which has 0 dimensions (shape ())"):
        vmap(lambda x, y: x)(torch.ones(2), y=torch.tensor(1.0))


def test_error_out_axes() -> None:
    with _raises(
        ValueError,
        "vmap(<lambda>, out_axes=2)(...): out_axes 2 is out of range for out, which has 0 "
        "dimensions per member (so 1 batched); expected an axis in [-1, 0], got 2.",
    ):
        vmap(lambda x: x.sum(), out_axes=2)(torch.ones(3, 2))
    with _raises(
        ValueError,
        "vmap(<lambda>, out_axes=(0, None))(...): out[1] has out_axes None but varies along the "
        "mapped axis; expected an output that is the same for every member",
    ):
        vmap(lambda x: (x, x * 2), out_axes=(0, None))(torch.ones(3))
    with _raises(ValueError, "out_axes is not a pytree prefix of the output"):
        vmap(lambda x: (x, x), out_axes=[0, 0])(torch.ones(3))


def test_error_item_and_control_flow() -> None:
    xs = torch.ones(3)
    with pytest.raises(
        TypeError, match=re.escape("converts a mapped tensor to a Python number")
    ) as info:
        vmap(lambda x: x * x.item())(xs)
    assert isinstance(info.value.__cause__, RuntimeError)
    assert "torch.where(cond, a, b)" in str(info.value)
    with _raises(
        TypeError,
        "vmap(<lambda>)(...): the function branches on the value of a mapped tensor (if/while on "
        "a tensor, bool()); expected control flow that does not depend on mapped values",
    ):
        vmap(lambda x: x if x > 0 else -x)(xs)
    with _raises(TypeError, "use torch.where(mask, x, 0) instead of x[mask]"):
        vmap(lambda x: x[x > 0])(torch.ones(3, 2))


def test_error_in_place_into_captured() -> None:
    buf = torch.zeros(2)
    with _raises(
        ValueError,
        "the function writes a mapped value in place into a tensor that is not mapped",
    ) as info:
        vmap(lambda x: buf.copy_(x))(torch.ones(3, 2))
    assert "instead of x.add_(v)" in str(info.value)
    with _raises(ValueError, "writes a mapped value in place"):
        vmap(lambda x: buf.add_(x))(torch.ones(3, 2))


def test_error_randomness() -> None:
    with _raises(ValueError, "draws random numbers but randomness='error'"):
        vmap(lambda x: x + torch.rand(()))(torch.ones(3))


def test_error_unbound_axis_name() -> None:
    with _raises(
        UnboundAxisNameError,
        "psum(x, axis_name='j'): unbound axis name 'j'; expected a name bound by an enclosing "
        "vmap(..., axis_name=...) (bound here: 'i'), got 'j'. Call it inside "
        "vmap(f, axis_name='j'), or use one of the bound names.",
    ):
        vmap(lambda x: psum(x, "j"), axis_name="i")(torch.ones(3))
    with pytest.raises(NameError, match="bound here: none"):
        axis_index("i")
    leaked: list[Any] = []
    vmap(lambda x: leaked.append(lambda: pmean(x, "i")) or x, axis_name="i")(torch.ones(2))
    with pytest.raises(NameError, match="unbound axis name 'i'"):
        leaked[0]()


def test_error_build_time_options() -> None:
    with _raises(TypeError, "vmap(fun): fun is not callable"):
        vmap(3)  # type: ignore[arg-type]
    with _raises(ValueError, "randomness is not one of torch.func.vmap's modes"):
        vmap(torch.sin, randomness="sometimes")
    with _raises(ValueError, "chunk_size runs the body once per chunk, so collectives would see"):
        vmap(torch.sin, axis_name="i", chunk_size=2)
    with _raises(TypeError, "axis_name is a tuple"):
        vmap(torch.sin, axis_name=("i", "j"))
    with _raises(TypeError, "axis_size must be a non-negative int"):
        vmap(torch.sin, axis_size=-1)
    with _raises(NotImplementedError, "axis_index_groups is not supported"):
        vmap(lambda x: psum(x, "i", axis_index_groups=[[0]]), axis_name="i")(torch.ones(2))


def test_error_all_gather_axis() -> None:
    with _raises(
        ValueError,
        "all_gather(x, axis_name='i', axis=2, tiled=False): axis is out of range for x with 1 "
        "dimensions; expected an axis in [-2, 1], got 2.",
    ):
        vmap(lambda v: all_gather(v, "i", axis=2), axis_name="i")(torch.ones(3, 2))
    with _raises(ValueError, "tiled=True needs an axis to concatenate along"):
        vmap(lambda v: all_gather(v, "i", tiled=True), axis_name="i")(torch.ones(3))


def test_public_exports() -> None:
    for name in ("vmap", "psum", "pmean", "pmax", "pmin", "all_gather", "axis_index"):
        if hasattr(functorch_utils, name):
            assert getattr(functorch_utils, name) is globals()[name]


# ---------------------------------------------------------------------------------------------
# out_axes=None inside another vmap: the result is batched at the outer level only.


def test_inner_out_axes_none_under_an_outer_vmap() -> None:
    ys = torch.arange(3.0, dtype=F64)
    got = vmap(lambda y: vmap(lambda x: 2 * y, out_axes=None)(torch.ones(4)))(ys)
    close(got, 2 * ys)  # JAX: [0, 2, 4]
    xs = torch.arange(4.0, dtype=F64)

    def inner_psum(y: torch.Tensor) -> torch.Tensor:
        return vmap(lambda x: psum(x * y, "i"), axis_name="i", out_axes=None)(xs)

    close(vmap(inner_psum)(ys), ys * xs.sum())
    gathered = vmap(
        lambda y: vmap(lambda x: all_gather(x * y, "i"), axis_name="i", out_axes=None)(xs)
    )(ys)
    close(gathered, ys[:, None] * xs)
    # a tree of outputs, some mapped and some not, and the outer name read inside
    both = vmap(
        lambda y: vmap(
            lambda x: {"m": x * y, "u": psum(y, "o"), "s": "tag"},
            out_axes={"m": 0, "u": None, "s": 0},
        )(xs),
        axis_name="o",
    )(ys)
    close(both["m"], ys[:, None] * xs)
    close(both["u"], ys.sum().expand(3))
    assert both["s"] == "tag"


def test_inner_out_axes_none_with_chunks_and_derivatives() -> None:
    ys = torch.tensor([0.3, -1.2, 2.0], dtype=F64)
    xs = torch.arange(4.0, dtype=F64)

    def f(y: torch.Tensor) -> torch.Tensor:
        return vmap(lambda x: psum(torch.sin(x * y), "i"), axis_name="i", out_axes=None)(xs)

    def ref(y: torch.Tensor) -> torch.Tensor:
        return torch.sin(xs * y).sum()

    close(vmap(f)(ys), torch.stack([ref(y) for y in ys]))
    # d/dy sum_i sin(x_i y) = sum_i x_i cos(x_i y), outside and inside the outer vmap
    expected = torch.stack([(xs * torch.cos(xs * y)).sum() for y in ys])
    close(torch.func.grad(lambda v: vmap(f)(v).sum())(ys), expected)
    close(vmap(torch.func.grad(f))(ys), expected)
    close(functorch_utils.grad(lambda v: vmap(f)(v).sum())(ys), expected)
    close(torch.func.jacfwd(lambda v: vmap(f)(v))(ys), torch.diag(expected))
    chunked = vmap(lambda y: vmap(lambda x: y * 2, out_axes=None, chunk_size=3)(xs), chunk_size=2)
    close(chunked(ys), 2 * ys)


def test_error_inner_out_axes_none_that_varies() -> None:
    with _raises(
        ValueError,
        "vmap(<lambda>, out_axes=None)(...): out has out_axes None but varies along the mapped "
        "axis; expected an output that is the same for every member",
    ):
        vmap(lambda y: vmap(lambda x: x * y, out_axes=None)(torch.ones(4)))(torch.arange(3.0))


def test_out_axes_none_with_nothing_else_mapped_and_empty_outputs() -> None:
    c = torch.tensor([1.0, 2.0])
    assert torch.equal(vmap(lambda: c * 2, in_axes=None, out_axes=None, axis_size=3)(), c * 2)
    assert vmap(lambda x: "only text")(torch.ones(2)) == "only text"
    out = vmap(lambda x: (x, c), out_axes=(0, None), axis_size=0)(torch.ones(0, 2))
    assert out[0].shape == (0, 2) and torch.equal(out[1], c)


# ---------------------------------------------------------------------------------------------
# Options given as tensors, arrays or huge ints: one clear error each.


def test_error_tensor_or_array_options() -> None:
    np = pytest.importorskip("numpy")
    with _raises(
        TypeError,
        "vmap(sin, in_axes=tensor([0, 1])): in_axes is a tensor or an array; expected an int, "
        "None, or a tuple/list/dict of them, got a tensor of dtype torch.int64 and shape (2,).",
    ):
        vmap(torch.sin, in_axes=torch.tensor([0, 1]))
    with _raises(TypeError, "vmap(sin, in_axes=array([0, 1])): in_axes is a tensor or an array"):
        vmap(torch.sin, in_axes=np.array([0, 1]))
    with _raises(TypeError, "out_axes is a tensor or an array"):
        vmap(torch.sin, out_axes=np.array([0, 1]))
    with _raises(TypeError, "in_axes leaves must be ints or None; expected an int or None at "):
        vmap(torch.sin, in_axes=(torch.tensor([0, 1]),))
    with _raises(
        TypeError,
        "vmap(sin, axis_name=tensor([0, 1])): axis_name is a tensor or an array, which cannot "
        "name an axis; expected a hashable name such as 'i'",
    ):
        vmap(torch.sin, axis_name=torch.tensor([0, 1]))
    with _raises(TypeError, "axis_name is a tensor or an array"):
        vmap(torch.sin, axis_name=np.array([0, 1]))
    with _raises(TypeError, "axis_size must be a non-negative int that fits in int64"):
        vmap(torch.sin, axis_size=np.array([3, 4]))
    with _raises(TypeError, "axis_size must be a non-negative int"):
        vmap(torch.sin, axis_size=torch.tensor(3))
    with _raises(TypeError, "psum(x, axis_name=array([1, 2])): axis_name is a tensor or an array"):
        vmap(lambda x: psum(x, np.array([1, 2])), axis_name="i")(torch.ones(2))
    with _raises(TypeError, "randomness must be a string; expected 'error', 'different' or"):
        vmap(torch.sin, randomness=np.array(["same", "error"]))


def test_error_huge_ints() -> None:
    huge = 2**70
    with _raises(
        TypeError,
        f"axis_size must be a non-negative int that fits in int64; expected an int in "
        f"[0, 2**63 - 1], got int {huge}.",
    ):
        vmap(torch.sin, axis_size=huge)
    with _raises(ValueError, f"axis {huge} is out of range for args[0], which has 1 dimensions"):
        vmap(torch.sin, in_axes=huge)(torch.ones(3))
    with _raises(ValueError, f"out_axes -{huge} is out of range for out"):
        vmap(torch.sin, out_axes=-huge)(torch.ones(3))
    with _raises(ValueError, "chunk_size must be a positive int or None"):
        vmap(torch.sin, chunk_size=huge)
    with _raises(ValueError, "has more elements than int64 can count"):
        vmap(lambda: torch.ones(4), in_axes=None, axis_size=2**62)()
    # a long unnamed axis with nothing mapped costs nothing until an output is materialised
    assert vmap(lambda: torch.ones(()), in_axes=None, axis_size=2**62)().shape == (2**62,)


def test_error_chunk_size() -> None:
    with _raises(
        ValueError,
        "vmap(sin): chunk_size must be a positive int or None; expected an int in [1, 2**63 - 1], "
        "e.g. chunk_size=64, got int 0.",
    ):
        vmap(torch.sin, chunk_size=0)
    with _raises(ValueError, "chunk_size must be a positive int or None"):
        vmap(torch.sin, chunk_size=-2)
    for bad in (1.5, "2", True):
        with _raises(TypeError, "chunk_size must be an int or None"):
            vmap(torch.sin, chunk_size=bad)  # type: ignore[arg-type]


# ---------------------------------------------------------------------------------------------
# Sparse and nested tensors: refused when mapped, passed through when unmapped.


@pytest.mark.filterwarnings("ignore:Sparse CSR tensor support is in beta:UserWarning")
@pytest.mark.filterwarnings("ignore:The PyTorch API of nested tensors is in prototype:UserWarning")
def test_error_sparse_and_nested_mapped_inputs() -> None:
    dense = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0]])

    def f(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    with _raises(
        TypeError,
        "vmap(f)(...): x is a sparse_coo tensor, which vmap cannot map; expected a dense "
        "(strided) tensor for every mapped leaf, got a sparse_coo tensor of dtype torch.float32. "
        "Map x.to_dense(), or pass None in in_axes to hand it to the function unmapped.",
    ):
        vmap(f)(dense.to_sparse())
    with _raises(TypeError, "x['a'] is a sparse_csr tensor, which vmap cannot map"):
        vmap(lambda x: x["a"] * 2)({"a": dense.to_sparse_csr()})
    for layout in (torch.jagged, torch.strided):
        nested = torch.nested.nested_tensor([torch.ones(2), torch.ones(3)], layout=layout)
        with _raises(
            TypeError,
            "x is a nested tensor, which vmap cannot map; expected a dense (strided) tensor for "
            "every mapped leaf, got a nested tensor of dtype torch.float32. Stack its components",
        ):
            vmap(f)(nested)


def test_unmapped_sparse_input_is_passed_through() -> None:
    dense = torch.tensor([[1.0, 0.0, 2.0], [0.0, 3.0, 0.0], [0.0, 0.0, 1.0]], dtype=F64)
    xs = torch.randn(4, 3, dtype=F64)
    got = vmap(lambda r, s: r @ s, in_axes=(0, None))(xs, dense.to_sparse())
    close(got, xs @ dense)


# ---------------------------------------------------------------------------------------------
# Grad mode never changes an answer: vmap, and vmap of every derivative transform.

_GRAD_MODES: dict[str, Callable[[], Any]] = {
    "enabled": contextlib.nullcontext,
    "no_grad": torch.no_grad,
    "set_grad_enabled(False)": lambda: torch.set_grad_enabled(False),
    "inference_mode": torch.inference_mode,
}


def _cube(x: torch.Tensor) -> torch.Tensor:
    return (x**3).sum() + torch.sin(x).sum() * x[0]


def _grad_mode_cases() -> dict[str, Callable[[torch.Tensor], Any]]:
    fu = functorch_utils

    def member(v: torch.Tensor) -> torch.Tensor:
        return v.sin() * v * v.sum()

    def inner_none(y: torch.Tensor) -> torch.Tensor:
        return vmap(lambda x: psum(torch.sin(x * y), "j"), axis_name="j", out_axes=None)(y * 2)

    return {
        "vmap": vmap(_cube),
        "vmap(fu.grad)": vmap(fu.grad(_cube)),
        "vmap(torch.func.grad)": vmap(torch.func.grad(_cube)),
        "vmap(fu.value_and_grad)": vmap(fu.value_and_grad(_cube)),
        "vmap(fu.jacrev)": vmap(fu.jacrev(member)),
        "vmap(fu.jacfwd)": vmap(fu.jacfwd(member)),
        "vmap(fu.hessian)": vmap(fu.hessian(_cube)),
        "vmap(fu.vjp)": vmap(lambda v: fu.vjp(member, v)[1](torch.ones_like(v))[0]),
        "vmap(fu.jvp)": vmap(lambda v: fu.jvp(member, (v,), (torch.ones_like(v),))),
        "vmap(fu.grad) with psum": vmap(
            fu.grad(lambda v: (psum(v**2, "i") * v.sin()).sum()), axis_name="i"
        ),
        "fu.grad(vmap)": fu.grad(lambda x: vmap(_cube)(x).sum()),
        "fu.grad(vmap) with psum": fu.grad(
            lambda x: vmap(lambda v: (v / psum(v.exp(), "i")).sum(), axis_name="i")(x).sum()
        ),
        "vmap(fu.grad) of inner out_axes=None": vmap(fu.grad(lambda y: inner_none(y).sum())),
    }


_CASES = _grad_mode_cases()


def _detached(tree: Any) -> Any:
    return optree.tree_map(
        lambda t: t.detach() if isinstance(t, torch.Tensor) else t, tree, namespace=NS
    )


@pytest.mark.parametrize("case", list(_CASES))
@pytest.mark.parametrize("requires_grad", [False, True], ids=["plain", "requires_grad"])
@pytest.mark.parametrize("mode", list(_GRAD_MODES))
def test_grad_mode_never_changes_an_answer(case: str, requires_grad: bool, mode: str) -> None:
    fn = _CASES[case]
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    expected = fn(x)
    x_in = x.clone().requires_grad_(requires_grad)
    with _GRAD_MODES[mode]():
        got = fn(x_in)
    close(_detached(got), expected)


def test_grad_mode_reference_values_equal_the_loop() -> None:
    x = torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=F64)
    close(_CASES["vmap(fu.grad)"](x), torch.stack([torch.func.grad(_cube)(v) for v in x]))
    close(_CASES["vmap(fu.hessian)"](x), torch.stack([torch.func.hessian(_cube)(v) for v in x]))


# ---------------------------------------------------------------------------------------------
# Collectives under functorch_utils' own grad/jvp/vjp give JAX's values.


def _zoo_torch(v: torch.Tensor) -> torch.Tensor:
    g = all_gather(v, "i")
    e = torch.exp(v)
    return torch.sin(v) * pmean(v**2, "i") + (g[0] * g[-1]) * axis_index("i") + e / psum(e, "i")


def test_collectives_under_functorch_utils_transforms_match_jax() -> None:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    np = pytest.importorskip("numpy")
    fu = functorch_utils
    lax = jax.lax
    jax.config.update("jax_enable_x64", True)

    def zoo_jax(v: Any) -> Any:
        g = lax.all_gather(v, "i")
        e = jnp.exp(v)
        return (
            jnp.sin(v) * lax.pmean(v**2, "i")
            + (g[0] * g[-1]) * lax.axis_index("i")
            + e / lax.psum(e, "i")
        )

    rng = np.random.default_rng(3)
    xs_np, ts_np, w_np = (rng.standard_normal((4, 2)) for _ in range(3))
    xs, ts, w = (torch.tensor(a) for a in (xs_np, ts_np, w_np))
    f = vmap(_zoo_torch, axis_name="i")
    fj = jax.vmap(zoo_jax, axis_name="i")

    def same(ours: Any, theirs: Any) -> None:
        close(_detached(ours), optree.tree_map(lambda a: torch.tensor(np.asarray(a)), theirs))

    same(f(xs), fj(xs_np))
    same(fu.grad(lambda x: (f(x) * w).sum())(xs), jax.grad(lambda x: (fj(x) * w_np).sum())(xs_np))
    same(fu.jvp(f, (xs,), (ts,)), jax.jvp(fj, (xs_np,), (ts_np,)))
    out, pull = fu.vjp(f, xs)
    out_j, pull_j = jax.vjp(fj, xs_np)
    same((out, pull(w)), (out_j, pull_j(w_np)))
    # inside the vmap: the cotangents of all members meet, as in JAX
    same(
        vmap(fu.grad(lambda v: (_zoo_torch(v) * v).sum()), axis_name="i")(xs),
        jax.vmap(jax.grad(lambda v: (zoo_jax(v) * v).sum()), axis_name="i")(xs_np),
    )
    same(
        vmap(lambda v, t: fu.jvp(_zoo_torch, (v,), (t,)), axis_name="i")(xs, ts),
        jax.vmap(lambda v, t: jax.jvp(zoo_jax, (v,), (t,)), axis_name="i")(xs_np, ts_np),
    )
    same(
        vmap(lambda v, u: fu.vjp(_zoo_torch, v)[1](u)[0], axis_name="i")(xs, w),
        jax.vmap(lambda v, u: jax.vjp(zoo_jax, v)[1](u)[0], axis_name="i")(xs_np, w_np),
    )
    same(
        vmap(fu.jacrev(_zoo_torch), axis_name="i")(xs),
        jax.vmap(jax.jacrev(zoo_jax), axis_name="i")(xs_np),
    )
    same(
        vmap(fu.jacfwd(_zoo_torch), axis_name="i")(xs),
        jax.vmap(jax.jacfwd(zoo_jax), axis_name="i")(xs_np),
    )
    # the per-member Hessian is not symmetric here: JAX's is forward-over-reverse
    same(
        vmap(fu.hessian(lambda v: (_zoo_torch(v) * v[0]).sum()), axis_name="i")(xs),
        jax.vmap(jax.hessian(lambda v: (zoo_jax(v) * v[0]).sum()), axis_name="i")(xs_np),
    )


def test_inner_out_axes_none_derivatives_match_jax() -> None:
    jax = pytest.importorskip("jax")
    jnp = pytest.importorskip("jax.numpy")
    np = pytest.importorskip("numpy")
    fu = functorch_utils
    jax.config.update("jax_enable_x64", True)
    xs_np = np.arange(4.0)
    ys_np = np.array([0.0, 1.0, 2.0])
    xs, ys = torch.tensor(xs_np), torch.tensor(ys_np)

    def ours(y: torch.Tensor) -> torch.Tensor:
        return vmap(lambda x: psum(torch.sin(x * y), "i"), axis_name="i", out_axes=None)(xs)

    def theirs(y: Any) -> Any:
        return jax.vmap(lambda x: jax.lax.psum(jnp.sin(x * y), "i"), axis_name="i", out_axes=None)(
            xs_np
        )

    def same(a: Any, b: Any) -> None:
        close(a, torch.tensor(np.asarray(b)))

    same(vmap(ours)(ys), jax.vmap(theirs)(ys_np))
    same(
        fu.grad(lambda y: vmap(ours)(y).sum())(ys),
        jax.grad(lambda y: jax.vmap(theirs)(y).sum())(ys_np),
    )
    same(vmap(fu.grad(ours))(ys), jax.vmap(jax.grad(theirs))(ys_np))
    same(
        vmap(lambda y: vmap(lambda x: 2 * y, out_axes=None)(torch.ones(4)))(ys),
        jax.vmap(lambda y: jax.vmap(lambda x: 2 * y, out_axes=None)(jnp.ones(4)))(ys_np),
    )


def test_error_cyclic_arguments() -> None:
    looped: list[Any] = [torch.ones(2)]
    looped.append(looped)

    def f(xs: Any) -> Any:
        return xs[0]

    with _raises(
        ValueError, "vmap(f)(...): the pytree is cyclic: xs[1] is xs itself; expected a tree"
    ):
        vmap(f)(looped)


@pytest.mark.filterwarnings("ignore:There is a performance drop:UserWarning")
def test_error_autograd_apis_inside_vmap() -> None:
    def f(x: torch.Tensor) -> torch.Tensor:
        x.requires_grad_()
        return x.sin().sum()

    with _raises(
        TypeError,
        "vmap(f)(...): the function calls Tensor.requires_grad_() or a "
        "torch.autograd.functional API on a mapped value, which torch.func cannot batch; "
        "expected derivatives taken with functorch_utils' transforms",
    ):
        vmap(f)(torch.randn(3))
    with _raises(TypeError, "Tensor.requires_grad_() or a torch.autograd.functional API"):
        vmap(lambda x: torch.autograd.functional.jacobian(torch.sin, x))(torch.randn(5, 3))
    with _raises(TypeError, "the function uses torch.autograd's forward mode"):
        vmap(
            lambda x: torch.autograd.functional.jacobian(
                torch.sin, x, strategy="forward-mode", vectorize=True
            )
        )(torch.randn(5, 3))


def test_error_legacy_autograd_function_inside_vmap() -> None:
    from .helpers import LegacySquare

    with _raises(
        TypeError,
        "vmap(apply)(...): the function calls a torch.autograd.Function without a setup_context "
        "staticmethod, which torch.func cannot batch",
    ) as info:
        vmap(LegacySquare.apply)(torch.randn(3))
    assert isinstance(info.value.__cause__, RuntimeError)


def test_vmap_never_returns_torchs_zero_tensor():
    # grad of a jvp that does not depend on the input: torch computes a ZeroTensor inside
    def g(a):
        inner = lambda a: functorch_utils.jvp(lambda a: (a * 2.0).sum(), (a,), (torch.ones(3),))[1]  # noqa: E731
        return functorch_utils.grad(inner)(a)

    out = functorch_utils.vmap(g)(torch.zeros(2, 3))
    assert out.numpy().tolist() == [[0.0] * 3] * 2
    out = functorch_utils.vmap(lambda a: {"g": g(a)})(torch.zeros(2, 3))
    assert out["g"].numpy().sum() == 0.0
