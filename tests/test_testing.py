"""Tests of functorch_utils.testing: finite-difference checks and pytree assertions."""

from __future__ import annotations

import functools
import re
import subprocess
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import hypothesis.extra.numpy as hnp
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import functorch_utils
from functorch_utils.testing import (
    NonDifferentiablePointError,
    assert_trees_allclose,
    check_grads,
    check_jvp,
    check_vjp,
)

# ---------------------------------------------------------------------------------------------
# A corpus of smooth functions, each with a way to draw its arguments from a seed.


class Pair(NamedTuple):
    u: torch.Tensor
    v: torch.Tensor


def _mlp(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    h = torch.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def _tree_fun(a: dict[str, Any], p: Pair) -> dict[str, Any]:
    x, (y, nothing) = a["x"], a["y"]
    assert nothing is None
    return {"s": torch.sin(x) * p.u, "t": (torch.exp(0.5 * y) * p.v.sum(), None)}


def _args_for(name: str, gen: torch.Generator, dtype: torch.dtype, n: int) -> tuple[Any, ...]:
    def r(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen, dtype=torch.float64).to(dtype)

    if name == "mlp":
        params = {"w1": r(3, n), "b1": r(n), "w2": r(n, 2), "b2": r(2)}
        return (params, r(4, 3))
    if name == "matmul":
        return (r(n, 3), r(3, 2))
    if name == "tree":
        return ({"x": r(n), "y": (r(2), None)}, Pair(r(n), r(3)))
    return (r(n),)


CORPUS: dict[str, Callable[..., Any]] = {
    "sin": torch.sin,
    "mlp": _mlp,
    "logsumexp": lambda x: torch.logsumexp(x, dim=-1),
    "cube": lambda x: x**3,
    "matmul": torch.matmul,
    "tree": _tree_fun,
}

DTYPES = [torch.float32, torch.float64]


@given(
    name=st.sampled_from(sorted(CORPUS)),
    dtype=st.sampled_from(DTYPES),
    n=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
)
def test_check_grads_passes_on_smooth_corpus(
    name: str, dtype: torch.dtype, n: int, seed: int
) -> None:
    args = _args_for(name, torch.Generator().manual_seed(seed), dtype, n)
    check_grads(CORPUS[name], args, order=1, seed=seed)


@given(
    x=hnp.arrays(
        dtype=st.sampled_from(["float32", "float64"]),
        shape=hnp.array_shapes(min_dims=1, max_dims=2, max_side=5),
        elements={"min_value": -3.0, "max_value": 3.0, "allow_subnormal": False},
    ),
    name=st.sampled_from(["sin", "logsumexp", "cube"]),
)
def test_check_grads_passes_on_drawn_arrays(x: Any, name: str) -> None:
    check_grads(CORPUS[name], (torch.from_numpy(x.copy()),), order=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(CORPUS))
def test_check_grads_order_2_on_corpus(name: str, dtype: torch.dtype) -> None:
    args = _args_for(name, torch.Generator().manual_seed(0), dtype, 3)
    check_grads(CORPUS[name], args, order=2)


# ---------------------------------------------------------------------------------------------
# Planted errors: a new-style autograd.Function (setup_context, so torch.func accepts it) whose
# backward or jvp rule is off by a factor.


def _sin_with(bwd_factor: float = 1.0, jvp_factor: float = 1.0) -> Callable[..., torch.Tensor]:
    class Sin(torch.autograd.Function):
        @staticmethod
        def forward(x: torch.Tensor) -> torch.Tensor:
            return torch.sin(x)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.save_for_backward(inputs[0])
            ctx.save_for_forward(inputs[0])

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return g * torch.cos(x) * bwd_factor

        @staticmethod
        def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return t * torch.cos(x) * jvp_factor

    return Sin.apply


FACTOR = {torch.float64: 1.001, torch.float32: 1.01}


def test_planted_function_is_correct_with_factor_one() -> None:
    for dtype in DTYPES:
        x = torch.randn(6, generator=torch.Generator().manual_seed(1), dtype=dtype)
        check_grads(_sin_with(), (x,), order=1)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    ("mode", "label"), [("rev", "VJP (reverse mode)"), ("fwd", "JVP (forward mode)")]
)
@pytest.mark.parametrize("kind", ["factor", "sign"])
def test_planted_error_is_caught(dtype: torch.dtype, mode: str, label: str, kind: str) -> None:
    factor = FACTOR[dtype] if kind == "factor" else -1.0
    f = _sin_with(bwd_factor=factor) if mode == "rev" else _sin_with(jvp_factor=factor)
    x = torch.randn(10, generator=torch.Generator().manual_seed(0), dtype=dtype)
    with pytest.raises(AssertionError, match=re.escape(f"{label} check failed for input args[0]")):
        check_grads(f, (x,), modes=(mode,))


def _catch_rate(dtype: torch.dtype, mode: str, seeds: range) -> float:
    caught = 0
    for seed in seeds:
        gen = torch.Generator().manual_seed(seed)
        n = int(torch.randint(1, 51, (), generator=gen))
        x = torch.randn(n, generator=gen, dtype=torch.float64).to(dtype)
        factor = FACTOR[dtype]
        f = _sin_with(bwd_factor=factor) if mode == "rev" else _sin_with(jvp_factor=factor)
        try:
            check_grads(f, (x,), modes=(mode,), seed=seed)
        except AssertionError:
            caught += 1
    return caught / len(seeds)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("mode", ["fwd", "rev"])
def test_catch_rate_of_small_errors(dtype: torch.dtype, mode: str) -> None:
    # 0.1 % (float64) and 1 % (float32) wrong rules, 1-50 element inputs, 20 seeds.
    assert _catch_rate(dtype, mode, range(20)) >= 0.9


def test_planted_error_in_one_leaf_is_named() -> None:
    bad_sin = _sin_with(bwd_factor=1.001)

    def f(params: dict[str, torch.Tensor], x: torch.Tensor) -> torch.Tensor:
        return (bad_sin(params["w"]) * x).sum() + (params["b"] ** 2).sum()

    gen = torch.Generator().manual_seed(0)
    params = {"b": torch.randn(3, generator=gen, dtype=torch.float64)}
    params["w"] = torch.randn(3, generator=gen, dtype=torch.float64)
    x = torch.randn(3, generator=gen, dtype=torch.float64)
    with pytest.raises(AssertionError) as info:
        check_grads(f, (params, x), modes=("rev",))
    text = str(info.value)
    assert "VJP (reverse mode) check failed for input args[0]['w']." in text
    for part in ("error", "tolerance", "relative (rtol 1e-06", "FD rounding", "dtype rounding"):
        assert part in text
    assert "direction seed 0" in text
    assert "step h = 2**-17" in text


def _second_order_bad(mode: str) -> Callable[..., torch.Tensor]:
    """sin whose first derivative is right and whose second derivative is 1 % off."""
    bad_cos = _sin_with(bwd_factor=1.01, jvp_factor=1.01)  # cos = sin(x + pi/2)

    class Sin(torch.autograd.Function):
        @staticmethod
        def forward(x: torch.Tensor) -> torch.Tensor:
            return torch.sin(x)

        @staticmethod
        def setup_context(ctx: Any, inputs: tuple[Any, ...], output: Any) -> None:
            ctx.save_for_backward(inputs[0])
            ctx.save_for_forward(inputs[0])

        @staticmethod
        def backward(ctx: Any, g: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return g * bad_cos(x + torch.pi / 2)

        @staticmethod
        def jvp(ctx: Any, t: torch.Tensor) -> torch.Tensor:
            (x,) = ctx.saved_tensors
            return t * bad_cos(x + torch.pi / 2)

    return Sin.apply


@pytest.mark.parametrize(("mode", "label"), [("rev", "VJP of VJP"), ("fwd", "JVP of JVP")])
def test_second_order_error_is_named(mode: str, label: str) -> None:
    x = torch.randn(5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f = _second_order_bad(mode)
    check_grads(f, (x,), order=1, modes=(mode,))  # first order is right
    with pytest.raises(AssertionError, match=re.escape(f"order 2: {label} check failed")):
        check_grads(f, (x,), order=2, modes=(mode,))


# ---------------------------------------------------------------------------------------------
# Kinks, randomness, resolution.


@pytest.mark.parametrize("f", [torch.relu, torch.abs], ids=["relu", "abs"])
@pytest.mark.parametrize("mode", ["fwd", "rev"])
@pytest.mark.parametrize("dtype", DTYPES)
def test_kink_raises_non_differentiable(
    f: Callable[..., torch.Tensor], mode: str, dtype: torch.dtype
) -> None:
    x = torch.tensor([0.0, 0.5, -1.5], dtype=dtype)
    with pytest.raises(NonDifferentiablePointError, match="not differentiable at the checked"):
        check_grads(f, (x,), modes=(mode,))


def test_non_differentiable_error_is_a_value_error() -> None:
    assert issubclass(NonDifferentiablePointError, ValueError)
    assert not issubclass(NonDifferentiablePointError, AssertionError)


def test_kink_inside_stencil_is_not_a_wrong_verdict() -> None:
    # The kink sits between h/4 and h/2 from x: the finite differences do not converge like h**2,
    # which is reported as a non-differentiable point rather than as a wrong derivative.
    x = torch.tensor([0.3 * 2.0**-17], dtype=torch.float64)
    with pytest.raises(NonDifferentiablePointError):
        check_grads(torch.relu, (x,), modes=("fwd",), seed=0)


def test_non_deterministic_function_is_reported() -> None:
    x = torch.randn(4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    with pytest.raises(AssertionError, match="non-deterministic function"):
        check_grads(lambda x: x * torch.rand(()), (x,))


def test_step_below_resolution_suggests_upcast() -> None:
    x = torch.ones(3, dtype=torch.float64)
    with pytest.raises(ValueError, match=re.escape("x + h*v == x. Upcast the input to float64")):
        check_grads(torch.sin, (x,), eps=1e-30)


def test_matmul_precision_is_pinned_and_restored() -> None:
    seen = []

    def f(x: torch.Tensor) -> torch.Tensor:
        seen.append(torch.get_float32_matmul_precision())
        return x @ x.T

    old = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("medium")
    try:
        check_grads(f, (torch.randn(2, 2),))
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(old)
    assert set(seen) == {"highest"}


# ---------------------------------------------------------------------------------------------
# Inputs: non-float leaves, Python floats, non-polymorphic functions, complex.


def test_int_leaves_are_left_alone() -> None:
    def f(x: torch.Tensor, idx: torch.Tensor, k: int) -> torch.Tensor:
        return torch.sin(x[idx]) * k

    x = torch.randn(5, dtype=torch.float64)
    check_grads(f, (x, torch.tensor([0, 2, 4]), 3), order=2)


def test_python_float_leaf() -> None:
    check_grads(lambda a, x: torch.sin(a * x), (0.7, torch.randn(3, dtype=torch.float64)))


def test_not_dtype_polymorphic_falls_back() -> None:
    w = torch.randn(3, 3, generator=torch.Generator().manual_seed(0))

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ w)  # float32 weights: fails in float64

    check_grads(f, (torch.randn(2, 3, generator=torch.Generator().manual_seed(1)),), order=1)
    with pytest.raises(AssertionError, match="not dtype-polymorphic"):
        check_grads(
            lambda x: f(x) * _sin_with(jvp_factor=1.05)(x),
            (torch.randn(2, 3, generator=torch.Generator().manual_seed(1)),),
            modes=("fwd",),
        )


def test_complex_inputs() -> None:
    z = torch.randn(4, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))
    check_grads(lambda z: (z * z).sum(), (z,))
    check_grads(lambda z: (z.abs() ** 2).sum(), (z,))
    check_grads(lambda z: torch.exp(z) * z.conj(), (z,))


# ---------------------------------------------------------------------------------------------
# check_jvp / check_vjp with user rules.


def test_check_jvp_and_vjp_with_the_library_rules() -> None:
    params = {"w": torch.randn(3, 2, dtype=torch.float64), "b": None}
    x = torch.randn(4, 3, dtype=torch.float64)

    def f(p: dict[str, Any], x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x @ p["w"])

    check_jvp(f, functools.partial(functorch_utils.jvp, f), (params, x))
    check_vjp(f, functools.partial(functorch_utils.vjp, f), (params, x))


def test_check_vjp_reports_wrong_cotangent_structure() -> None:
    x = torch.randn(3, dtype=torch.float64)

    def f_vjp(x: torch.Tensor) -> tuple[torch.Tensor, Callable[..., Any]]:
        return torch.sin(x), lambda ct: ct * torch.cos(x)  # not a tuple

    with pytest.raises(AssertionError, match="expected a tuple of 1 cotangents"):
        check_vjp(torch.sin, f_vjp, (x,))


def test_err_msg_heads_the_report() -> None:
    x = torch.randn(3, dtype=torch.float64)

    def f_jvp(p: tuple[Any, ...], t: tuple[Any, ...]) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.sin(p[0]), -torch.cos(p[0]) * t[0]

    with pytest.raises(AssertionError, match=r"^my sin\ncheck_jvp\(sin, f_jvp, args\): JVP"):
        check_jvp(torch.sin, f_jvp, (x,), err_msg="my sin")


# ---------------------------------------------------------------------------------------------
# Bad input.


def test_args_must_be_a_tuple() -> None:
    msg = (
        "check_grads(sin, args): args must be a tuple of positional arguments; expected a tuple, "
        "got a tensor of shape (3,). Wrap a single argument: (x,)."
    )
    with pytest.raises(TypeError, match=re.escape(msg)):
        check_grads(torch.sin, torch.ones(3))  # type: ignore[arg-type]


def test_bad_order_and_modes() -> None:
    x = (torch.ones(2),)
    with pytest.raises(ValueError, match=re.escape("order must be positive")):
        check_grads(torch.sin, x, order=0)
    with pytest.raises(TypeError, match=re.escape("order must be an int")):
        check_grads(torch.sin, x, order=1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("expected a non-empty subset of")):
        check_grads(torch.sin, x, modes=("forward",))
    with pytest.raises(TypeError, match=re.escape("f is not callable")):
        check_grads(torch.ones(2), x)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=re.escape("args has no floating-point leaves")):
        check_grads(torch.sin, (torch.ones(2, dtype=torch.long),))


# ---------------------------------------------------------------------------------------------
# assert_trees_allclose


def test_assert_trees_allclose_passes() -> None:
    a = {"w": torch.ones(2, 3), "b": (torch.zeros(3, dtype=torch.float64), None), "n": 3}
    b = {"w": torch.ones(2, 3) + 1e-7, "b": (torch.zeros(3, dtype=torch.float64), None), "n": 3}
    assert_trees_allclose(a, b)
    assert_trees_allclose(torch.tensor([float("nan")]), torch.tensor([float("nan")]))
    assert_trees_allclose(torch.tensor([1.0]), torch.tensor([1.1]), rtol=0.2)


def test_assert_trees_allclose_structure_mismatch() -> None:
    with pytest.raises(AssertionError, match=re.escape("the structures differ")) as info:
        assert_trees_allclose({"a": torch.ones(1)}, {"b": torch.ones(1)})
    assert "different pytree keys at key path" in str(info.value)


def test_assert_trees_allclose_shape_and_dtype() -> None:
    with pytest.raises(AssertionError, match=re.escape("shapes differ at a[1]; expected (2,)")):
        assert_trees_allclose((torch.ones(2), torch.ones(3)), (torch.ones(2), torch.ones(2)))
    with pytest.raises(
        AssertionError, match=re.escape("dtypes differ at a; expected torch.float64")
    ):
        assert_trees_allclose(torch.ones(2), torch.ones(2, dtype=torch.float64))


def test_assert_trees_allclose_values_message() -> None:
    a = {"p": [torch.zeros(2), torch.tensor([1.0, 2.0])]}
    b = {"p": [torch.zeros(2), torch.tensor([1.0, 2.5])]}
    with pytest.raises(AssertionError) as info:
        assert_trees_allclose(a, b)
    text = str(info.value)
    assert "values differ at a['p'][1] (shape (2,), dtype torch.float32)" in text
    assert "max abs error 0.5, max rel error 0.2" in text


@pytest.mark.parametrize(
    ("dtype", "ok", "bad"),
    [(torch.float64, 1e-12, 1e-8), (torch.float32, 1e-6, 1e-4), (torch.float16, 1e-3, 5e-2)],
)
def test_assert_trees_allclose_dtype_defaults(dtype: torch.dtype, ok: float, bad: float) -> None:
    x = torch.ones(3, dtype=dtype)
    assert_trees_allclose(x, x * (1 + ok))
    with pytest.raises(AssertionError):
        assert_trees_allclose(x * (1 + bad), x)


# ---------------------------------------------------------------------------------------------
# Imports.


def test_hypothesis_is_not_imported_by_testing() -> None:
    code = "import sys, functorch_utils.testing; assert 'hypothesis' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_complex_pairing_follows_jax() -> None:
    # functorch_utils.vjp follows JAX (the bilinear pairing); torch.func.vjp's conjugated
    # cotangent is the wrong rule under that convention and must be caught.
    z = torch.randn(4, dtype=torch.complex128, generator=torch.Generator().manual_seed(0))

    def f(z: torch.Tensor) -> torch.Tensor:
        return z * z

    check_vjp(f, functools.partial(functorch_utils.vjp, f), (z,))
    with pytest.raises(AssertionError, match=re.escape("VJP (reverse mode) check failed")):
        check_vjp(f, functools.partial(torch.func.vjp, f), (z,))


def test_order_2_of_custom_jvp_says_to_use_reverse_mode() -> None:
    @functorch_utils.custom_jvp
    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.sin(x)

    @f.defjvp
    def f_jvp(primals: Any, tangents: Any) -> Any:
        return f(primals[0]), torch.cos(primals[0]) * tangents[0]

    x = torch.linspace(-1.0, 1.0, 3, dtype=torch.float64)
    check_grads(f, (x,), order=2, modes=("rev",))
    msg = (
        "check_grads(f, args): order 2: JVP of JVP: forward-over-forward differentiation (jvp of "
        "jvp) of f failed; expected f to support two nested forward-mode levels, got TypeError: "
    )
    fix = "check it at higher orders in reverse mode: check_grads(f, args, order=2, modes=('rev',))"
    with pytest.raises(TypeError, match=re.escape(msg)) as info:
        check_grads(f, (x,), order=2)
    assert fix in str(info.value)
    assert isinstance(info.value.__cause__, TypeError)
