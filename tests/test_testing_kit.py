"""The property-testing kit tests itself: references, taylor_test, consistency checks, strategies.

Correct functions over inputs drawn from the kit's own strategies must never fail; rules planted
with ``custom_vjp``/``custom_jvp`` a little wrong must be caught at least 90 % of the time; kinks
must be reported as kinks. The default (CI) profile draws 20 examples per property; the
"thorough" profile (``FUNCTORCH_UTILS_PROFILE=thorough``) draws 500.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

import hypothesis
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import functorch_utils
from functorch_utils import custom_jvp, custom_vjp
from functorch_utils.testing import (
    PROPERTIES,
    CheckReport,
    ComplexStepWarning,
    DerivativeCheckError,
    NonDifferentiablePointError,
    check_consistency,
    check_grads,
    check_vmap,
    finite_difference_step,
    taylor_test,
)
from functorch_utils.testing import strategies as fst
from functorch_utils.tree_util import tree_leaves

# ---------------------------------------------------------------------------------------------
# Planted rules: sin with a custom rule whose derivative is multiplied by ``factor``.


def sin_vjp(factor: float) -> Callable[[torch.Tensor], torch.Tensor]:
    @custom_vjp
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)

    f.defvjp(lambda x: (torch.sin(x), x), lambda x, g: (factor * torch.cos(x) * g,))
    return f


def sin_jvp(factor: float) -> Callable[[torch.Tensor], torch.Tensor]:
    @custom_jvp
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)

    @f.defjvp
    def rule(primals: Any, tangents: Any) -> Any:
        (x,), (t,) = primals, tangents
        return f(x), factor * torch.cos(x) * t

    return f


def sin_bad_second(factor: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """sin with a right first derivative whose own derivative (the second) is ``factor`` off."""
    cos = sin_jvp(factor)  # cos(x) = sin(x + pi/2); its derivative is scaled by factor

    @custom_jvp
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)

    @f.defjvp
    def rule(primals: Any, tangents: Any) -> Any:
        (x,), (t,) = primals, tangents
        return f(x), cos(x + torch.pi / 2) * t

    return f


def _draw(seed: int, dtype: torch.dtype) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 33, (), generator=gen))
    return (2 * torch.randn(n, generator=gen, dtype=torch.float64)).to(dtype)


def _caught(f: Callable[..., Any], dtype: torch.dtype, seeds: range, **kw: Any) -> float:
    caught = 0
    for seed in seeds:
        try:
            check_grads(f, (_draw(seed, dtype),), seed=seed, **kw)
        except DerivativeCheckError:
            caught += 1
    return caught / len(seeds)


# ---------------------------------------------------------------------------------------------
# Zero false failures on smooth functions over the kit's own strategies.

SMOOTH: dict[str, tuple[Callable[..., Any], fst.Domain]] = {
    "sin": (torch.sin, fst.real()),
    "tanh3": (lambda x: torch.tanh(x) ** 3, fst.real()),
    "logsumexp": (lambda x: torch.logsumexp(x.reshape(-1), 0), fst.real()),
    "exp_sin": (lambda x: torch.exp(0.5 * x) * torch.sin(x), fst.real(-3, 3)),
    "log": (torch.log, fst.positive()),
    "atanh": (torch.atanh, fst.open_interval(-0.9, 0.9)),
    "relu_sq": (lambda x: torch.relu(x) * x, fst.away_from(0.0)),
    "abs": (torch.abs, fst.away_from(0.0)),
    "max": (lambda x: x.reshape(-1).max() * x.sum(), fst.distinct()),
    "sort": (lambda x: x.reshape(-1).sort().values.cumsum(0), fst.distinct()),
}


@given(
    name=st.sampled_from(sorted(SMOOTH)),
    data=st.data(),
    reference=st.sampled_from(["central", "richardson"]),
)
def test_no_false_failures_on_smooth_functions(name: str, data: Any, reference: str) -> None:
    f, domain = SMOOTH[name]
    domain = fst.Domain(**{**domain.__dict__, "reference": reference})
    x = data.draw(fst.tensors(fst.dtypes(), fst.shapes(max_numel=32), domain))
    check_grads(f, (x,), order=1, reference=reference)


@given(x=fst.tensors(fst.dtypes(), fst.shapes(max_numel=16)), seed=st.integers(0, 2**16))
def test_no_false_failures_at_order_2(x: torch.Tensor, seed: int) -> None:
    check_grads(lambda x: torch.tanh(x) * torch.sin(x).sum(), (x,), order=2, seed=seed)


@given(tree=fst.pytrees(fst.tensors(fst.dtypes(), fst.shapes(max_numel=8))))
def test_no_false_failures_on_pytrees(tree: Any) -> None:
    def f(t: Any) -> torch.Tensor:
        return sum(torch.sin(x).sum() * x.double().mean() for x in tree_leaves(t))

    check_grads(f, (tree,), modes=("rev",))


@given(x=fst.tensors(fst.dtypes(), fst.shapes(max_numel=16)))
def test_no_false_failures_with_complex_step(x: torch.Tensor) -> None:
    check_grads(lambda x: torch.exp(torch.sin(x)) * x, (x,), order=2, reference="complex_step")


@given(x=fst.tensors(fst.dtypes(), fst.shapes(max_numel=16)))
def test_no_false_failures_with_same_dtype(x: torch.Tensor) -> None:
    check_grads(lambda x: torch.tanh(x) * x, (x,), reference="same_dtype")


# ---------------------------------------------------------------------------------------------
# Planted errors are caught >= 90 % of the time.


@pytest.mark.parametrize(
    ("dtype", "factor"),
    [(torch.float64, 1.001), (torch.float32, 1.01), (torch.float32, 1.001)],
    ids=["f64-0.1%", "f32-1%", "f32-0.1%"],
)
@pytest.mark.parametrize("rule", ["vjp", "jvp"])
def test_planted_errors_are_caught(dtype: torch.dtype, factor: float, rule: str) -> None:
    f = sin_vjp(factor) if rule == "vjp" else sin_jvp(factor)
    modes = ("rev",) if rule == "vjp" else ("fwd", "rev")
    assert _caught(f, dtype, range(20), modes=modes) >= 0.9


def test_correct_rules_pass() -> None:
    for dtype in (torch.float32, torch.float64):
        assert _caught(sin_vjp(1.0), dtype, range(10), modes=("rev",)) == 0
        assert _caught(sin_jvp(1.0), dtype, range(10)) == 0
        assert _caught(sin_bad_second(1.0), dtype, range(5), order=2, modes=("rev",)) == 0


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sign_flip_is_caught(dtype: torch.dtype) -> None:
    assert _caught(sin_vjp(-1.0), dtype, range(10), modes=("rev",)) == 1.0
    assert _caught(sin_jvp(-1.0), dtype, range(10)) == 1.0


@pytest.mark.parametrize("reference", ["central", "complex_step"])
def test_wrong_second_derivative_is_caught(reference: str) -> None:
    # custom_jvp refuses forward over forward, so the second order is checked in reverse mode
    f = sin_bad_second(1.01)
    kw: dict[str, Any] = {"modes": ("rev",), "reference": reference}
    assert _caught(f, torch.float64, range(5), order=1, **kw) == 0
    assert _caught(f, torch.float64, range(10), order=2, **kw) >= 0.9
    with pytest.raises(DerivativeCheckError, match=re.escape("order 2: VJP of VJP check failed")):
        check_grads(f, (_draw(0, torch.float64),), order=2, **kw)


def test_richardson_catches_smaller_errors_in_float32() -> None:
    f = sin_vjp(1.0001)  # 0.01 %: below the central rtol of float32
    assert _caught(f, torch.float32, range(10), modes=("rev",)) <= 0.5
    assert _caught(f, torch.float32, range(10), modes=("rev",), reference="richardson") >= 0.9


# ---------------------------------------------------------------------------------------------
# complex step


def test_complex_step_is_exact() -> None:
    # 1e-9 relative error is far below central differences' floor and far above complex step's.
    f = sin_jvp(1 + 1e-9)
    assert _caught(f, torch.float64, range(10)) == 0
    assert _caught(f, torch.float64, range(10), reference="complex_step") == 1.0
    assert _caught(torch.sin, torch.float64, range(10), reference="complex_step", order=2) == 0


def test_complex_step_falls_back_with_a_warning() -> None:
    x = torch.tensor([0.5, -1.5, 2.0], dtype=torch.float64)
    with pytest.warns(ComplexStepWarning, match="failed on complex input"):
        check_grads(torch.relu, (x,), reference="complex_step", modes=("fwd",))

    def not_holomorphic(x: torch.Tensor) -> torch.Tensor:
        return x * x.conj() if x.is_complex() else x * x  # silently wrong under complex step

    with pytest.warns(ComplexStepWarning, match="disagrees with a central difference"):
        check_grads(not_holomorphic, (x,), reference="complex_step", modes=("fwd",))


def test_complex_step_refuses_complex_inputs() -> None:
    z = torch.ones(2, dtype=torch.complex128)
    with pytest.raises(ValueError, match=re.escape("reference='complex_step' needs real inputs")):
        check_grads(torch.sin, (z,), reference="complex_step")


def test_unknown_reference() -> None:
    with pytest.raises(ValueError, match=re.escape("unknown reference; expected one of")):
        check_grads(torch.sin, (torch.ones(2),), reference="forward")


# ---------------------------------------------------------------------------------------------
# Kinks, on_kink="reject", per-leaf eps, reports.


@given(x=fst.tensors(torch.float64, (3,), fst.real(-1, 1)))
def test_kinks_are_reported_as_kinks(x: torch.Tensor) -> None:
    x = torch.cat([x, torch.zeros(1, dtype=x.dtype)])  # one element exactly at the kink
    with pytest.raises(NonDifferentiablePointError):
        check_grads(torch.abs, (x,))


def test_on_kink_must_be_known() -> None:
    x = torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(ValueError, match="unknown on_kink"):
        check_grads(torch.abs, (x,), on_kink="skip")


def test_on_kink_reject_inside_given() -> None:
    seen = []

    @given(x=st.sampled_from([0.0, 0.5, 1.0]))
    @hypothesis.settings(max_examples=10, database=None)
    def inner(x: float) -> None:
        check_grads(torch.abs, (torch.tensor([x], dtype=torch.float64),), on_kink="reject")
        seen.append(x)

    inner()
    assert 0.0 not in seen and seen


def test_per_leaf_eps() -> None:
    p = {"a": torch.ones(2, dtype=torch.float64), "b": torch.ones(2, dtype=torch.float64)}

    def f(p: dict[str, torch.Tensor]) -> torch.Tensor:
        return (torch.sin(p["a"]) * p["b"]).sum()

    check_grads(f, (p,), eps={"args[0]['a']": 1e-4})
    check_grads(f, (p,), eps=({"a": 1e-4, "b": None},))
    with pytest.raises(ValueError, match=re.escape("x + h*v == x")):  # the step reached b
        check_grads(f, (p,), eps={"args[0]['b']": 1e-30})
    with pytest.raises(ValueError, match=re.escape("eps names key paths that are not floating")):
        check_grads(f, (p,), eps={"args[0]['c']": 1e-4})


def test_report_object() -> None:
    x = _draw(3, torch.float64)
    with pytest.raises(DerivativeCheckError) as info:
        check_grads(sin_vjp(1.01), (x,), modes=("rev",), seed=7)
    rep = info.value.report
    assert isinstance(rep, CheckReport)
    assert (rep.check, rep.leaf, rep.seed, rep.reference) == (
        "VJP (reverse mode)",
        "args[0]",
        7,
        "central",
    )
    assert rep.error > rep.tolerance == pytest.approx(sum(rep.parts.values()))
    assert rep.step is not None and math.log2(rep.step) == round(math.log2(rep.step))
    assert str(rep) == str(info.value)
    assert any(k.startswith("relative (rtol 1e-06") for k in rep.parts)


def test_finite_difference_step() -> None:
    assert finite_difference_step(torch.float64) == 2.0**-17
    assert finite_difference_step(torch.float32, reference="same_dtype") == 2.0**-8
    assert finite_difference_step(torch.float64, 10.0) == 2.0**-14


# ---------------------------------------------------------------------------------------------
# taylor_test


def test_taylor_test_separates_correct_from_3_percent_wrong() -> None:
    w = torch.arange(1.0, 33.0, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        passed = caught = 0
        for seed in range(20):
            x = _draw(seed, dtype)
            good, bad = sin_vjp(1.0), sin_vjp(1.03)
            res = taylor_test(lambda x, g=good: (g(x) * w[: x.numel()].to(x.dtype)).sum(), x)
            passed += res.passed
            try:
                taylor_test(lambda x, g=bad: (g(x) * w[: x.numel()].to(x.dtype)).sum(), x)
            except DerivativeCheckError as e:
                caught += 1
                assert isinstance(e.report.median_rate, float)
        assert passed == 20 and caught >= 18


def test_taylor_test_orders_and_result() -> None:
    x = torch.linspace(-1, 1, 5, dtype=torch.float64)
    res = taylor_test(lambda x: torch.exp(x) * x, x, order=2)
    assert res.expected_rate == 3 and res.median_rate > 2.8
    assert 3 <= len(res.rates) <= len(res.steps) - 1  # rungs at the rounding floor are left out
    assert taylor_test(lambda x: 3 * x, x).median_rate == math.inf  # exact: remainder 0
    bad2 = sin_bad_second(1.05)
    with pytest.raises(DerivativeCheckError, match=r"shrinks like h\^2\.0; expected h\^3"):
        taylor_test(lambda x: bad2(x).sum(), x, order=2)
    with pytest.raises(ValueError, match="mode='rev' needs a scalar output"):
        taylor_test(torch.sin, x, mode="rev")


# ---------------------------------------------------------------------------------------------
# consistency checks


@given(
    x=fst.tensors(fst.dtypes(), fst.shapes(min_dims=1, max_numel=12)),
    seed=st.integers(0, 2**16),
)
def test_consistency_holds_on_smooth_functions(x: torch.Tensor, seed: int) -> None:
    check_consistency(lambda x: (torch.tanh(x) ** 2).sum() * torch.sin(x).mean(), (x,), seed=seed)
    check_consistency(lambda x: torch.softmax(x.reshape(-1), 0) * x.reshape(-1), (x,), seed=seed)


@given(batch=fst.batched(fst.pytrees(fst.tensors(fst.dtypes(), fst.shapes(max_numel=8)))))
def test_check_vmap_on_batched_pytrees(batch: tuple[Any, Any]) -> None:
    tree, in_axes = batch

    def f(t: Any) -> list[torch.Tensor]:
        return [torch.sin(x) * 2 for x in tree_leaves(t)]

    check_vmap(f, (tree,), in_axes=(in_axes,))


def test_consistency_catches_planted_errors() -> None:
    @custom_jvp
    def prod(x: torch.Tensor) -> torch.Tensor:
        return x[0] * x[1]

    @prod.defjvp
    def rule(primals: Any, tangents: Any) -> Any:
        (x,), (t,) = primals, tangents
        return prod(x), x[1] * t[0] + 1.001 * x[0] * t[1]  # not a gradient field

    x = torch.tensor([0.3, -1.2], dtype=torch.float64)
    with pytest.raises(DerivativeCheckError, match="hessian_symmetric check failed") as info:
        check_consistency(prod, (x,))
    assert info.value.report.check == "hessian_symmetric"

    @custom_jvp
    def nonlinear(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)

    @nonlinear.defjvp
    def rule2(primals: Any, tangents: Any) -> Any:
        (x,), (t,) = primals, tangents
        return nonlinear(x), torch.cos(x) * t + 1e-3 * t**2  # a JVP must be linear

    with pytest.raises(DerivativeCheckError, match="jvp_linear check failed"):
        check_consistency(nonlinear, (x,), properties=["jvp_linear"])
    with pytest.raises(ValueError, match="need a scalar output"):
        check_consistency(torch.sin, (x,), properties=["hvp"])
    with pytest.raises(ValueError, match="unknown properties"):
        check_consistency(torch.sin, (x,), properties=["symmetric"])
    assert "adjoint" in PROPERTIES


def test_check_vmap_catches_hidden_state() -> None:
    calls: list[int] = []

    def counted(x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return x * len(calls)

    with pytest.raises(DerivativeCheckError, match=re.escape("vmap vs loop check failed at out")):
        check_vmap(counted, (torch.ones(3, 2),))
    with pytest.raises(ValueError, match="the mapped axes must have one size"):
        check_vmap(torch.mul, (torch.ones(3), torch.ones(2)))


# ---------------------------------------------------------------------------------------------
# strategies


@given(data=st.data(), dtype=fst.dtypes(half=True))
def test_domains_keep_their_margins(data: Any, dtype: torch.dtype) -> None:
    dom = fst.real(-2, 2).away_from(0.0, 1.0)
    x = data.draw(fst.tensors(dtype, (8,), dom))
    m = dom.margin(dtype)
    for p in (0.0, 1.0):
        assert ((x.double() - p).abs() >= m * 0.99).all()
    y = data.draw(fst.tensors(dtype, (8,), fst.distinct()))
    gap = fst.distinct().gap(dtype)
    assert gap is not None and (y.double().sort().values.diff() >= gap * 0.99).all()
    z = data.draw(fst.tensors(dtype, (4,), fst.open_interval(-1, 1)))
    assert (z.abs() < 1).all()
    assert m >= 4 * finite_difference_step(dtype, 2.0)


@given(
    shape=fst.shapes(),
    a=fst.well_conditioned_matrices(),
    s=fst.spd_matrices(st.integers(1, 4), torch.float32),
    device=fst.devices(),
)
def test_shapes_and_matrices(
    shape: tuple[int, ...], a: torch.Tensor, s: torch.Tensor, device: str
) -> None:
    assert math.prod(shape) <= 64
    assert float(torch.linalg.cond(a)) <= 3 + 1e-9
    assert torch.equal(s, s.mT) and (torch.linalg.eigvalsh(s.double()) > 0.2).all()
    assert device in ("cpu", "cuda")


def test_pytrees_use_every_container() -> None:
    kinds: set[str] = set()

    @given(fst.pytrees(fst.tensors(torch.float64, (2,)), max_leaves=8))
    @hypothesis.settings(max_examples=60, database=None)
    def collect(tree: Any) -> None:
        def walk(t: Any) -> None:
            kinds.add(type(t).__name__)
            if isinstance(t, dict):
                t = list(t.values())
            if isinstance(t, (list, tuple)):
                for c in t:
                    walk(c)
            elif isinstance(t, fst.Node):
                walk(t.left)
                walk(t.right)

        walk(tree)

    collect()
    assert {"dict", "list", "tuple", "Pair", "Node", "NoneType", "Tensor"} <= kinds


@given(data=st.data())
def test_tree_like_and_batched(data: Any) -> None:
    primals = {"w": torch.ones(2, 3), "b": (torch.zeros(4, dtype=torch.float64), None), "n": 3}
    t = data.draw(fst.tree_like(primals))
    assert t["w"].shape == (2, 3) and t["b"][0].dtype == torch.float64 and t["b"][1] is None
    assert t["n"] == 3
    _, tan = functorch_utils.jvp(lambda p: p["w"].sum() + p["b"][0].sum(), (primals,), (t,))
    assert tan.shape == ()
    tree, axes = data.draw(fst.batched((torch.ones(3), torch.ones(2, 2)), size=st.just(5)))
    assert isinstance(axes[0], int) and tree[0].shape[axes[0]] == 5
    if axes[1] is not None:
        assert tree[1].shape[axes[1]] == 5
