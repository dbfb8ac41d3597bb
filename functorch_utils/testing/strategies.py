"""Hypothesis strategies for derivative tests: dtypes, devices, shapes, value domains, tensors,
matrices, pytrees, tangents and batches.

Importing this module imports hypothesis (``import functorch_utils.testing`` does not). Built on
``hypothesis.extra.numpy``: no NaN, inf, subnormals, sparse layouts or ``requires_grad``. How the
value domains keep finite-difference stencils off kinks: NOTE [domains carry the step] below.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import hypothesis.extra.numpy as hnp
import numpy as np
import torch
from hypothesis import strategies as st

from functorch_utils._pytree import flatten, is_tensor, partition
from functorch_utils.tree_util import register_dataclass

from ._numerics import finite_difference_step
from ._problem import is_float_tensor

__all__ = [
    "Domain",
    "Node",
    "Pair",
    "batched",
    "devices",
    "distinct",
    "dtypes",
    "open_interval",
    "away_from",
    "positive",
    "pytrees",
    "real",
    "shapes",
    "spd_matrices",
    "tensors",
    "tree_like",
    "well_conditioned_matrices",
]

Tensor = torch.Tensor
_FLOAT = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# ---------------------------------------------------------------------------------------------
# dtypes, devices, shapes


def dtypes(*, float64: bool = True, float32: bool = True, half: bool = False) -> Any:
    """Floating dtypes: float32 and float64 by default, float16/bfloat16 with ``half=True``.

    Example:
        >>> import torch
        >>> from hypothesis import given
        >>> from functorch_utils.testing import strategies as fst
        >>> @given(fst.dtypes())
        ... def test(dtype):
        ...     assert dtype in (torch.float32, torch.float64)
        >>> test()
    """
    pool = [torch.float64] * float64 + [torch.float32] * float32
    pool += [torch.float16, torch.bfloat16] if half else []
    if not pool:
        raise ValueError("dtypes(): no dtype left; expected at least one enabled, got none.")
    return st.sampled_from(pool)


def _available_devices() -> list[str]:
    return ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]


def devices() -> Any:
    """``"cpu"``, plus ``"cuda"`` when available (detected at the first draw, never at import).

    Example:
        >>> from hypothesis import given
        >>> from functorch_utils.testing import strategies as fst
        >>> @given(fst.devices())
        ... def test(device):
        ...     assert device in ("cpu", "cuda")
        >>> test()
    """
    return st.deferred(lambda: st.sampled_from(_available_devices()))


def shapes(
    *,
    min_dims: int = 0,
    max_dims: int = 3,
    min_side: int = 1,
    max_side: int = 8,
    max_numel: int = 64,
) -> Any:
    """Tensor shapes with at most ``max_numel`` elements (64 by default).

    Example:
        >>> import math
        >>> from hypothesis import given
        >>> from functorch_utils.testing import strategies as fst
        >>> @given(fst.shapes(max_numel=10))
        ... def test(shape):
        ...     assert math.prod(shape) <= 10
        >>> test()
    """

    @st.composite
    def draw_shape(draw: Any) -> tuple[int, ...]:
        ndim = draw(st.integers(min_dims, max_dims))
        shape: list[int] = []
        budget = max_numel
        for k in range(ndim):
            rest = ndim - k - 1
            hi = max(min_side, min(max_side, budget // max(1, min_side**rest)))
            side = draw(st.integers(min_side, hi))
            shape.append(side)
            budget = max(1, budget // max(1, side))
        return tuple(shape)

    return draw_shape()


# ---------------------------------------------------------------------------------------------
# value domains


def _ulp(dtype: torch.dtype, bound: float) -> float:
    eps = float(torch.finfo(dtype).eps)
    return eps * 2.0 ** math.floor(math.log2(max(bound, 1.0)))


# NOTE [domains carry the step]
# Hypothesis hunts edge cases: ties, exact zeros, and literals mined from the code under test (a
# relu kink at 0.37 was found at exactly 0.37). A finite-difference stencil that straddles a kink
# gives a wrong verdict, so each Domain keeps values ``margin`` away from its open ends and from
# the points it avoids, and ``min_gap`` apart when distinct, with margin = 4 * h + 2 * ulp, where
# h is ``finite_difference_step`` for the same dtype, |x|_inf bound and reference as the check
# (the stencil reaches x +- h v with |v_i| <= 1), and ulp the spacing of the dtype at the bound
# (values are rounded to the dtype after the margin is applied).
@dataclasses.dataclass(frozen=True)
class Domain:
    """Values for derivative tests, kept off kinks and ties by the check's own step.

    Build with :func:`real`, :func:`positive`, :func:`open_interval`, :func:`away_from`,
    :func:`distinct`, and chain: ``real(-2, 2).away_from(0.0).distinct()``.

    Attributes:
        lo: Lower bound.
        hi: Upper bound.
        open_lo: Keep ``margin`` away from ``lo`` (e.g. ``log`` at 0).
        open_hi: Keep ``margin`` away from ``hi``.
        avoid: Points to keep ``margin`` away from (kinks: 0 for relu and abs).
        min_gap: Whether elements of one tensor are kept apart (ties of max, sort), and by how
            much: ``"auto"`` for the margin, or a number.
        reference: The check's ``reference``, which sets its step.
        margin_scale: Multiplies the derived margin.

    Example:
        >>> import torch
        >>> from functorch_utils.testing import strategies as fst
        >>> d = fst.real(-2, 2).away_from(0.0)
        >>> d.margin(torch.float64) == 4 * 2.0**-16 + 2 * 2.0**-51
        True
    """

    lo: float = -4.0
    hi: float = 4.0
    open_lo: bool = False
    open_hi: bool = False
    avoid: tuple[float, ...] = ()
    min_gap: float | str | None = None
    reference: str = "central"
    margin_scale: float = 1.0

    def step(self, dtype: torch.dtype) -> float:
        """The check's step ``h`` for values of this domain in ``dtype``."""
        bound = max(abs(self.lo), abs(self.hi))
        return finite_difference_step(dtype, bound, self.reference)

    def margin(self, dtype: torch.dtype) -> float:
        """How far values stay from open ends and avoided points: ``4 h + 2 ulp``."""
        bound = max(abs(self.lo), abs(self.hi))
        return self.margin_scale * (4 * self.step(dtype) + 2 * _ulp(dtype, bound))

    def gap(self, dtype: torch.dtype) -> float | None:
        """The minimum distance between elements of one tensor, or ``None``."""
        if self.min_gap is None:
            return None
        if self.min_gap == "auto":
            return self.margin(dtype)
        return float(self.min_gap)

    def away_from(self, *points: float) -> Domain:
        """The same domain, also kept away from ``points``."""
        return dataclasses.replace(self, avoid=self.avoid + tuple(float(p) for p in points))

    def distinct(self, min_gap: float | None = None) -> Domain:
        """The same domain with the elements of each tensor at least ``min_gap`` apart."""
        return dataclasses.replace(self, min_gap="auto" if min_gap is None else float(min_gap))

    def bounds(self, dtype: torch.dtype) -> tuple[float, float]:
        m = self.margin(dtype)
        lo = self.lo + (m if self.open_lo else 0.0)
        hi = self.hi - (m if self.open_hi else 0.0)
        if not lo < hi:
            raise ValueError(
                f"Domain({self.lo}, {self.hi}): the interval is empty after the margin {m:.3g}; "
                "expected lo + margin < hi - margin. Widen the interval."
            )
        return lo, hi

    def grid(self, dtype: torch.dtype) -> float:
        """Values are multiples of this (the dtype's spacing at the bound), so exact in dtype."""
        return _ulp(dtype, max(abs(self.lo), abs(self.hi)))

    def push(self, x: float, dtype: torch.dtype) -> float:
        """Moves ``x`` out of the avoided neighbourhoods, staying inside the bounds."""
        lo, hi = self.bounds(dtype)
        q = self.grid(dtype)
        m = self.margin(dtype) + q  # one grid step more: snapping to the grid moves by q/2
        for _ in range(2):
            for p in self.avoid:
                if abs(x - p) < m:
                    up, down = p + m, p - m
                    x = up if (x >= p and up <= hi) or down < lo else down
        return min(max(x, lo), hi)

    def elements(self, dtype: torch.dtype) -> Any:
        """A strategy of Python floats in the domain (before rounding to ``dtype``)."""
        lo, hi = self.bounds(dtype)
        floats = st.floats(lo, hi, allow_nan=False, allow_infinity=False, allow_subnormal=False)
        tiny = float(torch.finfo(dtype).tiny)
        # normal in float64 is not normal in float32: flush what would be subnormal in dtype
        flushed = floats.map(lambda x: x if abs(x) >= tiny else 0.0)
        if not self.avoid:
            return flushed.map(lambda x: min(max(x, lo), hi))
        return flushed.map(lambda x: self.push(x, dtype))


def real(lo: float = -4.0, hi: float = 4.0, *, reference: str = "central") -> Domain:
    """Finite values in ``[lo, hi]`` (no NaN, inf or subnormals).

    Example:
        >>> from functorch_utils.testing import strategies as fst
        >>> fst.real()
        Domain(lo=-4.0, hi=4.0, open_lo=False, open_hi=False, avoid=(), min_gap=None, reference='central', margin_scale=1.0)
    """
    return Domain(float(lo), float(hi), reference=reference)


def positive(hi: float = 4.0, *, reference: str = "central") -> Domain:
    """Values in ``(0, hi]``, a margin above 0 (so ``log``/``sqrt`` stencils stay in the domain).

    Example:
        >>> import torch
        >>> from functorch_utils.testing import strategies as fst
        >>> fst.positive().bounds(torch.float64)[0] > 0
        True
    """
    return Domain(0.0, float(hi), open_lo=True, reference=reference)


def open_interval(lo: float, hi: float, *, reference: str = "central") -> Domain:
    """Values in ``(lo, hi)``, a margin inside both ends (``atanh`` on ``(-1, 1)``).

    Example:
        >>> import torch
        >>> from functorch_utils.testing import strategies as fst
        >>> lo, hi = fst.open_interval(-1, 1).bounds(torch.float32)
        >>> -1 < lo and hi < 1
        True
    """
    return Domain(float(lo), float(hi), open_lo=True, open_hi=True, reference=reference)


def away_from(
    points: float | Sequence[float],
    lo: float = -4.0,
    hi: float = 4.0,
    *,
    reference: str = "central",
) -> Domain:
    """Values in ``[lo, hi]`` a margin away from each of ``points`` (kinks: relu, abs at 0).

    Example:
        >>> import torch
        >>> from functorch_utils.testing import strategies as fst
        >>> d = fst.away_from(0.0)
        >>> abs(d.push(0.0, torch.float64)) >= d.margin(torch.float64)
        True
    """
    pts = (points,) if isinstance(points, (int, float)) else tuple(points)
    return Domain(float(lo), float(hi), reference=reference).away_from(*pts)


def distinct(
    min_gap: float | None = None, lo: float = -4.0, hi: float = 4.0, *, reference: str = "central"
) -> Domain:
    """Values in ``[lo, hi]`` whose elements (within one tensor) are ``min_gap`` apart (no ties
    for ``max``, ``sort``, ``median``); ``min_gap`` defaults to the margin.

    Example:
        >>> import torch
        >>> from hypothesis import given
        >>> from functorch_utils.testing import strategies as fst
        >>> @given(fst.tensors(torch.float64, (6,), fst.distinct()))
        ... def test(x):
        ...     gaps = x.sort().values.diff()
        ...     assert (gaps >= fst.distinct().gap(torch.float64)).all()
        >>> test()
    """
    return Domain(float(lo), float(hi), reference=reference).distinct(min_gap)


# ---------------------------------------------------------------------------------------------
# tensors and matrices


def _np_dtype(dtype: torch.dtype) -> Any:
    return {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}.get(
        dtype, np.float32
    )


def _snap(values: np.ndarray, domain: Domain, dtype: torch.dtype) -> np.ndarray:
    """Rounds to multiples of the domain's grid (exact in ``dtype``), inside the bounds."""
    q = domain.grid(dtype)
    lo, hi = domain.bounds(dtype)
    out = np.round(values / q) * q
    out = np.where(out < lo, out + q, out)
    return np.where(out > hi, out - q, out)


def _spread(values: np.ndarray, domain: Domain, dtype: torch.dtype) -> np.ndarray:
    """Moves sorted values apart by at least the domain's gap, keeping their order."""
    gap = domain.gap(dtype)
    if gap is None or values.size < 2:
        return values
    q = domain.grid(dtype)
    gap = math.ceil(gap / q) * q
    lo, hi = domain.bounds(dtype)
    flat = values.astype(np.float64).ravel()
    order = np.argsort(flat, kind="stable")
    s = flat[order]
    for k in range(1, s.size):
        s[k] = max(s[k], s[k - 1] + gap)
    if s[-1] > hi:
        s -= math.ceil((s[-1] - hi) / q) * q
    if s[0] < lo:
        raise ValueError(
            f"distinct(min_gap={gap:.3g}): {s.size} values do not fit in [{lo:.3g}, {hi:.3g}]; "
            "expected (n - 1) * min_gap <= hi - lo. Use fewer elements or a smaller gap."
        )
    out = np.empty_like(flat)
    out[order] = s
    return out.reshape(values.shape)


def _as_strategy(x: Any) -> Any:
    return x if isinstance(x, st.SearchStrategy) else st.just(x)


def _draw_tensor(draw: Any, dtype: torch.dtype, shape: tuple[int, ...], domain: Domain) -> Tensor:
    arr = draw(hnp.arrays(np.float64, shape, elements=domain.elements(dtype)))
    arr = _spread(_snap(arr, domain, dtype), domain, dtype)
    if domain.avoid:
        arr = np.vectorize(lambda x: domain.push(float(x), dtype), otypes=[np.float64])(arr)
        arr = _snap(arr, domain, dtype)
        if domain.gap(dtype) is not None and arr.size > 1:
            srt = np.sort(arr.ravel())
            if float(np.diff(srt).min()) < float(domain.gap(dtype) or 0.0):
                from hypothesis import assume

                assume(False)
    return torch.from_numpy(np.ascontiguousarray(arr)).to(dtype)


def tensors(
    dtype: Any = None,
    shape: Any = None,
    elements: Domain | None = None,
    *,
    device: Any = "cpu",
) -> Any:
    """Dense tensors of ``dtype`` and ``shape`` (values or strategies) with values in ``elements``.

    Args:
        dtype: A torch dtype or a strategy of them; default :func:`dtypes`.
        shape: A shape or a strategy of shapes; default :func:`shapes`.
        elements: A :class:`Domain`; default :func:`real`.
        device: A device or a strategy of devices (e.g. :func:`devices`).

    Example:
        >>> import torch
        >>> from hypothesis import given
        >>> from functorch_utils.testing import check_grads, strategies as fst
        >>> @given(fst.tensors(fst.dtypes(), fst.shapes(), fst.away_from(0.0)))
        ... def test_relu(x):
        ...     check_grads(torch.relu, (x,))
        >>> test_relu()
    """
    dom = real() if elements is None else elements

    @st.composite
    def draw_tensor(draw: Any) -> Tensor:
        dt = draw(dtypes() if dtype is None else _as_strategy(dtype))
        shp = draw(shapes() if shape is None else _as_strategy(shape))
        dev = draw(_as_strategy(device))
        return _draw_tensor(draw, dt, tuple(shp), dom).to(dev)

    return draw_tensor()


def well_conditioned_matrices(
    n: Any = None, dtype: Any = torch.float64, *, batch_shape: Any = ()
) -> Any:
    """Square matrices ``I + A`` with ``||A||_2 = 1/2``: singular values in ``[1/2, 3/2]``.

    The condition number is at most 3, so ``solve``, ``inv`` and ``det`` have derivatives that
    finite differences check in float32 as well.

    Example:
        >>> import torch
        >>> from hypothesis import given
        >>> from functorch_utils.testing import strategies as fst
        >>> @given(fst.well_conditioned_matrices(3))
        ... def test(a):
        ...     assert torch.linalg.cond(a) <= 3 + 1e-9
        >>> test()
    """

    @st.composite
    def draw_matrix(draw: Any) -> Tensor:
        k = draw(st.integers(1, 6) if n is None else _as_strategy(n))
        dt = draw(_as_strategy(dtype))
        batch = tuple(draw(_as_strategy(batch_shape)))
        a = _draw_tensor(draw, torch.float64, (*batch, k, k), real(-1.0, 1.0))
        norm = torch.linalg.matrix_norm(a, ord=2).clamp_min(1e-12)[..., None, None]
        m = torch.eye(k, dtype=torch.float64) + 0.5 * a / norm
        return m.to(dt)

    return draw_matrix()


def spd_matrices(n: Any = None, dtype: Any = torch.float64, *, batch_shape: Any = ()) -> Any:
    """Symmetric positive definite matrices ``M M^T`` (eigenvalues in ``[1/4, 9/4]``), exactly
    symmetric, for ``cholesky``, ``eigh`` and quadratic forms.

    Example:
        >>> import torch
        >>> from hypothesis import given
        >>> from functorch_utils.testing import strategies as fst
        >>> @given(fst.spd_matrices(4, torch.float32))
        ... def test(s):
        ...     assert torch.equal(s, s.mT) and (torch.linalg.eigvalsh(s) > 0).all()
        >>> test()
    """

    @st.composite
    def draw_spd(draw: Any) -> Tensor:
        m = draw(well_conditioned_matrices(n, torch.float64, batch_shape=batch_shape))
        s = m @ m.mT
        s = (s + s.mT) / 2
        dt = draw(_as_strategy(dtype))
        return s.to(dt)

    return draw_spd()


# ---------------------------------------------------------------------------------------------
# pytrees


class Pair(NamedTuple):
    """The namedtuple node :func:`pytrees` uses."""

    first: Any
    second: Any


@register_dataclass
@dataclasses.dataclass
class Node:
    """The dataclass node :func:`pytrees` uses (registered with ``register_dataclass``)."""

    left: Any
    right: Any
    name: str = dataclasses.field(default="node", metadata={"static": True})


_CONTAINERS = ("dict", "list", "tuple", "namedtuple", "dataclass", "none")


def _has_tensor(tree: Any) -> bool:
    return any(is_tensor(x) for x in flatten(tree)[0])


def pytrees(
    leaves: Any = None,
    *,
    max_leaves: int = 5,
    containers: Sequence[str] = _CONTAINERS,
) -> Any:
    """Pytrees of tensors: dicts, lists, tuples, namedtuples (:class:`Pair`), registered
    dataclasses (:class:`Node`) and ``None`` (an empty subtree), with at least one tensor leaf.

    Args:
        leaves: A strategy of leaves; default ``tensors(shape=shapes(max_numel=16))``.
        max_leaves: Roughly the largest number of leaves.
        containers: Which node types to use, among ``"dict"``, ``"list"``, ``"tuple"``,
            ``"namedtuple"``, ``"dataclass"`` and ``"none"``.

    Example:
        >>> import torch
        >>> from hypothesis import given
        >>> from functorch_utils.testing import check_grads, strategies as fst
        >>> from functorch_utils.tree_util import tree_leaves
        >>> @given(fst.pytrees(fst.tensors(torch.float64, fst.shapes(max_numel=8))))
        ... def test(tree):
        ...     check_grads(lambda t: sum(torch.sin(x).sum() for x in tree_leaves(t)), (tree,))
        >>> test()
    """
    bad = [c for c in containers if c not in _CONTAINERS]
    if bad:
        raise ValueError(
            f"pytrees(): unknown containers; expected some of {_CONTAINERS}, got {bad}."
        )
    base = tensors(shape=shapes(max_numel=16)) if leaves is None else leaves
    keys = st.sampled_from(["a", "b", "w", "x"])

    def extend(children: Any) -> Any:
        kids = st.one_of(children, st.none()) if "none" in containers else children
        options: list[Any] = []
        if "dict" in containers:
            options.append(st.dictionaries(keys, kids, min_size=1, max_size=3))
        if "list" in containers:
            options.append(st.lists(kids, min_size=1, max_size=3))
        if "tuple" in containers:
            options.append(st.lists(kids, min_size=1, max_size=3).map(tuple))
        if "namedtuple" in containers:
            options.append(st.builds(Pair, kids, kids))
        if "dataclass" in containers:
            options.append(st.builds(Node, kids, kids))
        return st.one_of(*options) if options else children

    return st.recursive(base, extend, max_leaves=max_leaves).filter(_has_tensor)


def tree_like(tree: Any, elements: Domain | None = None) -> Any:
    """Trees with ``tree``'s structure and tensor shapes/dtypes: tangents and cotangents.

    Non-tensor leaves are kept as they are.

    Example:
        >>> import torch
        >>> from hypothesis import given
        >>> import functorch_utils
        >>> from functorch_utils.testing import strategies as fst
        >>> primals = {"w": torch.ones(2, 3), "b": None}
        >>> @given(fst.tree_like(primals))
        ... def test(tangents):
        ...     out, t = functorch_utils.jvp(lambda p: p["w"].sum(), (primals,), (tangents,))
        ...     assert t.shape == ()
        >>> test()
    """
    picked, part = partition(tree, is_float_tensor)
    dom = real() if elements is None else elements

    def draw_leaf(draw: Any, x: Tensor) -> Tensor:
        if not x.is_complex():
            return _draw_tensor(draw, x.dtype, tuple(x.shape), dom).to(x.device)
        re, im = (_draw_tensor(draw, x.dtype.to_real(), tuple(x.shape), dom) for _ in range(2))
        return torch.complex(re, im).to(x.device)

    @st.composite
    def draw_like(draw: Any) -> Any:
        return part.combine([draw_leaf(draw, x) for x in picked])

    return draw_like()


def _is_real_float_tensor(x: Any) -> bool:
    return isinstance(x, Tensor) and x.is_floating_point()


def batched(
    tree: Any,
    *,
    size: Any = None,
    elements: Domain | None = None,
    unmapped: bool = True,
) -> Any:
    """A batched pytree and its ``in_axes``: for testing ``vmap`` against a loop.

    Draws an unbatched tree from ``tree`` (a strategy, or a fixed tree), a batch size, and for each
    tensor leaf an axis (or ``None``, unmapped, if ``unmapped``; the first tensor leaf is always
    mapped), and returns ``(batched_tree, in_axes)`` where ``in_axes`` has the tree's structure
    with int or ``None`` leaves. Draw the tuple of positional arguments as the tree to pass
    ``in_axes`` straight to ``vmap``.

    Example:
        >>> import torch
        >>> from hypothesis import given
        >>> from functorch_utils.testing import check_vmap, strategies as fst
        >>> args = (torch.zeros(3), torch.zeros(3))
        >>> @given(fst.batched(args))
        ... def test(batch):
        ...     xs, in_axes = batch
        ...     check_vmap(torch.mul, xs, in_axes=in_axes)
        >>> test()
    """
    dom = real() if elements is None else elements
    trees = tree if isinstance(tree, st.SearchStrategy) else st.just(tree)

    @st.composite
    def draw_batched(draw: Any) -> tuple[Any, Any]:
        t = draw(trees)
        b = draw(st.integers(1, 4) if size is None else _as_strategy(size))
        picked, part = partition(t, _is_real_float_tensor)
        new: list[Tensor] = []
        axes: list[int | None] = []
        for k, x in enumerate(picked):
            choices = list(range(x.dim() + 1))
            ax = draw(st.sampled_from(choices if k == 0 or not unmapped else [None, *choices]))
            if ax is None:
                new.append(x)
            else:
                shape = list(x.shape)
                shape.insert(ax, b)
                new.append(_draw_tensor(draw, x.dtype, tuple(shape), dom).to(x.device))
            axes.append(ax)
        return part.combine(new), part.fill(axes, None)

    return draw_batched()
