"""Consistency checks that need no finite differences: ``check_vmap``, ``check_consistency``.

# NOTE [consistency tolerances]
# Two AD paths to the same quantity differ only by rounding, so the tolerance is a small multiple
# of the dtype's epsilon times a scale: 32 * eps * scale by default. Worst case over 200 random
# small functions on CPU (TESTING.md), in units of eps * scale: vmap vs loop 5, jacrev vs jacfwd 2,
# adjointness 1.6, Hessian symmetry 3.3, hessian vs jacrev(jacrev) 4.7, hvp vs H v 3.4. The scale
# is the largest magnitude of the compared quantity (for H v: max_i (|H| |v|)_i, the rounding
# bound of a matrix-vector product). Matmuls run at "highest" float32 precision (TF32 made vmap vs
# loop differ by thousands of eps on an H100).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import optree
import torch

import functorch_utils

from ._check import CheckReport, DerivativeCheckError, _highest_matmul_precision
from ._tree import NAMESPACE, flatten, leaf_paths, structure_errors

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
_FACTOR = 32.0


def _eps(dtype: torch.dtype) -> float:
    return float(torch.finfo(dtype.to_real() if dtype.is_complex else dtype).eps)


def _fun_name(f: Any) -> str:
    return str(getattr(f, "__name__", type(f).__name__))


def _fail(call: str, check: str, where: str, err: float, parts: dict[str, float], extra: str,
          seed: int) -> DerivativeCheckError:  # fmt: skip
    tol = sum(parts.values())
    parts_text = " + ".join(f"{k} {v:.3g}" for k, v in parts.items())
    message = (
        f"{call}: {check} check failed at {where}.\n"
        f"  error {err:.6g} > tolerance {tol:.6g} = {parts_text}\n"
        f"  {extra}\n"
        f"  direction seed {seed}; pass seed=... to try other directions."
    )
    report = CheckReport(
        call=call, check=check, leaf=where, error=err, tolerance=tol, parts=dict(parts),
        derivative=float("nan"), reference_value=float("nan"), reference="consistency",
        step=None, seed=seed, message=message,
    )  # fmt: skip
    return DerivativeCheckError(message, report)


# ---------------------------------------------------------------------------------------------
# check_vmap


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

    Examples:
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
    call = f"check_vmap({_fun_name(f)}, args)"
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"{call}: args must be a tuple of positional arguments; expected a tuple, got "
            f"{type(args).__name__}. Wrap a single argument: (x,)."
        )
    args = tuple(args)
    full: Any = args
    prefix: Any = in_axes if not isinstance(in_axes, list) else tuple(in_axes)
    if isinstance(prefix, int) or prefix is None:
        leaves = optree.tree_leaves(full, none_is_leaf=True, namespace=NAMESPACE)
        axes: list[Any] = [prefix] * len(leaves)
    else:
        errors = optree.prefix_errors(prefix, full, none_is_leaf=True, namespace=NAMESPACE)
        if errors:
            detail = "\n".join(str(e("in_axes")) for e in errors[:3])
            raise ValueError(
                f"{call}: in_axes is not a pytree prefix of args; expected one entry per "
                f"argument, got {in_axes!r}:\n{detail}"
            )
        axes = optree.broadcast_prefix(prefix, full, none_is_leaf=True, namespace=NAMESPACE)
    leaves, spec = optree.tree_flatten(full, none_is_leaf=True, namespace=NAMESPACE)
    sizes = {
        int(x.shape[ax]) for x, ax in zip(leaves, axes) if isinstance(x, Tensor) and ax is not None
    }
    if len(sizes) != 1:
        raise ValueError(
            f"{call}: the mapped axes must have one size; expected one batch size, got "
            f"{sorted(sizes) or 'none (nothing is mapped)'}."
        )
    (size,) = sizes
    with _highest_matmul_precision():
        batched = functorch_utils.vmap(f, in_axes=in_axes)(*args)
        outs = []
        for b in range(size):
            sl = [
                x.select(ax, b) if isinstance(x, Tensor) and ax is not None else x
                for x, ax in zip(leaves, axes)
            ]
            outs.append(f(*optree.tree_unflatten(spec, sl)))
    b_leaves, b_spec = flatten(batched)
    names = leaf_paths(batched, "out")
    loop_leaves = []
    for b, o in enumerate(outs):
        o_leaves, o_spec = flatten(o)
        if o_spec != b_spec:
            raise DerivativeCheckError(
                f"{call}: vmap vs loop: the output of f on batch element {b} does not have the "
                f"structure of the vmapped output:\n{structure_errors(batched, o, 'out')}"
            )
        loop_leaves.append(o_leaves)
    for k, (name, bl) in enumerate(zip(names, b_leaves)):
        if not isinstance(bl, Tensor):
            continue
        stacked = torch.stack([torch.as_tensor(ls[k]) for ls in loop_leaves])
        if bl.shape != stacked.shape:
            raise DerivativeCheckError(
                f"{call}: vmap vs loop check failed at {name}: shape {tuple(bl.shape)}; expected "
                f"{tuple(stacked.shape)} (the loop's results stacked along axis 0)."
            )
        if not (bl.is_floating_point() or bl.is_complex()):
            if not torch.equal(bl, stacked):
                raise DerivativeCheckError(
                    f"{call}: vmap vs loop check failed at {name}: integer values differ."
                )
            continue
        wide = torch.complex128 if bl.is_complex() else torch.float64
        a, e = bl.detach().to(wide), stacked.detach().to(wide)
        diff = (a - e).abs()
        scale = float(e.abs().max()) if e.numel() else 0.0
        r = _FACTOR * _eps(bl.dtype) if rtol is None else float(rtol)
        parts = {f"relative (rtol {r:.3g} * scale {scale:.3g})": r * scale}
        if atol:
            parts["atol"] = float(atol)
        err = float(diff.max()) if diff.numel() else 0.0
        if not err <= sum(parts.values()):
            idx = int(torch.argmax(diff.reshape(-1)))
            b = idx // max(1, diff[0].numel())
            raise _fail(
                call, "vmap vs loop", name, err, parts,
                f"worst batch element {b}: vmap gave {a.reshape(-1)[idx].item():.6g}, the loop "
                f"{e.reshape(-1)[idx].item():.6g}",
                0,
            )  # fmt: skip


# ---------------------------------------------------------------------------------------------
# check_consistency


class _Flat:
    """``f`` as a function of one vector ``z`` (all floating input leaves) to one vector."""

    def __init__(self, call: str, f: Callable[..., Any], args: tuple[Any, ...]) -> None:
        leaves, self.spec = flatten(args)
        self.leaves = [x.detach() if isinstance(x, Tensor) else x for x in leaves]
        names = leaf_paths(args, "args")
        self.idx = [
            k
            for k, x in enumerate(self.leaves)
            if isinstance(x, Tensor) and (x.is_floating_point() or x.is_complex())
        ]
        if not self.idx:
            raise ValueError(
                f"{call}: args has no floating-point tensor leaves; expected at least one, got "
                "none."
            )
        self.names = [names[k] for k in self.idx]
        xs = [self.leaves[k] for k in self.idx]
        self.dtype = xs[0].dtype
        for x in xs[1:]:
            self.dtype = torch.promote_types(self.dtype, x.dtype)
        self.sizes = [x.numel() for x in xs]
        self.z = torch.cat([x.reshape(-1).to(self.dtype) for x in xs])
        self.f = f
        self.out_names: list[str] = []
        self.out_sizes: list[int] = []

    def __call__(self, z: Tensor) -> Tensor:
        ls = list(self.leaves)
        for k, piece in zip(self.idx, z.split(self.sizes)):
            ls[k] = piece.reshape(self.leaves[k].shape).to(self.leaves[k].dtype)
        out = self.f(*optree.tree_unflatten(self.spec, ls))
        o_leaves = flatten(out)[0]
        names = leaf_paths(out, "out")
        keep = [
            k
            for k, o in enumerate(o_leaves)
            if isinstance(o, Tensor) and (o.is_floating_point() or o.is_complex())
        ]
        self.out_names = [names[k] for k in keep]
        self.out_sizes = [o_leaves[k].numel() for k in keep]
        if not keep:
            return torch.zeros(0, dtype=z.dtype)
        return torch.cat([o_leaves[k].reshape(-1).to(z.dtype) for k in keep])

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

    Examples:
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
    call = f"check_consistency({_fun_name(f)}, args)"
    if not isinstance(args, (tuple, list)):
        raise TypeError(
            f"{call}: args must be a tuple of positional arguments; expected a tuple, got "
            f"{type(args).__name__}. Wrap a single argument: (x,)."
        )
    if isinstance(properties, str):
        properties = (properties,)
    bad = [p for p in (properties or ()) if p not in PROPERTIES]
    if bad:
        raise ValueError(
            f"{call}: unknown properties; expected a subset of {PROPERTIES}, got {bad}."
        )
    F = _Flat(call, f, tuple(args))
    z = F.z
    eps = _eps(z.dtype)
    r = _FACTOR * eps if rtol is None else float(rtol)
    gen = torch.Generator().manual_seed(seed)

    def rand(n: int) -> Tensor:
        w = torch.randn(n, dtype=torch.float64, generator=gen)
        return (w / max(float(w.norm()), 1e-300)).to(z.dtype)

    with _highest_matmul_precision():
        out = F(z)
        scalar = out.numel() == 1
        if properties is None:
            props = [p for p in PROPERTIES if scalar or p not in _SCALAR_ONLY]
        else:
            props = list(properties)
            need = [p for p in props if p in _SCALAR_ONLY]
            if need and not scalar:
                raise ValueError(
                    f"{call}: {need} need a scalar output; expected one element, got "
                    f"{out.numel()}. Check them on a scalar function (e.g. a sum)."
                )

        def fs(z: Tensor) -> Tensor:
            return F(z).reshape(())

        def part(scale: float) -> dict[str, float]:
            return {f"relative (rtol {r:.3g} * scale {scale:.3g})": r * scale}

        def compare(name: str, a: Tensor, b: Tensor, what: str, scale: float | None = None) -> None:
            diff = (a - b).abs()
            err = float(diff.max()) if diff.numel() else 0.0
            sc = max(float(a.abs().max()), float(b.abs().max())) if scale is None else scale
            if not err <= r * sc:
                k = int(torch.argmax(diff.reshape(-1)))
                if a.dim() == 2:
                    where = (
                        F.where(k // a.shape[1], k % a.shape[1])
                        if name.startswith("jac")
                        else F.where(None, k // a.shape[1])
                        + " and "
                        + F.where(None, k % a.shape[1])
                    )
                elif a.dim() == 1 and name == "hvp":
                    where = F.where(None, k)
                else:
                    where = "the compared scalars" if a.numel() == 1 else F.where(k, None)
                raise _fail(call, name, where, err, part(sc),
                            f"{what}: {a.reshape(-1)[k].item():.6g} vs {b.reshape(-1)[k].item():.6g}",
                            seed)  # fmt: skip

        jac_cache: list[float] = []

        def jac_norm() -> float:
            """Frobenius norm of the Jacobian (once): the scale of sums that may cancel."""
            if not jac_cache:
                jac = functorch_utils.jacrev(F)(z)
                jac_cache.append(float(jac.abs().double().norm()))
            return jac_cache[0]

        for p in props:
            if p == "jacrev_jacfwd":
                jr = functorch_utils.jacrev(F)(z)
                jf = functorch_utils.jacfwd(F)(z)
                compare(p, jr, jf, "jacrev vs jacfwd")
            elif p == "hessian_symmetric":
                H = functorch_utils.hessian(fs)(z)
                compare(p, H, H.T, "H[i, j] vs H[j, i]")
            elif p == "hessian_jacrev_jacrev":
                H = functorch_utils.hessian(fs)(z)
                H2 = functorch_utils.jacrev(functorch_utils.jacrev(fs))(z)
                compare(p, H, H2, "hessian vs jacrev(jacrev)")
            elif p == "adjoint":
                u = rand(out.numel())
                v = rand(z.numel())
                _, jv = functorch_utils.jvp(F, (z,), (v,))
                _, fn = functorch_utils.vjp(F, z)
                (jtu,) = fn(u)
                a = torch.sum(u * jv).real.reshape(1).double()
                b = torch.sum(jtu * v).real.reshape(1).double()
                # rounding bound of both sides: |u| |J|_F |v| (sums cancel, so not |u| |J v|)
                sc = float(u.abs().double().norm() * v.abs().double().norm()) * jac_norm()
                compare(p, a, b, "<u, J v> vs <J^T u, v>", sc)
            elif p == "jvp_linear":
                v1, v2 = rand(z.numel()), rand(z.numel())
                ca, cb = 0.75, -1.25
                _, j12 = functorch_utils.jvp(F, (z,), (ca * v1 + cb * v2,))
                _, j1 = functorch_utils.jvp(F, (z,), (v1,))
                _, j2 = functorch_utils.jvp(F, (z,), (v2,))
                # each jvp element is a sum that can cancel: bound it by |J_i| |v|
                sc = jac_norm() * float(
                    abs(ca) * v1.abs().double().norm() + abs(cb) * v2.abs().double().norm()
                )
                compare(p, j12, ca * j1 + cb * j2, "jvp(a v1 + b v2) vs a jvp(v1) + b jvp(v2)", sc)
            elif p == "hvp":
                v = rand(z.numel())
                H = functorch_utils.hessian(fs)(z)
                _, hv = functorch_utils.hvp(fs, (z,), (v,))
                sc = float((H.abs() @ v.abs()).max())
                compare(p, hv, H @ v, "hvp vs H @ v", sc)
