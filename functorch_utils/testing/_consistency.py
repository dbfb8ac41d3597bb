"""Consistency checks that need no finite differences: ``check_vmap``, ``check_consistency``.

The tolerance is NOTE [consistency tolerances] below.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optree
import torch

import functorch_utils
from functorch_utils._errors import fun_name
from functorch_utils._pytree import (
    NAMESPACE,
    flatten,
    is_float_like,
    leaf_names,
    partition,
    structure_errors,
)
from functorch_utils.flatten_util import ravel_pytree

from ._numerics import eps_of, highest_matmul_precision
from ._problem import check_args_tuple, is_float_tensor, prefix_errors_text
from ._report import DerivativeCheckError, failure

__all__ = ["PROPERTIES", "check_consistency", "check_vmap"]

Tensor = torch.Tensor

PROPERTIES = (
    "jacrev_jacfwd",
    "hessian_symmetric",
    "hessian_jacrev_jacrev",
    "adjoint",
    "jvp_linear",
    "hvp",
)
_SCALAR_ONLY = ("hessian_symmetric", "hessian_jacrev_jacrev", "hvp")

# NOTE [consistency tolerances]
# Two AD paths to the same quantity differ only by rounding, so the tolerance is a small multiple
# of the dtype's epsilon times a scale: 32 * eps * scale by default (docs/testing.md, "The
# numbers": consistency tolerances; the worst case measured over 200 random small functions was
# 5 eps * scale). The scale is the largest magnitude of the compared quantity (for H v:
# max_i (|H| |v|)_i, the rounding bound of a matrix-vector product). Matmuls run at "highest"
# float32 precision (TF32 made vmap vs loop differ by thousands of eps on an H100).
_FACTOR = 32.0  # docs/testing.md, "The numbers": consistency tolerances


def _relative(r: float, scale: float) -> dict[str, float]:
    return {f"relative (rtol {r:.3g} * scale {scale:.3g})": r * scale}


# ---------------------------------------------------------------------------------------------
# check_vmap


def _in_axes_leaves(call: str, in_axes: Any, args: Any) -> list[Any]:
    """One axis (int or None) per leaf of ``args``, ``None`` counting as a leaf."""
    prefix: Any = in_axes if not isinstance(in_axes, list) else tuple(in_axes)
    if isinstance(prefix, int) or prefix is None:
        n = len(optree.tree_leaves(args, none_is_leaf=True, namespace=NAMESPACE))
        return [prefix] * n
    detail = prefix_errors_text(prefix, args, "in_axes")
    if detail:
        raise ValueError(
            f"{call}: in_axes is not a pytree prefix of args; expected one entry per "
            f"argument, got {in_axes!r}:\n{detail}"
        )
    return optree.broadcast_prefix(prefix, args, none_is_leaf=True, namespace=NAMESPACE)


def _batch_size(args: Any, axes: list[Any], call: str) -> int:
    leaves: list[Any] = optree.tree_leaves(args, none_is_leaf=True, namespace=NAMESPACE)
    mapped = [(x, ax) for x, ax in zip(leaves, axes) if isinstance(x, Tensor) and ax is not None]
    sizes = {int(x.shape[ax]) for x, ax in mapped}
    if len(sizes) != 1:
        raise ValueError(
            f"{call}: the mapped axes must have one size; expected one batch size, got "
            f"{sorted(sizes) or 'none (nothing is mapped)'}."
        )
    return sizes.pop()


def _loop(f: Callable[..., Any], args: Any, axes: list[Any], size: int) -> list[Any]:
    """``f`` on each slice of the mapped arguments, in a Python loop."""
    leaves: list[Any]
    leaves, spec = optree.tree_flatten(args, none_is_leaf=True, namespace=NAMESPACE)

    def select(x: Any, ax: Any, b: int) -> Any:
        return x.select(ax, b) if isinstance(x, Tensor) and ax is not None else x

    return [
        f(*optree.tree_unflatten(spec, [select(x, ax, b) for x, ax in zip(leaves, axes)]))
        for b in range(size)
    ]


def _loop_leaves(batched: Any, outs: list[Any], call: str) -> list[list[Any]]:
    spec = flatten(batched)[1]
    result = []
    for b, o in enumerate(outs):
        o_leaves, o_spec = flatten(o)
        if o_spec != spec:
            raise DerivativeCheckError(
                f"{call}: vmap vs loop: the output of f on batch element {b} does not have the "
                f"structure of the vmapped output:\n{structure_errors(batched, o, 'out')}"
            )
        result.append(o_leaves)
    return result


def _compare_leaf(call: str, name: str, bl: Tensor, stacked: Tensor, rtol: float | None,
                  atol: float) -> None:  # fmt: skip
    """One output leaf of vmap against the loop's results stacked along axis 0."""
    if bl.shape != stacked.shape:
        raise DerivativeCheckError(
            f"{call}: vmap vs loop check failed at {name}: shape {tuple(bl.shape)}; expected "
            f"{tuple(stacked.shape)} (the loop's results stacked along axis 0)."
        )
    if not is_float_like(bl):
        if not torch.equal(bl, stacked):
            raise DerivativeCheckError(
                f"{call}: vmap vs loop check failed at {name}: integer values differ."
            )
        return
    wide = torch.complex128 if bl.is_complex() else torch.float64
    a, e = bl.detach().to(wide), stacked.detach().to(wide)
    diff = (a - e).abs()
    scale = float(e.abs().max()) if e.numel() else 0.0
    r = _FACTOR * eps_of(bl.dtype) if rtol is None else float(rtol)
    parts = _relative(r, scale) | ({"atol": float(atol)} if atol else {})
    err = float(diff.max()) if diff.numel() else 0.0
    if err <= sum(parts.values()):
        return
    idx = int(torch.argmax(diff.reshape(-1)))
    b = idx // max(1, diff[0].numel())
    got, want = a.reshape(-1)[idx].item(), e.reshape(-1)[idx].item()
    extra = f"worst batch element {b}: vmap gave {got:.6g}, the loop {want:.6g}"
    raise failure(call, "vmap vs loop", name, err=err, parts=parts, seed=0,
                  headline=f"at {name}", after=[extra])  # fmt: skip


def check_vmap(
    f: Callable[..., Any],
    args: Sequence[Any],
    in_axes: Any = 0,
    *,
    rtol: float | None = None,
    atol: float = 0.0,
) -> None:
    """Checks ``functorch_utils.vmap(f, in_axes)(*args)`` against a Python loop over the batch.

    Each slice of the mapped arguments is passed to ``f`` on its own and the results are stacked
    along axis 0. Every output leaf must agree to ``rtol * max|loop|`` (+ ``atol``) elementwise,
    with ``rtol = 32 * eps`` of the leaf's dtype by default: the two differ only by rounding.

    Args:
        f: The function, taking ``*args`` and returning a pytree of tensors.
        args: Tuple of positional arguments, pytrees of tensors (the batched ones).
        in_axes: As for :func:`functorch_utils.vmap`: an int, ``None``, or a pytree prefix of
            ``args`` with int or ``None`` leaves.
        rtol: Relative tolerance (times the leaf's largest magnitude); default ``32 * eps``.
        atol: Absolute tolerance added.

    Raises:
        DerivativeCheckError: An output leaf differs (the report names it and the batch index).
        ValueError: ``in_axes`` is not a prefix of ``args``, or mapped sizes disagree.

    Example:
        >>> import torch
        >>> from functorch_utils.testing import check_vmap
        >>> xs, w = torch.randn(5, 3), torch.randn(3, 2)
        >>> check_vmap(lambda x, w: torch.tanh(x @ w), (xs, w), in_axes=(0, None))
        >>> calls = []
        >>> def counted(x):  # hidden state: vmap calls it once, a loop once per element
        ...     calls.append(x)
        ...     return x * len(calls)
        >>> check_vmap(counted, (torch.ones(3, 2),))
        Traceback (most recent call last):
        functorch_utils.testing.DerivativeCheckError: check_vmap(counted, args): vmap vs loop check failed at out...
    """
    call = f"check_vmap({fun_name(f)}, args)"
    args = check_args_tuple(call, args)
    axes = _in_axes_leaves(call, in_axes, args)
    size = _batch_size(args, axes, call)
    with highest_matmul_precision():
        batched = functorch_utils.vmap(f, in_axes=in_axes)(*args)
        outs = _loop(f, args, axes, size)
    b_leaves = flatten(batched)[0]
    names = leaf_names(batched, "out")
    loop_leaves = _loop_leaves(batched, outs, call)
    for k, (name, bl) in enumerate(zip(names, b_leaves)):
        if isinstance(bl, Tensor):
            stacked = torch.stack([torch.as_tensor(ls[k]) for ls in loop_leaves])
            _compare_leaf(call, name, bl, stacked, rtol, atol)


# ---------------------------------------------------------------------------------------------
# check_consistency


class _Raveled:
    """``f`` as a function of one vector ``z`` (all floating input leaves) to one vector."""

    def __init__(self, call: str, f: Callable[..., Any], args: tuple[Any, ...]) -> None:
        xs, self.part = partition(args, is_float_tensor)
        if not xs:
            raise ValueError(
                f"{call}: args has no floating-point tensor leaves; expected at least one, got "
                "none."
            )
        names = leaf_names(args, "args")
        self.names = [names[k] for k in self.part.picked]
        self.sizes = [x.numel() for x in xs]
        self.z, self.unravel = ravel_pytree([x.detach() for x in xs])
        self.f = f
        self.out_names: list[str] = []
        self.out_sizes: list[int] = []

    def __call__(self, z: Tensor) -> Tensor:
        out = self.f(*self.part.combine(self.unravel(z)))
        outs, part = partition(out, is_float_tensor)
        names = leaf_names(out, "out")
        self.out_names = [names[k] for k in part.picked]
        self.out_sizes = [o.numel() for o in outs]
        return ravel_pytree(outs)[0].to(z.dtype)

    def where(self, i: int | None, j: int | None) -> str:
        """Names of the output element ``i`` and input element ``j`` of the flat Jacobian."""
        parts = []
        if i is not None:
            parts.append(_locate(self.out_names, self.out_sizes, i, "output"))
        if j is not None:
            parts.append(_locate(self.names, self.sizes, j, "input"))
        return ", ".join(parts)


def _locate(names: list[str], sizes: list[int], k: int, what: str) -> str:
    for name, n in zip(names, sizes):
        if k < n:
            return f"{what} {name} (flat element {k})"
        k -= n
    return f"{what} element {k}"


@dataclass
class _Context:
    """What every property check needs: the flat function, the point, the tolerance, the rng."""

    call: str
    F: _Raveled
    z: Tensor
    out: Tensor
    r: float
    seed: int
    gen: torch.Generator
    jac_cache: list[float] = field(default_factory=list)

    def fs(self, z: Tensor) -> Tensor:
        return self.F(z).reshape(())

    def rand(self, n: int) -> Tensor:
        w = torch.randn(n, dtype=torch.float64, generator=self.gen)
        return (w / max(float(w.norm()), 1e-300)).to(self.z.dtype)

    def jac_norm(self) -> float:
        """Frobenius norm of the Jacobian (once): the scale of sums that may cancel."""
        if not self.jac_cache:
            jac = functorch_utils.jacrev(self.F)(self.z)
            self.jac_cache.append(float(jac.abs().double().norm()))
        return self.jac_cache[0]

    def where(self, name: str, a: Tensor, k: int) -> str:
        if a.dim() == 2:
            i, j = k // a.shape[1], k % a.shape[1]
            if name.startswith("jac"):
                return self.F.where(i, j)
            return self.F.where(None, i) + " and " + self.F.where(None, j)
        if a.dim() == 1 and name == "hvp":
            return self.F.where(None, k)
        return "the compared scalars" if a.numel() == 1 else self.F.where(k, None)

    def compare(self, name: str, a: Tensor, b: Tensor, what: str, scale: float | None = None
                ) -> None:  # fmt: skip
        diff = (a - b).abs()
        err = float(diff.max()) if diff.numel() else 0.0
        sc = max(float(a.abs().max()), float(b.abs().max())) if scale is None else scale
        if err <= self.r * sc:
            return
        k = int(torch.argmax(diff.reshape(-1)))
        extra = f"{what}: {a.reshape(-1)[k].item():.6g} vs {b.reshape(-1)[k].item():.6g}"
        where = self.where(name, a, k)
        raise failure(self.call, name, where, err=err, parts=_relative(self.r, sc),
                      seed=self.seed, headline=f"at {where}", after=[extra])  # fmt: skip


def _jacrev_jacfwd(c: _Context) -> None:
    jr = functorch_utils.jacrev(c.F)(c.z)
    jf = functorch_utils.jacfwd(c.F)(c.z)
    c.compare("jacrev_jacfwd", jr, jf, "jacrev vs jacfwd")


def _hessian_symmetric(c: _Context) -> None:
    H = functorch_utils.hessian(c.fs)(c.z)
    c.compare("hessian_symmetric", H, H.T, "H[i, j] vs H[j, i]")


def _hessian_jacrev_jacrev(c: _Context) -> None:
    H = functorch_utils.hessian(c.fs)(c.z)
    H2 = functorch_utils.jacrev(functorch_utils.jacrev(c.fs))(c.z)
    c.compare("hessian_jacrev_jacrev", H, H2, "hessian vs jacrev(jacrev)")


def _adjoint(c: _Context) -> None:
    u, v = c.rand(c.out.numel()), c.rand(c.z.numel())
    _, jv = functorch_utils.jvp(c.F, (c.z,), (v,))
    _, fn = functorch_utils.vjp(c.F, c.z)
    (jtu,) = fn(u)
    a = torch.sum(u * jv).real.reshape(1).double()
    b = torch.sum(jtu * v).real.reshape(1).double()
    # rounding bound of both sides: |u| |J|_F |v| (sums cancel, so not |u| |J v|)
    sc = float(u.abs().double().norm() * v.abs().double().norm()) * c.jac_norm()
    c.compare("adjoint", a, b, "<u, J v> vs <J^T u, v>", sc)


def _jvp_linear(c: _Context) -> None:
    v1, v2 = c.rand(c.z.numel()), c.rand(c.z.numel())
    ca, cb = 0.75, -1.25
    _, j12 = functorch_utils.jvp(c.F, (c.z,), (ca * v1 + cb * v2,))
    _, j1 = functorch_utils.jvp(c.F, (c.z,), (v1,))
    _, j2 = functorch_utils.jvp(c.F, (c.z,), (v2,))
    # each jvp element is a sum that can cancel: bound it by |J_i| |v|
    sc = c.jac_norm() * float(
        abs(ca) * v1.abs().double().norm() + abs(cb) * v2.abs().double().norm()
    )
    c.compare("jvp_linear", j12, ca * j1 + cb * j2, "jvp(a v1 + b v2) vs a jvp(v1) + b jvp(v2)", sc)


def _hvp(c: _Context) -> None:
    v = c.rand(c.z.numel())
    H = functorch_utils.hessian(c.fs)(c.z)
    _, hv = functorch_utils.hvp(c.fs, (c.z,), (v,))
    sc = float((H.abs() @ v.abs()).max())
    c.compare("hvp", hv, H @ v, "hvp vs H @ v", sc)


_CHECKS: dict[str, Callable[[_Context], None]] = {
    "jacrev_jacfwd": _jacrev_jacfwd,
    "hessian_symmetric": _hessian_symmetric,
    "hessian_jacrev_jacrev": _hessian_jacrev_jacrev,
    "adjoint": _adjoint,
    "jvp_linear": _jvp_linear,
    "hvp": _hvp,
}


def _properties(call: str, properties: Any, out: Tensor) -> list[str]:
    scalar = out.numel() == 1
    if properties is None:
        return [p for p in PROPERTIES if scalar or p not in _SCALAR_ONLY]
    need = [p for p in properties if p in _SCALAR_ONLY]
    if need and not scalar:
        raise ValueError(
            f"{call}: {need} need a scalar output; expected one element, got "
            f"{out.numel()}. Check them on a scalar function (e.g. a sum)."
        )
    return list(properties)


def check_consistency(
    f: Callable[..., Any],
    args: Sequence[Any],
    properties: Sequence[str] | None = None,
    *,
    rtol: float | None = None,
    seed: int = 0,
) -> None:
    """Checks identities between ``functorch_utils``' transforms of ``f``; no finite differences.

    The floating leaves of ``args`` are seen as one vector ``z`` and the floating output leaves as
    one vector, so each property is checked on one matrix:

    - ``"jacrev_jacfwd"``: ``jacrev(f) == jacfwd(f)``;
    - ``"hessian_symmetric"``: ``hessian(f) == hessian(f).T`` (scalar ``f``);
    - ``"hessian_jacrev_jacrev"``: ``hessian(f) == jacrev(jacrev(f))`` (scalar ``f``);
    - ``"adjoint"``: ``<u, jvp(v)> == <vjp(u), v>`` for random ``u``, ``v`` (bilinear pairing,
      JAX's convention for complex numbers);
    - ``"jvp_linear"``: ``jvp(a v1 + b v2) == a jvp(v1) + b jvp(v2)``;
    - ``"hvp"``: ``hvp(f, z, v) == hessian(f) @ v`` (scalar ``f``).

    The two sides differ only by rounding, so the tolerance is tight: ``32 * eps * scale`` where
    ``scale`` is the magnitude of the compared quantity.

    Args:
        f: The function, taking ``*args``.
        args: Tuple of positional arguments, pytrees of tensors.
        properties: Which properties to check; by default all of them that apply (the Hessian
            ones only for a scalar output).
        rtol: Relative tolerance; default ``32 * eps`` of the inputs' (promoted) dtype.
        seed: Seed of the random directions.

    Raises:
        DerivativeCheckError: A property fails (the report names it and the worst element's
            input and output leaves).
        ValueError: An unknown property, or a scalar-only property for a non-scalar output.

    Example:
        >>> import torch
        >>> from functorch_utils.testing import check_consistency
        >>> def f(p, x):
        ...     return torch.tanh(x @ p["w"]).pow(2).sum()
        >>> check_consistency(f, ({"w": torch.randn(3, 2)}, torch.randn(4, 3)))
        >>> from functorch_utils import custom_jvp
        >>> @custom_jvp
        ... def prod(x):
        ...     return x[0] * x[1]
        >>> @prod.defjvp
        ... def prod_jvp(primals, tangents):  # the second term should be x[0] * t[1]
        ...     (x,), (t,) = primals, tangents
        ...     return prod(x), x[1] * t[0] + 1.01 * x[0] * t[1]
        >>> check_consistency(prod, (torch.tensor([1.0, 2.0], dtype=torch.float64),))
        Traceback (most recent call last):
        functorch_utils.testing.DerivativeCheckError: check_consistency(prod, args): hessian_symmetric check failed...
    """
    call = f"check_consistency({fun_name(f)}, args)"
    args = check_args_tuple(call, args)
    if isinstance(properties, str):
        properties = (properties,)
    bad = [p for p in (properties or ()) if p not in PROPERTIES]
    if bad:
        raise ValueError(
            f"{call}: unknown properties; expected a subset of {PROPERTIES}, got {bad}."
        )
    F = _Raveled(call, f, args)
    r = _FACTOR * eps_of(F.z.dtype) if rtol is None else float(rtol)
    gen = torch.Generator().manual_seed(seed)
    with highest_matmul_precision():
        out = F(F.z)
        c = _Context(call, F, F.z, out, r, seed, gen)
        for p in _properties(call, properties, out):
            _CHECKS[p](c)
