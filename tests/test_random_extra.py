"""The extra ``jax.random`` samplers of ``functorch_utils._random_extra``.

For each sampler: JAX's numbers for two seeds (tests with "jax" in their name, skipped without
JAX), ``vmap`` over split keys equal to the loop, ``jit`` equal to eager with ``fullgraph=True``,
statistics at fixed keys (deterministic, never flaky), and pinned error messages. JAX compiles
each sampler once per shape and dtype (1-2 s for the gamma-based ones), so each sampler is
compared through one call shape.
"""

from __future__ import annotations

import math
import os
import re

import numpy as np
import pytest
import torch

import functorch_utils as fu
from functorch_utils import _random_extra as rx
from functorch_utils import grad, random, vmap

from .helpers import jax_32bit_mode  # noqa: F401 (the fixture, used by pytestmark)

pytestmark = pytest.mark.usefixtures("jax_32bit_mode")

SEEDS = [0, 2**31 + 5]
N = 20000
# Tracing every sampler for jit takes ~10 s; the default run compiles one sampler per building
# block (bits, uniform, normal, the gamma operator, pow/sum, QR), FUNCTORCH_UTILS_PROFILE=thorough
# all of them.
THOROUGH = os.environ.get("FUNCTORCH_UTILS_PROFILE") == "thorough"


def _jax():
    pytest.importorskip("jax")
    return pytest.importorskip("jax.random")


def _np(x: torch.Tensor) -> np.ndarray:
    return x.detach().cpu().numpy()


def _assert_exact(ours: torch.Tensor, theirs) -> None:
    a, b = _np(ours), np.asarray(theirs)
    assert a.shape == b.shape, (a.shape, b.shape)
    assert a.dtype == b.dtype, (a.dtype, b.dtype)
    np.testing.assert_array_equal(a, b)


def _ulps(ours: torch.Tensor, theirs, floor: float = 0.0) -> float:
    """The largest difference in float32 ulps of ``max(|theirs|, floor)``."""
    a = _np(ours).astype(np.float64)
    b = np.asarray(theirs).astype(np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    finite = np.isfinite(b)
    assert (np.isfinite(a) == finite).all()
    ref = np.maximum(np.abs(b), floor).astype(np.float32)
    err = np.abs(a - b)[finite] / np.spacing(ref[finite]).astype(np.float64)
    return float(err.max()) if err.size else 0.0


def _assert_ulps(ours: torch.Tensor, theirs, max_ulps: float, floor: float = 0.0) -> None:
    worst = _ulps(ours, theirs, floor)
    assert worst <= max_ulps, f"{worst} ulps"


# ---------------------------------------------------------------------------------------------
# Against JAX: (ours, JAX's, comparison) per sampler; one shape each, two seeds


SHAPE = (1000,)

# name -> (our call, JAX's call, max ulps or "exact"/"orthogonal", ulp floor)
_CASES = {
    "rademacher": (
        lambda k: rx.rademacher(k, SHAPE),
        lambda jr, k: jr.rademacher(k, SHAPE),
        "exact",
        0.0,
    ),
    "geometric": (
        lambda k: rx.geometric(k, 0.3, SHAPE),
        lambda jr, k: jr.geometric(k, 0.3, SHAPE),
        "exact",
        0.0,
    ),
    "cauchy": (lambda k: rx.cauchy(k, SHAPE), lambda jr, k: jr.cauchy(k, SHAPE), 4, 0.0),
    "pareto": (
        lambda k: rx.pareto(k, 3.0, SHAPE),
        lambda jr, k: jr.pareto(k, 3.0, SHAPE),
        8,
        0.0,
    ),
    "weibull_min": (
        lambda k: rx.weibull_min(k, 1.5, 2.0, SHAPE),
        lambda jr, k: jr.weibull_min(k, 1.5, 2.0, SHAPE),
        4,
        0.0,
    ),
    "rayleigh": (
        lambda k: rx.rayleigh(k, 1.5, SHAPE),
        lambda jr, k: jr.rayleigh(k, 1.5, SHAPE),
        4,
        0.0,
    ),
    "triangular": (
        lambda k: rx.triangular(k, 0.0, 0.5, 2.0, SHAPE),
        lambda jr, k: jr.triangular(k, 0.0, 0.5, 2.0, SHAPE),
        4,
        0.0,
    ),
    "lognormal": (
        lambda k: rx.lognormal(k, 0.5, SHAPE),
        lambda jr, k: jr.lognormal(k, 0.5, SHAPE),
        4,
        0.0,
    ),
    "maxwell": (lambda k: rx.maxwell(k, SHAPE), lambda jr, k: jr.maxwell(k, SHAPE), 8, 0.0),
    # sign * m * scale + loc cancels near zero: ulps of max(|x|, loc)
    "double_sided_maxwell": (
        lambda k: rx.double_sided_maxwell(k, 0.5, 2.0, SHAPE),
        lambda jr, k: jr.double_sided_maxwell(k, 0.5, 2.0, SHAPE),
        8,
        0.5,
    ),
    # x = mean + mean**2 y / 2 - mean / 2 * sqrt(...) cancels for large y: see the next test
    "wald": (lambda k: rx.wald(k, 1.5, SHAPE), lambda jr, k: jr.wald(k, 1.5, SHAPE), 64, 1.0),
    "chisquare": (
        lambda k: rx.chisquare(k, 3.0, SHAPE),
        lambda jr, k: jr.chisquare(k, 3.0, SHAPE),
        16,
        0.0,
    ),
    "t": (lambda k: rx.t(k, 5.0, SHAPE), lambda jr, k: jr.t(k, 5.0, SHAPE), 16, 0.0),
    "f": (lambda k: rx.f(k, 4.0, 6.0, SHAPE), lambda jr, k: jr.f(k, 4.0, 6.0, SHAPE), 32, 0.0),
    "generalized_normal": (
        lambda k: rx.generalized_normal(k, 3.0, SHAPE),
        lambda jr, k: jr.generalized_normal(k, 3.0, SHAPE),
        16,
        0.0,
    ),
    "ball": (
        lambda k: rx.ball(k, 3, 2.0, (300,)),
        lambda jr, k: jr.ball(k, 3, 2.0, (300,)),
        16,
        0.0,
    ),
    "orthogonal": (
        lambda k: rx.orthogonal(k, 4, (5,), m=6),
        lambda jr, k: jr.orthogonal(k, 4, (5,), m=6),
        "orthogonal",
        0.0,
    ),
}


_BIN_N = np.array([0, 1, 5, 20, 50, 100, 1000, 1e5, 3.7, -1, np.nan, np.inf] * 10, np.float32)
# (n = inf never meets p = 0 or 1 here: JAX's loop never ends for those; ours gives inf)
_BIN_P = np.array([0.3, 0.7, 0.01, 0.5, 0.9, 0.0, 1.0, 0.05] * 15, np.float32)
_MULTI_N = np.array([100.0, 1000.0], np.float32)
_MULTI_P = np.array([[0.2, 0.3, 0.5], [0.1, 0.0, 0.9]], np.float32)
# both methods (inversion for n * min(p, 1 - p) <= 10, BTRS above), p > 1/2, NaN, -1 and inf
_CASES["binomial"] = (
    lambda k: rx.binomial(k, torch.tensor(_BIN_N), torch.tensor(_BIN_P)),
    lambda jr, k: jr.binomial(k, _BIN_N, _BIN_P),
    "exact",
    0.0,
)
_CASES["multinomial"] = (
    lambda k: rx.multinomial(k, torch.tensor(_MULTI_N), torch.tensor(_MULTI_P)),
    lambda jr, k: jr.multinomial(k, _MULTI_N, _MULTI_P),
    "exact",
    0.0,
)


@pytest.mark.parametrize("name", sorted(_CASES))
def test_sampler_matches_jax(name):
    jr = _jax()
    ours, theirs, tol, floor = _CASES[name]
    for seed in SEEDS:
        got, want = ours(random.key(seed)), theirs(jr, jr.PRNGKey(seed))
        if tol == "exact":
            _assert_exact(got, want)
        elif tol == "orthogonal":  # QR by LAPACK in both, not the same calls
            assert got.shape == want.shape
            np.testing.assert_allclose(_np(got), np.asarray(want), rtol=0, atol=2e-6)
        else:
            assert got.dtype == torch.float32 and np.asarray(want).dtype == np.float32
            _assert_ulps(got, want, tol, floor)


def test_wald_differs_from_jax_only_where_it_cancels_jax():
    # Wald's x loses digits to cancellation when the squared normal y is large; there torch's
    # and XLA's roundings (an ulp in sqrt, in the normal) are amplified. Elsewhere: a few ulps.
    jr = _jax()
    got = rx.wald(random.key(0), 1.5, SHAPE)
    want = np.asarray(jr.wald(jr.PRNGKey(0), 1.5, SHAPE))
    np.testing.assert_allclose(_np(got), want, rtol=5e-5)
    _assert_ulps(got, want, 400)


def test_integer_dtypes_and_float_signs_match_jax():
    jr = _jax()
    import jax.numpy as jnp

    k, jk = random.key(3), jr.PRNGKey(3)
    _assert_exact(rx.rademacher(k, (50,), torch.int8), jr.rademacher(jk, (50,), jnp.int8))
    _assert_exact(rx.rademacher(k, (50,), torch.float32), jr.rademacher(jk, (50,), jnp.float32))
    p = np.array([0.9, 0.5, 0.05, 1e-3], np.float32)
    _assert_exact(
        rx.geometric(k, torch.tensor(p), (25, 4), torch.int16),
        jr.geometric(jk, p, (25, 4), jnp.int16),
    )


def test_64_bit_results_match_jax_x64():
    # int64/float64 results are JAX's with jax_enable_x64: float64 coins and uniforms
    jax, jr = pytest.importorskip("jax"), _jax()
    import jax.numpy as jnp

    k, jk = random.key(1), jr.PRNGKey(1)
    with jax.enable_x64(True):
        _assert_exact(rx.rademacher(k, (64,), torch.int64), jr.rademacher(jk, (64,), jnp.int64))
        if THOROUGH:
            p = torch.tensor(0.3, dtype=torch.float64)
            _assert_exact(
                rx.geometric(k, p, (500,), torch.int64), jr.geometric(jk, 0.3, (500,), jnp.int64)
            )
            n = torch.tensor([5.0, 50.0, 500.0], dtype=torch.float64)
            _assert_exact(rx.binomial(k, n, p, (100, 3)), jr.binomial(jk, _np(n), 0.3, (100, 3)))
            for ours, theirs, tol in [
                (rx.cauchy(k, (500,), torch.float64), jr.cauchy(jk, (500,), jnp.float64), 4),
                (
                    rx.t(k, torch.tensor(5.0, dtype=torch.float64), (500,)),
                    jr.t(jk, 5.0, (500,)),
                    64,
                ),
            ]:
                a, b = _np(ours), np.asarray(theirs)
                assert a.dtype == b.dtype == np.float64
                assert (np.abs(a - b) / np.spacing(np.abs(b))).max() <= tol


def test_double_sided_maxwell_shape_rule_matches_jax():
    # JAX draws shape + params_shape, and params_shape twice when shape is ()
    jr = _jax()
    loc = np.array([0.0, 1.0, 2.0], np.float32)
    got = rx.double_sided_maxwell(random.key(1), torch.tensor(loc), 1.0)
    want = jr.double_sided_maxwell(jr.PRNGKey(1), loc, 1.0)
    assert tuple(got.shape) == np.shape(want) == (3, 3)
    _assert_ulps(got, want, 8, 1.0)


# ---------------------------------------------------------------------------------------------
# Transforms: vmap over keys, jit, grad

_SMALL = {
    "rademacher": lambda k: rx.rademacher(k, (4,)),
    "geometric": lambda k: rx.geometric(k, 0.3, (4,)),
    "cauchy": lambda k: rx.cauchy(k, (4,)),
    "pareto": lambda k: rx.pareto(k, 3.0, (4,)),
    "weibull_min": lambda k: rx.weibull_min(k, 1.5, 2.0, (4,)),
    "rayleigh": lambda k: rx.rayleigh(k, 1.5, (4,)),
    "triangular": lambda k: rx.triangular(k, 0.0, 0.5, 2.0, (4,)),
    "lognormal": lambda k: rx.lognormal(k, 0.5, (4,)),
    "maxwell": lambda k: rx.maxwell(k, (4,)),
    "double_sided_maxwell": lambda k: rx.double_sided_maxwell(k, 0.5, 2.0, (4,)),
    "wald": lambda k: rx.wald(k, 1.5, (4,)),
    "chisquare": lambda k: rx.chisquare(k, 3.0, (4,)),
    "t": lambda k: rx.t(k, 5.0, (4,)),
    "f": lambda k: rx.f(k, 4.0, 6.0, (4,)),
    "generalized_normal": lambda k: rx.generalized_normal(k, 3.0, (4,)),
    "ball": lambda k: rx.ball(k, 3, 1.0, (2,)),
    "orthogonal": lambda k: rx.orthogonal(k, 3, (2,)),
    "binomial": lambda k: rx.binomial(k, torch.tensor([3.0, 30.0, 300.0]), 0.4),
    "multinomial": lambda k: rx.multinomial(k, 40.0, torch.tensor([0.2, 0.3, 0.5])),
}


def test_every_sampler_is_covered():
    assert sorted(_SMALL) == sorted(_CASES) == sorted(rx.__all__)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and bool(torch.equal(a, b))


@pytest.mark.parametrize("name", sorted(_SMALL))
def test_vmap_over_keys_equals_the_loop(name):
    fn = _SMALL[name]
    keys = random.split(random.key(0), 3)
    loop = torch.stack([fn(k) for k in keys])
    batched = vmap(fn)(keys)
    if name == "orthogonal":  # batched LAPACK calls may round differently from single ones
        torch.testing.assert_close(batched, loop, rtol=0, atol=1e-6)
    else:
        assert _same(batched, loop)


def test_vmap_over_a_batched_parameter():
    k = random.key(2)
    df = torch.tensor([1.0, 3.0, 10.0])
    for fn in (rx.chisquare, rx.t, rx.pareto, rx.rayleigh, rx.lognormal):
        got = vmap(lambda d, fn=fn: fn(k, d, (5,)))(df)
        assert _same(got, torch.stack([fn(k, d, (5,)) for d in df]))


_JIT_DEFAULT = [
    "rademacher",
    "geometric",
    "cauchy",
    "wald",
    "double_sided_maxwell",
    "f",
    "ball",
    "orthogonal",
    "binomial",
    "multinomial",
]


def test_jit_equals_eager_with_a_full_graph():
    # one compiled function for the samplers: a graph break anywhere fails fullgraph=True
    names = sorted(_SMALL) if THOROUGH else _JIT_DEFAULT
    keys = random.split(random.key(4), len(names))

    def every(keys):
        return [_SMALL[n](keys[i]) for i, n in enumerate(names)]

    compiled = fu.jit(every, backend="eager")(keys)
    for name, got, want in zip(names, compiled, every(keys)):
        assert _same(got, want), name


def test_jit_of_vmap_over_keys_runs_the_gamma_operator_per_member():
    keys = random.split(random.key(5), 3)
    df = torch.tensor(3.5)
    batched = fu.jit(vmap(lambda k, d: rx.t(k, d, (4,)), in_axes=(0, None)), backend="eager")
    assert _same(batched(keys, df), torch.stack([rx.t(k, df, (4,)) for k in keys]))


def test_binomial_under_vmap_of_parameters_and_jit():
    # a shared key, batched n: BTRS keeps each member's own last accepted draw, as JAX
    h = lambda n: rx.binomial(random.key(3), n, 0.4, (5,))  # noqa: E731
    ns = torch.tensor([2.0, 20.0, 200.0])
    loop = torch.stack([h(n) for n in ns])
    assert _same(vmap(h)(ns), loop)
    assert _same(fu.jit(vmap(h), backend="eager")(ns), loop)
    m = lambda k: rx.multinomial(k, 40.0, torch.tensor([0.2, 0.3, 0.5]))  # noqa: E731
    keys = random.split(random.key(4), 3)
    assert _same(fu.jit(vmap(m), backend="eager")(keys), torch.stack([m(k) for k in keys]))


def test_gradients_of_reparameterised_samplers():
    k = random.key(6)
    b = torch.tensor(2.5, dtype=torch.float64)
    # pareto = exp(e / b): d/db = -x * log(x) / b
    x = rx.pareto(k, b, (5,))
    torch.testing.assert_close(
        grad(lambda b: rx.pareto(k, b, (5,)).sum())(b), (-x * torch.log(x) / b).sum()
    )
    s = torch.tensor(1.5, dtype=torch.float64)
    r = rx.rayleigh(k, s, (5,))
    torch.testing.assert_close(grad(lambda s: rx.rayleigh(k, s, (5,)).sum())(s), (r / s).sum())
    # chisquare = 2 * gamma(df / 2): its derivative is the gamma draw's implicit one, halved
    df = torch.tensor([3.0, 7.0], dtype=torch.float64)
    want = grad(lambda a: 2 * random.gamma(k, a).sum())(df / 2) / 2
    got = grad(lambda d: rx.chisquare(k, d).sum())(df)
    torch.testing.assert_close(got, want, rtol=1e-6, atol=0)


def test_eval_shape_runs_no_rejection_loop():
    out = fu.eval_shape(lambda k: rx.t(k, torch.tensor([2.0, 3.0]), (4, 2)), random.key(0))
    assert tuple(out.shape) == (4, 2) and out.dtype == torch.float32
    out = fu.eval_shape(lambda k: rx.ball(k, 5, shape=(3,)), random.key(0))
    assert tuple(out.shape) == (3, 5)
    out = fu.eval_shape(lambda k: rx.binomial(k, torch.tensor([5.0, 500.0]), 0.3), random.key(0))
    assert tuple(out.shape) == (2,) and out.dtype == torch.float32


# ---------------------------------------------------------------------------------------------
# Statistics at fixed keys


def _ks(x: torch.Tensor, cdf) -> float:
    xs = torch.sort(x.double().reshape(-1)).values
    n = xs.numel()
    fx = cdf(xs)
    i = torch.arange(1, n + 1, dtype=torch.float64)
    return float(torch.maximum(i / n - fx, fx - (i - 1) / n).max())


_KS_BOUND = 1.63 / math.sqrt(N)  # the 1% critical value; fixed keys, so never flaky
_PHI = lambda x: 0.5 * (1 + torch.erf(x / math.sqrt(2)))  # noqa: E731


def _maxwell_cdf(x: torch.Tensor) -> torch.Tensor:
    x = x.clamp_min(0)
    return torch.erf(x / math.sqrt(2)) - math.sqrt(2 / math.pi) * x * torch.exp(-x * x / 2)


def _triangular_cdf(a: float, c: float, b: float):
    def cdf(x: torch.Tensor) -> torch.Tensor:
        x = x.clamp(a, b)
        return torch.where(
            x <= c, (x - a) ** 2 / ((b - a) * (c - a)), 1 - (b - x) ** 2 / ((b - a) * (b - c))
        )

    return cdf


def _wald_cdf(mu: float):
    def cdf(x: torch.Tensor) -> torch.Tensor:
        x = x.clamp_min(1e-300)
        r = torch.sqrt(1 / x)
        return _PHI(r * (x / mu - 1)) + math.exp(2 / mu) * _PHI(-r * (x / mu + 1))

    return cdf


def _gammainc(a: float):
    return lambda x: torch.special.gammainc(torch.tensor(a, dtype=torch.float64), x.clamp_min(0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_continuous_samplers_pass_ks_tests(dtype):
    k = random.key(2025)
    cases = {
        "cauchy": (rx.cauchy(k, (N,), dtype), lambda x: 0.5 + torch.atan(x) / math.pi),
        "pareto": (rx.pareto(k, 3.0, (N,), dtype), lambda x: 1 - x.clamp_min(1) ** -3.0),
        "weibull_min": (
            rx.weibull_min(k, 1.5, 2.0, (N,), dtype),
            lambda x: 1 - torch.exp(-((x.clamp_min(0) / 1.5) ** 2)),
        ),
        "rayleigh": (rx.rayleigh(k, 1.5, (N,), dtype), lambda x: 1 - torch.exp(-(x**2) / 4.5)),
        "triangular": (
            rx.triangular(k, -1.0, 0.5, 2.0, (N,), dtype),
            _triangular_cdf(-1.0, 0.5, 2.0),
        ),
        "lognormal": (
            rx.lognormal(k, 0.5, (N,), dtype),
            lambda x: _PHI(torch.log(x.clamp_min(1e-300)) / 0.5),
        ),
        "maxwell": (rx.maxwell(k, (N,), dtype), _maxwell_cdf),
        "double_sided_maxwell": (
            rx.double_sided_maxwell(k, 1.0, 2.0, (N,), dtype),
            lambda x: 0.5 + 0.5 * torch.sign(x - 1) * _maxwell_cdf((x - 1).abs() / 2),
        ),
        "wald": (rx.wald(k, 1.5, (N,), dtype), _wald_cdf(1.5)),
        "chisquare": (rx.chisquare(k, 3.0, (N,), dtype), lambda x: _gammainc(1.5)(x / 2)),
        # |x|**p ~ Gamma(1/p)
        "generalized_normal": (
            rx.generalized_normal(k, 3.0, (N,), dtype).abs() ** 3,
            _gammainc(1 / 3),
        ),
    }
    for name, (x, cdf) in cases.items():
        assert x.dtype == dtype, name
        assert _ks(x, cdf) < _KS_BOUND, name


def test_t_f_and_discrete_samplers_moments_and_quantiles():
    k = random.key(77)

    def near(frac: float, p: float) -> bool:
        return abs(frac - p) < 4 * math.sqrt(p * (1 - p) / N)

    x = rx.t(k, 5.0, (N,))
    assert abs(float(x.mean())) < 4 * math.sqrt(5 / 3 / N)
    assert near(float((x.abs() < 2.0150484).double().mean()), 0.9)  # t_{0.95}(5)
    y = rx.f(k, 4.0, 6.0, (N,))
    assert near(float((y < 4.5336770).double().mean()), 0.95)  # F_{0.95}(4, 6)
    assert near(float((y < 0.9419133).double().mean()), 0.5)  # its median
    g = rx.geometric(k, 0.3, (N,)).double()
    assert float(g.min()) >= 1
    assert abs(float(g.mean()) - 1 / 0.3) < 4 * math.sqrt(0.7 / 0.09 / N)
    assert abs(float(g.var()) / (0.7 / 0.09) - 1) < 0.08
    r = rx.rademacher(k, (N,))
    assert set(r.unique().tolist()) == {-1, 1}
    assert abs(float(r.double().mean())) < 4 / math.sqrt(N)


def test_binomial_and_multinomial_moments():
    k = random.key(11)
    for n, p in [(5.0, 0.3), (200.0, 0.3), (200.0, 0.8), (40.0, 0.5)]:  # inversion and BTRS
        x = rx.binomial(k, n, p, (N,)).double()
        assert float(x.min()) >= 0 and float(x.max()) <= n
        assert torch.equal(x, torch.floor(x))
        sd = math.sqrt(n * p * (1 - p))
        assert abs(float(x.mean()) - n * p) < 4 * sd / math.sqrt(N), (n, p)
        assert abs(float(x.std()) / sd - 1) < 0.04, (n, p)
    probs = torch.tensor([0.1, 0.2, 0.3, 0.4])
    c = rx.multinomial(k, 30.0, probs, shape=(N, 4)).double()
    assert torch.equal(c.sum(-1), torch.full((N,), 30.0, dtype=torch.float64))
    torch.testing.assert_close(
        c.mean(0), 30 * probs.double(), atol=4 * math.sqrt(30 * 0.25 / N), rtol=0
    )
    edge = rx.binomial(k, torch.tensor([-1.0, math.nan, math.inf, 7.0]), torch.tensor(0.5))
    assert edge[:2].isnan().all() and edge[2] == math.inf and 0 <= edge[3] <= 7
    # n = inf with p = 0 or 1: inf (JAX's BTRS loop never ends there)
    edge = rx.binomial(k, math.inf, torch.tensor([0.0, 1.0, 0.5]))
    assert (edge == math.inf).all()


@pytest.mark.parametrize("p", [1.0, 2.0, 4.0])
def test_ball_is_uniform_in_the_unit_ball(p):
    d = 3
    x = rx.ball(random.key(8), d, p, (N,), torch.float64)
    radius = (x.abs() ** p).sum(-1) ** (1 / p)
    assert float(radius.max()) <= 1.0
    # uniform in the ball: radius**d is uniform on [0, 1]; the direction is symmetric
    assert _ks(radius**d, lambda u: u.clamp(0, 1)) < _KS_BOUND
    assert float(x.mean(0).abs().max()) < 4 * math.sqrt(float(x.var()) / N)


def test_orthogonal_is_orthogonal_and_haar():
    q = rx.orthogonal(random.key(9), 4, (2000,), torch.float64)
    eye = torch.eye(4, dtype=torch.float64).expand(2000, 4, 4)
    torch.testing.assert_close(q @ q.mT, eye)
    # Haar: every entry has mean 0 and variance 1/n
    torch.testing.assert_close(q.mean(0), torch.zeros(4, 4, dtype=torch.float64), atol=0.05, rtol=0)
    torch.testing.assert_close(
        (q**2).mean(0), torch.full((4, 4), 0.25, dtype=torch.float64), atol=0.02, rtol=0
    )
    wide = rx.orthogonal(random.key(9), 3, (5,), m=5)
    assert wide.shape == (5, 3, 5)
    torch.testing.assert_close(wide @ wide.mT, torch.eye(3).expand(5, 3, 3))
    tall = rx.orthogonal(random.key(9), 5, (), m=2)
    torch.testing.assert_close(tall.mT @ tall, torch.eye(2))
    u = rx.orthogonal(random.key(9), 3, (), torch.complex64)
    torch.testing.assert_close(u @ u.mH, torch.eye(3, dtype=torch.complex64))


def test_default_dtypes_and_shapes():
    k = random.key(0)
    assert rx.rademacher(k, (2,)).dtype == torch.int32
    assert rx.geometric(k, 0.5).dtype == torch.int32 and rx.geometric(k, 0.5).shape == ()
    assert rx.chisquare(k, torch.ones(2, 3, dtype=torch.float64)).shape == (2, 3)
    assert rx.chisquare(k, torch.ones(3, dtype=torch.float64)).dtype == torch.float64
    assert rx.lognormal(k).shape == ()
    assert rx.lognormal(k, shape=(2,), dtype=torch.complex64).dtype == torch.complex64
    assert rx.weibull_min(k, torch.ones(3), 2.0, (2, 1)).shape == (2, 3)
    assert rx.triangular(k, torch.zeros(2), 0.5, torch.ones(3, 1)).shape == (3, 2)
    assert rx.ball(k, 0, shape=(2,)).shape == (2, 0)


# ---------------------------------------------------------------------------------------------
# Errors


def _raises(exc: type[Exception], text: str):
    return pytest.raises(exc, match=re.escape(text))


def test_errors_name_the_argument_and_the_fix():
    k = random.key(0)
    with _raises(
        ValueError,
        "random.cauchy(key, shape, dtype): dtype must be a floating dtype; expected "
        "torch.float16, torch.bfloat16, torch.float32 or torch.float64, got torch.int32.",
    ):
        rx.cauchy(k, (2,), torch.int32)
    with _raises(
        TypeError,
        "random.rademacher(key, shape, dtype): dtype must be a signed integer or floating "
        "dtype; expected torch.int32 (the default), another signed integer dtype, uint8 or a "
        "float dtype, got torch.bool. Pass dtype=torch.int32, or a float dtype such as "
        "torch.float32 for float signs.",
    ):
        rx.rademacher(k, (2,), torch.bool)
    with _raises(
        TypeError,
        "random.geometric(key, p, shape, dtype): dtype must be a signed integer dtype (or "
        "uint8); expected torch.int8, torch.int16, torch.int32, torch.int64 or torch.uint8, got "
        "torch.float32.",
    ):
        rx.geometric(k, 0.5, (2,), torch.float32)
    with _raises(
        ValueError,
        "random.t(key, df, shape, dtype): the parameter shapes do not broadcast to the shape "
        "argument; expected parameters whose shapes broadcast to (2,), got shapes [(3,)]. "
        "Pass shape=None to use the parameters' broadcast shape.",
    ):
        rx.t(k, torch.ones(3), (2,))
    with _raises(
        TypeError,
        "random.ball(key, d, p, shape, dtype): d must be a non-negative integer; expected a "
        "Python int such as 3, got float 3.0. Pass d as an int, e.g. d=3.",
    ):
        rx.ball(k, 3.0)
    with _raises(
        ValueError,
        "random.ball(key, d, p, shape, dtype): p must be a scalar; expected a float or a 0-d "
        "tensor, got a tensor of dtype torch.float32 and shape (2,). Use vmap for a batch of "
        "exponents.",
    ):
        rx.ball(k, 3, torch.ones(2))
    with _raises(
        TypeError,
        "random.orthogonal(key, n, shape, dtype, m): m must be a non-negative integer; "
        "expected a Python int such as 3, got int -1. Pass m as an int, e.g. m=3.",
    ):
        rx.orthogonal(k, 3, m=-1)
    with _raises(
        ValueError,
        "random.orthogonal(key, n, shape, dtype, m): dtype must be a float or complex dtype; "
        "expected torch.float32, torch.float64, torch.complex64 or torch.complex128, got "
        "torch.int64. Pass a float dtype (complex dtypes give unitary matrices).",
    ):
        rx.orthogonal(k, 3, dtype=torch.int64)
    with _raises(TypeError, "random.f(key, dfnum, dfden, shape, dtype): dfden must be real"):
        rx.f(k, 2.0, torch.tensor([1j]))
    with _raises(
        ValueError,
        "random.double_sided_maxwell(key, loc, scale, shape, dtype): loc and scale do not "
        "broadcast together; expected parameters of broadcastable shapes, got shapes (2,) and "
        "(3,). Give them shapes that broadcast, e.g. a scalar and a tensor.",
    ):
        rx.double_sided_maxwell(k, torch.zeros(2), torch.ones(3))
    with _raises(
        ValueError,
        "random.binomial(key, n, p, shape, dtype): dtype must be a floating dtype; expected "
        "torch.float16, torch.bfloat16, torch.float32 or torch.float64, got torch.int32.",
    ):
        rx.binomial(k, 5.0, 0.5, dtype=torch.int32)
    with _raises(
        ValueError,
        "random.multinomial(key, n, p, shape, dtype, unroll): p must have an outcome axis; "
        "expected shape (..., k), got a tensor of dtype torch.float32 and shape (). Pass the "
        "probabilities of the k outcomes, e.g. torch.tensor([0.2, 0.8]).",
    ):
        rx.multinomial(k, 5.0, 0.5)
    with _raises(
        ValueError,
        "random.multinomial(key, n, p, shape, dtype, unroll): the parameter shapes do not "
        "broadcast to the shape argument; expected parameters whose shapes broadcast to (2,), "
        "got shapes [(3,)].",
    ):
        rx.multinomial(k, torch.ones(3), torch.ones(2, 4) / 4)
    with _raises(TypeError, "random.wald(key, mean, shape, dtype): key is not a PRNG key"):
        rx.wald(torch.tensor([0, 1]), 1.0)
    with _raises(
        ValueError, "random.pareto(key, b, shape, dtype): key must be a single key, not a batch"
    ):
        rx.pareto(random.split(k, 2), 1.0)
